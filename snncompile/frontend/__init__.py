"""Frontends: turn trained models into float IR graphs."""

from snncompile.frontend.nir import export_nir, import_nir, write_nir
from snncompile.frontend.snntorch import HANDLERS, trace

__all__ = ["HANDLERS", "export_nir", "import_nir", "trace", "write_nir"]
