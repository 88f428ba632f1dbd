"""snncompile: compiles trained spiking neural networks to bit-exact neuromorphic hardware programs."""

from snncompile._version import __version__
from snncompile.compiler import Program, Simulation, compile, compile_graph
from snncompile.errors import (
    GraphError,
    InconsistentModelError,
    InputError,
    QuantizationError,
    SerializationError,
    SnnCompileError,
    TraceError,
    UnsupportedModuleError,
)
from snncompile.frontend import export_nir, import_nir, trace, write_nir
from snncompile.interpreters import Run, run_float, run_integer
from snncompile.ir import Graph, load_graph, save_graph
from snncompile.targets import Target, load_target

__all__ = [
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
    "UnsupportedModuleError",
    "__version__",
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
    "write_nir",
]
