"""Frontends: turn trained models into float IR graphs."""

from snncompile.frontend.nir import export_nir, import_nir, write_nir
from snncompile.frontend.snntorch import HANDLERS, trace, trace_forward
from snncompile.frontend.traced import ForwardOutput, TracedForward

__all__ = [
    "HANDLERS",
    "ForwardOutput",
    "TracedForward",
    "export_nir",
    "import_nir",
    "trace",
    "trace_forward",
    "write_nir",
]
