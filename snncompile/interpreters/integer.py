"""The integer reference interpreter: the specification of the hardware.

Plain int64 numpy arithmetic, one rule per fixed-point op in :data:`EVAL`, each neuron rule following
its op's docstring term by term and rounding once per state per step. Every value is an integer code
on its node's grid (:meth:`Graph.fracs`): spikes are ``s * graded`` codes. Saturations are counted per
node. The fast simulator and the memory image must match this interpreter bit for bit.

The arithmetic is exact: before anything runs, the static range analysis
(:func:`~snncompile.passes.ranges.analyze_ranges`, the one the compiler and the fast engine use)
bounds every intermediate for the input codes actually given, and a graph whose intermediates could
reach ``2**62`` is refused with the node named, so int64 never wraps silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from snncompile.errors import GraphError, InputError
from snncompile.interpreters.common import Run, as_input, kept_nodes, output_value
from snncompile.ir import (
    QLIF,
    AvgPool2d,
    ConvRecurrence,
    DenseRecurrence,
    FixedQuant,
    Flatten,
    Graph,
    Input,
    MaxPool2d,
    Op,
    Output,
    QConv2d,
    QCubaLIF,
    QLinear,
    Recurrence,
    SumPool2d,
)
from snncompile.ir.qops import step_shifts
from snncompile.passes.ranges import analyze_ranges
from snncompile.quant.fixed import check_rounding, round_shift, saturate

Array = np.ndarray
Counter = dict[str, int]
Rule = Callable[[Any, list[Array], Counter], tuple[Array, dict[str, Array]]]


def _stepwise(fn: Callable[[Array], Array], x: Array) -> Array:
    """A stateless op on all ``T*B`` samples at once (integer results do not depend on batching)."""
    y = fn(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
    return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


def _windows(
    x: Array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
    ceil_mode: bool = False,
) -> Array:
    """``(N, C, OH, OW, kh, kw)`` windows of ``x`` (N, C, H, W), padded with ``pad_value``."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    h, w = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
    extra_h = extra_w = 0
    if ceil_mode:
        oh2, ow2 = -(-(h - eh) // sh) + 1, -(-(w - ew) // sw) + 1
        oh2 -= int((oh2 - 1) * sh >= x.shape[2] + ph)
        ow2 -= int((ow2 - 1) * sw >= x.shape[3] + pw)
        extra_h, extra_w = (oh2 - 1) * sh + eh - h, (ow2 - 1) * sw + ew - w
        oh, ow = oh2, ow2
    xp = np.pad(
        x, ((0, 0), (0, 0), (ph, ph + max(extra_h, 0)), (pw, pw + max(extra_w, 0))), constant_values=pad_value
    )
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))
    return win[:, :, : oh * sh : sh, : ow * sw : sw, ::dh, ::dw]


