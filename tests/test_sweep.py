"""Design-space sweeps: the records against an independent recomputation, and the same records whatever
runs them (Dask's local process scheduler, a LocalCluster, any shard size), resumed without redoing
finished points."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from distributed import Client, LocalCluster
from snncompile.quant.fixed import Fixed
from snntorch import utils

import snncompile
from snncompile.cli import main
from snncompile.errors import InputError
from snncompile.sweep import Point, grid, sweep

T, B, N_IN = 6, 23, 12
SMALL_TARGET = """
name = "tiny"
[arithmetic]
weight_bits = 8
bias_bits = 16
state = "s16.8"
decay_frac = 8
input_bits = 8
rounding = "floor"
decay_kinds = ["multiply", "shift"]
[cores]
count = 1
neurons_per_core = 8
[microarchitecture]
lanes = 4
update_lanes = 2
pipeline_depth = 3
schedule = "sequential"
clock_mhz = 50.0
[[memories]]
name = "ram"
bank_bits = 4096
banks = 64
holds = ["synapse", "bias", "neuron", "state", "layers"]
[energy_pj]
synaptic_op = 1.0
neuron_update = 1.0
memory_access = 1.0
[limits]
fan_in = 256
fan_out = 256
layer_types = ["linear", "lif"]
conv_engine = false
"""
"""A core with room for 8 neurons: the 10 hidden neurons do not fit."""


MODEL = """
import snntorch as snn
import torch
from torch import nn


def build() -> nn.Sequential:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Linear(12, 10), snn.Leaky(beta=0.875, init_hidden=True), nn.Linear(10, 4), snn.Leaky(beta=0.75, init_hidden=True)
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.5)
    return net
"""
"""The model file of the command-line test; the API tests call its ``build`` too."""
_namespace: dict[str, Any] = {}
exec(MODEL, _namespace)
build = _namespace["build"]


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    x = (rng.random((T, B, N_IN)) < 0.5).astype(np.uint8)
    return {"x": x, "y": rng.integers(0, 4, B), "calib": x[:, :9]}


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A real LocalCluster: a scheduler on loopback TCP and two single-threaded in-process workers."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def points(tmp_path_factory: pytest.TempPathFactory) -> tuple[Point, ...]:
    tiny = tmp_path_factory.mktemp("targets") / "tiny.toml"
    tiny.write_text(SMALL_TARGET)
    return grid(["default", "ice40up5k", str(tiny)], [3, 8], [10, 16])


def torch_output(x: np.ndarray) -> np.ndarray:
    """The snnTorch module's output spikes (T, B, 4), step by step from zero state."""
    net = build()
    utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(torch.from_numpy(x[t]).float()) for t in range(x.shape[0])]).numpy()


