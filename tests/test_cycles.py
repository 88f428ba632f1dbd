"""The cycle model (``backends/intsim/cycles.py``): analytic row lengths against torch, whole-run counts
against a brute-force reading of the counting rules, and hand-computed traces.

* Row lengths: for random conv geometries (stride, padding, dilation, groups, kernel shapes), conv
  recurrences, linear layers and one-to-one recurrences, on any number of cores (more cores than
  outputs included), the per-core row lengths equal those read off torch itself: the layer (all
  weights 1) applied to every one-hot input gives the outputs each input reaches; core ``c`` holds
  outputs ``[ceil(c n / k), ceil((c + 1) n / k))``.
* Whole runs: random Input -> [pool] -> conv -> [pool] -> LIF (no / one-to-one / conv recurrence) ->
  flatten -> linear -> LIF or a non-spiking readout graphs, counted event by event from the rules
  (module docstring of ``cycles.py``) with the torch connectivity, equal ``CycleModel.count``.
* Hand traces: an imbalanced two-core conv layer with a one-to-one recurrence and a linear readout,
  where the max over cores of (integration + update) differs from the sum of per-core maxima.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from snncompile.backends.intsim import CycleModel, simulate
from snncompile.backends.intsim.cycles import row_lengths

from snncompile.errors import GraphError
from snncompile.ir import (
    QLIF,
    ConvRecurrence,
    FixedQuant,
    Flatten,
    Graph,
    Input,
    MaxPool2d,
    OneToOneRecurrence,
    Output,
    QConv2d,
    QLinear,
    SumPool2d,
)
from snncompile.ir.ops import DenseRecurrence, Recurrence
from snncompile.targets import Cores, Limits, Microarchitecture, Target

# ------------------------------------------------------------------------------ the torch oracle


def reach(op: QLinear | QConv2d | Recurrence, in_shape: tuple[int, ...]) -> np.ndarray:
    """(n_in, n_out) bool from torch: which outputs each one-hot input reaches through ``op`` with every
    weight set to 1."""
    n_in = math.prod(in_shape)
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
    ones = torch.ones(op.weight.shape, dtype=torch.float64)
    if isinstance(op, QConv2d):
        out = F.conv2d(eye, ones, None, op.stride, op.padding, op.dilation, op.groups)
    elif isinstance(op, ConvRecurrence):
        out = F.conv2d(eye, ones, None, 1, op.padding)
    elif isinstance(op, QLinear | DenseRecurrence):
        out = F.linear(eye.reshape(n_in, -1), ones)
    else:
        assert isinstance(op, OneToOneRecurrence)
        out = eye * torch.ones(in_shape, dtype=torch.float64)
    return out.reshape(n_in, -1).numpy() > 0


def per_core(mask: np.ndarray, cores: int) -> np.ndarray:
    """(n_in, cores): the reached outputs of each row that fall in each core's slice."""
    n = mask.shape[1]
    lo = [(c * n + cores - 1) // cores for c in range(cores)]
    hi = [((c + 1) * n + cores - 1) // cores for c in range(cores)]
    return np.stack([mask[:, a:b].sum(axis=1) for a, b in zip(lo, hi, strict=True)], axis=1)


# ----------------------------------------------------------------------------- row lengths


@st.composite
def conv_geometry(draw: st.DrawFn) -> tuple[QConv2d, tuple[int, int, int]]:
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    shape = (c_in, draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    for a in (0, 1):
        assume(shape[1 + a] + 2 * padding[a] >= dilation[a] * (kernel[a] - 1) + 1)
    weight = np.ones((c_out, c_in // groups, *kernel), np.int64)
    return QConv2d(weight, None, stride, padding, dilation, groups, weight_frac=0), shape


@settings(max_examples=150, deadline=None)
@given(conv_geometry(), st.integers(1, 7), st.booleans())
def test_conv_row_lengths_equal_torch(
    geometry: tuple[QConv2d, tuple[int, int, int]], cores: int, engine: bool
) -> None:
    op, shape = geometry
    mask = reach(op, shape)
    cores = min(cores, mask.shape[1] + 2)  # more cores than outputs: empty slices
    expected = per_core(mask if engine else np.ones_like(mask), cores)
    np.testing.assert_array_equal(row_lengths(op, shape, cores, conv_engine=engine), expected)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 7),
    st.integers(1, 7),
    st.sampled_from([(1, 1), (3, 3), (1, 3), (3, 1), (5, 3)]),
    st.integers(1, 6),
)
def test_conv_recurrence_row_lengths_equal_torch(
    c: int, h: int, w: int, kernel: tuple[int, int], cores: int
) -> None:
    rec = ConvRecurrence(np.ones((c, c, *kernel), np.int64), None, (kernel[0] // 2, kernel[1] // 2))
    mask = reach(rec, (c, h, w))
    np.testing.assert_array_equal(row_lengths(rec, (c, h, w), cores, True), per_core(mask, cores))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 12))
def test_dense_and_one_to_one_row_lengths_equal_torch(n_in: int, n_out: int, cores: int) -> None:
    linear = QLinear(np.ones((n_out, n_in), np.int64), None, weight_frac=0)
    np.testing.assert_array_equal(
        row_lengths(linear, (n_in,), cores, True), per_core(reach(linear, (n_in,)), cores)
    )
    dense = DenseRecurrence(np.ones((n_out, n_out), np.int64))
    np.testing.assert_array_equal(
        row_lengths(dense, (n_out,), cores, True), per_core(reach(dense, (n_out,)), cores)
    )
    shape = (n_in, n_out)
    one = OneToOneRecurrence(np.ones((1, n_out), np.int64))
    np.testing.assert_array_equal(row_lengths(one, shape, cores, True), per_core(reach(one, shape), cores))


def test_row_lengths_of_a_large_conv_stay_small() -> None:
    """A 16x256x256 input (over a million rows): the table is (n_in, cores), no n_in x n_in matrix."""
    op = QConv2d(np.ones((8, 16, 5, 5), np.int64), None, (1, 1), (2, 2), weight_frac=0)
    lengths = row_lengths(op, (16, 256, 256), 3, True)
    assert lengths.shape == (16 * 256 * 256, 3)
    # an interior pixel reaches 5x5 positions in each of the 8 output channels; the corner 3x3
    assert lengths.sum(axis=1).max() == 8 * 25 and lengths[0].sum() == 8 * 9


# ------------------------------------------------------------------------------ whole runs


@dataclass(frozen=True)
class Layer:
    """What the oracle knows of a layer from building the graph (not from the cycle model)."""

    name: str
    synapse: str  # its synapse op
    events: str  # the node whose values are that op's events
    neurons: int  # 0 for a readout
    recurrence: Recurrence | None


def lif(threshold: int, recurrence: Recurrence | None = None) -> QLIF:
    return QLIF(
        np.array(1, np.int64), 1, np.array(threshold, np.int64), FixedQuant(0, -1000, 1000), in_frac=0,
        recurrence=recurrence,
    )  # fmt: skip


@st.composite
def pool_geometry(draw: st.DrawFn) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Kernel, stride and padding of a pool (padding at most half the kernel, as torch requires)."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return kernel, stride, (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))


@st.composite
def network(draw: st.DrawFn) -> tuple[Graph, list[Layer], Target]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = draw(st.integers(1, 2))
    c_in = groups * draw(st.integers(1, 2))
    shape = (c_in, draw(st.integers(4, 8)), draw(st.integers(4, 8)))
    g = Graph()
    g.add("x", Input(shape, frac=0))
    src = "x"
    pre = draw(st.sampled_from(["none", "max", "sum"]))
    if pre != "none":
        kernel, stride, padding = draw(pool_geometry())
        pool = MaxPool2d(kernel, stride, padding) if pre == "max" else SumPool2d(kernel, stride, padding)
        src = g.add("pre", pool, ["x"])
    c_out = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    weight = rng.integers(-1, 4, (c_out, c_in // groups, *kernel))
    conv = QConv2d(
        weight, None, (draw(st.integers(1, 2)), draw(st.integers(1, 2))), (draw(st.integers(0, 1)), 0),
        (draw(st.integers(1, 2)), 1), groups, weight_frac=0,
    )  # fmt: skip
    g.add("conv", conv, [src])
    hidden = "conv"
    if draw(st.booleans()):
        kernel, stride, padding = draw(pool_geometry())
        hidden = g.add("post", MaxPool2d(kernel, stride, padding, ceil_mode=draw(st.booleans())), ["conv"])
    try:
        n_shape = g.shapes()[hidden]
    except GraphError:  # a conv or pool output would be empty
        assume(False)
    assume(all(n_shape))
    rec_kind = draw(st.sampled_from(["none", "one-to-one", "conv"]))
    rec: Recurrence | None = None
    if rec_kind == "one-to-one":
        rec = OneToOneRecurrence(rng.integers(-1, 2, n_shape))
    elif rec_kind == "conv":
        rec = ConvRecurrence(rng.integers(-1, 2, (n_shape[0], n_shape[0], 3, 1)), None, (1, 0))
    g.add("n1", lif(1, rec), [hidden])
    g.add("flat", Flatten(), ["n1"])
    n1 = math.prod(n_shape)
    n_out = draw(st.integers(1, 6))
    g.add("fc", QLinear(rng.integers(-1, 3, (n_out, n1)), None, weight_frac=0), ["flat"])
    layers = [Layer("n1", "conv", src, n1, rec)]
    if draw(st.booleans()):
        g.add("n2", lif(0), ["fc"])
        g.add("out", Output(), ["n2"])
        layers.append(Layer("n2", "fc", "flat", n_out, None))
    else:
        g.add("out", Output(), ["fc"])
        layers.append(Layer("fc", "fc", "flat", 0, None))
    g.verify()
    micro = Microarchitecture(
        lanes=draw(st.integers(1, 4)), update_lanes=draw(st.integers(1, 3)), pipeline_depth=draw(st.integers(1, 4)),
        schedule=draw(st.sampled_from(["sequential", "pipelined"])),
    )  # fmt: skip
    target = Target(
        "t",
        cores=Cores(count=64, neurons_per_core=draw(st.integers(2, 16))),
        micro=micro,
        limits=Limits(conv_engine=draw(st.booleans())),
    )
    return g, layers, target


def oracle_counts(
    graph: Graph,
    layers: list[Layer],
    target: Target,
    values: dict[str, np.ndarray],
    spikes: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Layer cycles, step cycles, synaptic operations and memory accesses (each (T, B)), event by event."""
    shapes = graph.shapes()
    micro, per_core_limit = target.micro, target.cores.neurons_per_core
    t_steps, batch = next(iter(values.values())).shape[:2]
    layer_cycles = {}
    synops = np.zeros((t_steps, batch), np.int64)
    accesses = np.zeros((t_steps, batch), np.int64)
    for layer in layers:
        size = layer.neurons or math.prod(shapes[layer.synapse])
        k = -(-size // per_core_limit)
        op = graph.op(layer.synapse)
        assert isinstance(op, QLinear | QConv2d)
        mask = reach(op, shapes[layer.events])
        if isinstance(op, QConv2d) and not target.limits.conv_engine:
            mask = np.ones_like(mask)
        rows = [(per_core(mask, k), layer.events, 0)]
        if layer.recurrence is not None:
            rows.append((per_core(reach(layer.recurrence, shapes[layer.name]), k), layer.name, 1))
        sizes = [((c + 1) * size + k - 1) // k - (c * size + k - 1) // k for c in range(k)]
        update = [-(-n // micro.update_lanes) + micro.pipeline_depth if layer.neurons else 0 for n in sizes]
        cycles = np.zeros((t_steps, batch), np.int64)
        for t in range(t_steps):
            for b in range(batch):
                integration = [0] * k
                for lengths, node, delay in rows:
                    if t - delay < 0:
                        continue
                    source = (values if delay == 0 else spikes)[node][t - delay, b].ravel()
                    for i in np.flatnonzero(source):
                        for c in range(k):
                            integration[c] += -(-int(lengths[i, c]) // micro.lanes)
                            synops[t, b] += int(lengths[i, c])
                cycles[t, b] = max(integration[c] + update[c] for c in range(k))
                accesses[t, b] += sum(integration) + 2 * layer.neurons
        layer_cycles[layer.name] = cycles
    stack = np.stack(list(layer_cycles.values()))
    steps = stack.sum(axis=0) if micro.schedule == "sequential" else stack.max(axis=0)
    return layer_cycles, steps, synops, accesses


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(network(), st.integers(0, 2**32 - 1))
def test_counts_equal_the_rules_event_by_event(case: tuple[Graph, list[Layer], Target], seed: int) -> None:
    graph, layers, target = case
    model = CycleModel(graph, target)
    events = sorted({layer.events for layer in layers})
    assert model.event_nodes == events
    x = (np.random.default_rng(seed).random((4, 2, *graph.shapes()["x"])) < 0.4).astype(np.float32)
    run = simulate(graph, x, keep=events, progress=False)
    report = model.count(run, run.values)
    layer_cycles, steps, synops, accesses = oracle_counts(graph, layers, target, run.values, run.spikes)
    assert report.layer_cycles.keys() == layer_cycles.keys()
    for name, cycles in layer_cycles.items():
        np.testing.assert_array_equal(report.layer_cycles[name], cycles, err_msg=name)
    np.testing.assert_array_equal(report.cycles, steps)
    np.testing.assert_array_equal(report.synaptic_ops, synops)
    np.testing.assert_array_equal(report.memory_accesses, accesses)
    assert report.neuron_updates == sum(layer.neurons for layer in layers)


# ------------------------------------------------------------------------------- hand traces


def two_core_graph() -> Graph:
    """x (1x1x5 spikes) -> conv 1->1, kernel 1x3, all ones -> LIF (3 neurons: beta 0, thr 0, no reset,
    one-to-one recurrence of weight 0) -> flatten -> linear 3->2 readout -> output.

    With beta 0 and no reset each neuron's membrane is its conv output, and it spikes when that is
    above 0; the recurrence adds 0 but its events are read."""
    g = Graph()
    g.add("x", Input((1, 1, 5), frac=0))
    g.add("conv", QConv2d(np.ones((1, 1, 1, 3), np.int64), None, weight_frac=0), ["x"])
    rec = OneToOneRecurrence(np.zeros((1, 1, 3), np.int64))
    op = QLIF(np.array(0, np.int64), 1, np.array(0, np.int64), FixedQuant(0, -100, 100), in_frac=0,
              reset="none", recurrence=rec)  # fmt: skip
    g.add("n", op, ["conv"])
    g.add("flat", Flatten(), ["n"])
    g.add("fc", QLinear(np.ones((2, 3), np.int64), None, weight_frac=0), ["flat"])
    g.add("out", Output(), ["fc"])
    return g


def two_core_target(conv_engine: bool, schedule: str = "sequential") -> Target:
    return Target(
        "two-core",
        cores=Cores(count=4, neurons_per_core=2),
        micro=Microarchitecture(lanes=1, update_lanes=1, pipeline_depth=3, schedule=schedule),  # type: ignore[arg-type]
        limits=Limits(conv_engine=conv_engine),
    )


X_TWO_CORE = np.array([[0, 0, 0, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 1, 1]], np.float32).reshape(3, 1, 1, 1, 5)


@pytest.mark.parametrize("schedule", ["sequential", "pipelined"])
def test_imbalanced_two_core_conv_by_hand(schedule: str) -> None:
    """3 neurons on cores of 2: core 0 holds outputs 0, 1 (update 2 + 3 = 5 cycles), core 1 output 2
    (update 1 + 3 = 4). Input w reaches outputs w-2..w: per-core row lengths (core 0, core 1) are
    w0 (1, 0), w1 (2, 0), w2 (2, 1), w3 (1, 1), w4 (0, 1); lanes 1: one cycle per synapse.

    t0: events w3, w4 -> conv [0, 1, 2], spikes [0, 1, 1]. Cores: 1 + 0 = 1, 1 + 1 = 2; no recurrent
        events. Layer: max(1 + 5, 2 + 4) = 6 (the sum of per-core maxima would say 2 + 5 = 7).
    t1: event w0 -> conv [1, 0, 0], spikes [1, 0, 0]. Feed-forward (1, 0); recurrent events: t0's
        spikes 1 (core 0) and 2 (core 1): (1, 1). Cores 2, 1: max(2 + 5, 1 + 4) = 7.
    t2: events w3, w4 -> spikes [0, 1, 1]. Feed-forward (1, 2); recurrent: t1's spike 0: (1, 0).
        Cores 2, 2: max(2 + 5, 2 + 4) = 7 (per-source maxima: 2 + 1 + 5 = 8).
    Readout fc (2 accumulators, one core, no update): each spike of n reads a row of 2: t0 2 events
    -> 4 cycles, t1 1 -> 2, t2 2 -> 4."""
    g = two_core_graph()
    model = CycleModel(g, two_core_target(True, schedule))
    run = simulate(g, X_TWO_CORE, keep=model.event_nodes, progress=False)
    assert run.spikes["n"][:, 0].reshape(3, 3).tolist() == [[0, 1, 1], [1, 0, 0], [0, 1, 1]]
    report = model.count(run, run.values)
    assert report.layer_cycles["n"][:, 0].tolist() == [6, 7, 7]
    assert report.layer_cycles["fc"][:, 0].tolist() == [4, 2, 4]
    expected = [10, 9, 11] if schedule == "sequential" else [6, 7, 7]
    assert report.cycles[:, 0].tolist() == expected
    # synapses: t0 w3 2 + w4 1 + readout 2 x 2; t1 w0 1 + recurrent 2 + readout 2; t2 3 + 1 + 4
    assert report.synaptic_ops[:, 0].tolist() == [7, 5, 8]
    # accesses: integration cycles summed over cores, + 2 per neuron update (3 neurons; none for fc)
    assert report.memory_accesses[:, 0].tolist() == [3 + 6 + 4, 3 + 6 + 2, 4 + 6 + 4]
    assert report.neuron_updates == 3


def test_two_core_conv_without_conv_engine_by_hand() -> None:
    """Unrolled dense rows: every input event reads all 3 outputs, 2 on core 0 and 1 on core 1.

    t0: 2 events: cores 4, 2 -> max(4 + 5, 2 + 4) = 9.  t1: 1 event (2, 1) + recurrent (1, 1): 3, 2 ->
    max(8, 6) = 8.  t2: 2 events (4, 2) + recurrent (1, 0): max(5 + 5, 2 + 4) = 10."""
    g = two_core_graph()
    model = CycleModel(g, two_core_target(False))
    run = simulate(g, X_TWO_CORE, keep=model.event_nodes, progress=False)
    report = model.count(run, run.values)
    assert report.layer_cycles["n"][:, 0].tolist() == [9, 8, 10]
    assert report.synaptic_ops[:, 0].tolist() == [6 + 4, 3 + 2 + 2, 6 + 1 + 4]