def conv2d_int(
    x: Array,
    weight: Array,
    bias: Array | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Array:
    """Integer 2-d convolution (cross-correlation, zero padding), as torch's conv2d defines it."""
    kernel = (int(weight.shape[2]), int(weight.shape[3]))
    win = _windows(x, kernel, stride, padding, dilation, 0)
    cin, cout = x.shape[1] // groups, weight.shape[0] // groups
    out = np.concatenate(
        [
            np.einsum(
                "nchwij,ocij->nohw",
                win[:, g * cin : (g + 1) * cin],
                weight[g * cout : (g + 1) * cout],
                optimize=True,
            )
            for g in range(groups)
        ],
        axis=1,
    )
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def recurrent_int(rec: Recurrence, s: Array) -> Array:
    """``R(s)`` on integer codes."""
    if isinstance(rec, DenseRecurrence):
        out = s @ rec.weight.T
        return out if rec.bias is None else out + rec.bias
    if isinstance(rec, ConvRecurrence):
        return conv2d_int(s, rec.weight, rec.bias, (1, 1), rec.padding, (1, 1), 1)
    return s * rec.weight


def _state_step(acc: Array, shift: int, q: FixedQuant, sat: Counter) -> Array:
    """Round the exact accumulator once onto the state grid and saturate (counted)."""
    out, n = saturate(round_shift(acc, shift, check_rounding(q.rounding)), q.lo, q.hi)
    sat["n"] += n
    return out


def _immediate(op: QLIF | QCubaLIF, mem: Array, spk: Array, r: Array, thr: Array, sat: Counter) -> Array:
    d = spk - r
    if op.reset == "subtract":
        mem = mem - d * thr
    elif op.reset == "zero":
        mem = mem - d * mem
    out, n = saturate(mem, op.mem.lo, op.mem.hi)
    sat["n"] += n
    return out


def eval_qlif(op: QLIF, args: list[Array], sat: Counter) -> tuple[Array, dict[str, Array]]:
    (x,) = args
    sh = step_shifts(op)
    mem = np.zeros(x.shape[1:], np.int64)
    spk = np.zeros(x.shape[1:], np.int64)
    spikes, mems = [], []
    for t in range(x.shape[0]):
        r = (mem > op.threshold).astype(np.int64)
        m0 = (1 - r) * mem if op.reset == "zero" and op.zero_mode == "keep_input" else mem
        cur = x[t] if op.bias is None else x[t] + op.bias
        acc = ((op.beta * m0) << sh.decay) + (cur << sh.input)
        if op.recurrence is not None:
            acc = acc + (recurrent_int(op.recurrence, spk * op.graded) << sh.rec)
        if op.reset == "subtract":
            acc = acc - ((r * op.threshold) << sh.thr)
        elif op.reset == "zero" and op.zero_mode == "drop_update":
            acc = (1 - r) * acc
        mem = _state_step(acc, sh.out, op.mem, sat)
        if op.floor is not None:
            mem = np.maximum(mem, op.floor)
        spk = (mem > op.threshold).astype(np.int64)
        if not op.reset_delay:
            mem = _immediate(op, mem, spk, r, op.threshold, sat)
        spikes.append(spk * op.graded)
        mems.append(mem)
    return np.stack(spikes), {"mem": np.stack(mems)}


def eval_qcubalif(op: QCubaLIF, args: list[Array], sat: Counter) -> tuple[Array, dict[str, Array]]:
    (x,) = args
    sh = step_shifts(op)
    mem = np.zeros(x.shape[1:], np.int64)
    syn = np.zeros(x.shape[1:], np.int64)
    spk = np.zeros(x.shape[1:], np.int64)
    spikes, mems, syns = [], [], []
    for t in range(x.shape[0]):
        r = (mem > op.threshold).astype(np.int64)
        acc_i = ((op.alpha * syn) << sh.alpha) + (x[t] << sh.input)
        if op.recurrence is not None:
            acc_i = acc_i + (recurrent_int(op.recurrence, spk * op.graded) << sh.rec)
        acc = ((op.beta * mem) << sh.decay) + (acc_i << sh.current)
        if op.reset == "subtract":
            acc = acc - ((r * op.threshold) << sh.thr)
        elif op.reset == "zero":
            acc = (1 - r) * acc
        syn = _state_step(acc_i, sh.syn_out, op.syn, sat)
        mem = _state_step(acc, sh.out, op.mem, sat)
        spk = (mem > op.threshold).astype(np.int64)
        if not op.reset_delay:
            mem = _immediate(op, mem, spk, r, op.threshold, sat)
        spikes.append(spk * op.graded)
        mems.append(mem)
        syns.append(syn)
    return np.stack(spikes), {"mem": np.stack(mems), "syn": np.stack(syns)}


def eval_qlinear(op: QLinear, args: list[Array], sat: Counter) -> tuple[Array, dict[str, Array]]:
    def dense(v: Array) -> Array:
        out = v @ op.weight.T
        return out if op.bias is None else out + op.bias

    return _stepwise(dense, args[0]), {}


def eval_qconv2d(op: QConv2d, args: list[Array], sat: Counter) -> tuple[Array, dict[str, Array]]:
    def conv(v: Array) -> Array:
        return conv2d_int(v, op.weight, op.bias, op.stride, op.padding, op.dilation, op.groups)

    return _stepwise(conv, args[0]), {}


def eval_maxpool(op: MaxPool2d, args: list[Array], sat: Counter) -> tuple[Array, dict[str, Array]]:
    low = np.iinfo(np.int64).min

    def pool(v: Array) -> Array:
        win = _windows(v, op.kernel, op.stride, op.padding, op.dilation, low, op.ceil_mode)
        out: Array = win.max(axis=(4, 5))
        return out

    return _stepwise(pool, args[0]), {}


def eval_sumpool(
    op: SumPool2d | AvgPool2d, args: list[Array], sat: Counter
) -> tuple[Array, dict[str, Array]]:
    """A window sum; for AvgPool2d the division is the finer output grid (see ``pool_shift``)."""

    def pool(v: Array) -> Array:
        out: Array = _windows(v, op.kernel, op.stride, op.padding, (1, 1), 0).sum(axis=(4, 5))
        return out

    return _stepwise(pool, args[0]), {}


def eval_flatten(op: Flatten, args: list[Array], sat: Counter) -> tuple[Array, dict[str, Array]]:
    (x,) = args
    start, end = (d % x.ndim for d in op.batched_dims())
    return x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :]), {}


