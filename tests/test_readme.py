"""The README's quickstart runs as written and prints what the README shows; its setup matches CI."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block(lang: str, after: str) -> str:
    tail = README[README.index(after) :]
    match = re.search(rf"```{lang}\n(.*?)```", tail, re.S)
    assert match, f"no ```{lang} block after {after!r}"
    return match.group(1)


def test_quickstart_runs_and_prints_the_documented_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = _block("python", "## Quickstart")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    documented = _block("", "`print(program.graph)` shows").strip().splitlines()
    assert lines[: len(documented)] == documented
    assert re.fullmatch(r"\d+ cycles per sample", lines[len(documented)])


def test_command_line_quickstart_runs(tmp_path: Path) -> None:
    model = _block("python", "The same from the command line")
    assert model.startswith("# net.py\n")
    (tmp_path / "net.py").write_text(model)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in _block("bash", "The same from the command line").strip().splitlines():
        proc = subprocess.run(
            line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{line}\n{proc.stderr}"
    assert (tmp_path / "build" / "image" / "manifest.json").is_file()
    assert (tmp_path / "plots" / "raster.png").is_file()


def test_readme_names_the_ci_install_and_test_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert _block("bash", "Install (torch first").strip() in ci
    assert _block("bash", "Run the tests").strip() in ci.splitlines()


def test_every_shipped_target_is_in_the_targets_table() -> None:
    from snncompile.targets import target_names

    table = README[README.index("## Targets") :]
    for name in target_names():
        assert f"| `{name}` |" in table