def test_cluster_and_local_processes_write_the_same_bytes(
    data: dict[str, Any], points: tuple[Point, ...], client: Client, tmp_path: Path
) -> None:
    common = {"calibration": data["calib"], "labels": data["y"], "progress": False}
    local = sweep(build(), points, data["x"], output=tmp_path / "local", workers=1, shard_samples=5, **common)
    cluster = sweep(
        build(), points, data["x"], output=tmp_path / "cluster", client=client, shard_samples=16, **common
    )
    assert local == cluster
    for name in ("sweep.json", "sweep.csv", "sweep.txt"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "cluster" / name).read_bytes()
    assert (tmp_path / "local" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((tmp_path / "local" / "sweep.json").read_text())
    assert [(r["target"], r["weight_bits"], r["state_bits"]) for r in stored] == [
        (p.target, p.weight_bits, p.state_bits) for p in points
    ]
    tiny = [r for r in stored if r["target"].endswith("tiny.toml")]
    assert len(tiny) == 4
    for r in tiny:  # a point that does not fit is a record with its reason, not an aborted sweep
        assert not r["ok"] and not r["fits"] and r["accuracy"] is None
        assert re.fullmatch(r"cores: needs 3 cores of 8 neurons .* tiny has 1", r["reason"]), r["reason"]
    assert all(r["ok"] for r in stored if not r["target"].endswith("tiny.toml"))


def test_a_sweep_where_no_point_fits_still_writes_its_files(
    data: dict[str, Any], points: tuple[Point, ...], tmp_path: Path
) -> None:
    tiny = [p for p in points if p.target.endswith("tiny.toml")][:1]
    records = sweep(
        build(), tiny, data["x"], calibration=data["calib"], output=tmp_path, workers=1, progress=False
    )
    assert [r["ok"] for r in records] == [False]
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # an empty plot, not a crash
    assert "does not fit: cores: needs 3 cores" in (tmp_path / "sweep.txt").read_text()


def test_records_and_frontier_against_brute_force(
    data: dict[str, Any], points: tuple[Point, ...], client: Client
) -> None:
    chosen = [p for p in points if not p.target.endswith("tiny.toml")]
    records = sweep(
        build(), chosen, data["x"], calibration=data["calib"], labels=data["y"], client=client,
        shard_samples=4, progress=False,
    )  # fmt: skip
    reference = torch_output(data["x"])
    expected = []
    for p in chosen:
        target = dataclasses.replace(
            snncompile.load_target(p.target),
            weight_bits=p.weight_bits,
            state=Fixed(p.state_bits, 0),
        )
        program = snncompile.compile(build(), target, calibration=data["calib"])
        sim = program.simulate(data["x"])  # the whole input at once, no shards
        counts = sim.spikes.sum(axis=0)
        energy = sim.cycles.energy_j.mean()
        expected.append(
            {
                "accuracy": float(np.mean(counts.argmax(axis=1) == data["y"])),
                "agreement": float(np.mean(sim.spikes == reference)),
                "memory": sum(m.width * m.depth for m in program.memories.values()),
                "energy": float(energy),
                "cycles": float(sim.cycles.cycles.sum(axis=0).mean()),
            }
        )
    for rec, exp in zip(records, expected, strict=True):
        assert rec["accuracy"] == exp["accuracy"]
        assert rec["agreement"] == pytest.approx(exp["agreement"], abs=1e-12)
        assert rec["memory_bits_total"] == exp["memory"]
        assert rec["energy_j"] == pytest.approx(exp["energy"], rel=1e-12)
        assert rec["cycles_per_sample"] == exp["cycles"]
        assert rec["float_accuracy"] == float(np.mean(reference.sum(axis=0).argmax(axis=1) == data["y"]))

    def on_front(cost: str) -> list[bool]:
        flags = []
        for e in expected:
            beaten = any(
                o["accuracy"] >= e["accuracy"]
                and o[cost] <= e[cost]
                and (o["accuracy"], o[cost]) != (e["accuracy"], e[cost])
                for o in expected
            )
            flags.append(not beaten)
        return flags

    assert [r["frontier_energy"] for r in records] == on_front("energy")
    assert [r["frontier_memory"] for r in records] == on_front("memory")
    assert any(r["frontier_energy"] for r in records) and not all(r["frontier_energy"] for r in records)


def test_resume_runs_only_the_missing_points(
    data: dict[str, Any], points: tuple[Point, ...], client: Client, tmp_path: Path
) -> None:
    args = {"calibration": data["calib"], "labels": data["y"], "client": client, "progress": False}
    first = sweep(build(), points[:3], data["x"], output=tmp_path / "run", **args)
    marked = tmp_path / "run" / "points" / f"{points[1].key}.json"
    kept = {**json.loads(marked.read_text()), "range_verdict": "written by the first run"}
    marked.write_text(json.dumps(kept))
    resumed = sweep(build(), points[:6], data["x"], output=tmp_path / "run", **args)
    fresh = sweep(build(), points[:6], data["x"], output=tmp_path / "fresh", **args)
    assert resumed[1]["range_verdict"] == "written by the first run"  # read back, not recomputed
    assert resumed[0] == first[0] and resumed[3:] == fresh[3:]
    assert sorted(p.name for p in (tmp_path / "run" / "points").iterdir()) == sorted(
        f"{p.key}.json" for p in points[:6]
    )
    other = data["x"].copy()
    other[0, 0, 0] ^= 1
    with pytest.raises(
        InputError,
        match=r"holds a sweep of another model, other inputs, other options or another snncompile version",
    ):
        sweep(build(), points[:6], other, output=tmp_path / "run", **args)


def test_command_line_sweep_on_a_scheduler(data: dict[str, Any], client: Client, tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(MODEL)
    torch.save(build().state_dict(), tmp_path / "net.pt")
    np.savez(tmp_path / "x.npz", x=data["x"], y=data["y"])
    np.savez(tmp_path / "calib.npz", x=data["calib"])
    address = client.scheduler.address
    args = [
        "sweep", f"{tmp_path / 'model.py'}:build", "--checkpoint", str(tmp_path / "net.pt"), "--targets",
        "default,ice40up5k", "--weight-bits", "4,8", "--state-bits", "16", "--calibration",
        str(tmp_path / "calib.npz"), "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "out"),
        "--scheduler", address,
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["target", "w", "s", "d", "accuracy", "agreement", "memory", "kb", "cycles",
                                "latency", "us", "energy", "nJ", "sat", "frontier"]  # fmt: skip
    assert len(json.loads((tmp_path / "out" / "sweep.json").read_text())) == 4
    assert (tmp_path / "out" / "sweep.csv").read_text().count("\n") == 5


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        (
            "--weight-bits",
            "4,x",
            r"Error: --weight-bits '4,x' must be comma-separated integers, e\.g\. 4,6,8",
        ),
        ("--targets", "nope", r"Error: sweep point nope-w4-s16: unknown target 'nope'; available: .*"),
        ("--state-bits", "16,16", r"Error: sweep state bits: \[16, 16\] lists a value twice"),
    ],
)
def test_command_line_errors_are_one_line(tmp_path: Path, option: str, value: str, message: str) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 3, N_IN), np.uint8))
    opts = {"--targets": "default", "--weight-bits": "4", "--state-bits": "16", option: value}
    args = ["sweep", "m.py:build", "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(main, [*args, *(a for kv in opts.items() for a in kv)])
    assert result.exit_code == 1
    assert re.fullmatch(message, result.output.strip()), result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_killed_worker_loses_and_duplicates_no_point(
    data: dict[str, Any], points: tuple[Point, ...], client: Client, tmp_path: Path
) -> None:
    """A worker process is killed while it holds tasks; the nanny restarts it, the scheduler reruns
    them, and the records equal an undisturbed run's."""
    args = {"calibration": data["calib"], "labels": data["y"], "progress": False}
    undisturbed = sweep(build(), points[:4], data["x"], client=client, shard_samples=8, **args)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=":0", local_directory=tmp_path
        ) as cluster,
        Client(cluster) as processes,
    ):
        victim = next(iter(cluster.workers.values()))
        done: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: done.update(
                records=sweep(build(), points[:4], data["x"], client=processes, shard_samples=8, **args)
            )
        )
        worker.start()
        deadline = time.monotonic() + 60
        while not processes.processing().get(victim.worker_address) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes.processing().get(victim.worker_address), "no task reached the worker"
        os.kill(victim.process.process.pid, signal.SIGKILL)
        worker.join(timeout=120)
        assert not worker.is_alive()
    assert done["records"] == undisturbed


