"""The ``snncompile`` command line, through click's CliRunner and through the real console script.

Contract under test:

* ``inspect`` prints the graph one node per line plus a ``#`` summary line; ``simulate`` writes ``Y.npz``
  whose ``spikes``/``membrane`` are bit-identical to what snnTorch itself computes on the same
  checkpoint and input (the reference is the real module, run step by step in this file).
* Every user error exits with code 1 and exactly ONE line on stderr starting with ``Error:`` (no
  traceback, no "internal error"); ``--debug`` shows the traceback instead.
* ``simulate`` writes atomically: a failed run leaves no output file, no temporary file, and does not
  touch an existing output file.

Most cases run in-process with CliRunner; a few run the installed ``snncompile`` script in a subprocess
to check what a user really sees (exit status, stderr free of warnings).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import snntorch.utils
import torch
from click.testing import CliRunner, Result

import snncompile
from snncompile.cli import main

T, B, N_IN, N_HID, N_OUT = 20, 3, 20, 16, 4

MODEL_SOURCE = textwrap.dedent(
    """
    import snntorch as snn
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(20, 16),
            snn.Leaky(beta=0.9, init_hidden=True),
            nn.Linear(16, 4),
            snn.Leaky(beta=0.9, init_hidden=True, output=True),
        )


    def conv():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3),
            snn.Leaky(beta=0.9, init_hidden=True),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 4),
            snn.Leaky(beta=0.9, init_hidden=True),
        )


    def other():
        return nn.Sequential(nn.Linear(20, 16), snn.Leaky(beta=0.9, init_hidden=True))


    def with_relu():
        return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), snn.Leaky(beta=0.9, init_hidden=True))


    def not_a_module():
        return 42


    NOT_CALLABLE = 3
    """
)


class Opaque:
    """A picklable object that ``torch.load(weights_only=True)`` refuses."""


def build_model() -> Any:
    namespace: dict[str, Any] = {}
    exec(MODEL_SOURCE, namespace)
    return namespace["build"]()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model file, its checkpoint, an input, and every kind of broken file, in one directory."""
    d = tmp_path_factory.mktemp("cli")
    out = {"dir": d}
    out["model"] = d / "model.py"
    out["model"].write_text(MODEL_SOURCE)
    out["bad_import"] = d / "bad_import.py"
    out["bad_import"].write_text("import torch\nraise RuntimeError('boom at import')\n")

    net = build_model()
    torch.manual_seed(1)
    with torch.no_grad():  # "trained" weights: strong enough that both layers spike, but not always
        for p in net.parameters():
            p.mul_(3.0)
    out["ckpt"] = d / "net.pt"
    torch.save(net.state_dict(), out["ckpt"])

    namespace: dict[str, Any] = {}
    exec(MODEL_SOURCE, namespace)
    out["other_ckpt"] = d / "other.pt"
    torch.save(namespace["other"]().state_dict(), out["other_ckpt"])
    state = net.state_dict()
    state["0.weight"] = torch.zeros(N_HID, N_IN + 1)
    out["shape_ckpt"] = d / "shape.pt"
    torch.save(state, out["shape_ckpt"])
    out["corrupt_ckpt"] = d / "corrupt.pt"
    out["corrupt_ckpt"].write_bytes(np.random.default_rng(0).bytes(100))
    out["object_ckpt"] = d / "object.pt"
    torch.save({"0.weight": torch.zeros(1), "extra": Opaque()}, out["object_ckpt"])  # not weights-only
    out["list_ckpt"] = d / "list.pt"
    torch.save([torch.zeros(1)], out["list_ckpt"])

    rng = np.random.default_rng(0)
    out["x"] = d / "x.npz"
    np.savez(out["x"], x=(rng.random((T, B, N_IN)) < 0.3).astype(np.uint8))
    out["x_conv"] = d / "x_conv.npz"
    np.savez(out["x_conv"], x=(rng.random((T, B, 1, 8, 8)) < 0.3).astype(np.uint8))
    out["x_wide"] = d / "x_wide.npz"
    np.savez(out["x_wide"], x=np.zeros((T, B, N_IN + 1), np.uint8))
    out["x_2d"] = d / "x_2d.npz"
    np.savez(out["x_2d"], x=np.zeros((T, N_IN), np.uint8))
    out["x_f64"] = d / "x_f64.npz"
    np.savez(out["x_f64"], x=np.full((T, B, N_IN), 0.1, np.float64))
    out["x_nokey"] = d / "x_nokey.npz"
    np.savez(out["x_nokey"], y=np.zeros((T, B, N_IN), np.uint8))
    out["x_notnpz"] = d / "x_notnpz.npz"
    out["x_notnpz"].write_text("not an npz file")
    return out


