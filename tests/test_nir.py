"""NIR import and export: snnTorch's exports reproduce snnTorch's spikes, our export round-trips every float
op exactly, hand-built NIR graphs follow each producer's discretisation, and what cannot be represented is
refused by name.

The references are independent of snncompile: the real snnTorch model (run step by step by conftest's
``snntorch_reference``) and numpy loops that write each producer's update as that producer's code does
(Norse's ``v + dt/tau*(x + v_leak - v)``, Rockpool's ``I = beta*(I + x)``, ...), in float64. The IR runs in
float32, so every loop also asserts that no membrane comes within ``_MARGIN`` of its threshold: a spike
mismatch then means a semantic difference, not rounding.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest
import snntorch as snn
import torch
from conftest import assert_active, assert_exact, snntorch_reference
from torch import nn

import snncompile
from snncompile import ConventionWarning, GraphError, InputError, SerializationError, UnsupportedModuleError
from snncompile.frontend.nir import CONVENTIONS, export_nir, import_nir, write_nir
from snncompile.ir import (
    LIF,
    AvgPool2d,
    Conv2d,
    ConvRecurrence,
    CubaLIF,
    DenseRecurrence,
    FixedQuant,
    Flatten,
    Graph,
    Input,
    LevelTable,
    Linear,
    MaxPool2d,
    OneToOneRecurrence,
    Output,
    Scale,
    SumPool2d,
)
from snncompile.passes import fold_scale
from snncompile.targets import target_names

pytestmark = [
    pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated:DeprecationWarning"),
    # Rockpool 3.1 calls nirtorch's deprecated load, and numpy 2 warns about its __array__
    pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning"),
    # the notes on where a convention's producer computes otherwise: test_differences_are_noted pins them
    pytest.mark.filterwarnings("ignore::snncompile.errors.ConventionWarning"),
]

_MARGIN = 1e-5
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seeded(request: pytest.FixtureRequest) -> None:
    """Every test draws its own numbers, the same whichever tests run before it."""
    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.name.encode()))


def f32(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def chain(shape: list[int], *nodes: Any) -> nir.NIRGraph:
    """``input -> n0 -> n1 ... -> output`` without NIR's type check (scalar parameters fail it); the
    Output has no declared type."""
    named = {"input": nir.Input(np.array(shape)), **{f"n{i}": n for i, n in enumerate(nodes)}}
    named["output"] = nir.Output(None)
    keys = list(named)
    return nir.NIRGraph(nodes=named, edges=list(itertools.pairwise(keys)), type_check=False)


def first_spikes(spikes: np.ndarray) -> list[int]:
    return [int(t) for t in np.flatnonzero(spikes.reshape(spikes.shape[0], -1)[:, 0])]


# ============================================================== (a) snnTorch -> NIR -> snncompile


def _export(net: nn.Module, n_in: int) -> nir.NIRGraph:
    pytest.importorskip("nirtorch", reason="snntorch.export_nir needs nirtorch")
    from snntorch.export_nir import export_to_nir

    # snnTorch's export works only with per-neuron beta and threshold, and ignore_dims=[0]
    # (SNNTORCH_SEMANTICS.md section 7, item 5)
    return export_to_nir(net, torch.zeros(1, n_in), ignore_dims=[0])


def _per_neuron(n: int) -> dict[str, Any]:
    return {
        "beta": torch.rand(n) * 0.45 + 0.5,
        "threshold": torch.rand(n) * 0.5 + 0.5,
        "init_hidden": True,
    }


_SNNTORCH_MODELS: dict[str, Callable[[str], nn.Module]] = {
    "leaky_mlp": lambda reset: nn.Sequential(
        nn.Linear(6, 12),
        snn.Leaky(reset_mechanism=reset, **_per_neuron(12)),
        nn.Linear(12, 4),
        snn.Leaky(reset_mechanism=reset, **_per_neuron(4)),
    ),
    "synaptic": lambda reset: nn.Sequential(
        nn.Linear(6, 8),
        snn.Synaptic(alpha=torch.rand(8) * 0.45 + 0.5, reset_mechanism=reset, **_per_neuron(8)),
    ),
    "rleaky_dense": lambda reset: nn.Sequential(
        nn.Linear(6, 8), snn.RLeaky(linear_features=8, reset_mechanism=reset, **_per_neuron(8))
    ),
    "rleaky_one_to_one": lambda reset: nn.Sequential(
        nn.Linear(6, 8),
        snn.RLeaky(all_to_all=False, V=torch.rand(8), reset_mechanism=reset, **_per_neuron(8)),
    ),
    "rsynaptic_one_to_one": lambda reset: nn.Sequential(
        nn.Linear(6, 8),
        snn.RSynaptic(
            alpha=torch.rand(8) * 0.45 + 0.5,
            all_to_all=False,
            V=torch.rand(8),
            reset_mechanism=reset,
            **_per_neuron(8),
        ),
    ),
    "rsynaptic": lambda reset: nn.Sequential(
        nn.Linear(6, 8),
        snn.RSynaptic(
            alpha=torch.rand(8) * 0.45 + 0.5, linear_features=8, reset_mechanism=reset, **_per_neuron(8)
        ),
    ),
}


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("model", sorted(_SNNTORCH_MODELS))
def test_snntorch_export_reproduces_snntorch_spikes(model: str, reset: str) -> None:
    """snnTorch's own export, imported with the model's reset, gives snnTorch's spikes and states bit
    for bit (the betas are recovered exactly from the float32 taus; the thresholds pass through)."""
    torch.manual_seed(3)
    net = _SNNTORCH_MODELS[model](reset)
    graph = import_nir(_export(net, 6), convention="snntorch", reset=reset)
    x = torch.rand(40, 5, 6).numpy() * 1.5
    run = snncompile.run_float(graph, x)
    ref = snntorch_reference(net, x)
    assert_exact(run.output, ref.output, "network output")
    for path, spikes in ref.spikes.items():
        # nirtorch names a recurrent cell's neuron "<path>.lif"
        (node,) = [n for n in graph.neurons() if graph.source(n).split(".")[0] == path]
        assert_exact(run.spikes[node], spikes, f"spikes of {path!r}")
        for state, want in ref.states[path].items():
            assert_exact(run.states[node][state], want, f"{state} of {path!r}")
    assert_active(ref)


def test_snntorch_export_from_file_matches_in_memory(tmp_path: Path) -> None:
    torch.manual_seed(4)
    exported = _export(_SNNTORCH_MODELS["rsynaptic"]("subtract"), 6)
    nir.write(tmp_path / "m.nir", exported)
    assert import_nir(tmp_path / "m.nir") == import_nir(exported)


def test_snntorch_betas_are_recovered_exactly() -> None:
    """snnTorch exports ``tau = dt/(1 - beta)`` in float32; ``1 - dt/tau`` rounded to float32 misses some
    betas by an ulp, the snntorch convention finds the beta whose export is the stored tau."""
    beta = np.unique(RNG.uniform(0.5, 1.0, 20000).astype(np.float32))
    tau = 1e-4 / (1 - beta)  # exactly snntorch.export_nir's expression (float32)
    assert tau.dtype == np.float32
    naive = (1 - 1e-4 / tau.astype(np.float64)).astype(np.float32)
    assert np.any(naive != beta), "every beta survives plain rounding: the test proves nothing"
    lif = nir.LIF(tau=tau, r=tau / 1e-4, v_leak=np.zeros_like(tau), v_threshold=np.ones_like(tau))
    op = import_nir(chain([beta.size], lif)).op("n0")
    assert isinstance(op, LIF)
    np.testing.assert_array_equal(op.beta, beta)


def test_snntorch_import_of_our_export_matches_run_float(tmp_path: Path) -> None:
    """Other readers get standard nodes: snnTorch's own ``import_from_nir`` (zero reset, reset_delay=False,
    what it always builds) runs our exported file to the same spikes as ``run_float``."""
    pytest.importorskip("nirtorch", reason="snntorch.import_nir needs nirtorch")
    from snntorch.import_nir import import_from_nir

    g = Graph()
    g.add("x", Input((4,)))
    g.add("fc", Linear(f32(6, 4, lo=0, hi=0.8), f32(6, lo=0, hi=0.1)), ["x"])
    g.add(
        "lif",
        LIF(np.full(6, 0.75, np.float32), np.ones(6, np.float32), reset="zero", reset_delay=False),
        ["fc"],
    )
    g.add("out", Output(), ["lif"])
    write_nir(g, tmp_path / "g.nir")
    net = import_from_nir(nir.read(tmp_path / "g.nir"))
    x = RNG.uniform(0, 1, (30, 3, 4)).astype(np.float32)
    with torch.no_grad():
        theirs = torch.stack([net(torch.from_numpy(x[t]))[0] for t in range(30)]).numpy()
    ours = snncompile.run_float(g, x).output
    assert_exact(ours, theirs, "spikes")
    assert 0 < ours.mean() < 1


# ============================================================== (b) our export -> our import


def dense_graph() -> Graph:
    """Linear and every LIF / CubaLIF option: resets, zero modes, reset timing, graded spikes, each
    recurrence kind, bias with a floor, 0-d parameters, state quantizers."""
    g = Graph()
    g.add("x", Input((3, 4)), source="in")
    g.add("fl", Flatten(0, -1), ["x"], source="flat")
    g.add("fc", Linear(f32(6, 12), f32(6)), ["fl"], source="fc")
    g.add("a", LIF(f32(6, lo=0, hi=1), np.array(1.0, np.float32)), ["fc"], source="lif.a")
    g.add(
        "b",
        LIF(
            np.array(0.875, np.float32),
            np.arange(1, 7, dtype=np.float32),
            reset="zero",
            zero_mode="drop_update",
            graded=np.array(0.5, np.float32),
            recurrence=DenseRecurrence(f32(6, 6), f32(6)),
        ),
        ["a"],
    )
    g.add(
        "c",
        LIF(
            np.array(1.0, np.float32),
            np.array(1.0, np.float32),
            reset="zero",
            reset_delay=False,
            recurrence=OneToOneRecurrence(np.full(6, 0.25, np.float32)),
            mem_quant=FixedQuant(8, -1024, 1023, "nearest_even"),
        ),
        ["b"],
    )
    g.add("fc2", Linear(f32(5, 6)), ["c"])
    g.add("sc", Scale(np.array(0.5, np.float32)), ["fc2"])
    g.add(
        "d",
        CubaLIF(
            f32(5, lo=0, hi=1),
            np.array(0.5, np.float32),
            np.array(0.75, np.float32),
            reset="none",
            graded=f32(5),
            recurrence=DenseRecurrence(f32(5, 5)),
            mem_quant=LevelTable(np.linspace(-2, 2, 9, dtype=np.float32)),
        ),
        ["sc"],
    )
    g.add("e", CubaLIF(f32(5, lo=0, hi=1), f32(5, lo=0, hi=1), f32(5), reset_delay=False), ["d"])
    g.add(
        "f", LIF(f32(5, lo=0, hi=1), np.array(0.5, np.float32), reset="none", bias=f32(5), floor=0.0), ["e"]
    )
    g.add("out", Output(), ["f"])
    return g


def conv_graph() -> Graph:
    """Conv2d (bias, none, stride, padding, dilation), both pools, per-channel parameters, a conv
    recurrence and a one-to-one recurrence on a (C, H, W) map, Flatten."""
    g = Graph()
    g.add("x", Input((2, 9, 9)))
    g.add("c1", Conv2d(f32(4, 2, 3, 3), f32(4), (1, 1), (1, 1), (1, 1), 1), ["x"])
    g.add("c2", Conv2d(f32(4, 4, 3, 3), None, (2, 2), (2, 2), (2, 2), 1), ["c1"])
    g.add(
        "n1",
        LIF(
            np.full((4, 1, 1), 0.5, np.float32),
            f32(4, 1, 1, lo=0.5, hi=1),
            recurrence=ConvRecurrence(f32(4, 4, 3, 3), f32(4), (1, 1)),
        ),
        ["c2"],
    )
    g.add("ap", AvgPool2d((2, 2), (1, 1), (1, 1), True, False, 3), ["n1"])
    g.add("sp", SumPool2d((2, 2), (2, 2), (1, 1)), ["ap"])
    g.add("sc", Scale(np.full((4, 1, 1), 0.5, np.float32)), ["sp"])
    g.add(
        "n2",
        CubaLIF(
            np.array(0.5, np.float32),
            np.full((4, 1, 1), 0.25, np.float32),
            np.array(1.0, np.float32),
            reset="zero",
            recurrence=OneToOneRecurrence(np.full((4, 1, 1), 0.125, np.float32)),
        ),
        ["sc"],
    )
    g.add("fl", Flatten(1, 2), ["n2"])
    g.add("fl2", Flatten(), ["fl"])
    g.add("fc", Linear(f32(3, 4 * 4 * 4)), ["fl2"])
    g.add("n3", LIF(np.array(0.0, np.float32), np.array(0.25, np.float32)), ["fc"])
    g.add("out", Output(), ["n3"])
    return g


def whole_sequence_graph() -> Graph:
    """A LeakyParallel-style graph: synapses over all T*B rows, a relu floor, no reset."""
    g = Graph(whole_sequence=True)
    g.add("x", Input((5,)))
    g.add("rnn", Linear(f32(7, 5), f32(7)), ["x"], source="lp.rnn")
    g.add("lp", LIF(f32(7, lo=0, hi=1), f32(7), reset="none", bias=f32(7), floor=0.0), ["rnn"], source="lp")
    g.add("out", Output(), ["lp"], source="output")
    return g


_GRAPHS: dict[str, Callable[[], Graph]] = {
    "dense": dense_graph,
    "conv": conv_graph,
    "whole_sequence": whole_sequence_graph,
}


@pytest.mark.parametrize("name", sorted(_GRAPHS))
def test_export_then_import_is_the_identity(name: str, tmp_path: Path) -> None:
    g = _GRAPHS[name]()
    assert import_nir(export_nir(g)) == g
    write_nir(g, tmp_path / "g.nir", dt=1e-3)
    assert import_nir(tmp_path / "g.nir") == g
    standard = nir.read(tmp_path / "g.nir")  # NIR's own reader, with its type check
    assert all(type(node).__module__.startswith("nir.") for node in standard.nodes.values())


def test_grouped_conv_round_trips(tmp_path: Path) -> None:
    """nir 1.0.8 types a Conv2d's input with ``weight.shape[1]`` channels, wrong for groups > 1: our export
    sets the right type in memory, but NIR's own reader recomputes it and its type check then fails, so
    the file is read with ``type_check=False`` here (import_nir always reads that way)."""
    g = Graph()
    g.add("x", Input((4, 6, 6)))
    g.add("c", Conv2d(f32(4, 2, 3, 3), None, (1, 1), (1, 1), (1, 1), 2), ["x"])
    g.add("n", LIF(np.array(0.5, np.float32), np.array(1.0, np.float32)), ["c"])
    g.add("out", Output(), ["n"])
    write_nir(g, tmp_path / "g.nir")
    assert import_nir(tmp_path / "g.nir") == g
    with pytest.raises(ValueError, match="type mismatch"):
        nir.read(tmp_path / "g.nir")
    assert isinstance(nir.read(tmp_path / "g.nir", type_check=False).nodes["c"], nir.Conv2d)


def test_every_float_op_type_is_covered() -> None:
    """The round-trip graphs hold every exportable op and recurrence type (MaxPool2d is refused below)."""
    kinds = {type(g.op(n)) for make in _GRAPHS.values() for g in [make()] for n in g}
    recs = {
        type(op.recurrence)
        for make in _GRAPHS.values()
        for g in [make()]
        for op in map(g.op, g)
        if isinstance(op, LIF | CubaLIF) and op.recurrence is not None
    }
    assert kinds == {Input, Output, Linear, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale, LIF, CubaLIF}
    assert recs == {DenseRecurrence, ConvRecurrence, OneToOneRecurrence}


def test_export_writes_standard_nodes(tmp_path: Path) -> None:
    """Readers that ignore the metadata see NIR's own node types, recurrent neurons as nested cells."""
    write_nir(dense_graph(), tmp_path / "g.nir")
    got = {k: type(v).__name__ for k, v in nir.read(tmp_path / "g.nir").nodes.items()}
    assert got == {
        "x": "Input",
        "fl": "Flatten",
        "fc": "Affine",
        "a": "LIF",
        "b": "NIRGraph",
        "c": "NIRGraph",
        "fc2": "Linear",
        "sc": "Scale",
        "d": "NIRGraph",
        "e": "CubaLIF",
        "f": "LIF",
        "out": "Output",
    }
    cell = nir.read(tmp_path / "g.nir").nodes["c"]
    assert {k: type(v).__name__ for k, v in cell.nodes.items()} == {
        "input": "Input",
        "lif": "IF",  # beta == 1
        "w_rec": "Linear",  # one-to-one as diag(V), as snnTorch exports it
        "output": "Output",
    }


