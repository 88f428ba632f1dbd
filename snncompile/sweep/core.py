"""The sweep engine: every design point compiled once, simulated shard by shard on Dask, reduced in order.

A sweep's task graph, for input shards ``j`` (``shard_samples`` samples each) and points ``i``:

* ``float-j``: the float model (the float interpreter, bit-identical to snnTorch) on shard ``j``;
* ``compile-i``: :func:`snncompile.compile_graph` of the float graph for point ``i``'s target;
* ``shard-i-j``: point ``i``'s program on shard ``j`` (fast engine and cycle model, via
  :meth:`Program.simulate`), compared with ``float-j``;
* ``record-i``: the shards of point ``i`` concatenated in shard order and summarised.

Everything a shard returns is per sample (predictions, agreeing spike counts, cycles and energy per
sample) or an integer count, and the reduction concatenates shards in their order before it takes any
mean, so a record does not depend on the scheduler, the number of workers or the shard size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from snncompile.errors import InputError, SnnCompileError
from snncompile.ir import Graph, Input
from snncompile.quant.fixed import Fixed
from snncompile.targets import Target, load_target

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Point:
    """One design point: a shipped target (or target file) with its weight and state widths replaced,
    and its decay grid ``2**-decay_bits`` when ``decay_bits`` is given (else the target's own)."""

    target: str
    weight_bits: int
    state_bits: int
    decay_bits: int | None = None

    @property
    def key(self) -> str:
        """A file-name-safe name of the point, e.g. ``artix7-100t-w8-s16`` (``-d6`` with decay bits)."""
        name = os.path.basename(self.target).removesuffix(".toml")
        decay = "" if self.decay_bits is None else f"-d{self.decay_bits}"
        return f"{name}-w{self.weight_bits}-s{self.state_bits}{decay}"

    def configure(self) -> Target:
        """The point's target: the named one with its arithmetic widths replaced (the state format keeps
        its name but takes ``state_bits``; post-training quantization picks each layer's grid within it)."""
        base = load_target(self.target)
        decay = base.decay_frac if self.decay_bits is None else self.decay_bits
        state = Fixed(self.state_bits, min(base.state.frac, self.state_bits - 1))
        return dataclasses.replace(base, weight_bits=self.weight_bits, state=state, decay_frac=decay)


def grid(
    targets: Sequence[str],
    weight_bits: Sequence[int],
    state_bits: Sequence[int],
    decay_bits: Sequence[int] | None = None,
) -> tuple[Point, ...]:
    """Every combination, targets outermost, in the order given; each point checked against its target
    now (a bad width is an :class:`InputError` before anything runs)."""
    decays: Sequence[int | None] = list(decay_bits) if decay_bits else [None]
    for name, values in (("targets", targets), ("weight bits", weight_bits), ("state bits", state_bits)):
        if not values:
            raise InputError(f"sweep {name}: the list is empty; give at least one value")
        if len(set(values)) != len(values):
            raise InputError(f"sweep {name}: {list(values)} lists a value twice")
    points = tuple(
        Point(t, w, s, d) for t in targets for w in weight_bits for s in state_bits for d in decays
    )
    for p in points:
        try:
            p.configure()
        except SnnCompileError as e:
            raise InputError(f"sweep point {p.key}: {e}") from None
    return points


# ------------------------------------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class Reference:
    """The float model's output node on one shard: spikes (T, B, ...) and membrane (or None)."""

    spikes: np.ndarray
    membrane: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """One point on one shard: per-sample predictions of the program and of the float model, per-sample
    counts of output spikes that agree, whether every output spike and membrane is identical, the cycle
    report without its per-layer breakdown, and saturation counts per node."""

    predictions: np.ndarray
    float_predictions: np.ndarray
    agreeing: np.ndarray
    identical: bool
    cycles: Any  # CycleReport (kept untyped here so that the module imports without the engine)
    saturations: dict[str, int]


class _NotATerminal:
    """A stream that writes where ``stream`` does but is not a terminal, so that the engine's own
    progress bar (drawn only on a terminal) stays off in a worker process."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _worker_start() -> None:
    """Run in each local worker process as it starts: its stderr (shared with the sweep's terminal)
    no longer counts as a terminal; warnings and errors still reach it."""
    sys.stderr = _NotATerminal(sys.stderr)


def one_line(e: BaseException) -> str:
    """An error as the one line the command line would print."""
    prefix = "" if isinstance(e, SnnCompileError) else f"internal error ({type(e).__name__}): "
    return prefix + (" ".join(str(e).split()) or type(e).__name__)


def float_reference(graph: Graph, x: np.ndarray) -> Reference:
    from snncompile.interpreters import run_float

    run = run_float(graph, x)
    out = graph.output_name
    return Reference(run.spikes[out], run.states.get(out, {}).get("mem"))


def compile_point(
    graph: Graph, point: Point, calibration: np.ndarray | None, approximate_state_quant: bool = False
) -> Any:
    """The point's Program, or the one-line reason it could not be built (it does not fit, a format
    cannot hold the model, ...)."""
    from snncompile.compiler import compile_graph

    try:
        return compile_graph(graph, point.configure(), calibration, approximate_state_quant)
    except Exception as e:
        return one_line(e)


def _predictions(spikes: np.ndarray) -> np.ndarray:
    """The class of each sample: the output neuron with the most spikes (the first on ties)."""
    return spikes.reshape(*spikes.shape[:2], -1).sum(axis=0).argmax(axis=1)


def simulate_shard(program: Any, x: np.ndarray, reference: Reference) -> ShardResult | str:
    """``program`` (or a compile failure, passed on) on one shard, compared with the float model."""
    if isinstance(program, str):
        return program
    from snncompile.verify import hardware_values

    try:
        sim = program.simulate(x if program.exact else program.quantize_input(x))
    except Exception as e:
        return f"simulate: {one_line(e)}"
    out = program.graph.output_name
    hardware = hardware_values(program.graph, sim.run)[out]
    same = reference.spikes.astype(np.float64) == hardware["spikes"]
    identical = bool(same.all())
    if reference.membrane is not None and "mem" in hardware:
        identical = identical and bool(np.array_equal(reference.membrane.astype(np.float64), hardware["mem"]))
    return ShardResult(
        _predictions(hardware["spikes"]),
        _predictions(reference.spikes),
        same.reshape(*same.shape[:2], -1).sum(axis=(0, 2)),
        identical,
        dataclasses.replace(sim.cycles, layer_cycles={}),
        dict(sim.run.saturations),
    )


def record(point: Point, program: Any, shards: list[ShardResult | str], labels: np.ndarray | None) -> Record:
    """The point's record from its shards, concatenated in shard order."""
    from snncompile.backends.intsim import CycleReport

    base: Record = {
        "target": point.target,
        "weight_bits": point.weight_bits,
        "state_bits": point.state_bits,
        "decay_bits": point.decay_bits,
    }
    if isinstance(program, str):
        return {**base, **FAILED, "reason": program}
    failed = next((s for s in shards if isinstance(s, str)), None)
    if failed is not None:
        return {**base, **FAILED, "fits": True, "reason": failed}
    done = [s for s in shards if isinstance(s, ShardResult)]
    reports = [s.cycles for s in done]
    cycles = CycleReport(
        {},
        np.concatenate([r.cycles for r in reports], axis=1),
        np.concatenate([r.synaptic_ops for r in reports], axis=1),
        np.concatenate([r.memory_accesses for r in reports], axis=1),
        reports[0].neuron_updates,
        np.concatenate([r.energy_j for r in reports]),
        reports[0].clock_hz,
    ).summary()
    predictions = np.concatenate([s.predictions for s in done])
    float_predictions = np.concatenate([s.float_predictions for s in done])
    agreeing = int(sum(int(s.agreeing.sum()) for s in done))
    steps = int(reports[0].cycles.shape[0])
    per_sample = steps * math.prod(program.graph.shapes()[program.graph.output_name])
    saturations = {n: int(sum(s.saturations.get(n, 0) for s in done)) for n in done[0].saturations}
    memory = {k: int(v) for k, v in program.mapping.memory_bits.items()}
    return {
        **base,
        "ok": True,
        "fits": True,
        "reason": None,
        "exact": program.exact,
        "range_verdict": program.ranges.verdict,
        "samples": int(predictions.size),
        "accuracy": None if labels is None else float(np.mean(predictions == labels)),
        "float_accuracy": None if labels is None else float(np.mean(float_predictions == labels)),
        "agreement": agreeing / (per_sample * predictions.size),
        "bit_exact": all(s.identical for s in done),
        "memory_bits": memory,
        "memory_bits_total": sum(memory.values()),
        "cycles_per_sample": cycles["cycles_per_sample"],
        "latency_s": cycles["latency_per_sample_s"],
        "energy_j": cycles["energy_per_sample_j"],
        "saturations": saturations,
        "saturations_total": sum(saturations.values()),
    }


FAILED: Record = {
    "ok": False,
    "fits": False,
    "reason": None,
    "exact": None,
    "range_verdict": None,
    "samples": None,
    "accuracy": None,
    "float_accuracy": None,
    "agreement": None,
    "bit_exact": None,
    "memory_bits": None,
    "memory_bits_total": None,
    "cycles_per_sample": None,
    "latency_s": None,
    "energy_j": None,
    "saturations": None,
    "saturations_total": None,
}
"""The fields of a point that could not be measured (``reason`` says why)."""


# ------------------------------------------------------------------------------------- frontier


def score(rec: Record) -> float:
    """What the frontier maximises: accuracy when there are labels, else agreement with the float model."""
    return rec["accuracy"] if rec["accuracy"] is not None else rec["agreement"]


def frontier(records: Sequence[Record], cost: str) -> list[bool]:
    """For each record: measured and not dominated on (score up, ``cost`` down), where ``q`` dominates
    ``p`` when it is at least as good on both and better on one."""
    ok = [r for r in records if r["ok"]]

    def dominated(p: Record) -> bool:
        return any(
            score(q) >= score(p) and q[cost] <= p[cost] and (score(q) > score(p) or q[cost] < p[cost])
            for q in ok
        )

    return [r["ok"] and not dominated(r) for r in records]


def with_frontiers(records: Sequence[Record]) -> list[Record]:
    """The records with ``frontier_energy`` and ``frontier_memory`` set."""
    energy = frontier(records, "energy_j")
    memory = frontier(records, "memory_bits_total")
    return [
        {**r, "frontier_energy": e, "frontier_memory": m}
        for r, e, m in zip(records, energy, memory, strict=True)
    ]


# ------------------------------------------------------------------------------------- running


def fingerprint(
    graph: Graph,
    x: np.ndarray,
    calibration: np.ndarray | None,
    labels: np.ndarray | None,
    approximate_state_quant: bool = False,
) -> str:
    """sha256 over what every record depends on besides its point: the compiler's version, the model,
    inputs, calibration, labels and whether state_quant tables may be approximated."""
    from snncompile._version import __version__
    from snncompile.ir.serialize import graph_to_dict

    h = hashlib.sha256(__version__.encode())
    h.update(json.dumps(graph_to_dict(graph), sort_keys=True).encode())
    for name, a in (("x", x), ("calibration", calibration), ("labels", labels)):
        h.update(name.encode())
        if a is not None:
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    if approximate_state_quant:  # absent when off: the sweeps made before the option keep their stamp
        h.update(b"approximate_state_quant")
    return h.hexdigest()


class Progress:
    """Points and shards done, redrawn on one stderr line (only when asked: the caller checks the TTY)."""

    def __init__(self, points: int, shards: int, show: bool) -> None:
        self.points, self.shards, self.show = points, shards, show
        self.points_done = self.shards_done = 0
        self._draw()

    def point(self) -> None:
        self.points_done += 1
        self._draw()

    def shard(self) -> None:
        self.shards_done += 1
        self._draw()

    def _draw(self) -> None:
        if not self.show or not self.points:
            return
        width = 30
        filled = width * self.points_done // self.points
        sys.stderr.write(
            f"\rsweep [{'#' * filled}{'.' * (width - filled)}] {self.points_done}/{self.points} points, "
            f"{self.shards_done}/{self.shards} shards"
        )
        if self.points_done == self.points:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_points(
    graph: Graph,
    points: Sequence[tuple[int, Point]],
    x: np.ndarray,
    calibration: np.ndarray | None,
    labels: np.ndarray | None,
    *,
    shard_samples: int,
    token: str,
    client: Any,
    workers: int | None,
    on_record: Callable[[int, Record, bool], None],
    progress: Progress,
    approximate_state_quant: bool = False,
) -> None:
    """Runs ``points`` (index, point) and calls ``on_record(index, record, final)`` for each as it is done;
    ``final`` is False for a point lost to the cluster (a worker died too often), which a resumed sweep
    retries. ``client``: a ``dask.distributed.Client``, or None for Dask's local process scheduler with
    ``workers`` processes (default: one per CPU)."""
    import dask

    if not points:
        return
    bounds = [(a, min(a + shard_samples, x.shape[1])) for a in range(0, x.shape[1], shard_samples)]
    # the data are literals of the graph (not scattered): the scheduler can hand them to another
    # worker when the one that held them dies
    g = dask.delayed(graph, name=f"sweep-graph-{token}")
    calib = dask.delayed(calibration, name=f"sweep-calib-{token}")
    xs = [dask.delayed(x[:, a:b], name=f"sweep-x-{token}-{j}") for j, (a, b) in enumerate(bounds)]
    refs = [
        dask.delayed(float_reference)(g, xs[j], dask_key_name=f"sweep-float-{token}-{j}")
        for j in range(len(xs))
    ]
    records: list[Any] = []
    every_shard: list[Any] = []
    shard_keys: set[str] = set()
    record_index: dict[str, int] = {}
    for i, p in points:
        program = dask.delayed(compile_point)(
            g, p, calib, approximate_state_quant, dask_key_name=f"sweep-compile-{token}-{i}"
        )
        shards = []
        for j in range(len(xs)):
            key = f"sweep-shard-{token}-{i}-{j}"
            shard_keys.add(key)
            shards.append(dask.delayed(simulate_shard)(program, xs[j], refs[j], dask_key_name=key))
        key = f"sweep-record-{token}-{i}"
        record_index[key] = i
        records.append(dask.delayed(record)(p, program, shards, labels, dask_key_name=key))
        every_shard += shards
    if client is None:
        _run_local(records, record_index, shard_keys, workers, on_record, progress)
    else:
        _run_distributed(client, records, every_shard, record_index, points, on_record, progress)


def _run_local(
    records: list[Any],
    record_index: dict[str, int],
    shard_keys: set[str],
    workers: int | None,
    on_record: Callable[[int, Record, bool], None],
    progress: Progress,
) -> None:
    """Dask's local process scheduler; each record is handed over as soon as its task finishes."""
    import dask
    from dask.callbacks import Callback

    class Finished(Callback):  # type: ignore[misc]
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if key in record_index:
                on_record(record_index[key], result, True)
                progress.point()
            elif key in shard_keys:
                progress.shard()

    with Finished():
        dask.compute(
            *records,
            scheduler="processes",
            num_workers=workers or os.cpu_count() or 1,
            initializer=_worker_start,
        )


def _run_distributed(
    client: Any,
    records: list[Any],
    shards: list[Any],
    record_index: dict[str, int],
    points: Iterable[tuple[int, Point]],
    on_record: Callable[[int, Record, bool], None],
    progress: Progress,
) -> None:
    """A ``dask.distributed`` cluster; records are handed over in the order they finish (the shards
    are computed along with them only to count them: their results stay on the cluster)."""
    from distributed import as_completed

    by_index = dict(points)
    futures = client.compute([*records, *shards])
    for future in as_completed(futures):
        if future.key not in record_index:
            progress.shard()
            future.release()
            continue
        i = record_index[future.key]
        try:
            rec, final = future.result(), True
        except Exception as e:  # the cluster lost the point (e.g. KilledWorker): not saved, retried on resume
            p = by_index[i]
            rec = record(p, f"cluster: {one_line(e)}", [], None)
            final = False
        on_record(i, rec, final)
        progress.point()
        future.release()


def check_input(graph: Graph, name: str, a: np.ndarray | None) -> None:
    """``a`` is ``(T, B, *input_shape)`` for ``graph`` (or None)."""
    if a is None:
        return
    op = graph.op(graph.input_name)
    assert isinstance(op, Input)
    if a.ndim != len(op.shape) + 2 or tuple(a.shape[2:]) != tuple(op.shape) or 0 in a.shape[:2]:
        raise InputError(
            f"sweep {name}: shape {a.shape}; expected (T, B, {', '.join(map(str, op.shape))}) with T, B > 0"
        )
