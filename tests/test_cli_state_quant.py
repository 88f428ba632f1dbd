"""``--approximate-state-quant`` on the commands that compile: ``compile``, ``verify`` and ``sweep``.

Contract under test: a model whose snnTorch ``state_quant`` is a level table that no fixed-point format
reproduces is refused by each of them in one line that names the flag; with the flag it compiles to the
nearest format, the report notes say so for every table, and what the build computes is compared with
snnTorch's own forward here (the agreement ``verify`` prints is the one computed in this file).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import snntorch.utils
import torch
from conftest import error_line, invoke
from torch import nn

T, B, N_IN = 20, 4, 16

MODEL_SOURCE = textwrap.dedent(
    """
    import snntorch as snn
    import torch
    from snntorch.functional import quant
    from torch import nn


    def table():
        torch.manual_seed(33)
        sq = quant.state_quant(num_bits=8, uniform=True)  # levels 2.2/255 apart: not a dyadic grid
        net = nn.Sequential(
            nn.Linear(16, 24),
            snn.Leaky(beta=0.875, init_hidden=True, state_quant=sq),
            nn.Linear(24, 6),
            snn.Leaky(beta=0.75, init_hidden=True, state_quant=sq),
        )
        with torch.no_grad():
            net[0].weight.uniform_(-0.5, 0.5)
            net[2].weight.uniform_(-0.6, 0.6)
        return net
    """
)

REFUSED = (
    r"node 'lif_1': its mem state_quant is an snnTorch level table of 256 levels in \[-1, 1\.2\] .* not a "
    r"dyadic uniform grid, so no fixed-point format reproduces it; .* with approximate_state_quant=True "
    r"\(--approximate-state-quant on the command line\)"
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("state_quant")
    out = {"dir": d, "model_py": d / "model.py", "x": d / "x.npz"}
    out["model_py"].write_text(MODEL_SOURCE)
    rng = np.random.default_rng(5)
    np.savez(out["x"], x=(rng.random((T, B, N_IN)) < 0.3).astype(np.uint8))
    return out


def model(files: dict[str, Path]) -> str:
    return f"{files['model_py']}:table"


def snntorch_spikes(x: np.ndarray) -> np.ndarray:
    """The snnTorch module's output spikes, step by step from zero state."""
    namespace: dict[str, Any] = {}
    exec(MODEL_SOURCE, namespace)
    net: nn.Module = namespace["table"]().eval()
    snntorch.utils.reset(net)
    with torch.no_grad():
        out = torch.stack([net(torch.as_tensor(x[t], dtype=torch.float32)) for t in range(len(x))])
    snn.SpikingNeuron.instances.clear()
    return out.numpy()


@pytest.mark.parametrize(
    "command",
    [
        ["compile", "--calibration", "{x}", "-o", "{dir}/refused"],
        ["verify", "--input", "{x}"],
    ],
    ids=["compile", "verify"],
)
def test_a_table_is_refused_naming_the_flag(files: dict[str, Path], command: list[str]) -> None:
    args = [a.format(x=files["x"], dir=files["dir"]) for a in command]
    line = error_line(invoke(args[0], model(files), *args[1:]))
    assert re.fullmatch("Error: " + REFUSED, line), line
    assert not (files["dir"] / "refused").exists()


def test_compile_with_the_flag_approximates_and_matches_snntorch_closely(
    files: dict[str, Path], tmp_path: Path
) -> None:
    build = tmp_path / "build"
    result = invoke(
        "compile", model(files), "--calibration", files["x"], "-o", build, "--approximate-state-quant"
    )
    assert result.exit_code == 0, result.output
    notes = json.loads((build / "report.json").read_text())["notes"]
    for node in ("lif_1", "lif_3"):
        assert any(
            re.fullmatch(
                rf"{node}: mem state_quant table approximated by \S+: differs from it on [\d.]+% of its range, "
                r"by up to [\d.]+ LSB \(not bit-exact with the float model\)",
                n,
            )
            for n in notes
        ), notes
    assert "state_quant table approximated" in result.stdout  # the printed report carries the notes

    y = tmp_path / "y.npz"
    assert invoke("-q", "simulate", build, "--input", files["x"], "-o", y).exit_code == 0
    x = np.load(files["x"])["x"]
    expected = snntorch_spikes(x)
    assert 0 < expected.mean() < 1, "a degenerate reference proves little"
    with np.load(y) as out:
        agreement = float(np.mean(out["output"] == expected))
    assert agreement >= 0.95, agreement

    checked = invoke("verify", model(files), "--input", files["x"], "--build", build)
    assert checked.exit_code == 0, checked.output
    assert re.search(rf"lif_3 {100 * agreement:.2f}%", checked.stdout), (agreement, checked.stdout)


def test_verify_compiles_with_the_flag(files: dict[str, Path]) -> None:
    result = invoke("verify", model(files), "--input", files["x"], "--approximate-state-quant")
    assert result.exit_code == 0, result.output
    assert re.search(
        r"^criterion: output spike disagreement [\d.]+% <= tolerance 5\.00%: pass$", result.stdout, re.M
    )


def test_verify_of_a_build_refuses_the_flag(files: dict[str, Path], tmp_path: Path) -> None:
    line = error_line(
        invoke(
            "verify", model(files), "--input", files["x"], "--build", tmp_path, "--approximate-state-quant"
        )
    )
    assert line == (
        "Error: --approximate-state-quant applies when verify compiles the model; a --build is compiled "
        "already (give the flag to compile)"
    )


def test_sweep_passes_the_flag_to_every_point(files: dict[str, Path], tmp_path: Path) -> None:
    common = ["--targets", "default", "--weight-bits", "8", "--state-bits", "16", "--workers", "1"]
    common += ["--calibration", files["x"], "--input", files["x"]]
    refused = invoke("-q", "sweep", model(files), *common, "-o", tmp_path / "refused")
    assert refused.exit_code == 0, refused.output
    (record,) = json.loads((tmp_path / "refused" / "sweep.json").read_text())
    assert not record["ok"] and re.fullmatch(REFUSED, record["reason"]), record["reason"]

    approximated = invoke(
        "-q", "sweep", model(files), *common, "-o", tmp_path / "ok", "--approximate-state-quant"
    )
    assert approximated.exit_code == 0, approximated.output
    (record,) = json.loads((tmp_path / "ok" / "sweep.json").read_text())
    assert record["ok"] and not record["exact"] and record["agreement"] >= 0.95, record

    # a sweep directory made without the flag is not resumed with it
    again = invoke("sweep", model(files), *common, "-o", tmp_path / "refused", "--approximate-state-quant")
    assert "holds a sweep of another model, other inputs, other options" in error_line(again)
