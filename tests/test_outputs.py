"""Several outputs and readouts, pinned against the module's own forward in torch.

Contract under test: every value forward returns is an output node of the traced graph, in return
order; ``run_float(graph, x).outputs`` holds each by name and position, bit for bit equal to what the
module returns step by step (float32 torch, eval, zero state); a non-spiking readout (a final
``nn.Linear``) is an output of real values, which ``verify`` compares with a tolerance instead of
crashing, and which the CLI writes as real values with their scale. Bad verify inputs (labels of the
wrong length, a build of another network) are one-line errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
from click.testing import CliRunner
from conftest import reset_snntorch_states
from torch import Tensor, nn

import snncompile
from snncompile.cli import main

T, B, N_IN, N_HID, N_OUT = 6, 4, 10, 12, 3

MODEL = """
import snntorch as snn
import torch
from torch import nn


class Readout(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear({n_in}, {n_hid})
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc2 = nn.Linear({n_hid}, {n_out})

    def forward(self, x):
        return self.fc2(self.lif1(self.fc1(x)))


class Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear({n_in}, 7)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)

    def forward(self, x):
        return self.lif1(self.fc1(x))


def readout():
    return Readout()


def other():
    return Other()
"""


class TwoLayers(nn.Module):
    """``return spk2, spk1, mem2``: the output spikes, the hidden spikes and the output membrane."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1 = nn.Linear(N_IN, N_HID)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.fc2 = nn.Linear(N_HID, N_OUT)
        self.lif2 = snn.Leaky(beta=0.8, init_hidden=True, output=True)
        with torch.no_grad():
            self.fc1.weight.uniform_(-0.4, 0.8)
            self.fc2.weight.uniform_(-0.3, 0.9)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        spk1 = self.lif1(self.fc1(x))
        spk2, mem2 = self.lif2(self.fc2(spk1))
        return spk2, spk1, mem2


def _x(seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((T, B, N_IN), generator=g) < 0.5).float().numpy()


