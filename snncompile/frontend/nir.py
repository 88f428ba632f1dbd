"""NIR import and export: NIR's continuous-time graphs to and from the float IR, every choice explicit.

NIR (``nir`` >= 1.0.8) describes each neuron by an ODE, e.g. LIF ``tau dv/dt = (v_leak - v) + r*I`` with
``z = H(v - v_threshold)`` and ``v <- v_reset`` on a spike. It leaves the time step, how time constants
become decays, whether a reset subtracts the threshold or sets ``v_reset``, and whether it happens in the
step of the spike or the next one to each simulator. :func:`import_nir` takes all of them as options and
never reads them from the file; :func:`export_nir` writes standard nodes plus our exact ops in metadata.

**Conventions** (``convention=``): how a producer turns time constants into decays and scales the input.
With ``k = dt/tau`` (``k_s = dt/tau_syn``, ``k_m = dt/tau_mem``) an imported neuron computes, before its
reset and spike (which follow :class:`~snncompile.ir.LIF` / :class:`~snncompile.ir.CubaLIF`)::

    LIF, IF:  m[t] = beta*m[t-1] + bias + g*x[t]                    (IF: beta = 1, bias = 0)
    CubaLIF:  I[t] = alpha*I[t-1] + g*x[t];   m[t] = beta*m[t-1] + I[t]

``g`` becomes a :class:`~snncompile.ir.Scale` node in front of the neuron (left out where ``g`` rounds to
1 in float32) and also multiplies the recurrent weights, since recurrent spikes enter the same input;
quantization folds the Scale into the layer before it or into the neuron's threshold
(:mod:`snncompile.passes.fold_scale`)::

    convention  default dt   beta (alpha alike)    LIF: g; bias               CubaLIF: g          IF: g      reset
    snntorch    1e-4         1 - k, clamped [0,1]  1 (*); 0                   1 (*)               1 (*)      subtract, delayed
    norse       1e-3         1 - k                 k; k*v_leak  (r = 1)       w_in*k_s * r*k_m    1 (r = 1)  zero, same step
    euler       required     1 - k                 r*k; k*v_leak              refused             r*dt       zero, same step
    sinabs      1.0 (steps)  exp(-k)               1; 0  (r = 1, v_leak = 0)  refused             1 (r = 1)  subtract, same step
    rockpool    from r       exp(-k)               refused                    alpha (w_in ignored) refused   subtract, same step

    (*) the threshold is divided by the Euler gain (r*k; w_in*k_s*r*k_m; r) instead, where it is not 1

A CubaLIF needs ``v_leak == 0`` under every convention (the IR's CubaLIF has no constant current).

* ``snntorch`` inverts ``snntorch.export_nir`` (``tau = dt/(1-beta)``, ``r = tau/dt``,
  ``w_in = tau_syn/dt``) and mirrors ``snntorch.import_nir``: when the Euler input gain ``r*k``
  (CubaLIF ``w_in*k_s*r*k_m``) is not 1 (``np.allclose``), it divides the threshold by it instead of
  scaling the input, as snnTorch's ``hack_w_scale`` does. ``beta`` is the float32 whose snnTorch export
  ``fl(dt/(1 - beta))`` gives back the stored ``tau`` exactly (searched within 3 ulps of ``1 - dt/tau``),
  which recovers every exported beta in [0.5, 1]; below 0.5 several float32 betas export to the same tau
  and the one nearest ``1 - dt/tau`` is taken. A negative tau (exported from beta > 1) gives beta = 1, as
  snnTorch clamps beta on every forward. ``tau = r = inf`` (beta = 1) has gain 1.
* ``norse`` is Norse's (1.1) ``from_nir``: forward Euler ``v += k*(x + v_leak - v)``; its LIF and IF
  ignore ``r`` (so ``r`` must be 1), its CubaLIF is an ``LIBox`` synapse on ``w_in * x`` feeding ``r * I``
  of the same step into an ``LIFBox`` membrane; every neuron resets to ``v_reset`` (``reset_value``) in
  the step it fires, ``v > v_threshold`` strict.
* ``euler`` is plain forward Euler of the NIR ODEs (``dt`` given by the caller), reset to ``v_reset`` in
  the step a neuron fires as NIR defines it; IF is ``dv/dt = r*I``. A CubaLIF is refused: forward Euler
  feeds its membrane the previous step's current, which the IR's CubaLIF cannot (``norse`` takes the same
  steps with the current of the step).
* ``sinabs`` is sinabs' ``from_nir``: ``exp(-dt/tau)`` with tau counted in time steps (dt = 1), the input
  added unscaled (``norm_input=False``), subtract reset in the step it fires. sinabs imports no CubaLIF.
* ``rockpool`` is Rockpool's ``from_nir`` into ``LIFTorch``: ``I <- exp(-dt/tau_syn)*(I + x)``,
  ``v <- exp(-dt/tau_mem)*v + I``, subtract reset in the step it fires; ``r`` only carries the time step
  (Rockpool exports ``r = tau_mem*exp(-dt/tau_mem)/dt`` and reads ``dt = min(tau_mem/(1 + r))``, which is
  used when ``dt`` is None) and ``w_in`` is ignored, as Rockpool ignores it (noted). Rockpool 3.1 imports
  CubaLIF (plain or in a recurrent cell) only: its ``from_nir`` fails on a LIF (it reads ``tau_mem``,
  which ``nir.LIF`` lacks) and has no IF mapping, so both are refused.

A forward-Euler decay must not be negative (``dt <= tau``). Where a producer ignores a field, the field
must hold its neutral value or the node is refused (Rockpool's ``w_in`` aside, which is imported as
Rockpool runs it, with a note).

**Reset** (``reset=``, ``reset_delay=``). NIR files carry ``v_reset`` but neither the reset kind nor its
timing. ``reset`` is ``"subtract"``, ``"zero"`` or ``"none"``; subtract and zero need ``v_reset == 0``.
``reset_delay=True`` is snnTorch's delayed reset; ``False`` is snnTorch's ``reset_delay=False`` path.
Both default to what the convention's producer runs (the table): for ``snntorch`` that is a default
``Leaky`` (subtract, delayed), the neuron ``export_nir`` describes; snnTorch's own ``import_nir`` builds
``reset_mechanism="zero", reset_delay=False`` instead, which ``reset="zero", reset_delay=False`` gives.

**Where the IR can compute otherwise** (each noted as a :class:`~snncompile.errors.ConventionWarning`,
naming the nodes). snnTorch's ``reset_delay=False`` path equals a same-step reset while the post-reset
membrane stays at or below the threshold: always for a reset to zero with a threshold >= 0 (exact: no
note; a negative threshold is refused), and for subtract while one step never lifts the membrane above
twice the threshold (noted). sinabs (``MultiSpike``) and Rockpool emit ``floor(v/v_threshold)`` spikes in
one step and fire at ``v == v_threshold``; the IR emits one spike, strictly above (noted). sinabs' IF
import bounds the membrane below at ``-v_threshold`` (``min_v_mem``), which the IR does not (noted). A
reset or timing other than the producer's, asked for explicitly, is noted too. A neuron inside a
recurrent cell zeroes its whole update on a zero reset (snnTorch's ``RLeaky``/``RSynaptic``), a plain LIF
keeps its new input (``Leaky``); with the same-step reset to zero both equal NIR's ``v <- v_reset``.

**Graph structure.** One Input and one Output; every other node has one input (NIR sums several). A
recurrent cell is a nested ``NIRGraph`` ``{input -> neuron -> output, neuron -> w_rec -> neuron}``, or the
flat ``neuron <-> w_rec`` cycle that ``snntorch.export_nir`` writes with nirtorch 2.x; ``w_rec`` is an Affine
or Linear (dense; a diagonal Linear is one-to-one), a Scale (one-to-one) or a stride-1 Conv2d. Threshold
becomes a LIF with ``beta = 0`` and no reset. LI and CubaLI are refused: they output a membrane, not
spikes. Batch and time dims in the Input type are the leading dims the graph's layers do not accept; a
Flatten whose input type has such dims counts its ``start_dim``/``end_dim`` over them. Parameters are
rounded to float32; 0-d (scalar) parameters are kept 0-d. Files are read without NIR's type check, which
fails on real exports (scalar parameters, grouped convolutions).

**Export.** :func:`export_nir` writes standard nodes: Linear/Affine, Conv2d, AvgPool2d, SumPool2d,
Flatten, Scale, LIF (IF where ``beta == 1``), CubaLIF, and recurrent neurons as nested cells, with
snnTorch's parameter formulas above (so snnTorch's and our ``snntorch`` import read them back), neuron
parameters broadcast to the full shape. Each node's ``metadata["snncompile"]`` is a JSON string
``{"op": <the op as in graph files>, "source": ..., "dt": ...}`` and the graph's is
``{"format": "snncompile.nir", "version": 1, "whole_sequence": ..., "order": [...], "dt": ...}``, so that
``import_nir(export_nir(g)) == g`` for every float op (metadata nodes ignore the import options). What
NIR has no field for (subtract reset, reset timing, zero mode, graded spikes, a relu floor, an IF's bias,
state quantizers, AvgPool2d's ceil_mode, count_include_pad and divisor_override) lives in the metadata
only; other readers get the nearest standard node (a LIF's bias as ``v_leak = bias/(1 - beta)``). NIR has
no max pooling, so MaxPool2d is refused, and so is a node whose output reaches no Output (NIR would make it
a second graph output). On import, a node's metadata is used only if its standard fields are exactly what
that op exports; otherwise the file was edited after export and is refused (``use_metadata=False`` reads
the standard fields instead).
"""

