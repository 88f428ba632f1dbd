"""The one exception hierarchy of snncompile, and its one warning.

Every error a user can provoke derives from :class:`SnnCompileError`. Messages name the module, node or
field, what was found, what was expected and the valid choices; the CLI prints them as one line.
"""

from __future__ import annotations


class SnnCompileError(Exception):
    """Base of every error snncompile raises on bad input."""


class UnsupportedModuleError(SnnCompileError):
    """A module, function or option of the model that snncompile cannot compile (refused, never skipped)."""


class InconsistentModelError(SnnCompileError):
    """A model whose stored attributes disagree with what its forward pass really computes."""


class TraceError(SnnCompileError):
    """The model could not be traced into a graph (torch.fx failure, wrong example input)."""


class GraphError(SnnCompileError):
    """A graph that breaks an IR invariant (shape, arity, parameter, cycle)."""


class SerializationError(SnnCompileError):
    """A graph file that cannot be read: bad JSON, unknown version, unknown op or field."""


class InputError(SnnCompileError):
    """Bad user input to a command: a missing file, a wrong array shape or dtype, a bad checkpoint."""


class QuantizationError(SnnCompileError):
    """A model that cannot be put on the target's fixed-point formats as asked."""


class ConventionWarning(UserWarning):
    """A NIR import whose neurons compute otherwise than the convention's producer in some regime (e.g.
    several spikes in one step): the graph is imported, and the message names the difference, where it
    shows and the NIR nodes concerned. The CLI prints each as a ``note:`` line."""
