"""The fast engine of the integer simulator, bit-identical to the reference interpreter.

The run streams: samples in batch chunks, each chunk's time steps in time chunks, every node evaluated
on the chunk in graph order with the neuron states carried from one time chunk to the next, so the
memory a run adds is the chunk's (plus the recorded outputs), not ``T x B`` of every layer.

Each synapse op (``QLinear``, ``QConv2d``) has several exact paths, admitted by the static range
analysis of the graph for the actual input bound:

* ``event``: for each input that is nonzero, add its weight row (times the value) to the outputs, in
  int32 where every partial sum fits, else int64 (compiled, ``kernels.py``); no float bound needed.
  When the op's only user is a neuron, the accumulation runs inside the neuron's kernel (fused);
* ``int8-mm``: weights and inputs fit int8 and every sum fits int32: ``torch._int_mm`` (a conv over
  its im2col columns);
* ``blas-f32``: the largest partial sum stays below 2**24, so float32 BLAS is exact;
* ``blas-f64``: below 2**53, float64 BLAS is exact;
* ``int-dot``: a linear layer as compiled int64 dot products, exact at any proven bound (no BLAS:
  small layers such as a classifier's last);
* ``int64``: the reference's plain integer product (a conv beyond 2**53).

A convolution's dense paths are ``unfold`` + matrix product (plain dot products, so exact whatever
torch's conv backend, with matmul precision pinned to IEEE by :func:`tuning.exact_float`).

Which path is fastest depends on the CPU and on the input's density: :mod:`tuning` times the legal
candidates once per machine and shape class and caches the figures; at run time each chunk measures its
input density and takes the event path when its cost at that density is below the best dense path.
Neurons and their recurrence run in compiled kernels, all steps of a chunk in one call. Pools reduce
strided slices exactly (max, or an integer sum). Results are the reference interpreter's, bit for bit:
the property tests check every path on random graphs.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from snncompile.backends.intsim import tuning
from snncompile.backends.intsim.kernels import (
    EventConv,
    EventSynapses,
    NeuronKernel,
    conv_geometry,
    dot_rows,
    im2col,
    im2col_runs,
    linear_rows,
    pool,
    spike_codes,
    spike_dtype,
    spike_range,
    state_dtype,
)

from snncompile.errors import InputError
from snncompile.interpreters.common import Run, kept_nodes, output_value
from snncompile.interpreters.integer import EVAL as REFERENCE
from snncompile.interpreters.integer import input_codes
from snncompile.ir import QLIF, AvgPool2d, Graph, Input, MaxPool2d, Op, QConv2d, QCubaLIF, QLinear, SumPool2d
from snncompile.passes.ranges import RangeReport, analyze_ranges

Array = np.ndarray
Path = str
PATHS: tuple[Path, ...] = ("event", "int8-mm", "onednn-f32", "blas-f32", "blas-f64", "int-dot", "int64")
#: the bytes of intermediate values one chunk may hold (sizes its rows = samples x steps)
CHUNK_BYTES = 48 << 20
#: sample-steps of a run's first chunk on which a conv's oneDNN path is checked
VERIFY_ROWS = 8
#: densities at which the event path is timed (its cost is linear in the density between them)
DENSITIES = (0.05, 0.5)
#: the event path's density threshold when kernels are not timed (SNNCOMPILE_TUNE=0)
DEFAULT_EVENT_BELOW = 0.25


@dataclasses.dataclass(frozen=True)
class Choice:
    """How a synapse op runs: ``dense`` is its path for dense inputs; the event path runs instead for a
    chunk whose input density is below ``event_below`` (0: never, above 1: always); ``fused``: the event
    path accumulates inside its neuron's kernel; ``costs``: the measured seconds per sample and step of
    each candidate; ``why``: the reason, for :func:`describe_plan`."""

    dense: Path
    event_below: float
    fused: bool
    costs: Mapping[str, float]
    why: str

    def path(self, x: Array) -> Path:
        """The path for a chunk of inputs ``x`` (T, B, ...): its density measured only when it matters."""
        if self.event_below <= 0 or self.event_below > 1:
            return self.dense if self.event_below <= 0 else "event"
        return "event" if _density(x) < self.event_below else self.dense


def _int8_ok(op: Op, input_max: int, bits: int) -> bool:
    """Whether ``torch._int_mm`` (int8 x int8 -> int32) computes ``op`` exactly: weights and inputs in
    int8 and every sum in int32; a linear op's sizes multiples of 8, a conv's padded to them (one group)."""
    if not isinstance(op, QLinear | QConv2d) or bits > 31 or input_max > 127:
        return False
    if int(np.abs(op.weight).max(initial=0)) > 127:
        return False
    if isinstance(op, QConv2d):
        return op.groups == 1
    out_f, in_f = op.weight.shape
    return in_f % 8 == 0 and out_f % 8 == 0


def _ceil8(n: int) -> int:
    return -(-n // 8) * 8


def _int_mm(rows: Array, w8: torch.Tensor) -> Array:
    """``rows @ w8`` for int8 ``rows`` (R, K) and ``w8`` (K, N), K and N multiples of 8: int32, exact."""
    a = torch.from_numpy(rows)
    n = a.shape[0]
    if n <= 16:  # _int_mm needs more than 16 rows
        a = torch.cat([a, a.new_zeros(17 - n, a.shape[1])])
    out: Array = torch._int_mm(a, w8)[:n].numpy()
    return out


def legal_paths(op: QLinear | QConv2d, input_max: int, bits: int) -> list[Path]:
    """The exact paths of a synapse op whose input is bounded by ``input_max`` and whose partial sums
    need ``bits`` bits, event path first."""
    out = ["event"]
    if _int8_ok(op, input_max, bits):
        out.append("int8-mm")
    if isinstance(op, QConv2d) and bits <= 24 and torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        out.append("onednn-f32")
    out += ["blas-f32"] if bits <= 24 else ["blas-f64"] if bits <= 53 else []
    if isinstance(op, QLinear):
        out.append("int-dot")
    elif bits > 53:
        out.append("int64")
    return out


def _acc_dtype(bits: int) -> type[np.signedinteger[Any]]:
    return np.int32 if bits <= 31 else np.int64


def _fusable(graph: Graph, name: str, keep: Collection[str]) -> bool:
    """Whether a linear op's events can accumulate inside its neuron's kernel (a conv's run channel-last
    on their own)."""
    users = graph.users(name)
    return (
        isinstance(graph.op(name), QLinear)
        and len(users) == 1
        and isinstance(graph.op(users[0]), QLIF | QCubaLIF)
        and name != graph.output_name
        and name not in keep
    )


# ------------------------------------------------------------------------------------ dense paths


def _float(x: Array, path: Path) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, np.float32 if path == "blas-f32" else np.float64))


def _weights(op: QLinear | QConv2d, path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = torch.from_numpy(np.array(op.weight))
    b = None if op.bias is None else torch.from_numpy(np.array(op.bias))
    dtype = torch.float32 if path == "blas-f32" else torch.float64
    return w.to(dtype), None if b is None else b.to(dtype)


class DenseSynapses:
    """A synapse op on a dense path over rows ``(R, *in_shape)``: float BLAS (a linear layer, or a conv
    as unfold + matrix product), ``torch._int_mm``, a compiled int64 dot product per output (a linear
    layer), or the reference's int64 rule."""

    def __init__(self, op: QLinear | QConv2d, path: Path) -> None:
        self.op, self.path = op, path
        if path in ("blas-f32", "blas-f64", "onednn-f32"):
            self.w, self.b = _weights(op, "blas-f64" if path == "blas-f64" else "blas-f32")
        elif path == "int-dot":
            self.w64 = np.ascontiguousarray(op.weight, np.int64)
            self.b64 = np.zeros(op.weight.shape[0], np.int64) if op.bias is None else op.bias.astype(np.int64)
        elif path == "int8-mm":  # (K, N): a conv's taps and channels padded to multiples of 8
            self.runs = isinstance(op, QConv2d) and op.stride == op.dilation == (1, 1)
            w = (op.weight.transpose(0, 2, 3, 1) if self.runs else op.weight).reshape(op.weight.shape[0], -1)
            w8 = np.zeros((_ceil8(w.shape[1]), _ceil8(w.shape[0])), np.int8)
            w8[: w.shape[1], : w.shape[0]] = w.T
            self.w8 = torch.from_numpy(w8)
            self.b32 = None if op.bias is None else op.bias.astype(np.int32)

    def __call__(self, x: Array) -> Array:
        """``x`` (R, *in_shape) -> (R, *out_shape); float values that are exact integers on float
        paths (neuron kernels read them directly), integers otherwise."""
        if self.path == "int-dot":
            return dot_rows(np.ascontiguousarray(x.reshape(x.shape[0], -1)), self.w64, self.b64)
        if self.path == "int64":
            return REFERENCE[type(self.op)](self.op, [x[None].astype(np.int64)], {"n": 0})[0][0]
        if self.path == "int8-mm" and isinstance(self.op, QLinear):
            y = _int_mm(np.ascontiguousarray(x).astype(np.int8, copy=False), self.w8)
            return y if self.b32 is None else y + self.b32
        if self.path == "int8-mm":
            return self._conv(x)
        with tuning.exact_float():
            if isinstance(self.op, QLinear):
                return F.linear(_float(x, self.path), self.w, self.b).numpy()
            if self.path == "onednn-f32":
                return self._onednn(x)
            return self._conv(x)

    def _onednn(self, x: Array) -> Array:
        """The conv through oneDNN's direct float32 convolution (plain dot products, exact below 2**24),
        pinned on whatever the caller's backend flags say and never NNPACK's transforms. The run checks
        its first chunk against the event-driven kernel (:class:`_Node`)."""
        op = self.op
        assert isinstance(op, QConv2d)
        with warnings.catch_warnings():  # mkldnn.flags() re-sets TF32 on oneDNN, which warns on CPUs
            warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")
            with torch.backends.mkldnn.flags(enabled=True), torch.backends.nnpack.flags(enabled=False):
                y = F.conv2d(
                    _float(x, "blas-f32"), self.w, self.b, op.stride, op.padding, op.dilation, op.groups
                )
        return y.numpy()

    def _conv(self, x: Array) -> Array:
        """The conv as one matrix product per group over the im2col columns: plain dot products, in
        float (IEEE precision) or int8 x int8 -> int32 (taps padded with zeros to a multiple of 8)."""
        op = self.op
        assert isinstance(op, QConv2d)
        c_out, cin_g, kh, kw = op.weight.shape
        h, wd = x.shape[2], x.shape[3]
        (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        geo = conv_geometry(op.stride, op.padding, op.dilation, cin_g)
        k, g, cout_g = cin_g * kh * kw, op.groups, c_out // op.groups
        y: torch.Tensor
        if self.path == "int8-mm":
            cols8 = np.zeros((x.shape[0], oh, ow, _ceil8(k)), np.int8)
            x8 = np.ascontiguousarray(x).astype(np.int8, copy=False)
            if self.runs:  # stride 1: contiguous runs of kw x C channel-last values (taps outer)
                im2col_runs(x8, (kh, kw), op.padding, cols8)
            else:
                im2col(x8, geo, cols8[..., :k].reshape(x.shape[0], oh, ow, cin_g, kh, kw))
            y = torch.from_numpy(_int_mm(cols8.reshape(-1, cols8.shape[-1]), self.w8)[:, :c_out])
            if self.b32 is not None:
                y += torch.from_numpy(self.b32)
        else:
            dtype = np.float64 if self.path == "blas-f64" else np.float32
            cols6 = np.empty((x.shape[0], oh, ow, cin_g * g, kh, kw), dtype)
            im2col(np.ascontiguousarray(x), geo, cols6)
            cols = torch.from_numpy(cols6).reshape(x.shape[0] * oh * ow, -1)
            w = self.w.reshape(c_out, k)
            parts = [cols[:, i * k : (i + 1) * k] @ w[i * cout_g : (i + 1) * cout_g].T for i in range(g)]
            y = parts[0] if g == 1 else torch.cat(parts, dim=1)
            if self.b is not None:
                y += self.b
        return y.reshape(x.shape[0], oh, ow, c_out).permute(0, 3, 1, 2).contiguous().numpy()


# ------------------------------------------------------------------------------------ timing


def _event_op(
    op: QLinear | QConv2d, in_shape: tuple[int, ...], dtype: type[np.signedinteger[Any]]
) -> EventSynapses | EventConv:
    if isinstance(op, QConv2d):
        return EventConv(op, in_shape, dtype)
    return EventSynapses(linear_rows(op), dtype)


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _class_key(op: QLinear | QConv2d, in_shape: tuple[int, ...]) -> str:
    """The shape class of ``op``: dense sizes rounded up to powers of two, a conv's exact geometry."""
    if isinstance(op, QLinear):
        n_out, n_in = (_pow2(d) for d in op.weight.shape)
        return f"linear {n_in}x{n_out}"
    return f"conv {in_shape} k{op.weight.shape} s{op.stride} p{op.padding} d{op.dilation} g{op.groups}"


def _class_op(op: QLinear | QConv2d, in_shape: tuple[int, ...]) -> tuple[QLinear | QConv2d, tuple[int, ...]]:
    """A synthetic op of ``op``'s shape class, and its input shape."""
    rng = np.random.default_rng(0)
    if isinstance(op, QLinear):
        n_out, n_in = (_pow2(d) for d in op.weight.shape)
        return QLinear(rng.integers(-100, 101, (n_out, n_in)).astype(np.int64), None, weight_frac=0), (n_in,)
    w = rng.integers(-100, 101, op.weight.shape).astype(np.int64)
    return dataclasses.replace(op, weight=w, bias=None), in_shape


def _timers(
    op: QLinear | QConv2d, in_shape: tuple[int, ...], candidates: list[Path], acc: type[np.signedinteger[Any]]
) -> dict[str, Callable[[], tuple[Callable[[], Any], int]]]:
    """Per candidate (the event path at each of ``DENSITIES``), a callable that builds its run on
    synthetic spikes of ``op``'s shape class: (one run, its sample-steps)."""

    def workload(density: float) -> tuple[QLinear | QConv2d, tuple[int, ...], Array]:
        synth, shape = _class_op(op, in_shape)
        n_in = math.prod(shape)
        widest = (
            int(synth.weight.shape[0])
            if isinstance(synth, QLinear)
            else n_in * math.prod(synth.weight.shape[:2])
        )
        rows = int(min(1024, max(16, (16 << 20) // (8 * max(n_in, widest)))))
        x = (np.random.default_rng(1).random((rows, *shape)) < density).astype(np.int8)
        return synth, shape, x

    def dense(path: Path) -> Callable[[], tuple[Callable[[], Any], int]]:
        def setup() -> tuple[Callable[[], Any], int]:
            synth, _, x = workload(0.1)
            syn = DenseSynapses(synth, path)
            return (lambda: syn(x)), x.shape[0]

        return setup

    def event(density: float) -> Callable[[], tuple[Callable[[], Any], int]]:
        def setup() -> tuple[Callable[[], Any], int]:
            synth, shape, x = workload(density)
            events = x.reshape(1, *x.shape)
            syn = _event_op(synth, shape, acc)
            return (lambda: syn.run(events, 1)), x.shape[0]

        return setup

    timers: dict[str, Callable[[], tuple[Callable[[], Any], int]]] = {}
    for p in candidates:
        if p == "event":
            timers |= {f"event@{d}": event(d) for d in DENSITIES}
        else:
            timers[p] = dense(p)
    return timers


def _choose(
    op: QLinear | QConv2d, in_shape: tuple[int, ...], input_max: int, bits: int, fused: bool
) -> Choice:
    legal = legal_paths(op, input_max, bits)
    dense_legal = [p for p in legal if p != "event"]
    if not tuning.tuning_enabled():
        vnni = {"avx512_vnni", "avx_vnni", "amx_int8"} & set(tuning.machine()["features"])
        blas = [p for p in dense_legal if p.startswith("blas")]
        dense = "int8-mm" if "int8-mm" in dense_legal and vnni else (blas or dense_legal)[-1]
        why = f"not timed (SNNCOMPILE_TUNE=0): {dense}, event below density {DEFAULT_EVENT_BELOW}"
        return Choice(dense, DEFAULT_EVENT_BELOW, fused, {}, why)
    acc = _acc_dtype(bits)
    costs = tuning.costs(
        f"{_class_key(op, in_shape)} {np.dtype(acc).name}", _timers(op, in_shape, legal, acc)
    )
    dense = min(dense_legal, key=lambda p: costs[p])
    (d0, d1), (c0, c1) = DENSITIES, (costs[f"event@{d}"] for d in DENSITIES)
    slope = (c1 - c0) / (d1 - d0)
    at_zero = c0 - slope * d0
    if slope <= 0:
        below = 2.0 if c1 < costs[dense] else 0.0
    else:
        below = min(2.0, max(0.0, (costs[dense] - at_zero) / slope))
    why = (
        f"{dense} for dense inputs, event below density {below:.3g}" if below <= 1 else "event at any density"
    )
    return Choice(dense, below, fused, costs, why)


# ------------------------------------------------------------------------------------ the plan


def synapse_nodes(graph: Graph) -> list[str]:
    return [n for n in graph.topo_order() if isinstance(graph.op(n), QLinear | QConv2d)]


def plan(graph: Graph, ranges: RangeReport, keep: Collection[str] = ()) -> dict[str, Choice]:
    """The choice of every synapse node: its legal exact paths timed on this machine (or cached)."""
    shapes = graph.shapes()
    out: dict[str, Choice] = {}
    for n in synapse_nodes(graph):
        op = graph.op(n)
        assert isinstance(op, QLinear | QConv2d)
        arg = graph.args(n)[0]
        out[n] = _choose(
            op, shapes[arg], ranges.nodes[arg].out_max, ranges.nodes[n].bits, _fusable(graph, n, keep)
        )
    return out


def forced_plan(graph: Graph, paths: Mapping[str, Path], keep: Collection[str] = ()) -> dict[str, Choice]:
    """Choices that run each named synapse node on the given path (tests and debugging; a float path
    forced beyond its proven bound gives wrong results)."""
    out: dict[str, Choice] = {}
    synapses = synapse_nodes(graph)
    for n, p in paths.items():
        if n not in synapses:
            raise InputError(
                f"paths names {n!r}, which is not a synapse node; synapse nodes: {', '.join(synapses)}"
            )
        if p not in PATHS:
            raise InputError(f"path {p!r} for node {n!r} is not one of {', '.join(PATHS)}")
        if p == "int-dot" and not isinstance(graph.op(n), QLinear):
            raise InputError(f"path 'int-dot' for node {n!r}: it is a linear layer's path, {n!r} is a conv")
        event = p == "event"
        out[n] = Choice(
            "int64" if event else p, 2.0 if event else 0.0, _fusable(graph, n, keep), {}, "forced"
        )
    return out


def describe_plan(graph: Graph, choices: Mapping[str, Choice]) -> str:
    """The CPU, and per synapse node its kind, the candidates' costs (ns per sample-step) and the choice."""
    lines = [f"machine: {tuning.describe_machine()}"]
    for n, c in choices.items():
        costs = ", ".join(f"{p} {1e9 * s:.0f}" for p, s in c.costs.items()) or "not timed"
        fused = ", fused into its neuron" if c.fused else ""
        lines.append(f"{n:>16}  {graph.op(n).kind:<8} {c.why}{fused}  [ns/sample-step: {costs}]")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the run


def _pool(op: MaxPool2d | SumPool2d | AvgPool2d, x: Array, bits: int) -> Array:
    """A pool over rows ``(R, C, H, W)`` of integers or exact floats: a max keeps the input's type, a
    window sum is taken in float32 / int32 while it fits (2**24 / 2**31), else float64 / int64."""
    simple = (
        op.padding == (0, 0)
        and not getattr(op, "ceil_mode", False)
        and getattr(op, "dilation", (1, 1)) == (1, 1)
    )
    if not simple:
        return REFERENCE[type(op)](op, [x[None].astype(np.int64)], {"n": 0})[0][0]
    if isinstance(op, MaxPool2d):
        return pool(x, op.kernel, op.stride, True, x.dtype)
    if x.dtype.kind == "f":
        return pool(x, op.kernel, op.stride, False, np.float32 if bits <= 24 else np.float64)
    return pool(x, op.kernel, op.stride, False, np.int32 if bits <= 31 else np.int64)


class _Node:
    """One node prepared for the run: its kernels, built once."""

    def __init__(
        self,
        graph: Graph,
        shapes: Mapping[str, tuple[int, ...]],
        name: str,
        choice: Choice | None,
        ranges: RangeReport,
        record: bool,
    ) -> None:
        self.name, self.op = name, graph.op(name)
        self.args = graph.args(name)
        self.shape = shapes[name]
        self.bits = ranges.nodes[name].bits if name in ranges.nodes else 0
        self.choice = choice
        self.dense: DenseSynapses | None = None
        self.event: EventSynapses | EventConv | None = None
        self.kernel: NeuronKernel | None = None
        self.fused_kernel: NeuronKernel | None = None
        self.source: _Node | None = None  # a neuron's fused synapse node
        self.verified = False  # a conv's oneDNN path, once checked
        if isinstance(self.op, QLinear | QConv2d):
            assert choice is not None
            in_shape = self.in_shape = shapes[self.args[0]]
            self.limit = max(1, ranges.nodes[self.args[0]].out_max)
            self.dense = DenseSynapses(self.op, choice.dense) if choice.event_below <= 1 else None
            if not choice.fused and choice.event_below > 0:
                self.event = _event_op(self.op, in_shape, _acc_dtype(self.bits))
        if isinstance(self.op, QLIF | QCubaLIF):
            self.kernel = NeuronKernel(self.op, self.shape, record)

    def verify(self, x: Array, value: Array) -> Array:
        """The first chunk ``x`` (T, B, ...) of a conv on the oneDNN path, checked on a few rows spread
        over it (the first included) against the event-driven kernel; on a mismatch (a backend that is
        not plain dot products) the node falls back to im2col for good and recomputes the chunk."""
        assert isinstance(self.op, QConv2d)
        flat_x = x.reshape(-1, *self.in_shape)
        rows = _spread(flat_x.shape[0], VERIFY_ROWS)
        expected, _ = _event_op(self.op, self.in_shape, _acc_dtype(self.bits)).run(
            np.ascontiguousarray(flat_x[rows][None]), 1 << 62
        )
        self.verified = True
        if np.array_equal(value.reshape(-1, *self.shape)[rows], expected[0]):
            return value
        self.dense = DenseSynapses(self.op, "blas-f32")
        return self.dense(flat_x).reshape(value.shape)

    def fuse(self, syn: _Node) -> None:
        """Lets this neuron accumulate ``syn``'s (a linear op's) events itself."""
        assert isinstance(self.op, QLIF | QCubaLIF) and isinstance(syn.op, QLinear)
        rows = linear_rows(syn.op)
        self.source = syn
        self.fused_kernel = NeuronKernel(self.op, self.shape, self.kernel.record if self.kernel else True,
                                         rows, _acc_dtype(syn.bits))  # fmt: skip


def _spread(n: int, k: int) -> Array:
    """At most ``k`` indices of ``range(n)`` evenly spread, the first and the last included."""
    out: Array = np.unique(np.linspace(0, n - 1, min(n, k)).astype(int))
    return out


def _density(x: Array) -> float:
    """The fraction of nonzero values, measured on a few evenly spread rows of ``x`` (T, B, ...)."""
    steps = _spread(x.shape[0], 8)
    sample = x[steps, : min(x.shape[1], 16)]
    return float(np.count_nonzero(sample)) / max(1, sample.size)


class _Void(Exception):
    """Raised when a kernel met input events beyond the bound the plan assumed (float32 inputs read
    without conversion): the run restarts on converted codes."""


@dataclasses.dataclass
class _Outputs:
    """The run's preallocated results, (T, B, ...) each, written chunk by chunk."""

    spikes: dict[str, Array]
    states: dict[str, dict[str, Array]]
    values: dict[str, Array]
    saturations: dict[str, int]


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\rsimulating [{'#' * filled}{'.' * (width - filled)}] {done}/{total} samples")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _read_input(graph: Graph, x: Any, raw_ok: bool) -> tuple[Array, int, bool]:
    """The input as the engine reads it: (array, bound of |code|, raw). Spikes as bool/uint8/int8 are
    used as they are; float32 spikes on an integer grid are read raw by the kernels (bound 1, checked
    in the kernels) when ``raw_ok``; anything else is converted to integer codes in one pass."""
    op = graph.op(graph.input_name)
    assert isinstance(op, Input) and op.frac is not None
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and not op.frac:
        if x.ndim != len(op.shape) + 2 or tuple(x.shape[2:]) != tuple(op.shape) or 0 in x.shape[:2]:
            input_codes(graph, x, None)  # refuses it with the interpreter's message
        if raw_ok:
            return np.ascontiguousarray(x), 1, True
        found = spike_codes(x)
        if found is not None:
            return found[0], found[1], False
    codes = input_codes(graph, x, None)  # the smallest integer type: spikes take one byte each
    peak = max(-int(codes.min()), int(codes.max()))  # one pass each, no copy
    return codes, peak, False


def simulate(
    graph: Graph,
    x: Any,
    *,
    record_states: bool = True,
    chunk: int | None = None,
    steps: int | None = None,
    progress: bool | None = None,
    paths: Mapping[str, Path] | None = None,
    keep: Collection[str] = (),
) -> Run:
    """Runs a fixed-point graph on ``x[T, B, ...]`` (values on its input grid), like
    :func:`snncompile.run_integer` but fast. Samples run in chunks of ``chunk``, their steps in chunks
    of ``steps`` (default: sized to :data:`CHUNK_BYTES`); ``progress`` (default: when stderr is a
    terminal) draws a progress bar. ``paths`` forces the path of synapse nodes (one of :data:`PATHS`);
    ``keep`` names nodes whose outputs are returned in ``Run.values`` (e.g. for the cycle model).
    ``record_states=False`` returns the neurons' spikes without their states."""
    graph.verify()
    raw_ok = graph.input_name not in keep
    data, peak, raw = _read_input(graph, x, raw_ok)
    try:
        return _simulate(graph, data, peak, raw, record_states, chunk, steps, progress, paths, keep)
    except _Void:
        data, peak, _ = _read_input(graph, x, False)
        return _simulate(graph, data, peak, False, record_states, chunk, steps, progress, paths, keep)


def _simulate(
    graph: Graph,
    data: Array,
    peak: int,
    raw: bool,
    record: bool,
    chunk: int | None,
    steps: int | None,
    progress: bool | None,
    paths: Mapping[str, Path] | None,
    keep: Collection[str],
) -> Run:
    ranges = analyze_ranges(graph, max(peak, 1))
    keep = set(keep) | set(kept_nodes(graph))
    state_read = {node for node, state in map(graph.output_source, graph.outputs) if state is not None}
    choices = (
        plan(graph, ranges, keep)
        if paths is None
        else {**plan_defaults(graph, ranges, keep), **forced_plan(graph, paths, keep)}
    )
    order = [n for n in graph.topo_order() if n != graph.input_name]
    shapes = graph.shapes()
    nodes = {n: _Node(graph, shapes, n, choices.get(n), ranges, record or n in state_read) for n in order}
    for n, node in nodes.items():
        if node.choice is not None and node.choice.fused and node.choice.event_below > 0:
            nodes[graph.users(n)[0]].fuse(node)
    total_t, total_b = data.shape[0], data.shape[1]
    out = _allocate(graph, nodes, data, total_t, total_b, keep)
    bc = min(total_b, chunk or 256)
    per_row = _row_bytes(graph, nodes)
    tc = steps or max(1, min(total_t, CHUNK_BYTES // max(1, per_row * bc)))
    show = sys.stderr.isatty() if progress is None else progress
    last_use = {a: i for i, n in enumerate(order) for a in graph.args(n)}
    for b0 in range(0, total_b, bc):
        b1 = min(total_b, b0 + bc)
        states = {n: node.kernel.new_state(b1 - b0) for n, node in nodes.items() if node.kernel is not None}
        for t0 in range(0, total_t, tc):
            t1 = min(total_t, t0 + tc)
            _run_chunk(
                graph, nodes, order, last_use, data[t0:t1, b0:b1], raw, states, out, (t0, t1, b0, b1), keep
            )
        if show:
            _progress(b1, total_b)
    kept = {n: out.values[n] for n in keep}
    output = output_value(graph, graph.outputs[0], out.spikes, out.states, kept)
    return Run(graph, output, out.spikes, out.states, out.saturations, kept)


def plan_defaults(graph: Graph, ranges: RangeReport, keep: Collection[str]) -> dict[str, Choice]:
    """The choices of synapse nodes that a forced plan leaves open: their most exact dense path, no
    timing (forced runs are tests and debugging)."""
    out: dict[str, Choice] = {}
    for n in synapse_nodes(graph):
        op = graph.op(n)
        assert isinstance(op, QLinear | QConv2d)
        legal = legal_paths(op, ranges.nodes[graph.args(n)[0]].out_max, ranges.nodes[n].bits)
        out[n] = Choice(legal[-1], 0.0, _fusable(graph, n, keep), {}, "default")
    return out


def _value_dtype(graph: Graph, name: str, input_dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The integer type a node's values are stored in for the run's results."""
    if name == graph.input_name:
        return np.dtype(np.int8) if input_dtype.kind == "f" else input_dtype
    op = graph.op(name)
    if isinstance(op, QLIF | QCubaLIF):
        return np.dtype(spike_dtype(op.graded))
    if isinstance(op, MaxPool2d) or op.kind in ("flatten", "output"):
        return _value_dtype(graph, graph.args(name)[0], input_dtype)
    return np.dtype(np.int64)


def _allocate(
    graph: Graph, nodes: dict[str, _Node], data: Array, steps: int, batch: int, keep: set[str]
) -> _Outputs:
    out = _Outputs({}, {}, {}, {})
    for n, node in nodes.items():
        if node.kernel is not None:
            size = (steps, batch, *node.shape)
            out.spikes[n] = np.empty(size, spike_dtype(node.kernel.op.graded))
            out.states[n] = (
                {v: np.empty(size, state_dtype(getattr(node.op, v))) for v in node.kernel.names}
                if node.kernel.record
                else {}
            )
            out.saturations[n] = 0
    shapes = graph.shapes()
    for n in {graph.output_name, *keep}:
        if n in out.spikes:
            out.values[n] = out.spikes[n]
        else:
            out.values[n] = np.empty((steps, batch, *shapes[n]), _value_dtype(graph, n, data.dtype))
    return out


def _row_bytes(graph: Graph, nodes: dict[str, _Node]) -> int:
    """The bytes one sample-step of the chunk holds at most: the largest node value in float64, or a
    conv's unfolded input on a dense path."""
    shapes = graph.shapes()
    worst = 8 * math.prod(shapes[graph.input_name])
    for n, node in nodes.items():
        worst = max(worst, 8 * math.prod(shapes[n]) * (2 if node.kernel else 1))
        if isinstance(node.op, QConv2d) and node.dense is not None:
            taps = math.prod(node.op.weight.shape[1:])
            worst = max(worst, 8 * taps * math.prod(shapes[n][1:]) * 2)
    return worst


def _run_chunk(
    graph: Graph,
    nodes: dict[str, _Node],
    order: list[str],
    last_use: dict[str, int],
    xin: Array,
    raw: bool,
    states: dict[str, dict[str, Array]],
    out: _Outputs,
    where: tuple[int, int, int, int],
    keep: set[str],
) -> None:
    t0, t1, b0, b1 = where
    tc, bc = t1 - t0, b1 - b0
    values: dict[str, Array] = {graph.input_name: xin}
    raw_input = [raw]  # whether values[input] still holds unchecked float32 spikes

    def checked(name: str, codes: bool = False) -> Array:
        """A value for a consumer that does not check events itself: raw float32 input validated (and
        converted to int8 codes in the same pass when the consumer wants ``codes``)."""
        if name == graph.input_name and raw_input[0]:
            if codes:
                found = spike_codes(values[name])
                if found is None or found[1] > 1:
                    raise _Void
                values[name] = found[0]
            else:
                bounds = spike_range(values[name])
                if bounds is None or bounds[0] < -1 or bounds[1] > 1:
                    raise _Void
            raw_input[0] = False
        return values[name]

    skipped: set[str] = set()  # synapse nodes whose neuron accumulates their events this chunk
    for i, name in enumerate(order):
        node = nodes[name]
        op = node.op
        if node.choice is not None:  # a synapse op
            src = values[node.args[0]]
            path = node.choice.path(src)
            if path == "event" and node.choice.fused:
                skipped.add(name)
                continue
            if path == "event":
                assert node.event is not None
                value, bad = node.event.run(
                    np.ascontiguousarray(src.reshape(tc, bc, *node.in_shape)), node.limit
                )
                if bad:
                    raise _Void if raw_input[0] and node.args[0] == graph.input_name else AssertionError(name)
                value = value.reshape(tc, bc, *node.shape)
            else:
                assert node.dense is not None
                arg = checked(node.args[0], codes=path == "int8-mm")
                value = node.dense(arg.reshape(tc * bc, *arg.shape[2:])).reshape(tc, bc, *node.shape)
                if path == "onednn-f32" and not node.verified:
                    value = node.verify(arg.reshape(tc, bc, *node.in_shape), value)
        elif node.kernel is not None:
            value = _neuron(graph, node, values, skipped, checked, states[name], out, where, raw_input)
        elif isinstance(op, MaxPool2d | SumPool2d | AvgPool2d):
            arg = checked(node.args[0])
            value = _pool(op, arg.reshape(tc * bc, *arg.shape[2:]), node.bits).reshape(tc, bc, *node.shape)
        else:
            args = [checked(a) for a in node.args]
            if op.kind in ("flatten", "output"):
                value = args[0].reshape(tc, bc, *node.shape)
            else:
                value = REFERENCE[type(op)](op, [a.astype(np.int64) for a in args], {"n": 0})[0]
        values[name] = value
        if name in out.values and out.values[name] is not out.spikes.get(name):
            out.values[name][t0:t1, b0:b1] = value
        for a in node.args:
            if last_use[a] == i and a not in keep:
                values.pop(a, None)  # free intermediates as soon as their last user has run
    if graph.input_name in out.values:
        out.values[graph.input_name][t0:t1, b0:b1] = checked(graph.input_name)


def _neuron(
    graph: Graph,
    node: _Node,
    values: dict[str, Array],
    skipped: set[str],
    checked: Callable[[str], Array],
    state: dict[str, Array],
    out: _Outputs,
    where: tuple[int, int, int, int],
    raw_input: list[bool],
) -> Array:
    """A neuron layer's chunk through its kernel (accumulating its synapse op's events when fused)."""
    t0, t1, b0, b1 = where
    tc, bc = t1 - t0, b1 - b0
    arg = node.args[0]
    limit = 0
    if arg in skipped:
        assert node.fused_kernel is not None and node.source is not None
        kernel, src_name, limit = node.fused_kernel, node.source.args[0], node.source.limit
        x = values[src_name]
    else:
        assert node.kernel is not None
        kernel, src_name = node.kernel, arg
        x = checked(arg)
    x = np.ascontiguousarray(x.reshape(tc, bc, -1))
    res = kernel.outputs(tc, bc)
    sat, bad = kernel.run(x, state, res, limit)
    if bad:
        if raw_input[0] and src_name == graph.input_name:
            raise _Void
        raise AssertionError(f"{node.name}: events beyond the proven bound")
    name = node.name
    out.saturations[name] += sat
    spikes = res["spikes"].reshape(tc, bc, *node.shape)
    out.spikes[name][t0:t1, b0:b1] = spikes
    for v, arr in out.states[name].items():
        arr[t0:t1, b0:b1] = res[v].reshape(tc, bc, *node.shape)
    return spikes