from __future__ import annotations

import dataclasses
import heapq
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import nir
import numpy as np

from snncompile.errors import (
    ConventionWarning,
    GraphError,
    InputError,
    SerializationError,
    UnsupportedModuleError,
)
from snncompile.ir import (
    LIF,
    AvgPool2d,
    Conv2d,
    ConvRecurrence,
    CubaLIF,
    DenseRecurrence,
    Flatten,
    Graph,
    Input,
    Linear,
    OneToOneRecurrence,
    Op,
    Output,
    Recurrence,
    Reset,
    Scale,
    Shape,
    SumPool2d,
)
from snncompile.ir.ops import RESETS, _fmt_array
from snncompile.ir.serialize import _decode, _encode
from snncompile.loading import write_atomic
from snncompile.registry import registrar

Convention: TypeAlias = Literal["snntorch", "norse", "sinabs", "rockpool", "euler"]

META = "snncompile"
"""The metadata key (on the graph and on every node) that holds our exact information as JSON."""
FORMAT = "snncompile.nir"
VERSION = 1

_NEURONS = (nir.LIF, nir.CubaLIF, nir.IF)
_REC_WEIGHTS = (nir.Affine, nir.Linear, nir.Scale, nir.Conv2d)
_ROLES: tuple[tuple[Any, str], ...] = (
    (nir.Input, "input"),
    (nir.Output, "output"),
    (_NEURONS, "neuron"),
    (_REC_WEIGHTS, "w_rec"),
)
_NOT_SPIKING = (
    "it emits no spikes: its output is the membrane potential, while the IR's neurons output spikes "
    "(a leaky-integrator readout cannot be represented; read out the spikes of the layer before it)"
)
_REFUSED: dict[str, str] = {
    "LI": _NOT_SPIKING,
    "CubaLI": _NOT_SPIKING,
    "I": "it emits no spikes: an integrator's output is its state",
    "Delay": "the IR has no delay op",
    "Conv1d": "the IR has no 1-d convolution",
}


# ------------------------------------------------------------------------------------ arrays


def _np(value: Any) -> np.ndarray:
    """A NIR field as a numpy array (producers leave numpy arrays, torch tensors or Python numbers)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _param(where: str, node: Any, field: str) -> np.ndarray:
    """A numeric field of a NIR node as float64, refusing a missing field and NaN."""
    value = getattr(node, field, None)
    if value is None:
        raise UnsupportedModuleError(f"{where}: field {field!r} is missing")
    a = _np(value)
    if a.dtype.kind not in "biuf":
        raise UnsupportedModuleError(f"{where}: {field} has dtype {a.dtype}; expected numbers")
    a = a.astype(np.float64)
    if np.any(np.isnan(a)):
        raise UnsupportedModuleError(f"{where}: {field} holds NaN")
    return a


def _tau(where: str, node: Any, field: str) -> np.ndarray:
    """A time constant: positive, infinity allowed (no leak)."""
    tau = _param(where, node, field)
    if np.any(tau <= 0):
        raise UnsupportedModuleError(f"{where}: {field} is {_fmt_array(tau)}; time constants must be > 0")
    return tau


def _f32(where: str, field: str, value: Any) -> np.ndarray:
    """A float32 copy (rounded to nearest) of an IR parameter, refusing NaN and infinities."""
    a = _np(value)
    if a.dtype.kind not in "biuf":
        raise UnsupportedModuleError(f"{where}: {field} has dtype {a.dtype}; expected numbers")
    if not np.all(np.isfinite(a)):
        raise UnsupportedModuleError(
            f"{where}: {field} ({_fmt_array(a.astype(np.float64))}) holds NaN or infinite values; the IR "
            "needs finite float32 parameters"
        )
    return a.astype(np.float32)


def _require(where: str, convention: str, node: Any, field: str, value: float, why: str) -> None:
    """Refuses a field that a producer ignores unless it holds the neutral ``value``."""
    a = _param(where, node, field)
    if not np.all(a == value):
        raise UnsupportedModuleError(
            f"{where}: {field} is {_fmt_array(a)}; the {convention} convention needs "
            f"{field} = {value:g} ({why})"
        )


def _pair(where: str, field: str, value: Any) -> tuple[int, int]:
    a = _np(value).ravel()
    if a.size not in (1, 2) or a.dtype.kind not in "biuf" or not np.all(a == np.round(a)):
        raise UnsupportedModuleError(f"{where}: {field} is {value!r}; expected one or two integers")
    return (int(a[0]), int(a[-1]))


def _int(where: str, field: str, value: Any) -> int:
    a = _np(value)
    if a.size != 1 or a.dtype.kind not in "biu":
        raise UnsupportedModuleError(f"{where}: {field} is {value!r}; expected an integer")
    return int(a.ravel()[0])


def _declared(value: Any) -> tuple[int, ...] | None:
    """A NIR type (shape) as a tuple, or None where it is unset or a placeholder (empty, zeros)."""
    if value is None:
        return None
    a = _np(value).ravel()
    if a.size == 0 or a.dtype.kind not in "biuf" or np.any(a <= 0):
        return None
    return tuple(int(d) for d in a)


# ------------------------------------------------------------------------------- conventions


@dataclasses.dataclass(frozen=True)
class _Discrete:
    """One NIR neuron in discrete time before its reset: see the module docstring (float64 arrays)."""

    beta: np.ndarray
    threshold: np.ndarray
    gain: np.ndarray
    alpha: np.ndarray | None = None
    bias: np.ndarray | None = None
    notes: tuple[str, ...] = ()  # where the producer computes otherwise than the IR (see _differences)


Rule: TypeAlias = Callable[[str, Any, float | None], _Discrete]


def _ones(*arrays: np.ndarray) -> np.ndarray:
    return np.ones(np.broadcast_shapes(*(a.shape for a in arrays)))


def _no_leak(where: str, convention: str, node: Any, why: str) -> None:
    _require(where, convention, node, "v_leak", 0.0, why)


def _refuse(convention: str, kind: str, why: str) -> Rule:
    def rule(where: str, node: Any, dt: float | None) -> _Discrete:
        raise UnsupportedModuleError(f"{where}: the {convention} convention has no rule for {kind} ({why})")

    return rule


def _dt(dt: float | None) -> float:
    assert dt is not None  # resolved by _options for every convention but rockpool, which has its own
    return dt


def _euler_decay(where: str, field: str, tau: np.ndarray, dt: float) -> np.ndarray:
    """``1 - dt/tau``; ``tau`` within float32 rounding of ``dt`` (a decay of 0, stored as float32) gives 0."""
    beta = 1.0 - dt / tau
    if np.any(beta < -(2.0**-20)):
        raise UnsupportedModuleError(
            f"{where}: forward Euler with dt={dt:g} larger than {field} (min {float(tau.min()):g}) gives a "
            "negative decay; use a smaller dt"
        )
    return np.maximum(beta, 0.0)


def _snntorch_decay(where: str, node: Any, field: str, dt: float) -> np.ndarray:
    """The float32 beta whose snnTorch export ``dt / (1 - beta)`` (computed in the stored tau's own
    dtype, as ``snntorch.export_nir`` does) equals the stored tau, searched within 3 ulps of
    ``1 - dt/tau``; the nearest where none does. Clamped to [0, 1] as snnTorch clamps beta."""
    tau = _param(where, node, field)
    stored = _np(getattr(node, field))
    ftype = stored.dtype.type if stored.dtype in (np.float32, np.float64) else np.float64
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        nearest = np.asarray(1.0 - dt / tau).astype(np.float32)

        def exported(beta: np.ndarray) -> np.ndarray:
            return ftype(dt) / (ftype(1) - np.asarray(beta).astype(ftype))

        best, found = nearest, exported(nearest) == stored
        for steps in (1, -1, 2, -2, 3, -3):
            cand = nearest
            for _ in range(abs(steps)):
                cand = np.nextafter(cand, np.float32(math.copysign(math.inf, steps)))
            hit = ~found & (exported(cand) == stored)
            best, found = np.where(hit, cand, best), found | hit
    return np.clip(best.astype(np.float64), 0.0, 1.0)


def _ratio(num: np.ndarray, tau: np.ndarray, dt: float) -> np.ndarray:
    """The Euler input gain ``num*dt/tau``, 1 for snnTorch's ``num = tau = inf`` export of beta = 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isinf(num) & np.isinf(tau), 1.0, num * dt / tau)


