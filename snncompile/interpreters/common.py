"""What every interpreter shares: input checking and the result object."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from snncompile.errors import InputError
from snncompile.ir import Graph, Shape


def as_input(x: Any, shape: Shape) -> np.ndarray:
    """``x[T, B, *shape]`` as float32, refusing anything that would change its values.

    Spikes may come as bool or any integer dtype, currents as float32; float64 and wide integers are
    accepted only when every value is exactly a float32.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise InputError(f"input must be a numpy array or torch tensor, got {type(x).__name__}")
    expected = f"(T, B, {', '.join(str(d) for d in shape)})"
    if x.ndim != len(shape) + 2 or tuple(x.shape[2:]) != tuple(shape):
        raise InputError(f"input has shape {x.shape}; expected {expected} (time first, then batch)")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"input has shape {x.shape}: no time steps or no samples")
    if x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32, copy=False)
        if out is not x and not np.array_equal(out.astype(x.dtype), x, equal_nan=x.dtype.kind == "f"):
            raise InputError(f"input of dtype {x.dtype} holds values that float32 cannot represent exactly")
        if not np.all(np.isfinite(out)):
            raise InputError("input holds NaN or infinite values")
        return np.ascontiguousarray(out)
    raise InputError(f"input dtype {x.dtype} is not supported; use bool/uint8 spikes or float32 currents")


@dataclasses.dataclass(frozen=True)
class Run:
    """The result of running a graph over ``x[T, B, ...]``.

    ``spikes[node]`` holds every neuron node's spikes (graded values where the neuron has a graded-spike
    factor) and ``states[node]`` its state variables (``"mem"``, and ``"syn"`` for CubaLIF) after each
    step, all of shape (T, B, *node_shape). ``output`` is the value of the graph's output node.
    """

    graph: Graph
    output: np.ndarray
    spikes: dict[str, np.ndarray]
    states: dict[str, dict[str, np.ndarray]]
    saturations: dict[str, int] = dataclasses.field(default_factory=dict)
    values: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def output_name(self) -> str:
        return self.graph.output_name
