"""Compile time against network size: trace -> quantize -> map -> image in every format.

Runs a float 784-1024-256-10 Leaky MLP (1.07 M synapses, post-training quantized with calibration
spikes) and a 10.5 M-synapse 2048-4096-512-10 MLP, both for asic-generic (1 M 8-bit synapses do not fit
the 4.9 Mb of artix7-100t), and prints the seconds of each stage. Usage: python benchmarks/compile_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import snntorch as snn
import torch
from torch import nn

import snncompile
from snncompile.build import write_build
from snncompile.targets import load_target


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), snn.Leaky(beta=0.9, init_hidden=True)]
    return nn.Sequential(*layers)


def run(sizes: list[int], target: str) -> None:
    torch.manual_seed(0)
    net = mlp(sizes)
    synapses = sum(a * b for a, b in itertools.pairwise(sizes))
    calib = (np.random.default_rng(0).random((4, 2, sizes[0])) < 0.1).astype(np.float32)
    t0 = time.perf_counter()
    program = snncompile.compile(net, load_target(target), calibration=calib)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_build(program, Path(tmp) / "build")
        t2 = time.perf_counter()
        size = sum(p.stat().st_size for p in (Path(tmp) / "build").rglob("*") if p.is_file())
    print(
        f"{'-'.join(map(str, sizes))} ({synapses / 1e6:.2f} M synapses) on {target}: compile (trace, calibrate, "
        f"quantize, range analysis, encode, map) {t1 - t0:.2f} s, build written (all formats) {t2 - t1:.2f} s, "
        f"total {t2 - t0:.2f} s, {size / 1e6:.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only the 1 M-synapse network")
    args = parser.parse_args()
    torch.set_num_threads(2)
    run([784, 1024, 256, 10], "asic-generic")
    if not args.quick:
        run([2048, 4096, 512, 10], "asic-generic")


if __name__ == "__main__":
    main()