def test_a_point_replaces_only_the_widths_it_names() -> None:
    base = snncompile.load_target("zu3eg")
    target = Point("zu3eg", 6, 12, 5).configure()
    assert (target.weight_bits, target.state.width, target.decay_frac) == (6, 12, 5)
    assert (
        dataclasses.replace(
            target, weight_bits=base.weight_bits, state=base.state, decay_frac=base.decay_frac
        )
        == base
    )
    assert Point("zu3eg", 6, 12).configure().decay_frac == base.decay_frac
    assert [p.key for p in grid(["zu3eg"], [4], [12, 16], [5, 7])] == [
        "zu3eg-w4-s12-d5", "zu3eg-w4-s12-d7", "zu3eg-w4-s16-d5", "zu3eg-w4-s16-d7",
    ]  # fmt: skip
    with pytest.raises(
        InputError,
        match=r"^sweep point zu3eg-w4-s12-d20: target 'zu3eg': decay_frac must be 1\.\.15, got 20$",
    ):
        grid(["zu3eg"], [4], [12], [20])


def test_progress_counts_points_and_shards(
    data: dict[str, Any], points: tuple[Point, ...], client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {"calibration": data["calib"], "labels": data["y"], "shard_samples": 10}
    sweep(build(), points[:2], data["x"], client=client, progress=True, **args)
    drawn = capsys.readouterr().err
    assert drawn.endswith("] 2/2 points, 6/6 shards\n")  # 23 samples: shards of 10, 10 and 3
    assert drawn.count("\r") == 1 + 2 + 6
    sweep(build(), points[:2], data["x"], client=client, progress=False, **args)
    assert capsys.readouterr().err == ""