@pytest.fixture(scope="module")
def reference(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """What snnTorch computes on the checkpoint and input: the module itself, step by step."""
    net = build_model()
    net.load_state_dict(torch.load(files["ckpt"], weights_only=True))
    net.eval()
    snntorch.utils.reset(net)
    x = torch.as_tensor(np.load(files["x"])["x"], dtype=torch.float32)
    hidden_spk, hidden_mem, out_spk, out_mem = [], [], [], []
    with torch.no_grad():
        for t in range(T):
            h = net[1](net[0](x[t]))
            hidden_spk.append(h.clone())
            hidden_mem.append(net[1].mem.clone())
            spk, mem = net[3](net[2](h))
            out_spk.append(spk.clone())
            out_mem.append(mem.clone())
    ref = {
        "hidden_spk": torch.stack(hidden_spk).numpy(),
        "hidden_mem": torch.stack(hidden_mem).numpy(),
        "spikes": torch.stack(out_spk).numpy(),
        "membrane": torch.stack(out_mem).numpy(),
    }
    for key in ("hidden_spk", "spikes"):  # a comparison on silent or saturated layers proves little
        assert 0 < ref[key].mean() < 1, f"reference {key} is degenerate: rate {ref[key].mean()}"
    snn.SpikingNeuron.instances.clear()
    return ref


def model_arg(files: dict[str, Path], factory: str = "build") -> str:
    return f"{files['model']}:{factory}"


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.stderr == "", result.stderr


def error_line(result: Result) -> str:
    """The one-line error of a failed command (and the checks every error exit must pass)."""
    assert result.exit_code == 1, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert lines[0].startswith("Error: "), lines[0]
    assert "internal error" not in lines[0], lines[0]
    assert result.stdout == "", result.stdout
    return lines[0]


def node_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not line.startswith("#")]


# ------------------------------------------------------------------------------------- inspect


def test_inspect_prints_one_line_per_node(files: dict[str, Path]) -> None:
    result = invoke("inspect", model_arg(files), "--checkpoint", files["ckpt"])
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "%input = input[shape=[20]]()"
    assert re.fullmatch(r"%linear_0 = linear\[20->16, bias\]\(%input\)", lines[1])
    assert re.fullmatch(r"%lif_1 = lif\[beta=0\.9, thr=1, reset=subtract\]\(%linear_0\)", lines[2])
    assert re.fullmatch(r"%lif_3 = lif\[beta=0\.9, thr=1, reset=subtract\]\(%linear_2\)", lines[4])
    assert lines[5] == "%output = output(%lif_3)"
    assert lines[6] == "%output_1 = output[state=mem](%lif_3)"  # the last Leaky returns (spk, mem)
    assert all(line.startswith("%") for line in lines[:-1])
    assert (
        lines[-1]
        == f"# 7 nodes, 2 neuron layers, {N_HID + N_OUT} neurons, {N_IN * N_HID + N_HID * N_OUT} weights"
    )
    assert len(lines) == 8


def test_inspect_without_checkpoint_uses_the_factory_weights(files: dict[str, Path]) -> None:
    result = invoke("inspect", model_arg(files))
    assert_ok(result)
    assert result.stdout.splitlines()[0] == "%input = input[shape=[20]]()"


