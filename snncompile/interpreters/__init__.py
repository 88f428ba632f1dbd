"""Interpreters of the IR: each one a dispatch table keyed by op type."""

from snncompile.interpreters.common import Run, as_input
from snncompile.interpreters.float32 import run_float
from snncompile.interpreters.integer import run_integer

__all__ = ["Run", "as_input", "run_float", "run_integer"]
