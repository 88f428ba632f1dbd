"""``snncompile sweep``: the design-space sweep from the command line (registered in :mod:`snncompile.cli`).

Only click is imported here; the sweep itself (Dask, torch, the engine) loads when the command runs.
"""

from __future__ import annotations

import click

from snncompile.errors import InputError
from snncompile.nir_cli import nir_options


def _ints(option: str, text: str | None) -> list[int] | None:
    """``"4,6,8"`` as integers (None stays None)."""
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{option} {text!r} must be comma-separated integers, e.g. 4,6,8") from None


@click.command("sweep")
@click.argument("model")
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False), help="state_dict file (read with weights_only=True)."
)
@click.option("--targets", "targets", required=True, help="Comma-separated target names or .toml files.")
@click.option("--weight-bits", required=True, help="Comma-separated weight widths, e.g. 4,6,8.")
@click.option("--state-bits", required=True, help="Comma-separated state widths, e.g. 12,16.")
@click.option("--decay-bits", help="Comma-separated decay grids 2^-d (default: each target's own).")
@click.option("--calibration", type=click.Path(dir_okay=False), help="X.npz for post-training quantization.")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="X.npz with x[T, B, ...] (and labels y).")  # fmt: skip
@click.option(
    "--labels", type=click.Path(dir_okay=False), help="Y.npz with labels y[B] (default: y in X.npz)."
)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory for sweep.json, sweep.csv, sweep.txt, pareto.png (resumed when it exists).")  # fmt: skip
@click.option("--scheduler", help="Address of a Dask scheduler (tcp://HOST:PORT); default: local processes.")
@click.option("--workers", type=int, help="Local worker processes (default: one per CPU).")
@click.option(
    "--shard-samples", type=int, default=1024, show_default=True, help="Samples per simulation task."
)
@click.option(
    "--approximate-state-quant",
    is_flag=True,
    help="Accept snnTorch state_quant level tables that no fixed-point format reproduces (as compile).",
)
@nir_options
@click.pass_context
def sweep(
    ctx: click.Context,
    model: str,
    checkpoint: str | None,
    targets: str,
    weight_bits: str,
    state_bits: str,
    decay_bits: str | None,
    calibration: str | None,
    input_path: str,
    labels: str | None,
    output: str,
    scheduler: str | None,
    workers: int | None,
    shard_samples: int,
    approximate_state_quant: bool,
) -> None:
    """Compile and simulate MODEL at every target x weight bits x state bits [x decay bits] point.

    Each point's record (fits or why not, accuracy and agreement with the float model, memory bits,
    cycles, latency, energy per inference, saturations) goes to OUTPUT/sweep.json and sweep.csv, the
    table to sweep.txt and the screen, and accuracy against energy and memory, frontier marked, to
    pareto.png. A sweep rerun on the same OUTPUT only runs the points it has not finished.

    Example: snncompile sweep net.py:build --checkpoint net.pt --targets ice40up5k,artix7-100t
    --weight-bits 4,6,8 --state-bits 12,16 --calibration calib.npz --input test.npz -o sweep
    """
    from snncompile.cli import _optional_labels, load_model_graph
    from snncompile.loading import load_npz
    from snncompile.sweep.api import sweep as run_sweep
    from snncompile.sweep.core import grid
    from snncompile.sweep.outputs import table

    points = grid(
        [t for t in targets.split(",") if t],
        _ints("--weight-bits", weight_bits) or [],
        _ints("--state-bits", state_bits) or [],
        _ints("--decay-bits", decay_bits),
    )
    x = load_npz(input_path, "x")
    if x.ndim < 3:
        raise InputError(f"{input_path!r}: x has shape {x.shape}; expected (T, B, *input_shape)")
    y = load_npz(labels, "y") if labels else _optional_labels(input_path)
    calib = load_npz(calibration, "x") if calibration else None
    graph = load_model_graph(model, checkpoint, tuple(x.shape[2:]))
    client = None
    if scheduler:
        if workers is not None:
            raise InputError("--workers applies to the local scheduler; a --scheduler cluster has its own")
        from distributed import Client

        try:
            client = Client(scheduler, timeout="10s")
        except OSError as e:
            raise InputError(f"--scheduler {scheduler!r}: cannot connect ({e})") from None
    quiet = ctx.find_root().obj["quiet"]
    try:
        records = run_sweep(
            graph, points, x, calibration=calib, labels=y, output=output, client=client, workers=workers,
            shard_samples=shard_samples, progress=None if not quiet else False,
            approximate_state_quant=approximate_state_quant,
        )  # fmt: skip
    finally:
        if client is not None:
            client.close()
    if not quiet:
        click.echo(table(records), nl=False)
        click.echo(f"wrote {output}/sweep.json, sweep.csv, sweep.txt, pareto.png")
