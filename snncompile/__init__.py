"""snncompile: compiles trained spiking neural networks to bit-exact neuromorphic hardware programs."""

from snncompile.errors import (
    GraphError,
    InconsistentModelError,
    InputError,
    SerializationError,
    SnnCompileError,
    TraceError,
    UnsupportedModuleError,
)
from snncompile.frontend import trace
from snncompile.interpreters import Run, run_float
from snncompile.ir import Graph, load_graph, save_graph

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "GraphError",
    "InconsistentModelError",
    "InputError",
    "Run",
    "SerializationError",
    "SnnCompileError",
    "TraceError",
    "UnsupportedModuleError",
    "__version__",
    "load_graph",
    "run_float",
    "save_graph",
    "trace",
]
