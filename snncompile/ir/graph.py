"""The graph: a thin owner of a ``networkx.DiGraph`` whose nodes each hold one op.

Edges carry data within one time step. Recurrence (a neuron's own previous-step spikes) lives inside
the neuron op, never as an edge, so the graph is acyclic and a topological order always exists.
Each node keeps its op under ``"op"``, its ordered inputs under ``"args"`` and the model path it came
from under ``"source"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import networkx as nx
import numpy as np

from snncompile.errors import GraphError
from snncompile.ir.ops import LIF, NEURON_OPS, CubaLIF, FixedQuant, Input, Op, Output, Shape
from snncompile.ir.qops import Q_NEURON_OPS, QLIF, QCubaLIF, out_frac


def state_names(op: Op) -> tuple[str, ...]:
    """The state variables a run records for a node computing ``op``: ``("mem",)`` for a LIF,
    ``("mem", "syn")`` for a CubaLIF, none for a stateless op."""
    if isinstance(op, CubaLIF | QCubaLIF):
        return ("mem", "syn")
    if isinstance(op, LIF | QLIF):
        return ("mem",)
    return ()


class Graph:
    """A spiking network in the IR.

    ``whole_sequence`` records how the traced model runs its synapses in float32: per time step
    (snnTorch's usual loop, ``x[t]`` of shape (B, ...)) or once over all ``T*B`` rows (models built on
    ``torch.nn.RNN`` such as ``LeakyParallel``). Integer semantics do not depend on it; float32
    results do, because a GEMM's rounding depends on its row count.
    """

    def __init__(self, whole_sequence: bool = False) -> None:
        self._g: nx.DiGraph = nx.DiGraph()
        self.whole_sequence = whole_sequence
        self._topo: tuple[str, ...] | None = None  # the node order, until a node is added

    # ------------------------------------------------------------------------------ building

    def add(self, name: str, op: Op, inputs: Sequence[str] = (), source: str = "") -> str:
        """Adds node ``name`` computing ``op`` from ``inputs`` (in argument order); returns the name."""
        if not name.isidentifier():
            raise GraphError(f"node name {name!r} is not an identifier")
        if name in self._g:
            raise GraphError(f"node name {name!r} is used twice")
        if len(inputs) != op.arity:
            raise GraphError(f"node {name!r}: {op.kind} takes {op.arity} input(s), got {len(inputs)}")
        for src in inputs:
            if src not in self._g:
                raise GraphError(f"node {name!r}: input {src!r} is not in the graph")
        self._topo = None
        self._g.add_node(name, op=op, args=tuple(inputs), source=source, order=len(self._g))
        for src in inputs:
            self._g.add_edge(src, name)
        return name

    def fresh_name(self, base: str) -> str:
        """``base`` made a unique identifier: ``fc1``, or ``fc1_1`` when ``fc1`` is taken."""
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "node"
        if not base[0].isalpha() and base[0] != "_":
            base = "n" + base
        name, i = base, 0
        while name in self._g:
            i += 1
            name = f"{base}_{i}"
        return name

    def with_op(self, name: str, op: Op) -> Graph:
        """A copy of this graph with node ``name`` computing ``op`` instead."""
        out = self.copy()
        out._g.nodes[name]["op"] = op
        return out

    def copy(self) -> Graph:
        out = Graph(self.whole_sequence)
        out._g = self._g.copy()
        return out

    # ------------------------------------------------------------------------------- queries

    def __contains__(self, name: object) -> bool:
        return name in self._g

    def __iter__(self) -> Iterator[str]:
        return iter(self.topo_order())

    def __len__(self) -> int:
        return len(self._g)

    def op(self, name: str) -> Op:
        op: Op = self._g.nodes[name]["op"]
        return op

    def args(self, name: str) -> tuple[str, ...]:
        args: tuple[str, ...] = self._g.nodes[name]["args"]
        return args

    def source(self, name: str) -> str:
        source: str = self._g.nodes[name]["source"]
        return source

    def users(self, name: str) -> list[str]:
        return sorted(self._g.successors(name), key=self._order)

    def _order(self, name: str) -> int:
        order: int = self._g.nodes[name]["order"]
        return order

    def topo_order(self) -> list[str]:
        """Every node, inputs before users, ties broken by insertion order (deterministic); computed
        once per structure (adding a node recomputes it)."""
        if self._topo is None:
            self._topo = tuple(nx.lexicographical_topological_sort(self._g, key=self._order))
        return list(self._topo)

    def _only(self, cls: type[Op]) -> str:
        found: list[str] = [n for n in self._g if isinstance(self.op(n), cls)]
        if len(found) != 1:
            raise GraphError(f"a graph needs exactly one {cls.kind} node, found {len(found)}: {found}")
        return found[0]

    @property
    def input_name(self) -> str:
        return self._only(Input)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The Output nodes, by position (the order the model returns them in)."""
        return tuple(sorted((n for n in self._g if isinstance(self.op(n), Output)), key=self._order))

    def output_source(self, output: str) -> tuple[str, str | None]:
        """What Output node ``output`` reads: its input node, and the state (None: the node's value)."""
        op = self.op(output)
        if not isinstance(op, Output):
            raise GraphError(f"node {output!r} is not an output node (outputs: {list(self.outputs)})")
        return self.args(output)[0], op.state

    @property
    def output_name(self) -> str:
        """The node the first output reads (the input of the first Output node)."""
        outputs = self.outputs
        if not outputs:
            raise GraphError("the graph has no output node")
        return self.args(outputs[0])[0]

    def neurons(self) -> list[str]:
        """The neuron nodes (float or fixed-point) in topological order."""
        return [n for n in self.topo_order() if isinstance(self.op(n), NEURON_OPS + Q_NEURON_OPS)]

    @property
    def is_fixed(self) -> bool:
        """Whether this is a fixed-point graph (its input arrives as integer codes)."""
        op = self.op(self._only(Input))
        assert isinstance(op, Input)
        return op.frac is not None

    def node_for_source(self, source: str) -> str:
        """The node traced from model path ``source`` (e.g. ``"lif1"`` or ``"2"``)."""
        for n in self.topo_order():
            if self.source(n) == source:
                return n
        raise GraphError(f"no node comes from model path {source!r}")

    # ----------------------------------------------------------------------------- checking

    def shapes(self) -> dict[str, Shape]:
        """The per-sample output shape of every node; raises GraphError naming the first bad node."""
        out: dict[str, Shape] = {}
        for n in self.topo_order():
            try:
                out[n] = tuple(int(d) for d in self.op(n).out_shape([out[a] for a in self.args(n)]))
            except GraphError as e:
                raise GraphError(f"node {n!r} ({self.line(n)}): {e}") from None
        return out

    def fracs(self) -> dict[str, int]:
        """The grid (``frac``) of every node's output in a fixed-point graph."""
        out: dict[str, int] = {}
        for n in self.topo_order():
            op = self.op(n)
            try:
                if isinstance(op, Output) and op.state is not None:
                    source: FixedQuant = getattr(self.op(self.args(n)[0]), op.state)
                    out[n] = source.frac
                else:
                    out[n] = out_frac(op, [out[a] for a in self.args(n)])
            except GraphError as e:
                raise GraphError(f"node {n!r} ({self.line(n)}): {e}") from None
        return out

    def verify(self) -> None:
        """Checks every invariant and raises GraphError naming the node that breaks one.

        A single ``input`` node and at least one ``output`` node (one reading a state only from a
        neuron that has it), an acyclic within-step graph, every op's arity and shapes, parameters
        that broadcast against their neurons, finite float32 parameters.
        """
        if not nx.is_directed_acyclic_graph(self._g):
            raise GraphError(f"the graph has a cycle: {nx.find_cycle(self._g)}")
        self._only(Input)
        if not self.outputs:
            raise GraphError("a graph needs at least one output node, found none")
        for n in self._g:
            op = self.op(n)
            if len(self.args(n)) != op.arity:
                raise GraphError(f"node {n!r}: {op.kind} takes {op.arity} input(s)")
            if isinstance(op, Output) and op.state is not None:
                src = self.args(n)[0]
                if op.state not in state_names(self.op(src)):
                    raise GraphError(
                        f"node {n!r} reads state {op.state!r} of node {src!r} ({self.op(src).kind}), which has "
                        f"states {list(state_names(self.op(src)))}"
                    )
            for field, value in op.arrays().items():
                if value.dtype != op.array_dtype:
                    raise GraphError(
                        f"node {n!r}: {field} must be {np.dtype(op.array_dtype)}, got {value.dtype}"
                    )
                if not np.all(np.isfinite(value)):
                    raise GraphError(f"node {n!r}: {field} holds NaN or infinite values")
        self.shapes()
        if self.is_fixed:
            self.fracs()

    # ----------------------------------------------------------------------------- printing

    def line(self, name: str) -> str:
        op = self.op(name)
        attrs = op.attrs()
        inner = f"[{', '.join(attrs)}]" if attrs else ""
        args = ", ".join(f"%{a}" for a in self.args(name))
        return f"%{name} = {op.kind}{inner}({args})"

    def __str__(self) -> str:
        return "\n".join(self.line(n) for n in self.topo_order())

    def __repr__(self) -> str:
        outputs = ", ".join(f"%{o}" for o in self.outputs)
        return f"<Graph {len(self)} nodes, outputs {outputs}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        mine, theirs = self.topo_order(), other.topo_order()
        return (
            self.whole_sequence == other.whole_sequence
            and mine == theirs
            and all(
                self.op(n) == other.op(n)
                and self.args(n) == other.args(n)
                and self.source(n) == other.source(n)
                for n in mine
            )
        )

    __hash__ = None  # type: ignore[assignment]
