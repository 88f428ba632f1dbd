"""The graph IR: JSON round trips of every op, printing, equality, immutability, file-format errors."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from snncompile import GraphError, SerializationError
from snncompile.ir import (
    IR_TYPES,
    LIF,
    QLIF,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    ConvRecurrence,
    CubaLIF,
    DenseRecurrence,
    FixedQuant,
    Flatten,
    Graph,
    Input,
    InputGrid,
    LevelTable,
    Linear,
    MaxPool2d,
    OneToOneRecurrence,
    Output,
    QConv2d,
    QCubaLIF,
    QLinear,
    Scale,
    SumPool2d,
    graph_from_dict,
    graph_to_dict,
    load_graph,
    save_graph,
)

RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def conv_graph() -> Graph:
    """Every stateless conv-side op on a (2, 8, 8) input, ending in a CubaLIF with conv recurrence."""
    g = Graph()
    g.add("x", Input((2, 8, 8)))
    g.add("c1", Conv2d(f32(4, 2, 3, 3), f32(4), (1, 1), (1, 1), (1, 1), 1), ["x"])
    g.add("c2", Conv2d(f32(4, 1, 3, 3), None, (2, 2), (1, 1), (1, 1), 4), ["c1"])
    g.add("ap", AvgPool2d((2, 2), (1, 1), (1, 1), True, False, 3), ["c2"])
    g.add("mp", MaxPool2d((2, 2), (1, 1), (0, 0), (1, 1), False), ["ap"])
    g.add("sp", SumPool2d((1, 1), (1, 1)), ["mp"])
    g.add("sc", Scale(np.full((4, 1, 1), 0.5, np.float32)), ["sp"])
    g.add(
        "n",
        CubaLIF(
            alpha=np.array(0.5, np.float32),
            beta=np.full((4, 1, 1), 0.25, np.float32),
            threshold=np.array(1.0, np.float32),
            reset="zero",
            reset_delay=False,
            recurrence=ConvRecurrence(f32(4, 4, 3, 3), f32(4), (1, 1)),
            mem_quant=LevelTable(np.linspace(-1, 1, 16, dtype=np.float32)),
            syn_quant=LevelTable(np.linspace(-2, 2, 16, dtype=np.float32)),
        ),
        ["sc"],
    )
    g.add("out", Output(), ["n"])
    return g


def dense_graph() -> Graph:
    """Linear / Flatten / LIF variants with every recurrence kind, bias, floor and graded spikes."""
    g = Graph(whole_sequence=False)
    g.add("x", Input((3, 4)))
    g.add("fl", Flatten(0, -1), ["x"])
    g.add("fc", Linear(f32(6, 12), f32(6)), ["fl"])
    g.add("a", LIF(np.float32(0.5) * np.ones(6, np.float32), np.array(1.0, np.float32)), ["fc"])
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
            recurrence=OneToOneRecurrence(np.full(6, 0.25, np.float32)),
        ),
        ["b"],
    )
    g.add("fc2", Linear(f32(5, 6)), ["c"])
    g.add(
        "d",
        LIF(
            f32(5).clip(0, 1),
            np.array(0.5, np.float32),
            reset="none",
            bias=f32(5),
            floor=0.0,
        ),
        ["fc2"],
    )
    g.add("out", Output(), ["d"])
    return g


def fixed_graph() -> Graph:
    """The fixed-point ops: integer arrays on power-of-two grids."""

    def ints(*shape: int) -> np.ndarray:
        return RNG.integers(-100, 100, shape).astype(np.int64)

    mem = FixedQuant(8, -32768, 32767, "floor")
    g = Graph()
    g.add("x", Input((2, 6, 6), frac=0))
    g.add("c", QConv2d(ints(3, 2, 3, 3), ints(3), weight_frac=7), ["x"])
    g.add("ap", AvgPool2d((2, 2), (2, 2)), ["c"])
    g.add(
        "n1",
        QCubaLIF(
            alpha=np.array(128, np.int64),
            alpha_frac=8,
            beta=np.array(200, np.int64),
            decay_frac=8,
            threshold=np.array(256, np.int64),
            mem=mem,
            syn=FixedQuant(6, -128, 127, "half_even"),
            in_frac=9,
            recurrence=OneToOneRecurrence(np.array(3, np.int64)),
            rec_frac=2,
        ),
        ["ap"],
    )
    g.add("fl", Flatten(), ["n1"])
    g.add("fc", QLinear(ints(4, 12), None, weight_frac=5), ["fl"])
    g.add(
        "n2",
        QLIF(
            beta=np.full(4, 230, np.int64),
            decay_frac=8,
            threshold=np.array(256, np.int64),
            mem=mem,
            in_frac=5,
            reset="zero",
            zero_mode="drop_update",
            graded=np.array(3, np.int64),
            graded_frac=1,
            recurrence=DenseRecurrence(ints(4, 4), ints(4)),
            rec_frac=6,
            floor=None,
        ),
        ["fc"],
    )
    g.add("out", Output(), ["n2"])
    return g


def normalized_graph() -> Graph:
    """An input quantizer and an eval-mode BatchNorm (float ops folded away before quantizing)."""
    g = Graph(whole_sequence=False)
    g.add("x", Input((12,)))
    g.add("grid", InputGrid(4, -127, 127), ["x"])
    g.add("fc", Linear(f32(6, 12), f32(6)), ["grid"])
    g.add("bn", BatchNorm(f32(6), f32(6) ** 2 + 0.1, f32(6), None, 1e-3), ["fc"])
    g.add("a", LIF(np.array(0.5, np.float32), np.array(1.0, np.float32)), ["bn"])
    g.add("out", Output(), ["a"])
    return g


GRAPHS = [conv_graph, dense_graph, fixed_graph, normalized_graph]


def test_the_graphs_cover_every_ir_type() -> None:
    seen: set[str] = set()

    def visit(value: object) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            seen.add(type(value).__name__)
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name))

    for make in GRAPHS:
        g = make()
        for n in g.topo_order():
            visit(g.op(n))
    assert seen == set(IR_TYPES)


@pytest.mark.parametrize("make", GRAPHS)
def test_json_round_trip_is_identity(make, tmp_path) -> None:
    g = make()
    g.verify()
    assert graph_from_dict(json.loads(json.dumps(graph_to_dict(g)))) == g
    save_graph(g, tmp_path / "g.json")
    back = load_graph(tmp_path / "g.json")
    assert back == g
    assert str(back) == str(g)
    for n in g.topo_order():
        for field, value in g.op(n).arrays().items():
            other = back.op(n).arrays()[field]
            assert other.dtype == value.dtype
            assert other.tobytes() == value.tobytes()  # bit for bit, not just ==


def test_round_trip_keeps_float32_bits_of_awkward_values(tmp_path) -> None:
    w = np.array([[0.1, 1e-45, -3.4028235e38, 2.0**-24]], dtype=np.float32)
    g = Graph()
    g.add("x", Input((1,)))
    g.add("fc", Linear(w.T.copy()), ["x"])
    g.add("out", Output(), ["fc"])
    save_graph(g, tmp_path / "g.json")
    assert load_graph(tmp_path / "g.json").op("fc").weight.tobytes() == w.T.tobytes()


def test_str_prints_one_line_per_node() -> None:
    g = dense_graph()
    lines = str(g).splitlines()
    assert len(lines) == len(g)
    assert lines[0] == "%x = input[shape=[3, 4]]()"
    assert lines[2] == "%fc = linear[12->6, bias](%fl)"
    assert lines[3] == "%a = lif[beta=0.5[6], thr=1, reset=subtract](%fc)"
    assert lines[4] == (
        "%b = lif[beta=0.875, thr=[1..6][6], reset=zero, zero=drop_update, graded=0.5, rec=dense[6, 6]](%a)"
    )
    assert lines[-1] == "%out = output(%d)"
    assert re.fullmatch(r"%d = lif\[beta=.*, reset=none, bias=.*, floor=0\]\(%fc2\)", lines[-2])


def test_topological_order_is_deterministic() -> None:
    g = Graph()
    g.add("x", Input((2,)))
    g.add("b", Scale(np.array(2.0, np.float32)), ["x"])
    g.add("a", Scale(np.array(3.0, np.float32)), ["x"])
    g.add("out", Output(), ["b"])
    assert g.topo_order() == ["x", "b", "a", "out"]


def test_ops_are_immutable_and_compare_by_content() -> None:
    w = f32(3, 2)
    op = Linear(w, None)
    w[0, 0] = 99.0  # the op holds its own copy
    assert op.weight[0, 0] != 99.0
    with pytest.raises(ValueError):
        op.weight[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.bias = None  # type: ignore[misc]
    assert op == Linear(op.weight.copy(), None)
    assert op != Linear(op.weight.astype(np.float64), None)
    assert op != Linear(op.weight, np.zeros(3, np.float32))
    assert dataclasses.replace(op, bias=np.zeros(3, np.float32)).bias is not None


def test_with_op_returns_a_changed_copy() -> None:
    g = dense_graph()
    new = g.with_op("fc2", Linear(np.zeros((5, 6), np.float32)))
    assert new != g
    assert g.op("fc2").weight.any()


def test_fracs_are_inferred_in_fixed_graphs() -> None:
    g = fixed_graph()
    assert g.is_fixed and not dense_graph().is_fixed
    fracs = g.fracs()
    assert (fracs["c"], fracs["ap"], fracs["n1"], fracs["fc"], fracs["n2"]) == (7, 9, 0, 5, 1)
    bad = g.with_op("fc", QLinear(g.op("fc").weight, None, weight_frac=4))
    with pytest.raises(GraphError, match=r"node 'n2' .*input arrives on 2\^-4, the neuron expects 2\^-5"):
        bad.verify()


def test_shapes_are_inferred_per_sample() -> None:
    shapes = conv_graph().shapes()
    assert shapes["c1"] == (4, 8, 8)
    assert shapes["c2"] == (4, 4, 4)
    assert shapes["ap"] == (4, 5, 5)  # padding 1, stride 1, ceil_mode
    assert shapes["mp"] == (4, 4, 4)
    assert shapes["out"] == (4, 4, 4)


def _doc(g: Graph) -> dict:
    return json.loads(json.dumps(graph_to_dict(g)))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=99), r"version 99 is not supported \(this snncompile reads 1\)"),
        (lambda d: d.update(format="other"), r"not an snncompile graph"),
        (
            lambda d: d["nodes"][2]["op"].update(type="Bogus"),
            r"node 'fc': unknown op type 'Bogus'; known: \[",
        ),
        (lambda d: d["nodes"][2]["op"].update(extra=1), r"node 'fc': Linear has no field\(s\) \['extra'\]"),
        (lambda d: d["nodes"][2]["op"]["weight"].update(dtype="complex64"), r"unsupported dtype 'complex64'"),
        (lambda d: d["nodes"][2]["op"]["weight"].update(shape=[7, 7]), r"node 'fc'.weight: bad array"),
        (lambda d: d["nodes"][2].pop("inputs"), r"malformed graph file near node 'fc'"),
        (lambda d: d["nodes"][2].update(inputs=["nope"]), r"input 'nope' is not in the graph"),
    ],
)
def test_bad_graph_files_are_refused_clearly(edit, message) -> None:
    doc = _doc(dense_graph())
    edit(doc)
    with pytest.raises(SerializationError, match=message):
        graph_from_dict(doc)


def test_unreadable_graph_files(tmp_path) -> None:
    with pytest.raises(SerializationError, match="cannot read graph file"):
        load_graph(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SerializationError, match="is not valid JSON"):
        load_graph(tmp_path / "bad.json")
