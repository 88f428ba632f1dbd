"""Fused neuron kernels of the fast engine (numba): one pass per time step over every neuron.

Each kernel computes exactly the update of its op's docstring (``snncompile/ir/qops.py``), the same
integers as the reference rules ``eval_qlif`` / ``eval_qcubalif``; the property tests hold them
equal on random graphs. Values are shaped ``(T, B, N)`` (neurons flattened), per-neuron parameters
``(N,)``; samples run in parallel. Rounding modes are numbered as in ``ROUNDINGS``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from snncompile.quant.fixed import ROUNDINGS

from snncompile.ir import QLIF, QCubaLIF
from snncompile.ir.ops import RESETS, Shape


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _round_shift(acc: int, shift: int, mode: int) -> int:
    if shift == 0:
        return acc
    half = 1 << (shift - 1)
    if mode == 0:  # floor
        return acc >> shift
    if mode == 1:  # half_up
        return (acc + half) >> shift
    if mode == 2:  # half_down
        return (acc + half - 1) >> shift
    if mode == 3:  # half_even
        q = (acc + half) >> shift
        if (acc & ((1 << shift) - 1)) == half and (q & 1) == 1:
            q -= 1
        return q
    return acc >> shift if acc >= 0 else -((-acc) >> shift)  # trunc


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _clamp(v: int, lo: int, hi: int) -> tuple[int, int]:
    """``v`` clamped to ``[lo, hi]``, and 1 when that changed it (a saturation event)."""
    if v < lo:
        return lo, 1
    if v > hi:
        return hi, 1
    return v, 0


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _immediate(v: int, s: int, r: int, th: int, reset: int, lo: int, hi: int) -> tuple[int, int]:
    """snnTorch's reset_delay=False correction ``d = s - r``, then the state range."""
    d = s - r
    if reset == 0:
        v = v - d * th
    elif reset == 1:
        v = v - d * v
    return _clamp(v, lo, hi)


@numba.njit(cache=True, parallel=True)  # type: ignore[untyped-decorator]
def _lif(
    x: Any,
    rec: Any,
    mem: Any,
    beta: Any,
    thr: Any,
    bias: Any,
    graded: Any,
    ints: Any,
    out_spk: Any,
    out_mem: Any,
) -> int:
    """QLIF over ``x.shape[0]`` steps; arrays are (T, B, N), parameters (N,). ``ints``: shifts (decay,
    input, rec, thr, out), lo, hi, rounding, reset, keep_input, delayed, has_bias, has_rec, floor_on, floor,
    record (write the states)."""
    sh_decay, sh_in, sh_rec, sh_thr, sh_out = ints[0], ints[1], ints[2], ints[3], ints[4]
    lo, hi, mode, reset, keep_input, delayed = ints[5], ints[6], ints[7], ints[8], ints[9], ints[10]
    has_bias, has_rec, floor_on, floor, record = ints[11], ints[12], ints[13], ints[14], ints[15]
    sat = 0
    for b in numba.prange(x.shape[1]):  # samples are independent: one parallel region for all steps
        for t in range(x.shape[0]):
            for j in range(x.shape[2]):
                m = mem[b, j]
                th = thr[j]
                r = 1 if m > th else 0
                m0 = 0 if (r == 1 and reset == 1 and keep_input == 1) else m
                cur = np.int64(x[t, b, j]) + (bias[j] if has_bias == 1 else 0)
                acc = ((beta[j] * m0) << sh_decay) + (cur << sh_in)
                if has_rec == 1:
                    acc += np.int64(rec[t, b, j]) << sh_rec
                if reset == 0:
                    acc -= (r * th) << sh_thr
                elif reset == 1 and keep_input == 0:
                    acc = (1 - r) * acc
                v, n = _clamp(_round_shift(acc, sh_out, mode), lo, hi)
                if floor_on == 1 and v < floor:
                    v = floor
                s = 1 if v > th else 0
                if delayed == 0:
                    v, n2 = _immediate(v, s, r, th, reset, lo, hi)
                    n += n2
                sat += n
                mem[b, j] = v
                out_spk[t, b, j] = s * graded[j]
                if record == 1:
                    out_mem[t, b, j] = v
    return sat