def _snntorch_threshold(where: str, node: Any, w: np.ndarray) -> np.ndarray:
    """snnTorch's ``hack_w_scale``: the threshold divided by the input gain unless it is allclose to 1."""
    thr = _param(where, node, "v_threshold")
    if np.allclose(w, 1.0):
        return thr
    if not np.all(np.isfinite(w) & (w > 0)):
        raise UnsupportedModuleError(
            f"{where}: the input gain is {_fmt_array(w)}; the snntorch convention divides the threshold by "
            "it, so it must be positive and finite"
        )
    return thr / w


def _snntorch_lif(where: str, node: Any, dt: float | None) -> _Discrete:
    dt = _dt(dt)
    _no_leak(where, "snntorch", node, "snnTorch's import refuses a leak voltage")
    w = _ratio(_param(where, node, "r"), _param(where, node, "tau"), dt)
    beta = _snntorch_decay(where, node, "tau", dt)
    return _Discrete(beta, _snntorch_threshold(where, node, w), _ones(beta))


def _snntorch_cuba(where: str, node: Any, dt: float | None) -> _Discrete:
    dt = _dt(dt)
    _no_leak(where, "snntorch", node, "snnTorch's import refuses a leak voltage")
    w_syn = _ratio(_param(where, node, "w_in"), _param(where, node, "tau_syn"), dt)
    w_mem = _ratio(_param(where, node, "r"), _param(where, node, "tau_mem"), dt)
    alpha = _snntorch_decay(where, node, "tau_syn", dt)
    beta = _snntorch_decay(where, node, "tau_mem", dt)
    return _Discrete(beta, _snntorch_threshold(where, node, w_syn * w_mem), _ones(alpha, beta), alpha=alpha)


def _snntorch_if(where: str, node: Any, dt: float | None) -> _Discrete:
    r = _param(where, node, "r")
    return _Discrete(np.ones_like(r), _snntorch_threshold(where, node, r), np.ones_like(r))


def _euler_lif(where: str, node: Any, dt: float | None) -> _Discrete:
    dt = _dt(dt)
    tau = _tau(where, node, "tau")
    k = dt / tau
    bias = k * _param(where, node, "v_leak")
    return _Discrete(
        _euler_decay(where, "tau", tau, dt),
        _param(where, node, "v_threshold"),
        k * _param(where, node, "r"),
        bias=bias if np.any(bias != 0) else None,
    )


def _euler_cuba(where: str, node: Any, dt: float | None) -> _Discrete:
    dt = _dt(dt)
    _no_leak(where, "euler/norse", node, "the IR's CubaLIF has no constant current")
    tau_syn, tau_mem = _tau(where, node, "tau_syn"), _tau(where, node, "tau_mem")
    gain = _param(where, node, "w_in") * (dt / tau_syn) * _param(where, node, "r") * (dt / tau_mem)
    return _Discrete(
        _euler_decay(where, "tau_mem", tau_mem, dt),
        _param(where, node, "v_threshold"),
        gain,
        alpha=_euler_decay(where, "tau_syn", tau_syn, dt),
    )


def _euler_if(where: str, node: Any, dt: float | None) -> _Discrete:
    r = _param(where, node, "r")
    return _Discrete(np.ones_like(r), _param(where, node, "v_threshold"), _dt(dt) * r)


def _norse_lif(where: str, node: Any, dt: float | None) -> _Discrete:
    why = "Norse's LIF ignores r (it only warns); use convention='euler' to apply it"
    _require(where, "norse", node, "r", 1.0, why)
    return _euler_lif(where, node, dt)


def _unit_if(convention: str, why: str, note: str | None = None) -> Rule:
    def rule(where: str, node: Any, dt: float | None) -> _Discrete:
        _require(where, convention, node, "r", 1.0, why)
        thr = _param(where, node, "v_threshold")
        return _Discrete(np.ones_like(thr), thr, np.ones_like(thr), notes=() if note is None else (note,))

    return rule


def _sinabs_lif(where: str, node: Any, dt: float | None) -> _Discrete:
    dt = _dt(dt)
    _require(where, "sinabs", node, "r", 1.0, "sinabs ignores r and adds the input unscaled")
    _no_leak(where, "sinabs", node, "sinabs' import refuses a leak voltage")
    tau = _tau(where, node, "tau")
    return _Discrete(np.exp(-dt / tau), _param(where, node, "v_threshold"), np.ones_like(tau))


def _rockpool_cuba(where: str, node: Any, dt: float | None) -> _Discrete:
    tau_syn, tau_mem = _tau(where, node, "tau_syn"), _tau(where, node, "tau_mem")
    if dt is None:  # Rockpool's from_nir: dt = min(tau_mem / (1 + r))
        dt = float(np.min(tau_mem / (1.0 + _param(where, node, "r"))))
        if not dt > 0:
            raise UnsupportedModuleError(f"{where}: Rockpool's dt = min(tau_mem/(1 + r)) is {dt:g}; pass dt")
    _no_leak(where, "rockpool", node, "Rockpool adds it as a bias current, which the IR's CubaLIF lacks")
    w_in = _param(where, node, "w_in")
    notes: tuple[str, ...] = ()
    if np.any(w_in != 1):
        notes = (
            f"w_in ({_fmt_array(w_in)}) is ignored, as Rockpool's from_nir ignores it (NIR's ODE would scale "
            "the input current by it)",
        )
    alpha = np.exp(-dt / tau_syn)
    return _Discrete(
        np.exp(-dt / tau_mem), _param(where, node, "v_threshold"), alpha, alpha=alpha, notes=notes
    )


