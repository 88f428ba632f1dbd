"""Checkpoints as training scripts save them, read through ``--checkpoint`` (``torch.load(weights_only=True)``).

Contract under test:

* a ``state_dict`` saved alone, under one of the usual keys of a checkpoint dict (``{"epoch": ...,
  "model_state_dict": ...}``, ``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``) or as its
  only state_dict under another key (two are ambiguous and refused), or with the
  ``module.`` prefix of ``nn.DataParallel`` (or ``_orig_mod.`` of ``torch.compile``) loads, and the command
  prints a note saying where the weights were found; what it then simulates is what the module computes
  with the weights loaded by torch itself;
* a checkpoint that does not fit the model is one line naming how it was read, the number of missing and
  unexpected keys and the first few of each; a float checkpoint given to a ``prepare_qat`` model (or the
  converse) says to load the float checkpoint before ``prepare_qat`` (or to build the QAT model first).

Every file here is a real ``torch.save``; the reference is the snnTorch module, run step by step.
"""

from __future__ import annotations

import copy
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import snntorch.utils
import torch
from conftest import error_line, invoke
from torch import nn

from snncompile.loading import load_checkpoint

T, B, N_IN = 20, 3, 20

MODEL_SOURCE = textwrap.dedent(
    """
    import snntorch as snn
    import torch
    from torch import nn

    from snncompile.quant import prepare_qat


    def build():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(20, 16),
            snn.Leaky(beta=0.9, init_hidden=True),
            nn.Linear(16, 4),
            snn.Leaky(beta=0.9, init_hidden=True),
        )


    def other():
        return nn.Sequential(nn.Linear(20, 16), snn.Leaky(beta=0.9, init_hidden=True))


    def qat():
        return prepare_qat(build())
    """
)


def factory(name: str) -> nn.Module:
    namespace: dict[str, Any] = {}
    exec(MODEL_SOURCE, namespace)
    module: nn.Module = namespace[name]()
    return module


def trained() -> nn.Module:
    """The model with weights unlike the factory's (a load that silently did nothing would show)."""
    net = factory("build")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim:
                p.copy_(torch.randn_like(p) * 0.6)
    return net


def optimizer_state(net: nn.Module) -> dict[str, Any]:
    """An Adam state after one step (of a copy: the saved weights stay the trained ones), as a training
    loop saves it beside the weights."""
    net = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters())
    sum(p.sum() for p in net.parameters() if p.requires_grad).backward()
    optimizer.step()
    return optimizer.state_dict()


def with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


def data_parallel_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return dict(nn.DataParallel(net).state_dict())