def test_standard_fields_alone_round_trip_an_snntorch_style_graph() -> None:
    """Without the metadata, the snntorch convention reads back snnTorch-style ops exactly: the taus are
    snnTorch's float32 formulas, and beta is recovered from them bit for bit."""
    g = Graph()
    g.add("x", Input((4,)), source="x")
    g.add("fc", Linear(f32(6, 4), f32(6)), ["x"], source="fc")
    g.add("lif", LIF(f32(6, lo=0.5, hi=1), f32(6, lo=0.5, hi=1)), ["fc"], source="lif")
    g.add(
        "rec",
        LIF(
            f32(6, lo=0.5, hi=1),
            f32(6, lo=0.5, hi=1),
            zero_mode="drop_update",
            recurrence=DenseRecurrence(f32(6, 6), f32(6)),
        ),
        ["lif"],
        source="rec",
    )
    g.add(
        "syn",
        CubaLIF(f32(6, lo=0.5, hi=1), f32(6, lo=0.5, hi=1), f32(6, lo=0.5, hi=1)),
        ["rec"],
        source="syn",
    )
    g.add("out", Output(), ["syn"], source="out")
    assert import_nir(export_nir(g), use_metadata=False) == g


def test_edited_file_is_refused_unless_metadata_is_ignored() -> None:
    g = dense_graph()
    exported = export_nir(g)
    exported.nodes["fc"].weight = exported.nodes["fc"].weight * 2
    message = (
        "NIR node 'fc': its 'snncompile' metadata describes a linear op whose NIR field 'weight' differs "
        "from the file's (was the file edited after export?); pass use_metadata=False to import the NIR "
        "fields instead"
    )
    with pytest.raises(SerializationError, match=f"^{re.escape(message)}$"):
        import_nir(exported)
    small = Graph()  # the euler convention reads every standard field of a LIF (it refuses a CubaLIF)
    small.add("x", Input((12,)))
    small.add("fc", Linear(f32(6, 12), f32(6)), ["x"])
    small.add("a", LIF(f32(6, lo=0, hi=1), np.array(1.0, np.float32), reset="zero"), ["fc"])
    small.add("out", Output(), ["a"])
    exported = export_nir(small)
    exported.nodes["fc"].weight = exported.nodes["fc"].weight * 2
    imported = import_nir(exported, use_metadata=False, convention="euler", dt=1e-4)
    fc = imported.op("fc")
    assert isinstance(fc, Linear)
    np.testing.assert_array_equal(fc.weight, exported.nodes["fc"].weight)


