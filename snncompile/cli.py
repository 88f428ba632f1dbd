"""The ``snncompile`` command line: thin click commands over the library.

Errors are one line on stderr with exit code 1 (``--debug`` shows the traceback instead).

Each command imports what it needs when it runs, so ``--help``, ``--version`` and ``targets`` start
without torch, brevitas, numba or snnTorch (tests/test_cli.py checks).
"""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from snncompile._version import __version__
from snncompile.errors import GraphError, InputError, QuantizationError, SnnCompileError
from snncompile.nir_cli import import_nir_model, nir_options
from snncompile.sweep.command import sweep as sweep_command

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from snncompile.interpreters import Run
    from snncompile.ir import Graph
    from snncompile.targets import Target


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
    --checkpoint, a state_dict file), a graph `.json` written by snncompile, or a `.nir` file (read as
    --convention, --reset, --reset-delay and --dt say; where the IR can compute otherwise than the
    convention's producer, a `note:` line on stderr says where).
    """
    ctx.obj = {"quiet": quiet}


def _guess_input_shape(model: nn.Module) -> tuple[int, ...]:
    import snntorch as snn
    from torch import nn

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


def _load_module(model: str, checkpoint: str | None) -> nn.Module:
    from snncompile.loading import load_checkpoint, load_factory

    module = load_factory(model)
    note = load_checkpoint(module, checkpoint) if checkpoint else None
    ctx = click.get_current_context(silent=True)
    if note and ctx is not None and not (ctx.find_root().obj or {}).get("quiet"):
        click.echo(f"note: {note}")
    return module


def load_model_graph(model: str, checkpoint: str | None, input_shape: tuple[int, ...] | None) -> Graph:
    """The graph of MODEL: a build directory (fixed point), a saved graph ``.json``, a ``.nir`` file, or
    a traced ``file.py:factory`` with its checkpoint (float)."""
    import torch

    from snncompile.build import is_build, read_build
    from snncompile.compiler import trace_sequence
    from snncompile.ir import load_graph

    if model.endswith(".nir"):
        if checkpoint:
            raise InputError("--checkpoint applies to file.py:factory models; a .nir file holds its weights")
        return import_nir_model(model)
    if is_build(model) or model.endswith(".json"):
        if checkpoint:
            raise InputError("--checkpoint applies to file.py:factory models, not to a build or saved graph")
        graph = read_build(model)[0] if is_build(model) else load_graph(model)
        graph.verify()
        return graph
    module = _load_module(model, checkpoint)
    shape = input_shape or _guess_input_shape(module)
    return trace_sequence(module, torch.zeros((1, 1, *shape))).graph


_MODEL = click.argument("model")
_APPROXIMATE = click.option(
    "--approximate-state-quant",
    is_flag=True,
    help="Accept snnTorch state_quant level tables that no fixed-point format reproduces: use the "
    "nearest format; the report gives its measured error and spike agreement.",
)
_CHECKPOINT = click.option(
    "--checkpoint", type=click.Path(dir_okay=False), help="state_dict file (read with weights_only=True)."
)


@main.command()
@_MODEL
@_CHECKPOINT
@click.option("--input-shape", help="Per-sample input shape, e.g. 1,28,28 (default: from the first layer).")
@nir_options
def inspect(model: str, checkpoint: str | None, input_shape: str | None) -> None:
    """Print the graph of MODEL, one line per node.

    Example: snncompile inspect net.py:build --checkpoint net.pt
    """
    import numpy as np

    from snncompile.build import is_build, read_build, report_text
    from snncompile.ir import Conv2d, Linear

    if is_build(model):
        click.echo(report_text(read_build(model)[1]))
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
@click.option(
    "--quantize-input",
    is_flag=True,
    help="A BUILD: round the inputs half to even onto its input grid and saturate them to its target's "
    "input codes, as compile does with its calibration data (so a build takes the currents it was "
    "calibrated on).",
)
@nir_options
@click.pass_context
def simulate(
    ctx: click.Context,
    model: str,
    checkpoint: str | None,
    input_path: str,
    output_path: str,
    record: str,
    quantize_input: bool,
) -> None:
    """Run MODEL on the inputs in X.npz and write spikes and membranes to Y.npz.

    X.npz holds `x` (T, B, *input_shape; uint8 spikes or float32 currents). Y.npz gets every value the
    model returns under its output node's name (`output`, `output_1`, ...: spikes as uint8, membranes and
    readouts as real values; a build adds `NAME_codes` and `NAME_scale`), and `spikes` (T, B,
    *output_shape; uint8, or float32 for graded spikes) and `membrane` of a first output read from a neuron;
    with --record all also `spikes/NODE`, `membrane/NODE` (and `syn/NODE`) for every neuron node.
    A BUILD takes inputs on its input grid (spikes, or currents: --quantize-input rounds real-valued ones,
    e.g. the calibration data it was compiled with, as compile did). It runs the fast integer engine on
    its decoded image (states also as `*_codes`) and adds
    `cycles` (T,: all samples, one after the other), `cycles_per_sample` (T, B), `cycles/LAYER`,
    `synaptic_ops`, `saturations/NODE` and `spike_counts/NODE`.

    Example: snncompile simulate net.py:build --checkpoint net.pt --input x.npz -o y.npz
    """
    import numpy as np

    from snncompile.backends.intsim import CycleModel
    from snncompile.backends.intsim import simulate as simulate_fast
    from snncompile.build import is_build
    from snncompile.compiler import quantize_input as quantize_inputs
    from snncompile.interpreters import run_float
    from snncompile.ir import Input
    from snncompile.loading import load_npz, save_npz

    x = load_npz(input_path, "x")
    if x.ndim < 3:
        raise InputError(f"{input_path!r}: x has shape {x.shape}; expected (T, B, *input_shape)")
    try:
        graph = load_model_graph(model, checkpoint, tuple(x.shape[2:]))
    except GraphError as e:
        raise InputError(
            f"{input_path!r}: the model does not accept inputs of per-sample shape {x.shape[2:]}: {e}"
        ) from None
    expected = graph.op(graph.input_name)
    assert isinstance(expected, Input)
    if tuple(x.shape[2:]) != tuple(expected.shape):
        raise InputError(
            f"{input_path!r}: x has per-sample shape {x.shape[2:]}; the model expects {expected.shape}"
        )
    cycles = None
    target = _build_target(model) if is_build(model) else None
    if quantize_input:
        if not is_build(model):
            raise InputError(
                f"--quantize-input rounds inputs onto a build's input grid; {model!r} is not a build directory"
            )
        if target is None:
            raise InputError(
                f"--quantize-input: build {model!r} was compiled for a target that is not shipped, so its "
                "input width is unknown; quantize the inputs with Program.quantize_input instead"
            )
        x = quantize_inputs(graph, target, x)
    if graph.is_fixed:
        model_cycles = CycleModel(graph, target) if target is not None else None
        keep = model_cycles.event_nodes if model_cycles is not None else ()
        run = simulate_fast(graph, x, keep=keep, progress=None if not ctx.obj["quiet"] else False)
        cycles = model_cycles.count(run, run.values) if model_cycles is not None else None
    else:
        run = run_float(graph, x)
    out = graph.output_name
    arrays: dict[str, np.ndarray] = {}
    if out in run.states:
        arrays.update(_node_arrays(graph, run, out))
    arrays.update(_output_arrays(graph, run))
    if record == "all":
        for n in graph.neurons():
            arrays.update({f"{k}/{n}": v for k, v in _node_arrays(graph, run, n).items()})
    arrays.update({f"saturations/{n}": np.array(c) for n, c in run.saturations.items()})
    for n, spikes in run.spikes.items():
        arrays[f"spike_counts/{n}"] = np.count_nonzero(spikes.reshape(*spikes.shape[:2], -1), axis=2)
    if cycles is not None:
        arrays["cycles"] = cycles.cycles.sum(axis=1)
        arrays["cycles_per_sample"] = cycles.cycles
        arrays["synaptic_ops"] = cycles.synaptic_ops
        arrays.update({f"cycles/{n}": c for n, c in cycles.layer_cycles.items()})
    save_npz(output_path, arrays)
    if not ctx.obj["quiet"]:
        t, b = x.shape[:2]
        what = "output spikes" if out in run.spikes else "nonzero output values"
        click.echo(
            f"simulated {t} steps x {b} samples: {int(np.count_nonzero(run.output))} {what} -> {output_path}"
        )
        if cycles is not None:
            summary = cycles.summary()
            click.echo(
                f"cycles: {summary['cycles_per_sample']:,.0f} per sample (max {summary['cycles_per_step_max']:,.0f} "
                f"per step), latency {summary['latency_per_sample_s'] * 1e6:,.1f} us, "
                f"energy {summary['energy_per_sample_j'] * 1e9:,.2f} nJ per sample"
            )


#: where ``compile --synth`` puts the iCE40 bitstream of the reference core, inside the build
BITSTREAM = "rtl/snn_host.bin"


def _synthesis(target: Target) -> dict[str, Any]:
    """Implementation figures of the reference core at the target's own parameters, or the reason there are none."""
    from snncompile.backends.rtl import RtlUnsupportedError, synthesize

    try:
        figures = synthesize(target)
    except RtlUnsupportedError as e:
        return {"reason": str(e)}
    if figures is None:
        return {"reason": "yosys is not installed (apt-get install yosys) or ran too long"}
    return figures


