"""Fixed-point formats, QAT hooks and the quantize pass."""

from snncompile.quant.fixed import ROUNDINGS, Fixed, Rounding, round_shift, saturate
from snncompile.quant.qat import DyadicGrid, FixedPoint, PotWeight, QuantLeakyParallel, prepare_qat

__all__ = [
    "ROUNDINGS",
    "DyadicGrid",
    "Fixed",
    "FixedPoint",
    "PotWeight",
    "QuantLeakyParallel",
    "Rounding",
    "prepare_qat",
    "round_shift",
    "saturate",
]
