"""``snncompile verify``: bit-exactness, the first divergence on a perturbed build, float criteria, plots."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from snncompile.backends.image import read_image, write_image

from snncompile.cli import main
from snncompile.targets import load_target

MODEL = """
import torch, snntorch as snn
from torch import nn
from snncompile.quant import prepare_qat

def float_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 16), snn.Leaky(beta=0.9, init_hidden=True),
                        nn.Linear(16, 4), snn.Leaky(beta=0.9, init_hidden=True))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    return net

def qat():
    return prepare_qat(float_net())
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "model.py").write_text(MODEL)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", x=(rng.random((20, 3, 20)) < 0.3).astype(np.uint8), y=np.array([0, 1, 2]))
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_qat_model_is_bit_exact(files: Path) -> None:
    code, out, _ = invoke("verify", f"{files}/model.py:qat", "--input", f"{files}/x.npz")
    assert code == 0
    assert out.splitlines()[0] == "bit-exact: every spike, membrane and synaptic current agrees at every step"
    assert re.search(r"^accuracy: torch \d+\.\d\d%, hardware \d+\.\d\d%$", out, re.M)


def _perturb(build: Path, out: Path, neuron: int) -> None:
    """A copy of ``build`` whose image is rewritten, consistently in every file, with the weight from
    input 0 to hidden neuron ``neuron`` of layer 'linear_0' raised by 9 (the words, formats and hashes
    all agree, so the build reads as a well-formed other program)."""
    shutil.copytree(build, out)
    graph = read_image(out / "image")
    op = graph.op("linear_0")
    weight = np.array(op.weight)  # type: ignore[attr-defined]
    weight[neuron, 0] += 9
    write_image(
        graph.with_op("linear_0", dataclasses.replace(op, weight=weight)),
        load_target("artix7-100t"),
        out / "image",
    )  # type: ignore[type-var]


def test_perturbed_build_reports_the_first_divergence(files: Path) -> None:
    code, _, err = invoke(
        "compile", f"{files}/model.py:qat", "--target", "artix7-100t", "-o", f"{files}/build"
    )
    assert code == 0, err
    code, out, _ = invoke(
        "verify", f"{files}/model.py:qat", "--input", f"{files}/x.npz", "--build", f"{files}/build"
    )
    assert code == 0 and out.startswith("bit-exact")
    _perturb(files / "build", files / "bad", 5)
    code, out, _ = invoke(
        "verify", f"{files}/model.py:qat", "--input", f"{files}/x.npz", "--build", f"{files}/bad"
    )
    assert code == 1
    first = out.splitlines()[0]
    assert re.fullmatch(
        r"first divergence at time step \d+, node 'lif_1' \(module '1'\), sample \d, neuron \[5\], membrane: "
        r"torch -?[\d.]+, hardware -?[\d.]+ \((no earlier step|one step before: torch -?[\d.e-]+, hardware -?[\d.e-]+)\)",
        first,
    ), first


def test_float_model_is_judged_by_agreement_and_tolerance(files: Path) -> None:
    code, out, _ = invoke(
        "verify", f"{files}/model.py:float_net", "--input", f"{files}/x.npz", "--tolerance", "0.5"
    )
    assert code == 0
    assert "note: a float model; calibrating post-training quantization on the input itself" in out
    assert re.search(r"^spike agreement per layer: lif_1 \d+\.\d\d%, lif_3 \d+\.\d\d%$", out, re.M)
    assert re.search(r"criterion: output spike disagreement \d+\.\d\d% <= tolerance 50\.00%: pass", out)
    code, out, _ = invoke(
        "verify", f"{files}/model.py:float_net", "--input", f"{files}/x.npz", "--tolerance", "0"
    )
    disagreement = float(re.search(r"disagreement (\d+\.\d\d)%", out).group(1))  # type: ignore[union-attr]
    assert code == (0 if disagreement == 0 else 1)


def test_plots_are_written(files: Path) -> None:
    code, _out, _ = invoke(
        "verify", f"{files}/model.py:qat", "--input", f"{files}/x.npz", "--plot", f"{files}/plots"
    )
    assert code == 0
    for name in ("raster.png", "membrane.png", "agreement.png"):
        assert (files / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nir_models_on_the_command_line(files: Path) -> None:
    """export-nir, then the .nir file as MODEL for inspect, compile, simulate and verify."""
    code, out, err = invoke("export-nir", f"{files}/model.py:qat", "-o", f"{files}/m.nir")
    assert code == 0, err
    assert out == f"wrote {files}/m.nir (6 nodes)\n"
    code, out, _ = invoke("inspect", f"{files}/m.nir")
    assert code == 0 and out.splitlines()[0] == "%input = input[shape=[20]]()"
    code, out, _ = invoke("verify", f"{files}/m.nir", "--input", f"{files}/x.npz")
    assert code == 0 and out.startswith("bit-exact")
    code, _, err = invoke("compile", f"{files}/m.nir", "--target", "zu3eg", "-o", f"{files}/build")
    assert code == 0, err
    code, _, err = invoke("compile", f"{files}/model.py:qat", "--target", "zu3eg", "-o", f"{files}/build2")
    assert code == 0, err
    for build in ("build", "build2"):
        code, _, err = invoke(
            "simulate", f"{files}/{build}", "--input", f"{files}/x.npz", "-o", f"{files}/{build}.npz"
        )
        assert code == 0, err
    with np.load(files / "build.npz") as a, np.load(files / "build2.npz") as b:
        assert np.array_equal(a["spikes"], b["spikes"]) and np.array_equal(a["cycles"], b["cycles"])
    code, _, err = invoke(
        "inspect", f"{files}/m.nir", "--convention", "norse", "--dt", "0.001", "--reset", "zero"
    )
    assert code != 0 or err == ""  # norse reads the same file differently or refuses it with one clear line
    code, _, err = invoke("inspect", f"{files}/m.nir", "--checkpoint", f"{files}/x.npz")
    assert code == 1 and err.startswith("Error: --checkpoint applies to file.py:factory models")


def test_compile_report_includes_a_calibration_run(files: Path) -> None:
    code, out, err = invoke(
        "compile",
        f"{files}/model.py:qat",
        "--target",
        "artix7-100t",
        "--calibration",
        f"{files}/x.npz",
        "-o",
        f"{files}/b",
    )
    assert code == 0, err
    report = json.loads((files / "b" / "report.json").read_text())
    run = report["calibration_run"]
    assert run["samples"] == 3 and run["steps"] == 20
    assert run["cycles_per_sample"] > 0 and run["energy_per_sample_j"] > 0
    assert set(run["saturations"]) == {"lif_1", "lif_3"}
    assert {r["resource"] for r in report["resources"]} >= {"cores", "fan-in", "fan-out"}
    text = (files / "b" / "report.txt").read_text()
    assert "run on the calibration data (3 samples x 20 steps):" in text
    assert out == text + f"wrote {files}/b\n"
    code, out, _ = invoke("inspect", f"{files}/b")
    assert code == 0 and out.startswith(text.splitlines()[0])
