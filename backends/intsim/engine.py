"""The fast engine of the integer simulator, bit-identical to the reference interpreter.

Evaluation is layer by layer over the whole run (a feed-forward layer's input does not depend on its
own state), so every synapse op is one big matrix product over all ``T*B`` samples. Its path comes from
the static range analysis of the graph for the actual input bound:

* ``int8-mm``: weights and inputs fit int8 and every sum fits int32: ``torch._int_mm`` on the CPU's
  int8 units (a dense layer with input and output sizes that are multiples of 8);
* ``blas-f32``: the largest partial sum stays below 2**24, so float32 BLAS is exact;
* ``blas-f64``: below 2**53, float64 BLAS is exact;
* ``int64``: otherwise the reference's plain integer product.

Pools run through torch on the same exact floats. Neurons run the reference rules (int64 numpy,
vectorised over batch and neurons), with their recurrent products on the same BLAS paths. Results are
the reference interpreter's, bit for bit: the property tests check it on random graphs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from snncompile.backends.intsim.kernels import NeuronKernel, spike_dtype, state_dtype

from snncompile.errors import GraphError
from snncompile.interpreters.common import Run
from snncompile.interpreters.integer import (
    EVAL as REFERENCE,
)
from snncompile.interpreters.integer import Counter, input_codes, recurrent_int
from snncompile.ir import QLIF, AvgPool2d, Graph, MaxPool2d, Op, QConv2d, QCubaLIF, QLinear, SumPool2d
from snncompile.ir.ops import ConvRecurrence, DenseRecurrence, Recurrence
from snncompile.passes.ranges import RangeReport, analyze_ranges

Array = np.ndarray
Path = str  # "int8-mm" | "blas-f32" | "blas-f64" | "int64"


def choose_path(bits: int) -> Path:
    return "blas-f32" if bits <= 24 else "blas-f64" if bits <= 53 else "int64"


def _int8_ok(op: Op, input_max: int, bits: int) -> bool:
    """Whether ``torch._int_mm`` (int8 x int8 -> int32) computes ``op`` exactly."""
    if not isinstance(op, QLinear) or bits > 31 or input_max > 127:
        return False
    out_f, in_f = op.weight.shape
    return in_f % 8 == 0 and out_f % 8 == 0 and int(np.abs(op.weight).max(initial=0)) <= 127


def _dtype(path: Path) -> torch.dtype:
    return torch.float32 if path == "blas-f32" else torch.float64


def _as_float(x: Array, path: Path) -> torch.Tensor:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # IR arrays are read-only; torch wants a writable buffer
        x = x.copy()
    return torch.from_numpy(x).to(_dtype(path))


def _values(t: torch.Tensor) -> Array:
    """A BLAS result as it is: float values that are exact integers (the path guarantees it). Stateless
    ops and the neuron kernels read them directly; integer rules convert them."""
    return t.numpy()


def _rows(x: Array) -> Array:
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _int8_linear(op: QLinear, x: Array) -> Array:
    rows = torch.from_numpy(np.ascontiguousarray(_rows(x)).astype(np.int8, copy=False))
    if rows.shape[0] <= 16:  # _int_mm needs more than 16 rows
        rows = torch.cat([rows, rows.new_zeros(17 - rows.shape[0], rows.shape[1])])
    y = torch._int_mm(rows, torch.from_numpy(np.ascontiguousarray(op.weight.T, dtype=np.int8)))[
        : x.shape[0] * x.shape[1]
    ]
    out = y.numpy()  # int32: the plan admits this path only when every sum fits
    if op.bias is not None:
        out += op.bias.astype(np.int32)
    return out.reshape(x.shape[0], x.shape[1], -1)


def _fast_linear(op: QLinear, x: Array, path: Path) -> Array:
    w = _as_float(op.weight, path)
    b = None if op.bias is None else _as_float(op.bias, path)
    y = F.linear(_as_float(_rows(x), path), w, b)
    return _values(y).reshape(x.shape[0], x.shape[1], -1)


def _fast_conv(op: QConv2d, x: Array, path: Path) -> Array:
    w = _as_float(op.weight, path)
    b = None if op.bias is None else _as_float(op.bias, path)
    y = F.conv2d(_as_float(_rows(x), path), w, b, op.stride, op.padding, op.dilation, op.groups)
    return _values(y).reshape(x.shape[0], x.shape[1], *y.shape[1:])


def _fast_pool(op: MaxPool2d | SumPool2d | AvgPool2d, x: Array, path: Path) -> Array:
    v = _as_float(_rows(x), path)
    simple = (
        op.padding == (0, 0)
        and not getattr(op, "ceil_mode", False)
        and getattr(op, "dilation", (1, 1)) == (1, 1)
    )
    if simple:  # kh*kw strided slices combined elementwise: several times faster than torch's pooling
        y = _window_reduce(v, op, torch.maximum if isinstance(op, MaxPool2d) else torch.add)
    elif isinstance(op, MaxPool2d):
        y = F.max_pool2d(v, op.kernel, op.stride, op.padding, op.dilation, op.ceil_mode)
    else:  # a window sum: AvgPool2d's division is its finer output grid
        y = F.avg_pool2d(v, op.kernel, op.stride, op.padding, divisor_override=1)
    return _values(y).reshape(x.shape[0], x.shape[1], *y.shape[1:])


def _window_reduce(v: torch.Tensor, op: MaxPool2d | SumPool2d | AvgPool2d, combine: Any) -> torch.Tensor:
    """Unpadded pooling as a reduction over the kernel's strided slices (exact: max, or an integer sum)."""
    (kh, kw), (sh, sw) = op.kernel, op.stride
    oh, ow = (v.shape[2] - kh) // sh + 1, (v.shape[3] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            part = v[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            out = part if out is None else combine(out, part)
    assert out is not None
    return out.contiguous()


