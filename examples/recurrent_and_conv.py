"""An RSynaptic recurrent network and a small conv network: QAT, compile for a target, verify, build.

python examples/recurrent_and_conv.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import snntorch as snn
import torch
from snncompile.quant import prepare_qat
from torch import nn

import snncompile
from snncompile.build import read_build, write_build
from snncompile.verify import verify


def rsynaptic_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(40, 32),
        snn.RSynaptic(alpha=0.75, beta=0.875, linear_features=32, init_hidden=True),
        nn.Linear(32, 5),
        snn.Leaky(beta=0.875, init_hidden=True),
    )


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        snn.Leaky(beta=0.875, init_hidden=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3),
        snn.Leaky(beta=0.875, init_hidden=True),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 4),
        snn.Leaky(beta=0.875, init_hidden=True),
    )


def run(name: str, net: nn.Module, shape: tuple[int, ...], target: str, out: str | None) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # untrained weights, scaled so that every layer fires
    qat = prepare_qat(net, target)
    x = (np.random.default_rng(0).random((25, 4, *shape)) < 0.3).astype(np.uint8)
    program = snncompile.compile(qat, target, example_input=torch.zeros(1, *shape))
    report = verify(qat, program.float_graph, program.graph, x, x, exact=True)
    print(f"{name} on {target}: {report.text().splitlines()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        build = out or f"{tmp}/{name}"
        write_build(program, build)
        decoded, _ = read_build(build)
        same = np.array_equal(snncompile.run_integer(decoded, x).output, program.simulate(x).spikes)
        print(f"  build {build}: the decoded image simulates identically: {same}")
    assert report.passed and same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", help="write the builds under this directory")
    args = parser.parse_args()
    torch.manual_seed(0)
    run("rsynaptic", rsynaptic_net(), (40,), "zu3eg", args.out and f"{args.out}/rsynaptic")
    run("conv", conv_net(), (1, 8, 8), "ice40up5k", args.out and f"{args.out}/conv")


if __name__ == "__main__":
    main()
