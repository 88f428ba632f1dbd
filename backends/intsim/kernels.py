"""Compiled kernels of the fast engine (numba): event-driven synapses fused with the neuron update.

Each neuron kernel computes exactly the update of its op's docstring (``snncompile/ir/qops.py``), the
same integers as the reference rules ``eval_qlif`` / ``eval_qcubalif``; the property tests hold them
equal on random graphs. Values are shaped ``(T, B, N)`` (neurons flattened), per-neuron parameters
``(N,)``; samples run in parallel, time steps in order inside the kernel. The neuron update is branch
free (resets, timing and rounding as 0/1 factors and the integer terms of ``quant.fixed.round_terms``)
so that it runs on the CPU's vector lanes: one row of neurons per sample, or all of a thread's samples
as one row for small layers (parameters tiled over the batch).

A kernel's input current for step ``t`` is either read from ``x[t]`` (a synapse op computed before) or,
when the synapse op is fused into it, accumulated from the events of its input (``x[t]`` is then the
synapse op's input)::

    cur[j] = b[j] + sum over i with x[t, i] != 0 of x[t, i] * W[j, i]       # gather-add of rows W.T[i]

exactly, in the integer type of the stored rows (int32 where the range analysis proves every partial
sum fits, else int64). Recurrent input ``R(s[t-1])`` is computed the same way from the previous step's
spike codes inside the kernel (dense rows, or the sparse rows of a conv recurrence), or one-to-one, or
read from a precomputed array.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from snncompile.quant.fixed import check_rounding, round_terms

from snncompile.ir import QLIF, QConv2d, QCubaLIF, QLinear
from snncompile.ir.ops import ConvRecurrence, DenseRecurrence, OneToOneRecurrence, Shape
from snncompile.ir.qops import step_shifts

Array = np.ndarray

_POOL: list[concurrent.futures.ThreadPoolExecutor] = []


def threads() -> int:
    """The CPUs this process may run on (the kernels release the GIL and run one slice each)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split(fn: Callable[[int, int], Any], n: int, grain: int = 1) -> list[Any]:
    """``fn(lo, hi)`` over ``range(n)`` cut into one slice per CPU (of at least ``grain`` items: small
    work runs in the caller's thread), run on threads; the results in order."""
    parts = max(1, min(threads(), -(-n // grain)))
    bounds = [(n * p // parts, n * (p + 1) // parts) for p in range(parts)]
    if parts <= 1:
        return [fn(lo, hi) for lo, hi in bounds]
    if not _POOL:
        _POOL.append(concurrent.futures.ThreadPoolExecutor(threads()))
    return list(_POOL[0].map(lambda b: fn(*b), bounds))


#: layers with fewer neurons than this run all their samples' neurons in one vector loop
TILE_BELOW = 64

#: how a kernel computes its recurrent input
REC_NONE, REC_DENSE, REC_ONE, REC_SPARSE = range(4)


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _start(out: Any, bias: Any, has_bias: int) -> None:
    """``out = bias`` (or 0): where an accumulation over events starts."""
    if has_bias == 1:
        for j in range(out.shape[0]):
            out[j] = bias[j]
    else:
        out[:] = 0


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _bad_event(e: Any, v: int, limit: int) -> bool:
    """Whether event ``e`` (read as ``v = int(e)``) is not an integer in ``[-limit, limit]``: the
    caller skips and counts it (and refuses the run or reruns it on converted codes)."""
    return v != e or v > limit or v < -limit


@numba.njit(cache=True)  # type: ignore[untyped-decorator]
def _gather(events: Any, limit: int, rows: Any, bias: Any, has_bias: int, out: Any, active: Any) -> int:
    """``out = bias + sum_i events[i] * rows[i]`` over the nonzero events (dense rows); returns the
    count of bad events (:func:`_bad_event`). The nonzero events' indices are first gathered into the
    scratch ``active`` without branches (spikes at any density mispredict none), then their rows added,
    four unit events per pass over ``out`` (exact in ``out``'s type: every partial sum fits it)."""
    _start(out, bias, has_bias)
    n = 0
    for i in range(events.shape[0]):
        active[n] = i
        n += events[i] != 0
    bad = 0
    k = 0
    while k < n:
        if k + 4 <= n:  # four unit events at once: one pass over ``out`` for four rows
            a, b, c, d = active[k], active[k + 1], active[k + 2], active[k + 3]
            if events[a] == 1 and events[b] == 1 and events[c] == 1 and events[d] == 1:
                for j in range(out.shape[0]):
                    out[j] += (rows[a, j] + rows[b, j]) + (rows[c, j] + rows[d, j])
                k += 4
                continue
        i = active[k]
        e = events[i]
        v = np.int64(e)
        if _bad_event(e, v, limit):
            bad += 1
        elif v == 1:
            for j in range(out.shape[0]):
                out[j] += rows[i, j]
        else:
            for j in range(out.shape[0]):
                out[j] += v * rows[i, j]
        k += 1
    return bad


@numba.njit(cache=True)  # type: ignore[untyped-decorator]
def _scatter(
    events: Any, limit: int, indptr: Any, index: Any, values: Any, bias: Any, has_bias: int, out: Any
) -> int:
    """``out = bias + sum_i events[i] * row_i`` over the nonzero events, rows stored sparse (CSR); bad
    events as in :func:`_gather`."""
    _start(out, bias, has_bias)
    bad = 0
    for i in range(events.shape[0]):
        e = events[i]
        if e == 0:
            continue
        v = np.int64(e)
        if _bad_event(e, v, limit):
            bad += 1
        else:
            for k in range(indptr[i], indptr[i + 1]):
                out[index[k]] += v * values[k]
    return bad


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _synapses(
    x_t: Any, syn: Any, syn_bias: Any, syn_ints: Any, cur: Any, prev: Any, rec: Any, rbuf: Any, active: Any
) -> int:
    """One step's synaptic input of one sample: the fused synapse op into ``cur``, the recurrence
    ``R(s[t-1])`` into ``rbuf`` (left at zero without one), ``active`` their scratch (as long as the
    longer of ``x_t`` and ``prev``); returns the count of bad input events. ``syn`` / ``rec`` hold
    (rows, indptr, index, values, bias): a fused linear op's dense rows, a recurrence's dense or
    sparse ones; ``syn_ints``: fused (0 none, 1 yes), has_syn_bias, rec_kind, has_rec_bias, the input
    events' bound."""
    fused, has_syn_bias, rec_kind, has_rec_bias, limit = (
        syn_ints[0],
        syn_ints[1],
        syn_ints[2],
        syn_ints[3],
        syn_ints[4],
    )
    bad = 0
    if fused == 1:
        bad += _gather(x_t, limit, syn[0], syn_bias, has_syn_bias, cur, active)
    big = np.int64(1) << 62  # the previous step's spike codes are in range by construction
    if rec_kind == REC_DENSE:
        _gather(prev, big, rec[0], rec[4], has_rec_bias, rbuf, active)
    elif rec_kind == REC_SPARSE:
        _scatter(prev, big, rec[1], rec[2], rec[3], rec[4], has_rec_bias, rbuf)
    elif rec_kind == REC_ONE:  # w * s[t-1], the weights in the bias slot
        one = rec[4]
        for j in range(rbuf.shape[0]):
            rbuf[j] = prev[j] * one[j]
    return bad


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _step_synapses(
    x: Any,
    t: int,
    lo_b: int,
    hi_b: int,
    syn: Any,
    syn_bias: Any,
    syn_ints: Any,
    cur: Any,
    prev: Any,
    rec: Any,
    rbuf: Any,
    active: Any,
) -> int:
    """:func:`_synapses` of step ``t`` for samples ``lo_b..hi_b-1`` (nothing to do without a fused
    synapse op or a recurrence); returns the count of bad input events."""
    bad = 0
    if syn_ints[0] != 0 or syn_ints[2] != REC_NONE:
        for b in range(lo_b, hi_b):
            bad += _synapses(x[t, b], syn, syn_bias, syn_ints, cur[0, b], prev[b], rec, rbuf[b], active)
    return bad


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _rounded(acc: int, shift: int, add: int, add_neg: int, tie_even: int, half: int, mask: int) -> int:
    """``acc / 2**shift`` rounded by the terms of ``quant.fixed.round_terms`` (branch free)."""
    q = (acc + add + (acc < 0) * add_neg) >> shift
    return q - tie_even * ((acc & mask) == half) * (q & 1)


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _lif_row(
    c: Any, q: int, bias: Any, rec: Any, mem: Any, beta: Any, thr: Any, graded: Any, spk: Any, p: Any
) -> Any:
    """One step of QLIF for row ``q`` of neurons, branch free so that it runs on vector lanes: ``c[q]``
    the input current, ``rec[q]`` the recurrent input, ``mem[q]`` updated in place, ``spk[q]`` the
    spike codes, per-neuron parameters indexed like a row; ``p`` the settings of
    :meth:`NeuronKernel._lif`. Returns the saturation count."""
    sh_decay, sh_in, sh_rec, sh_thr, sh_out, lo, hi = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    add, add_neg, tie_even, half, mask = p[7], p[8], p[9], p[10], p[11]
    zero_keep, zero_drop, sub, floor, imm_sub, imm_zero = p[12], p[13], p[14], p[15], p[16], p[17]
    sat = np.int64(0)
    for j in range(mem.shape[1]):
        m = mem[q, j]
        th = thr[j]
        r = np.int64(m > th)
        m0 = m - m * (r * zero_keep)
        acc = ((beta[j] * m0) << sh_decay) + ((np.int64(c[q, j]) + bias[j]) << sh_in) + (rec[q, j] << sh_rec)
        acc -= ((r * th) << sh_thr) * sub
        acc -= acc * (r * zero_drop)
        v0 = _rounded(acc, sh_out, add, add_neg, tie_even, half, mask)
        v = min(max(v0, lo), hi)
        n = np.int64(v != v0)
        v = max(v, floor)
        s = np.int64(v > th)
        d = s - r  # snnTorch's reset_delay=False correction (imm_* are 0 for a delayed reset)
        w = v - d * th * imm_sub - d * v * imm_zero
        v = min(max(w, lo), hi)
        sat += n + np.int64(v != w)
        mem[q, j] = v
        spk[q, j] = s * graded[j]
    return sat


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _cuba_row(
    c: Any,
    q: int,
    rec: Any,
    mem: Any,
    isyn: Any,
    alpha: Any,
    beta: Any,
    thr: Any,
    graded: Any,
    spk: Any,
    p: Any,
) -> Any:
    """One step of QCubaLIF for row ``q`` of neurons, as :func:`_lif_row`; ``p`` the settings of
    :meth:`NeuronKernel._cuba`. Returns the saturation count."""
    sh_alpha, sh_in, sh_rec, sh_decay, sh_cur, sh_thr, sh_syn, sh_mem = p[0:8]
    s_lo, s_hi, s_add, s_add_neg, s_tie, s_half, s_mask = p[8], p[9], p[10], p[11], p[12], p[13], p[14]
    lo, hi, add, add_neg, tie_even, half, mask = p[15], p[16], p[17], p[18], p[19], p[20], p[21]
    sub, zero, imm_sub, imm_zero = p[22], p[23], p[24], p[25]
    sat = np.int64(0)
    for j in range(mem.shape[1]):
        m = mem[q, j]
        th = thr[j]
        r = np.int64(m > th)
        acc_i = ((alpha[j] * isyn[q, j]) << sh_alpha) + (np.int64(c[q, j]) << sh_in) + (rec[q, j] << sh_rec)
        acc = ((beta[j] * m) << sh_decay) + (acc_i << sh_cur)
        acc -= ((r * th) << sh_thr) * sub
        acc -= acc * (r * zero)
        i0 = _rounded(acc_i, sh_syn, s_add, s_add_neg, s_tie, s_half, s_mask)
        ci = min(max(i0, s_lo), s_hi)
        v0 = _rounded(acc, sh_mem, add, add_neg, tie_even, half, mask)
        v = min(max(v0, lo), hi)
        s = np.int64(v > th)
        d = s - r
        w = v - d * th * imm_sub - d * v * imm_zero
        u = min(max(w, lo), hi)
        sat += np.int64(ci != i0) + np.int64(v != v0) + np.int64(u != w)
        mem[q, j] = u
        isyn[q, j] = ci
        spk[q, j] = s * graded[j]
    return sat


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _rows(a: Any, lo_b: int, hi_b: int, tiled: bool) -> Any:
    """``a`` (B, N) as the kernel's rows of neurons: itself (one row per sample), or, when the
    per-neuron parameters are tiled over the batch (small layers), samples ``lo_b..hi_b-1`` as one
    long row (a view)."""
    if tiled:
        n = a.shape[1]
        return a.reshape(a.size)[lo_b * n : hi_b * n].reshape(1, (hi_b - lo_b) * n)
    return a


@numba.njit(cache=True, inline="always")  # type: ignore[untyped-decorator]
def _copy_rows(src: Any, dst: Any, q0: int, q1: int) -> None:
    """``dst[q] = src[q]`` for rows ``q0..q1-1`` (a state recorded, or spikes kept for the recurrence)."""
    for q in range(q0, q1):
        for j in range(src.shape[1]):
            dst[q, j] = src[q, j]


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _lif(
    x: Any,
    syn: Any,
    syn_bias: Any,
    syn_ints: Any,
    rec: Any,
    mem: Any,
    prev: Any,
    cur: Any,
    rbuf: Any,
    beta: Any,
    thr: Any,
    bias: Any,
    graded: Any,
    p: Any,
    out_spk: Any,
    out_mem: Any,
    lo_b: int,
    hi_b: int,
) -> tuple[int, int]:
    """QLIF over ``x.shape[0]`` steps for samples ``lo_b..hi_b-1`` (other threads run the others);
    states (B, N), outputs (T, B, N); ``p``: :meth:`NeuronKernel._lif`, its last entry whether the
    membrane is recorded."""
    fused, rec_kind, record = syn_ints[0], syn_ints[2], p[p.shape[0] - 1]
    active = np.empty(max(x.shape[2], mem.shape[1]), np.int64)
    tiled = thr.shape[0] > mem.shape[1]
    q0, q1 = (0, 1) if tiled else (lo_b, hi_b)
    mem_r, rec_r, prev_r = (
        _rows(mem, lo_b, hi_b, tiled),
        _rows(rbuf, lo_b, hi_b, tiled),
        _rows(prev, lo_b, hi_b, tiled),
    )
    sat = 0
    bad = 0
    for t in range(x.shape[0]):  # steps outside: each step's rows are read and written in order
        bad += _step_synapses(x, t, lo_b, hi_b, syn, syn_bias, syn_ints, cur, prev, rec, rbuf, active)
        spk = _rows(out_spk[t], lo_b, hi_b, tiled)
        if fused != 0:
            c = _rows(cur[0], lo_b, hi_b, tiled)
            for q in range(q0, q1):
                sat += _lif_row(c, q, bias, rec_r, mem_r, beta, thr, graded, spk, p)
        else:
            cx = _rows(x[t], lo_b, hi_b, tiled)
            for q in range(q0, q1):
                sat += _lif_row(cx, q, bias, rec_r, mem_r, beta, thr, graded, spk, p)
        if record == 1:
            _copy_rows(mem_r, _rows(out_mem[t], lo_b, hi_b, tiled), q0, q1)
        if rec_kind != REC_NONE:  # the recurrence reads this step's spikes at the next one
            _copy_rows(spk, prev_r, q0, q1)
    return sat, bad


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _cuba(
    x: Any,
    syn: Any,
    syn_bias: Any,
    syn_ints: Any,
    rec: Any,
    mem: Any,
    isyn: Any,
    prev: Any,
    cur: Any,
    rbuf: Any,
    alpha: Any,
    beta: Any,
    thr: Any,
    graded: Any,
    p: Any,
    out_spk: Any,
    out_mem: Any,
    out_syn: Any,
    lo_b: int,
    hi_b: int,
) -> tuple[int, int]:
    """QCubaLIF over ``x.shape[0]`` steps, as :func:`_lif`; ``p``: :meth:`NeuronKernel._cuba`."""
    fused, rec_kind, record = syn_ints[0], syn_ints[2], p[p.shape[0] - 1]
    active = np.empty(max(x.shape[2], mem.shape[1]), np.int64)
    tiled = thr.shape[0] > mem.shape[1]
    q0, q1 = (0, 1) if tiled else (lo_b, hi_b)
    mem_r, syn_r = _rows(mem, lo_b, hi_b, tiled), _rows(isyn, lo_b, hi_b, tiled)
    rec_r, prev_r = _rows(rbuf, lo_b, hi_b, tiled), _rows(prev, lo_b, hi_b, tiled)
    sat = 0
    bad = 0
    for t in range(x.shape[0]):
        bad += _step_synapses(x, t, lo_b, hi_b, syn, syn_bias, syn_ints, cur, prev, rec, rbuf, active)
        spk = _rows(out_spk[t], lo_b, hi_b, tiled)
        if fused != 0:
            c = _rows(cur[0], lo_b, hi_b, tiled)
            for q in range(q0, q1):
                sat += _cuba_row(c, q, rec_r, mem_r, syn_r, alpha, beta, thr, graded, spk, p)
        else:
            cx = _rows(x[t], lo_b, hi_b, tiled)
            for q in range(q0, q1):
                sat += _cuba_row(cx, q, rec_r, mem_r, syn_r, alpha, beta, thr, graded, spk, p)
        if record == 1:
            _copy_rows(mem_r, _rows(out_mem[t], lo_b, hi_b, tiled), q0, q1)
            _copy_rows(syn_r, _rows(out_syn[t], lo_b, hi_b, tiled), q0, q1)
        if rec_kind != REC_NONE:
            _copy_rows(spk, prev_r, q0, q1)
    return sat, bad


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _events(x: Any, syn: Any, syn_bias: Any, syn_ints: Any, out: Any, lo_b: int, hi_b: int) -> int:
    """A linear op alone, event-driven: ``out[t, b] = b + sum of the active inputs' (dense) rows``;
    returns the count of bad input events."""
    bad = 0
    active = np.empty(x.shape[2], np.int64)
    for b in range(lo_b, hi_b):
        for t in range(x.shape[0]):
            bad += _gather(x[t, b], syn_ints[4], syn[0], syn_bias, syn_ints[1], out[t, b], active)
    return bad


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _dot_rows(x: Any, w: Any, bias: Any, out: Any) -> None:
    """``out[r, j] = bias[j] + sum_i x[r, i] * w[j, i]`` in int64 (exact: the range analysis bounds
    every sum below 2**62); ``x`` holds integers (or floats that are integers)."""
    for r in range(x.shape[0]):
        for j in range(w.shape[0]):
            acc = np.int64(0)
            for i in range(w.shape[1]):
                acc += np.int64(x[r, i]) * w[j, i]
            out[r, j] = acc + bias[j]


def dot_rows(x: Array, w: Array, bias: Array) -> Array:
    """:func:`_dot_rows` over rows ``x`` (R, n_in) on every CPU: a small linear layer without BLAS."""
    out = np.empty((x.shape[0], w.shape[0]), np.int64)
    split(lambda lo, hi: _dot_rows(x[lo:hi], w, bias, out[lo:hi]), x.shape[0], 16)
    return out


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _codes(x: Any, out: Any, write: int, bounds: Any) -> tuple[Any, Any, Any]:
    """Over floats ``x``: the count of values that are not integers in ``bounds`` (-128, 127,
    in ``x``'s type; NaN included), and the smallest and largest code; the int8 codes written to
    ``out`` when ``write``. Branch free: one vector pass."""
    bad = np.int64(0)
    smallest = np.int32(127)
    largest = np.int32(-128)
    low, high, zero = bounds[0], bounds[1], bounds[2]
    for i in range(x.shape[0]):  # from 0: indices provably non-negative, so the loop vectorises
        v = x[i]
        c = np.int32(v if (v >= low) & (v <= high) else zero)  # then c != v, NaN included
        bad += np.int64(x.dtype.type(c) != v)
        smallest = min(smallest, c)
        largest = max(largest, c)
        if write == 1:
            out[i] = c
    return bad, smallest, largest


def _scan(x: Array, out: Array | None) -> tuple[int, int] | None:
    """(smallest, largest) value of ``x`` when every value is an integer in -128..127, else None;
    writes the int8 codes to ``out`` when given. Floats in one compiled pass, one slice per CPU."""
    flat = np.ascontiguousarray(x).reshape(-1)
    if flat.size == 0:
        return 0, 0
    if flat.dtype.kind != "f":  # integers and booleans: their range is enough
        low, high = int(flat.min()), int(flat.max())
        if low < -128 or high > 127:
            return None
        if out is not None:
            np.copyto(out.reshape(-1), flat, casting="unsafe")
        return low, high
    dest = np.empty(1, np.int8) if out is None else out.reshape(-1)
    bounds = np.array([-128, 127, 0], flat.dtype)
    write = int(out is not None)
    parts = split(
        lambda lo, hi: _codes(flat[lo:hi], dest[lo:hi] if write else dest, write, bounds), flat.size, 1 << 16
    )
    if any(bad for bad, _, _ in parts):
        return None
    return min(int(p[1]) for p in parts), max(int(p[2]) for p in parts)


def spike_codes(x: Array) -> tuple[Array, int] | None:
    """An array of small integers (spikes) as int8 codes and the largest |code|, in one parallel pass;
    None when some value is not an integer in -128..127 (or is NaN)."""
    out = np.empty(x.shape, np.int8)
    found = _scan(x, out)
    return None if found is None else (out, max(-found[0], found[1]))


def spike_range(x: Array) -> tuple[int, int] | None:
    """The smallest and largest value of an array of small integers, or None as for :func:`spike_codes`."""
    return _scan(x, None)


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _conv_events(
    x: Any,
    limit: int,
    wt: Any,
    bias: Any,
    has_bias: int,
    cin_g: int,
    ymap: Any,
    xmap: Any,
    out: Any,
    lo_b: int,
    hi_b: int,
) -> int:
    """A 2-d convolution, event-driven, of samples lo_b..hi_b-1: each nonzero input ``v`` at
    ``(c, y, x)`` adds ``v * wt[c, ky, kx, :]`` (its group's output channels, contiguous) to the output
    ``(ymap[y, ky], xmap[x, kx])`` where both are >= 0 (the tap lands inside the output), accumulated
    channel-last and written channel-first to ``out`` (T, B, cout, oh, ow). Returns the count of bad
    events (as :func:`_gather`)."""
    n_c, h, w = x.shape[2], x.shape[3], x.shape[4]
    kh, kw, cout_g = wt.shape[1], wt.shape[2], wt.shape[3]
    cout, oh, ow = out.shape[2], out.shape[3], out.shape[4]
    acc = np.zeros((oh, ow, cout), out.dtype)
    bad = 0
    for b in range(lo_b, hi_b):
        for t in range(x.shape[0]):
            acc[:] = 0
            for c in range(n_c):
                g0 = (c // cin_g) * cout_g
                for y in range(h):
                    for xx in range(w):
                        e = x[t, b, c, y, xx]
                        if e == 0:
                            continue
                        v = np.int64(e)
                        if _bad_event(e, v, limit):
                            bad += 1
                            continue
                        for ky in range(kh):
                            oy = ymap[y, ky]
                            if oy < 0:
                                continue
                            for kx in range(kw):
                                ox = xmap[xx, kx]
                                if ox < 0:
                                    continue
                                if v == 1:
                                    for o in range(cout_g):
                                        acc[oy, ox, g0 + o] += wt[c, ky, kx, o]
                                else:
                                    for o in range(cout_g):
                                        acc[oy, ox, g0 + o] += v * wt[c, ky, kx, o]
            for o in range(cout):
                bo = bias[o] if has_bias == 1 else 0
                for oy in range(oh):
                    for ox in range(ow):
                        out[t, b, o, oy, ox] = acc[oy, ox, o] + bo
    return bad


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _pool_rows(x: Any, out: Any, kh: int, kw: int, sh: int, sw: int, is_max: int) -> None:
    """``out[r, c, oy, ox]`` = the max (``is_max``) or the sum of ``x[r, c, oy*sh + i, ox*sw + j]``
    over the ``kh x kw`` window, in ``out``'s number type (exact: the caller sizes it)."""
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oy in range(out.shape[2]):
                for ox in range(out.shape[3]):
                    acc = out.dtype.type(x[r, c, oy * sh, ox * sw]) if is_max == 1 else out.dtype.type(0)
                    for i in range(kh):
                        for j in range(kw):
                            v = out.dtype.type(x[r, c, oy * sh + i, ox * sw + j])
                            acc = max(acc, v) if is_max == 1 else acc + v
                    out[r, c, oy, ox] = acc


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _pool_2x2(x: Any, out: Any, is_max: int) -> None:
    """:func:`_pool_rows` for the usual 2x2 window of stride 2, its offsets constants (vector lanes)."""
    for r in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oy in range(out.shape[2]):
                for ox in range(out.shape[3]):
                    a = out.dtype.type(x[r, c, 2 * oy, 2 * ox])
                    b = out.dtype.type(x[r, c, 2 * oy, 2 * ox + 1])
                    d = out.dtype.type(x[r, c, 2 * oy + 1, 2 * ox])
                    e = out.dtype.type(x[r, c, 2 * oy + 1, 2 * ox + 1])
                    out[r, c, oy, ox] = max(max(a, b), max(d, e)) if is_max == 1 else (a + b) + (d + e)


def pool(x: Array, kernel: tuple[int, int], stride: tuple[int, int], is_max: bool, dtype: Any) -> Array:
    """An unpadded max or sum pool over rows ``x`` (R, C, H, W) into ``dtype``, on every CPU."""
    (kh, kw), (sh, sw) = kernel, stride
    out = np.empty((x.shape[0], x.shape[1], (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1), dtype)
    x = np.ascontiguousarray(x)
    if kernel == stride == (2, 2):
        split(lambda lo, hi: _pool_2x2(x[lo:hi], out[lo:hi], int(is_max)), x.shape[0])
    else:
        split(lambda lo, hi: _pool_rows(x[lo:hi], out[lo:hi], kh, kw, sh, sw, int(is_max)), x.shape[0])
    return out


def tap_map(size: int, out_size: int, k: int, stride: int, pad: int, dilation: int) -> Array:
    """``m[y, ky]``: the output position that input ``y`` reaches through tap ``ky`` (``y = o*stride -
    pad + ky*dilation``), or -1 where none does."""
    n = np.arange(size)[:, None] + pad - np.arange(k)[None, :] * dilation
    o = n // stride
    return np.where((n >= 0) & (n % stride == 0) & (o < out_size), o, -1).astype(np.int64)


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _im2col(x: Any, geo: Any, cols: Any, lo: int, hi: int) -> None:
    """``cols[r, oy, ox, c, ky, kx] = x[r, c, oy*sh - ph + ky*dh, ox*sw - pw + kx*dw]`` (0 outside) for
    rows lo..hi-1: a convolution's inputs laid out for one matrix product."""
    sh, sw, ph, pw, dh, dw = geo[0], geo[1], geo[2], geo[3], geo[4], geo[5]
    n_c, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh, ow, kh, kw = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    for r in range(lo, hi):
        for oy in range(oh):
            for ox in range(ow):
                for c in range(n_c):
                    for ky in range(kh):
                        y = oy * sh - ph + ky * dh
                        for kx in range(kw):
                            xx = ox * sw - pw + kx * dw
                            inside = y >= 0 and y < h and xx >= 0 and xx < w
                            cols[r, oy, ox, c, ky, kx] = x[r, c, y, xx] if inside else 0


@numba.njit(cache=True, nogil=True)  # type: ignore[untyped-decorator]
def _im2col_runs(xp: Any, kh: int, kw: int, cols: Any, lo: int, hi: int) -> None:
    """``cols[r, oy, ox, (ky*kw + kx)*C + c] = xp[r, oy + ky, ox + kx, c]`` for rows lo..hi-1 of a
    stride-1 conv over channel-last, zero-padded inputs ``xp`` (R, Hp, Wp, C): one contiguous run of
    ``kw*C`` values per window row (unsigned offsets: no negative-index wraparound in the copy loop)."""
    n_c = xp.shape[3]
    run = np.uint64(kw * n_c)
    xf = xp.reshape(xp.shape[0], xp.shape[1], xp.shape[2] * n_c)
    for r in range(lo, hi):
        for oy in range(cols.shape[1]):
            for ox in range(cols.shape[2]):
                src = np.uint64(ox * n_c)
                for ky in range(kh):
                    dst = np.uint64(ky) * run
                    for t in range(run):
                        cols[r, oy, ox, dst + t] = xf[r, oy + ky, src + t]


def im2col_runs(x: Array, kernel: tuple[int, int], padding: tuple[int, int], cols: Array) -> None:
    """``x`` (R, C, H, W) as the (R, oh, ow, kh*kw*C) columns of a stride-1, undilated conv, window
    taps outer and channels inner, into ``cols`` (wider rows keep their extra columns), on every CPU."""
    (kh, kw), (ph, pw) = kernel, padding
    r, c, h, w = x.shape
    xp = np.zeros((r, h + 2 * ph, w + 2 * pw, c), cols.dtype)
    xp[:, ph : ph + h, pw : pw + w, :] = x.transpose(0, 2, 3, 1)
    split(lambda lo, hi: _im2col_runs(xp, kh, kw, cols, lo, hi), r)


def conv_geometry(
    stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], cin_g: int
) -> Array:
    return np.array([*stride, *padding, *dilation, cin_g], np.int64)


def im2col(x: Array, geo: Array, cols: Array) -> None:
    """``x`` (R, C, H, W) as (R, oh, ow, C, kh, kw) columns into ``cols`` (any layout and number
    type), on every CPU."""
    split(lambda lo, hi: _im2col(x, geo, cols, lo, hi), x.shape[0])


class EventConv:
    """A conv op alone on the event path: weights by input channel and tap, output channels last."""

    def __init__(self, op: QConv2d, in_shape: Shape, dtype: type[np.signedinteger[Any]]) -> None:
        c_out, cin_g, kh, kw = op.weight.shape
        cout_g = c_out // op.groups
        w = np.asarray(op.weight).reshape(op.groups, cout_g, cin_g, kh, kw)
        self.wt = np.ascontiguousarray(
            w.transpose(0, 2, 3, 4, 1).reshape(op.groups * cin_g, kh, kw, cout_g), dtype
        )
        self.bias = np.zeros(c_out, dtype) if op.bias is None else np.asarray(op.bias).astype(dtype)
        self.has_bias = int(op.bias is not None)
        self.cin_g = cin_g
        _, h, w_in = in_shape
        (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
        oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w_in + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        self.out_shape = (c_out, oh, ow)
        self.ymap, self.xmap = tap_map(h, oh, kh, sh, ph, dh), tap_map(w_in, ow, kw, sw, pw, dw)
        self.dtype = dtype

    def run(self, x: Array, limit: int) -> tuple[Array, int]:
        """The op over ``x`` (T, B, C, H, W): (T, B, cout, oh, ow), and the count of bad events."""
        out = np.empty((x.shape[0], x.shape[1], *self.out_shape), self.dtype)
        args = (x, limit, self.wt, self.bias, self.has_bias, self.cin_g, self.ymap, self.xmap, out)
        bad = split(lambda lo, hi: _conv_events(*args, lo, hi), x.shape[1])
        return out, int(sum(bad))


# ------------------------------------------------------------------------------------ synapse storage


@dataclasses.dataclass(frozen=True)
class Rows:
    """A synapse op (or recurrence) as event rows: ``dense`` (n_in, n_out) = W.T, or CSR ``indptr``,
    ``index``, ``values`` (row i: the outputs input i reaches and their weights); ``bias`` per output."""

    n_out: int
    dense: Array | None = None
    indptr: Array | None = None
    index: Array | None = None
    values: Array | None = None
    bias: Array | None = None

    def pack(self, dtype: type[np.signedinteger[Any]]) -> tuple[tuple[Array, ...], Array, int, int]:
        """(rows, indptr, index, values, bias) for the kernels, the bias, storage kind (1 dense, 2
        sparse) and whether there is a bias."""
        dummy2, dummy1 = np.zeros((1, 1), dtype), np.zeros(1, np.int64)
        bias = np.zeros(self.n_out, dtype) if self.bias is None else self.bias.astype(dtype)
        if self.dense is not None:
            packed = (np.ascontiguousarray(self.dense, dtype), dummy1, dummy1, np.zeros(1, dtype), bias)
            return packed, bias, 1, int(self.bias is not None)
        assert self.indptr is not None and self.index is not None and self.values is not None
        packed = (dummy2, self.indptr, self.index, self.values.astype(dtype), bias)
        return packed, bias, 2, int(self.bias is not None)


def conv_rows(
    weight: Array,
    bias: Array | None,
    in_shape: Shape,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Rows:
    """The CSR rows of a 2-d convolution (torch's cross-correlation, zero padding): input ``(c, y, x)``
    reaches output ``(o, oy, ox)`` with weight ``W[o, c - g*cin, ky, kx]`` wherever
    ``y = oy*sh - ph + ky*dh`` and ``x = ox*sw - pw + kx*dw``. Built in O(n_in * taps)."""
    c_in, h, w = in_shape
    c_out, cin_g, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cout_g = c_out // groups
    cc, yy, xx = (
        a.reshape(-1) for a in np.meshgrid(np.arange(c_in), np.arange(h), np.arange(w), indexing="ij")
    )
    oo, ky, kx = (
        a.reshape(-1) for a in np.meshgrid(np.arange(cout_g), np.arange(kh), np.arange(kw), indexing="ij")
    )
    # every (input, tap) pair; a tap lands where (y + ph - ky*dh) is a multiple of the stride
    ny = yy[:, None] + ph - ky[None, :] * dh
    nx = xx[:, None] + pw - kx[None, :] * dw
    oy, ox = ny // sh, nx // sw
    ok = (ny % sh == 0) & (nx % sw == 0) & (oy >= 0) & (oy < oh) & (ox >= 0) & (ox < ow)
    g = cc // cin_g
    o = g[:, None] * cout_g + oo[None, :]
    target = (o * oh + oy) * ow + ox
    vals = weight[o, (cc - g * cin_g)[:, None], ky[None, :], kx[None, :]]
    counts = ok.sum(axis=1)
    indptr = np.zeros(len(cc) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    bias_out = None if bias is None else np.repeat(np.asarray(bias, np.int64), oh * ow)
    return Rows(
        c_out * oh * ow,
        indptr=indptr,
        index=np.ascontiguousarray(target[ok], np.int64),
        values=np.ascontiguousarray(vals[ok], np.int64),
        bias=bias_out,
    )


def linear_rows(op: QLinear) -> Rows:
    """A linear op's event rows: row i = W[:, i] (what input i adds to every output)."""
    return Rows(op.weight.shape[0], dense=op.weight.T, bias=op.bias)


def recurrence_rows(rec: DenseRecurrence | ConvRecurrence, shape: Shape) -> Rows:
    if isinstance(rec, DenseRecurrence):
        return Rows(rec.weight.shape[0], dense=rec.weight.T, bias=rec.bias)
    return conv_rows(rec.weight, rec.bias, shape, (1, 1), rec.padding, (1, 1), 1)


class EventSynapses:
    """A linear op alone on the event path: its dense rows packed once, accumulated in ``dtype``."""

    def __init__(self, rows: Rows, dtype: type[np.signedinteger[Any]]) -> None:
        assert rows.dense is not None, "event synapses take a linear op's dense rows"
        self.n_out, self.dtype = rows.n_out, dtype
        self.packed, self.bias, kind, has_bias = rows.pack(dtype)
        self.ints = np.array([kind, has_bias, 0, 0, 0], np.int64)

    def run(self, x: Array, limit: int) -> tuple[Array, int]:
        """The op over ``x`` (T, B, *in_shape): (T, B, n_out), and the count of events outside
        ``[-limit, limit]``."""
        x = x.reshape(x.shape[0], x.shape[1], -1)
        out = np.empty((x.shape[0], x.shape[1], self.n_out), self.dtype)
        ints = self.ints.copy()
        ints[4] = limit
        bad = split(lambda lo, hi: _events(x, self.packed, self.bias, ints, out, lo, hi), x.shape[1])
        return out, int(sum(bad))


# ------------------------------------------------------------------------------------ neuron kernels


def _round_settings(shift: int, mode: str) -> list[int]:
    """The rounding terms (add, add_neg, tie_even, half, mask) of ``quant.fixed.round_terms``."""
    t = round_terms(shift, check_rounding(mode))
    return [t.add, t.add_neg, t.tie_even, t.half, t.mask]


def _recurrence_dtype(rec: DenseRecurrence | ConvRecurrence, graded: Array) -> type[np.signedinteger[Any]]:
    """The narrowest integer type that holds every partial sum of the recurrent input: at most the sum
    of an output's |weights| times the largest spike code, plus its |bias| (narrow rows: less memory
    to stream per spike)."""
    w = np.abs(rec.weight.astype(np.int64)).reshape(rec.weight.shape[0], -1)
    bias = 0 if rec.bias is None else int(np.abs(rec.bias).max(initial=0))
    bound = int(w.sum(axis=1).max(initial=0)) * int(np.abs(graded).max(initial=0)) + bias
    return np.int16 if bound < 2**15 else np.int32 if bound < 2**31 else np.int64


def _flat(a: np.ndarray, shape: Shape) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(a, shape).reshape(-1), dtype=np.int64)


def state_dtype(q: Any) -> type[np.signedinteger[Any]]:
    """int32 for states that fit it (every target's), else int64."""
    return np.int32 if q.lo >= -(2**31) and q.hi < 2**31 else np.int64


def spike_dtype(graded: np.ndarray) -> type[np.signedinteger[Any]]:
    """int8 spike codes where the graded factor allows (one byte per spike), else int64."""
    return np.int8 if int(np.abs(graded).max(initial=0)) <= 127 else np.int64


class NeuronKernel:
    """A neuron op prepared for the compiled kernels: flattened parameters, integer settings, the fused
    synapse op's rows (``fused``, accumulated in ``dtype``) and the recurrence's rows."""

    def __init__(
        self,
        op: QLIF | QCubaLIF,
        shape: Shape,
        record: bool = True,
        fused: Rows | None = None,
        dtype: type[np.signedinteger[Any]] = np.int64,
    ) -> None:
        self.op, self.shape, self.size = op, shape, math.prod(shape)
        self.names = ("mem", "syn") if isinstance(op, QCubaLIF) else ("mem",)
        self.thr = _flat(op.threshold, shape)
        self.beta = _flat(op.beta, shape)
        self.graded = _flat(op.graded, shape)
        self.record = record
        self.acc_dtype = dtype
        none = Rows(self.size, dense=np.zeros((1, 1), np.int64)).pack(np.int64)
        assert fused is None or fused.dense is not None, "a fused synapse op is a linear op's dense rows"
        self.syn, self.syn_bias, kind, has_bias = none if fused is None else fused.pack(dtype)
        kind = 0 if fused is None else kind
        rec = op.recurrence
        self.rec_kind = REC_NONE
        self.rec = none[0]
        has_rec_bias = 0
        if isinstance(rec, OneToOneRecurrence):
            self.rec_kind = REC_ONE
            one = _flat(rec.weight, shape)
            self.rec = (*self.rec[:4], one)
        elif isinstance(rec, DenseRecurrence | ConvRecurrence):
            rows = recurrence_rows(rec, shape)
            self.rec, _, storage, has_rec_bias = rows.pack(_recurrence_dtype(rec, op.graded))
            self.rec_kind = REC_DENSE if storage == 1 else REC_SPARSE
        self.syn_ints = np.array([kind, has_bias, self.rec_kind, has_rec_bias, 0], np.int64)
        self._tiled: dict[int, tuple[Array, ...]] = {}
        self.settings = self._lif(op, record) if isinstance(op, QLIF) else self._cuba(op, record)
        if isinstance(op, QLIF):
            self.bias = _flat(op.bias if op.bias is not None else np.zeros((), np.int64), shape)
        else:
            self.alpha = _flat(op.alpha, shape)

    @staticmethod
    def _lif(op: QLIF, record: bool) -> Array:
        """The settings of :func:`_lif_row` (the step's shifts, range, rounding terms, reset flags,
        floor, immediate-reset flags) and whether the membrane is recorded."""
        sh = step_shifts(op)
        zero, immediate = op.reset == "zero", not op.reset_delay
        keep = op.zero_mode == "keep_input"
        return np.array(
            [sh.decay, sh.input, sh.rec, sh.thr, sh.out, op.mem.lo, op.mem.hi,
             *_round_settings(sh.out, op.mem.rounding),
             int(zero and keep), int(zero and not keep), int(op.reset == "subtract"),
             op.mem.lo if op.floor is None else op.floor,
             int(immediate and op.reset == "subtract"), int(immediate and zero), int(record)],
            np.int64,
        )  # fmt: skip

    @staticmethod
    def _cuba(op: QCubaLIF, record: bool) -> Array:
        """The settings of :func:`_cuba_row` and whether the states are recorded."""
        sh = step_shifts(op)
        zero, immediate = op.reset == "zero", not op.reset_delay
        return np.array(
            [sh.alpha, sh.input, sh.rec, sh.decay, sh.current, sh.thr, sh.syn_out, sh.out,
             op.syn.lo, op.syn.hi, *_round_settings(sh.syn_out, op.syn.rounding),
             op.mem.lo, op.mem.hi, *_round_settings(sh.out, op.mem.rounding),
             int(op.reset == "subtract"), int(zero),
             int(immediate and op.reset == "subtract"), int(immediate and zero), int(record)],
            np.int64,
        )  # fmt: skip

    def _params(self, batch: int) -> tuple[Array, ...]:
        """The per-neuron parameters as the kernels read them: a layer of fewer than :data:`TILE_BELOW`
        neurons has them tiled over the batch, so that the kernel runs one long vector loop over all
        its samples' neurons rather than a short one per sample."""
        params = (
            (self.beta, self.thr, self.bias, self.graded)
            if isinstance(self.op, QLIF)
            else (self.alpha, self.beta, self.thr, self.graded)
        )
        if self.size >= TILE_BELOW or batch == 1:
            return params
        if batch not in self._tiled:
            self._tiled = {batch: tuple(np.tile(a, batch) for a in params)}
        return self._tiled[batch]

    def new_state(self, batch: int) -> dict[str, Array]:
        """Zero states, the previous step's spike codes, and the kernels' per-sample buffers."""
        state = {v: np.zeros((batch, self.size), np.int64) for v in self.names}
        state["prev"] = np.zeros((batch, self.size), spike_dtype(self.op.graded))
        state["cur"] = np.zeros((1, batch, self.size), self.acc_dtype)
        state["rbuf"] = np.zeros((batch, self.size), self.rec[4].dtype)
        return state

    def outputs(self, steps: int, batch: int) -> dict[str, Array]:
        """Output arrays for ``steps`` steps: spikes, and the states when recorded."""
        stored = (steps, batch, self.size) if self.record else (1, 1, 1)
        out = {"spikes": np.empty((steps, batch, self.size), spike_dtype(self.op.graded))}
        return out | {v: np.empty(stored, state_dtype(getattr(self.op, v))) for v in self.names}

    def run(
        self, x: Array, state: dict[str, Array], out: dict[str, Array], limit: int = 0
    ) -> tuple[int, int]:
        """Steps ``x`` (T, B, N), or the fused synapse op's input (T, B, n_in) with events bounded by
        ``limit``; updates ``state``, writes ``out``; returns the saturation count and the count of
        input events outside the bound (nonzero: the results are void)."""
        ints = self.syn_ints.copy()
        ints[4] = limit
        common = (x, self.syn, self.syn_bias, ints, self.rec)
        buffers = (state["prev"], state["cur"], state["rbuf"])
        params = self._params(state["mem"].shape[0])
        args: tuple[Any, ...]
        if isinstance(self.op, QLIF):
            beta, thr, bias, graded = params
            args = (*common, state["mem"], *buffers, beta, thr, bias, graded, self.settings,
                    out["spikes"], out["mem"])  # fmt: skip
            parts = split(lambda lo, hi: _lif(*args, lo, hi), x.shape[1])
        else:
            alpha, beta, thr, graded = params
            args = (*common, state["mem"], state["syn"], *buffers, alpha, beta, thr, graded,
                    self.settings, out["spikes"], out["mem"], out["syn"])  # fmt: skip
            parts = split(lambda lo, hi: _cuba(*args, lo, hi), x.shape[1])
        return sum(int(s) for s, _ in parts), sum(int(b) for _, b in parts)