def _build_target(build: str) -> Target | None:
    """The target a build was compiled for (None when its name is not a shipped target)."""
    from snncompile.build import read_build
    from snncompile.targets import load_target

    try:
        return load_target(read_build(build)[1]["target"])
    except (InputError, KeyError):
        return None


def _output_arrays(graph: Graph, run: Run) -> dict[str, np.ndarray]:
    """Every output under its node's name (``output``, ``output_1``, ...) as real values: spikes
    (uint8 when binary), states, or a readout's values; in a fixed-point run also ``NAME_codes`` and
    ``NAME_scale`` (value = code * scale)."""
    import numpy as np

    from snncompile.ir import LIF, QLIF, CubaLIF, QCubaLIF

    fracs = graph.fracs() if graph.is_fixed else {}
    arrays: dict[str, np.ndarray] = {}
    for name, value in run.outputs.items():
        node, state = graph.output_source(name)
        op = graph.op(node)
        scale = 2.0 ** -fracs[name] if graph.is_fixed else 1.0
        binary_spikes = (
            state is None and isinstance(op, LIF | CubaLIF | QLIF | QCubaLIF) and bool(np.all(op.graded == 1))
        )
        if binary_spikes and scale == 1.0:
            arrays[name] = value.astype(np.uint8)
        else:
            arrays[name] = (value * scale).astype(np.float64 if graph.is_fixed else value.dtype)
        if graph.is_fixed:
            arrays[f"{name}_codes"] = value
            arrays[f"{name}_scale"] = np.array(scale)
    return arrays