def _fast_recur(rec: Recurrence, path: Path) -> Callable[[Array], Array]:
    """``R(s)`` with the recurrent weights converted once for the whole run."""
    if path == "int64" or not isinstance(rec, DenseRecurrence | ConvRecurrence):
        return lambda s: recurrent_int(rec, s)
    w = _as_float(rec.weight, path)
    b = None if rec.bias is None else _as_float(rec.bias, path)
    if isinstance(rec, DenseRecurrence):
        return lambda s: _values(F.linear(_as_float(s, path), w, b))
    padding = rec.padding
    return lambda s: _values(F.conv2d(_as_float(s, path), w, b, padding=padding))


def _neuron(
    op: QLIF | QCubaLIF, x: Array, sat: Counter, path: Path, record: bool = True
) -> tuple[Array, dict[str, Array]]:
    """A neuron layer through its fused kernel: all steps in one call, or step by step when the
    recurrent input (a BLAS product of the previous step's spikes) must be computed in between.
    Spikes come back as compact codes (int8 where the graded factor allows), states as int32/int64."""
    steps, batch, shape = x.shape[0], x.shape[1], tuple(x.shape[2:])
    kernel = NeuronKernel(op, shape, record)
    flat = np.ascontiguousarray(x.reshape(steps, batch, -1))
    size = flat.shape[2]
    names = ("mem", "syn") if isinstance(op, QCubaLIF) else ("mem",)
    state = {v: np.zeros((batch, size), np.int64) for v in names}
    stored = (steps, batch, size) if record else (1, 1, 1)
    out = {"spikes": np.empty((steps, batch, size), spike_dtype(op.graded))}
    out |= {v: np.empty(stored, state_dtype(getattr(op, v))) for v in names}
    if op.recurrence is None:
        sat["n"] += kernel.run(flat, np.zeros((1, 1, 1), np.int64), state, out)
    else:
        recur = _fast_recur(op.recurrence, path)
        previous = np.zeros((batch, *shape), np.int64)
        for t in range(steps):
            rec = np.ascontiguousarray(recur(previous).reshape(1, batch, size))
            now = {k: v[t : t + 1] if record or k == "spikes" else v for k, v in out.items()}
            sat["n"] += kernel.run(flat[t : t + 1], rec, state, now)
            previous = out["spikes"][t].reshape(batch, *shape)
    spikes = out.pop("spikes").reshape(steps, batch, *shape)
    return spikes, {k: v.reshape(steps, batch, *shape) for k, v in out.items()} if record else {}


def plan(graph: Graph, ranges: RangeReport) -> dict[str, Path]:
    """The path of every synapse, pool and neuron node (the engine's debug listing)."""
    out: dict[str, Path] = {}
    for n in graph.topo_order():
        op = graph.op(n)
        if isinstance(op, QLinear | QConv2d | MaxPool2d | SumPool2d | AvgPool2d | QLIF | QCubaLIF):
            bits = ranges.nodes[n].bits
            x_max = ranges.nodes[graph.args(n)[0]].out_max
            out[n] = "int8-mm" if _int8_ok(op, x_max, bits) else choose_path(bits)
    return out


