"""snnTorch float32 against the snncompile integer engine on the same workloads, in one process.

W1: Linear(784,128)->Leaky->Linear(128,10)->Leaky, beta 0.9, thr 1, subtract, T=100, batch 128.
W2: Linear(784,256)->RSynaptic(dense recurrence, alpha 0.8, beta 0.9)->Linear(256,10)->Leaky, T=100, B=64.
W3: Conv2d(1,12,5)->MaxPool2d(2)->Leaky->Conv2d(12,32,5)->MaxPool2d(2)->Leaky->Flatten->Linear(512,10)
    ->Leaky on 1x28x28, T=25, batch 32.
Inputs are Bernoulli(0.1) spikes; weights are scaled until the hidden layers fire at a few percent.
Both engines get the same float32 spike tensor (what users pass). snnTorch runs its usual time loop
under torch.no_grad with 2 threads; the engine, like snnTorch's loop, returns spikes without recording
every state (its bit-exactness check records them). The float model is compiled post-training for the
default target. For each workload the script prints both times (best of ``--repeat``), the ratio, the
peak memory each run adds (measured in fresh processes, so that no warm allocator hides it), the hidden
firing rates, whether the engine's spikes and states equal the integer reference interpreter's, and the
engine's plan (the CPU, each candidate kernel's measured cost, the choice).

``--dataset N`` also runs W1 on N samples (default 10,000) in a fresh process and reports the peak
memory the run adds against the size of the float32 input array.

Usage: python benchmarks/simulate_speed.py [--repeat 5] [--workloads W1,W2,W3] [--dataset 10000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import snntorch as snn
import torch
from snncompile.backends.intsim import describe_plan, plan, simulate
from snncompile.backends.intsim.tuning import describe_machine
from snntorch import utils
from torch import nn

import snncompile
from snncompile.passes import analyze_ranges


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def peak_rss(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Runs ``fn`` and returns its result and the peak resident memory it added (sampled every 1 ms)."""
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return result, max(peak[0], _rss()) - base


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def snntorch_run(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(x[t]) for t in range(x.shape[0])])


def workloads() -> dict[str, tuple[nn.Module, tuple[int, ...], int, int, list[float]]]:
    """name -> (float model, input shape, T, batch, weight gains per synapse layer)."""
    return {
        "W1": (
            nn.Sequential(nn.Linear(784, 128), snn.Leaky(beta=0.9, init_hidden=True),
                          nn.Linear(128, 10), snn.Leaky(beta=0.9, init_hidden=True)),
            (784,), 100, 128, [5.0, 3.0],
        ),
        "W2": (
            nn.Sequential(nn.Linear(784, 256),
                          snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=256, init_hidden=True),
                          nn.Linear(256, 10), snn.Leaky(beta=0.9, init_hidden=True)),
            (784,), 100, 64, [1.0, 3.0],
        ),
        "W3": (
            nn.Sequential(nn.Conv2d(1, 12, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.9, init_hidden=True),
                          nn.Conv2d(12, 32, 5), nn.MaxPool2d(2), snn.Leaky(beta=0.9, init_hidden=True),
                          nn.Flatten(), nn.Linear(512, 10), snn.Leaky(beta=0.9, init_hidden=True)),
            (1, 28, 28), 25, 32, [2.0, 1.2, 3.0],
        ),
    }  # fmt: skip


def prepare(name: str) -> tuple[nn.Module, torch.Tensor, snncompile.Program]:
    torch.manual_seed(0)
    net, shape, steps, batch, gains = workloads()[name]
    synapses = [m for m in net if isinstance(m, nn.Linear | nn.Conv2d)]  # not the recurrent layer
    with torch.no_grad():
        for layer, gain in zip(synapses, gains, strict=True):
            layer.weight.mul_(gain)
    x = (torch.rand((steps, batch, *shape)) < 0.1).float()
    return net, x, snncompile.compile(net, "default", calibration=x[:, :8].numpy())


