"""Versioned JSON files for graphs, derived from the op dataclasses' fields (one reader for every op).

Encoding: an IR dataclass is ``{"type": ClassName, field: value, ...}``; an array is
``{"dtype": ..., "shape": [...], "data": [...]}`` (float32 values are written as the float64 numbers
they equal, so they read back bit for bit); tuples are lists. The file is
``{"format": "snncompile.graph", "version": 1, "whole_sequence": bool, "nodes": [...]}`` with the
nodes in topological order.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.errors import GraphError, SerializationError, SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import OPS, Node, Op
from snncompile.ir.qops import FIXED_OPS
from snncompile.loading import write_atomic

FORMAT = "snncompile.graph"
VERSION = 1
IR_TYPES: dict[str, type[Node]] = {**OPS, **{cls.__name__: cls for cls in FIXED_OPS}}
"""Every IR dataclass by type name, float and fixed-point: what a graph file may hold."""
_DTYPES = ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def _encode(value: Any) -> Any:
    if isinstance(value, Node):
        out: dict[str, Any] = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name))
        return out
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "shape": list(value.shape), "data": value.ravel().tolist()}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return tuple(_decode(v, where) for v in value)
    if not isinstance(value, dict):
        return value
    if "type" in value:
        cls = IR_TYPES.get(value["type"])
        if cls is None:
            raise SerializationError(f"{where}: unknown op type {value['type']!r}; known: {sorted(IR_TYPES)}")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in value.items() if k != "type"}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise SerializationError(f"{where}: {value['type']} has no field(s) {unknown}")
        try:
            return cls(**{k: _decode(v, f"{where}.{k}") for k, v in fields.items()})
        except TypeError as e:
            raise SerializationError(f"{where}: bad fields for {value['type']}: {e}") from None
        except GraphError as e:
            raise SerializationError(f"{where}: {e}") from None
    if set(value) == {"dtype", "shape", "data"}:
        if value["dtype"] not in _DTYPES:
            raise SerializationError(f"{where}: unsupported dtype {value['dtype']!r}")
        try:
            return np.array(value["data"], dtype=value["dtype"]).reshape(value["shape"])
        except (ValueError, TypeError) as e:
            raise SerializationError(f"{where}: bad array: {e}") from None
    raise SerializationError(f"{where}: unrecognised object with keys {sorted(value)}")


def graph_to_dict(graph: Graph) -> dict[str, Any]:
    nodes = [
        {"name": n, "op": _encode(graph.op(n)), "inputs": list(graph.args(n)), "source": graph.source(n)}
        for n in graph.topo_order()
    ]
    return {"format": FORMAT, "version": VERSION, "whole_sequence": graph.whole_sequence, "nodes": nodes}


def graph_from_dict(data: Any) -> Graph:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SerializationError(f'not an snncompile graph (expected "format": {FORMAT!r})')
    if data.get("version") != VERSION:
        raise SerializationError(
            f"graph file version {data.get('version')!r} is not supported (this snncompile reads {VERSION})"
        )
    graph = Graph(whole_sequence=bool(data.get("whole_sequence", False)))
    name: Any = None
    try:
        for node in data["nodes"]:
            name = node["name"]
            op = _decode(node["op"], f"node {name!r}")
            if not isinstance(op, Op):
                raise SerializationError(f"node {name!r}: {type(op).__name__} is not an op")
            graph.add(name, op, tuple(node["inputs"]), node.get("source", ""))
    except (KeyError, TypeError) as e:
        raise SerializationError(f"malformed graph file near node {name!r}: missing or bad {e}") from None
    except SnnCompileError as e:
        if isinstance(e, SerializationError):
            raise
        raise SerializationError(f"malformed graph file: {e}") from None
    return graph


def save_graph(graph: Graph, path: str | os.PathLike[str]) -> None:
    """Writes ``graph`` as JSON atomically (a temporary file renamed over ``path``)."""
    text = json.dumps(graph_to_dict(graph), indent=1, allow_nan=False)
    write_atomic(path, (text + "\n").encode())


def load_graph(path: str | os.PathLike[str]) -> Graph:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SerializationError(f"cannot read graph file {str(path)!r}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SerializationError(f"{str(path)!r} is not valid JSON: {e}") from None
    return graph_from_dict(data)
