"""Fixed-point formats, QAT hooks and the quantize pass.

The QAT names (torch and brevitas) load on first use, so that ``snncompile.quant.fixed`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from snncompile.quant.fixed import ROUNDINGS, Fixed, Rounding, round_shift, saturate

if TYPE_CHECKING:
    from snncompile.quant.qat import (
        DyadicGrid,
        FixedPoint,
        InputQuant,
        PotWeight,
        QuantLeakyParallel,
        prepare_qat,
    )

_QAT = ("DyadicGrid", "FixedPoint", "InputQuant", "PotWeight", "QuantLeakyParallel", "prepare_qat")

__all__ = [
    "ROUNDINGS",
    "DyadicGrid",
    "Fixed",
    "FixedPoint",
    "InputQuant",
    "PotWeight",
    "QuantLeakyParallel",
    "Rounding",
    "prepare_qat",
    "round_shift",
    "saturate",
]


def __getattr__(name: str) -> Any:
    """Imports snncompile.quant.qat the first time one of its names is read."""
    if name not in _QAT:
        raise AttributeError(f"module 'snncompile.quant' has no attribute {name!r}")
    value = getattr(importlib.import_module("snncompile.quant.qat"), name)
    globals()[name] = value
    return value
