"""The fold_scale pass: every Scale (an imported NIR neuron's input gain ``g``) merged into the layer
before it or into the neuron after it, so that the fixed-point graph holds none (Scale has no
fixed-point form). Tried in this order:

* **into the weights**, when the Scale reads a Linear or Conv2d that feeds nothing else:
  ``g * (W x + b) = (g W) x + g b``, row by row (per output channel for a conv, so a conv's gain must
  be one value per channel);
* **into the neuron** it alone feeds, when every ``g > 0``: a LIF or CubaLIF fed ``g * x`` spikes
  exactly as the same neuron fed ``x`` whose states hold the potential divided by ``g``, with threshold,
  bias, floor and recurrent weights and bias divided by ``g`` (every term of the update is linear in
  them and the spike test ``m > thr`` is kept by a positive factor). The neuron must have no state
  quantizer (its grid would move) and no Output may read its states (their values change).

A gain of exactly 1 is dropped; any other Scale is refused, naming why neither fold applies. Folds are
computed in float64 and stored as float32, so the folded graph equals the imported one up to float32
rounding, which is why quantization notes each fold.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snncompile.errors import QuantizationError
from snncompile.ir import (
    LIF,
    Conv2d,
    ConvRecurrence,
    CubaLIF,
    DenseRecurrence,
    Graph,
    Linear,
    OneToOneRecurrence,
    Op,
    Output,
    Recurrence,
    Scale,
)
from snncompile.ir.ops import _fmt_array
from snncompile.passes.fold_batchnorm import rebuild


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64).astype(np.float32)


def _per_channel(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The gain as one value per output channel (axis 0 of ``shape``), or None where it varies within one."""
    full = np.broadcast_to(g, shape).reshape(shape[0], -1)
    return full[:, 0] if np.all(full == full[:, :1]) else None


def _into_layer(layer: Linear | Conv2d, c: np.ndarray) -> Linear | Conv2d:
    weight = layer.weight.astype(np.float64) * c.reshape(-1, *[1] * (layer.weight.ndim - 1))
    bias = None if layer.bias is None else _f32(layer.bias.astype(np.float64) * c)
    return dataclasses.replace(layer, weight=_f32(weight), bias=bias)


def _divided_recurrence(rec: Recurrence, g: np.ndarray, shape: tuple[int, ...]) -> Recurrence | str:
    """The recurrence divided by each target neuron's gain, or why it cannot be."""
    if isinstance(rec, OneToOneRecurrence):
        return OneToOneRecurrence(_f32(rec.weight.astype(np.float64) / np.broadcast_to(g, shape)))
    c = _per_channel(g, shape)
    if c is None:
        return "its recurrent weights would need a gain per channel"
    weight = _f32(rec.weight.astype(np.float64) / c.reshape(-1, *[1] * (rec.weight.ndim - 1)))
    bias = None if rec.bias is None else _f32(rec.bias.astype(np.float64) / c)
    if isinstance(rec, DenseRecurrence):
        return DenseRecurrence(weight, bias)
    assert isinstance(rec, ConvRecurrence)
    return ConvRecurrence(weight, bias, rec.padding)


def _into_neuron(graph: Graph, neuron: str, g: np.ndarray) -> LIF | CubaLIF | str:
    """The neuron with its states divided by the gain ``g``, or why that is not exact."""
    op = graph.op(neuron)
    assert isinstance(op, LIF | CubaLIF)
    shape = graph.shapes()[neuron]
    if not np.all(g > 0):
        return "the gain is not positive everywhere (dividing the threshold by it would flip the spike test)"
    quantized = [v for v in ("mem", "syn") if getattr(op, f"{v}_quant", None) is not None]
    if quantized:
        return f"the neuron has a {quantized[0]} state quantizer, whose grid would move"
    read = [u for u in graph.users(neuron) if isinstance(o := graph.op(u), Output) and o.state is not None]
    if read:
        return f"output {read[0]!r} reads its states, whose values would change"
    changes: dict[str, object] = {"threshold": _f32(op.threshold.astype(np.float64) / g)}
    if isinstance(op, LIF) and op.bias is not None:
        changes["bias"] = _f32(op.bias.astype(np.float64) / g)
    if isinstance(op, LIF) and op.floor is not None and op.floor != 0:
        if np.ptp(g) != 0:
            return f"its floor {op.floor:g} would need one value per neuron"
        changes["floor"] = op.floor / float(np.ravel(g)[0])
    if op.recurrence is not None:
        rec = _divided_recurrence(op.recurrence, g, shape)
        if isinstance(rec, str):
            return rec
        changes["recurrence"] = rec
    return dataclasses.replace(op, **changes)  # type: ignore[arg-type]


def _fold_one(graph: Graph, node: str) -> tuple[Graph, str]:
    op = graph.op(node)
    assert isinstance(op, Scale)
    (src,) = graph.args(node)
    g = op.scale.astype(np.float64)
    gain = _fmt_array(g)
    if np.all(g == 1):
        return rebuild(graph, {}, {node: src}), f"{node}: input gain of 1 dropped"
    layer = graph.op(src)
    why_not_layer = f"it reads {layer.kind} node {src!r}, not a Linear or Conv2d"
    if isinstance(layer, Linear | Conv2d):
        c = _per_channel(g, graph.shapes()[src])
        if graph.users(src) != [node]:
            why_not_layer = (
                f"its {layer.kind} {src!r} also feeds {[u for u in graph.users(src) if u != node]}"
            )
        elif c is None:
            why_not_layer = f"the gain varies within a channel of conv {src!r}"
        else:
            folded = _into_layer(layer, c)
            note = f"{node}: input gain {gain} folded into {src} (weights and bias scaled per output)"
            return rebuild(graph, {src: folded}, {node: src}), note
    users = graph.users(node)
    neuron_op: Op | None = graph.op(users[0]) if len(users) == 1 else None
    if isinstance(neuron_op, LIF | CubaLIF):
        neuron = _into_neuron(graph, users[0], g)
        if not isinstance(neuron, str):
            note = (
                f"{node}: input gain {gain} folded into {users[0]} (threshold, bias and recurrent weights "
                "divided by it: its states hold the potential divided by the gain)"
            )
            return rebuild(graph, {users[0]: neuron}, {node: src}), note
        why_not_neuron = neuron
    else:
        why_not_neuron = f"it feeds {users}, not one LIF or CubaLIF"
    raise QuantizationError(
        f"node {node!r} (scale {gain}, from {graph.source(node)!r}) has no fixed-point form and cannot be "
        f"folded: not into the weights before it ({why_not_layer}), not into the neuron after it "
        f"({why_not_neuron})"
    )


def fold_scale(graph: Graph) -> tuple[Graph, tuple[str, ...]]:
    """``graph`` with every Scale folded away (see the module docstring), and one note per fold."""
    notes: list[str] = []
    while True:
        node = next((n for n in graph.topo_order() if isinstance(graph.op(n), Scale)), None)
        if node is None:
            return graph, tuple(notes)
        graph, note = _fold_one(graph, node)
        notes.append(note)