def test_export_refuses_maxpool_dead_ends_and_fixed_point_graphs() -> None:
    g = Graph()
    g.add("x", Input((1, 4, 4)))
    g.add("mp", MaxPool2d((2, 2), (2, 2)), ["x"])
    g.add("out", Output(), ["mp"])
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^node 'mp' .*: maxpool2d cannot be exported to NIR \(NIR 1\.0 has no max pooling\); "
        r"exportable: input, output, linear",
    ):
        export_nir(g)
    dead = Graph()
    dead.add("x", Input((2,)))
    dead.add("t", Scale(np.array(2.0, np.float32)), ["x"])
    dead.add("out", Output(), ["x"])
    with pytest.raises(UnsupportedModuleError, match=r"^node\(s\) \['t'\] feed no Output; NIR would read"):
        export_nir(dead)
    q = Graph()
    q.add("x", Input((2,), frac=0))
    q.add("out", Output(), ["x"])
    with pytest.raises(
        UnsupportedModuleError, match=r"^export_nir writes float graphs; this graph is fixed-point"
    ):
        export_nir(q)


# ============================================================== (c) producers' conventions


def _ref_loop(
    x: np.ndarray,
    step: Callable[[np.ndarray], np.ndarray],
    thr: np.ndarray,
    reset: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Spikes of ``v = step(x[t])``, ``s = v > thr``, ``v = reset(v, s)`` (float64), margin-checked."""
    out = []
    for t in range(x.shape[0]):
        v = step(x[t])
        assert np.abs(v - thr).min() > _MARGIN, f"membrane within {_MARGIN} of threshold at t={t}: reseed"
        s = v > thr
        reset(v, s)
        out.append(s)
    return np.array(out, dtype=np.float32)


def _same_step_reset(kind: str, thr: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def subtract(v: np.ndarray, s: np.ndarray) -> np.ndarray:
        v -= s * thr
        # one spike per step: Rockpool and sinabs would emit several above 2*thr
        assert np.all(v <= thr), "membrane above twice the threshold: a multi-spike regime"
        return v

    def zero(v: np.ndarray, s: np.ndarray) -> np.ndarray:
        v[s] = 0.0
        return v

    return subtract if kind == "subtract" else zero


def _affine(n_in: int, n: int, scale: float = 2.0) -> nir.Affine:
    """Non-negative weights: the drive per sample lies in [0, scale + 0.05)."""
    return nir.Affine(f32(n, n_in, lo=0, hi=scale / n_in), f32(n, lo=0, hi=0.05))


def _drive(affine: nir.Affine, x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) @ affine.weight.astype(np.float64).T + affine.bias


# convention: (dt, drive scale, threshold range); sinabs adds the drive unscaled, so its thresholds are
# higher to keep one spike per step
_LIF_SETUPS: dict[str, tuple[float, float, tuple[float, float]]] = {
    "norse": (1e-3, 2.0, (0.5, 1.0)),
    "euler": (5e-4, 2.0, (0.5, 1.0)),
    "sinabs": (1.0, 1.0, (1.2, 2.0)),
}


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("convention", sorted(_LIF_SETUPS))
def test_lif_follows_each_producers_update(convention: str, reset: str) -> None:
    """A hand-built Affine -> LIF graph against the producer's own update, reset in the step it fires."""
    n, (dt, scale, (lo, hi)) = 5, _LIF_SETUPS[convention]
    tau = RNG.uniform(3, 8, n) * dt
    r = RNG.uniform(0.5, 2, n) if convention == "euler" else np.ones(n)
    v_leak = RNG.uniform(0, 0.3, n) if convention != "sinabs" else np.zeros(n)
    thr = RNG.uniform(lo, hi, n)
    affine = _affine(3, n, scale)
    lif = nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=thr)
    x = RNG.uniform(0, 1, (60, 4, 3)).astype(np.float32)
    v = np.zeros((4, n))

    def step(i: np.ndarray) -> np.ndarray:
        if convention == "norse":  # norse lif_box_feed_forward_step
            v[:] = v + dt / tau * (i + v_leak - v)
        elif convention == "euler":  # tau dv/dt = (v_leak - v) + r*I
            v[:] = v + dt / tau * ((v_leak - v) + r * i)
        else:  # sinabs: exp(-1/tau_mem) with tau in steps, norm_input=False
            v[:] = np.exp(-1 / (tau / dt)) * v + i
        return v

    want = _ref_loop(_drive(affine, x), step, thr, _same_step_reset(reset, thr))
    graph = import_nir(chain([3], affine, lif), convention=convention, reset=reset, dt=dt)
    got = snncompile.run_float(graph, x).output
    assert_exact(got, want, f"{convention} spikes")
    assert 0.02 < got.mean() < 0.98


