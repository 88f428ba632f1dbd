"""Hardware targets: the arithmetic a compiled network must fit.

This module holds the arithmetic part of a target (formats, rounding) that quantization needs. The
built-in ``default`` target is a generic 8-bit-weight, 16-bit-state core.
"""

from __future__ import annotations

import dataclasses

from snncompile.errors import InputError
from snncompile.quant.fixed import Fixed, Rounding, check_rounding


@dataclasses.dataclass(frozen=True)
class Target:
    """The arithmetic of a neuromorphic core.

    ``weight_bits``: signed synapse weights (power-of-two scale per layer, or per output channel when
    ``per_channel``). ``bias_bits``: signed biases on the accumulator grid. ``state``: the membrane and
    synaptic-current format (its ``frac`` is the QAT default; post-training quantization picks the frac
    per layer within ``state.width``). ``decay_frac``: beta and alpha are ``beta_int * 2**-decay_frac``.
    ``input_bits``: signed input currents (spikes need 1). ``rounding``: the state rounding mode.
    """

    name: str
    weight_bits: int = 8
    per_channel: bool = False
    bias_bits: int = 16
    state: Fixed = dataclasses.field(default_factory=lambda: Fixed(16, 8))
    decay_frac: int = 8
    input_bits: int = 8
    rounding: Rounding = "floor"

    def __post_init__(self) -> None:
        check_rounding(self.rounding)
        for name in ("weight_bits", "bias_bits", "input_bits"):
            if not 2 <= getattr(self, name) <= 32:
                raise InputError(f"target {self.name!r}: {name} must be 2..32, got {getattr(self, name)}")
        if not 1 <= self.decay_frac <= 24:
            raise InputError(f"target {self.name!r}: decay_frac must be 1..24, got {self.decay_frac}")


BUILTIN: dict[str, Target] = {"default": Target("default")}


def load_target(target: str | Target) -> Target:
    """A target by name (see :data:`BUILTIN`), or the given Target itself."""
    if isinstance(target, Target):
        return target
    if target not in BUILTIN:
        raise InputError(f"unknown target {target!r}; available: {sorted(BUILTIN)}")
    return BUILTIN[target]
