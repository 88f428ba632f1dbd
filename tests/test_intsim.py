"""The fast engine against the integer reference interpreter, and hand-checked cycle counts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snncompile.backends.intsim import CycleModel, describe_plan, engine, plan, simulate, tuning
from snncompile.backends.intsim.engine import DenseSynapses, legal_paths, synapse_nodes
from snncompile.backends.intsim.kernels import EventConv
from snncompile.quant.fixed import ROUNDINGS

from snncompile import run_integer
from snncompile.errors import InputError
from snncompile.interpreters.integer import eval_qconv2d
from snncompile.ir import (
    QLIF,
    AvgPool2d,
    ConvRecurrence,
    DenseRecurrence,
    FixedQuant,
    Flatten,
    Graph,
    Input,
    MaxPool2d,
    OneToOneRecurrence,
    Output,
    QConv2d,
    QCubaLIF,
    QLinear,
    SumPool2d,
)
from snncompile.passes import analyze_ranges
from snncompile.targets import Cores, Microarchitecture, Target


@st.composite
def neuron(draw: st.DrawFn, shape: tuple[int, ...], in_frac: int, conv: bool) -> QLIF | QCubaLIF:
    """A random neuron op: formats narrow enough to saturate, every reset, timing and recurrence."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    width = draw(st.integers(4, 16))
    frac = draw(st.integers(0, 6))
    mem = FixedQuant(frac, -(1 << (width - 1)), (1 << (width - 1)) - 1, draw(st.sampled_from(ROUNDINGS)))
    d = draw(st.integers(1, 8))
    per_neuron = draw(st.booleans())
    pshape = shape if per_neuron else ()
    beta = rng.integers(0, (1 << d) + 1, pshape).astype(np.int64)
    thr = rng.integers(-2, max(2, mem.hi // 2), pshape).astype(np.int64)
    graded_frac = draw(st.integers(0, 2))
    graded = np.array(draw(st.integers(1, 4)), np.int64)
    kind = draw(st.sampled_from(["none", "one", "conv"] if conv else ["none", "one", "dense"]))
    n = int(np.prod(shape))
    rec = None
    if kind == "one":
        rec = OneToOneRecurrence(rng.integers(-8, 8, pshape).astype(np.int64))
    elif kind == "dense":
        rec = DenseRecurrence(
            rng.integers(-8, 8, (n, n)).astype(np.int64), rng.integers(-30, 30, n).astype(np.int64)
        )
    elif kind == "conv":
        c = shape[0]
        rec = ConvRecurrence(rng.integers(-8, 8, (c, c, 3, 3)).astype(np.int64), None, (1, 1))
    rec_frac = draw(st.integers(graded_frac, graded_frac + 4))
    common = {
        "beta": beta,
        "decay_frac": d,
        "threshold": thr,
        "mem": mem,
        "in_frac": in_frac,
        "reset": draw(st.sampled_from(["subtract", "zero", "none"])),
        "reset_delay": draw(st.booleans()),
        "graded": graded,
        "graded_frac": graded_frac,
        "recurrence": rec,
        "rec_frac": rec_frac,
    }
    if draw(st.booleans()):
        syn_width = draw(st.integers(4, 16))
        syn = FixedQuant(
            draw(st.integers(0, 6)), -(1 << (syn_width - 1)), (1 << (syn_width - 1)) - 1, "floor"
        )
        return QCubaLIF(
            alpha=rng.integers(0, (1 << d) + 1, pshape).astype(np.int64), alpha_frac=d, syn=syn, **common
        )
    floor = 0 if common["reset"] == "none" and draw(st.booleans()) else None
    return QLIF(zero_mode=draw(st.sampled_from(["keep_input", "drop_update"])), floor=floor, **common)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[Graph, np.ndarray]:
    """A random small fixed-point graph (conv or dense front, every pool) and a random input."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    g = Graph()
    spikes = draw(st.booleans())
    conv = draw(st.booleans())
    shape: tuple[int, ...] = (2, 6, 6) if conv else (7,)
    g.add("x", Input(shape, frac=0 if spikes else draw(st.integers(0, 3))))
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    x = (
        rng.integers(0, 2, (steps, batch, *shape))
        if spikes
        else rng.integers(-20, 20, (steps, batch, *shape))
    )
    x = x.astype(np.float32) / 2.0 ** g.op("x").frac  # type: ignore[attr-defined]
    wf = draw(st.integers(0, 4))
    wmax = draw(st.sampled_from([3, 127, 2**12]))
    if conv:
        w = rng.integers(-wmax, wmax + 1, (4, 2, 3, 3)).astype(np.int64)
        g.add(
            "syn",
            QConv2d(w, rng.integers(-50, 50, 4).astype(np.int64), padding=(1, 1), weight_frac=wf),
            ["x"],
        )
        pool = draw(st.sampled_from(["max", "avg", "sum", "none"]))
        last = "syn"
        if pool != "none":
            op = {
                "max": MaxPool2d((2, 2), (2, 2)),
                "avg": AvgPool2d((2, 2), (2, 2)),
                "sum": SumPool2d((2, 2), (2, 2)),
            }[pool]
            g.add("pool", op, [last])
            last = "pool"
        fracs = g.fracs()
        shapes = g.shapes()
        g.add("n1", draw(neuron(shapes[last], fracs[last], conv=True)), [last])
        g.add("flat", Flatten(), ["n1"])
        last = "flat"
    else:
        w = rng.integers(-wmax, wmax + 1, (8, 7)).astype(np.int64)
        g.add("syn", QLinear(w, rng.integers(-50, 50, 8).astype(np.int64), weight_frac=wf), ["x"])
        g.add("n1", draw(neuron((8,), g.fracs()["syn"], conv=False)), ["syn"])
        last = "n1"
    n_in = g.shapes()[last][0]
    g.add(
        "fc", QLinear(rng.integers(-wmax, wmax + 1, (8, n_in)).astype(np.int64), None, weight_frac=2), [last]
    )
    g.add("n2", draw(neuron((8,), g.fracs()["fc"], conv=False)), ["fc"])
    g.add("out", Output(), ["n2"])
    if draw(st.booleans()):  # more outputs: a state, and a linear readout of the hidden layer
        g.add("out_mem", Output(state="mem"), ["n1"])
        readout = QLinear(rng.integers(-9, 10, (3, n_in)).astype(np.int64), None, weight_frac=0)
        g.add("readout", readout, [last])
        g.add("out_readout", Output(), ["readout"])
    g.verify()
    return g, x


def assert_same(a: object, b: object) -> None:
    ra, rb = a, b
    assert isinstance(ra, type(rb))
    assert np.array_equal(ra.output, rb.output)  # type: ignore[attr-defined]
    assert list(ra.outputs) == list(rb.outputs)  # type: ignore[attr-defined]
    for name in rb.outputs:  # type: ignore[attr-defined]
        assert np.array_equal(ra.outputs[name], rb.outputs[name]), name  # type: ignore[attr-defined]
    for n in ra.spikes:  # type: ignore[attr-defined]
        assert np.array_equal(ra.spikes[n], rb.spikes[n]), n  # type: ignore[attr-defined]
        for v in ra.states[n]:  # type: ignore[attr-defined]
            assert np.array_equal(ra.states[n][v], rb.states[n][v]), (n, v)  # type: ignore[attr-defined]
        assert ra.saturations[n] == rb.saturations[n], n  # type: ignore[attr-defined]


@settings(max_examples=160, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    graphs(),
    st.sampled_from([None, "event", "int64", "blas-f64", "int-dot", "mixed"]),
    st.integers(1, 3),
    st.sampled_from([None, 1, 2]),
    st.booleans(),
    st.booleans(),
)
def test_fast_engine_equals_reference(
    case: tuple[Graph, np.ndarray],
    forced: str | None,
    chunk: int,
    steps: int | None,
    as_float32: bool,
    record: bool,
) -> None:
    """Every path (the planned one, event-driven, int64, float64 BLAS, and per layer a mix of event and
    dense), batch and time chunking, and float32 or integer input arrays, against the reference."""
    graph, x = case
    reference = run_integer(graph, x)
    synapses = synapse_nodes(graph)
    paths: dict[str, str] | None = None
    if forced == "mixed":
        paths = {n: ("event", "blas-f64")[i % 2] for i, n in enumerate(synapses)}
    elif forced is not None:  # int-dot is a linear layer's path only
        paths = {n: forced for n in synapses if forced != "int-dot" or isinstance(graph.op(n), QLinear)}
    if not as_float32 and graph.op(graph.input_name).frac == 0:  # type: ignore[attr-defined]
        x = x.astype(np.int16)  # integer spikes: the codes are used as they are
    run = simulate(graph, x, paths=paths, chunk=chunk, steps=steps, progress=False, record_states=record)
    if record:
        assert_same(run, reference)
    else:  # spikes and every output (a state output is recorded for it) without the other states
        for name in reference.outputs:
            assert np.array_equal(run.outputs[name], reference.outputs[name]), name
        for n in reference.spikes:
            assert np.array_equal(run.spikes[n], reference.spikes[n]), n


def test_saturation_corner_matches() -> None:
    """Narrow states that saturate on both sides, every step: counts and values equal the reference."""
    rng = np.random.default_rng(1)
    g = Graph()
    g.add("x", Input((6,), frac=0))
    g.add("fc", QLinear(rng.integers(-127, 128, (5, 6)).astype(np.int64), None, weight_frac=0), ["x"])
    mem = FixedQuant(0, -8, 7, "half_even")
    op = QLIF(beta=np.array(3, np.int64), decay_frac=2, threshold=np.array(5, np.int64), mem=mem, in_frac=0)
    g.add("n", op, ["fc"])
    g.add("out", Output(), ["n"])
    x = rng.integers(0, 2, (10, 4, 6)).astype(np.float32)
    reference = run_integer(g, x)
    assert reference.saturations["n"] > 50
    assert_same(simulate(g, x, progress=False), reference)


def test_float32_path_is_refused_when_the_bound_is_not_proven() -> None:
    """A layer whose partial sums reach 2**27 gets float64 or integer dot products; forcing float32
    there loses bits."""
    rng = np.random.default_rng(0)
    g = Graph()
    g.add("x", Input((64,), frac=0))
    w = np.full((8, 64), 2**21 - 1, np.int64)
    w[:, ::2] = -(2**21) + 1 + rng.integers(0, 1000, (8, 32))
    g.add("fc", QLinear(w, None, weight_frac=0), ["x"])
    mem = FixedQuant(0, -(1 << 40), (1 << 40) - 1, "floor")
    op = QLIF(
        beta=np.array(0, np.int64), decay_frac=1, threshold=np.array(1 << 35, np.int64), mem=mem, in_frac=0
    )
    g.add("n", op, ["fc"])
    g.add("out", Output(), ["n"])
    x = np.ones((2, 3, 64), np.float32)
    x[:, :, ::2] = 1
    x[:, :, 1::4] = 0
    ranges = analyze_ranges(g, 1)
    assert legal_paths(g.op("fc"), 1, ranges.nodes["fc"].bits) == ["event", "blas-f64", "int-dot"]  # type: ignore[arg-type]
    assert plan(g, ranges)["fc"].dense in ("blas-f64", "int-dot")
    reference = run_integer(g, x)
    assert_same(simulate(g, x, progress=False), reference)
    assert np.abs(reference.states["n"]["mem"]).max() > 2**24  # the case really exceeds float32
    forced = simulate(g, x, paths={"fc": "blas-f32"}, progress=False)
    assert not np.array_equal(forced.states["n"]["mem"], reference.states["n"]["mem"])


def tiny_target(schedule: str = "sequential") -> Target:
    return Target(
        "tiny",
        cores=Cores(count=4, neurons_per_core=2),
        micro=Microarchitecture(lanes=2, update_lanes=1, pipeline_depth=3, schedule=schedule),  # type: ignore[arg-type]
    )


def tiny_graph() -> Graph:
    """input (4 spikes) -> linear 4->3 -> LIF (3 neurons, dense recurrence) -> output."""
    g = Graph()
    g.add("x", Input((4,), frac=0))
    g.add("fc", QLinear(np.ones((3, 4), np.int64), None, weight_frac=0), ["x"])
    op = QLIF(
        beta=np.array(0, np.int64),
        decay_frac=1,
        threshold=np.array(0, np.int64),
        mem=FixedQuant(0, -128, 127),
        in_frac=0,
        reset="zero",
        zero_mode="drop_update",
        recurrence=DenseRecurrence(np.zeros((3, 3), np.int64)),
        rec_frac=0,
    )
    g.add("n", op, ["fc"])
    g.add("out", Output(), ["n"])
    return g


@pytest.mark.parametrize("schedule", ["sequential", "pipelined"])
def test_cycle_counts_by_hand(schedule: str) -> None:
    g = tiny_graph()
    model = CycleModel(g, tiny_target(schedule))
    x = np.array([[[1, 0, 1, 1]], [[0, 0, 0, 0]], [[0, 1, 0, 0]]], np.float32)
    run = simulate(g, x, keep=model.event_nodes, progress=False)
    # 3 neurons on cores of 2: 2 cores, slices of 2 and 1 neurons. Update: ceil(2/1) + 3 = 5 cycles.
    # A row of 3 synapses splits 2 + 1 over the cores: ceil(2/2) = 1 cycle on the slower core.
    # t0: 3 input events -> 3 cycles; no recurrent events (no spikes before t0). 3 + 5 = 8.
    # t1: no input events; recurrent events = the 3 neurons that fired at t0 (mem 2, 2, 2 > 0): 3 + 5 = 8.
    # t2: 1 input event, recurrent events: t1's spikes (zero reset dropped t1's update: no spikes) -> 1 + 5.
    assert run.spikes["n"][:, 0].tolist() == [[1, 1, 1], [0, 0, 0], [1, 1, 1]]
    report = model.count(run, run.values)
    assert report.cycles[:, 0].tolist() == [8, 8, 6]
    assert report.layer_cycles["n"][:, 0].tolist() == [8, 8, 6]
    # synapses read: t0 3 events x 3 + 0; t1 3 recurrent events x 3; t2 1 x 3
    assert report.synaptic_ops[:, 0].tolist() == [9, 9, 3]
    summary = report.summary()
    assert summary["cycles_per_sample"] == 22
    e = tiny_target().energy
    # memory accesses: one per integration cycle on each core (2 cores x 1 cycle per event: 3+3+1 events)
    # plus a state read and write per neuron update (3 neurons x 3 steps)
    pj = (
        (9 + 9 + 3) * e.synaptic_op
        + 3 * 3 * e.neuron_update
        + (2 * (3 + 3 + 1) + 2 * 3 * 3) * e.memory_access
    )
    assert report.energy_j[0] == pytest.approx(pj * 1e-12)


def test_pipelined_schedule_takes_the_slowest_layer() -> None:
    g = tiny_graph()
    g2 = Graph()
    for n in g.topo_order():
        if n == "out":
            continue
        g2.add(n, g.op(n), g.args(n))
    g2.add("fc2", QLinear(np.ones((2, 3), np.int64), None, weight_frac=0), ["n"])
    second = dataclasses.replace(g.op("n"), recurrence=None)  # type: ignore[type-var]
    g2.add("n2", second, ["fc2"])
    g2.add("out", Output(), ["n2"])
    x = np.array([[[1, 1, 1, 1]]], np.float32)
    seq = CycleModel(g2, tiny_target("sequential"))
    pipe = CycleModel(g2, tiny_target("pipelined"))
    run = simulate(g2, x, keep=seq.event_nodes, progress=False)
    a, b = seq.count(run, run.values), pipe.count(run, run.values)
    # layer n: 4 events + 5 update = 9; layer n2: 3 events (1 core, 2 neurons: ceil(2/2)=1 each) + (2 + 3) = 8
    assert a.layer_cycles["n"][0, 0] == 9 and a.layer_cycles["n2"][0, 0] == 8
    assert a.cycles[0, 0] == 17 and b.cycles[0, 0] == 9


def conv_graph(wmax: int) -> Graph:
    """input 3x9x9 -> conv 3->8 (3x3, padding 1) -> LIF -> flatten -> linear -> LIF. With oneDNN disabled,
    torch runs this conv through NNPACK, whose float32 results are off by up to 0.02 at ``wmax = 2**10``."""
    rng = np.random.default_rng(3)
    g = Graph()
    g.add("x", Input((3, 9, 9), frac=0))
    w = rng.integers(-wmax, wmax + 1, (8, 3, 3, 3)).astype(np.int64)
    conv = QConv2d(w, rng.integers(-9, 9, 8).astype(np.int64), padding=(1, 1), weight_frac=0)
    g.add("conv", conv, ["x"])
    mem = FixedQuant(0, -(1 << 30), (1 << 30) - 1, "half_even")
    lif = QLIF(
        beta=np.array(3, np.int64), decay_frac=2, threshold=np.array(wmax * 4, np.int64), mem=mem, in_frac=0
    )
    g.add("n1", lif, ["conv"])
    g.add("flat", Flatten(), ["n1"])
    g.add(
        "fc",
        QLinear(rng.integers(-wmax, wmax + 1, (4, 8 * 9 * 9)).astype(np.int64), None, weight_frac=0),
        ["flat"],
    )
    g.add("n2", dataclasses.replace(lif, threshold=np.array(wmax, np.int64)), ["fc"])
    g.add("out", Output(), ["n2"])
    g.verify()
    return g


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("path", ["blas-f32", "event", "onednn-f32"])
def test_conv_is_exact_whatever_torch_backend(path: str) -> None:
    """The dense conv path is unfold + matrix product at IEEE float32 precision, so disabling oneDNN (torch
    then takes NNPACK or its slow path) or asking for reduced matmul precision changes no bit."""
    g = conv_graph(2**10)
    x = (np.random.default_rng(0).random((4, 5, 3, 9, 9)) < 0.5).astype(np.float32)
    reference = run_integer(g, x)
    paths = {"conv": path, "fc": "blas-f32" if path == "onednn-f32" else path}
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with torch.backends.mkldnn.flags(enabled=False):
            assert_same(simulate(g, x, paths=paths, progress=False), reference)
    finally:
        torch.set_float32_matmul_precision(saved)
    assert torch.get_float32_matmul_precision() == saved


def test_float32_inputs_beyond_spikes_and_off_the_grid() -> None:
    """float32 inputs are read without conversion as spikes; values above 1 (graded integers) are still
    exact, and values off the integer grid are refused."""
    g = conv_graph(5)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, (3, 2, 3, 9, 9)).astype(np.float32)
    assert_same(simulate(g, x, progress=False), run_integer(g, x))
    x[1, 1, 0, 0, 0] = 0.5
    with pytest.raises(InputError, match="input grid"):
        simulate(g, x, progress=False)


def test_kernel_timings_are_cached_per_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The first plan times the candidates and writes them to the cache directory; the next one reads
    them (timing again would fail here); describe_plan names the CPU and each candidate's cost."""
    monkeypatch.setenv("SNNCOMPILE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SNNCOMPILE_TUNE", "1")
    tuning._cache.cache_clear()
    g = conv_graph(5)
    ranges = analyze_ranges(g, 1)
    first = plan(g, ranges)
    files = list(tmp_path.glob("kernels-*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["machine"]["cpu"] == tuning.machine()["cpu"] and len(saved["costs"]) == 2
    tuning._cache.cache_clear()

    timers = engine._timers

    def no_timing() -> tuple[object, int]:
        raise AssertionError("timed again")

    monkeypatch.setattr(engine, "_timers", lambda *args: dict.fromkeys(timers(*args), no_timing))
    again = plan(g, ranges)
    assert again == first
    text = describe_plan(g, again)
    assert tuning.machine()["cpu"] in text and "event@0.05" in text and "blas-f32" in text
    for choice in again.values():
        best_dense = min(cost for p, cost in choice.costs.items() if not p.startswith("event"))
        assert choice.costs[choice.dense] == best_dense  # never a slower dense path than another exact one
    tuning._cache.cache_clear()


def test_forced_paths_are_checked() -> None:
    g = conv_graph(5)
    x = np.zeros((1, 1, 3, 9, 9), np.float32)
    with pytest.raises(InputError, match="not a synapse node"):
        simulate(g, x, paths={"n1": "event"}, progress=False)
    with pytest.raises(InputError, match="is not one of"):
        simulate(g, x, paths={"conv": "gpu"}, progress=False)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.tuples(st.integers(1, 3), st.integers(1, 3)),
    st.tuples(st.integers(1, 3), st.integers(1, 2)),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.integers(1, 2), st.integers(1, 2)),
    st.integers(0, 2**32 - 1),
)
def test_conv_paths_equal_the_reference_on_any_geometry(
    groups: int,
    cin_g: int,
    cout_g: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    seed: int,
) -> None:
    """Event-driven (channel-last) and im2col + matrix product convs against the reference's int64 conv,
    on random channels, groups, kernels, strides, paddings and dilations, with graded input events."""
    rng = np.random.default_rng(seed)
    c_in, c_out = groups * cin_g, groups * cout_g
    h, w = (d * (k - 1) + 1 + int(rng.integers(0, 4)) for d, k in zip(dilation, kernel, strict=True))
    weight = rng.integers(-300, 301, (c_out, cin_g, *kernel)).astype(np.int64)
    bias = rng.integers(-50, 51, c_out).astype(np.int64) if rng.random() < 0.5 else None
    op = QConv2d(
        weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups, weight_frac=0
    )
    x = rng.integers(-2, 3, (2, 3, c_in, h, w)) * (rng.random((2, 3, c_in, h, w)) < 0.4)
    expected = eval_qconv2d(op, [x.astype(np.int64)], {"n": 0})[0]
    events, bad = EventConv(op, (c_in, h, w), np.int32).run(np.ascontiguousarray(x.astype(np.int8)), 2)
    assert bad == 0 and np.array_equal(events, expected)
    for path in ("blas-f32", "blas-f64", "int64", "onednn-f32"):
        dense = DenseSynapses(op, path)(x.reshape(6, c_in, h, w).astype(np.int8)).reshape(expected.shape)
        assert np.array_equal(dense, expected), path
    if groups == 1:  # int8 weights: im2col + torch._int_mm, taps and channels padded to multiples of 8
        op8 = dataclasses.replace(op, weight=np.clip(weight, -127, 127))
        expected8 = eval_qconv2d(op8, [x.astype(np.int64)], {"n": 0})[0]
        got = DenseSynapses(op8, "int8-mm")(x.reshape(6, c_in, h, w).astype(np.int8))
        assert np.array_equal(got.reshape(expected8.shape), expected8)


def test_a_conv_backend_that_is_not_exact_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oneDNN conv path checks its first chunk against the event-driven kernel: a backend that
    returns other numbers (here: off by 0.5 in one output) is dropped for im2col, and the run is exact."""
    g = conv_graph(2**10)
    x = (np.random.default_rng(2).random((4, 3, 3, 9, 9)) < 0.5).astype(np.float32)
    conv2d = torch.nn.functional.conv2d

    def wrong(*args: object, **kwargs: object) -> torch.Tensor:
        y = conv2d(*args, **kwargs)  # type: ignore[arg-type]
        y.view(-1)[7] += 0.5
        return y

    monkeypatch.setattr(torch.nn.functional, "conv2d", wrong)
    run = simulate(g, x, paths={"conv": "onednn-f32", "fc": "blas-f32"}, steps=1, progress=False)
    assert_same(run, run_integer(g, x))