# convention: (dt, drive scale, threshold range)
_CUBA_SETUPS: dict[str, tuple[float, float, tuple[float, float]]] = {
    "norse": (1e-3, 2.0, (0.3, 0.8)),
    "rockpool": (1e-3, 0.3, (1.0, 2.0)),
    "snntorch": (1e-4, 0.5, (0.5, 1.0)),
}


@pytest.mark.parametrize("convention", sorted(_CUBA_SETUPS))
def test_cubalif_follows_each_producers_update(convention: str) -> None:
    n, (dt, scale, (lo, hi)) = 4, _CUBA_SETUPS[convention]
    tau_syn, tau_mem = RNG.uniform(2, 6, n) * dt, RNG.uniform(4, 10, n) * dt
    if convention == "rockpool":  # rockpool.nn.modules.torch.nir: r carries dt
        r, w_in = tau_mem * np.exp(-dt / tau_mem) / dt, np.ones(n)
    elif convention == "snntorch":  # snntorch.export_nir
        r, w_in = tau_mem / dt, tau_syn / dt
    else:
        r, w_in = RNG.uniform(0.5, 2, n), RNG.uniform(0.5, 2, n)
    thr = RNG.uniform(lo, hi, n)
    affine = _affine(3, n, scale)
    cuba = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=np.zeros(n), v_threshold=thr, w_in=w_in)
    x = RNG.uniform(0, 1, (60, 4, 3)).astype(np.float32)
    i_syn, v, fired = np.zeros((4, n)), np.zeros((4, n)), np.zeros((4, n))
    rock_dt = float(np.min(tau_mem / (1 + r)))  # Rockpool's from_nir

    def step(i: np.ndarray) -> np.ndarray:
        if convention == "rockpool":  # LIFTorch.forward: isyn += x; decay both; vmem += isyn
            i_syn[:] = np.exp(-rock_dt / tau_syn) * (i_syn + i)
            v[:] = np.exp(-rock_dt / tau_mem) * v + i_syn
        elif convention == "snntorch":  # Synaptic, delayed subtract reset
            i_syn[:] = (1 - dt / tau_syn) * i_syn + i
            v[:] = (1 - dt / tau_mem) * v + i_syn - fired * thr
        else:  # norse: LIBox synapse (w_in x) then LIFBox membrane (r I)
            i_syn[:] = i_syn + dt / tau_syn * (w_in * i - i_syn)
            v[:] = v + dt / tau_mem * (r * i_syn - v)
        return v

    def reset(vv: np.ndarray, s: np.ndarray) -> np.ndarray:
        if convention == "snntorch":
            fired[:] = s
            return vv
        # Norse's from_nir: reset_value to v_reset = 0; Rockpool's LIFTorch subtracts
        return _same_step_reset("zero" if convention == "norse" else "subtract", thr)(vv, s)

    want = _ref_loop(_drive(affine, x), step, thr, reset)
    graph = import_nir(  # each convention's own reset
        chain([3], affine, cuba),
        convention=convention,
        dt=None if convention == "rockpool" else dt,  # Rockpool's dt comes from r
    )
    got = snncompile.run_float(graph, x).output
    assert_exact(got, want, f"{convention} spikes")
    assert 0.02 < got.mean() < 0.98


def test_rockpool_recurrent_cell() -> None:
    """A nested ``{input, lif, w_rec, output}`` cell: Rockpool adds ``W s[t-1]`` to the current before
    its decay, so the imported recurrent weights carry the synaptic decay too."""
    n, dt = 4, 1e-3
    tau_syn, tau_mem = RNG.uniform(2, 6, n) * dt, RNG.uniform(4, 10, n) * dt
    r = tau_mem * np.exp(-dt / tau_mem) / dt
    thr = RNG.uniform(1.0, 2.0, n)
    w = RNG.uniform(-0.3, 0.1, (n, n))
    cell = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([n])),
            "lif": nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=np.zeros(n), v_threshold=thr),
            "w_rec": nir.Affine(w, np.zeros(n)),
            "output": nir.Output(np.array([n])),
        },
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
    )
    affine = _affine(3, n, 0.2)
    x = RNG.uniform(0, 1, (60, 4, 3)).astype(np.float32)
    rock_dt = float(np.min(tau_mem / (1 + r)))
    i_syn, v, spk = np.zeros((4, n)), np.zeros((4, n)), np.zeros((4, n))

    def step(i: np.ndarray) -> np.ndarray:
        i_syn[:] = np.exp(-rock_dt / tau_syn) * (i_syn + i + spk @ w.T)
        v[:] = np.exp(-rock_dt / tau_mem) * v + i_syn
        return v

    def reset(vv: np.ndarray, s: np.ndarray) -> np.ndarray:
        spk[:] = s
        return _same_step_reset("subtract", thr)(vv, s)

    want = _ref_loop(_drive(affine, x), step, thr, reset)
    graph = import_nir(chain([3], affine, cell), convention="rockpool")
    got = snncompile.run_float(graph, x).output
    assert_exact(got, want, "rockpool spikes")
    assert 0.02 < got.mean() < 0.98


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("recurrent", [False, True])
def test_rockpool_convention_reproduces_rockpools_own_import(seed: int, recurrent: bool) -> None:
    """Random Affine -> CubaLIF graphs (``w_in`` != 1, which Rockpool ignores; ``r`` giving Rockpool's
    ``dt``), plain or in a recurrent cell, run by Rockpool's own ``from_nir`` model: the same spikes,
    in the regime where Rockpool emits at most one spike per step (its several are noted at import)."""
    pytest.importorskip("rockpool")
    from rockpool.nn.modules.torch.nir import from_nir

    rng = np.random.default_rng(seed)
    n_in, n, dt = 3, 5, 1e-3
    tau_syn, tau_mem = rng.uniform(2, 6, n) * dt, rng.uniform(4, 10, n) * dt
    p = {
        "tau_syn": tau_syn.astype(np.float32),
        "tau_mem": tau_mem.astype(np.float32),
        "r": rng.uniform(0.5, 3, n).astype(np.float32),
        "v_leak": np.zeros(n, np.float32),
        "v_threshold": rng.uniform(1, 2, n).astype(np.float32),
        "w_in": rng.uniform(0.5, 2, n).astype(np.float32),
    }
    neuron: Any = nir.CubaLIF(**p)
    if recurrent:
        neuron = nir.NIRGraph(
            nodes={
                "input": nir.Input(np.array([n])),
                "lif": neuron,
                "w_rec": nir.Linear(rng.uniform(-0.4, 0.2, (n, n)).astype(np.float32)),
                "output": nir.Output(np.array([n])),
            },
            edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
        )
    weight = rng.uniform(0, 0.6 / n_in, (n, n_in)).astype(np.float32)
    affine = nir.Affine(weight, rng.uniform(0, 0.05, n).astype(np.float32))
    nodes = {
        "input": nir.Input(np.array([n_in])),
        "fc": affine,
        "cuba": neuron,
        "output": nir.Output(np.array([n])),
    }
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "output")])
    x = rng.uniform(0, 1, (80, 4, n_in)).astype(np.float32)
    with torch.no_grad():
        out = from_nir(graph)(torch.from_numpy(x).transpose(0, 1))
    want = (out[0] if isinstance(out, tuple) else out).transpose(0, 1).numpy()
    assert want.max() == 1, "Rockpool emitted several spikes in one step: a regime the IR does not follow"
    assert 0.02 < want.mean() < 0.98
    with pytest.warns(ConventionWarning, match="w_in .* is ignored, as Rockpool's from_nir ignores it"):
        imported = import_nir(graph, convention="rockpool")
    assert_exact(snncompile.run_float(imported, x).output, want, "spikes against Rockpool")


