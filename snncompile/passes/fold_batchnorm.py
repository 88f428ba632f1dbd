"""The fold_batchnorm pass: every eval-mode BatchNorm merged into the Linear or Conv2d before it.

For output channel ``c``, with ``a[c] = gamma[c] / sqrt(var[c] + eps)`` (gamma = 1, beta = 0 without
``affine``)::

    BN(W x + b) = (W x + b - mean) * a + beta  =  W' x + b',   W'[c] = a[c] * W[c],  b' = (b - mean) * a + beta

computed in float64 and stored as float32. The result equals the float model up to float32 rounding
(not bit for bit: torch rounds ``W x + b`` before normalizing), which is why quantization notes every
fold. ``prepare_qat`` folds the same way before training, so a QAT model holds no BatchNorm and stays
exact. A BatchNorm that does not directly follow a Linear / Conv2d used by nothing else has no
fixed-point form and is refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from snncompile.errors import QuantizationError
from snncompile.ir import BatchNorm, Conv2d, Graph, Linear, Op


def rebuild(graph: Graph, ops: dict[str, Op], dropped: dict[str, str]) -> Graph:
    """A copy of ``graph`` with the ops in ``ops`` replaced and each node in ``dropped`` removed, its
    users reading the node it maps to instead (names, sources and order kept)."""
    out = Graph(graph.whole_sequence)
    for node in graph.topo_order():
        if node in dropped:
            continue
        args = tuple(dropped.get(a, a) for a in graph.args(node))
        out.add(node, ops.get(node, graph.op(node)), args, graph.source(node))
    return out


def _folded(layer: Linear | Conv2d, bn: BatchNorm) -> Linear | Conv2d:
    mean, var = bn.mean.astype(np.float64), bn.var.astype(np.float64)
    gamma = np.ones_like(mean) if bn.weight is None else bn.weight.astype(np.float64)
    beta = np.zeros_like(mean) if bn.bias is None else bn.bias.astype(np.float64)
    a = gamma / np.sqrt(var + bn.eps)
    b = np.zeros_like(mean) if layer.bias is None else layer.bias.astype(np.float64)
    weight = layer.weight.astype(np.float64) * a.reshape(-1, *[1] * (layer.weight.ndim - 1))
    bias = (b - mean) * a + beta
    return dataclasses.replace(layer, weight=weight.astype(np.float32), bias=bias.astype(np.float32))


def fold_batchnorm(graph: Graph) -> tuple[Graph, tuple[str, ...]]:
    """``graph`` with every BatchNorm folded into its synapse op, and one note per fold."""
    ops: dict[str, Op] = {}
    dropped: dict[str, str] = {}
    notes: list[str] = []
    for node in graph.topo_order():
        bn = graph.op(node)
        if not isinstance(bn, BatchNorm):
            continue
        (src,) = graph.args(node)
        layer = graph.op(src)
        what = f"node {node!r} (batchnorm, module {graph.source(node)!r})"
        if not isinstance(layer, Linear | Conv2d):
            raise QuantizationError(
                f"{what} follows a {layer.kind}; only a BatchNorm directly after a Linear or Conv layer can be "
                "folded into fixed point (move it after the layer, or remove it)"
            )
        if graph.users(src) != [node]:
            raise QuantizationError(
                f"{what}: its layer {src!r} also feeds {[u for u in graph.users(src) if u != node]}, so the "
                "BatchNorm cannot be folded into it"
            )
        ops[src] = _folded(layer, bn)
        dropped[node] = src
        notes.append(f"{node}: folded into {src} (weights and bias scaled per output channel)")
    if not dropped:
        return graph, ()
    return rebuild(graph, ops, dropped), tuple(notes)
