"""Property tests of the fixed-point primitives against plain Python big-int / Fraction arithmetic.

Contract under test (``snncompile.quant.fixed``): for ``y = acc / 2**shift``

* ``floor``: ``floor(y)``; ``half_up``: ``floor(y + 1/2)``; ``half_down``: ``ceil(y - 1/2)``;
  ``half_even``: nearest, ties to even; ``trunc``: toward zero;
* ``saturate`` clamps to ``[lo, hi]`` and counts the clamped values;
* the float tensor twins ``round_tensor`` / ``quantize_tensor`` give the same integers on exact dyadic
  values, and the QAT hook ``FixedPoint`` is idempotent with a clipped straight-through gradient;
* ``Fixed.parse`` and ``str`` round-trip, bad formats raise.

The references below use only ``int`` and ``fractions.Fraction``; nothing is computed with numpy's or
torch's rounding.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from snncompile.quant import FixedPoint
from snncompile.quant.fixed import (
    ROUNDINGS,
    Fixed,
    FormatError,
    check_rounding,
    quantize_tensor,
    round_shift,
    round_tensor,
    saturate,
)

ACC = 2**40
MAX_SHIFT = 20


def ref_round(y: Fraction, mode: str) -> int:
    """The rounding modes on an exact rational, by definition."""
    if mode == "floor":
        return math.floor(y)
    if mode == "half_up":
        return math.floor(y + Fraction(1, 2))
    if mode == "half_down":
        return math.ceil(y - Fraction(1, 2))
    if mode == "half_even":
        lo = math.floor(y)
        rest = y - lo
        if rest != Fraction(1, 2):
            return lo + (rest > Fraction(1, 2))
        return lo if lo % 2 == 0 else lo + 1
    if mode == "trunc":
        return math.trunc(y)
    raise AssertionError(mode)


def test_reference_rounding_on_known_values() -> None:
    """The reference itself, on the textbook table (y = -2.5 .. 2.5 in halves, plus +-0.75)."""
    ys = [Fraction(k, 2) for k in range(-5, 6)] + [Fraction(3, 4), Fraction(-3, 4)]
    table = {
        "floor": [-3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 0, -1],
        "half_up": [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3, 1, -1],
        "half_down": [-3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 1, -1],
        "half_even": [-2, -2, -2, -1, 0, 0, 0, 1, 2, 2, 2, 1, -1],
        "trunc": [-2, -2, -1, -1, 0, 0, 0, 1, 1, 2, 2, 0, 0],
    }
    assert set(table) == set(ROUNDINGS)
    for mode, want in table.items():
        assert [ref_round(y, mode) for y in ys] == want, mode
    # and round_shift agrees on the same table (acc = 4*y, shift 2)
    acc = np.array([int(y * 4) for y in ys], np.int64)
    for mode, want in table.items():
        assert round_shift(acc, 2, mode).tolist() == want, mode


@st.composite
def accumulators(draw: st.DrawFn) -> tuple[list[int], int]:
    """A shift and int64 accumulators in [-2**40, 2**40], many of them exactly on or next to a tie."""
    shift = draw(st.integers(0, MAX_SHIFT))
    unit = 1 << shift
    half = unit >> 1

    def near_tie(q: int, d: int) -> int:
        return max(-ACC, min(ACC, q * unit + half + d))

    tie = st.builds(near_tie, st.integers(-(ACC >> shift), ACC >> shift), st.sampled_from([-1, 0, 0, 1]))
    exact = st.builds(lambda q: max(-ACC, min(ACC, q * unit)), st.integers(-(ACC >> shift), ACC >> shift))
    any_acc = st.integers(-ACC, ACC)
    edges = st.sampled_from([-ACC, ACC, 0, -1, 1, -half, half, -unit, unit])
    values = draw(st.lists(st.one_of(any_acc, tie, exact, edges), min_size=1, max_size=40))
    return values, shift


@settings(max_examples=400, deadline=None)
@given(accumulators(), st.sampled_from(ROUNDINGS))
def test_round_shift_matches_fraction_reference(case: tuple[list[int], int], mode: str) -> None:
    values, shift = case
    acc = np.array(values, dtype=np.int64)
    got = round_shift(acc, shift, mode)
    assert got.dtype == np.int64 and got.shape == acc.shape
    want = [ref_round(Fraction(a, 1 << shift), mode) for a in values]
    assert got.tolist() == want
    assert np.array_equal(acc, np.array(values, dtype=np.int64)), "round_shift modified its input"


@given(st.lists(st.integers(-ACC, ACC), min_size=1, max_size=20), st.sampled_from(ROUNDINGS))
def test_round_shift_zero_is_identity(values: list[int], mode: str) -> None:
    acc = np.array(values, np.int64)
    got = round_shift(acc, 0, mode)
    assert got.tolist() == values
    got[0] += 1  # a copy, not a view of the input
    assert acc.tolist() == values


@given(accumulators())
def test_floor_is_shift_invariant(case: tuple[list[int], int]) -> None:
    """floor(a/2^s) + k == floor((a + k*2^s)/2^s): what lets hardware round the decay product alone."""
    values, shift = case
    acc = np.array(values, np.int64)
    for k in (-3, 1, 7):
        assert np.array_equal(round_shift(acc, shift) + k, round_shift(acc + (k << shift), shift))


def test_round_shift_rejects_bad_arguments() -> None:
    with pytest.raises(FormatError, match="non-negative shift"):
        round_shift(np.array([1]), -1)
    with pytest.raises(FormatError, match="rounding mode 'nearest' is not one of"):
        round_shift(np.array([1]), 2, "nearest")  # type: ignore[arg-type]
    with pytest.raises(FormatError, match="rounding mode 'up'"):
        check_rounding("up")
    with pytest.raises(FormatError, match="rounding mode 'x'"):
        round_tensor(torch.zeros(1), "x")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- saturate


@st.composite
def clamp_cases(draw: st.DrawFn) -> tuple[list[int], int, int]:
    a = draw(st.integers(-(2**62), 2**62))
    b = draw(st.integers(-(2**62), 2**62))
    lo, hi = min(a, b), max(a, b)
    inside = st.integers(lo, hi)
    around = st.sampled_from([lo - 1, lo, hi, hi + 1])
    values = draw(st.lists(st.one_of(st.integers(-(2**62), 2**62), inside, around), max_size=30))
    return values, lo, hi


@given(clamp_cases())
def test_saturate_clamps_and_counts(case: tuple[list[int], int, int]) -> None:
    values, lo, hi = case
    got, n = saturate(np.array(values, dtype=np.int64), lo, hi)
    assert got.dtype == np.int64
    assert got.tolist() == [min(max(v, lo), hi) for v in values]
    assert n == sum(1 for v in values if v < lo or v > hi)
    assert isinstance(n, int)


def test_saturate_format_range() -> None:
    fmt = Fixed(16, 8)
    got, n = saturate(np.array([-40000, -32768, 0, 32767, 32768, 10**12]), fmt.lo, fmt.hi)
    assert got.tolist() == [-32768, -32768, 0, 32767, 32767, 32767] and n == 3


# ------------------------------------------------------------------------ the tensor twins


@settings(max_examples=300, deadline=None)
@given(accumulators(), st.sampled_from(ROUNDINGS))
def test_round_tensor_equals_round_shift_on_dyadic_float64(case: tuple[list[int], int], mode: str) -> None:
    values, shift = case
    acc = np.array(values, np.int64)
    y = torch.tensor([Fraction(a, 1 << shift) for a in values], dtype=torch.float64)
    assert [Fraction(float(v)) for v in y] == [Fraction(a, 1 << shift) for a in values]  # exact inputs
    got = round_tensor(y, mode)
    assert got.dtype == torch.float64
    assert got.numpy().astype(np.int64).tolist() == round_shift(acc, shift, mode).tolist()


@settings(max_examples=300, deadline=None)
@given(
    accumulators(),
    st.integers(0, 20),
    st.sampled_from(ROUNDINGS),
    st.sampled_from([Fixed(8, 4), Fixed(16, 8), Fixed(24, 16), Fixed(8, 0, signed=False), Fixed(32, 20)]),
)
def test_quantize_tensor_equals_round_shift_then_saturate(
    case: tuple[list[int], int], frac: int, mode: str, fmt: Fixed
) -> None:
    """``v = acc * 2**-(shift + frac)``: quantize_tensor(v, frac) == saturate(round_shift(acc, shift))."""
    values, shift = case
    acc = np.array(values, np.int64)
    v = torch.tensor([float(Fraction(a, 1 << (shift + frac))) for a in values], dtype=torch.float64)
    got = quantize_tensor(v, frac, fmt.lo, fmt.hi, mode)
    assert got.dtype == torch.float64
    codes = got * 2.0**frac
    assert torch.equal(codes, torch.round(codes)), "quantize_tensor left the grid"
    want, _ = saturate(round_shift(acc, shift, mode), fmt.lo, fmt.hi)
    assert codes.numpy().astype(np.int64).tolist() == want.tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**23), 2**23), min_size=1, max_size=30),
    st.integers(0, 12),
    st.sampled_from(ROUNDINGS),
)
def test_round_tensor_float32_below_2_24(values: list[int], shift: int, mode: str) -> None:
    """The QAT forward runs in float32: exact there for codes below 2**24 (QAT_NOTES §4 rule 1)."""
    y = torch.tensor(values, dtype=torch.float32) / 2.0**shift
    got = round_tensor(y, mode)
    assert got.dtype == torch.float32
    want = round_shift(np.array(values, np.int64), shift, mode)
    assert got.numpy().astype(np.int64).tolist() == want.tolist()


# ---------------------------------------------------------------------- the FixedPoint hook


FORMATS = [Fixed(16, 8), Fixed(8, 4), Fixed(12, 10), Fixed(8, 0, signed=False), Fixed(24, 16)]


def _float32s(bound: float) -> st.SearchStrategy[float]:
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_float32s(400.0), min_size=1, max_size=30),
    st.sampled_from(FORMATS),
    st.sampled_from(ROUNDINGS),
)
def test_fixed_point_forward_idempotent_and_straight_through(
    values: list[float], fmt: Fixed, mode: str
) -> None:
    q = FixedPoint(fmt, mode)
    v = torch.tensor(values, dtype=torch.float32, requires_grad=True)
    out = q(v)
    assert out.dtype == torch.float32
    # forward: clamp(round(v * 2**frac), lo, hi) / 2**frac, exactly
    exact = [ref_round(Fraction(float(x)) * 2**fmt.frac, mode) for x in values]
    want = [Fraction(min(max(r, fmt.lo), fmt.hi), 2**fmt.frac) for r in exact]
    assert [Fraction(float(o)) for o in out.detach()] == want
    # idempotent (snnTorch applies it twice per step)
    again = q(out.detach())
    assert torch.equal(again, out.detach())
    # gradient: straight through inside the range, zero where the value was clamped
    upstream = torch.arange(1, len(values) + 1, dtype=torch.float32)
    out.backward(upstream)
    inside = torch.tensor([fmt.lo <= r <= fmt.hi for r in exact])
    assert v.grad is not None
    assert torch.equal(v.grad, torch.where(inside, upstream, torch.zeros_like(upstream)))


def test_fixed_point_module_from_string_and_gradient_at_the_edges() -> None:
    q = FixedPoint("s16.8")
    assert q.fmt == Fixed(16, 8) and q.rounding == "floor"
    assert "s16.8" in repr(q) and "floor" in repr(q)
    top, bottom = 32767 / 256, -32768 / 256
    v = torch.tensor([top, top + 1 / 256, bottom, bottom - 1 / 256, 0.001, -0.001], requires_grad=True)
    out = q(v)
    assert out.tolist() == [top, top, bottom, bottom, 0.0, -1 / 256]
    out.sum().backward()
    assert v.grad is not None and v.grad.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    with pytest.raises(FormatError):
        FixedPoint("s16.8", "nearest")  # type: ignore[arg-type]


def test_fixed_point_is_a_child_module_and_survives_deepcopy() -> None:
    import copy

    import snntorch as snn

    lif = snn.Leaky(beta=0.5, state_quant=FixedPoint(Fixed(16, 8), "half_even"))
    names = [n for n, _ in lif.named_children()]
    assert "state_quant" in names
    clone = copy.deepcopy(lif)
    assert isinstance(clone.state_quant, FixedPoint)
    assert (clone.state_quant.fmt, clone.state_quant.rounding) == (Fixed(16, 8), "half_even")


# ------------------------------------------------------------------------------------ Fixed


@given(st.booleans(), st.integers(1, 62), st.integers(-16, 62))
def test_fixed_parse_round_trips(signed: bool, width: int, frac: int) -> None:
    assume(width >= 2 or not signed)
    fmt = Fixed(width, frac, signed)
    text = str(fmt)
    assert text == f"{'s' if signed else 'u'}{width}.{frac}"
    assert Fixed.parse(text) == fmt
    assert Fixed.parse(f"  {text} ") == fmt
    assert fmt.hi - fmt.lo == 2**width - 1
    assert fmt.lo == (-(2 ** (width - 1)) if signed else 0)
    assert fmt.step == 2.0**-frac


def test_fixed_known_formats() -> None:
    assert Fixed.parse("s16.8") == Fixed(16, 8) and (Fixed(16, 8).lo, Fixed(16, 8).hi) == (-32768, 32767)
    assert Fixed.parse("u8.0") == Fixed(8, 0, signed=False)
    assert (Fixed(8, 0, False).lo, Fixed(8, 0, False).hi) == (0, 255)
    assert str(Fixed(1, 0, signed=False)) == "u1.0"


@pytest.mark.parametrize(
    "text",
    ["16.8", "s16", "x16.8", "s16.8.1", "", "s.8", "S16.8", "s16,8", "s-16.8", "s16.8x", "s 16.8", "s16.+8"],
)
def test_fixed_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(FormatError, match=r"must look like s16\.8 or u8\.0"):
        Fixed.parse(text)


@pytest.mark.parametrize("text", ["s0.0", "s1.0", "u0.0", "s63.8", "u63.0", "s100.4"])
def test_fixed_parse_rejects_bad_widths(text: str) -> None:
    with pytest.raises(
        FormatError, match=r"fixed-point width must be 2\.\.62 bits signed or 1\.\.62 unsigned"
    ):
        Fixed.parse(text)


def test_format_error_is_a_value_error() -> None:
    assert issubclass(FormatError, ValueError)
    with pytest.raises(ValueError):
        Fixed(0, 0)
