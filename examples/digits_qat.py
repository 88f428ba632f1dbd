"""Quantization-aware training with prepare_qat, then verification: bit-exact with the simulator.

python examples/digits_qat.py [--epochs N] [--out DIR]   (DIR gets model.py, net.pt and x.npz for
`snncompile verify DIR/model.py:build --checkpoint DIR/net.pt --input DIR/x.npz`)
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from digits_common import accuracy, digits_spikes, forward, mlp, train
from snncompile.quant import prepare_qat

import snncompile
from snncompile.verify import verify


def build() -> torch.nn.Module:
    """The QAT model (for `snncompile verify examples/digits_qat.py:build`)."""
    return prepare_qat(mlp(), "default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", help="write model, checkpoint and test input here for the CLI")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = digits_spikes()
    net = train(build(), x_train, y_train, args.epochs)
    net.eval()
    with torch.no_grad():
        qat_acc = accuracy(forward(net, torch.from_numpy(x_test).float()).numpy(), y_test)
    program = snncompile.compile(net, "default", example_input=torch.zeros(1, 64))
    assert program.exact, program.notes
    report = verify(net, program.float_graph, program.graph, x_test, x_test, exact=True, labels=y_test)
    print(f"QAT accuracy {100 * qat_acc:.1f}%; range analysis {program.ranges.verdict}")
    print(report.text())
    assert report.passed
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(__file__).with_name("digits_common.py"), out / "digits_common.py")
        shutil.copy(__file__, out / "model.py")
        torch.save(net.state_dict(), out / "net.pt")
        np.savez(out / "x.npz", x=x_test, y=y_test)
        print(f"wrote {out}/model.py, net.pt, x.npz")


if __name__ == "__main__":
    main()