def test_inspect_saved_graph(files: dict[str, Path], tmp_path: Path) -> None:
    net = build_model()
    net.load_state_dict(torch.load(files["ckpt"], weights_only=True))
    path = tmp_path / "graph.json"
    snncompile.save_graph(snncompile.trace(net, torch.zeros(1, N_IN)), path)
    from_json = invoke("inspect", path)
    from_model = invoke("inspect", model_arg(files), "--checkpoint", files["ckpt"])
    assert_ok(from_json)
    assert from_json.stdout == from_model.stdout


def test_inspect_saved_graph_refuses_a_checkpoint(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    snncompile.save_graph(snncompile.trace(build_model(), torch.zeros(1, N_IN)), path)
    line = error_line(invoke("inspect", path, "--checkpoint", files["ckpt"]))
    assert line == "Error: --checkpoint applies to file.py:factory models, not to a build or saved graph"


def test_inspect_conv_model_needs_input_shape(files: dict[str, Path]) -> None:
    line = error_line(invoke("inspect", model_arg(files, "conv")))
    assert re.fullmatch(
        r"Error: cannot tell the model's input shape from its first layer; pass --input-shape C,H,W", line
    )


@pytest.mark.parametrize("shape", ["1,8,8", "1x8x8"])
def test_inspect_conv_model_with_input_shape(files: dict[str, Path], shape: str) -> None:
    result = invoke("inspect", model_arg(files, "conv"), "--input-shape", shape)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "%input = input[shape=[1, 8, 8]]()"
    assert lines[1] == "%conv2d_0 = conv2d[1->4, k=3x3, bias](%input)"
    assert lines[-1].startswith(f"# 7 nodes, 2 neuron layers, {4 * 6 * 6 + 4} neurons, ")


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [
        ("1,a,8", r"Error: --input-shape '1,a,8' must be comma-separated integers, e\.g\. 1,28,28"),
        ("0,8,8", r"Error: --input-shape '0,8,8' must hold positive sizes"),
        ("1,8", r"Error: module '0' \(conv2d\): conv2d expects an input of shape \(C, H, W\), got \(1, 8\)"),
    ],
    ids=["not-integers", "zero-size", "wrong-rank"],
)
def test_inspect_bad_input_shape(files: dict[str, Path], shape: str, pattern: str) -> None:
    assert re.fullmatch(
        pattern, error_line(invoke("inspect", model_arg(files, "conv"), "--input-shape", shape))
    )


# ------------------------------------------------------------------------------------ simulate


def simulate(files: dict[str, Path], out: Path, *extra: Any) -> Result:
    return invoke(
        *extra, "simulate", model_arg(files), "--checkpoint", files["ckpt"], "--input", files["x"], "-o", out
    )


