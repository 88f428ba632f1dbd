"""The integer reference interpreter: hand-computed traces, integer layers against torch, saturation,
and the neuron steps against a Python big-integer reference near the int64 edge."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompile import InputError, QuantizationError, run_integer
from snncompile.interpreters.integer import conv2d_int, eval_maxpool
from snncompile.ir import (
    QLIF,
    FixedQuant,
    Graph,
    Input,
    MaxPool2d,
    OneToOneRecurrence,
    Output,
    QCubaLIF,
    QLinear,
)

MEM8 = FixedQuant(8, -32768, 32767, "floor")


def one_neuron(op: QLIF | QCubaLIF, weight: int = 1, weight_frac: int = 0) -> Graph:
    """input (1 feature, spikes or integer currents) -> qlinear weight -> neuron -> output."""
    g = Graph()
    g.add("x", Input((1,), frac=0))
    g.add("fc", QLinear(np.array([[weight]], np.int64), None, weight_frac=weight_frac), ["x"])
    g.add("n", op, ["fc"])
    g.add("out", Output(), ["n"])
    return g


def lif(**kw: object) -> QLIF:
    args: dict[str, object] = {
        "beta": np.array(128, np.int64),  # 0.5 on 2^-8
        "decay_frac": 8,
        "threshold": np.array(256, np.int64),  # 1.0 on 2^-8
        "mem": MEM8,
        "in_frac": 8,
    }
    args.update(kw)
    return QLIF(**args)  # type: ignore[arg-type]


def trace(g: Graph, currents: list[int]) -> tuple[list[int], list[int]]:
    run = run_integer(g, np.array(currents, np.float32).reshape(-1, 1, 1))
    return run.states["n"]["mem"][:, 0, 0].tolist(), run.spikes["n"][:, 0, 0].tolist()


def test_subtract_reset_trace_by_hand() -> None:
    # weight 384/2^8 = 1.5: x = [1.5, 0, 0] (input 1, 0, 0). mem (codes on 2^-8):
    # t0: 0.5*0 + 384 = 384 > 256 -> spike;  t1: r=1: 128*384>>8 = 192, - 256 = -64;  t2: -32
    g = one_neuron(lif(), weight=384, weight_frac=8)
    assert trace(g, [1, 0, 0]) == ([384, -64, -32], [1, 0, 0])


def test_tie_gives_no_spike_and_one_lsb_more_does() -> None:
    assert trace(one_neuron(lif(), weight=256, weight_frac=8), [1])[1] == [0]
    assert trace(one_neuron(lif(), weight=257, weight_frac=8), [1])[1] == [1]


def test_zero_reset_flavours_by_hand() -> None:
    # x codes 384, 77 (0.30078125), 0 on 2^-8
    keep = one_neuron(lif(reset="zero", zero_mode="keep_input"), weight=1, weight_frac=8)
    drop = one_neuron(lif(reset="zero", zero_mode="drop_update"), weight=1, weight_frac=8)
    # Leaky keeps the new input on the step after a spike: 384 (spike), 0*.5 + 77 = 77, 38 (floor of 38.5)
    assert trace(keep, [384, 77, 0]) == ([384, 77, 38], [1, 0, 0])
    # RLeaky drops the whole update: 384 (spike), 0, 0
    assert trace(drop, [384, 77, 0]) == ([384, 0, 0], [1, 0, 0])


def test_the_sum_is_rounded_once_not_term_by_term() -> None:
    # f = 0, beta = 1/2, input on 2^-1. m=1 then x=0.5: 0.5*1 + 0.5 = 1 exactly. Rounding 0.5*1 alone
    # (half_even -> 0) and then the sum (0 + 0.5 -> 0) would give 0.
    mem0 = FixedQuant(0, -128, 127, "half_even")
    op = lif(beta=np.array(1, np.int64), decay_frac=1, threshold=np.array(5, np.int64), mem=mem0, in_frac=1)
    g = one_neuron(op, weight=1, weight_frac=1)
    assert trace(g, [2, 1])[0] == [1, 1]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("floor", [-1, -1]),
        ("half_up", [-1, 0]),
        ("half_down", [-1, -1]),
        ("half_even", [-1, 0]),
        ("trunc", [-1, 0]),
    ],
)
def test_rounding_modes_on_a_decaying_negative_membrane(mode: str, expected: list[int]) -> None:
    # m = -1 LSB, beta = 1/2: -0.5 rounds to -1 (floor, half_down) or 0 (half_up, half_even, trunc)
    mem = FixedQuant(0, -128, 127, mode)
    op = lif(beta=np.array(1, np.int64), decay_frac=1, mem=mem, threshold=np.array(5, np.int64), in_frac=0)
    assert trace(one_neuron(op), [-1, 0])[0] == expected


def test_saturation_is_applied_and_counted() -> None:
    narrow = FixedQuant(8, -128, 127, "floor")
    g = one_neuron(lif(mem=narrow, threshold=np.array(127, np.int64)), weight=100, weight_frac=8)
    run = run_integer(g, np.array([1, 1, 1, -1, -1, -1, -1, -1], np.float32).reshape(-1, 1, 1))
    mem = run.states["n"]["mem"][:, 0, 0].tolist()
    # 0.5*m + x: 100, 150 -> 127, 163 -> 127, 63 - 100, -19 - 100, -160 -> -128, -164 -> -128, -164 -> -128
    assert mem == [100, 127, 127, -37, -119, -128, -128, -128]
    assert run.saturations["n"] == 5


def test_immediate_reset_doubles_like_snntorch() -> None:
    # snnTorch's reset_delay=False zero reset with r=1, s=0 multiplies mem by 2 (SNNTORCH_SEMANTICS §1)
    op = lif(
        reset="zero", reset_delay=False, threshold=np.array(-128, np.int64), beta=np.array(256, np.int64)
    )
    assert trace(one_neuron(op, weight=1, weight_frac=8), [0, -256, 0])[0] == [0, -512, -512]


def test_cubalif_uses_the_exact_current_in_the_membrane() -> None:
    # syn on 2^-0 with floor: I = 0.5*0 + 3/2 = 1.5 -> stored 1; mem = 0 + 1.5 (exact) -> 1.5 (on 2^-1)
    op = QCubaLIF(
        alpha=np.array(1, np.int64),
        alpha_frac=1,
        beta=np.array(1, np.int64),
        decay_frac=1,
        threshold=np.array(100, np.int64),
        mem=FixedQuant(1, -128, 127),
        syn=FixedQuant(0, -128, 127),
        in_frac=1,
    )
    run = run_integer(one_neuron(op, weight=3, weight_frac=1), np.ones((1, 1, 1), np.float32))
    assert run.states["n"]["syn"][0, 0, 0] == 1
    assert run.states["n"]["mem"][0, 0, 0] == 3  # 1.5 on 2^-1


def test_one_to_one_recurrence_feeds_back_the_graded_spike() -> None:
    op = lif(
        graded=np.array(3, np.int64),
        graded_frac=1,  # spikes are worth 1.5
        recurrence=OneToOneRecurrence(np.array(2, np.int64)),  # V = 2/2^2 = 0.5 on rec grid 2^-3
        rec_frac=3,
        reset="none",
        beta=np.array(0, np.int64),
    )
    run = run_integer(
        one_neuron(op, weight=512, weight_frac=8), np.array([1, 0, 0], np.float32).reshape(-1, 1, 1)
    )
    # t0: 2.0 (spike, code 512); t1: R = 1.5 * 0.5 = 0.75 -> 192 codes; no spike
    assert run.states["n"]["mem"][:, 0, 0].tolist() == [512, 192, 0]
    assert run.spikes["n"][:, 0, 0].tolist() == [3, 0, 0]


def test_inputs_off_the_grid_are_refused() -> None:
    with pytest.raises(InputError, match=r"not on the program's input grid 2\^-0 \(spikes: integers\)"):
        run_integer(one_neuron(lif(), weight_frac=8), np.full((2, 1, 1), 0.5, np.float32))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(1, 2),
    st.integers(0, 2**16),
)
def test_conv2d_int_equals_torch(groups: int, stride: int, k: int, pad: int, dil: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cin, cout = 2 * groups, 3 * groups
    x = rng.integers(-50, 50, (2, cin, 7, 8))
    w = rng.integers(-50, 50, (cout, cin // groups, k, k))
    b = rng.integers(-1000, 1000, cout)
    ours = conv2d_int(x, w, b, (stride, stride), (pad, pad), (dil, dil), groups)
    ref = F.conv2d(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor(w, dtype=torch.float64),
        torch.tensor(b, dtype=torch.float64),
        stride,
        pad,
        dil,
        groups,
    )
    assert np.array_equal(ours, ref.numpy().astype(np.int64))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.booleans(), st.integers(0, 2**16))
def test_maxpool_int_equals_torch(k: int, stride: int, pad: int, ceil_mode: bool, seed: int) -> None:
    if pad * 2 > k:
        return  # torch requires padding <= kernel/2
    x = np.random.default_rng(seed).integers(-50, 50, (1, 2, 2, 7, 6))
    op = MaxPool2d((k, k), (stride, stride), (pad, pad), (1, 1), ceil_mode)
    ours, _ = eval_maxpool(op, [x], {"n": 0})
    ref = F.max_pool2d(torch.tensor(x[0], dtype=torch.float64), k, stride, pad, 1, ceil_mode)
    assert np.array_equal(ours[0], ref.numpy().astype(np.int64))
    assert ours.shape[2:] == op.out_shape([(2, 7, 6)])


# ------------------------------------------------------------------ big-integer reference near int64


def _round(acc: int, shift: int, mode: str) -> int:
    """``acc / 2**shift`` rounded as quant/fixed.py's module doc defines each mode (exact fractions)."""
    y = Fraction(acc, 1 << shift)
    return {
        "floor": math.floor(y),
        "half_up": math.floor(y + Fraction(1, 2)),
        "half_down": math.ceil(y - Fraction(1, 2)),
        "half_even": round(y),  # Fraction.__round__: nearest, ties to even
        "trunc": math.trunc(y),
    }[mode]


