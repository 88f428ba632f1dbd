"""Passes over the IR, one file each: quantize (float -> fixed point), ranges (static analysis)."""

from snncompile.passes.quantize import QUANTIZE, QuantizeResult, quantize
from snncompile.passes.ranges import NodeRange, RangeReport, analyze_ranges

__all__ = ["QUANTIZE", "NodeRange", "QuantizeResult", "RangeReport", "analyze_ranges", "quantize"]