_IF_CASES = [
    ("snntorch", None, 1.0),
    ("norse", None, 1.0),
    ("sinabs", None, 1.0),
    ("euler", 0.5, 2.0),  # dv/dt = r*I: a gain dt*r = 1
]


@pytest.mark.parametrize(("reset", "spikes"), [("subtract", [16, 32]), ("zero", [16, 33])])
@pytest.mark.parametrize(("convention", "dt", "r"), _IF_CASES)
def test_if_first_spike_on_the_seventeenth_step(
    convention: str, dt: float | None, r: float, reset: str, spikes: list[int]
) -> None:
    """IF, threshold 1, constant input 0.0625 (snnTorch PR #452). Sixteen steps bring v to exactly 1.0,
    which does not fire (``v > v_threshold``, strict in NIR, snnTorch and Norse), so the first spike is
    on the 17th step: index 16 counting from 0 ("t=17" counting from 1). sinabs' own SingleSpike fires
    on ``v >= thr``, i.e. at index 15; the sinabs convention keeps NIR's strict rule. After a subtract
    the membrane keeps 0.0625 (next spike at 32), after a reset to zero it restarts from 0 (33), with the
    delayed (snntorch) and the same-step (others) reset alike."""
    node = nir.IF(r=np.array([r]), v_threshold=np.array([1.0]))
    graph = import_nir(chain([1], node), convention=convention, reset=reset, dt=dt)
    x = np.full((40, 1, 1), 0.0625, np.float32)
    assert first_spikes(snncompile.run_float(graph, x).output) == spikes


def test_if_under_euler_scales_by_dt() -> None:
    graph = import_nir(
        chain([1], nir.IF(r=np.array([1.0]), v_threshold=np.array([1.0]))), convention="euler", dt=1e-3
    )
    assert first_spikes(snncompile.run_float(graph, np.full((40, 1, 1), 0.0625, np.float32)).output) == []


def test_snntorch_convention_scales_the_threshold_not_the_input() -> None:
    """snnTorch's ``hack_w_scale``: with ``r*dt/tau = 2`` the threshold is halved, no Scale node is added,
    and the spikes are those of ``v = beta*v + 2*x`` with the original threshold and a delayed reset."""
    dt, beta, thr = 1e-4, np.float32(0.75), 1.0
    tau = np.float32(dt) / (np.float32(1) - np.array([beta]))
    lif = nir.LIF(tau=tau, r=2 * tau / np.float32(dt), v_leak=np.zeros(1), v_threshold=np.array([thr]))
    graph = import_nir(chain([1], lif), convention="snntorch")
    op = graph.op("n0")
    assert isinstance(op, LIF) and op.beta[0] == beta and op.threshold[0] == np.float32(0.5)
    assert [graph.op(n).kind for n in graph] == ["input", "lif", "output"]
    x = RNG.uniform(0, 0.6, (50, 3, 1)).astype(np.float32)
    v, fired = np.zeros((3, 1)), np.zeros((3, 1))

    def step(i: np.ndarray) -> np.ndarray:
        v[:] = float(beta) * v + 2 * i - fired * thr
        return v

    def reset(vv: np.ndarray, s: np.ndarray) -> np.ndarray:
        fired[:] = s
        return vv

    want = _ref_loop(x.astype(np.float64), step, np.array([thr]), reset)
    assert_exact(snncompile.run_float(graph, x).output, want, "spikes")


def test_threshold_node_is_a_stateless_comparison() -> None:
    graph = import_nir(chain([3], nir.Threshold(np.array([0.0, 0.5, 1.0]))))
    x = RNG.uniform(-1, 2, (10, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        snncompile.run_float(graph, x).output, (x > [0.0, 0.5, 1.0]).astype(np.float32)
    )


def test_scalar_parameters(tmp_path: Path) -> None:
    """0-d neuron parameters (NIR's type check rejects them, and gzip cannot store them) stay 0-d."""
    lif = nir.LIF(tau=np.array(1e-3), r=np.array(10.0), v_leak=np.array(0.0), v_threshold=np.array(0.5))
    g = chain([3], _affine(3, 4), lif)
    g.nodes["output"] = nir.Output(np.array([4]))  # nir.write cannot store an undeclared type
    nir.write(tmp_path / "s.nir", g, compression=None)
    graph = import_nir(tmp_path / "s.nir")
    op = graph.op("n1")
    assert isinstance(op, LIF) and op.beta.shape == () and op.threshold.shape == ()
    assert op.beta == np.float32(0.9) and op.threshold == np.float32(0.5)


@pytest.mark.parametrize("declared", [[3], [1, 3], [20, 1, 3]])
def test_batch_and_time_dims_in_input_and_output_types(declared: list[int]) -> None:
    affine = _affine(3, 4)
    lif = nir.LIF(tau=np.full(4, 1e-3), r=np.full(4, 10.0), v_leak=np.zeros(4), v_threshold=np.ones(4))
    g = chain(declared, affine, lif)
    g.nodes["output"] = nir.Output(np.array([*declared[:-1], 4]))
    graph = import_nir(g)
    assert graph.shapes() == {"input": (3,), "n0": (4,), "n1": (4,), "output": (4,)}


def test_flatten_counts_over_its_declared_input_type() -> None:
    """A Flatten whose input type holds a batch dim (sinabs and torch-style exports) shifts its dims."""
    conv = nir.Conv2d(None, f32(2, 1, 3, 3), 1, 0, 1, 1, f32(2))
    lif = nir.LIF(tau=np.full(32, 1e-3), r=np.full(32, 10.0), v_leak=np.zeros(32), v_threshold=np.ones(32))
    batched = chain([1, 1, 6, 6], conv, nir.Flatten({"input": np.array([1, 2, 4, 4])}, 1, -1), lif)
    plain = chain([1, 6, 6], conv, nir.Flatten({"input": np.array([2, 4, 4])}, 0, -1), lif)
    assert import_nir(batched) == import_nir(plain)
    flat = import_nir(batched).op("n1")
    assert isinstance(flat, Flatten) and (flat.start_dim, flat.end_dim) == (0, -1)


def test_reset_delay_option_selects_the_timing() -> None:
    lif = nir.LIF(tau=np.full(2, 1e-3), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2))
    for convention, delay in [("snntorch", True), ("norse", False)]:
        op = import_nir(chain([2], lif), convention=convention, reset="zero").op("n0")
        assert isinstance(op, LIF) and op.reset_delay is delay and op.reset == "zero"
    op = import_nir(chain([2], lif), convention="snntorch", reset_delay=False).op("n0")
    assert isinstance(op, LIF) and op.reset_delay is False


