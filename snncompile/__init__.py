"""snncompile: compiles trained spiking neural networks to bit-exact neuromorphic hardware programs.

The public names are loaded on first use (PEP 562), so that ``import snncompile`` and the light commands
of the command line (``--help``, ``--version``, ``targets``) do not pay for torch, brevitas or numba.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
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


def lazy_names(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A package's ``__getattr__`` that imports the module ``table[name]`` the first time a public
    name is read, and keeps the name in the package."""

    def getattr_(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return getattr_


__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
