"""The fixed-point ops: integer arrays on power-of-two grids, produced by the quantize pass.

Every value on an edge is an integer code ``v`` meaning ``v * 2**-frac``; :func:`out_frac` gives the
``frac`` of each op's output from its inputs' (the fixed-point twin of shape inference). Stateless
ops without parameters (MaxPool2d, SumPool2d, Flatten, Output) are shared with the float IR; an
AvgPool2d over a window of ``2**k`` elements is a sum on a grid ``k`` bits finer.

The neuron ops state their integer update in full; they are the specification that the integer
interpreter, the simulator and the hardware implement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from snncompile.errors import GraphError
from snncompile.ir.ops import (
    AvgPool2d,
    Conv2d,
    FixedQuant,
    Flatten,
    Input,
    Linear,
    MaxPool2d,
    Node,
    Op,
    Output,
    Recurrence,
    Reset,
    Shape,
    SumPool2d,
    ZeroMode,
    _broadcast_param,
    _check_neuron,
    _fmt_array,
)


def _check_shift(op: QLinear | QConv2d) -> None:
    if op.channel_shift is None:
        return
    shift = op.channel_shift
    if shift.shape != (op.weight.shape[0],) or np.any(shift < 0) or np.any(shift > 30):
        raise GraphError(f"channel_shift must hold one shift in 0..30 per output channel, got {shift.shape}")
    rows = op.weight.reshape(op.weight.shape[0], -1)
    if np.any(rows & ((np.int64(1) << shift[:, None]) - 1)):
        raise GraphError("weights are not multiples of their channel's 2**channel_shift")


class _Synapses:
    """What QLinear and QConv2d add to their float twins: integer weights on ``2**-weight_frac``."""

    weight: np.ndarray
    weight_frac: int
    channel_shift: np.ndarray | None

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        _check_shift(self)  # type: ignore[arg-type]
        return super().out_shape(in_shapes)  # type: ignore[misc]

    def attrs(self) -> list[str]:
        per_channel = [] if self.channel_shift is None else ["per-channel"]
        return [*super().attrs(), f"w/2^{self.weight_frac}", *per_channel]  # type: ignore[misc]


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class QLinear(_Synapses, Linear):
    """``y = W x + b`` on integers: W on ``2**-weight_frac``, y and b on ``2**-(in_frac + weight_frac)``.

    ``channel_shift`` (per-channel weight scales): output channel ``o`` stores codes ``W[o] >> shift[o]``
    (its own coarser grid) that the core shifts back; ``W`` always holds the weights on the shared grid.
    """

    kind: ClassVar[str] = "qlinear"
    array_dtype: ClassVar[type[np.generic]] = np.int64
    weight_frac: int
    channel_shift: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class QConv2d(_Synapses, Conv2d):
    """``y = conv2d(x, W) + b`` on integers, grids and ``channel_shift`` as :class:`QLinear`."""

    kind: ClassVar[str] = "qconv2d"
    array_dtype: ClassVar[type[np.generic]] = np.int64
    weight_frac: int
    channel_shift: np.ndarray | None = None


def stored_codes(op: QLinear | QConv2d) -> np.ndarray:
    """The weight codes as the synapse memory stores them (per-channel shifts taken out)."""
    if op.channel_shift is None:
        return op.weight
    shape = (-1,) + (1,) * (op.weight.ndim - 1)
    return op.weight >> op.channel_shift.reshape(shape)


def _q_attrs(op: QLIF | QCubaLIF, decays: list[str]) -> list[str]:
    out = [*decays, f"thr={_fmt_array(op.threshold)}", f"reset={op.reset}"]
    if isinstance(op, QLIF) and op.reset == "zero":
        out.append(f"zero={op.zero_mode}")
    if not op.reset_delay:
        out.append("immediate")
    if not (np.all(op.graded == 1) and op.graded_frac == 0):
        out.append(f"graded={_fmt_array(op.graded)}/2^{op.graded_frac}")
    if op.recurrence is not None:
        out.append(f"{op.recurrence.describe()}/2^{op.rec_frac}")
    return out


def _check_q_neuron(op: QLIF | QCubaLIF, shape: Shape) -> None:
    _check_neuron(op, shape)  # type: ignore[arg-type]
    for q in (op.mem,) + ((op.syn,) if isinstance(op, QCubaLIF) else ()):
        if q.lo > 0 or q.hi < 0:
            raise GraphError(f"state range [{q.lo}, {q.hi}] must contain 0 (the initial state)")


@dataclasses.dataclass(frozen=True, eq=False)
class QLIF(Op):
    """The integer LIF step (the numeric contract), with ``m`` on ``2**-f`` (``f = mem.frac``)::

        r     = m[t-1] > thr                                # delayed reset, strict
        F     = max(f + decay_frac, in_frac, rec_frac)      # the finest grid of all terms
        m0    = (1 - r)*m[t-1] for zero reset keep_input, else m[t-1]
        acc   = beta*m0 << (F-f-decay_frac) + (x[t] + bias) << (F-in_frac) (+ R(s[t-1]) << (F-rec_frac))
        subtract:          acc -= r*thr << (F-f)
        zero, drop_update: acc  = (1 - r)*acc
        m[t]  = clamp(round_shift(acc, F - f, mem.rounding), mem.lo, mem.hi)      # rounded once
        floor: m[t] = max(m[t], floor)
        s[t]  = m[t] > thr                                  # spike value s*graded on 2**-graded_frac

    Immediate reset (``reset_delay=False``) then applies ``d = s[t] - r``: ``m -= d*thr`` (subtract)
    or ``m -= d*m`` (zero), clamped to the state range. ``R(s)`` is the recurrence applied to the
    graded spikes, landing on ``2**-rec_frac`` (its weight on ``2**-(rec_frac - graded_frac)``).
    Saturations are counted per node.
    """

    kind: ClassVar[str] = "qlif"
    array_dtype: ClassVar[type[np.generic]] = np.int64
    beta: np.ndarray
    decay_frac: int
    threshold: np.ndarray
    mem: FixedQuant
    in_frac: int
    reset: Reset = "subtract"
    reset_delay: bool = True
    zero_mode: ZeroMode = "keep_input"
    graded: np.ndarray = dataclasses.field(default_factory=lambda: np.array(1, np.int64))
    graded_frac: int = 0
    recurrence: Recurrence | None = None
    rec_frac: int = 0
    bias: np.ndarray | None = None
    floor: int | None = None

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        _check_q_neuron(self, shape)
        if self.bias is not None:
            _broadcast_param("bias", self.bias, shape)
        return shape

    def attrs(self) -> list[str]:
        out = _q_attrs(self, [f"beta={_fmt_array(self.beta)}/2^{self.decay_frac}"])
        out.append(f"mem={self.mem.describe()}")
        if self.floor is not None:
            out.append(f"floor={self.floor}")
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class QCubaLIF(Op):
    """The integer current-based LIF step, with ``I`` on ``2**-fs`` and ``m`` on ``2**-f``::

        r    = m[t-1] > thr
        FI   = max(fs + alpha_frac, in_frac, rec_frac)
        accI = alpha*I[t-1] << (FI-fs-alpha_frac) + x[t] << (FI-in_frac) (+ R(s[t-1]) << (FI-rec_frac))
        F    = max(f + decay_frac, FI)
        acc  = beta*m[t-1] << (F-f-decay_frac) + accI << (F-FI)   # the exact current, not its rounding
        subtract: acc -= r*thr << (F-f);  zero: acc = (1 - r)*acc;  none: unchanged
        I[t] = clamp(round_shift(accI, FI - fs, syn.rounding), syn.lo, syn.hi)
        m[t] = clamp(round_shift(acc, F - f, mem.rounding), mem.lo, mem.hi)
        s[t] = m[t] > thr

    Immediate reset as in :class:`QLIF`.
    """

    kind: ClassVar[str] = "qcubalif"
    array_dtype: ClassVar[type[np.generic]] = np.int64
    alpha: np.ndarray
    alpha_frac: int
    beta: np.ndarray
    decay_frac: int
    threshold: np.ndarray
    mem: FixedQuant
    syn: FixedQuant
    in_frac: int
    reset: Reset = "subtract"
    reset_delay: bool = True
    graded: np.ndarray = dataclasses.field(default_factory=lambda: np.array(1, np.int64))
    graded_frac: int = 0
    recurrence: Recurrence | None = None
    rec_frac: int = 0

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        _check_q_neuron(self, shape)
        _broadcast_param("alpha", self.alpha, shape)
        return shape

    def attrs(self) -> list[str]:
        decays = [
            f"alpha={_fmt_array(self.alpha)}/2^{self.alpha_frac}",
            f"beta={_fmt_array(self.beta)}/2^{self.decay_frac}",
        ]
        return [*_q_attrs(self, decays), f"mem={self.mem.describe()}", f"syn={self.syn.describe()}"]


Q_NEURON_OPS: tuple[type[Op], ...] = (QLIF, QCubaLIF)


@dataclasses.dataclass(frozen=True)
class StepShifts:
    """Where the terms of a neuron step meet: the left shifts that put each on the finest grid among
    them, and the right shifts that round the sums back (the ``F - ...`` of :class:`QLIF` and
    :class:`QCubaLIF`). QLIF: ``acc = beta*m0 << decay + (x + bias) << input + R << rec - r*thr << thr``,
    ``m = round_shift(acc, out)``. QCubaLIF: ``accI = alpha*I << alpha + x << input + R << rec``,
    ``I = round_shift(accI, syn_out)``, ``acc = beta*m << decay + accI << current - r*thr << thr``,
    ``m = round_shift(acc, out)``. Every implementation of the step (reference, fast engine, range
    analysis) reads them from :func:`step_shifts`."""

    decay: int
    input: int
    rec: int
    thr: int
    out: int
    alpha: int = 0
    current: int = 0
    syn_out: int = 0


def step_shifts(op: QLIF | QCubaLIF) -> StepShifts:
    """The :class:`StepShifts` of a neuron op (its recurrence's grid is the input's when it has none)."""
    f = op.mem.frac
    rec_frac = op.rec_frac if op.recurrence is not None else op.in_frac
    if isinstance(op, QCubaLIF):
        fs = op.syn.frac
        big_i = max(fs + op.alpha_frac, op.in_frac, rec_frac)
        big = max(f + op.decay_frac, big_i)
        return StepShifts(
            decay=big - f - op.decay_frac, input=big_i - op.in_frac, rec=big_i - rec_frac, thr=big - f,
            out=big - f, alpha=big_i - fs - op.alpha_frac, current=big - big_i, syn_out=big_i - fs,
        )  # fmt: skip
    big = max(f + op.decay_frac, op.in_frac, rec_frac)
    return StepShifts(
        decay=big - f - op.decay_frac, input=big - op.in_frac, rec=big - rec_frac, thr=big - f, out=big - f
    )


def pool_shift(op: AvgPool2d) -> int:
    """``k`` for an average over ``2**k`` elements (a sum on a finer grid); GraphError otherwise."""
    n = op.kernel[0] * op.kernel[1] if op.divisor_override is None else op.divisor_override
    k = n.bit_length() - 1
    if n < 1 or n != 1 << k or (op.padding != (0, 0) and not op.count_include_pad) or op.ceil_mode:
        raise GraphError(
            f"avgpool2d over {op.kernel[0]}x{op.kernel[1]} is not a power-of-two average without partial "
            "windows, so it is not exact in fixed point; use a 2x2 or 4x4 window (or SumPool2d)"
        )
    return k


def out_frac(op: Op, in_fracs: Sequence[int]) -> int:
    """The grid (``frac``) of ``op``'s output in the fixed-point IR."""
    if isinstance(op, Input):
        if op.frac is None:
            raise GraphError("the input of a fixed-point graph needs a frac")
        return op.frac
    if isinstance(op, QLinear | QConv2d):
        return in_fracs[0] + op.weight_frac
    if isinstance(op, QLIF | QCubaLIF):
        if in_fracs[0] != op.in_frac:
            raise GraphError(f"input arrives on 2^-{in_fracs[0]}, the neuron expects 2^-{op.in_frac}")
        return op.graded_frac
    if isinstance(op, AvgPool2d):
        return in_fracs[0] + pool_shift(op)
    if isinstance(op, MaxPool2d | SumPool2d | Flatten | Output):
        return in_fracs[0]
    raise GraphError(f"{op.kind} has no fixed-point form")


FIXED_OPS: tuple[type[Node], ...] = (QLinear, QConv2d, QLIF, QCubaLIF)