# ============================================================== (d) refusals


_SUPPORTED = (
    "Affine, AvgPool2d, Conv2d, CubaLIF, Flatten, IF, Input, LIF, Linear, NIRGraph, Output, Scale, "
    "SumPool2d, Threshold"
)
_NO_SPIKES = (
    "it emits no spikes: its output is the membrane potential, while the IR's neurons output spikes "
    "(a leaky-integrator readout cannot be represented; read out the spikes of the layer before it)"
)


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        (nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)), _NO_SPIKES),
        (nir.CubaLI(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)), _NO_SPIKES),
        (nir.I(r=np.ones(2)), "it emits no spikes: an integrator's output is its state"),
        (nir.Delay(np.ones(2)), "the IR has no delay op"),
    ],
)
def test_unsupported_node_is_refused_by_name(node: Any, reason: str) -> None:
    kind = type(node).__name__
    message = (
        f"NIR node 'n0' is a {kind} node, which snncompile cannot import: {reason}; supported: {_SUPPORTED}"
    )
    with pytest.raises(UnsupportedModuleError, match=f"^{re.escape(message)}$"):
        import_nir(chain([2], node))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"convention": "lava"},
            "convention must be one of ['snntorch', 'norse', 'euler', 'sinabs', 'rockpool'], got 'lava'",
        ),
        ({"reset": "soft"}, "reset must be one of ['subtract', 'zero', 'none'], got 'soft'"),
        ({"convention": "euler"}, "the euler convention has no default time step; pass dt (in seconds)"),
        ({"dt": -1.0}, "dt must be a positive number of seconds, got -1.0"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        import_nir(chain([2], nir.Threshold(np.ones(2))), **kwargs)


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^NIR file '.*missing\.nir' does not exist$"):
        import_nir(tmp_path / "missing.nir")
    (tmp_path / "bad.nir").write_bytes(b"not hdf5")
    with pytest.raises(SerializationError, match=r"^cannot read NIR file '.*bad\.nir'"):
        import_nir(tmp_path / "bad.nir")
    with pytest.raises(InputError, match=r"^expected a nir\.NIRGraph or the path of a \.nir file, got int$"):
        import_nir(3)


def _lif(**fields: Any) -> nir.LIF:
    base = {"tau": np.full(2, 1e-3), "r": np.ones(2), "v_leak": np.zeros(2), "v_threshold": np.ones(2)}
    return nir.LIF(**{**base, **fields})


@pytest.mark.parametrize(
    ("node", "kwargs", "message"),
    [
        (
            _lif(v_reset=np.full(2, -0.5)),
            {"convention": "norse"},
            "NIR node 'n0' (LIF): v_reset is -0.5[2]; reset='zero' resets to 0 or by the threshold, so a "
            "nonzero reset value cannot be represented",
        ),
        (
            _lif(r=np.full(2, 3.0)),
            {"convention": "norse"},
            "NIR node 'n0' (LIF): r is 3[2]; the norse convention needs r = 1 (Norse's LIF ignores r (it only "
            "warns); use convention='euler' to apply it)",
        ),
        (
            _lif(v_leak=np.full(2, 0.1)),
            {"convention": "sinabs", "dt": 1e-4},
            "NIR node 'n0' (LIF): v_leak is 0.1[2]; the sinabs convention needs v_leak = 0 (sinabs' import "
            "refuses a leak voltage)",
        ),
        (
            _lif(),
            {"convention": "rockpool"},
            "NIR node 'n0' (LIF): the rockpool convention has no rule for LIF (Rockpool 3.1's from_nir fails "
            "on a LIF: it reads node.tau_mem, which nir.LIF lacks)",
        ),
        (
            _lif(),
            {"convention": "euler", "dt": 2e-3},
            "NIR node 'n0' (LIF): forward Euler with dt=0.002 larger than tau (min 0.001) gives a negative "
            "decay; use a smaller dt",
        ),
        (
            nir.CubaLIF(
                tau_syn=np.ones(2),
                tau_mem=np.ones(2),
                r=np.ones(2),
                v_leak=np.zeros(2),
                v_threshold=np.ones(2),
            ),
            {"convention": "sinabs"},
            "NIR node 'n0' (CubaLIF): the sinabs convention has no rule for CubaLIF (sinabs' from_nir imports "
            "no CubaLIF)",
        ),
    ],
)
def test_unrepresentable_fields_are_refused(node: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedModuleError, match=f"^{re.escape(message)}$"):
        import_nir(chain([2], node), **kwargs)


def test_graph_structure_is_checked() -> None:
    thr = nir.Threshold(np.ones(2))
    two_inputs = nir.NIRGraph(
        nodes={
            "a": nir.Input(np.array([2])),
            "b": nir.Input(np.array([2])),
            "t": thr,
            "o": nir.Output(np.array([2])),
        },
        edges=[("a", "t"), ("b", "t"), ("t", "o")],
        type_check=False,
    )
    with pytest.raises(UnsupportedModuleError, match=r"^the NIR graph has 2 Input node\(s\) \['a', 'b'\]"):
        import_nir(two_inputs)
    summed = nir.NIRGraph(
        nodes={
            "i": nir.Input(np.array([2])),
            "s": nir.Scale(np.ones(2)),
            "t": thr,
            "o": nir.Output(np.array([2])),
        },
        edges=[("i", "s"), ("i", "t"), ("s", "t"), ("t", "o")],
        type_check=False,
    )
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^NIR node 't' has 2 inputs \['i', 's'\]; the IR's ops take exactly one",
    ):
        import_nir(summed)
    not_a_cell = nir.NIRGraph(
        nodes={"i": nir.Input(np.array([2])), "t": thr, "o": nir.Output(np.array([2]))},
        edges=[("i", "t"), ("t", "o")],
        type_check=False,
    )
    with pytest.raises(UnsupportedModuleError, match=r"^NIR subgraph 'n0' is not a recurrent cell"):
        import_nir(chain([2], not_a_cell))


def test_shapes_that_never_fit_name_the_node() -> None:
    lif = nir.LIF(tau=np.full(5, 1e-3), r=np.full(5, 10.0), v_leak=np.zeros(5), v_threshold=np.ones(5))
    with pytest.raises(
        GraphError,
        match=r"^no per-sample input shape fits the NIR graph .*; the furthest try failed at "
        r"NIR node 'n1' \(lif\): beta of shape \(5,\)",
    ):
        import_nir(chain([1, 3], _affine(3, 4), lif))


def test_conventions_table_lists_every_option() -> None:
    assert set(CONVENTIONS) == {"snntorch", "norse", "sinabs", "rockpool", "euler"}
    assert math.isclose(CONVENTIONS["snntorch"].default_dt or 0, 1e-4)


# ============================================================== (e) input gains


def _norse_lif_step(v: np.ndarray, tau: np.ndarray, v_leak: np.ndarray, dt: float) -> Callable[..., Any]:
    def step(i: np.ndarray) -> np.ndarray:  # Norse's lif_box_feed_forward_step
        v[:] = v + dt / tau * (i + v_leak - v)
        return v

    return step


def _gain_lif(n: int, dt: float) -> tuple[nir.LIF, np.ndarray, np.ndarray, np.ndarray]:
    tau = RNG.uniform(3, 8, n) * dt
    v_leak, thr = RNG.uniform(0, 0.3, n), RNG.uniform(0.5, 1.0, n)
    return nir.LIF(tau=tau, r=np.ones(n), v_leak=v_leak, v_threshold=thr), tau, v_leak, thr