def memory_child(name: str, engine: str) -> None:
    """Prints the memory one run adds and the process's peak (a fresh process: no warm allocator)."""
    net, x, program = prepare(name)
    xn = x.numpy()
    if engine == "snntorch":
        _, added = peak_rss(lambda: snntorch_run(net, x))
    else:  # like snnTorch's loop, return the output spikes without recording every state
        _, added = peak_rss(lambda: simulate(program.graph, xn, progress=False, record_states=False))
    print(added, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def dataset_child(samples: int) -> None:
    """W1 on ``samples`` samples of float32 spikes, recording every state: the memory the run adds."""
    _, _, program = prepare("W1")
    steps = workloads()["W1"][2]
    rng = np.random.default_rng(0)
    x = np.empty((steps, samples, 784), np.float32)
    for t in range(steps):
        x[t] = rng.random((samples, 784), np.float32) < 0.1
    simulate(program.graph, x[:, :64], progress=False)  # compiles the kernels outside the measurement
    start = time.perf_counter()
    _, added = peak_rss(lambda: simulate(program.graph, x, progress=False))
    print(added, x.nbytes, time.perf_counter() - start)


def child_memory(name: str, engine: str) -> tuple[int, int]:
    """(memory the run adds, peak resident memory of the whole process), measured in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", f"{name}:{engine}"],
        capture_output=True,
        text=True,
        check=True,
    )
    added, peak = out.stdout.strip().splitlines()[-1].split()
    return int(added), int(peak)


def bench(name: str, repeat: int) -> None:
    net, x, program = prepare(name)
    xn = x.numpy()  # both engines get the same float32 spikes
    simulate(program.graph, xn, progress=False, record_states=False)  # compiles, times the kernels once
    t_snn = best_time(lambda: snntorch_run(net, x), repeat)
    t_eng = best_time(lambda: simulate(program.graph, xn, progress=False, record_states=False), repeat)
    run = simulate(program.graph, xn, progress=False)
    (add_snn, mem_snn), (add_eng, mem_eng) = child_memory(name, "snntorch"), child_memory(name, "engine")
    reference = snncompile.run_integer(program.graph, xn)
    exact = all(np.array_equal(reference.spikes[n], run.spikes[n]) for n in reference.spikes) and all(
        np.array_equal(reference.states[n][v], run.states[n][v])
        for n in reference.states
        for v in reference.states[n]
    )
    rates = ", ".join(f"{n} {100 * np.count_nonzero(s) / s.size:.1f}%" for n, s in run.spikes.items())
    print(
        f"{name}: snnTorch float32 {t_snn * 1e3:8.1f} ms | snncompile engine {t_eng * 1e3:7.1f} ms | "
        f"speed-up {t_snn / t_eng:5.1f}x | bit-exact with the reference: {exact}"
    )
    print(f"    process peak memory {mem_snn / 2**20:.0f} MiB vs {mem_eng / 2**20:.0f} MiB ({mem_eng / mem_snn:.2f}x); "
          f"added by the run {add_snn / 2**20:.1f} MiB vs {add_eng / 2**20:.1f} MiB")  # fmt: skip
    print(f"    firing: {rates}")
    print("    plan:\n" + describe_plan(program.graph, plan(program.graph, analyze_ranges(program.graph, 1))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument("--dataset", type=int, default=0, help="also run W1 on this many samples")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--dataset-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.memory_child:
        memory_child(*args.memory_child.split(":"))
        return
    if args.dataset_child:
        dataset_child(args.dataset_child)
        return
    print(f"CPU: {describe_machine()}")
    for name in args.workloads.split(","):
        bench(name.strip(), args.repeat)
    if args.dataset:
        cmd = [sys.executable, __file__, "--dataset-child", str(args.dataset)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        added, size, seconds = out.split()
        print(f"W1 on {args.dataset} samples (float32 input {int(size) / 2**20:.0f} MiB, every state recorded): "
              f"{float(seconds):.1f} s, the run adds {int(added) / 2**20:.0f} MiB "
              f"({int(added) / int(size):.2f}x the input)")  # fmt: skip


if __name__ == "__main__":
    main()