def describe_plan(graph: Graph, paths: dict[str, Path]) -> str:
    return "\n".join(f"{n:>16}  {graph.op(n).kind:<10} {p}" for n, p in paths.items())


def _eval(
    op: Op, args: list[Array], sat: Counter, path: Path | None, record: bool = True
) -> tuple[Array, dict[str, Array]]:
    if path == "int8-mm" and isinstance(op, QLinear):
        return _int8_linear(op, args[0]), {}
    if path is not None and path != "int64":
        if isinstance(op, QLinear):
            return _fast_linear(op, args[0], path), {}
        if isinstance(op, QConv2d):
            return _fast_conv(op, args[0], path), {}
        if isinstance(op, MaxPool2d | SumPool2d | AvgPool2d):
            return _fast_pool(op, args[0], path), {}
    if isinstance(op, QLIF | QCubaLIF):
        return _neuron(op, args[0], sat, path or "int64", record)
    args = [a.astype(np.int64, copy=False) for a in args]  # the reference rules compute in int64
    rule = REFERENCE.get(type(op))
    if rule is None:
        raise GraphError(f"the simulator has no rule for {op.kind}")
    return rule(op, args, sat)


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\rsimulating [{'#' * filled}{'.' * (width - filled)}] {done}/{total} samples")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def simulate(
    graph: Graph,
    x: Any,
    *,
    record_states: bool = True,
    chunk: int = 256,
    progress: bool | None = None,
    paths: dict[str, Path] | None = None,
    keep: Collection[str] = (),
) -> Run:
    """Runs a fixed-point graph on ``x[T, B, ...]`` (values on its input grid), like
    :func:`snncompile.run_integer` but fast. Samples run in chunks of ``chunk``; ``progress`` (default:
    when stderr is a terminal) draws a progress bar. ``paths`` overrides the planned path per node;
    ``keep`` names nodes whose outputs are returned in ``Run.values`` (e.g. for the cycle model)."""
    graph.verify()
    codes = input_codes(graph, x, None)  # the smallest integer type: spikes take one byte each
    # int8 codes (spikes) are bounded by their type, which saves a pass over the input
    input_max = 127 if codes.dtype == np.int8 else int(max(-int(codes.min()), int(codes.max())))
    chosen = plan(graph, analyze_ranges(graph, max(input_max, 1))) if paths is None else paths
    show = sys.stderr.isatty() if progress is None else progress
    batch = codes.shape[1]
    runs = []
    for start in range(0, batch, chunk):
        runs.append(_run_chunk(graph, codes[:, start : start + chunk], chosen, record_states, set(keep)))
        if show:
            _progress(min(start + chunk, batch), batch)
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    return Run(
        graph,
        np.concatenate([r.output for r in runs], axis=1),
        {n: np.concatenate([r.spikes[n] for r in runs], axis=1) for n in first.spikes},
        {
            n: {v: np.concatenate([r.states[n][v] for r in runs], axis=1) for v in first.states[n]}
            for n in first.states
        },
        {n: sum(r.saturations[n] for r in runs) for n in first.saturations},
        {n: np.concatenate([r.values[n] for r in runs], axis=1) for n in first.values},
    )


def _run_chunk(
    graph: Graph, codes: Array, paths: dict[str, Path], record_states: bool, keep: set[str]
) -> Run:
    inp = graph.input_name
    order = graph.topo_order()
    last_use = {a: i for i, n in enumerate(order) for a in graph.args(n)}
    values: dict[str, Array] = {inp: codes}
    spikes: dict[str, Array] = {}
    states: dict[str, dict[str, Array]] = {}
    saturations: dict[str, int] = {}
    for i, name in enumerate(order):
        if name == inp:
            continue
        sat = {"n": 0}
        out, st = _eval(
            graph.op(name), [values[a] for a in graph.args(name)], sat, paths.get(name), record_states
        )
        values[name] = out
        for a in graph.args(name):
            if last_use[a] == i and a != graph.output_name and a not in keep:
                del values[a]  # free intermediates as soon as their last user has run
        if isinstance(graph.op(name), QLIF | QCubaLIF):
            spikes[name], saturations[name], states[name] = out, sat["n"], st
    kept = {n: values[n] for n in keep}
    output = values[graph.output_name]
    if output.dtype.kind == "f":  # a stateless output node: its integer codes
        output = output.astype(np.int64)
    return Run(graph, output, spikes, states, saturations, kept)