@numba.njit(cache=True, parallel=True)  # type: ignore[untyped-decorator]
def _cuba(
    x: Any,
    rec: Any,
    mem: Any,
    syn: Any,
    alpha: Any,
    beta: Any,
    thr: Any,
    graded: Any,
    ints: Any,
    out_spk: Any,
    out_mem: Any,
    out_syn: Any,
) -> int:
    """QCubaLIF over ``x.shape[0]`` steps; arrays (T, B, N). ``ints``: shifts (alpha, input, rec, decay,
    current, thr, syn out, mem out), syn lo, hi, rounding, mem lo, hi, rounding, reset, delayed, has_rec,
    record (write the states)."""
    sh_alpha, sh_in, sh_rec, sh_decay, sh_cur, sh_thr, sh_syn, sh_mem = ints[0:8]
    s_lo, s_hi, s_mode, lo, hi, mode, reset, delayed, has_rec, record = ints[8:18]
    sat = 0
    for b in numba.prange(x.shape[1]):  # samples are independent: one parallel region for all steps
        for t in range(x.shape[0]):
            for j in range(x.shape[2]):
                m = mem[b, j]
                th = thr[j]
                r = 1 if m > th else 0
                acc_i = ((alpha[j] * syn[b, j]) << sh_alpha) + (np.int64(x[t, b, j]) << sh_in)
                if has_rec == 1:
                    acc_i += np.int64(rec[t, b, j]) << sh_rec
                acc = ((beta[j] * m) << sh_decay) + (acc_i << sh_cur)
                if reset == 0:
                    acc -= (r * th) << sh_thr
                elif reset == 1:
                    acc = (1 - r) * acc
                c, n = _clamp(_round_shift(acc_i, sh_syn, s_mode), s_lo, s_hi)
                v, n2 = _clamp(_round_shift(acc, sh_mem, mode), lo, hi)
                n += n2
                s = 1 if v > th else 0
                if delayed == 0:
                    v, n2 = _immediate(v, s, r, th, reset, lo, hi)
                    n += n2
                sat += n
                mem[b, j] = v
                syn[b, j] = c
                out_spk[t, b, j] = s * graded[j]
                if record == 1:
                    out_mem[t, b, j] = v
                    out_syn[t, b, j] = c
    return sat


def _flat(a: np.ndarray, shape: Shape) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(a, shape).reshape(-1), dtype=np.int64)


def state_dtype(q: Any) -> type[np.signedinteger[Any]]:
    """int32 for states that fit it (every target's), else int64."""
    return np.int32 if q.lo >= -(2**31) and q.hi < 2**31 else np.int64


def spike_dtype(graded: np.ndarray) -> type[np.signedinteger[Any]]:
    """int8 spike codes where the graded factor allows (one byte per spike), else int64."""
    return np.int8 if int(np.abs(graded).max(initial=0)) <= 127 else np.int64


class NeuronKernel:
    """A neuron op prepared for the fused kernels: flattened parameters and integer settings."""

    def __init__(self, op: QLIF | QCubaLIF, shape: Shape, record: bool = True) -> None:
        self.op, self.shape = op, shape
        self.thr = _flat(op.threshold, shape)
        self.beta = _flat(op.beta, shape)
        self.graded = _flat(op.graded, shape)
        rec_frac = op.rec_frac if op.recurrence is not None else op.in_frac
        reset = RESETS.index(op.reset)
        if isinstance(op, QLIF):
            f, d = op.mem.frac, op.decay_frac
            big = max(f + d, op.in_frac, rec_frac)
            self.bias = _flat(op.bias if op.bias is not None else np.zeros((), np.int64), shape)
            self.ints = np.array(
                [big - f - d, big - op.in_frac, big - rec_frac, big - f, big - f,
                 op.mem.lo, op.mem.hi, ROUNDINGS.index(op.mem.rounding), reset,
                 int(op.zero_mode == "keep_input"), int(op.reset_delay), int(op.bias is not None),
                 int(op.recurrence is not None), int(op.floor is not None), op.floor or 0, int(record)],
                np.int64,
            )  # fmt: skip
        else:
            f, fs = op.mem.frac, op.syn.frac
            big_i = max(fs + op.alpha_frac, op.in_frac, rec_frac)
            big = max(f + op.decay_frac, big_i)
            self.alpha = _flat(op.alpha, shape)
            self.ints = np.array(
                [big_i - fs - op.alpha_frac, big_i - op.in_frac, big_i - rec_frac, big - f - op.decay_frac,
                 big - big_i, big - f, big_i - fs, big - f,
                 op.syn.lo, op.syn.hi, ROUNDINGS.index(op.syn.rounding),
                 op.mem.lo, op.mem.hi, ROUNDINGS.index(op.mem.rounding),
                 reset, int(op.reset_delay), int(op.recurrence is not None), int(record)],
                np.int64,
            )  # fmt: skip

    def run(
        self, x: np.ndarray, rec: np.ndarray, state: dict[str, np.ndarray], out: dict[str, np.ndarray]
    ) -> int:
        """Steps ``x`` (T, B, N) with recurrent input ``rec`` (T, B, N, or a dummy), updating ``state`` and
        writing ``out["spikes"]``, ``out["mem"]`` (and ``out["syn"]``); returns the saturation count."""
        if isinstance(self.op, QLIF):
            return int(
                _lif(x, rec, state["mem"], self.beta, self.thr, self.bias, self.graded, self.ints,
                     out["spikes"], out["mem"])
            )  # fmt: skip
        return int(
            _cuba(x, rec, state["mem"], state["syn"], self.alpha, self.beta, self.thr, self.graded, self.ints,
                  out["spikes"], out["mem"], out["syn"])
        )  # fmt: skip