@pytest.mark.parametrize("into", ["weights", "threshold"])
def test_an_input_gain_folds_exactly(into: str) -> None:
    """Norse's LIF scales its input by ``dt/tau``: a Scale node that quantization folds into the Affine
    before it, or, fed straight from the input (the NIR paper's one-neuron LIF), into the neuron's
    threshold. Both folded graphs spike as Norse's update does, and compile."""
    n, dt = 5, 1e-3
    lif, tau, v_leak, thr = _gain_lif(n, dt)
    affine = _affine(3, n)
    nodes = [affine, lif] if into == "weights" else [lif]
    x = RNG.uniform(0, 1, (60, 4, 3 if into == "weights" else n)).astype(np.float32)
    if into == "threshold":
        x *= 2
    drive = _drive(affine, x) if into == "weights" else x.astype(np.float64)
    want = _ref_loop(
        drive, _norse_lif_step(np.zeros((4, n)), tau, v_leak, dt), thr, _same_step_reset("subtract", thr)
    )
    graph = import_nir(chain([x.shape[2]], *nodes), convention="norse", reset="subtract")
    assert any(isinstance(graph.op(n), Scale) for n in graph)
    folded, notes = fold_scale(graph)
    kinds = [graph.op(n).kind for n in graph.topo_order()]
    assert [folded.op(n).kind for n in folded.topo_order()] == [k for k in kinds if k != "scale"]
    what = "weights and bias scaled" if into == "weights" else "threshold, bias and recurrent weights divided"
    assert len(notes) == 1 and re.search(rf"input gain .* folded into n0 \({what}", notes[0]), notes
    assert_exact(snncompile.run_float(folded, x).output, want, f"spikes, gain folded into the {into}")
    assert 0.02 < want.mean() < 0.98
    for target in target_names():
        program = snncompile.compile_graph(graph, target, x)
        agree = float(np.mean(program.simulate(program.quantize_input(x)).spikes == want))
        assert agree > 0.95, f"{target}: fixed-point spikes agree with Norse's update on {agree:.1%}"


def _norse_cuba(n: int, dt: float) -> tuple[nir.CubaLIF, dict[str, np.ndarray]]:
    p = {
        "tau_syn": RNG.uniform(2, 6, n) * dt,
        "tau_mem": RNG.uniform(4, 10, n) * dt,
        "r": RNG.uniform(0.5, 2, n),
        "w_in": RNG.uniform(0.5, 2, n),
        "v_threshold": RNG.uniform(0.3, 0.8, n),
    }
    return nir.CubaLIF(v_leak=np.zeros(n), **p), p


