"""The examples run as users run them (short training so that CI stays quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_digits_ptq(tmp_path: Path) -> None:
    out = run_example("digits_ptq.py", "--epochs", "6", "--out", str(tmp_path / "build"), cwd=tmp_path)
    assert "integer (artix7-100t) accuracy" in out
    assert (tmp_path / "build" / "image" / "manifest.json").is_file()


@pytest.mark.slow
def test_digits_qat_then_cli_verify(tmp_path: Path) -> None:
    out = run_example("digits_qat.py", "--epochs", "1", "--out", str(tmp_path / "qat"), cwd=tmp_path)
    assert "bit-exact: every spike, membrane and synaptic current agrees at every step" in out
    qat = tmp_path / "qat"
    cli = Path(sys.executable).parent / "snncompile"
    proc = subprocess.run(
        [str(cli), "verify", f"{qat}/model.py:build", "--checkpoint", f"{qat}/net.pt", "--input", f"{qat}/x.npz"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("bit-exact")


def test_recurrent_and_conv(tmp_path: Path) -> None:
    out = run_example("recurrent_and_conv.py", cwd=tmp_path)
    assert out.count("the decoded image simulates identically: True") == 2


def test_leaky_parallel(tmp_path: Path) -> None:
    assert "bit-exact" in run_example("leaky_parallel.py", cwd=tmp_path)
