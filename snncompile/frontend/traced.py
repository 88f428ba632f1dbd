"""What a traced ``forward`` computes, in terms of a run of its graph.

:func:`snncompile.trace` returns the graph only. :func:`snncompile.frontend.snntorch.trace_forward` also
returns a :class:`TracedForward`, which says how forward's argument becomes the per-step input
``x[T, B, ...]`` that ``run_float`` (and a compiled program's ``simulate``) take, and where each value
forward returns lies in the run::

    traced = trace_forward(net, x)
    run = snncompile.run_float(traced.graph, traced.sequence(x))
    spk_rec, mem_rec = traced.returned(run)        # == net(x), bit for bit
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch

from snncompile.interpreters.common import Run
from snncompile.ir import Graph

InputMode = Literal["step", "static", "sequence"]


@dataclasses.dataclass(frozen=True)
class ForwardOutput:
    """One value forward returns: output node ``output`` of the graph, which reads ``var`` of node
    ``node``, at one step or at all of them.

    ``var`` is ``"spk"`` (a neuron's spikes), a state (``"mem"``, ``"syn"``) or ``"value"`` (the values
    of a layer that is not a neuron, e.g. a linear readout). ``step`` is None for a per-step recording
    stacked over time on axis ``axis`` (``torch.stack(rec, dim=0)``, shaped (T, B, ...), or ``dim=1``,
    shaped (B, T, ...)), else the step forward returns (-1: the last), shaped (B, ...).
    """

    output: str
    node: str
    var: str
    step: int | None
    axis: int

    def of(self, run: Run) -> np.ndarray:
        values = run.outputs[self.output]  # (T, B, ...)
        if self.step is not None:
            return values[self.step]
        return values if self.axis == 0 else np.swapaxes(values, 0, 1)


@dataclasses.dataclass(frozen=True)
class TracedForward:
    """A traced module: its one-step graph and how its forward maps onto a run of the graph.

    ``input_mode``:

    * ``"step"``: forward is one time step (init_hidden=True neurons, or neurons called with their
      input alone, keeping their state between calls). ``forward(x)`` on a fresh module is step 0 of
      ``run_float(graph, x[None])``; calling it on ``x[0], x[1], ...`` gives the steps of
      ``run_float(graph, x)``.
    * ``"static"``: forward runs its own time loop of ``steps`` steps and injects its argument
      ``x[B, ...]`` at every step; the graph's input is ``x`` repeated ``steps`` times.
    * ``"sequence"``: forward takes ``x[T, B, ...]`` and reads ``x[step]`` (or runs the whole sequence in
      one call, as LeakyParallel does: then ``steps`` is None); the graph's input is ``x`` itself. With
      ``time_axis`` 1 forward takes a batch-first ``x[B, T, ...]`` and reads ``x[:, step]``; the graph's
      input is ``x`` with its first two axes swapped.

    ``outputs`` lists what forward returns, position by position; ``single`` says it returns one tensor
    rather than a tuple; ``time_axis`` is the axis of forward's argument that is time (0 unless a
    batch-first sequence).
    """

    graph: Graph
    input_mode: InputMode
    steps: int | None
    outputs: tuple[ForwardOutput, ...]
    single: bool
    time_axis: int

    @classmethod
    def of_graph(cls, graph: Graph) -> TracedForward:
        """A graph without a module (imported from NIR, loaded): one step per call, one value per output."""
        outputs = []
        for o in graph.outputs:
            node, state = graph.output_source(o)
            var = state or ("spk" if node in graph.neurons() else "value")
            outputs.append(ForwardOutput(o, node, var, None if graph.whole_sequence else -1, 0))
        mode: InputMode = "sequence" if graph.whole_sequence else "step"
        return cls(graph, mode, None if graph.whole_sequence else 1, tuple(outputs), len(outputs) == 1, 0)

    def sequence(self, x: Any) -> np.ndarray:
        """The per-step input ``x[T, B, ...]`` of the run that reproduces ``forward(x)``."""
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if self.input_mode == "sequence":
            return a if self.time_axis == 0 else np.ascontiguousarray(np.swapaxes(a, 0, 1))
        steps = 1 if self.input_mode == "step" else int(self.steps or 1)
        return np.repeat(a[None], steps, axis=0)

    def returned(self, run: Run) -> np.ndarray | tuple[np.ndarray, ...]:
        """What forward returns, read from ``run`` (float run: equal values; integer run: their codes)."""
        values = tuple(o.of(run) for o in self.outputs)
        return values[0] if self.single else values
