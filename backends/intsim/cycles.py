"""The cycle model: clock cycles per time step of the target's time-multiplexed, event-driven core.

Counting rules (per sample, per time step ``t``; the reference RTL core, ``hw_models/rtl/snn_core.sv``,
implements exactly these for the programs it runs, whose layers each fit one core):

1. **Layers.** Every neuron node is a layer. Its synapse ops are the QLinear/QConv2d nodes that reach
   it through pools and flattens (pools and flattens cost no cycles: the spike router applies them),
   plus its own recurrence. A layer of ``N`` neurons takes ``k = ceil(N / neurons_per_core)`` cores;
   core ``c`` holds the contiguous slice ``[ceil(c N / k), ceil((c + 1) N / k))`` of the neurons, and
   each synapse op's ``n_out`` outputs are split into ``k`` slices the same way (slice ``c`` feeds core
   ``c``). A synapse op that does not reach exactly one neuron layer this way (a non-spiking readout
   such as a final QLinear whose output is the graph output) is a **readout layer** of its own: its
   ``n_out`` accumulators take ``k = ceil(n_out / neurons_per_core)`` cores, split as above; it costs
   integration (rule 2) only: no update cycles, no neuron updates, no state accesses (its sums leave
   the core as they are).
2. **Integration.** Each nonzero input value of a synapse op at step ``t`` is one event. An event at
   input ``i`` makes every core ``c`` read the ``len_c(i)`` synapses of row ``i`` that land in its
   slice, ``lanes`` per cycle: ``ceil(len_c(i) / lanes)`` cycles (0 when ``len_c(i) = 0``). Recurrent
   events are the layer's own nonzero spikes of step ``t-1``, read the same way from the recurrent rows
   (dense: N synapses; conv: the positions the kernel reaches; one-to-one: 1, on the neuron's core).
   A QConv2d on a target without a conv engine is stored as unrolled dense rows, so its rows count
   every output (zeros included). ``integration_c`` is the sum of these cycles over every event of
   every synapse op of the layer and of its recurrence.
3. **Update.** Core ``c`` updates its ``n_c`` neurons ``update_lanes`` per cycle through a pipeline of
   ``pipeline_depth`` stages: ``update_c = ceil(n_c / update_lanes) + pipeline_depth`` cycles.
4. **Layer cycles** = ``max over cores c of (integration_c + update_c)``. Each core runs on its own,
   as the RTL core does: it reads all of its events of the step (feed-forward, then recurrent, with no
   wait for the other cores in between) and then updates its neurons; the layer is done when its
   slowest core is. On one core this is the sum of every event's cycles plus the update.
5. **Step cycles** = the sum over layers (``schedule = sequential``: one layer after the other) or
   the maximum over layers (``pipelined``: layers work on consecutive time steps; this is the
   steady-state cycles per step).
6. **Energy** = synaptic operations (synapses read) x ``synaptic_op`` + neuron updates x
   ``neuron_update`` + memory accesses (one per integration cycle of each core, two per neuron update:
   state read and write) x ``memory_access`` (all in pJ).

Latency per step is ``cycles / clock``; a batch runs its samples one after the other.

The row lengths ``len_c(i)`` come from the geometry in ``O(n_in * k)`` time and memory (plus
``O(H * OH * kh + W * OW * kw)`` for a conv), never from an ``n_in x n_out`` connectivity matrix, and
the model is built once per program (:attr:`snncompile.Program.cycle_model`). Counting a run costs two
``(T B, n_in) x (n_in, k)`` matrix products per synapse op.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from snncompile.interpreters.common import Run
from snncompile.ir import QLIF, Graph, QConv2d, QCubaLIF, QLinear
from snncompile.ir.ops import ConvRecurrence, DenseRecurrence, OneToOneRecurrence, Op, Recurrence
from snncompile.targets import Target


def slice_edges(n: int, cores: int) -> np.ndarray:
    """(cores + 1,) the contiguous slices of ``n`` outputs (or neurons) on ``cores`` cores: core ``c``
    holds ``[edges[c], edges[c + 1])``, ``edges[c] = ceil(c n / cores)``."""
    return np.array([-(-n * c // cores) for c in range(cores + 1)], np.int64)


def _window_hits(size: int, out: int, k: int, stride: int, pad: int, dil: int) -> np.ndarray:
    """(size, out) bool: the output positions of a sliding window each input position reaches (input
    ``h`` feeds output ``y`` when ``y * stride - pad + j * dil = h`` for a tap ``j < k``)."""
    hits = np.zeros((size, out), bool)
    h = np.arange(size)
    for j in range(k):
        y, rem = np.divmod(h + pad - j * dil, stride)
        ok = (rem == 0) & (y >= 0) & (y < out)
        hits[h[ok], y[ok]] = True
    return hits


def _conv_row_lengths(
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    cores: int,
) -> np.ndarray:
    """(n_in, cores) row lengths of a conv, from its geometry.

    Input ``(ci, h, w)`` reaches the outputs ``(o, y, x)`` with ``o`` in its group's channels (a
    contiguous range of ``out_channels / groups``), ``y`` in ``Y(h)`` and ``x`` in ``X(w)``: a product
    set. Its members with flat index ``(o OH + y) OW + x`` below an edge ``e = (eo, ey, ex)`` (in
    digits) are: ``|Y(h)| |X(w)|`` per group channel before ``eo``; when ``eo`` is a group channel,
    ``|X(w)|`` per member of ``Y(h)`` before ``ey``; when ``ey`` is in ``Y(h)`` too, the members of
    ``X(w)`` before ``ex``. A core's row length is the difference of these counts at its two edges."""
    c_in, h_in, w_in = in_shape
    out_channels, oh, ow = out_shape
    hy = _window_hits(h_in, oh, kernel[0], stride[0], padding[0], dilation[0])  # (H, OH)
    hx = _window_hits(w_in, ow, kernel[1], stride[1], padding[1], dilation[1])  # (W, OW)
    eo, rest = np.divmod(slice_edges(out_channels * oh * ow, cores), oh * ow)
    ey, ex = np.divmod(rest, ow)  # ey < oh, ex < ow
    below_y = np.cumsum(hy, axis=1) - hy  # (H, OH): members of Y(h) before each row
    below_x = np.cumsum(hx, axis=1) - hx
    ny, nx = hy.sum(axis=1), hx.sum(axis=1)  # (H,), (W,)
    per_group = out_channels // groups
    first = (np.arange(c_in) // (c_in // groups)) * per_group  # (C,): the group's first output channel
    channels_before = np.clip(eo[None, :] - first[:, None], 0, per_group)  # (C, E)
    in_group = (eo[None, :] >= first[:, None]) & (eo[None, :] < first[:, None] + per_group)  # (C, E)
    within = below_y[:, ey][:, None, :] * nx[None, :, None] + hy[:, ey][:, None, :] * below_x[:, ex][None]
    count = (
        channels_before[:, None, None, :] * (ny[:, None] * nx[None, :])[None, :, :, None]
        + in_group[:, None, None, :] * within[None]
    )  # (C, H, W, E)
    return np.diff(count.reshape(c_in * h_in * w_in, -1), axis=1)


def _dense_row_lengths(n_in: int, n_out: int, cores: int) -> np.ndarray:
    """(n_in, cores): every row reaches every output."""
    return np.broadcast_to(np.diff(slice_edges(n_out, cores)), (n_in, cores)).copy()


def row_lengths(op: Op | Recurrence, in_shape: tuple[int, ...], cores: int, conv_engine: bool) -> np.ndarray:
    """(n_in, cores): how many of row ``i``'s synapses land in each core's slice of the outputs (the
    structure of the synapse rows; a QConv2d without a conv engine is stored as unrolled dense rows:
    every output). ``in_shape`` is the op's input shape (for a recurrence, the neurons' shape)."""
    n_in = math.prod(in_shape)
    if isinstance(op, QLinear | DenseRecurrence):
        return _dense_row_lengths(n_in, int(op.weight.shape[0]), cores)
    if isinstance(op, OneToOneRecurrence):
        out = np.zeros((n_in, cores), np.int64)
        owner = np.searchsorted(slice_edges(n_in, cores), np.arange(n_in), side="right") - 1
        out[np.arange(n_in), owner] = 1
        return out
    if isinstance(op, ConvRecurrence):
        kernel = (int(op.weight.shape[2]), int(op.weight.shape[3]))
        return _conv_row_lengths(in_shape, in_shape, kernel, (1, 1), op.padding, (1, 1), 1, cores)
    assert isinstance(op, QConv2d), f"{op.kind} has no synapse rows"
    out_shape = op.out_shape([in_shape])
    if not conv_engine:
        return _dense_row_lengths(n_in, math.prod(out_shape), cores)
    kernel = (int(op.weight.shape[2]), int(op.weight.shape[3]))
    return _conv_row_lengths(
        in_shape, out_shape, kernel, op.stride, op.padding, op.dilation, op.groups, cores
    )


@dataclasses.dataclass(frozen=True)
class _Rows:
    """The synapse rows one event node drives: cycles per row on each core (n_in, k) and synapses per
    row (n_in,), as float64 (exact: every count stays far below 2**53) for BLAS products."""

    node: str
    cycles: np.ndarray
    synapses: np.ndarray

    @classmethod
    def of(cls, node: str, lengths: np.ndarray, lanes: int) -> _Rows:
        cycles = -(-lengths // lanes)
        return cls(node, cycles.astype(np.float64), lengths.sum(axis=1).astype(np.float64))

    def integrate(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cycles of each core (T, B, k) and synapses read (T, B) for the events (nonzero entries) of
        ``values`` (T, B, ...)."""
        events = (values.reshape(values.shape[0], values.shape[1], -1) != 0).astype(np.float64)
        return np.rint(events @ self.cycles).astype(np.int64), np.rint(events @ self.synapses).astype(
            np.int64
        )


@dataclasses.dataclass(frozen=True)
class _Layer:
    """A neuron layer (``neurons`` > 0) or a readout layer (``neurons`` = 0, ``update`` zeros)."""

    name: str
    sources: tuple[_Rows, ...]  # the synapse ops, by the node whose values are their events
    recurrent: _Rows | None  # the recurrence (events: this layer's spikes of the previous step)
    update: np.ndarray  # (k,) update cycles of each core
    neurons: int


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
    """The cycle model of ``graph`` on ``target`` (see the module docstring for the rules).

    ``layers`` holds the neuron layers and the readout layers in topological order."""

    def __init__(self, graph: Graph, target: Target) -> None:
        self.graph, self.target = graph, target
        shapes = graph.shapes()
        per_core, lanes = target.cores.neurons_per_core, target.micro.lanes
        feeds: dict[str, list[str]] = {n: [] for n in graph.neurons()}
        readouts: set[str] = set()
        for n in graph.topo_order():
            if isinstance(graph.op(n), QLinear | QConv2d):
                neuron = self._downstream_neuron(n)
                if neuron is None:
                    readouts.add(n)
                else:
                    feeds[neuron].append(n)

        def rows(synapse: str, k: int) -> _Rows:
            src = graph.args(synapse)[0]
            lengths = row_lengths(graph.op(synapse), shapes[src], k, target.limits.conv_engine)
            return _Rows.of(src, lengths, lanes)

        self.layers: list[_Layer] = []
        for n in graph.topo_order():
            op = graph.op(n)
            size = math.prod(shapes[n])
            k = math.ceil(size / per_core)
            if n in readouts:
                self.layers.append(_Layer(n, (rows(n, k),), None, np.zeros(k, np.int64), 0))
            elif isinstance(op, QLIF | QCubaLIF):
                rec = None
                if op.recurrence is not None:
                    rec = _Rows.of(n, row_lengths(op.recurrence, shapes[n], k, True), lanes)
                update = (
                    -(-np.diff(slice_edges(size, k)) // target.micro.update_lanes)
                    + target.micro.pipeline_depth
                )
                self.layers.append(_Layer(n, tuple(rows(s, k) for s in feeds[n]), rec, update, size))

    @property
    def event_nodes(self) -> list[str]:
        """The nodes whose outputs are synapse events (keep them when simulating for :meth:`count`)."""
        return sorted({rows.node for layer in self.layers for rows in layer.sources})

    def _downstream_neuron(self, node: str) -> str | None:
        """The neuron layer a synapse op feeds (through pools and flattens), or None (a readout)."""
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

    def count(self, run: Run, values: dict[str, np.ndarray]) -> CycleReport:
        """Cycles of a run. ``values`` holds the output (T, B, ...) of every node in :attr:`event_nodes`;
        recurrent events are read from ``run.spikes``."""
        t_steps, batch = run.output.shape[:2]
        energy = self.target.energy
        layer_cycles: dict[str, np.ndarray] = {}
        synops = np.zeros((t_steps, batch), np.int64)
        accesses = np.zeros((t_steps, batch), np.int64)
        neurons = 0
        for layer in self.layers:
            per_core = np.zeros((t_steps, batch, len(layer.update)), np.int64)
            events = [(rows, values[rows.node]) for rows in layer.sources]
            if layer.recurrent is not None:
                spikes = run.spikes[layer.name]
                events.append((layer.recurrent, np.concatenate([np.zeros_like(spikes[:1]), spikes[:-1]])))
            for rows, vals in events:
                cycles, synapses = rows.integrate(vals)
                per_core += cycles
                synops += synapses
            accesses += per_core.sum(axis=2) + 2 * layer.neurons
            layer_cycles[layer.name] = (per_core + layer.update).max(axis=2)
            neurons += layer.neurons
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
