"""Shared by the digits examples: scikit-learn's bundled 8x8 digits (no download) as spike trains,
and a short snnTorch training loop."""

from __future__ import annotations

import numpy as np
import snntorch as snn
import torch
from sklearn.datasets import load_digits
from snntorch import utils
from torch import nn

STEPS = 20


def digits_spikes(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rate-coded digits: x[T, B, 64] uint8 spikes (probability = pixel / 16) and labels, train/test."""
    data = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.target))
    pixels, labels = data.data[order] / 16.0, data.target[order]
    spikes = (rng.random((STEPS, *pixels.shape)) < pixels).astype(np.uint8)
    split = 1400
    return spikes[:, :split], labels[:split], spikes[:, split:], labels[split:]


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, 64),
        snn.Leaky(beta=0.875, init_hidden=True),
        nn.Linear(64, 10),
        snn.Leaky(beta=0.875, init_hidden=True),
    )


def forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output spike counts (B, 10) of a single-step Sequential over x[T, B, 64]."""
    utils.reset(net)
    return torch.stack([net(x[t]) for t in range(x.shape[0])]).sum(0)


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    xs, ys = torch.from_numpy(x).float(), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for i in range(0, xs.shape[1], 100):
            counts = forward(net, xs[:, i : i + 100])
            loss = nn.functional.cross_entropy(counts, ys[i : i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def accuracy(counts: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(counts.argmax(axis=1) == labels))