def _node_arrays(graph: Graph, run: Run, node: str) -> dict[str, np.ndarray]:
    """A neuron node's spikes (uint8 when binary) and states as real values (plus the integer codes
    of a fixed-point run)."""
    import numpy as np

    from snncompile.ir import LIF, QLIF, CubaLIF, QCubaLIF

    op = graph.op(node)
    frac = graph.fracs()[node] if graph.is_fixed else 0
    spikes = run.spikes[node]
    assert isinstance(op, LIF | CubaLIF | QLIF | QCubaLIF)
    binary = bool(np.all(op.graded == 1)) and frac == 0
    arrays = {"spikes": spikes.astype(np.uint8) if binary else spikes * 2.0**-frac}
    for var, value in run.states[node].items():
        key = "membrane" if var == "mem" else var
        if graph.is_fixed:
            arrays[key] = value * 2.0 ** -getattr(op, var).frac
            arrays[f"{key}_codes"] = value
        else:
            arrays[key] = value
    return arrays


@main.command("compile")
@_MODEL
@_CHECKPOINT
@click.option("--target", default="default", show_default=True, help="Target name (see snncompile.targets).")
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False),
    help="X.npz with x[T, B, ...] for post-training quantization.",
)
@click.option(
    "--input-shape",
    help="Per-sample input shape, e.g. 1,28,28 (default: from the calibration or first layer).",
)
@click.option(
    "-o",
    "--output",
    "build",
    required=True,
    type=click.Path(file_okay=False),
    help="Build directory to write.",
)
@click.option(
    "--golden",
    type=click.Path(dir_okay=False),
    help="X.npz: also write golden vectors (BUILD/golden/) for it.",
)
@click.option(
    "--synth", is_flag=True, help="Synthesize the reference RTL core with yosys; figures go in the report."
)
@_APPROXIMATE
@nir_options
@click.pass_context
def compile_cmd(
    ctx: click.Context,
    model: str,
    checkpoint: str | None,
    target: str,
    calibration: str | None,
    input_shape: str | None,
    build: str,
    golden: str | None,
    synth: bool,
    approximate_state_quant: bool,
) -> None:
    """Quantize MODEL for a target and write a build directory.

    A QAT model (snncompile.quant.prepare_qat) is read exactly; a float model needs --calibration.
    BUILD gets image/ (the memory image), graph.json, report.json and report.txt, atomically.

    Example: snncompile compile net.py:build --checkpoint net.pt --target default -o build/
    """
    from snncompile.backends.rtl import golden_files
    from snncompile.build import program_report, report_text, write_build
    from snncompile.compiler import compile_graph
    from snncompile.loading import load_npz
    from snncompile.targets import load_target

    calib = load_npz(calibration, "x") if calibration else None
    if input_shape:
        shape: tuple[int, ...] | None = _parse_shape(input_shape)
    elif calib is not None and calib.ndim >= 3:
        shape = tuple(calib.shape[2:])
    else:
        shape = None
    graph = load_model_graph(model, checkpoint, shape)
    if graph.is_fixed:
        raise InputError(
            f"{model!r} is already compiled; compile a model, a saved float graph or a .nir file"
        )
    program = compile_graph(graph, load_target(target), calib, approximate_state_quant)
    stimulus = load_npz(golden, "x") if golden else None
    synthesis = _synthesis(program.target) if synth else {"reason": "not run (--synth)"}
    bitstream = synthesis.get("bitstream")
    if bitstream is not None:  # the placed and routed core goes in the build, named in the report
        synthesis["bitstream"] = BITSTREAM
    extras: dict[str, Any] = {"synthesis": synthesis}

    def write_golden(directory: Path) -> None:
        if stimulus is not None:
            golden_files(program, stimulus, directory / "golden")
        if bitstream is not None:
            (directory / BITSTREAM).parent.mkdir()
            shutil.copyfile(bitstream, directory / BITSTREAM)

    write_build(program, build, extras, write_golden)
    if not ctx.obj["quiet"]:
        click.echo(report_text({**program_report(program), **extras}), nl=False)
        click.echo(f"wrote {build}")