def test_simulate_matches_snntorch(
    files: dict[str, Path], reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "y.npz"
    result = simulate(files, out)
    assert_ok(result)
    n_spikes = int(reference["spikes"].sum())
    assert result.stdout == f"simulated {T} steps x {B} samples: {n_spikes} output spikes -> {out}\n"
    with np.load(out) as y:
        assert sorted(y.files) == [
            "membrane",
            "output",
            "output_1",
            "spike_counts/lif_1",
            "spike_counts/lif_3",
            "spikes",
        ]
        assert np.array_equal(y["spike_counts/lif_3"], y["spikes"].sum(axis=2))
        spikes, membrane = y["spikes"], y["membrane"]
        # the model returns (spk, mem) of its last Leaky: its two outputs, by name
        assert np.array_equal(y["output"], reference["spikes"].astype(np.uint8))
        assert np.array_equal(y["output_1"], reference["membrane"])
    assert spikes.dtype == np.uint8 and spikes.shape == (T, B, N_OUT)
    assert membrane.dtype == np.float32 and membrane.shape == (T, B, N_OUT)
    np.testing.assert_array_equal(spikes, reference["spikes"].astype(np.uint8))
    assert np.array_equal(membrane, reference["membrane"]), "membrane differs from snnTorch (bit for bit)"


def test_simulate_record_all(
    files: dict[str, Path], reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "y.npz"
    assert_ok(
        invoke(
            "simulate",
            model_arg(files),
            "--checkpoint",
            files["ckpt"],
            "--input",
            files["x"],
            "-o",
            out,
            "--record",
            "all",
        )
    )
    with np.load(out) as y:
        arrays = {k: y[k] for k in y.files}
    assert sorted(arrays) == sorted(
        [
            "spikes",
            "membrane",
            "output",
            "output_1",
            "spikes/lif_1",
            "membrane/lif_1",
            "spikes/lif_3",
            "membrane/lif_3",
            "spike_counts/lif_1",
            "spike_counts/lif_3",
        ]
    )
    assert arrays["spikes/lif_1"].dtype == np.uint8 and arrays["spikes/lif_1"].shape == (T, B, N_HID)
    assert arrays["membrane/lif_1"].dtype == np.float32 and arrays["membrane/lif_1"].shape == (T, B, N_HID)
    np.testing.assert_array_equal(arrays["spikes/lif_1"], reference["hidden_spk"].astype(np.uint8))
    assert np.array_equal(arrays["membrane/lif_1"], reference["hidden_mem"])
    np.testing.assert_array_equal(arrays["spikes/lif_3"], arrays["spikes"])
    assert np.array_equal(arrays["membrane/lif_3"], reference["membrane"])


def test_simulate_quiet_prints_nothing(
    files: dict[str, Path], reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "y.npz"
    result = simulate(files, out, "-q")
    assert_ok(result)
    assert result.stdout == ""
    with np.load(out) as y:
        assert np.array_equal(y["membrane"], reference["membrane"])


def test_simulate_saved_graph_matches_model(
    files: dict[str, Path], reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    net = build_model()
    net.load_state_dict(torch.load(files["ckpt"], weights_only=True))
    graph_path = tmp_path / "graph.json"
    snncompile.save_graph(snncompile.trace(net, torch.zeros(1, N_IN)), graph_path)
    out = tmp_path / "y.npz"
    assert_ok(invoke("-q", "simulate", graph_path, "--input", files["x"], "-o", out))
    with np.load(out) as y:
        assert np.array_equal(y["membrane"], reference["membrane"])
        np.testing.assert_array_equal(y["spikes"], reference["spikes"].astype(np.uint8))


def test_simulate_conv_model_takes_its_shape_from_the_input(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "y.npz"
    assert_ok(invoke("-q", "simulate", model_arg(files, "conv"), "--input", files["x_conv"], "-o", out))
    with np.load(out) as y:
        assert y["spikes"].shape == (T, B, 4) and y["spikes"].dtype == np.uint8


# ---------------------------------------------------------------------------------- error exits

# (arguments after the command, regex the one stderr line must fully match)
ERROR_CASES: dict[str, tuple[Any, str]] = {
    "missing-model-file": (
        lambda f: ["inspect", f"{f['dir'] / 'nofile.py'}:build"],
        r"Error: model file '.*nofile\.py' does not exist",
    ),
    "missing-factory": (
        lambda f: ["inspect", f"{f['model']}:nope"],
        r"Error: '.*model\.py' has no callable 'nope'",
    ),
    "factory-not-callable": (
        lambda f: ["inspect", f"{f['model']}:NOT_CALLABLE"],
        r"Error: '.*model\.py' has no callable 'NOT_CALLABLE'",
    ),
    "factory-returns-non-module": (
        lambda f: ["inspect", f"{f['model']}:not_a_module"],
        r"Error: .*model\.py:not_a_module returned int, expected a torch\.nn\.Module",
    ),
    "model-spec-without-factory": (
        lambda f: ["inspect", str(f["model"])],
        r"Error: model '.*model\.py' must look like path/to/file\.py:factory",
    ),
    "model-import-raises": (
        lambda f: ["inspect", f"{f['bad_import']}:build"],
        r"Error: importing '.*bad_import\.py' failed: RuntimeError: boom at import",
    ),
    "missing-checkpoint": (
        lambda f: ["inspect", f"{f['model']}:build", "--checkpoint", f["dir"] / "nope.pt"],
        r"Error: checkpoint '.*nope\.pt' does not exist",
    ),
    "checkpoint-of-other-architecture": (
        lambda f: ["inspect", f"{f['model']}:build", "--checkpoint", f["other_ckpt"]],
        r"Error: checkpoint '.*other\.pt' does not fit the model: 6 missing keys \('2\.bias', '2\.weight', "
        r"'3\.beta', '3\.graded_spikes_factor', \.\.\.\), no unexpected keys",
    ),
    "checkpoint-tensor-of-wrong-shape": (
        lambda f: ["inspect", f"{f['model']}:build", "--checkpoint", f["shape_ckpt"]],
        r"Error: checkpoint '.*shape\.pt' has tensors of the wrong shape \(checkpoint vs model\): "
        r"\['0\.weight \(16, 21\) vs \(16, 20\)'\]",
    ),
    "unsupported-module": (
        lambda f: ["inspect", f"{f['model']}:with_relu"],
        r"Error: module '1' \(torch\.nn\.modules\.activation\.ReLU\) is not supported; supported: .*\bLeaky\b.*",
    ),
    "input-missing": (
        lambda f: [
            "simulate",
            f"{f['model']}:build",
            "--input",
            f["dir"] / "nope.npz",
            "-o",
            f["dir"] / "y_err.npz",
        ],
        r"Error: input file '.*nope\.npz' does not exist",
    ),
    "input-without-key-x": (
        lambda f: ["simulate", f"{f['model']}:build", "--input", f["x_nokey"], "-o", f["dir"] / "y_err.npz"],
        r"Error: '.*x_nokey\.npz' has no array 'x' \(found \['y'\]\)",
    ),
    "input-not-npz": (
        lambda f: ["simulate", f"{f['model']}:build", "--input", f["x_notnpz"], "-o", f["dir"] / "y_err.npz"],
        r"Error: cannot read '.*x_notnpz\.npz' as \.npz: .*",
    ),
    "input-without-batch-axis": (
        lambda f: ["simulate", f"{f['model']}:build", "--input", f["x_2d"], "-o", f["dir"] / "y_err.npz"],
        r"Error: '.*x_2d\.npz': x has shape \(20, 20\); expected \(T, B, \*input_shape\)",
    ),
    "input-float64-not-float32": (
        lambda f: ["simulate", f"{f['model']}:build", "--input", f["x_f64"], "-o", f["dir"] / "y_err.npz"],
        r"Error: .*float64 holds values that float32 cannot represent exactly",
    ),
    # The message must say that the INPUT FILE is wrong (name it, its per-sample shape and the model's),
    # not only that a layer deep inside the model got a tensor of the wrong size.
    "input-wrong-per-sample-shape": (
        lambda f: ["simulate", f"{f['model']}:build", "--input", f["x_wide"], "-o", f["dir"] / "y_err.npz"],
        r"Error: .*x_wide\.npz.*\(21,\).*\(20,\).*",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_exit_is_one_clean_line(files: dict[str, Path], case: str) -> None:
    args, pattern = ERROR_CASES[case]
    before = sorted(os.listdir(files["dir"]))
    line = error_line(invoke(*args(files)))
    assert re.fullmatch(pattern, line), f"{line!r} does not match {pattern!r}"
    assert sorted(os.listdir(files["dir"])) == before, "a failed command left files behind"


def test_corrupt_checkpoint_is_one_clean_line(files: dict[str, Path]) -> None:
    line = error_line(invoke("inspect", model_arg(files), "--checkpoint", files["corrupt_ckpt"]))
    assert re.match(r"Error: cannot read checkpoint '.*corrupt\.pt': ", line), line
    # Random bytes: the message must not advise re-running with weights_only=False (torch's generic first
    # line), which is both wrong here and impossible through this CLI.
    assert "will likely succeed" not in line and "arbitrary code execution" not in line, line


def test_checkpoint_with_arbitrary_objects_is_refused(files: dict[str, Path]) -> None:
    line = error_line(invoke("inspect", model_arg(files), "--checkpoint", files["object_ckpt"]))
    assert re.match(r"Error: cannot read checkpoint '.*object\.pt': ", line), line


def test_checkpoint_that_is_not_a_state_dict_is_refused(files: dict[str, Path]) -> None:
    line = error_line(invoke("inspect", model_arg(files), "--checkpoint", files["list_ckpt"]))
    assert re.fullmatch(
        r"Error: checkpoint '.*list\.pt' is not a state_dict \(a mapping of names to tensors\)", line
    ), line


def test_output_in_missing_directory_is_a_clean_error(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "no_such_dir" / "y.npz"
    line = error_line(
        invoke("simulate", model_arg(files), "--checkpoint", files["ckpt"], "--input", files["x"], "-o", out)
    )
    assert "no_such_dir" in line and ".tmp" not in line, line


def test_missing_required_option_is_a_usage_error(files: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("simulate", model_arg(files), "-o", tmp_path / "y.npz")
    assert result.exit_code == 2
    assert "Missing option '--input'" in result.stderr
    assert not (tmp_path / "y.npz").exists()


def test_debug_shows_the_traceback(files: dict[str, Path]) -> None:
    result = invoke("--debug", "inspect", model_arg(files), "--checkpoint", files["shape_ckpt"])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "snncompile.errors.InputError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: checkpoint ")


# -------------------------------------------------------------------------------- atomic writes


def test_failed_simulate_leaves_no_output(files: dict[str, Path], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "y.npz"
    result = invoke(
        "simulate", model_arg(files), "--checkpoint", files["shape_ckpt"], "--input", files["x"], "-o", out
    )
    error_line(result)
    assert os.listdir(out_dir) == []


def test_failed_simulate_keeps_an_existing_output(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "y.npz"
    out.write_bytes(b"previous result")
    error_line(
        invoke(
            "simulate", model_arg(files), "--checkpoint", files["ckpt"], "--input", files["x_wide"], "-o", out
        )
    )
    assert out.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["y.npz"]


def test_failed_write_leaves_no_temp_file(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "y.npz"
    out.write_bytes(b"previous result")

    def no_rename(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    result = simulate(files, out)
    monkeypatch.undo()
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and "No space left on device" in result.stderr
    assert os.listdir(tmp_path) == ["y.npz"], "the temporary file was left behind"
    assert out.read_bytes() == b"previous result"


def test_successful_simulate_leaves_no_temp_file(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "y.npz"
    out.write_bytes(b"previous result")
    assert_ok(simulate(files, out, "-q"))
    assert os.listdir(tmp_path) == ["y.npz"]
    with np.load(out) as y:
        assert "spikes" in y.files


# ----------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["inspect", "simulate"])
def test_command_help_has_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert_ok(result)
    assert "Example" in result.stdout
    assert f"snncompile {command} " in result.stdout


def test_main_help_and_version() -> None:
    result = invoke("--help")
    assert_ok(result)
    assert "inspect" in result.stdout and "simulate" in result.stdout and "--debug" in result.stdout
    result = invoke("--version")
    assert_ok(result)
    assert result.stdout == f"snncompile, version {snncompile.__version__}\n"


# ------------------------------------------------------------------------ the real console script


def _script() -> str:
    beside = Path(sys.executable).parent / "snncompile"
    found = str(beside) if beside.exists() else shutil.which("snncompile")
    assert found, "the snncompile console script is not installed"
    return found


def run_script(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_script(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_script_simulate(files: dict[str, Path], reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    out = tmp_path / "y.npz"
    proc = run_script(
        "simulate",
        "model.py:build",
        "--checkpoint",
        "net.pt",
        "--input",
        "x.npz",
        "-o",
        out,
        cwd=files["dir"],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"simulated {T} steps x {B} samples: ")
    with np.load(out) as y:
        assert y["spikes"].dtype == np.uint8
        np.testing.assert_array_equal(y["spikes"], reference["spikes"].astype(np.uint8))
        assert np.array_equal(y["membrane"], reference["membrane"])


def test_script_error_is_one_line(files: dict[str, Path]) -> None:
    proc = run_script("inspect", "model.py:build", "--checkpoint", "other.pt", cwd=files["dir"])
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # nothing else on stderr: no warnings, no traceback
    assert re.fullmatch(
        r"Error: checkpoint 'other\.pt' does not fit the model: 6 missing keys \(.*\), no unexpected keys",
        lines[0],
    )


def test_script_debug_shows_the_traceback(files: dict[str, Path]) -> None:
    proc = run_script("--debug", "inspect", "model.py:build", "--checkpoint", "shape.pt", cwd=files["dir"])
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(
        "Error: checkpoint 'shape.pt' has tensors of the wrong shape"
    )


# ---------------------------------------------------------------------- the light commands start fast

HEAVY = ("torch", "brevitas", "numba", "snntorch")


def _imported_modules(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Runs the console script under ``python -X importtime``; returns the run and the top-level
    packages it imported (importtime writes one ``import time: ... | name`` line per module)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", _script(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return proc, names


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("--version",),
        ("targets",),
        ("targets", "ice40up5k"),
    ],
    ids=" ".join,
)
def test_light_commands_import_no_heavy_package(args: tuple[str, ...], tmp_path: Path) -> None:
    proc, imported = _imported_modules(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip(), "the command printed nothing"
    assert "click" in imported and "snncompile" in imported  # the importtime lines were read
    assert sorted(imported & set(HEAVY)) == [], f"snncompile {' '.join(args)} imports heavy packages"


def test_cli_conventions_are_the_frontends() -> None:
    """The conventions and their reset defaults that --help names are the frontend's."""
    from snncompile.frontend.nir import CONVENTIONS
    from snncompile.nir_cli import NIR_CONVENTIONS, NIR_DEFAULTS

    assert tuple(sorted(CONVENTIONS)) == NIR_CONVENTIONS
    assert {c.name: (c.reset, c.reset_delay) for c in CONVENTIONS.values()} == NIR_DEFAULTS


def test_simulate_build_quantizes_its_calibration_currents(files: dict[str, Path], tmp_path: Path) -> None:
    """A build compiled on real-valued currents refuses them as they are (off its input grid), and with
    --quantize-input runs them as compile's rule puts them on its grid: round half to even onto 2^-frac,
    saturate to the target's 8-bit codes (written here with numpy, then run as they are)."""
    currents = np.random.default_rng(3).normal(0.0, 0.4, (T, B, N_IN)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=currents)
    build = tmp_path / "build"
    assert_ok(invoke("-q", "compile", model_arg(files), "--checkpoint", files["ckpt"], "--target", "default",
                     "--calibration", tmp_path / "calib.npz", "-o", build))  # fmt: skip
    line = error_line(invoke("simulate", build, "--input", tmp_path / "calib.npz", "-o", tmp_path / "y.npz"))
    assert "not on the program's input grid" in line and "simulate --quantize-input" in line
    frac = snncompile.load_graph(build / "graph.json").op("input").frac
    assert frac is not None and frac > 0
    rounded = np.clip(np.rint(currents.astype(np.float64) * 2.0**frac), -127, 127) * 2.0**-frac
    assert not np.array_equal(rounded, currents)
    np.savez(tmp_path / "rounded.npz", x=rounded.astype(np.float32))
    assert_ok(
        invoke("-q", "simulate", build, "--input", tmp_path / "rounded.npz", "-o", tmp_path / "want.npz")
    )
    assert_ok(invoke("-q", "simulate", build, "--quantize-input", "--input", tmp_path / "calib.npz",
                     "-o", tmp_path / "got.npz"))  # fmt: skip
    with np.load(tmp_path / "want.npz") as want, np.load(tmp_path / "got.npz") as got:
        assert sorted(want.files) == sorted(got.files)
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        assert 0 < want["spikes"].mean() < 1
    refused = error_line(
        invoke("simulate", model_arg(files), "--checkpoint", files["ckpt"], "--quantize-input",
               "--input", tmp_path / "calib.npz", "-o", tmp_path / "f.npz")
    )  # fmt: skip
    assert refused.startswith("Error: --quantize-input rounds inputs onto a build's input grid;")
