"""Passes over the IR, one file each: fold_batchnorm, fold_scale and fold_input_grid (before quantizing), quantize
(float -> fixed point), ranges (static analysis)."""

from snncompile.passes.fold_batchnorm import fold_batchnorm
from snncompile.passes.fold_input_grid import fold_input_grid
from snncompile.passes.fold_scale import fold_scale
from snncompile.passes.quantize import QUANTIZE, QuantizeResult, quantize
from snncompile.passes.ranges import NodeRange, RangeReport, analyze_ranges

__all__ = [
    "QUANTIZE",
    "NodeRange",
    "QuantizeResult",
    "RangeReport",
    "analyze_ranges",
    "fold_batchnorm",
    "fold_input_grid",
    "fold_scale",
    "quantize",
]
