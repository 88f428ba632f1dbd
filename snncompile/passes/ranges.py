"""Static range analysis of a fixed-point graph: worst-case magnitudes and what they imply.

For every node it bounds the largest integer code the node can produce and, for synapse and neuron
ops, the largest exact intermediate (an accumulator, in units of its grid), from the formats and the
fan-in alone. From these follow:

* whether int64 arithmetic is safe (every intermediate below 2**62, else the graph is refused);
* whether a float QAT forward can be bit-exact: every float32 result is exact while its magnitude in
  units of its grid stays below 2**24 (float64: 2**53), QAT_NOTES.md §4 rule 1;
* which neuron layers can saturate (their accumulator bound exceeds the state range).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from snncompile.errors import QuantizationError
from snncompile.ir import QLIF, AvgPool2d, Graph, Input, QConv2d, QCubaLIF, QLinear, SumPool2d, pool_shift
from snncompile.ir.ops import OneToOneRecurrence, Recurrence
from snncompile.ir.qops import step_shifts

Verdict = Literal["float32-exact", "float64-exact", "inexact"]


@dataclasses.dataclass(frozen=True)
class NodeRange:
    """``out_max``: the largest |code| the node outputs; ``bits``: bits of its largest intermediate
    (sign excluded); ``saturating``: the state range can be exceeded (then it saturates)."""

    out_max: int
    bits: int
    saturating: bool = False


@dataclasses.dataclass(frozen=True)
class RangeReport:
    nodes: dict[str, NodeRange]

    @property
    def bits(self) -> int:
        return max((r.bits for r in self.nodes.values()), default=0)

    @property
    def verdict(self) -> Verdict:
        """float32-exact when every intermediate stays below 2**24 LSB, float64-exact below 2**53."""
        return "float32-exact" if self.bits <= 24 else "float64-exact" if self.bits <= 53 else "inexact"

    @property
    def saturating(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.saturating]


def _row_sum(weight: np.ndarray) -> int:
    """The largest sum of |w| feeding one output (the fan-in bound of a dense or conv layer)."""
    return int(np.abs(weight).reshape(weight.shape[0], -1).sum(axis=1).max(initial=0))


def _rec_bound(rec: Recurrence | None, spike_max: int) -> int:
    if rec is None:
        return 0
    if isinstance(rec, OneToOneRecurrence):
        return int(np.abs(rec.weight).max()) * spike_max
    bias = 0 if rec.bias is None else int(np.abs(rec.bias).max())
    return _row_sum(rec.weight) * spike_max + bias


def _neuron(op: QLIF | QCubaLIF, x_max: int) -> NodeRange:
    m_max = max(-op.mem.lo, op.mem.hi)
    thr = int(np.abs(op.threshold).max())
    beta = int(np.abs(op.beta).max())
    graded = int(np.abs(op.graded).max())
    rec = _rec_bound(op.recurrence, graded)
    sh = step_shifts(op)
    terms: list[int] = []
    if isinstance(op, QCubaLIF):
        s_max = max(-op.syn.lo, op.syn.hi)
        acc_i = int(np.abs(op.alpha).max()) * s_max * 2**sh.alpha + x_max * 2**sh.input + rec * 2**sh.rec
        acc = beta * m_max * 2**sh.decay + acc_i * 2**sh.current + thr * 2**sh.thr
        terms += [acc_i, int(np.abs(op.alpha).max()) * s_max]
        saturating = acc_i >> sh.syn_out > s_max
    else:
        bias = 0 if op.bias is None else int(np.abs(op.bias).max())
        acc = beta * m_max * 2**sh.decay + (x_max + bias) * 2**sh.input + rec * 2**sh.rec + thr * 2**sh.thr
        saturating = False
    terms += [acc, beta * m_max]
    saturating = saturating or acc >> sh.out > m_max
    return NodeRange(graded, max(t.bit_length() for t in terms), saturating)


def analyze_ranges(graph: Graph, input_max: int) -> RangeReport:
    """The worst-case magnitudes of a fixed-point graph whose input codes stay within ``input_max``
    (1 for spikes); raises if int64 arithmetic could overflow."""
    out: dict[str, NodeRange] = {}
    for n in graph.topo_order():
        op = graph.op(n)
        x_max = out[graph.args(n)[0]].out_max if graph.args(n) else 0
        if isinstance(op, Input):
            out[n] = NodeRange(input_max, input_max.bit_length())
        elif isinstance(op, QLinear | QConv2d):
            bias = 0 if op.bias is None else int(np.abs(op.bias).max())
            acc = _row_sum(op.weight) * x_max + bias
            out[n] = NodeRange(acc, acc.bit_length())
        elif isinstance(op, QLIF | QCubaLIF):
            out[n] = _neuron(op, x_max)
        elif isinstance(op, AvgPool2d | SumPool2d):
            window = op.kernel[0] * op.kernel[1]
            out[n] = NodeRange(x_max * window, (x_max * window).bit_length())
            if isinstance(op, AvgPool2d):
                pool_shift(op)
        else:
            out[n] = NodeRange(x_max, x_max.bit_length())
        if out[n].bits > 62:
            raise QuantizationError(
                f"node {n!r}: intermediates can reach 2^{out[n].bits}, beyond int64; narrow its formats"
            )
    return RangeReport(out)