def _bigint_neuron(op: QLIF | QCubaLIF, currents: list[int]) -> tuple[list[int], list[int], int]:
    """One neuron of ``op`` (scalar parameters, no recurrence, no bias) on input codes ``currents``, in
    unbounded Python integers, term by term from the op docstrings. Also returns the largest |term|."""
    f, d, thr = op.mem.frac, op.decay_frac, int(op.threshold)
    beta, m, syn, s_prev = int(op.beta), 0, 0, 0
    biggest = 0
    mems, spikes = [], []
    for x in currents:
        r = int(m > thr)
        if isinstance(op, QCubaLIF):
            fs, a = op.syn.frac, op.alpha_frac
            big_i = max(fs + a, op.in_frac)
            acc_i = (int(op.alpha) * syn << (big_i - fs - a)) + (x << (big_i - op.in_frac))
            big = max(f + d, big_i)
            acc = (beta * m << (big - f - d)) + (acc_i << (big - big_i))
            terms = [acc_i, int(op.alpha) * syn]
            zero_drops = True
            syn_next = min(max(_round(acc_i, big_i - fs, op.syn.rounding), op.syn.lo), op.syn.hi)
        else:
            big = max(f + d, op.in_frac)
            m0 = (1 - r) * m if op.reset == "zero" and op.zero_mode == "keep_input" else m
            acc = (beta * m0 << (big - f - d)) + (x << (big - op.in_frac))
            terms = []
            zero_drops = op.zero_mode == "drop_update"
        if op.reset == "subtract":
            acc -= r * thr << (big - f)
        elif op.reset == "zero" and zero_drops:
            acc = (1 - r) * acc
        biggest = max([biggest, abs(acc), abs(beta * m), *map(abs, terms)])
        new = min(max(_round(acc, big - f, op.mem.rounding), op.mem.lo), op.mem.hi)
        spk = int(new > thr)
        if not op.reset_delay:
            step = spk - r
            new = (
                new - step * thr
                if op.reset == "subtract"
                else new - step * new
                if op.reset == "zero"
                else new
            )
            new = min(max(new, op.mem.lo), op.mem.hi)
        if isinstance(op, QCubaLIF):
            syn = syn_next
        m, s_prev = new, spk
        mems.append(m)
        spikes.append(s_prev)
    return mems, spikes, biggest


