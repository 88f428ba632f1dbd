"""The fold_input_grid pass: the model's input quantizer (an InputGrid right after the input) taken
out of the graph and returned, so quantization makes its grid the program's input format.

``InputGrid`` rounds ``x`` half to even onto ``2**-frac`` and clamps the codes to ``[lo, hi]``; a
compiled program's ``quantize_input`` does the same to currents before they enter the hardware, so the
program with input grid ``2**-frac`` computes what the model computes.
"""

from __future__ import annotations

from snncompile.errors import QuantizationError
from snncompile.ir import Graph, InputGrid
from snncompile.passes.fold_batchnorm import rebuild


def fold_input_grid(graph: Graph) -> tuple[Graph, InputGrid | None]:
    """``graph`` without its InputGrid node, and that node's op (None when the model has none)."""
    grids = [n for n in graph.topo_order() if isinstance(graph.op(n), InputGrid)]
    if not grids:
        return graph, None
    inp = graph.input_name
    node = grids[0]
    if len(grids) > 1 or graph.args(node) != (inp,) or graph.users(inp) != [node]:
        raise QuantizationError(
            f"node {node!r} (inputgrid): an input quantizer must be the only user of the input and the only "
            f"one in the graph, found {grids} reading {[graph.args(g)[0] for g in grids]}"
        )
    grid = graph.op(node)
    assert isinstance(grid, InputGrid)
    return rebuild(graph, {}, {node: inp}), grid
