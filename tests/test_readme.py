"""The README's quickstart runs as written and prints what the README shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(lang: str, after: str) -> str:
    tail = README[README.index(after) :]
    match = re.search(rf"```{lang}\n(.*?)```", tail, re.S)
    assert match, f"no ```{lang} block after {after!r}"
    return match.group(1)


def test_quickstart_runs_and_prints_the_documented_graph(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = _block("python", "## Quickstart")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip() == _block("", "`print(graph)` shows").strip()
    assert (tmp_path / "net.json").is_file()


def test_readme_names_the_ci_install_command() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    install = _block("bash", "Install (torch first")
    assert install.strip() in ci
    assert _block("bash", "Run the tests").strip() in ci.splitlines()