ROUNDING_MODES = st.sampled_from(["floor", "half_up", "half_down", "half_even", "trunc"])


@st.composite
def edge_neurons(draw: st.DrawFn) -> tuple[QLIF | QCubaLIF, int, list[int]]:
    """A neuron whose intermediates land anywhere from 2^40 to 2^75: state widths up to 62 bits,
    decay and input grids up to 2^-40, weights up to 2^44 on inputs up to 2^20."""
    width = draw(st.integers(8, 62))
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    f = draw(st.integers(0, 24))
    d = draw(st.integers(0, 20))
    in_frac = draw(st.integers(0, 40))
    mem = FixedQuant(f, lo, hi, draw(ROUNDING_MODES))
    thr = np.array(draw(st.integers(0, hi)), np.int64)
    beta = np.array(draw(st.integers(0, 1 << d)), np.int64)
    reset = draw(st.sampled_from(["subtract", "zero", "none"]))
    delay = draw(st.booleans())
    op: QLIF | QCubaLIF
    if draw(st.booleans()):
        op = QLIF(
            beta, d, thr, mem, in_frac, reset, delay, draw(st.sampled_from(["keep_input", "drop_update"]))
        )
    else:
        a = draw(st.integers(0, 20))
        syn_w = draw(st.integers(8, 62))
        syn = FixedQuant(
            draw(st.integers(0, 24)), -(1 << (syn_w - 1)), (1 << (syn_w - 1)) - 1, draw(ROUNDING_MODES)
        )
        alpha = np.array(draw(st.integers(0, 1 << a)), np.int64)
        op = QCubaLIF(alpha, a, beta, d, thr, mem, syn, in_frac, reset, delay)
    weight = draw(st.integers(-(1 << 44), 1 << 44))
    xs = draw(st.lists(st.integers(-(1 << 20), 1 << 20), min_size=1, max_size=6))
    return op, weight, xs


