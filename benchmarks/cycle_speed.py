"""What cycle counting costs next to the engine, on the snnTorch tutorial-7 conv net.

Net: Conv2d(C,12,5)->MaxPool2d(2)->Leaky->Conv2d(12,64,5)->MaxPool2d(2)->Leaky->Flatten->Linear->Leaky
(beta 0.5, the tutorial's), compiled post-training for the default target; inputs are Bernoulli(0.2)
float32 spikes, T=10, batch 8; weights are scaled until the hidden layers fire at a few percent.

Timing (1x28x28, best of ``--repeat``, one process): the bare engine
(``snncompile.backends.intsim.simulate``, output spikes and states) against ``Program.simulate`` (the
same engine run, keeping the cycle model's event nodes, plus the cycle counts), and the cycle model's
own parts: building it (once per program: ``Program.cycle_model`` keeps it) and counting one run.

Memory (2x32x32, 4x32x32 and 16x32x32 inputs): the peak resident memory the bare engine run and the
first ``Program.simulate`` (building the cycle model included) add, each in a fresh process.

Usage: python benchmarks/cycle_speed.py [--repeat 20] [--channels 2,4,16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import snntorch as snn
import torch
from simulate_speed import peak_rss
from snncompile.backends.intsim import CycleModel, simulate
from torch import nn

import snncompile

T, B = 10, 8


def tutorial7(channels: int, side: int) -> nn.Sequential:
    """The tutorial-7 net for a ``channels x side x side`` input."""
    flat = 64 * (((side - 4) // 2 - 4) // 2) ** 2
    return nn.Sequential(
        nn.Conv2d(channels, 12, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, init_hidden=True),
        nn.Conv2d(12, 64, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.5, init_hidden=True),
        nn.Flatten(), nn.Linear(flat, 10), snn.Leaky(beta=0.5, init_hidden=True),
    )  # fmt: skip


def prepare(channels: int, side: int) -> tuple[np.ndarray, snncompile.Program]:
    torch.manual_seed(0)
    net = tutorial7(channels, side)
    with torch.no_grad():
        for layer, gain in zip(
            [m for m in net if isinstance(m, nn.Conv2d | nn.Linear)], [3.0, 2.0, 3.0], strict=True
        ):
            layer.weight.mul_(gain)
    x = (torch.rand((T, B, channels, side, side)) < 0.2).float().numpy()
    return x, snncompile.compile(net, "default", calibration=x[:, :4])


def memory_child(channels: int, what: str) -> None:
    """Prints the peak memory one run adds (a fresh process: no warm allocator, no cached model)."""
    x, program = prepare(channels, 32)
    if what == "engine":
        _, added = peak_rss(lambda: simulate(program.graph, x, progress=False))
    else:
        _, added = peak_rss(lambda: program.simulate(x))
    print(added)


def child_memory(channels: int, what: str) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", f"{channels}:{what}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def best_times(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Best wall time of each function, the functions taking turns (a busy machine slows them alike)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def timing(repeat: int) -> None:
    x, program = prepare(1, 28)
    start = time.perf_counter()
    model = CycleModel(program.graph, program.target)
    t_build = time.perf_counter() - start
    run = simulate(program.graph, x, progress=False, keep=model.event_nodes)
    program.simulate(x)  # builds and keeps the program's cycle model
    best = best_times(
        {
            "engine": lambda: simulate(program.graph, x, progress=False),
            "simulate": lambda: program.simulate(x),
            "count": lambda: model.count(run, run.values),
        },
        repeat,
    )
    t_engine, t_sim, t_count = best["engine"], best["simulate"], best["count"]
    report = program.simulate(x).cycles
    rates = ", ".join(f"{n} {100 * np.count_nonzero(s) / s.size:.1f}%" for n, s in run.spikes.items())
    print(f"tutorial-7 conv net, 1x28x28, T={T}, B={B} (best of {repeat}); firing: {rates}")
    print(f"  engine alone                 {t_engine * 1e3:8.1f} ms")
    print(f"  Program.simulate with cycles {t_sim * 1e3:8.1f} ms  ({t_sim / t_engine:.2f}x the engine)")
    print(f"  cycle model: build {t_build * 1e3:.1f} ms (once per program), count {t_count * 1e3:.2f} ms "
          f"({t_count / t_engine:.3f}x the engine)")  # fmt: skip
    print(f"  {report.summary()['cycles_per_sample']:,.0f} cycles per sample")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--channels", default="2,4,16")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.memory_child:
        channels, what = args.memory_child.split(":")
        memory_child(int(channels), what)
        return
    timing(args.repeat)
    for channels in (int(c) for c in args.channels.split(",")):
        engine, cycles = child_memory(channels, "engine"), child_memory(channels, "cycles")
        print(f"{channels}x32x32: peak memory added: engine {engine / 2**20:.1f} MiB, "
              f"Program.simulate with cycles {cycles / 2**20:.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
