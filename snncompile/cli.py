"""The ``snncompile`` command line: thin click commands over the library.

Errors are one line on stderr with exit code 1 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import traceback
from typing import Any

import click
import numpy as np
import snntorch as snn
import torch
from torch import nn

from snncompile import __version__
from snncompile.errors import InputError, SnnCompileError
from snncompile.frontend import trace
from snncompile.interpreters import run_float
from snncompile.ir import LIF, Conv2d, CubaLIF, Graph, Input, Linear, load_graph
from snncompile.loading import load_checkpoint, load_factory, load_npz, save_npz


class _Group(click.Group):
    """Turns every error into one line on stderr, unless ``--debug`` asks for the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            if ctx.params.get("debug"):
                traceback.print_exc()
            prefix = "" if isinstance(e, SnnCompileError) else f"internal error ({type(e).__name__}): "
            message = " ".join(str(e).split()) or type(e).__name__
            raise click.ClickException(prefix + message) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="snncompile")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Compile trained spiking neural networks to bit-exact neuromorphic hardware programs.

    MODEL is `path/to/file.py:factory` (a function returning the torch module; weights come from
    --checkpoint, a state_dict file) or a graph `.json` written by snncompile.
    """
    ctx.obj = {"quiet": quiet}


def _guess_input_shape(model: nn.Module) -> tuple[int, ...]:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return (m.in_features,)
        if isinstance(m, snn.LeakyParallel):
            return (m.rnn.input_size,)
        if isinstance(m, nn.Conv2d):
            break
    raise InputError("cannot tell the model's input shape from its first layer; pass --input-shape C,H,W")


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise InputError(f"--input-shape {text!r} must be comma-separated integers, e.g. 1,28,28") from None
    if not shape or min(shape) <= 0:
        raise InputError(f"--input-shape {text!r} must hold positive sizes")
    return shape


def load_model_graph(model: str, checkpoint: str | None, input_shape: tuple[int, ...] | None) -> Graph:
    """The float graph of MODEL: a saved graph ``.json``, or a traced ``file.py:factory`` + checkpoint."""
    if model.endswith(".json"):
        if checkpoint:
            raise InputError("--checkpoint applies to file.py:factory models, not to a saved graph")
        graph = load_graph(model)
        graph.verify()
        return graph
    module = load_factory(model)
    if checkpoint:
        load_checkpoint(module, checkpoint)
    shape = input_shape or _guess_input_shape(module)
    return trace(module, torch.zeros((1, *shape)))


_MODEL = click.argument("model")
_CHECKPOINT = click.option(
    "--checkpoint", type=click.Path(dir_okay=False), help="state_dict file (read with weights_only=True)."
)


@main.command()
@_MODEL
@_CHECKPOINT
@click.option("--input-shape", help="Per-sample input shape, e.g. 1,28,28 (default: from the first layer).")
def inspect(model: str, checkpoint: str | None, input_shape: str | None) -> None:
    """Print the graph of MODEL, one line per node.

    Example: snncompile inspect net.py:build --checkpoint net.pt
    """
    graph = load_model_graph(model, checkpoint, _parse_shape(input_shape) if input_shape else None)
    click.echo(str(graph))
    shapes = graph.shapes()
    neurons = graph.neurons()
    synapses = sum(
        op.weight.size for n in graph.topo_order() if isinstance(op := graph.op(n), Linear | Conv2d)
    )
    click.echo(
        f"# {len(graph)} nodes, {len(neurons)} neuron layers, "
        f"{sum(int(np.prod(shapes[n])) for n in neurons)} neurons, {synapses} weights"
    )


@main.command()
@_MODEL
@_CHECKPOINT
@click.option(
    "--input", "input_path", required=True, type=click.Path(dir_okay=False), help="X.npz with x[T, B, ...]."
)
@click.option(
    "-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False), help="Y.npz to write."
)
@click.option(
    "--record",
    type=click.Choice(["output", "all"]),
    default="output",
    show_default=True,
    help="Save the output neuron node only, or every neuron node.",
)
@click.pass_context
def simulate(
    ctx: click.Context, model: str, checkpoint: str | None, input_path: str, output_path: str, record: str
) -> None:
    """Run MODEL on the inputs in X.npz and write spikes and membranes to Y.npz.

    X.npz holds `x` (T, B, *input_shape; uint8 spikes or float32 currents). Y.npz gets `spikes`
    (T, B, *output_shape; uint8, or float32 for graded spikes) and `membrane` of the output neuron node;
    with --record all also `spikes/NODE`, `membrane/NODE` (and `syn/NODE`) for every neuron node.

    Example: snncompile simulate net.py:build --checkpoint net.pt --input x.npz -o y.npz
    """
    x = load_npz(input_path, "x")
    if x.ndim < 3:
        raise InputError(f"{input_path!r}: x has shape {x.shape}; expected (T, B, *input_shape)")
    graph = load_model_graph(model, checkpoint, tuple(x.shape[2:]))
    expected = graph.op(graph.input_name)
    assert isinstance(expected, Input)
    if tuple(x.shape[2:]) != tuple(expected.shape):
        raise InputError(
            f"{input_path!r}: x has per-sample shape {x.shape[2:]}; the model expects {expected.shape}"
        )
    run = run_float(graph, x)
    out = graph.output_name
    arrays: dict[str, np.ndarray] = {}
    if isinstance(out_op := graph.op(out), LIF | CubaLIF):
        arrays["spikes"] = _spike_array(run.spikes[out], out_op)
        arrays["membrane"] = run.states[out]["mem"]
    else:
        arrays["output"] = run.output
    if record == "all":
        for n in graph.neurons():
            op = graph.op(n)
            assert isinstance(op, LIF | CubaLIF)
            arrays[f"spikes/{n}"] = _spike_array(run.spikes[n], op)
            for var, value in run.states[n].items():
                arrays[f"{'membrane' if var == 'mem' else var}/{n}"] = value
    save_npz(output_path, arrays)
    if not ctx.obj["quiet"]:
        t, b = x.shape[:2]
        click.echo(
            f"simulated {t} steps x {b} samples: {int(np.count_nonzero(run.output))} output spikes -> {output_path}"
        )


def _spike_array(spikes: np.ndarray, op: LIF | CubaLIF) -> np.ndarray:
    """uint8 for binary spikes; a neuron with a graded-spike factor other than 1 keeps float32 values."""
    return spikes.astype(np.uint8) if np.all(op.graded == 1) else spikes
