"""A ``.nir`` MODEL through the command line: the reset options every command takes, and the notes.

The reference for ``--reset-delay`` is snnTorch's own importer (``snntorch.import_nir.import_from_nir``)
run step by step on the same graph and input; nothing here computes expected values with snncompile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from snncompile.cli import main

pytestmark = pytest.mark.filterwarnings(
    "ignore:nirtorch.extract_nir_graph is being deprecated:DeprecationWarning"
)

DT = 1e-4  # snnTorch's import_nir hard-codes it
T, B, N_IN, N_HID, N_OUT = 40, 3, 4, 6, 3


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _snntorch_style_graph(rng: np.random.Generator) -> nir.NIRGraph:
    """Affine -> LIF -> Affine -> CubaLIF with the fields snnTorch's export writes (``tau = dt/(1 - beta)``,
    ``r = tau/dt``, ``w_in = tau_syn/dt``) and one threshold per layer (snnTorch's import needs that)."""

    def tau(beta: np.ndarray) -> np.ndarray:
        return np.float32(DT) / (np.float32(1) - beta.astype(np.float32))

    tau_lif = tau(rng.uniform(0.6, 0.95, N_HID))
    tau_syn, tau_mem = tau(rng.uniform(0.5, 0.9, N_OUT)), tau(rng.uniform(0.6, 0.95, N_OUT))
    zeros = np.zeros(N_HID, np.float32)
    nodes = {
        "input": nir.Input(np.array([N_IN])),
        "fc1": nir.Affine(rng.uniform(0, 0.8, (N_HID, N_IN)).astype(np.float32), zeros + 0.02),
        "lif": nir.LIF(tau_lif, tau_lif / np.float32(DT), zeros, np.full(N_HID, 0.9, np.float32)),
        "fc2": nir.Affine(
            rng.uniform(-0.1, 0.3, (N_OUT, N_HID)).astype(np.float32), np.zeros(N_OUT, np.float32)
        ),
        "cuba": nir.CubaLIF(
            tau_syn,
            tau_mem,
            tau_mem / np.float32(DT),
            np.zeros(N_OUT, np.float32),
            np.full(N_OUT, 2.0, np.float32),
            w_in=tau_syn / np.float32(DT),
        ),
        "output": nir.Output(np.array([N_OUT])),
    }
    edges = [("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "cuba"), ("cuba", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def _snntorch_import(graph: nir.NIRGraph, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Spikes and membranes of every neuron of snnTorch's own import of ``graph``, step by step."""
    pytest.importorskip("nirtorch", reason="snntorch.import_nir needs nirtorch")
    from snntorch.import_nir import import_from_nir

    model = import_from_nir(graph)
    neurons = {"lif": model.get_submodule("lif"), "cuba": model.get_submodule("cuba")}
    record: dict[str, dict[str, list[np.ndarray]]] = {n: {"spikes": [], "membrane": []} for n in neurons}

    def hook(name: str) -> Any:
        def keep(module: Any, args: Any, out: Any) -> None:
            spk = out[0] if isinstance(out, tuple) else out
            record[name]["spikes"].append(spk.numpy().copy())
            record[name]["membrane"].append(module.mem.numpy().copy())

        return keep

    for name, m in neurons.items():
        m.register_forward_hook(hook(name))
    with torch.no_grad():
        for t in range(x.shape[0]):
            model(torch.from_numpy(x[t]))
    return {n: {k: np.stack(v) for k, v in r.items()} for n, r in record.items()}


def test_snntorch_convention_reproduces_snntorchs_own_import(tmp_path: Path) -> None:
    """snnTorch's import_nir builds zero-reset neurons without delay (``reset_mechanism="zero",
    reset_delay=False``); ``--convention snntorch --reset zero --reset-delay false`` gives its spikes
    exactly and its membranes within 1e-5, every neuron layer, through ``simulate --record all``."""
    rng = np.random.default_rng(0)
    graph = _snntorch_style_graph(rng)
    nir.write(tmp_path / "g.nir", graph)
    x = rng.uniform(0, 1, (T, B, N_IN)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    want = _snntorch_import(graph, x)
    result = invoke(
        "simulate", tmp_path / "g.nir", "--convention", "snntorch", "--reset", "zero", "--reset-delay",
        "false", "--input", tmp_path / "x.npz", "-o", tmp_path / "y.npz", "--record", "all",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "y.npz") as y:
        for name, ref in want.items():
            spikes = y[f"spikes/{name}"].astype(np.float32)
            assert 0.05 < ref["spikes"].mean() < 0.95, f"{name}: the test is vacuous"
            np.testing.assert_array_equal(spikes, ref["spikes"], err_msg=f"{name} spikes")
            np.testing.assert_allclose(y[f"membrane/{name}"], ref["membrane"], atol=1e-5, err_msg=name)
    default = invoke(
        "simulate",
        tmp_path / "g.nir",
        "--input",
        tmp_path / "x.npz",
        "-o",
        tmp_path / "d.npz",
        "--record",
        "all",
    )
    assert default.exit_code == 0, default.output
    with np.load(tmp_path / "d.npz") as d:  # the default is snnTorch's Leaky: subtract, delayed
        assert not np.array_equal(d["spikes/lif"].astype(np.float32), want["lif"]["spikes"])


def _norse_lif_graph(tmp_path: Path) -> Path:
    lif = nir.LIF(
        tau=np.full(2, 5e-3), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2)
    )
    fc = nir.Affine(np.array([[4.0, 0.0], [1.0, 3.0]], np.float32), np.zeros(2, np.float32))
    graph = nir.NIRGraph.from_list(nir.Input(np.array([2])), fc, lif, nir.Output(np.array([2])))  # 'lif'
    nir.write(tmp_path / "lif.nir", graph)
    x = (np.random.default_rng(0).uniform(0, 1, (20, 2, 2)) > 0.5).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    return tmp_path / "lif.nir"


@pytest.mark.parametrize(
    "command",
    [
        ("inspect",),
        ("simulate", "--input", "{x}", "-o", "{out}/y.npz"),
        ("compile", "--calibration", "{x}", "-o", "{out}/build"),
        ("verify", "--input", "{x}"),
        ("sweep", "--targets", "default", "--weight-bits", "8", "--state-bits", "16", "--input", "{x}",
         "--calibration", "{x}", "--workers", "1", "-o", "{out}/sweep"),
    ],
)  # fmt: skip
def test_every_command_taking_a_nir_model_takes_the_reset_options(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    """The same options on every command; a difference from the producer's rule is a note on stderr,
    and the delayed reset asked for shows in the imported graph."""
    model = _norse_lif_graph(tmp_path)
    args = [a.format(x=tmp_path / "x.npz", out=tmp_path) for a in command[1:]]
    result = invoke(command[0], model, *args, "--convention", "norse", "--reset-delay", "true")
    assert result.exit_code in (0, 1) and "Error" not in result.output, result.output  # verify: 1 if off
    note = (
        "note: NIR LIF node 'lif' (norse convention): reset='zero' one step later (snnTorch's default) as "
        "asked, where Norse's from_nir resets to v_reset in the step it fires"
    )
    assert note in result.stderr.splitlines()
    if command[0] == "inspect":
        assert "immediate" not in result.stdout and "reset=zero" in result.stdout
        same_step = invoke("inspect", model, "--convention", "norse")
        assert same_step.stderr == "" and "reset=zero" in same_step.stdout and "immediate" in same_step.stdout


def test_quiet_silences_the_notes(tmp_path: Path) -> None:
    result = invoke("-q", "inspect", _norse_lif_graph(tmp_path), "--convention", "sinabs")
    assert result.exit_code == 0 and result.stderr == ""
    loud = invoke("inspect", _norse_lif_graph(tmp_path), "--convention", "sinabs")
    assert loud.stderr.startswith("note: NIR LIF node 'lif' (sinabs convention): sinabs' MultiSpike")


def test_a_bad_reset_delay_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("inspect", _norse_lif_graph(tmp_path), "--reset-delay", "maybe")
    assert result.exit_code == 2 and "'maybe' is not a valid boolean" in result.output
