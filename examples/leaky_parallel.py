"""A LeakyParallel network: QAT (its RNN becomes a step-by-step quantized module), compile, verify.

python examples/leaky_parallel.py
"""

from __future__ import annotations

import numpy as np
import snntorch as snn
import torch
from snncompile.quant import prepare_qat
from torch import nn

import snncompile
from snncompile.verify import verify


def main() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(snn.LeakyParallel(30, 24, beta=0.875), snn.LeakyParallel(24, 6, beta=0.75))
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.mul_(3.0)
    qat = prepare_qat(net)
    x = (np.random.default_rng(0).random((30, 4, 30)) < 0.3).astype(np.uint8)
    program = snncompile.compile(qat, "artix7-100t", example_input=torch.zeros(1, 30))
    print(program.graph)
    report = verify(qat, program.float_graph, program.graph, x, x, exact=True)
    print(report.text())
    assert report.passed


if __name__ == "__main__":
    main()
