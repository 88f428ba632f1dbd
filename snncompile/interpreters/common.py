"""What every interpreter shares: input checking and the result object."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from snncompile.errors import GraphError, InputError
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


def kept_nodes(graph: Graph) -> tuple[str, ...]:
    """The nodes whose values a run keeps in ``Run.values`` so that every output can be read: the
    stateless nodes (readouts, pools) that an output node reads."""
    neurons = set(graph.neurons())
    sources = [graph.output_source(o) for o in graph.outputs]
    return tuple(dict.fromkeys(node for node, state in sources if state is None and node not in neurons))


def output_value(
    graph: Graph,
    output: str,
    spikes: Mapping[str, np.ndarray],
    states: Mapping[str, Mapping[str, np.ndarray]],
    values: Mapping[str, np.ndarray],
) -> np.ndarray:
    """The value of output node ``output``: the state it names, or its input node's spikes or values."""
    node, state = graph.output_source(output)
    if state is not None:
        if state not in states.get(node, {}):
            raise GraphError(
                f"output {output!r} reads the {state} of {node!r}, which this run did not record"
            )
        return states[node][state]
    if node in spikes:
        return spikes[node]
    if node not in values:
        raise GraphError(f"output {output!r} reads node {node!r}, whose values this run did not keep")
    return values[node]


class Outputs(Mapping[str, np.ndarray]):
    """Every output of a run, in position order: ``outputs["output_1"]`` by the output node's name,
    ``outputs[1]`` by position; ``outputs[0]`` is the main output (``Run.output``)."""

    def __init__(self, items: dict[str, np.ndarray]) -> None:
        self._items = items
        self._names = tuple(items)

    def __getitem__(self, key: str | int) -> np.ndarray:
        if isinstance(key, int):
            if not -len(self._names) <= key < len(self._names):
                raise IndexError(
                    f"output position {key} out of range: the run has {len(self._names)} outputs"
                )
            return self._items[self._names[key]]
        if key not in self._items:
            raise KeyError(f"no output named {key!r}; outputs: {list(self._names)}")
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(v.shape)}" for n, v in self._items.items())
        return f"Outputs({shapes})"


@dataclasses.dataclass(frozen=True)
class Run:
    """The result of running a graph over ``x[T, B, ...]``.

    ``spikes[node]`` holds every neuron node's spikes (graded values where the neuron has a graded-spike
    factor) and ``states[node]`` its state variables (``"mem"``, and ``"syn"`` for CubaLIF) after each
    step, all of shape (T, B, *node_shape); ``values[node]`` the values of kept stateless nodes
    (:func:`kept_nodes`: what outputs read, and what a caller asked to keep). ``output`` is the value of
    the graph's first output, ``outputs`` every output by name and position.
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

    @property
    def outputs(self) -> Outputs:
        values = {self.graph.output_name: self.output, **self.values}
        return Outputs(
            {o: output_value(self.graph, o, self.spikes, self.states, values) for o in self.graph.outputs}
        )
