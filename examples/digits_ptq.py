"""Train a Leaky MLP on the digits, compile it post-training for artix7-100t, simulate, compare.

python examples/digits_ptq.py [--epochs N] [--out DIR]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from digits_common import accuracy, digits_spikes, forward, mlp, train

import snncompile
from snncompile.build import write_build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", help="also write the build directory here")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = digits_spikes()
    net = train(mlp(), x_train, y_train, args.epochs)
    with torch.no_grad():
        float_acc = accuracy(forward(net, torch.from_numpy(x_test).float()).numpy(), y_test)
    program = snncompile.compile(net, "artix7-100t", calibration=x_train[:, :200])
    sim = program.simulate(x_test)
    int_acc = accuracy(sim.spikes.sum(axis=0), y_test)
    print(f"float accuracy {100 * float_acc:.1f}%, integer (artix7-100t) accuracy {100 * int_acc:.1f}%")
    print(f"range analysis: {program.ranges.verdict}; {len(program.notes)} values rounded post-training")
    summary = sim.cycles.summary()
    print(
        f"cycles per sample {summary['cycles_per_sample']:.0f}, latency {summary['latency_per_sample_s'] * 1e6:.1f} us"
    )
    if args.out:
        write_build(program, args.out)
        print(f"build written to {args.out}")
    assert abs(float_acc - int_acc) <= 0.02, "post-training quantization lost more than 2 points"
    assert np.isfinite(summary["cycles_per_sample"])


if __name__ == "__main__":
    main()
