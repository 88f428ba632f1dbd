"""Wall time of the digits design-space sweep (5 targets x weights 4,6,8 x states 12,16 = 30 points) on
Dask's local process scheduler with 1, 2 and 4 workers and on a LocalCluster, and a check that every
run returns the same records.

python benchmarks/sweep_speed.py --prepare digits      # trains the digits MLP: digits/mlp.pt, calib.npz, test.npz
python benchmarks/sweep_speed.py --data digits [--workers 1,2,4] [--cluster-workers 2]

The first writes what the README's ``snncompile sweep`` command reads; the second times the sweep.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from digits_common import digits_spikes, mlp, train  # noqa: E402

from snncompile.loading import load_npz, save_npz  # noqa: E402
from snncompile.sweep import grid, sweep  # noqa: E402

TARGETS = ["ice40up5k", "artix7-100t", "zu3eg", "asic-generic", "default"]


def prepare(directory: Path, epochs: int) -> None:
    """Trains the digits MLP and writes its checkpoint, calibration inputs and test set."""
    directory.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = digits_spikes()
    net = train(mlp(), x_train, y_train, epochs)
    torch.save(net.state_dict(), directory / "mlp.pt")
    save_npz(directory / "calib.npz", {"x": x_train[:, :200]})
    save_npz(directory / "test.npz", {"x": x_test, "y": y_test})
    print(f"wrote {directory}/mlp.pt, calib.npz ({x_train[:, :200].shape}), test.npz ({x_test.shape})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prepare", type=Path, help="train the model and write its files here, then stop")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--data", type=Path, default=Path("digits"), help="what --prepare wrote")
    parser.add_argument("--workers", default="1,2,4", help="local worker counts to time")
    parser.add_argument("--cluster-workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--shard-samples", type=int, default=100)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.epochs)
        return
    from distributed import Client, LocalCluster

    net = mlp()
    net.load_state_dict(torch.load(args.data / "mlp.pt", weights_only=True))
    x, y = load_npz(args.data / "test.npz", "x"), load_npz(args.data / "test.npz", "y")
    calib = load_npz(args.data / "calib.npz", "x")
    points = grid(TARGETS, [4, 6, 8], [12, 16])
    common = {"calibration": calib, "labels": y, "shard_samples": args.shard_samples, "progress": False}
    runs = []
    for w in (int(v) for v in args.workers.split(",")):
        start = time.perf_counter()
        records = sweep(net, points, x, workers=w, **common)
        runs.append(
            (f"local processes, {w} worker{'s' if w > 1 else ''}", time.perf_counter() - start, records)
        )
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        with (
            LocalCluster(
                n_workers=args.cluster_workers,
                threads_per_worker=1,
                dashboard_address=":0",
                local_directory=scratch,
            ) as cluster,  # fmt: skip
            Client(cluster) as client,
        ):
            records = sweep(net, points, x, client=client, **common)
        runs.append(
            (
                f"LocalCluster, {args.cluster_workers} worker processes (with its start)",
                time.perf_counter() - start,
                records,
            )
        )
    same = all(r == runs[0][2] for _, _, r in runs)
    measured = sum(r["ok"] for r in runs[0][2])
    print(f"{len(points)} points ({measured} measured), {x.shape[1]} samples x {x.shape[0]} steps, "
          f"shards of {args.shard_samples}; identical records in every run: {'yes' if same else 'NO'}")  # fmt: skip
    for name, seconds, _ in runs:
        print(f"  {name:55s} {seconds:7.1f} s")
    best = max(runs[0][2], key=lambda r: (r["ok"], r["accuracy"] or 0.0))
    print(
        f"best accuracy {100 * best['accuracy']:.1f}% ({best['target']}, w{best['weight_bits']}, s{best['state_bits']})"
    )
    assert same, "the records depend on the scheduler"
    assert np.isfinite(best["energy_j"])


if __name__ == "__main__":
    main()