@main.command()
@click.argument("name", required=False)
def targets(name: str | None) -> None:
    """List the hardware targets, or describe one (NAME, or a path to a target .toml file).

    Example: snncompile targets artix7-100t
    """
    from snncompile.targets import load_target, target_names

    if name:
        click.echo(load_target(name).describe())
        return
    for n in target_names():
        click.echo(f"{n.ljust(14)}  {load_target(n).description}")


@main.command("verify")
@_MODEL
@_CHECKPOINT
@click.option(
    "--target", default="default", show_default=True, help="Target to compile for (ignored with --build)."
)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="X.npz with x (and labels y).",
)
@click.option(
    "--build", type=click.Path(file_okay=False), help="Verify this build's image instead of compiling."
)
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False),
    help="X.npz for post-training quantization (default: the input).",
)
@click.option(
    "--tolerance",
    type=float,
    default=0.05,
    show_default=True,
    help="Float models: allowed output spike disagreement.",
)
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False),
    help="Write raster, membrane and agreement PNGs here.",
)
@_APPROXIMATE
@nir_options
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    model: str,
    checkpoint: str | None,
    target: str,
    input_path: str,
    build: str | None,
    calibration: str | None,
    tolerance: float,
    plot_dir: str | None,
    approximate_state_quant: bool,
) -> None:
    """Run the torch model and the integer simulator on the same inputs and compare them.

    A QAT model must agree bit for bit; otherwise the first divergence is printed (time step, node,
    neuron, variable, both values and the values one step before). A float model is judged by spike
    agreement (and accuracy when X.npz holds labels y). Exit code 0 only when the criterion holds.

    Example: snncompile verify net.py:build_qat --checkpoint net.pt --input x.npz --target default
    """
    from snncompile.build import read_build
    from snncompile.compiler import compile_graph, quantize_input, trace_sequence
    from snncompile.frontend import TracedForward
    from snncompile.loading import load_npz
    from snncompile.targets import load_target
    from snncompile.verify import plot
    from snncompile.verify import verify as run_verify

    x = load_npz(input_path, "x")
    labels = _optional_labels(input_path)
    if x.ndim < 3:
        raise InputError(f"{input_path!r}: x has shape {x.shape}; expected (T, B, *input_shape)")
    module = None if model.endswith(".nir") else _load_module(model, checkpoint)
    traced = TracedForward.of_graph(import_nir_model(model)) if module is None else trace_sequence(module, x)
    float_graph = traced.graph
    if build and approximate_state_quant:
        raise InputError(
            "--approximate-state-quant applies when verify compiles the model; a --build is compiled "
            "already (give the flag to compile)"
        )
    if build:
        graph, build_report = read_build(build)
        tgt = load_target(build_report["target"])
        exact = bool(build_report["exact"])
    else:
        calib = load_npz(calibration, "x") if calibration else None
        try:
            program = compile_graph(float_graph, load_target(target), calib, approximate_state_quant)
        except QuantizationError as e:
            if calib is not None or "calibration" not in str(e):
                raise
            if not ctx.obj["quiet"]:
                click.echo("note: a float model; calibrating post-training quantization on the input itself")
            program = compile_graph(float_graph, load_target(target), x, approximate_state_quant)
        graph, tgt, exact = program.graph, program.target, program.exact
    hardware_x = x if exact else quantize_input(graph, tgt, x)
    report = run_verify(module, traced, graph, x, hardware_x, exact=exact, labels=labels, tolerance=tolerance)
    if not ctx.obj["quiet"]:
        click.echo(report.text())
    if plot_dir:
        files = plot(report, plot_dir)
        if not ctx.obj["quiet"]:
            click.echo("plots: " + ", ".join(str(f) for f in files))
    ctx.exit(0 if report.passed else 1)


