"""Fixed-point formats, rounding and saturation: the one place these rules live.

A value in format ``Fixed(width, frac, signed)`` is an integer ``v`` times ``2**-frac``, with ``v`` in
``[-2**(width-1), 2**(width-1) - 1]`` (signed, two's complement) or ``[0, 2**width - 1]`` (unsigned).
It prints as ``s16.8`` / ``u8.8``.

Rounding modes, for a real ``y`` (here ``y = acc / 2**shift``):

* ``floor``: the largest integer <= y (an arithmetic right shift; the default);
* ``half_up``: ``floor(y + 1/2)`` (ties toward +inf);
* ``half_down``: ``ceil(y - 1/2)`` (ties toward -inf; what snnTorch's ``state_quant`` tables do);
* ``half_even``: the nearest integer, ties to the even one (``torch.round``);
* ``trunc``: toward zero.

The integer functions work on int64 numpy arrays (the simulator and the interpreters), the tensor
functions on float tensors holding exact multiples of a power of two (the QAT hooks and the float
interpreter). Both give the same integers whenever the float input is exact.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np

from snncompile.errors import SnnCompileError

if TYPE_CHECKING:
    import torch

Rounding: TypeAlias = Literal["floor", "half_up", "half_down", "half_even", "trunc"]
ROUNDINGS: tuple[Rounding, ...] = ("floor", "half_up", "half_down", "half_even", "trunc")


class FormatError(SnnCompileError, ValueError):
    """A format, rounding mode or shift that makes no sense (raised on construction)."""


@dataclasses.dataclass(frozen=True)
class Fixed:
    """A fixed-point format: ``width`` bits in all, ``frac`` of them after the binary point."""

    width: int
    frac: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.width <= 62 or (self.signed and self.width < 2):
            raise FormatError(
                f"fixed-point width must be 2..62 bits signed or 1..62 unsigned, got {self.width}"
            )

    @property
    def lo(self) -> int:
        """The smallest integer code."""
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        """The largest integer code."""
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def step(self) -> float:
        """The value of one LSB, ``2**-frac``."""
        return 2.0**-self.frac

    def __str__(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.width}.{self.frac}"

    @classmethod
    def parse(cls, text: str) -> Fixed:
        """``"s16.8"`` -> ``Fixed(16, 8)``; ``"u8.0"`` -> ``Fixed(8, 0, signed=False)``."""
        m = re.fullmatch(r"([su])(\d+)\.(-?\d+)", text.strip())
        if not m:
            raise FormatError(f"fixed-point format {text!r} must look like s16.8 or u8.0")
        return cls(int(m.group(2)), int(m.group(3)), m.group(1) == "s")


def check_rounding(mode: str) -> Rounding:
    if mode not in ROUNDINGS:
        raise FormatError(f"rounding mode {mode!r} is not one of {list(ROUNDINGS)}")
    rounding: Rounding = mode
    return rounding


@dataclasses.dataclass(frozen=True)
class RoundTerms:
    """``acc / 2**shift`` rounded by a mode, as integer terms every implementation applies alike::

        q = (acc + add + (add_neg if acc < 0 else 0)) >> shift
        q = q - 1   where tie_even and (acc & mask) == half and q is odd

    ``mask = 2**shift - 1``, ``half = 2**(shift-1)``. floor adds nothing; half_up adds ``half``;
    half_down ``half - 1``; half_even ``half`` with the tie correction; trunc adds ``mask`` to a
    negative ``acc`` (rounding it up). A shift of 0 leaves ``acc`` as it is."""

    shift: int
    add: int
    add_neg: int
    tie_even: int

    @property
    def mask(self) -> int:
        return (1 << self.shift) - 1

    @property
    def half(self) -> int:
        return (1 << self.shift) >> 1


def round_terms(shift: int, mode: Rounding) -> RoundTerms:
    """The :class:`RoundTerms` of ``mode`` for a right shift by ``shift >= 0``."""
    if shift < 0:
        raise FormatError(f"round_shift needs a non-negative shift, got {shift}")
    check_rounding(mode)
    half = (1 << shift) >> 1
    if shift == 0 or mode == "floor":
        return RoundTerms(shift, 0, 0, 0)
    if mode == "trunc":
        return RoundTerms(shift, 0, (1 << shift) - 1, 0)
    return RoundTerms(shift, half - 1 if mode == "half_down" else half, 0, int(mode == "half_even"))


def round_shift(acc: np.ndarray, shift: int, mode: Rounding = "floor") -> np.ndarray:
    """``acc / 2**shift`` rounded to an integer by ``mode`` (int64 in, int64 out); ``shift >= 0``.
    Applies :func:`round_terms`."""
    acc = np.asarray(acc, dtype=np.int64)
    t = round_terms(shift, mode)
    q = (acc + np.int64(t.add) + (acc < 0) * np.int64(t.add_neg)) >> np.int64(shift)
    if t.tie_even:
        q -= ((acc & np.int64(t.mask)) == t.half) & (q & 1 == 1)
    return q


def saturate(v: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, int]:
    """``v`` clamped to ``[lo, hi]`` and the number of values that were clamped."""
    v = np.asarray(v, dtype=np.int64)
    n = int(np.count_nonzero((v < lo) | (v > hi)))
    return np.clip(v, lo, hi), n


def round_tensor(y: torch.Tensor, mode: Rounding) -> torch.Tensor:
    """A float tensor of exact values rounded to integers by ``mode`` (same rules as round_shift)."""
    import torch  # here, not at the top: targets read formats without loading torch

    if mode == "floor":
        return torch.floor(y)
    if mode == "half_up":
        return torch.floor(y + 0.5)
    if mode == "half_down":
        return torch.ceil(y - 0.5)
    if mode == "half_even":
        return torch.round(y)
    if mode == "trunc":
        return torch.trunc(y)
    raise FormatError(f"rounding mode {mode!r} is not one of {list(ROUNDINGS)}")


def quantize_tensor(v: torch.Tensor, frac: int, lo: int, hi: int, mode: Rounding) -> torch.Tensor:
    """``clamp(round(v * 2**frac), lo, hi) / 2**frac`` in v's float dtype (exact for power-of-two scales)."""
    scale = 2.0**frac
    return round_tensor(v * scale, mode).clamp(lo, hi) / scale


def to_fixed(x: np.ndarray, frac: int, mode: Rounding = "half_even") -> np.ndarray:
    """Float values as integer codes on the ``2**-frac`` grid (no saturation)."""
    import torch

    y = torch.tensor(np.asarray(x, dtype=np.float64) * 2.0**frac, dtype=torch.float64)
    return round_tensor(y, mode).numpy().astype(np.int64)


def exact_frac(x: np.ndarray, limit: int = 40) -> int | None:
    """The smallest ``f >= 0`` with ``x * 2**f`` all integers, or None if none up to ``limit`` exists."""
    x = np.asarray(x, dtype=np.float64)
    for f in range(limit + 1):
        y = x * 2.0**f
        if np.all(y == np.round(y)):
            return f
    return None
