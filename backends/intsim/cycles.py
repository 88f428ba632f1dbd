"""The cycle model: clock cycles per time step of the target's time-multiplexed, event-driven core.

Counting rules (per sample, per time step ``t``; the RTL core implements exactly these):

1. **Layers.** Every neuron node is a layer. Its synapse ops are the QLinear/QConv2d nodes that reach
   it through pools and flattens (pools and flattens cost no cycles: the spike router applies them),
   plus its own recurrence. The layer's neurons are split into ``k = ceil(N / neurons_per_core)``
   cores holding contiguous slices; a synapse op's outputs are split into ``k`` contiguous slices too.
2. **Integration.** Each nonzero input value of a synapse op at step ``t`` is one event. An event at
   input ``i`` makes every core ``c`` read the ``len_c(i)`` synapses of row ``i`` that land in its
   slice, ``lanes`` per cycle: ``ceil(len_c(i) / lanes)`` cycles (0 when ``len_c(i) = 0``). Recurrent
   events are the layer's own nonzero spikes of step ``t-1``, read the same way from the recurrent rows
   (dense: N synapses; conv: the positions the kernel reaches; one-to-one: 1). A QConv2d on a target
   without a conv engine is stored as unrolled dense rows, so its rows count every output (zeros included).
3. **Update.** Each core updates its ``n_c`` neurons ``update_lanes`` per cycle through a pipeline of
   ``pipeline_depth`` stages: ``ceil(n_c / update_lanes) + pipeline_depth`` cycles.
4. **Layer cycles** = ``max over cores (integration_c + update_c)`` (cores work in parallel).
5. **Step cycles** = the sum over layers (``schedule = sequential``: one layer after the other) or
   the maximum over layers (``pipelined``: layers work on consecutive time steps; this is the
   steady-state cycles per step).
6. **Energy** = synaptic operations (synapses read) x ``synaptic_op`` + neuron updates x
   ``neuron_update`` + memory accesses (one per integration cycle, two per neuron update: state read
   and write) x ``memory_access`` (all in pJ).

Latency per step is ``cycles / clock``; a batch runs its samples one after the other.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from snncompile.interpreters.common import Run
from snncompile.interpreters.integer import conv2d_int
from snncompile.ir import QLIF, Graph, QConv2d, QCubaLIF, QLinear
from snncompile.ir.ops import ConvRecurrence, DenseRecurrence, OneToOneRecurrence, Op, Recurrence
from snncompile.targets import Target


def _row_lengths(connect: np.ndarray, cores: int) -> np.ndarray:
    """(n_in, cores): how many of row i's synapses land in each core's slice of the outputs."""
    n_out = connect.shape[1]
    edges = [min(n_out, math.ceil(n_out * c / cores)) for c in range(cores + 1)]
    return np.stack([connect[:, a:b].sum(axis=1) for a, b in itertools.pairwise(edges)], axis=1)


def _connectivity(op: Op | Recurrence, in_shape: tuple[int, ...], conv_engine: bool = True) -> np.ndarray:
    """(n_in, n_out) 0/1: which outputs each input reaches (the structure of the synapse rows); a QConv2d
    without a conv engine is stored as unrolled dense rows: every output."""
    if isinstance(op, QLinear | DenseRecurrence):
        return np.ones((op.weight.shape[1], op.weight.shape[0]), np.int64)
    if isinstance(op, OneToOneRecurrence):
        return np.eye(math.prod(in_shape), dtype=np.int64)
    assert isinstance(op, QConv2d | ConvRecurrence)
    n_in = math.prod(in_shape)
    eye = np.eye(n_in, dtype=np.int64).reshape(n_in, *in_shape)
    ones = np.ones(op.weight.shape, np.int64)
    if isinstance(op, QConv2d):
        out = conv2d_int(eye, ones, None, op.stride, op.padding, op.dilation, op.groups)
        if not conv_engine:
            return np.ones((n_in, out.reshape(n_in, -1).shape[1]), np.int64)
    else:
        assert isinstance(op, ConvRecurrence)
        out = conv2d_int(eye, ones, None, (1, 1), op.padding, (1, 1), 1)
    return (out.reshape(n_in, -1) > 0).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class _Layer:
    name: str
    sources: tuple[tuple[str, np.ndarray], ...]  # (node whose values are the events, row lengths (n_in, k))
    recurrent: np.ndarray | None  # row lengths of the recurrence (N, k)
    update: int  # update cycles (the slowest core)


@dataclasses.dataclass(frozen=True)
class CycleReport:
    """Per-layer cycles ``layer_cycles[name]`` (T, B), step totals ``cycles`` (T, B), synaptic operations
    and memory accesses (T, B), energy per sample in joules, and the target's clock."""

    layer_cycles: dict[str, np.ndarray]
    cycles: np.ndarray
    synaptic_ops: np.ndarray
    memory_accesses: np.ndarray
    neuron_updates: int
    energy_j: np.ndarray
    clock_hz: float

    def summary(self) -> dict[str, float]:
        per_sample = self.cycles.sum(axis=0)
        return {
            "cycles_per_sample": float(per_sample.mean()),
            "cycles_per_step_max": float(self.cycles.max(initial=0)),
            "latency_per_sample_s": float(per_sample.mean() / self.clock_hz),
            "throughput_samples_per_s": float(self.clock_hz / max(per_sample.mean(), 1.0)),
            "energy_per_sample_j": float(self.energy_j.mean()),
            "synaptic_ops_per_sample": float(self.synaptic_ops.sum(axis=0).mean()),
        }