def _optional_labels(path: str) -> np.ndarray | None:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data["y"]) if "y" in data else None


@main.command("export-nir")
@_MODEL
@_CHECKPOINT
@click.option("--input-shape", help="Per-sample input shape, e.g. 1,28,28 (default: from the first layer).")
@click.option(
    "--dt",
    "dt_out",
    type=float,
    default=1e-4,
    show_default=True,
    help="Time step (s) of the written time constants.",
)
@click.option(
    "-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False), help="FILE.nir to write."
)
@click.pass_context
def export_nir_cmd(
    ctx: click.Context,
    model: str,
    checkpoint: str | None,
    input_shape: str | None,
    dt_out: float,
    output_path: str,
) -> None:
    """Write MODEL as a NIR file: standard NIR nodes, with snncompile's exact semantics in metadata.

    Example: snncompile export-nir net.py:build --checkpoint net.pt -o net.nir
    """
    from snncompile.frontend.nir import write_nir

    graph = load_model_graph(model, checkpoint, _parse_shape(input_shape) if input_shape else None)
    write_nir(graph, output_path, dt=dt_out)
    if not ctx.obj["quiet"]:
        click.echo(f"wrote {output_path} ({len(graph)} nodes)")


@main.command("rtl-sim")
@click.argument("build", type=click.Path(file_okay=False))
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="X.npz with x[T, B, ...] spikes.",
)
@click.option(
    "-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False), help="Y.npz to write."
)
@click.pass_context
def rtl_sim(ctx: click.Context, build: str, input_path: str, output_path: str) -> None:
    """Run BUILD's image on the reference RTL core (Verilator); Y.npz gets `spikes` and `cycles`.

    Y.npz: `spikes` (T, B, *output_shape, uint8), `cycles` (T,: all samples) and `cycles_per_sample`
    (T, B), counted by the core's own cycle counter.

    Example: snncompile rtl-sim build --input x.npz -o y_rtl.npz
    """
    import numpy as np

    from snncompile.backends.rtl import rtl_simulate
    from snncompile.loading import load_npz, save_npz

    x = load_npz(input_path, "x")
    spikes, cycles = rtl_simulate(build, x)
    save_npz(output_path, {"spikes": spikes, "cycles": cycles.sum(axis=1), "cycles_per_sample": cycles})
    if not ctx.obj["quiet"]:
        click.echo(
            f"RTL simulated {x.shape[0]} steps x {x.shape[1]} samples: {int(np.count_nonzero(spikes))} output "
            f"spikes, {int(cycles.sum()):,} cycles -> {output_path}"
        )


main.add_command(sweep_command)