@settings(max_examples=300, deadline=None)
@given(edge_neurons())
def test_neuron_step_equals_the_big_integer_reference_or_is_refused(
    case: tuple[QLIF | QCubaLIF, int, list[int]],
) -> None:
    """Either the reference interpreter refuses the graph (its static bound leaves int64: one line
    naming the node), or every membrane, current and spike equals the unbounded-integer computation."""
    op, weight, xs = case
    g = one_neuron(op, weight=weight, weight_frac=op.in_frac)
    want_mem, want_spk, biggest = _bigint_neuron(op, [x * weight for x in xs])
    try:
        run = run_integer(g, np.array(xs, np.float32).reshape(-1, 1, 1))
    except QuantizationError as e:
        assert re.fullmatch(
            r"node '(fc|n)': intermediates can reach 2\^\d+, beyond int64; narrow its formats", str(e)
        )
        return
    assert biggest < 1 << 63  # what was run fits int64, so int64 arithmetic can be exact ...
    assert run.states["n"]["mem"][:, 0, 0].tolist() == want_mem  # ... and is
    assert run.spikes["n"][:, 0, 0].tolist() == want_spk


def test_edge_cases_run_exactly_close_to_the_int64_edge() -> None:
    """Not vacuous: a neuron whose accumulator reaches 2^60 runs, and equals the big-integer result."""
    mem = FixedQuant(0, -(1 << 40), (1 << 40) - 1, "half_even")
    op = QLIF(np.array((1 << 20) - 1, np.int64), 20, np.array((1 << 40) - 2, np.int64), mem, 0, "subtract")
    xs = [(1 << 20) - 1, 1 << 20, -3]
    g = one_neuron(op, weight=1 << 20, weight_frac=0)
    want_mem, _, biggest = _bigint_neuron(op, [x * (1 << 20) for x in xs])
    assert biggest >= 1 << 60
    assert (
        run_integer(g, np.array(xs, np.float32).reshape(-1, 1, 1)).states["n"]["mem"][:, 0, 0].tolist()
        == want_mem
    )


def test_a_graph_that_would_wrap_int64_is_refused() -> None:
    """Currents c just under 2^62 on a 2^-40 grid, beta = 1: the third step's exact accumulator is
    3c > 2^63, which int64 wraps to a negative membrane, though the exact 3c >> 40 (about 2^23.6)
    fits the state. The spec refuses the graph rather than compute it wrong."""
    mem = FixedQuant(0, -(1 << 29), (1 << 29) - 1)
    op = QLIF(np.array(1, np.int64), 0, np.array(1 << 28, np.int64), mem, 40, "subtract")
    g = one_neuron(op, weight=1 << 42, weight_frac=40)
    c = ((1 << 20) - 1) << 42
    want_mem, _, biggest = _bigint_neuron(op, [c, c, c])
    assert want_mem == [c >> 40, 2 * c >> 40, 3 * c >> 40] and biggest == 3 * c >= 1 << 63
    with pytest.raises(QuantizationError, match=r"^node 'n': intermediates can reach 2\^\d+, beyond int64"):
        run_integer(g, np.full((3, 1, 1), 2.0**20 - 1, np.float32))


def test_input_codes_beyond_2_62_are_refused() -> None:
    with pytest.raises(InputError, match=r"^input codes reach 9\.223e\+18, beyond the 2\^62"):
        run_integer(one_neuron(lif(), weight_frac=8), np.full((1, 1, 1), 2.0**63, np.float32))