def eval_output(op: Output, args: list[Array], sat: Counter) -> tuple[Array, dict[str, Array]]:
    return args[0], {}


EVAL: dict[type[Op], Rule] = {
    QLIF: eval_qlif,
    QCubaLIF: eval_qcubalif,
    QLinear: eval_qlinear,
    QConv2d: eval_qconv2d,
    MaxPool2d: eval_maxpool,
    SumPool2d: eval_sumpool,
    AvgPool2d: eval_sumpool,
    Flatten: eval_flatten,
    Output: eval_output,
}
"""The integer rule of every fixed-point op except Input."""


def input_codes(graph: Graph, x: Any, dtype: type[np.signedinteger[Any]] | None = np.int64) -> Array:
    """``x[T, B, ...]`` as integer codes on the input grid (``dtype``, int64 by default, or the smallest
    of int8/int16/int32/int64 that holds them when ``dtype`` is None); refuses values off the grid."""
    op = graph.op(graph.input_name)
    assert isinstance(op, Input) and op.frac is not None
    if dtype is None and not op.frac and _small_spikes(x, op.shape):
        return x.view(np.int8) if x.dtype != np.int8 else x  # uint8/bool/int8 spikes: used as they are
    xf = as_input(x, op.shape)
    if dtype is None and not op.frac:  # the common case, spikes: one multithreaded pass through torch
        t = torch.from_numpy(xf)
        small = t.to(torch.int8)
        if torch.equal(small.to(t.dtype), t):
            return small.numpy()
    if op.frac:
        xf = xf * np.float32(2.0**op.frac)  # exact: a power-of-two scale of float32 values
    codes = np.rint(xf)
    if not np.array_equal(codes, xf):
        raise InputError(
            f"input values are not on the program's input grid 2^-{op.frac} "
            f"({'spikes: integers' if op.frac == 0 else 'fixed-point currents'}); quantize them first "
            "(Program.quantize_input, or simulate --quantize-input) or compile with calibration data that "
            "holds such currents"
        )
    peak = float(np.abs(codes).max(initial=0))
    if peak >= 2.0**62:
        raise InputError(
            f"input codes reach {peak:.4g}, beyond the 2^62 that integer arithmetic holds exactly"
        )
    if dtype is None:
        dtype = next(d for d in (np.int8, np.int16, np.int32, np.int64) if peak <= np.iinfo(d).max)
    return codes.astype(dtype)


def _small_spikes(x: Any, shape: tuple[int, ...]) -> bool:
    """Whether ``x`` is a numpy bool/uint8/int8 array of the right shape holding codes in 0..127."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.bool_, np.uint8, np.int8):
        return False
    if x.ndim != len(shape) + 2 or tuple(x.shape[2:]) != tuple(shape) or 0 in x.shape[:2]:
        return False
    if x.dtype == np.bool_:
        return True
    return int(x.max()) <= 127 and (x.dtype == np.uint8 or int(x.min()) >= 0)


def run_integer(graph: Graph, x: Any) -> Run:
    """Runs a fixed-point graph on ``x[T, B, *input_shape]`` (values on the input grid) from zero state;
    a :class:`~snncompile.errors.QuantizationError` when an intermediate could leave int64.

    ``Run.spikes`` holds spike codes (``s * graded``), ``Run.states`` the integer state codes and
    ``Run.saturations`` the count of saturation events per node.
    """
    graph.verify()
    if not graph.is_fixed:
        raise GraphError("run_integer needs a fixed-point graph (quantize the float graph first)")
    inp = graph.input_name
    values: dict[str, Array] = {inp: input_codes(graph, x)}
    analyze_ranges(graph, max(int(np.abs(values[inp]).max(initial=0)), 1))
    spikes: dict[str, Array] = {}
    states: dict[str, dict[str, Array]] = {}
    saturations: dict[str, int] = {}
    for name in graph.topo_order():
        if name == inp:
            continue
        op = graph.op(name)
        rule = EVAL.get(type(op))
        if rule is None:
            raise GraphError(f"the integer interpreter has no rule for {op.kind} (node {name!r})")
        sat = {"n": 0}
        out, st = rule(op, [values[a] for a in graph.args(name)], sat)
        values[name] = out
        if st:
            spikes[name], states[name], saturations[name] = out, st, sat["n"]
    kept = {n: values[n] for n in kept_nodes(graph)}
    first = output_value(graph, graph.outputs[0], spikes, states, kept)
    return Run(graph, first, spikes, states, saturations, kept)