@dataclasses.dataclass(frozen=True)
class _Convention:
    """How one producer's NIR neurons become discrete-time neurons (see the module docstring):
    ``reset`` and ``reset_delay`` are what the producer's own import runs, ``multi_spike`` describes its
    spike function where it emits several spikes in one step (None: one spike, ``v > v_threshold``)."""

    name: Convention
    producer: str
    default_dt: float | None
    needs_dt: bool
    reset: Reset
    reset_delay: bool
    lif: Rule
    cuba: Rule
    if_: Rule
    multi_spike: str | None = None


_SINABS_FLOOR = (
    "sinabs' IAF clips the membrane at -v_threshold every step (min_v_mem), the IR does not: equal while "
    "the membrane stays above -v_threshold"
)

CONVENTIONS: dict[str, _Convention] = {
    c.name: c
    for c in (
        _Convention(
            "snntorch",
            "snnTorch",
            1e-4,
            True,
            "subtract",
            True,
            _snntorch_lif,
            _snntorch_cuba,
            _snntorch_if,
        ),
        _Convention(
            "norse",
            "Norse's from_nir",
            1e-3,
            True,
            "zero",
            False,
            _norse_lif,
            _euler_cuba,
            _unit_if("norse", "Norse's IF adds the input unscaled and ignores r"),
        ),
        _Convention(
            "euler",
            "NIR's definition",
            None,
            True,
            "zero",
            False,
            _euler_lif,
            _refuse(
                "euler",
                "CubaLIF",
                "plain forward Euler feeds the membrane the previous step's current r*I[t-1], the IR's "
                "CubaLIF the current of the step I[t]; convention='norse' takes the same Euler steps with "
                "I[t], as Norse's from_nir does",
            ),
            _euler_if,
        ),
        _Convention(
            "sinabs",
            "sinabs' from_nir",
            1.0,
            True,
            "subtract",
            False,
            _sinabs_lif,
            _refuse("sinabs", "CubaLIF", "sinabs' from_nir imports no CubaLIF"),
            _unit_if("sinabs", "sinabs' IAF adds the input unscaled and ignores r", _SINABS_FLOOR),
            multi_spike="sinabs' MultiSpike emits trunc(v/v_threshold) spikes (v > 0)",
        ),
        _Convention(
            "rockpool",
            "Rockpool's from_nir",
            None,
            False,
            "subtract",
            False,
            _refuse(
                "rockpool",
                "LIF",
                "Rockpool 3.1's from_nir fails on a LIF: it reads node.tau_mem, which nir.LIF lacks",
            ),
            _rockpool_cuba,
            _refuse("rockpool", "IF", "Rockpool 3.1's from_nir has no IF mapping (NotImplementedError)"),
            multi_spike="Rockpool's LIFTorch emits floor(v/v_threshold) spikes where v >= v_threshold",
        ),
    )
}
"""Every convention by name: the table ``import_nir(convention=...)`` looks up."""


# ------------------------------------------------------------------------------------ options


@dataclasses.dataclass(frozen=True)
class _Options:
    convention: _Convention
    reset: Reset
    reset_delay: bool
    dt: float | None
    use_metadata: bool


def _check_dt(dt: Any) -> float:
    if isinstance(dt, bool) or not isinstance(dt, int | float) or not math.isfinite(dt) or dt <= 0:
        raise InputError(f"dt must be a positive number of seconds, got {dt!r}")
    return float(dt)


def _options(
    convention: str, reset: str | None, reset_delay: bool | None, dt: float | None, use_metadata: bool
) -> _Options:
    conv = CONVENTIONS.get(convention)
    if conv is None:
        raise InputError(f"convention must be one of {list(CONVENTIONS)}, got {convention!r}")
    if reset is not None and reset not in RESETS:
        raise InputError(f"reset must be one of {list(RESETS)}, got {reset!r}")
    if reset_delay is not None and not isinstance(reset_delay, bool):
        raise InputError(f"reset_delay must be True, False or None, got {reset_delay!r}")
    if dt is None and conv.needs_dt and conv.default_dt is None:
        raise InputError(f"the {conv.name} convention has no default time step; pass dt (in seconds)")
    return _Options(
        conv,
        conv.reset if reset is None else reset,  # checked against RESETS above
        conv.reset_delay if reset_delay is None else reset_delay,
        conv.default_dt if dt is None else _check_dt(dt),
        bool(use_metadata),
    )


# ---------------------------------------------------------------------------------- metadata


def _meta(where: str, metadata: Any) -> dict[str, Any] | None:
    """Our JSON metadata of a NIR node or graph, or None where there is none."""
    if not isinstance(metadata, dict) or META not in metadata:
        return None
    raw = metadata[META]
    if isinstance(raw, np.ndarray) and raw.size == 1:
        raw = raw.item()
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        data = json.loads(raw)
    except (TypeError, ValueError) as e:
        raise SerializationError(f"{where}: metadata[{META!r}] is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SerializationError(
            f"{where}: metadata[{META!r}] must be a JSON object, got {type(data).__name__}"
        )
    return data


@dataclasses.dataclass(frozen=True)
class _NodeMeta:
    op: Op
    source: str
    dt: float


def _node_meta(name: str, node: Any) -> _NodeMeta | None:
    where = f"NIR node {name!r}"
    data = _meta(where, getattr(node, "metadata", None))
    if data is None:
        return None
    try:
        op, source, dt = _decode(data["op"], f"{where} metadata"), data["source"], data["dt"]
    except KeyError as e:
        raise SerializationError(f"{where}: metadata[{META!r}] lacks {e}") from None
    if not isinstance(op, Op) or not isinstance(source, str):
        raise SerializationError(f"{where}: metadata[{META!r}] must hold an op and a source string")
    return _NodeMeta(op, source, _check_dt(dt))


def _fields(node: Any) -> dict[str, Any]:
    """The values of a NIR node that define it (types only for Input/Output)."""
    if isinstance(node, nir.Input):
        return {"shape": node.input_type["input"]}
    if isinstance(node, nir.Output):
        return {"shape": node.output_type["output"]}
    skip = {"input_type", "output_type", "metadata", "input_shape"}  # types, not parameters
    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node) if f.name not in skip}


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None or isinstance(a, str | bytes) or isinstance(b, str | bytes):
        return bool(a == b) if a is not None and b is not None else a is b
    x, y = _np(a), _np(b)
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        return bool(np.array_equal(x, y))
    return bool(np.array_equal(x, y, equal_nan=True))


def _difference(want: Any, got: Any, path: str = "") -> str | None:
    """The first field (dotted path) where NIR node ``got`` differs from ``want``, or None."""
    if type(want) is not type(got):
        return f"{path or 'type'} ({type(got).__name__}, expected {type(want).__name__})"
    if isinstance(want, nir.NIRGraph):
        if set(want.nodes) != set(got.nodes):
            return f"{path}nodes"
        if {tuple(e) for e in want.edges} != {(str(a), str(b)) for a, b in got.edges}:
            return f"{path}edges"
        for k in want.nodes:
            diff = _difference(want.nodes[k], got.nodes[k], f"{path}{k}.")
            if diff is not None:
                return diff
        return None
    mine, theirs = _fields(want), _fields(got)
    for k, v in mine.items():
        if not _same(v, theirs.get(k)):
            return f"{path}{k}"
    return None


# ----------------------------------------------------------------------------------- structure


@dataclasses.dataclass(frozen=True)
class _Structure:
    """A NIR graph as the IR needs it: recurrent weights taken out of flat cells, one input per node."""

    nodes: dict[str, Any]
    pred: dict[str, str]
    order: list[str]
    recurrent: dict[str, Any]
    input: str