@torch.no_grad()
def _steps(net: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    """The module's own forward, one call per step from zero state, each returned value stacked."""
    net.eval()
    reset_snntorch_states(net)
    calls = [net(torch.from_numpy(x[t])) for t in range(x.shape[0])]
    calls = [c if isinstance(c, tuple) else (c,) for c in calls]
    return [torch.stack(v).numpy() for v in zip(*calls, strict=True)]


def test_several_outputs_by_name_and_position() -> None:
    net, x = TwoLayers(), _x(2)
    want = _steps(net, x)
    graph = snncompile.trace(net, torch.zeros(B, N_IN))
    assert graph.outputs == ("output", "output_1", "output_2")
    assert [graph.line(o) for o in graph.outputs] == [
        "%output = output(%lif2)",
        "%output_1 = output(%lif1)",
        "%output_2 = output[state=mem](%lif2)",
    ]
    run = snncompile.run_float(graph, x)
    assert len(run.outputs) == 3
    for i, name in enumerate(graph.outputs):
        assert np.array_equal(run.outputs[i], want[i]) and run.outputs[name] is run.outputs[i]
    assert np.array_equal(run.output, want[0])
    assert 0 < want[1].mean() < 1 and 0 < want[0].mean() < 1, "vacuous: silent or saturated layers"


def test_several_outputs_survive_the_image(tmp_path: Path) -> None:
    """A build decoded from its image keeps every output and what it reads."""
    from snncompile.quant import prepare_qat

    from snncompile.build import read_build, write_build

    q = prepare_qat(TwoLayers())
    program = snncompile.compile(q, "default", example_input=torch.zeros(B, N_IN))
    write_build(program, tmp_path / "build")
    decoded = read_build(tmp_path / "build")[0]
    assert [decoded.line(o) for o in decoded.outputs] == [
        program.graph.line(o) for o in program.graph.outputs
    ]
    x = _x(3)
    want = _steps(q, x)
    sim = program.simulate(x)
    fracs = program.graph.fracs()
    for i, name in enumerate(program.graph.outputs):
        assert np.array_equal(sim.outputs[name] * 2.0 ** -fracs[name], want[i]), name


def _model_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(MODEL.format(n_in=N_IN, n_hid=N_HID, n_out=N_OUT))
    return path


def test_readout_float_run_matches_torch(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("readout_net", _model_file(tmp_path))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net, x = mod.readout(), _x(4)
    graph = snncompile.trace(net, torch.zeros(B, N_IN))
    assert graph.line("output") == "%output = output(%fc2)"
    assert np.array_equal(snncompile.run_float(graph, x).outputs["output"], _steps(net, x)[0])


def test_readout_verify_and_simulate_on_the_command_line(tmp_path: Path) -> None:
    model = f"{_model_file(tmp_path)}:readout"
    np.savez(tmp_path / "x.npz", x=_x(5).astype(np.uint8), y=np.arange(B) % N_OUT)
    result = CliRunner().invoke(
        main, ["verify", model, "--input", str(tmp_path / "x.npz"), "--tolerance", "0.2"]
    )
    assert result.exit_code in (0, 1), result.output
    assert "internal error" not in result.output
    assert "readout output (values of 'fc2'): largest difference" in result.stdout
    build = tmp_path / "build"
    ok = CliRunner().invoke(
        main, ["-q", "compile", model, "--calibration", str(tmp_path / "x.npz"), "-o", str(build)]
    )
    assert ok.exit_code == 0, ok.output
    y = tmp_path / "y.npz"
    ok = CliRunner().invoke(
        main, ["-q", "simulate", str(build), "--input", str(tmp_path / "x.npz"), "-o", str(y)]
    )
    assert ok.exit_code == 0, ok.output
    with np.load(y) as out:
        assert "spikes" not in out.files and "membrane" not in out.files  # a readout is never called spikes
        assert np.array_equal(out["output"], out["output_codes"] * out["output_scale"])
        assert out["output"].dtype == np.float64 and float(out["output_scale"]) < 1


@pytest.mark.parametrize(
    ("labels", "factory", "pattern"),
    [
        (
            np.zeros(B + 1, np.int64),
            "readout",
            r"labels y have shape \(5,\); expected \(4,\), one label per sample",
        ),
        (
            None,
            "other",
            r"the program was not compiled from this model: the model has neuron and output nodes",
        ),
    ],
    ids=["labels-length", "other-architecture"],
)
def test_verify_refuses_with_one_line(
    tmp_path: Path, labels: np.ndarray | None, factory: str, pattern: str
) -> None:
    import re

    model = _model_file(tmp_path)
    arrays = {"x": _x(6).astype(np.uint8)} | ({} if labels is None else {"y": labels})
    np.savez(tmp_path / "x.npz", **arrays)
    build = tmp_path / "build"
    ok = CliRunner().invoke(
        main,
        ["-q", "compile", f"{model}:readout", "--calibration", str(tmp_path / "x.npz"), "-o", str(build)],
    )
    assert ok.exit_code == 0, ok.output
    result = CliRunner().invoke(
        main, ["verify", f"{model}:{factory}", "--input", str(tmp_path / "x.npz"), "--build", str(build)]
    )
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "internal error" not in lines[0], result.output
    assert re.search(pattern, lines[0]), lines[0]


def test_verify_runs_the_module_in_eval_mode() -> None:
    """Train-mode Dropout is switched off for the comparison, and the module's mode is restored."""
    from snncompile.frontend import TracedForward  # noqa: F401  (public)
    from snncompile.verify import run_torch

    net = nn.Sequential(nn.Linear(N_IN, N_HID), nn.Dropout(0.5), snn.Leaky(beta=0.9, init_hidden=True))
    x = _x(7)
    traced = snncompile.trace_forward(net, torch.zeros(B, N_IN))
    net.train()
    got = run_torch(net, traced, x).outputs[0]
    assert net.training and net[1].training
    assert np.array_equal(got, _steps(net, x)[0])  # _steps runs eval