# name -> (what torch.save writes, given the trained model's state_dict and the model; the note printed)
WRAPPED: dict[str, tuple[Callable[[dict[str, torch.Tensor], nn.Module], Any], str | None]] = {
    "plain": (lambda sd, net: sd, None),
    "tutorial-epoch-dict": (
        lambda sd, net: {
            "epoch": 7,
            "model_state_dict": sd,
            "optimizer_state_dict": optimizer_state(net),
            "loss": 0.25,
        },
        r"note: loaded checkpoint '.*\.pt' \(its state_dict under 'model_state_dict'\); it also holds 'epoch', "
        r"'optimizer_state_dict', 'loss'",
    ),
    "state_dict": (
        lambda sd, net: {"state_dict": sd},
        r"note: loaded checkpoint '.*\.pt' \(its state_dict under 'state_dict'\)",
    ),
    "model": (
        lambda sd, net: {"model": sd, "epoch": 3},
        r"note: loaded checkpoint '.*\.pt' \(its state_dict under 'model'\); it also holds 'epoch'",
    ),
    "net": (lambda sd, net: {"net": sd}, r"note: loaded checkpoint '.*\.pt' \(its state_dict under 'net'\)"),
    "data-parallel": (
        lambda sd, net: data_parallel_state(net),
        r"note: loaded checkpoint '.*\.pt' \(keys without the nn\.DataParallel prefix 'module\.'\)",
    ),
    "data-parallel-in-dict": (
        lambda sd, net: {"epoch": 2, "state_dict": data_parallel_state(net)},
        r"note: loaded checkpoint '.*\.pt' \(its state_dict under 'state_dict', keys without the "
        r"nn\.DataParallel prefix 'module\.'\); it also holds 'epoch'",
    ),
    "any-single-key": (
        lambda sd, net: {"epoch": 4, "weights": sd, "optimizer": optimizer_state(net)},
        r"note: loaded checkpoint '.*\.pt' \(its state_dict under 'weights'\); it also holds 'epoch', 'optimizer'",
    ),
    "torch-compile": (
        lambda sd, net: with_prefix(sd, "_orig_mod."),
        r"note: loaded checkpoint '.*\.pt' \(keys without the torch\.compile prefix '_orig_mod\.'\)",
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("checkpoints")
    out = {"dir": d, "model_py": d / "model.py"}
    out["model_py"].write_text(MODEL_SOURCE)
    net = trained()
    state = dict(net.state_dict())
    for name, (wrap, _) in WRAPPED.items():
        out[name] = d / f"{name}.pt"
        torch.save(wrap(state, net), out[name])
    other = dict(factory("other").state_dict())
    out["other"] = d / "other.pt"
    torch.save({"epoch": 1, "model_state_dict": other}, out["other"])
    out["other_parallel"] = d / "other_parallel.pt"
    torch.save(with_prefix(other, "module."), out["other_parallel"])
    out["no_state_dict"] = d / "no_state_dict.pt"
    torch.save({"epoch": 1, "optimizer": optimizer_state(net), "lr": 0.1}, out["no_state_dict"])
    out["two_state_dicts"] = d / "two_state_dicts.pt"
    torch.save({"model": state, "state_dict": state}, out["two_state_dicts"])
    out["two_unusual_keys"] = d / "two_unusual_keys.pt"
    torch.save({"weights": state, "ema": state}, out["two_unusual_keys"])
    qat = factory("qat")
    qat.load_state_dict(_qat_weights(net, qat))
    out["qat"] = d / "qat.pt"
    torch.save({"epoch": 9, "model_state_dict": qat.state_dict()}, out["qat"])
    rng = np.random.default_rng(0)
    out["x"] = d / "x.npz"
    np.savez(out["x"], x=(rng.random((T, B, N_IN)) < 0.3).astype(np.uint8))
    return out


def _qat_weights(net: nn.Module, qat: nn.Module) -> dict[str, torch.Tensor]:
    """The trained float weights in the QAT model's keys (a parametrized ``bias`` is stored as
    ``parametrizations.bias.original``)."""
    float_state = net.state_dict()
    return {
        k: float_state[k.replace("parametrizations.", "").replace(".original", "")] for k in qat.state_dict()
    }


def snntorch_spikes(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """The module's own output spikes, step by step."""
    net.eval()
    snntorch.utils.reset(net)
    with torch.no_grad():
        out = torch.stack([net(torch.as_tensor(x[t], dtype=torch.float32)) for t in range(len(x))])
    snn.SpikingNeuron.instances.clear()
    return out.numpy()


@pytest.mark.parametrize("name", list(WRAPPED))
def test_wrapped_checkpoint_loads_the_saved_weights(files: dict[str, Path], name: str) -> None:
    model = factory("build")
    note = load_checkpoint(model, files[name])
    saved = trained().state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    pattern = WRAPPED[name][1]
    assert (note is None) if pattern is None else re.fullmatch(pattern.removeprefix("note: "), note or ""), (
        note
    )


@pytest.mark.parametrize("name", list(WRAPPED))
def test_simulate_with_a_wrapped_checkpoint_matches_snntorch(
    files: dict[str, Path], name: str, tmp_path: Path
) -> None:
    out = tmp_path / "y.npz"
    result = invoke(
        "simulate",
        f"{files['model_py']}:build",
        "--checkpoint",
        files[name],
        "--input",
        files["x"],
        "-o",
        out,
    )
    assert result.exit_code == 0 and result.stderr == "", result.output
    lines = result.stdout.splitlines()
    pattern = WRAPPED[name][1]
    if pattern is None:
        assert len(lines) == 1 and lines[0].startswith("simulated "), lines
    else:
        assert len(lines) == 2 and re.fullmatch(pattern, lines[0]), lines
    x = np.load(files["x"])["x"]
    expected = snntorch_spikes(trained(), x)
    assert 0 < expected.mean() < 1, "a degenerate reference proves little"
    with np.load(out) as y:
        assert np.array_equal(y["output"], expected.astype(np.uint8))


def test_quiet_drops_the_note(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "y.npz"
    args = ["-q", "simulate", f"{files['model_py']}:build", "--checkpoint", files["tutorial-epoch-dict"]]
    result = invoke(*args, "--input", files["x"], "-o", out)
    assert result.exit_code == 0 and result.output == "", result.output


def test_verify_a_qat_model_from_a_wrapped_qat_checkpoint(files: dict[str, Path]) -> None:
    result = invoke("verify", f"{files['model_py']}:qat", "--checkpoint", files["qat"], "--input", files["x"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"note: loaded checkpoint '.*qat\.pt' \(its state_dict under 'model_state_dict'\); it also holds 'epoch'",
        lines[0],
    )
    assert lines[1] == "bit-exact: every spike, membrane and synaptic current agrees at every step"


ERRORS: dict[str, tuple[str, str, str]] = {
    "missing-keys": (
        "build",
        "other",
        r"Error: checkpoint '.*other\.pt' \(its state_dict under 'model_state_dict'\) does not fit the model: "
        r"6 missing keys \('2\.bias', '2\.weight', '3\.beta', '3\.graded_spikes_factor', \.\.\.\), no unexpected keys",
    ),
    "unexpected-keys-after-the-prefix": (
        "other",
        "data-parallel",
        r"Error: checkpoint '.*data-parallel\.pt' \(keys without the nn\.DataParallel prefix 'module\.'\) does not "
        r"fit the model: no missing keys, 6 unexpected keys \('2\.bias', '2\.weight', '3\.beta', "
        r"'3\.graded_spikes_factor', \.\.\.\)",
    ),
    "missing-keys-after-the-prefix": (
        "build",
        "other_parallel",
        r"Error: checkpoint '.*other_parallel\.pt' \(keys without the nn\.DataParallel prefix 'module\.'\) does "
        r"not fit the model: 6 missing keys \(.*\), no unexpected keys",
    ),
    "float-checkpoint-for-a-qat-model": (
        "qat",
        "tutorial-epoch-dict",
        r"Error: checkpoint '.*tutorial-epoch-dict\.pt' \(its state_dict under 'model_state_dict'\) does not fit "
        r"the model: 8 missing keys \('0\.parametrizations\.bias\.original', .*\), 8 unexpected keys \('0\.bias', "
        r".*\); the checkpoint has no quantizer keys \(a float model's\) and the model went through prepare_qat: "
        r"load the float checkpoint before prepare_qat \(in the factory: "
        r"model\.load_state_dict\(torch\.load\(path\)\), then return prepare_qat\(model\)\), or give the "
        r"checkpoint of the trained QAT model",
    ),
    "qat-checkpoint-for-a-float-model": (
        "build",
        "qat",
        r"Error: checkpoint '.*qat\.pt' \(its state_dict under 'model_state_dict'\) does not fit the model: "
        r"8 missing keys \('0\.bias', .*\), 8 unexpected keys \('0\.parametrizations\.bias\.original', .*\); the "
        r"checkpoint has quantizer keys \(a prepare_qat model's\) and the model is float: have the factory "
        r"return prepare_qat\(model\) so that the checkpoint loads into it",
    ),
    "dict-without-a-state-dict": (
        "build",
        "no_state_dict",
        r"Error: checkpoint '.*no_state_dict\.pt' is a dict of 'epoch', 'optimizer', 'lr' and none of them is a "
        r"state_dict \(a mapping of names to tensors\); save model\.state_dict\(\), alone or under 'state_dict'",
    ),
    "two-state-dicts": (
        "build",
        "two_state_dicts",
        r"Error: checkpoint '.*two_state_dicts\.pt' holds several state_dicts \(under 'state_dict', 'model'\); "
        r"save the model's alone: torch\.save\(model\.state_dict\(\), path\)",
    ),
    "two-unusual-keys": (
        "build",
        "two_unusual_keys",
        r"Error: checkpoint '.*two_unusual_keys\.pt' holds several state_dicts \(under 'weights', 'ema'\); "
        r"save the model's alone: torch\.save\(model\.state_dict\(\), path\)",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_checkpoint_that_does_not_fit_is_one_clear_line(files: dict[str, Path], case: str) -> None:
    model, checkpoint, pattern = ERRORS[case]
    line = error_line(invoke("inspect", f"{files['model_py']}:{model}", "--checkpoint", files[checkpoint]))
    assert re.fullmatch(pattern, line), line
