"""snncompile: compiles trained spiking neural networks to bit-exact neuromorphic hardware programs.

The public names are loaded on first use (PEP 562), so that ``import snncompile`` and the light commands
of the command line (``--help``, ``--version``, ``targets``) do not pay for torch, brevitas or numba.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from snncompile._version import __version__
from snncompile.errors import (
    ConventionWarning,
    GraphError,
    InconsistentModelError,
    InputError,
    QuantizationError,
    SerializationError,
    SnnCompileError,
    TraceError,
    UnsupportedModuleError,
)

if TYPE_CHECKING:
    from snncompile.compiler import (
        Program,
        Simulation,
        check_fit,
        compile,
        compile_graph,
        trace_sequence,
    )
    from snncompile.frontend import TracedForward, export_nir, import_nir, trace, trace_forward, write_nir
    from snncompile.interpreters import Run, run_float, run_integer
    from snncompile.ir import Graph, load_graph, save_graph
    from snncompile.targets import Target, load_target

# each lazily loaded public name -> the module that defines it
_LAZY = {
    **dict.fromkeys(
        ["Program", "Simulation", "check_fit", "compile", "compile_graph", "trace_sequence"],
        "snncompile.compiler",
    ),
    **dict.fromkeys(
        ["TracedForward", "export_nir", "import_nir", "trace", "trace_forward", "write_nir"],
        "snncompile.frontend",
    ),
    **dict.fromkeys(["Run", "run_float", "run_integer"], "snncompile.interpreters"),
    **dict.fromkeys(["Graph", "load_graph", "save_graph"], "snncompile.ir"),
    **dict.fromkeys(["Target", "load_target"], "snncompile.targets"),
}

__all__ = [
    "ConventionWarning",
    "Graph",
    "GraphError",
    "InconsistentModelError",
    "InputError",
    "Program",
    "QuantizationError",
    "Run",
    "SerializationError",
    "Simulation",
    "SnnCompileError",
    "Target",
    "TraceError",
    "TracedForward",
    "UnsupportedModuleError",
    "__version__",
    "check_fit",
    "compile",
    "compile_graph",
    "export_nir",
    "import_nir",
    "load_graph",
    "load_target",
    "run_float",
    "run_integer",
    "save_graph",
    "trace",
    "trace_forward",
    "trace_sequence",
    "write_nir",
]


def __getattr__(name: str) -> Any:
    """Imports the module that defines a public name the first time the name is read."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'snncompile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
