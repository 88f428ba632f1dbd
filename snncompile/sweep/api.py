"""``snncompile.sweep.sweep``: a design-space sweep of one model, resumable from its output directory.

An output directory holds ``sweep-inputs.json`` (the fingerprint of the model and arrays it was made
from), ``points/KEY.json`` (each finished point, written as soon as it is done) and, once every point is
done, ``sweep.json``, ``sweep.csv``, ``sweep.txt`` and ``pareto.png``. Running the same sweep on the
same directory again only runs the points it lacks; a directory made from other inputs is refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snncompile.errors import InputError
from snncompile.ir import Graph
from snncompile.loading import write_atomic
from snncompile.sweep.core import (
    Point,
    Progress,
    Record,
    check_input,
    fingerprint,
    run_points,
    with_frontiers,
)
from snncompile.sweep.outputs import write_outputs

INPUTS = "sweep-inputs.json"
POINTS = "points"


def _as_graph(model: Any, x: np.ndarray) -> Graph:
    """A float graph as it is, or an ``nn.Module`` traced on the first step of ``x``."""
    if isinstance(model, Graph):
        if model.is_fixed:
            raise InputError("sweep model: the graph is already compiled; give the float model or its graph")
        return model
    from snncompile.frontend import trace

    return trace(model, x[0])


def _open_directory(directory: Path, stamp: str) -> dict[str, Record]:
    """The finished points of a sweep of the same inputs in ``directory`` (created when new)."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"sweep output {str(directory)!r} is a file; choose a directory")
    marker = directory / INPUTS
    if directory.is_dir() and any(directory.iterdir()) and not marker.is_file():
        raise InputError(f"{str(directory)!r} exists and is not a sweep directory; choose another -o")
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"{str(marker)!r} cannot be read ({e}); remove the directory to start over"
            ) from None
        if found != stamp:
            raise InputError(
                f"{str(directory)!r} holds a sweep of another model, other inputs, other options or another snncompile version (fingerprint "
                f"{found[:12]}, these are {stamp[:12]}); choose another -o"
            )
    try:
        (directory / POINTS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create sweep directory {str(directory)!r}: {e.strerror}") from None
    write_atomic(marker, (json.dumps({"fingerprint": stamp}) + "\n").encode())
    done: dict[str, Record] = {}
    for path in sorted((directory / POINTS).glob("*.json")):
        try:
            done[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # unreadable: the point runs again
    return done


def sweep(
    model: Any,
    points: Sequence[Point],
    x: Any,
    *,
    calibration: Any = None,
    labels: Any = None,
    output: str | Path | None = None,
    client: Any = None,
    workers: int | None = None,
    shard_samples: int = 1024,
    progress: bool | None = None,
    approximate_state_quant: bool = False,
) -> list[Record]:
    """Compiles ``model`` (an ``nn.Module`` or a float :class:`Graph`) for every point and simulates it
    on ``x[T, B, ...]``; returns one record a point, in the order of ``points``.

    A record holds the point, ``ok``/``fits``/``reason`` (why a point was not measured, one line),
    ``exact`` (QAT read exactly), ``accuracy`` and ``float_accuracy`` (with ``labels[B]``), ``agreement``
    (output spikes equal to the float model's, a fraction) and ``bit_exact`` (every output spike and
    membrane equal), ``memory_bits`` per memory kind and their total, ``cycles_per_sample``,
    ``latency_s``, ``energy_j`` per inference, ``saturations`` per node and their total, and whether it
    is on the accuracy/energy and accuracy/memory frontiers (:func:`frontier`).

    ``calibration[T, B, ...]`` is needed for float models (post-training quantization). ``x`` is cut
    into shards of ``shard_samples`` samples. ``client`` (a ``dask.distributed.Client``) runs the sweep
    on its cluster; without one it runs on Dask's local process scheduler with ``workers`` processes.
    With ``output`` the records are kept in that directory and the sweep resumes from it (see the
    module docstring). ``progress`` (default: when stderr is a terminal) draws points and shards done.
    ``approximate_state_quant`` is :func:`snncompile.compile`'s, for every point.
    """
    if shard_samples < 1:
        raise InputError(f"sweep shard_samples must be at least 1, got {shard_samples}")
    if workers is not None and workers < 1:
        raise InputError(f"sweep workers must be at least 1, got {workers}")
    if client is not None and workers is not None:
        raise InputError("sweep: give a client or a number of local workers, not both")
    if not points:
        raise InputError("sweep: no points to run")
    keys = [p.key for p in points]
    if len(set(keys)) != len(keys):
        raise InputError(f"sweep: points {sorted({k for k in keys if keys.count(k) > 1})} are listed twice")
    xa = _array("x", x)
    graph = _as_graph(model, xa)
    calib = None if calibration is None else _array("calibration", calibration)
    check_input(graph, "x", xa)
    check_input(graph, "calibration", calib)
    ya = None
    if labels is not None:
        ya = np.asarray(labels)
        if ya.shape != (xa.shape[1],) or ya.dtype.kind not in "iu":
            raise InputError(
                f"sweep labels: {ya.dtype} array of shape {ya.shape}; expected integers ({xa.shape[1]},)"
            )
    stamp = fingerprint(graph, xa, calib, ya, approximate_state_quant)
    directory = None if output is None else Path(output)
    done = {} if directory is None else _open_directory(directory, stamp)
    results: dict[int, Record] = {i: done[p.key] for i, p in enumerate(points) if p.key in done}
    todo = [(i, p) for i, p in enumerate(points) if i not in results]

    def keep(i: int, rec: Record, final: bool) -> None:
        results[i] = rec
        if directory is not None and final:
            write_atomic(
                directory / POINTS / f"{points[i].key}.json",
                (json.dumps(rec, sort_keys=True) + "\n").encode(),
            )

    shards = -(-xa.shape[1] // shard_samples)
    show = sys.stderr.isatty() if progress is None else progress
    run_points(
        graph,
        todo,
        xa,
        calib,
        ya,
        shard_samples=shard_samples,
        token=stamp[:16],
        client=client,
        workers=workers,
        on_record=keep,
        progress=Progress(len(todo), len(todo) * shards, show),
        approximate_state_quant=approximate_state_quant,
    )
    records = with_frontiers([results[i] for i in range(len(points))])
    if directory is not None:
        write_outputs(directory, records)
    return records


def _array(name: str, a: Any) -> np.ndarray:
    """``a`` as a numpy array (torch tensors are moved to the CPU)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise InputError(f"sweep {name}: expected a numpy array or torch tensor, got {type(a).__name__}")
    return a