def _norse_cuba_step(
    p: dict[str, np.ndarray], dt: float, batch: int, w_rec: np.ndarray | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Norse's from_nir CubaLIF (LIBox synapse on ``w_in * x``, then LIFBox membrane on ``r * I``),
    the input of a recurrent cell being ``x + w_rec s[t-1]``; subtract reset in the step it fires."""
    n = p["r"].size
    i_syn, v, spk = np.zeros((batch, n)), np.zeros((batch, n)), np.zeros((batch, n))
    thr = p["v_threshold"]

    def step(x: np.ndarray) -> np.ndarray:
        drive = x if w_rec is None else x + spk @ w_rec.T
        i_syn[:] = i_syn + dt / p["tau_syn"] * (p["w_in"] * drive - i_syn)
        v[:] = v + dt / p["tau_mem"] * (p["r"] * i_syn - v)
        return v

    def reset(vv: np.ndarray, s: np.ndarray) -> np.ndarray:
        spk[:] = s
        return _same_step_reset("subtract", thr)(vv, s)

    return step, reset


@pytest.mark.parametrize("fed_by", ["affine", "input"])
def test_a_recurrent_cells_gain_folds_with_its_recurrent_weights(fed_by: str) -> None:
    """A nested ``{input, cuba, w_rec, output}`` cell under the norse convention: the gain
    ``w_in*k_s*r*k_m`` scales the recurrent weights at import; folded into the Affine before the cell
    they stay, folded into the neuron (the cell fed straight from the input) they are divided back."""
    n, dt = 4, 1e-3
    cuba, p = _norse_cuba(n, dt)
    w = RNG.uniform(-0.3, 0.1, (n, n))
    cell = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([n])),
            "lif": cuba,
            "w_rec": nir.Linear(w),
            "output": nir.Output(np.array([n])),
        },
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
    )
    affine = _affine(3, n)
    x = RNG.uniform(0, 1 if fed_by == "affine" else 0.6, (60, 4, 3 if fed_by == "affine" else n))
    x = x.astype(np.float32)
    drive = _drive(affine, x) if fed_by == "affine" else x.astype(np.float64)
    step, reset = _norse_cuba_step(p, dt, 4, w)
    want = _ref_loop(drive, step, p["v_threshold"], reset)
    nodes = [affine, cell] if fed_by == "affine" else [cell]
    graph = import_nir(chain([x.shape[2]], *nodes), convention="norse", reset="subtract")
    folded, notes = fold_scale(graph)
    assert not any(isinstance(folded.op(k), Scale) for k in folded) and len(notes) == 1
    assert_exact(snncompile.run_float(folded, x).output, want, f"spikes, cell fed by the {fed_by}")
    assert 0.02 < want.mean() < 0.98


@pytest.mark.parametrize("per", ["channel", "neuron"])
def test_a_conv_layers_gain_folds_per_channel_or_into_the_threshold(per: str) -> None:
    """Norse LIFs after a Conv2d: one tau per channel folds the gain into the conv's kernels and bias;
    a tau per neuron cannot, so it goes into the thresholds instead."""
    c, hw, dt = 2, 4, 1e-3
    shape = (c, hw, hw)
    tau_c = RNG.uniform(3, 8, (c, 1, 1)) * dt
    tau = np.broadcast_to(tau_c, shape).copy() if per == "channel" else RNG.uniform(3, 8, shape) * dt
    v_leak, thr = np.zeros(shape), RNG.uniform(0.3, 0.6, shape)
    weight, bias = f32(c, 1, 3, 3, lo=0, hi=0.4), f32(c, lo=0, hi=0.05)
    conv = nir.Conv2d(None, weight, 1, 1, 1, 1, bias)
    lif = nir.LIF(tau=tau, r=np.ones(shape), v_leak=v_leak, v_threshold=thr)
    x = RNG.uniform(0, 1, (40, 3, 1, hw, hw)).astype(np.float32)
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x.astype(np.float64)).flatten(0, 1),
        torch.from_numpy(weight.astype(np.float64)),
        torch.from_numpy(bias.astype(np.float64)),
        padding=1,
    )
    drive = ref.reshape(40, 3, *shape).numpy()
    want = _ref_loop(
        drive, _norse_lif_step(np.zeros((3, *shape)), tau, v_leak, dt), thr, _same_step_reset("subtract", thr)
    )
    graph = import_nir(chain([1, hw, hw], conv, lif), convention="norse", reset="subtract")
    folded, notes = fold_scale(graph)
    what = "weights and bias scaled" if per == "channel" else "threshold, bias and recurrent weights divided"
    assert len(notes) == 1 and what in notes[0], notes
    assert_exact(snncompile.run_float(folded, x).output, want, f"spikes, a gain per {per}")
    assert 0.02 < want.mean() < 0.98


def test_a_gain_that_rounds_to_one_in_float32_adds_no_scale() -> None:
    """float32 time constants rarely give a float64 gain of exactly 1 (the Braille graphs'
    ``w_in*dt/tau_syn * r*dt/tau_mem``); one that rounds to 1 in float32 scales nothing."""
    dt = 1e-3
    tau_syn, tau_mem = np.full(3, 3e-3, np.float32), np.full(3, 9.1e-3, np.float32)
    w_in, r = tau_syn / np.float32(dt), tau_mem / np.float32(dt)
    gain = w_in.astype(np.float64) * dt / tau_syn * r * dt / tau_mem
    assert not np.all(gain == 1) and np.all(gain.astype(np.float32) == 1)
    cuba = nir.CubaLIF(
        tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=np.zeros(3), v_threshold=np.ones(3), w_in=w_in
    )
    graph = import_nir(chain([2], _affine(2, 3), cuba), convention="norse")
    assert [graph.op(k).kind for k in graph.topo_order()] == ["input", "linear", "cubalif", "output"]


@pytest.mark.parametrize(
    ("scale", "state", "message"),
    [
        (
            -0.5,
            None,
            "not into the weights before it (it reads input node 'x', not a Linear or Conv2d), not into the neuron "
            "after it (the gain is not positive everywhere (dividing the threshold by it would flip the "
            "spike test))",
        ),
        (
            0.5,
            "mem",
            "not into the weights before it (it reads input node 'x', not a Linear or Conv2d), not into the neuron "
            "after it (output 'out' reads its states, whose values would change)",
        ),
    ],
)
def test_a_gain_that_cannot_fold_is_refused(scale: float, state: str | None, message: str) -> None:
    g = Graph()
    g.add("x", Input((2,)))
    g.add("gain", Scale(np.full(2, scale, np.float32)), ("x",), source="n0")
    g.add("lif", LIF(np.full(2, 0.5, np.float32), np.ones(2, np.float32)), ("gain",))
    g.add("out", Output(state), ("lif",))
    head = (
        "node 'gain' (scale -0.5[2], from 'n0') " if scale < 0 else "node 'gain' (scale 0.5[2], from 'n0') "
    )
    full = head + "has no fixed-point form and cannot be folded: " + message
    with pytest.raises(snncompile.QuantizationError, match=f"^{re.escape(full)}$"):
        snncompile.compile_graph(g, "default", np.ones((3, 1, 2), np.float32))


# ============================================================== (f) where a producer computes otherwise

_SAME_STEP_SUBTRACT = (
    "NIR's same-step subtract reset (z = v > v_threshold; v -= z*v_threshold) is the IR's immediate reset "
    "(snnTorch's reset_delay=False) only while a step leaves the membrane at or below v_threshold after it "
    "(below twice v_threshold before); above that the IR's membrane stays above the threshold without firing"
)
_MULTI_SPIKE_TAIL = (
    " and subtracts as many thresholds; the IR emits one spike a step, only above v_threshold, and takes "
    "one threshold: equal while the membrane stays below twice v_threshold and never equals it"
)
_SINABS_SPIKES = "sinabs' MultiSpike emits trunc(v/v_threshold) spikes (v > 0)" + _MULTI_SPIKE_TAIL
_ROCKPOOL_SPIKES = (
    "Rockpool's LIFTorch emits floor(v/v_threshold) spikes where v >= v_threshold" + _MULTI_SPIKE_TAIL
)


def _cuba(**fields: Any) -> nir.CubaLIF:
    base = {
        "tau_syn": np.full(2, 2e-3),
        "tau_mem": np.full(2, 4e-3),
        "r": np.ones(2),
        "v_leak": np.zeros(2),
        "v_threshold": np.ones(2),
    }
    return nir.CubaLIF(**{**base, **fields})


@pytest.mark.parametrize(
    ("node", "kwargs", "notes"),
    [
        (_lif(), {"convention": "norse"}, []),  # Norse resets to v_reset in the step: the IR's exactly
        (_lif(), {"convention": "snntorch", "reset": "zero", "reset_delay": False}, []),
        (nir.IF(r=np.ones(2), v_threshold=np.ones(2)), {"convention": "euler", "dt": 1.0}, []),
        (
            _lif(),
            {"convention": "norse", "reset": "subtract"},
            [
                "NIR LIF node 'n0' (norse convention): reset='subtract' in the step it fires as asked, where "
                "Norse's from_nir resets to v_reset in the step it fires",
                f"NIR LIF node 'n0' (norse convention): {_SAME_STEP_SUBTRACT}",
            ],
        ),
        (
            _lif(),
            {"convention": "norse", "reset_delay": True},
            [
                "NIR LIF node 'n0' (norse convention): reset='zero' one step later (snnTorch's default) as "
                "asked, where Norse's from_nir resets to v_reset in the step it fires"
            ],
        ),
        (_lif(), {"convention": "sinabs"}, [f"NIR LIF node 'n0' (sinabs convention): {_SINABS_SPIKES}"]),
        (
            nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
            {"convention": "sinabs"},
            [
                f"NIR IF node 'n0' (sinabs convention): {_SINABS_SPIKES}",
                "NIR IF node 'n0' (sinabs convention): sinabs' IAF clips the membrane at -v_threshold every "
                "step (min_v_mem), the IR does not: equal while the membrane stays above -v_threshold",
            ],
        ),
        (
            _cuba(w_in=np.full(2, 2.0)),
            {"convention": "rockpool"},
            [
                f"NIR CubaLIF node 'n0' (rockpool convention): {_ROCKPOOL_SPIKES}",
                "NIR CubaLIF node 'n0' (rockpool convention): w_in (2[2]) is ignored, as Rockpool's from_nir "
                "ignores it (NIR's ODE would scale the input current by it)",
            ],
        ),
    ],
)
def test_differences_are_noted(node: Any, kwargs: dict[str, Any], notes: list[str]) -> None:
    """Where the IR's neuron can compute otherwise than the producer the convention names, the import
    says so, one warning per difference (never a silent change); where it cannot, it says nothing."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_nir(chain([2], node), **kwargs)
    assert [str(w.message) for w in caught if issubclass(w.category, ConventionWarning)] == notes


def test_one_note_names_every_node_it_concerns() -> None:
    with pytest.warns(ConventionWarning, match=r"^NIR LIF nodes 'n1', 'n3' \(sinabs convention\): sinabs'"):
        import_nir(chain([2], _affine(2, 2), _lif(), _affine(2, 2), _lif()), convention="sinabs")


@pytest.mark.parametrize(
    ("node", "kwargs", "message"),
    [
        (
            _lif(v_threshold=np.array([1.0, -0.5])),
            {"convention": "norse"},
            "NIR node 'n0' (LIF): v_threshold is [-0.5..1][2]; a reset to v_reset in the step it fires needs "
            "thresholds >= 0 in the IR (its immediate reset, snnTorch's reset_delay=False, doubles a membrane "
            "below a negative threshold)",
        ),
        (
            _cuba(),
            {"convention": "euler", "dt": 1e-3},
            "NIR node 'n0' (CubaLIF): the euler convention has no rule for CubaLIF (plain forward Euler feeds "
            "the membrane the previous step's current r*I[t-1], the IR's CubaLIF the current of the step I[t]; "
            "convention='norse' takes the same Euler steps with I[t], as Norse's from_nir does)",
        ),
        (
            nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
            {"convention": "rockpool", "dt": 1e-3},
            "NIR node 'n0' (IF): the rockpool convention has no rule for IF (Rockpool 3.1's from_nir has no IF "
            "mapping (NotImplementedError))",
        ),
    ],
)
def test_rules_the_ir_cannot_follow_are_refused(node: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedModuleError, match=f"^{re.escape(message)}$"):
        import_nir(chain([2], node), **kwargs)