def _flat_cells(nodes: dict[str, Any], edges: list[tuple[str, str]]) -> dict[str, tuple[str, Any]]:
    """Neuron -> (w_rec name, w_rec node) of each ``neuron <-> w_rec`` cycle; w_rec has no other edge."""
    cells: dict[str, tuple[str, Any]] = {}
    for a, b in edges:
        if not isinstance(nodes[a], _NEURONS) or not isinstance(nodes[b], _REC_WEIGHTS) or a in cells:
            continue
        touching = [e for e in edges if b in e]
        if sorted(touching) == sorted([(a, b), (b, a)]):
            cells[a] = (b, nodes[b])
    return cells


def _structure(root: Any, preferred: Sequence[str]) -> _Structure:
    nodes: dict[str, Any] = {str(k): v for k, v in root.nodes.items()}
    edges = [(str(a), str(b)) for a, b in root.edges]
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise SerializationError(
                    f"NIR edge ({a!r}, {b!r}) names node {end!r}, which is not in the graph"
                )
    if len(set(edges)) != len(edges):
        dup = next(e for e in edges if edges.count(e) > 1)
        raise UnsupportedModuleError(f"NIR edge {dup} appears twice (NIR would add the input twice)")
    cells = _flat_cells(nodes, edges)
    taken = {w for w, _ in cells.values()}
    edges = [(a, b) for a, b in edges if a not in taken and b not in taken]
    nodes = {k: v for k, v in nodes.items() if k not in taken}
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    outputs = [k for k, v in nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModuleError(
            f"the NIR graph has {len(inputs)} Input node(s) {inputs} and {len(outputs)} Output node(s) "
            f"{outputs}; the IR takes exactly one of each"
        )
    preds: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        preds[b].append(a)
    for k, p in preds.items():
        if k == inputs[0] and p:
            raise UnsupportedModuleError(f"NIR Input node {k!r} has inputs {p}")
        if k != inputs[0] and len(p) != 1:
            raise UnsupportedModuleError(
                f"NIR node {k!r} has {len(p)} inputs {p}; the IR's ops take exactly one (NIR adds several, "
                "and a cycle other than a neuron <-> weight recurrent cell cannot be represented)"
            )
    rank = {k: i for i, k in enumerate(preferred)}
    rank.update({k: len(rank) + i for i, k in enumerate(k for k in nodes if k not in rank)})
    users: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in edges:
        users[a].append(b)
    ready = [(rank[inputs[0]], inputs[0])]
    order: list[str] = []
    while ready:
        _, k = heapq.heappop(ready)
        order.append(k)
        for u in users[k]:
            heapq.heappush(ready, (rank[u], u))
    if len(order) != len(nodes):
        left = sorted(set(nodes) - set(order))
        raise UnsupportedModuleError(
            f"NIR nodes {left} cannot be reached from the Input without a cycle; recurrence must be a "
            "neuron <-> weight cell (flat or a nested NIRGraph)"
        )
    return _Structure(
        nodes,
        {k: p[0] for k, p in preds.items() if p},
        order,
        {k: v for k, (_, v) in cells.items()},
        inputs[0],
    )


# ------------------------------------------------------------------------------------ building


@dataclasses.dataclass
class _Builder:
    """The graph under construction: IR names and shapes of the NIR nodes converted so far."""

    graph: Graph
    shapes: dict[str, Shape]
    options: _Options
    recurrent: dict[str, Any]
    input_shape: Shape
    lead: int
    notes: dict[tuple[str, str], list[str]] = dataclasses.field(default_factory=dict)
    """(NIR node type, difference) -> the NIR nodes it concerns."""

    def note(self, kind: str, text: str, node: str) -> None:
        self.notes.setdefault((kind, text), []).append(node)

    def add(self, base: str, op: Op, inputs: tuple[str, ...], source: str) -> str:
        """Adds ``op`` converted from NIR node ``source``; its shape is checked now, naming the node."""
        name = self.graph.fresh_name(base if base.isidentifier() else f"{op.kind}_{base}")
        try:
            shape = op.out_shape([self.shapes[i] for i in inputs])
        except GraphError as e:
            raise GraphError(f"NIR node {source!r} ({op.kind}): {e}") from None
        self.graph.add(name, op, inputs, source=source)
        self.shapes[name] = tuple(int(d) for d in shape)
        return name


Handler: TypeAlias = Callable[[_Builder, str, Any, str], str]
HANDLERS: dict[type, Handler] = {}
"""The converter of every supported NIR node type, keyed by exact type."""


_handles = registrar(HANDLERS)


def _supported() -> str:
    return ", ".join(sorted({"Input", *(t.__name__ for t in HANDLERS)}))


def _unsupported(name: str, node: Any) -> UnsupportedModuleError:
    kind = type(node).__name__
    reason = _REFUSED.get(kind)
    why = f": {reason}" if reason else ""
    return UnsupportedModuleError(
        f"NIR node {name!r} is a {kind} node, which snncompile cannot import{why}; supported: {_supported()}"
    )


def _where(name: str, node: Any) -> str:
    return f"NIR node {name!r} ({type(node).__name__})"


@_handles(nir.Output)
def _output(b: _Builder, name: str, node: Any, x: str) -> str:
    shape = b.shapes[x]
    declared = _declared(node.output_type.get("output") if node.output_type else None)
    if declared is not None and declared[len(declared) - len(shape) :] != shape:
        raise GraphError(f"NIR Output {name!r} has type {list(declared)}, but its input has shape {shape}")
    return b.add(name, Output(), (x,), name)


@_handles(nir.Affine)
def _affine(b: _Builder, name: str, node: Any, x: str) -> str:
    where = _where(name, node)
    op = Linear(_f32(where, "weight", node.weight), _f32(where, "bias", node.bias))
    return b.add(name, op, (x,), name)


@_handles(nir.Linear)
def _linear(b: _Builder, name: str, node: Any, x: str) -> str:
    return b.add(name, Linear(_f32(_where(name, node), "weight", node.weight)), (x,), name)


@_handles(nir.Scale)
def _scale(b: _Builder, name: str, node: Any, x: str) -> str:
    return b.add(name, Scale(_f32(_where(name, node), "scale", node.scale)), (x,), name)


def _padding(where: str, node: Any) -> tuple[int, int]:
    padding = node.padding
    if isinstance(padding, bytes):
        padding = padding.decode()
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        kernel, dilation = node.weight.shape[2:], _pair(where, "dilation", node.dilation)
        total = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        if padding != "same" or any(t % 2 for t in total):
            raise UnsupportedModuleError(
                f"{where}: padding {padding!r} is not supported; expected an integer pair, 'valid', or "
                "'same' with an odd kernel (even kernels pad asymmetrically)"
            )
        return (total[0] // 2, total[1] // 2)
    return _pair(where, "padding", padding)


@_handles(nir.Conv2d)
def _conv2d(b: _Builder, name: str, node: Any, x: str) -> str:
    where = _where(name, node)
    weight = _f32(where, "weight", node.weight)
    bias = None if node.bias is None else _f32(where, "bias", node.bias)
    op = Conv2d(
        weight,
        bias,
        _pair(where, "stride", node.stride),
        _padding(where, node),
        _pair(where, "dilation", node.dilation),
        _int(where, "groups", node.groups),
    )
    return b.add(name, op, (x,), name)


def _pool_args(name: str, node: Any) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    where = _where(name, node)
    return (
        _pair(where, "kernel_size", node.kernel_size),
        _pair(where, "stride", node.stride),
        _pair(where, "padding", node.padding),
    )


@_handles(nir.SumPool2d)
def _sumpool(b: _Builder, name: str, node: Any, x: str) -> str:
    return b.add(name, SumPool2d(*_pool_args(name, node)), (x,), name)


@_handles(nir.AvgPool2d)
def _avgpool(b: _Builder, name: str, node: Any, x: str) -> str:
    """torch's avg_pool2d defaults: floor mode, padding counted in the divisor."""
    return b.add(name, AvgPool2d(*_pool_args(name, node)), (x,), name)


@_handles(nir.Flatten)
def _flatten(b: _Builder, name: str, node: Any, x: str) -> str:
    """``start_dim``/``end_dim`` count over the node's declared input type, or the Input's, which may
    hold batch/time dims in front of the per-sample ones."""
    where = _where(name, node)
    declared = node.input_type.get("input") if isinstance(node.input_type, dict) else None
    rank = None if declared is None else _np(declared).size
    lead = b.lead if not rank else rank - len(b.shapes[x])
    dims = []
    for field in ("start_dim", "end_dim"):
        d = _int(where, field, getattr(node, field))
        if 0 <= d < lead:
            raise UnsupportedModuleError(
                f"{where}: {field}={d} flattens one of the {lead} batch/time dim(s) in front of the "
                f"per-sample shape {b.shapes[x]}"
            )
        dims.append(d - lead if d >= 0 else d)
    return b.add(name, Flatten(dims[0], dims[1]), (x,), name)


@_handles(nir.Threshold)
def _threshold(b: _Builder, name: str, node: Any, x: str) -> str:
    """``z = H(x - threshold)``: a LIF that forgets (beta = 0) and never resets."""
    thr = _f32(_where(name, node), "threshold", node.threshold)
    return b.add(name, LIF(np.zeros_like(thr), thr, reset="none"), (x,), name)


def _check_reset(where: str, node: Any, reset: Reset) -> None:
    if reset == "none" or getattr(node, "v_reset", None) is None:
        return
    v_reset = _param(where, node, "v_reset")
    if np.any(v_reset != 0):
        raise UnsupportedModuleError(
            f"{where}: v_reset is {_fmt_array(v_reset)}; reset={reset!r} resets to 0 or by the threshold, "
            "so a nonzero reset value cannot be represented"
        )


def _recurrence(where: str, node: Any, gain: np.ndarray | None, shape: Shape) -> Recurrence:
    """The IR recurrence of a ``w_rec`` node, each target neuron's row scaled by its input gain (None:
    a gain of 1)."""
    scaled = gain is not None
    try:
        g = np.broadcast_to(1.0 if gain is None else gain, shape).astype(np.float64)
    except ValueError:
        assert gain is not None
        raise GraphError(f"{where}: input gain of shape {gain.shape} does not fit neurons {shape}") from None
    rec = f"{where} w_rec ({type(node).__name__})"

    def rows(a: np.ndarray) -> np.ndarray:
        if not scaled:
            return a
        if len(shape) != 1 or a.shape[:1] != shape:
            raise GraphError(f"{rec}: weight {a.shape} does not fit neurons of shape {shape}")
        return a * g.reshape(-1, *([1] * (a.ndim - 1)))

    if isinstance(node, nir.Scale):
        return OneToOneRecurrence(
            _f32(rec, "scale", _param(rec, node, "scale") * g if scaled else node.scale)
        )
    if isinstance(node, nir.Affine | nir.Linear):
        weight = _param(rec, node, "weight")
        if (
            isinstance(node, nir.Linear)
            and weight.ndim == 2
            and np.array_equal(weight, np.diag(np.diag(weight)))
        ):
            diag = np.diag(weight)
            return OneToOneRecurrence(_f32(rec, "weight diagonal", diag * g if scaled else diag))
        bias = _param(rec, node, "bias") if isinstance(node, nir.Affine) else None
        return DenseRecurrence(
            _f32(rec, "weight", rows(weight)), None if bias is None else _f32(rec, "bias", rows(bias))
        )
    if (
        _pair(rec, "stride", node.stride) != (1, 1)
        or _pair(rec, "dilation", node.dilation) != (1, 1)
        or _int(rec, "groups", node.groups) != 1
    ):
        raise UnsupportedModuleError(f"{rec}: a recurrent conv must have stride 1, dilation 1 and groups 1")
    weight = _param(rec, node, "weight")
    bias = None if node.bias is None else _param(rec, node, "bias")
    if scaled:
        per_channel = g.reshape(g.shape[0], -1) if g.ndim == 3 else None
        if per_channel is None or np.any(per_channel != per_channel[:, :1]):
            raise UnsupportedModuleError(
                f"{rec}: the input gain must be one value per channel to scale a conv"
            )
        c = per_channel[:, 0]
        weight = weight * c.reshape(-1, 1, 1, 1)
        bias = None if bias is None else bias * c
    return ConvRecurrence(
        _f32(rec, "weight", weight),
        None if bias is None else _f32(rec, "bias", bias),
        _padding(rec, node),
    )


def _differences(where: str, opts: _Options, threshold: np.ndarray) -> list[str]:
    """Where the IR's neuron can compute otherwise than the convention's producer: one line each, or a
    refusal where it always would."""
    conv = opts.convention
    out: list[str] = []
    if conv.name == "snntorch":  # both timings and every reset are snnTorch's own rules
        return out
    if opts.reset != conv.reset or opts.reset_delay != conv.reset_delay:
        timing = "one step later (snnTorch's default)" if opts.reset_delay else "in the step it fires"
        out.append(
            f"reset={opts.reset!r} {timing} as asked, where {conv.producer} resets "
            f"{'by subtraction' if conv.reset == 'subtract' else 'to v_reset'} in the step it fires"
        )
    immediate = not opts.reset_delay
    if immediate and opts.reset == "zero" and np.any(threshold < 0):
        raise UnsupportedModuleError(
            f"{where}: v_threshold is {_fmt_array(threshold)}; a reset to v_reset in the step it fires "
            "needs thresholds >= 0 in the IR (its immediate reset, snnTorch's reset_delay=False, doubles "
            "a membrane below a negative threshold)"
        )
    if immediate and opts.reset == "subtract" and conv.multi_spike is None:
        out.append(
            "NIR's same-step subtract reset (z = v > v_threshold; v -= z*v_threshold) is the IR's "
            "immediate reset (snnTorch's reset_delay=False) only while a step leaves the membrane at or "
            "below v_threshold after it (below twice v_threshold before); above that the IR's membrane "
            "stays above the threshold without firing"
        )
    if conv.multi_spike is not None:
        out.append(
            f"{conv.multi_spike} and subtracts as many thresholds; the IR emits one spike a step, only "
            "above v_threshold, and takes one threshold: equal while the membrane stays below twice "
            "v_threshold and never equals it"
        )
    return out


def _neuron(b: _Builder, name: str, node: Any, x: str, w_rec: Any | None) -> str:
    """A LIF, CubaLIF or IF (with its recurrent weights, if any) under the chosen convention."""
    where = _where(name, node)
    opts = b.options
    rule = {nir.LIF: opts.convention.lif, nir.CubaLIF: opts.convention.cuba, nir.IF: opts.convention.if_}
    p = rule[type(node)](where, node, opts.dt)
    _check_reset(where, node, opts.reset)
    for text in (*_differences(where, opts, p.threshold), *p.notes):
        b.note(type(node).__name__, text, name)
    gain = _f32(where, "input gain", p.gain)
    unit = bool(np.all(gain == 1))  # a gain that rounds to 1 in float32 scales nothing
    recurrence = None if w_rec is None else _recurrence(where, w_rec, None if unit else p.gain, b.shapes[x])
    if not unit:
        x = b.add(f"{name}_gain", Scale(gain), (x,), name)
    beta, thr = _f32(where, "beta", p.beta), _f32(where, "threshold", p.threshold)
    op: Op
    if p.alpha is None:
        op = LIF(
            beta,
            thr,
            reset=opts.reset,
            reset_delay=opts.reset_delay,
            zero_mode="keep_input" if w_rec is None else "drop_update",
            recurrence=recurrence,
            bias=None if p.bias is None else _f32(where, "bias (k*v_leak)", p.bias),
        )
    else:
        op = CubaLIF(
            _f32(where, "alpha", p.alpha),
            beta,
            thr,
            reset=opts.reset,
            reset_delay=opts.reset_delay,
            recurrence=recurrence,
        )
    return b.add(name, op, (x,), name)


@_handles(*_NEURONS)
def _plain_neuron(b: _Builder, name: str, node: Any, x: str) -> str:
    return _neuron(b, name, node, x, b.recurrent.get(name))


@_handles(nir.NIRGraph)
def _cell(b: _Builder, name: str, node: Any, x: str) -> str:
    """A nested recurrent cell ``{input -> neuron -> output, neuron -> w_rec -> neuron}``."""
    by_role: dict[str, list[str]] = {"input": [], "output": [], "neuron": [], "w_rec": [], "other": []}
    for k, v in node.nodes.items():
        by_role[next((role for t, role in _ROLES if isinstance(v, t)), "other")].append(str(k))
    if all(len(by_role[r]) == 1 for r in ("input", "output", "neuron", "w_rec")) and not by_role["other"]:
        (i,), (o,), (n,), (w,) = (by_role[r] for r in ("input", "output", "neuron", "w_rec"))
        edges = [(str(a), str(c)) for a, c in node.edges]
        if sorted(edges) == sorted([(i, n), (n, w), (w, n), (n, o)]):
            return _neuron(b, name, node.nodes[n], x, node.nodes[w])
    found = {k: type(v).__name__ for k, v in node.nodes.items()}
    raise UnsupportedModuleError(
        f"NIR subgraph {name!r} is not a recurrent cell: expected nodes input, neuron (LIF, CubaLIF or IF), "
        "w_rec (Affine, Linear, Scale or Conv2d) and output with edges input->neuron, neuron->w_rec, "
        f"w_rec->neuron, neuron->output; found {found} and edges {[tuple(e) for e in node.edges]}"
    )


# -------------------------------------------------------------------------------------- import


def _load(graph_or_path: Any) -> Any:
    if isinstance(graph_or_path, nir.NIRGraph):
        return graph_or_path
    if not isinstance(graph_or_path, str | os.PathLike):
        raise InputError(
            f"expected a nir.NIRGraph or the path of a .nir file, got {type(graph_or_path).__name__}"
        )
    path = os.fspath(graph_or_path)
    if not os.path.isfile(path):
        raise InputError(f"NIR file {path!r} does not exist")
    try:
        graph = nir.read(path, type_check=False)  # type checks fail on real exports (scalar parameters)
    except OSError as e:
        raise SerializationError(f"cannot read NIR file {path!r}: {e}") from None
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise SerializationError(f"{path!r} is not a valid NIR graph: {type(e).__name__}: {e}") from None
    if not isinstance(graph, nir.NIRGraph):
        raise SerializationError(f"{path!r} holds a {type(graph).__name__}, not a NIRGraph")
    return graph


def _input_shapes(name: str, node: Any, meta: _NodeMeta | None) -> list[Shape]:
    """The per-sample input shapes to try: the metadata's, else the Input type less 0, 1, ... leading dims."""
    if meta is not None:
        if not isinstance(meta.op, Input):
            raise SerializationError(f"NIR Input {name!r}: its metadata holds a {meta.op.kind} op")
        return [tuple(meta.op.shape)]
    declared = _declared(node.input_type.get("input") if node.input_type else None)
    if declared is None:
        raise UnsupportedModuleError(f"NIR Input {name!r} has no shape (input type {node.input_type})")
    return [declared[k:] for k in range(len(declared))]


@dataclasses.dataclass(frozen=True)
class _Attempt:
    """One try at building the graph for a per-sample input shape: the graph, or how far it got."""

    graph: Graph | None
    error: GraphError | None = None
    progress: int = 0
    notes: dict[tuple[str, str], list[str]] = dataclasses.field(default_factory=dict)


def _build(s: _Structure, input_shape: Shape, opts: _Options, whole_sequence: bool) -> _Attempt:
    declared = _declared(s.nodes[s.input].input_type.get("input"))
    lead = 0 if declared is None else len(declared) - len(input_shape)
    b = _Builder(Graph(whole_sequence), {}, opts, s.recurrent, input_shape, lead)
    ir: dict[str, str] = {}
    for name in s.order:
        node = s.nodes[name]
        x = ir[s.pred[name]] if name in s.pred else ""
        meta = _node_meta(name, node) if opts.use_metadata else None
        try:
            if meta is not None:
                ir[name] = _from_metadata(b, name, node, x, meta)
            elif name == s.input:
                ir[name] = b.add(name, Input(input_shape), (), name)
            elif type(node) in HANDLERS:
                ir[name] = HANDLERS[type(node)](b, name, node, x)
            else:
                raise _unsupported(name, node)
        except GraphError as e:  # a shape that does not fit: the caller may try another input shape
            return _Attempt(None, e, len(ir))
    return _Attempt(b.graph, notes=b.notes)


def _from_metadata(b: _Builder, name: str, node: Any, x: str, meta: _NodeMeta) -> str:
    """Our exact op, once its standard NIR fields are checked to be what it exports."""
    inputs = (x,) if x else ()
    if len(inputs) != meta.op.arity:
        raise SerializationError(
            f"NIR node {name!r}: its metadata op {meta.op.kind} takes {meta.op.arity} input(s)"
        )
    in_shape = b.shapes[x] if x else ()
    try:
        out_shape = tuple(int(d) for d in meta.op.out_shape([in_shape] if x else []))
    except GraphError as e:
        raise GraphError(f"NIR node {name!r} ({meta.op.kind}): {e}") from None
    diff = _difference(_standard(meta.op, in_shape, out_shape, meta.dt), node)
    if diff is not None:
        raise SerializationError(
            f"NIR node {name!r}: its {META!r} metadata describes a {meta.op.kind} op whose NIR field "
            f"{diff!r} differs from the file's (was the file edited after export?); pass use_metadata=False "
            "to import the NIR fields instead"
        )
    return b.add(name, meta.op, inputs, meta.source)


def import_nir(
    graph_or_path: Any,
    *,
    convention: Convention = "snntorch",
    reset: Reset | None = None,
    reset_delay: bool | None = None,
    dt: float | None = None,
    use_metadata: bool = True,
) -> Graph:
    """Converts a NIR graph (a ``nir.NIRGraph`` or the path of a ``.nir`` file) into a float IR graph.

    ``convention`` (snntorch, norse, sinabs, rockpool, euler) says how time constants become decays and
    how the input is scaled, ``dt`` the time step in seconds, ``reset`` and ``reset_delay`` how neurons
    reset (each default: the convention's); see the module docstring for each formula. Nodes carrying
    :func:`export_nir`'s metadata import as the exact op they were exported from (``use_metadata=False``
    ignores it). Anything that cannot be represented is refused, never dropped; where the IR's neuron
    computes otherwise than the producer in some regime, one :class:`~snncompile.errors.ConventionWarning`
    per difference names it and the nodes it concerns.
    """
    opts = _options(convention, reset, reset_delay, dt, use_metadata)
    root = _load(graph_or_path)
    gmeta = _meta("the NIR graph", root.metadata) if opts.use_metadata else None
    if gmeta is not None and (gmeta.get("format") != FORMAT or gmeta.get("version") != VERSION):
        raise SerializationError(
            f"the NIR graph's metadata[{META!r}] is format {gmeta.get('format')!r} version "
            f"{gmeta.get('version')!r}; this snncompile reads {FORMAT!r} version {VERSION}"
        )
    order = gmeta.get("order", []) if gmeta else []
    s = _structure(root, [str(k) for k in order] if isinstance(order, list) else [])
    in_meta = _node_meta(s.input, s.nodes[s.input]) if opts.use_metadata else None
    whole_sequence = bool(gmeta.get("whole_sequence", False)) if gmeta else False
    shapes = _input_shapes(s.input, s.nodes[s.input], in_meta)
    attempts = []
    for shape in shapes:
        attempt = _build(s, shape, opts, whole_sequence)
        if attempt.graph is not None:
            attempt.graph.verify()
            for (kind, text), names in attempt.notes.items():
                nodes = ", ".join(repr(n) for n in names)
                where = f"NIR {kind} node{'s' if len(names) > 1 else ''} {nodes}"
                warnings.warn(
                    ConventionWarning(f"{where} ({opts.convention.name} convention): {text}"), stacklevel=2
                )
            return attempt.graph
        attempts.append(attempt)
    furthest = max(attempts, key=lambda a: a.progress)  # the first one on ties
    assert furthest.error is not None
    if len(shapes) == 1:
        raise furthest.error
    raise GraphError(
        f"no per-sample input shape fits the NIR graph (tried {[list(x) for x in shapes]}, the Input type "
        f"less its leading batch/time dims); the furthest try failed at {furthest.error}"
    )


# -------------------------------------------------------------------------------------- export


def _full(a: np.ndarray | None, shape: Shape, fill: float = 0.0) -> np.ndarray:
    """A neuron parameter broadcast to the neurons' full shape, as NIR's neuron nodes require."""
    return np.array(np.broadcast_to(np.float32(fill) if a is None else a, shape), dtype=np.float32)


def _tau_of(decay: np.ndarray, dt: float) -> np.ndarray:
    """snnTorch's export: ``tau = dt / (1 - decay)`` in float32 (infinite for decay 1)."""
    with np.errstate(divide="ignore"):
        return np.float32(dt) / (np.float32(1) - decay)


def _neuron_node(op: LIF | CubaLIF, shape: Shape, dt: float) -> Any:
    thr = _full(op.threshold, shape)
    zeros = np.zeros(shape, np.float32)
    beta = _full(op.beta, shape)
    tau_mem = _tau_of(beta, dt)
    r = tau_mem / np.float32(dt)
    if isinstance(op, CubaLIF):
        tau_syn = _tau_of(_full(op.alpha, shape), dt)
        w_in = tau_syn / np.float32(dt)
        return nir.CubaLIF(tau_syn, tau_mem, r, zeros, thr, zeros.copy(), w_in)
    if np.all(beta == 1):
        return nir.IF(np.ones(shape, np.float32), thr, zeros)
    v_leak = zeros if op.bias is None else np.where(beta < 1, _full(op.bias, shape) * r, 0).astype(np.float32)
    return nir.LIF(tau_mem, r, v_leak, thr, zeros.copy())


def _rec_node(rec: Recurrence, shape: Shape) -> Any:
    if isinstance(rec, DenseRecurrence):
        return nir.Linear(rec.weight) if rec.bias is None else nir.Affine(rec.weight, rec.bias)
    if isinstance(rec, OneToOneRecurrence):
        v = _full(rec.weight, shape)
        return nir.Linear(np.diag(v)) if len(shape) == 1 else nir.Scale(v)
    bias = np.zeros(rec.weight.shape[0], np.float32) if rec.bias is None else rec.bias
    return nir.Conv2d(tuple(shape[1:]), rec.weight, (1, 1), rec.padding, (1, 1), 1, bias)


def _export_neuron(op: LIF | CubaLIF, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    node = _neuron_node(op, out_shape, dt)
    if op.recurrence is None:
        return node
    nodes = {
        "input": nir.Input(np.array(out_shape)),
        "lif": node,
        "w_rec": _rec_node(op.recurrence, out_shape),
        "output": nir.Output(np.array(out_shape)),
    }
    edges = [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=True)


def _export_linear(op: Linear, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    return nir.Linear(op.weight) if op.bias is None else nir.Affine(op.weight, op.bias)


def _export_conv2d(op: Conv2d, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    bias = np.zeros(op.weight.shape[0], np.float32) if op.bias is None else op.bias
    node = nir.Conv2d(tuple(in_shape[1:]), op.weight, op.stride, op.padding, op.dilation, op.groups, bias)
    # nir 1.0.8 types the input with weight.shape[1] channels, which is wrong for groups > 1 (and makes
    # nir.read's type check fail on such a file); the graph built here gets the right type
    node.input_type = {"input": np.array(in_shape)}
    return node


def _export_pool(op: AvgPool2d | SumPool2d, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    cls = nir.AvgPool2d if isinstance(op, AvgPool2d) else nir.SumPool2d
    return cls(np.array(op.kernel), np.array(op.stride), np.array(op.padding))


def _export_flatten(op: Flatten, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    n = len(in_shape)
    return nir.Flatten({"input": np.array(in_shape)}, op.start_dim % n, op.end_dim % n)


def _export_scale(op: Scale, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    return nir.Scale(_full(op.scale, out_shape))


def _export_input(op: Input, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    return nir.Input(np.array(out_shape))


def _export_output(op: Output, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    if op.state is not None:
        raise UnsupportedModuleError(
            f"an output reading a neuron's {op.state} cannot be exported to NIR (a NIR Output reads what "
            "its input node emits); return spikes only"
        )
    return nir.Output(np.array(out_shape))


Exporter: TypeAlias = Callable[[Any, Shape, Shape, float], Any]
EXPORTERS: dict[type[Op], Exporter] = {
    Input: _export_input,
    Output: _export_output,
    Linear: _export_linear,
    Conv2d: _export_conv2d,
    AvgPool2d: _export_pool,
    SumPool2d: _export_pool,
    Flatten: _export_flatten,
    Scale: _export_scale,
    LIF: _export_neuron,
    CubaLIF: _export_neuron,
}
"""The standard NIR node of every exportable op (our exact op goes into its metadata)."""


def _standard(op: Op, in_shape: Shape, out_shape: Shape, dt: float) -> Any:
    exporter = EXPORTERS.get(type(op))
    if exporter is None:
        why = " (NIR 1.0 has no max pooling)" if op.kind == "maxpool2d" else ""
        raise UnsupportedModuleError(
            f"{op.kind} cannot be exported to NIR{why}; exportable: {', '.join(t.kind for t in EXPORTERS)}"
        )
    return exporter(op, in_shape, out_shape, dt)


def export_nir(graph: Graph, *, dt: float = 1e-4) -> nir.NIRGraph:
    """A ``nir.NIRGraph`` of a float IR graph: standard nodes whose time constants use ``dt`` (seconds)
    and snnTorch's formulas, with every op exactly in metadata (see the module docstring)."""
    dt = _check_dt(dt)
    graph.verify()
    if graph.is_fixed:
        raise UnsupportedModuleError(
            "export_nir writes float graphs; this graph is fixed-point: export the float graph it was "
            "quantized from"
        )
    shapes = graph.shapes()
    dead = [n for n in graph.topo_order() if not graph.users(n) and not isinstance(graph.op(n), Output)]
    if dead:
        raise UnsupportedModuleError(
            f"node(s) {dead} feed no Output; NIR would read each as another graph output, while the IR "
            "has one"
        )
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    for n in graph.topo_order():
        op, args = graph.op(n), graph.args(n)
        try:
            node = _standard(op, shapes[args[0]] if args else (), shapes[n], dt)
        except UnsupportedModuleError as e:
            raise UnsupportedModuleError(f"node {n!r} ({graph.line(n)}): {e}") from None
        node.metadata = {META: json.dumps({"op": _encode(op), "source": graph.source(n), "dt": dt})}
        nodes[n] = node
        edges.extend((a, n) for a in args)
    info = {
        "format": FORMAT,
        "version": VERSION,
        "whole_sequence": graph.whole_sequence,
        "order": graph.topo_order(),
        "dt": dt,
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={META: json.dumps(info)}, type_check=True)


def write_nir(graph: Graph, path: str | os.PathLike[str], *, dt: float = 1e-4) -> None:
    """Writes :func:`export_nir`'s graph to ``path`` as a NIR (HDF5) file, atomically."""
    buf = io.BytesIO()
    nir.write(buf, export_nir(graph, dt=dt))
    write_atomic(path, buf.getvalue())
