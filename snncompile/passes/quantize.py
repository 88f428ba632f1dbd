"""The quantize pass: a float IR graph and a target -> a fixed-point IR graph.

Every float value is put on a power-of-two grid:

* **Exact** (quantization-aware trained models): a value that already lies on a grid whose codes fit
  the target (brevitas FixedPoint weights, :class:`~snncompile.quant.DyadicGrid` decays and thresholds,
  :class:`~snncompile.quant.FixedPoint` or dyadic snnTorch ``state_quant`` state formats) is taken as is.
  A state quantizer makes the model a QAT model: its threshold must then lie on the state grid.
* **Post-training** (float models): weights get brevitas' per-layer rule
  ``scale = 2**ceil(log2(max|w| / 2**(bits-1)))``, round half to even, narrow range; decays are
  rounded to ``2**-decay_frac``; each neuron layer's state grid is chosen from the ranges that a float
  run over calibration inputs reaches and from the layer's threshold, ``m = max(peak, max|thr|)``,
  with 2x headroom within the target's state width ``w``: ``f = w - 2 - ceil(log2 m)``, so the
  threshold code is at most ``2**(w-2)``, below ``mem.hi = 2**(w-1) - 1``, and can always be crossed
  (the peak alone can lie below the threshold: with an immediate reset the stored membrane never
  holds a value above it); thresholds and biases are rounded onto the grids of their layer.

A threshold code ``>= mem.hi`` can never be crossed (``s = m > thr`` and ``m <= mem.hi``): from a
state grid chosen here that is an error; from a format the model gives (QAT) it is a note naming how
many neurons can never fire and how often the float model fired them on the calibration data.

BatchNorm is folded into the synapse op before it first (:mod:`.fold_batchnorm`, noted), so is an
imported NIR neuron's input gain (a Scale, folded into the layer before it or the neuron's threshold:
:mod:`.fold_scale`, noted); calibration runs on the folded graph, and a model's input quantizer
becomes the input format (:mod:`.fold_input_grid`). An snnTorch ``state_quant``
table that is not a dyadic uniform grid has no fixed-point form: it is refused unless the caller opts
into the nearest fixed-point format (``approximate_state_quant=True``); the note then gives the
measured error of that format over the table's range and, with calibration data, the measured spike
agreement of the float model with it.

Everything that was rounded is listed in :attr:`QuantizeResult.notes`; nothing is changed silently.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from snncompile.errors import GraphError, QuantizationError
from snncompile.interpreters.float32 import _quantize, run_float
from snncompile.ir import (
    LIF,
    QLIF,
    AvgPool2d,
    Conv2d,
    ConvRecurrence,
    CubaLIF,
    DenseRecurrence,
    FixedQuant,
    Flatten,
    Graph,
    Input,
    InputGrid,
    LevelTable,
    Linear,
    MaxPool2d,
    OneToOneRecurrence,
    Op,
    Output,
    QConv2d,
    QCubaLIF,
    QLinear,
    Quantizer,
    Recurrence,
    SumPool2d,
    pool_shift,
)
from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.fold_input_grid import fold_input_grid
from snncompile.passes.fold_scale import fold_scale
from snncompile.quant.fixed import exact_frac, to_fixed
from snncompile.targets import Target

_EXACT_LIMIT = 24  # the finest grid (bits after the point) a value may already sit on to count as exact
GRADED_FRAC = 8  # the grid of a graded-spike factor that lies on no grid (prepare_qat keeps it there)


@dataclasses.dataclass(frozen=True)
class QuantizeResult:
    """The fixed-point graph, one note per value that was rounded rather than read exactly, and a
    ``NEVER FIRES`` note per layer of the model whose threshold no membrane can exceed."""

    graph: Graph
    notes: tuple[str, ...]
    exact: bool  # True when nothing was rounded: the graph equals the (QAT) model (warnings aside)


@dataclasses.dataclass
class _State:
    float_graph: Graph
    target: Target
    ranges: dict[str, dict[str, float]] | None
    fired: dict[str, int] | None  # spikes of each neuron node in the float calibration run
    out: Graph
    fracs: dict[str, int]
    notes: list[str]
    warnings: int = 0  # notes that warn about the model as given (nothing was rounded for them)
    approximate: bool = False
    approximated: dict[str, dict[str, tuple[LevelTable, FixedQuant]]] = dataclasses.field(
        default_factory=dict
    )

    def note(self, node: str, text: str) -> None:
        self.notes.append(f"{node}: {text}")


def _codes(st: _State, node: str, field: str, value: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """Integer codes and grid of a weight-like tensor: exact when already on a fitting grid, else PTQ."""
    limit = (1 << (bits - 1)) - 1
    f = exact_frac(value, _EXACT_LIMIT)
    if f is not None:
        codes = to_fixed(value, f)
        peak = int(np.abs(codes).max(initial=0))
        if peak <= limit:
            return codes, f
        if f <= 16:
            raise QuantizationError(
                f"node {node!r}: {field} lies on the grid 2^-{f} but its codes need {peak.bit_length() + 1} "
                f"bits; target {st.target.name!r} has {bits}-bit weights (the format is too narrow for "
                "the weights: train with that bit width or pick a wider target)"
            )
    peak_v = float(np.abs(value).max(initial=0))
    if peak_v == 0:
        return np.zeros(value.shape, np.int64), 0
    f = -math.ceil(math.log2(peak_v / 2 ** (bits - 1)))
    codes = np.clip(to_fixed(value, f), -limit, limit)
    err = float(np.abs(codes * 2.0**-f - value).max())
    st.note(node, f"{field} rounded to {bits}-bit codes on 2^-{f} (max error {err:.3g})")
    return codes, f


def _on_grid(st: _State, node: str, field: str, value: np.ndarray, frac: int, exact_only: bool) -> np.ndarray:
    """``value`` as codes on ``2**-frac``: exact, or rounded with a note (an error if ``exact_only``)."""
    scaled = np.asarray(value, np.float64) * 2.0**frac
    codes = to_fixed(value, frac)
    if np.array_equal(codes, scaled):
        return codes
    nearest = codes * 2.0**-frac
    if exact_only:
        bad = np.flatnonzero(codes.ravel() != scaled.ravel())[0]
        raise QuantizationError(
            f"node {node!r}: {field} {float(np.ravel(value)[bad]):g} is not representable on the state "
            f"grid 2^-{frac} (nearest {float(nearest.ravel()[bad]):g}); keep it on the grid during "
            "training (prepare_qat does) or quantize post-training"
        )
    err = float(np.abs(nearest - value).max())
    st.note(node, f"{field} rounded onto 2^-{frac} (max error {err:.3g})")
    return codes


def _decay(st: _State, node: str, field: str, value: np.ndarray) -> np.ndarray:
    d = st.target.decay_frac
    if np.any(value < 0) or np.any(value > 1):
        raise QuantizationError(
            f"node {node!r}: {field} must lie in [0, 1], found [{value.min():g}, {value.max():g}]"
        )
    return _on_grid(st, node, field, value, d, exact_only=False)


def _state_format(
    st: _State, node: str, var: str, q: Quantizer | None, threshold: np.ndarray | None = None
) -> tuple[FixedQuant, bool]:
    """The state's fixed-point format and whether it came from the model (QAT) or calibration (PTQ);
    a calibrated grid also holds ``threshold`` (the membrane's) with 2x headroom."""
    width = st.target.state.width
    if isinstance(q, FixedQuant):
        need = max(q.hi.bit_length(), (-q.lo - 1).bit_length()) + 1
        if need > width:
            raise QuantizationError(
                f"node {node!r}: {var} format [{q.lo}, {q.hi}]/2^{q.frac} needs {need} bits; target "
                f"{st.target.name!r} stores {width}-bit states"
            )
        return q, True
    if isinstance(q, LevelTable):
        return _level_table_format(st, node, var, q)
    if st.ranges is None:
        raise QuantizationError(
            f"node {node!r} has no state quantizer, so its {var} format must come from calibration data: "
            "pass calibration inputs (post-training quantization) or train with snncompile.quant.prepare_qat"
        )
    peak = st.ranges[node][var]
    thr = 0.0 if threshold is None else float(np.abs(threshold).max(initial=0))
    f = width - 2 - math.ceil(math.log2(max(peak, thr, 1e-30)))
    held = "" if threshold is None else f" and threshold {thr:.4g}"
    st.note(node, f"{var} format chosen from calibration: peak {peak:.4g}{held} -> s{width}.{f}")
    return FixedQuant(f, -(1 << (width - 1)), (1 << (width - 1)) - 1, st.target.rounding), False


def _level_table_format(st: _State, node: str, var: str, q: LevelTable) -> tuple[FixedQuant, bool]:
    """A dyadic uniform table read exactly (ties go down: ``half_down``); any other table refused, or
    approximated by the fixed-point format of its median step when the caller opted in."""
    levels = q.levels.astype(np.float64)
    steps = np.diff(levels)
    f = exact_frac(levels, _EXACT_LIMIT)
    if f is not None and steps.size and np.all(steps == 2.0**-f):
        return FixedQuant(f, int(levels[0] * 2**f), int(levels[-1] * 2**f), "half_down"), True
    step = float(np.median(steps)) if steps.size else 1.0
    f = -math.floor(math.log2(step))
    approx = FixedQuant(f, math.floor(levels[0] * 2**f), math.ceil(levels[-1] * 2**f), "half_down")
    spread = f"steps {steps.min():.4g}..{steps.max():.4g}" if steps.size else "one level"
    if not st.approximate:
        raise QuantizationError(
            f"node {node!r}: its {var} state_quant is an snnTorch level table of {levels.size} levels in "
            f"[{levels[0]:.4g}, {levels[-1]:.4g}] ({spread}), not a dyadic uniform grid, so no fixed-point "
            f"format reproduces it; train with snncompile.quant.FixedPoint (prepare_qat does), or opt into "
            f"the nearest format {approx.describe()} with approximate_state_quant=True "
            "(--approximate-state-quant on the command line)"
        )
    st.approximated.setdefault(node, {})[var] = (q, approx)
    return approx, False


def _measure_approximations(st: _State, calibration: np.ndarray | None) -> None:
    """One note per approximated level table: the largest difference between the table and its
    fixed-point format over the table's range, and with calibration data the spike agreement of the
    float model with the fixed-point formats in place of the tables."""
    for node, per_var in st.approximated.items():
        for var, (table, fmt) in per_var.items():
            lo, hi = float(table.levels[0]), float(table.levels[-1])
            v = torch.linspace(lo - (hi - lo) / 8, hi + (hi - lo) / 8, 20001)
            diff = (_quantize(table)(v) - _quantize(fmt)(v)).abs()
            lsb = 2.0**-fmt.frac
            st.note(
                node,
                f"{var} state_quant table approximated by {fmt.describe()}: differs from it on "
                f"{float((diff > 0).float().mean()):.1%} of its range, by up to {float(diff.max()) / lsb:.3g} LSB "
                "(not bit-exact with the float model)",
            )
    if calibration is None or not st.approximated:
        return
    replaced = st.float_graph
    for node, per_var in st.approximated.items():
        op = replaced.op(node)
        fields = {f"{var}_quant": fmt for var, (_, fmt) in per_var.items()}
        replaced = replaced.with_op(node, dataclasses.replace(op, **fields))
    want, got = run_float(st.float_graph, calibration), run_float(replaced, calibration)
    for node in st.approximated:
        agree = float(np.mean(want.spikes[node] == got.spikes[node]))
        st.note(
            node,
            f"spike agreement of the float model with the approximated state formats: {agree:.2%} on the calibration data",
        )


def _recurrence(st: _State, node: str, rec: Recurrence | None, g: int) -> tuple[Recurrence | None, int]:
    """The recurrence on integers, landing on ``2**-rec_frac`` (its weights on ``rec_frac - g``)."""
    if rec is None:
        return None, 0
    bits = st.target.weight_bits
    w, wf = _codes(st, node, "recurrent weight", rec.weight, bits)
    rec_frac = wf + g
    if isinstance(rec, OneToOneRecurrence):
        return OneToOneRecurrence(w), rec_frac
    bias = None if rec.bias is None else _on_grid(st, node, "recurrent bias", rec.bias, rec_frac, False)
    if isinstance(rec, DenseRecurrence):
        return DenseRecurrence(w, bias), rec_frac
    assert isinstance(rec, ConvRecurrence)
    return ConvRecurrence(w, bias, rec.padding), rec_frac


def _graded(st: _State, node: str, graded: np.ndarray) -> tuple[np.ndarray, int]:
    f = exact_frac(graded, 16)
    if f is None:
        f = GRADED_FRAC
        st.note(node, f"graded spike factor rounded onto 2^-{f}")
    return to_fixed(graded, f), f


def _per_channel_codes(st: _State, node: str, weight: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Per-output-channel grids: each row quantized alone, then put on the finest row grid with a shift."""
    rows = [
        _codes(st, f"{node}[{o}]", "weight", weight[o], st.target.weight_bits) for o in range(weight.shape[0])
    ]
    frac = max(f for _, f in rows)
    shift = np.array([frac - f for _, f in rows], np.int64)
    codes = np.stack([c << (frac - f) for c, f in rows])
    return codes, frac, shift


def _q_linear(st: _State, node: str, op: Linear, in_frac: int) -> Op:
    shift = None
    if st.target.per_channel:
        w, wf, shift = _per_channel_codes(st, node, op.weight)
    else:
        w, wf = _codes(st, node, "weight", op.weight, st.target.weight_bits)
    bias = None if op.bias is None else _bias(st, node, op.bias, in_frac + wf)
    if isinstance(op, Conv2d):
        return QConv2d(
            w, bias, op.stride, op.padding, op.dilation, op.groups, weight_frac=wf, channel_shift=shift
        )
    return QLinear(w, bias, weight_frac=wf, channel_shift=shift)


def _bias(st: _State, node: str, bias: np.ndarray, frac: int) -> np.ndarray:
    codes = _on_grid(st, node, "bias", bias, frac, exact_only=False)
    limit = (1 << (st.target.bias_bits - 1)) - 1
    if np.abs(codes).max(initial=0) > limit:
        st.note(node, f"bias clipped to {st.target.bias_bits}-bit codes on 2^-{frac}")
        codes = np.clip(codes, -limit, limit)
    return codes


def _reachable(st: _State, node: str, threshold: np.ndarray, mem: FixedQuant, calibrated: bool) -> None:
    """Refuses (calibrated grid) or notes (the model's format) thresholds no membrane can exceed."""
    never = int(np.count_nonzero(threshold >= mem.hi))
    if not never:
        return
    fired = (
        ""
        if st.fired is None
        else f"; the float model fires {st.fired[node]:,} times on the calibration data"
    )
    text = (
        f"threshold code {int(threshold.max())} is not below the largest membrane code {mem.hi} of "
        f"{mem.describe()}: {never} of {threshold.size} thresholds can never be crossed{fired}"
    )
    if calibrated:
        raise QuantizationError(f"node {node!r}: {text}")
    st.note(node, f"NEVER FIRES: {text}")
    st.warnings += 1


def _q_neuron(st: _State, node: str, op: LIF | CubaLIF, in_frac: int) -> dict[str, Any]:
    """The fields every fixed-point neuron shares: state format, decay, threshold, timing, spikes."""
    mem, exact_state = _state_format(st, node, "mem", op.mem_quant, op.threshold)
    g_codes, g = _graded(st, node, op.graded)
    rec, rec_frac = _recurrence(st, node, op.recurrence, g)
    threshold = _on_grid(st, node, "threshold", op.threshold, mem.frac, exact_only=exact_state)
    _reachable(st, node, threshold, mem, calibrated=op.mem_quant is None)
    return {
        "beta": _decay(st, node, "beta", op.beta),
        "decay_frac": st.target.decay_frac,
        "threshold": threshold,
        "mem": mem,
        "in_frac": in_frac,
        "reset": op.reset,
        "reset_delay": op.reset_delay,
        "graded": g_codes,
        "graded_frac": g,
        "recurrence": rec,
        "rec_frac": rec_frac,
    }


def _q_lif(st: _State, node: str, op: LIF, in_frac: int) -> Op:
    common = _q_neuron(st, node, op, in_frac)
    floor = None
    if op.floor is not None:
        floor = int(_on_grid(st, node, "floor", np.array(op.floor), common["mem"].frac, True))
    bias = None if op.bias is None else _on_grid(st, node, "bias", op.bias, in_frac, exact_only=False)
    return QLIF(zero_mode=op.zero_mode, bias=bias, floor=floor, **common)


def _q_cubalif(st: _State, node: str, op: CubaLIF, in_frac: int) -> Op:
    common = _q_neuron(st, node, op, in_frac)
    syn, _ = _state_format(st, node, "syn", op.syn_quant)
    alpha = _decay(st, node, "alpha", op.alpha)
    return QCubaLIF(alpha=alpha, alpha_frac=st.target.decay_frac, syn=syn, **common)


def _q_pool(st: _State, node: str, op: Op, in_frac: int) -> Op:
    if isinstance(op, AvgPool2d):
        try:
            pool_shift(op)
        except GraphError as e:
            raise QuantizationError(f"node {node!r}: {e}") from None
    return op


QUANTIZE: dict[type[Op], Callable[[_State, str, Any, int], Op]] = {
    Linear: _q_linear,
    Conv2d: _q_linear,
    LIF: _q_lif,
    CubaLIF: _q_cubalif,
    AvgPool2d: _q_pool,
    MaxPool2d: _q_pool,
    SumPool2d: _q_pool,
    Flatten: _q_pool,
    Output: _q_pool,
}
"""How each float op becomes a fixed-point op (stateless ops without parameters are kept)."""


def _input_frac(st: _State, calibration: np.ndarray | None, grid: InputGrid | None) -> int:
    """The input grid: the model's input quantizer, else exact calibration values, else calibration's
    range over the target's input codes (noted), else spikes (0)."""
    bits = st.target.input_bits
    if grid is not None:
        limit = (1 << (bits - 1)) - 1
        if grid.lo < -limit or grid.hi > limit:
            raise QuantizationError(
                f"input: the model's input quantizer has codes [{grid.lo}, {grid.hi}]; target "
                f"{st.target.name!r} takes {bits}-bit inputs [{-limit}, {limit}] (prepare_qat for this target)"
            )
        return grid.frac
    if calibration is None:
        return 0
    f = exact_frac(calibration, 16)
    peak = float(np.abs(calibration).max(initial=0))
    if f is not None and peak * 2**f < 2 ** (bits - 1):
        return f
    frac = bits - 1 - math.ceil(math.log2(max(peak, 1e-30)))
    st.note(
        "input", f"input currents are rounded to {bits}-bit codes on 2^-{frac} (calibration peak {peak:.4g})"
    )
    return frac


def _calibration_ranges(
    graph: Graph, calibration: np.ndarray
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """The peak |state| of every neuron node's every state variable over a float run, and its spikes."""
    run = run_float(graph, calibration)
    peaks = {
        n: {var: float(np.abs(v).max(initial=0)) for var, v in st.items()} for n, st in run.states.items()
    }
    return peaks, {n: int(np.count_nonzero(s)) for n, s in run.spikes.items()}


def quantize(
    graph: Graph, target: Target, calibration: np.ndarray | None = None, approximate_state_quant: bool = False
) -> QuantizeResult:
    """Puts every value of the float ``graph`` on ``target``'s fixed-point grids (see the module doc)."""
    graph.verify()
    folded, bn_notes = fold_batchnorm(graph)
    folded, scale_notes = fold_scale(folded)
    ranges, fired = _calibration_ranges(folded, calibration) if calibration is not None else (None, None)
    st = _State(
        folded,
        target,
        ranges,
        fired,
        Graph(),
        {},
        [*bn_notes, *scale_notes],
        approximate=approximate_state_quant,
    )
    folded, grid = fold_input_grid(folded)
    for node in folded.topo_order():
        op = folded.op(node)
        if isinstance(op, Input):
            new: Op = Input(op.shape, _input_frac(st, calibration, grid))
        else:
            rule = QUANTIZE.get(type(op))
            if rule is None:
                raise QuantizationError(f"node {node!r}: {op.kind} has no fixed-point form yet")
            new = rule(st, node, op, st.fracs[folded.args(node)[0]])
        st.out.add(node, new, folded.args(node), folded.source(node))
        st.fracs = st.out.fracs()
    st.out.verify()
    _measure_approximations(st, calibration)
    return QuantizeResult(st.out, tuple(st.notes), len(st.notes) == st.warnings)