class CycleModel:
    """The cycle model of ``graph`` on ``target`` (see the module docstring for the rules)."""

    def __init__(self, graph: Graph, target: Target) -> None:
        self.graph, self.target = graph, target
        shapes = graph.shapes()
        per_core = target.cores.neurons_per_core
        lanes, ulanes, depth = target.micro.lanes, target.micro.update_lanes, target.micro.pipeline_depth
        feeds: dict[str, list[str]] = {n: [] for n in graph.neurons()}
        for n in graph.topo_order():
            if isinstance(graph.op(n), QLinear | QConv2d):
                neuron = self._downstream_neuron(n)
                if neuron is not None:
                    feeds[neuron].append(n)
        self.layers: list[_Layer] = []
        for n in graph.neurons():
            op = graph.op(n)
            assert isinstance(op, QLIF | QCubaLIF)
            size = math.prod(shapes[n])
            k = math.ceil(size / per_core)
            sources = tuple(
                (
                    graph.args(s)[0],
                    _row_lengths(
                        _connectivity(graph.op(s), shapes[graph.args(s)[0]], target.limits.conv_engine), k
                    ),
                )
                for s in feeds[n]
            )
            rec = None if op.recurrence is None else _row_lengths(_connectivity(op.recurrence, shapes[n]), k)
            slice_size = math.ceil(size / k)
            update = math.ceil(slice_size / ulanes) + depth
            self.layers.append(_Layer(n, sources, rec, update))
        self.lanes = lanes

    @property
    def event_nodes(self) -> list[str]:
        """The nodes whose outputs are synapse events (keep them when simulating for :meth:`count`)."""
        return sorted({src for layer in self.layers for src, _ in layer.sources})

    def _downstream_neuron(self, node: str) -> str | None:
        """The neuron layer a synapse op feeds (through pools and flattens)."""
        current = node
        while True:
            users = self.graph.users(current)
            if len(users) != 1:
                return None
            current = users[0]
            if isinstance(self.graph.op(current), QLIF | QCubaLIF):
                return current
            if isinstance(self.graph.op(current), QLinear | QConv2d):
                return None

    def _integrate(
        self, values: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cycles (T, B) of the slowest core, synapses read and accesses for events ``values`` (T, B, n)."""
        events = (values.reshape(values.shape[0], values.shape[1], -1) != 0).astype(np.int64)
        cycles_per_core = events @ -(-lengths // self.lanes)  # (T, B, k)
        synops = events @ lengths.sum(axis=1)
        return cycles_per_core.max(axis=2), synops, cycles_per_core.sum(axis=2)

    def count(self, run: Run, values: dict[str, np.ndarray]) -> CycleReport:
        """Cycles of a run. ``values`` holds the output of every synapse op's input node (the events)."""
        t_steps, batch = run.output.shape[:2]
        energy = self.target.energy
        layer_cycles: dict[str, np.ndarray] = {}
        synops = np.zeros((t_steps, batch), np.int64)
        accesses = np.zeros((t_steps, batch), np.int64)
        neurons = 0
        shapes = self.graph.shapes()
        for layer in self.layers:
            cyc = np.full((t_steps, batch), layer.update, np.int64)
            integ = np.zeros((t_steps, batch), np.int64)
            for src, lengths in layer.sources:
                c, s, a = self._integrate(values[src], lengths)
                integ += c
                synops += s
                accesses += a
            if layer.recurrent is not None:
                previous = np.concatenate(
                    [np.zeros_like(run.spikes[layer.name][:1]), run.spikes[layer.name][:-1]]
                )
                c, s, a = self._integrate(previous, layer.recurrent)
                integ += c
                synops += s
                accesses += a
            layer_cycles[layer.name] = cyc + integ
            n = math.prod(shapes[layer.name])
            neurons += n
            accesses += 2 * n
        stack = (
            np.stack(list(layer_cycles.values())) if layer_cycles else np.zeros((1, t_steps, batch), np.int64)
        )
        cycles = stack.sum(axis=0) if self.target.micro.schedule == "sequential" else stack.max(axis=0)
        pj = synops * energy.synaptic_op + neurons * energy.neuron_update + accesses * energy.memory_access
        return CycleReport(
            layer_cycles,
            cycles,
            synops,
            accesses,
            neurons,
            pj.sum(axis=0) * 1e-12,
            self.target.micro.clock_mhz * 1e6,
        )
