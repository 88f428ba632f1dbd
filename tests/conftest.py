"""Shared test helpers: run the real snnTorch model and compare it with snncompile's float interpreter.

The reference is always the snnTorch module itself, run step by step (or once over the whole sequence
for ``LeakyParallel`` models) under ``torch.no_grad()``; nothing here computes expected values with
snncompile. Every neuron module's spikes and states are captured with forward hooks after each call.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import torch
from click.testing import CliRunner, Result
from hypothesis import settings
from torch import nn

import snncompile
from snncompile.cli import main

# CI runs the property tests on a fixed sequence of examples (reproducible: a red run replays as is);
# locally they draw fresh examples each run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True, scope="session")
def kernel_timings(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fast engine times its kernels once per machine and caches the figures in the user's cache
    directory; the tests keep theirs in a temporary one (subprocesses inherit it)."""
    saved = os.environ.get("SNNCOMPILE_CACHE_DIR")
    os.environ["SNNCOMPILE_CACHE_DIR"] = str(tmp_path_factory.mktemp("kernel-timings"))
    yield
    if saved is None:
        os.environ.pop("SNNCOMPILE_CACHE_DIR")
    else:
        os.environ["SNNCOMPILE_CACHE_DIR"] = saved


def require_tool(command: str, package: str) -> None:
    """Skips the calling test when the external tool ``command`` is not on the PATH; under CI (``$CI``
    set) fails it instead: .ci/run installs the hardware toolchain, so a missing tool there is a broken
    setup, not a reason to test less."""
    if shutil.which(command) is not None:
        return
    message = f"{command} is not installed (apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must have it (.ci/run installs it)", pytrace=False)
    pytest.skip(message)


NEURON_TYPES: tuple[type[nn.Module], ...] = (
    snn.Leaky,
    snn.RLeaky,
    snn.Synaptic,
    snn.RSynaptic,
    snn.LeakyParallel,
)
_STATE_BUFFERS = ("spk", "syn", "mem")


@dataclasses.dataclass
class Reference:
    """What snnTorch computed: everything keyed by module path, arrays shaped (T, B, ...)."""

    output: np.ndarray
    spikes: dict[str, np.ndarray]
    states: dict[str, dict[str, np.ndarray]]


def neuron_paths(net: nn.Module) -> list[str]:
    """The module paths of every snnTorch neuron in ``net``, in registration order."""
    return [name for name, m in net.named_modules() if isinstance(m, NEURON_TYPES)]


def is_whole_sequence(net: nn.Module) -> bool:
    return any(isinstance(m, snn.LeakyParallel) for m in net.modules())


def reset_snntorch_states(net: nn.Module) -> None:
    """Puts every neuron back to its freshly built state.

    snnTorch neurons keep ``mem`` (and ``syn``/``spk``) as buffers of shape (0,) until the first call,
    then replace any buffer whose shape does not match the input by ``zeros_like(input)``. Setting them
    back to an empty tensor is therefore exactly "start from zero state", for every neuron class
    (``snntorch.utils.reset`` resets *all* instances of a class, across models).
    """
    for m in net.modules():
        if isinstance(m, snn.SpikingNeuron):
            for name in _STATE_BUFFERS:
                if name in m._buffers:
                    setattr(m, name, torch.zeros(0))


def _state_names(m: nn.Module) -> tuple[str, ...]:
    if isinstance(m, snn.Synaptic | snn.RSynaptic):
        return ("syn", "mem")
    return ("mem",)


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out


@torch.no_grad()
def snntorch_reference(net: nn.Module, x: Any) -> Reference:
    """Runs ``net`` (in eval mode, from zero state) on ``x[T, B, ...]`` and records every neuron.

    Step-wise models are called once per time step on ``x[t]``; models containing ``LeakyParallel`` are
    called once on the whole ``x``. For ``LeakyParallel`` the membrane is ``m.rnn(x)[0]``, captured by a
    hook on ``m.rnn``.
    """
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    net.eval()
    reset_snntorch_states(net)
    paths = neuron_paths(net)
    spikes: dict[str, list[torch.Tensor]] = {p: [] for p in paths}
    states: dict[str, dict[str, list[torch.Tensor]]] = {p: {} for p in paths}
    handles = []
    for p in paths:
        m = net.get_submodule(p)

        def on_neuron(mod: nn.Module, args: Any, out: Any, p: str = p) -> None:
            spikes[p].append(_first(out).detach().clone())
            if isinstance(mod, snn.LeakyParallel):
                return
            for s in _state_names(mod):
                states[p].setdefault(s, []).append(getattr(mod, s).detach().clone())

        handles.append(m.register_forward_hook(on_neuron))
        if isinstance(m, snn.LeakyParallel):

            def on_rnn(mod: nn.Module, args: Any, out: Any, p: str = p) -> None:
                states[p].setdefault("mem", []).append(out[0].detach().clone())

            handles.append(m.rnn.register_forward_hook(on_rnn))
    try:
        if is_whole_sequence(net):
            output = _first(net(x)).clone()
            join = lambda seq: seq[0]  # noqa: E731  (one call: already (T, B, ...))
            for p in paths:
                assert len(spikes[p]) == 1, f"{p} was called {len(spikes[p])} times"
        else:
            output = torch.stack([_first(net(x[t])).clone() for t in range(x.shape[0])])
            join = torch.stack
            for p in paths:
                assert len(spikes[p]) == x.shape[0], f"{p} was called {len(spikes[p])} times"
    finally:
        for h in handles:
            h.remove()
    return Reference(
        output=output.numpy(),
        spikes={p: join(v).numpy() for p, v in spikes.items()},
        states={p: {s: join(v).numpy() for s, v in st.items()} for p, st in states.items()},
    )


def neuron_node(graph: snncompile.Graph, path: str) -> str:
    """The neuron node traced from module ``path``.

    For most neurons this is ``graph.node_for_source(path)``; a ``LeakyParallel`` also produces a
    linear node (source ``<path>.rnn``), so the node is picked among ``graph.neurons()``.
    """
    found = [n for n in graph.neurons() if graph.source(n) == path]
    assert len(found) == 1, f"expected one neuron node from {path!r}, found {found}\n{graph}"
    return found[0]


def _describe_mismatch(got: np.ndarray, want: np.ndarray) -> str:
    if got.shape != want.shape:
        return f"shape {got.shape} != snnTorch {want.shape}"
    bad = np.argwhere(~((got == want) | (np.isnan(got) & np.isnan(want))))
    idx = tuple(int(i) for i in bad[0])
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    return (
        f"{len(bad)} of {got.size} values differ; first at index {idx} (t, b, ...): "
        f"snncompile {got[idx]!r} vs snnTorch {want[idx]!r}; max |diff| {diff.max():.3g}"
    )


def assert_exact(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.float32, f"{what}: snncompile dtype {got.dtype}, expected float32"
    assert want.dtype == np.float32, f"{what}: snnTorch dtype {want.dtype}"
    assert np.array_equal(got, want), f"{what}: {_describe_mismatch(got, want)}"


def assert_active(ref: Reference) -> None:
    """Every neuron layer of the reference spikes somewhere and is silent somewhere (non-vacuous)."""
    for p, spk in ref.spikes.items():
        fired = spk != 0
        assert fired.any(), f"neuron {p!r} never spikes in the snnTorch reference: the test is vacuous"
        assert not fired.all(), f"neuron {p!r} spikes on every step in the snnTorch reference"


def compare_with_snntorch(
    net: nn.Module, x: Any, run_input: Any = None, check_activity: bool = True
) -> tuple[snncompile.Graph, snncompile.Run, Reference]:
    """Traces ``net``, runs both sides on ``x`` and asserts bit-identical spikes and states.

    ``run_input`` (default ``x``) is what is handed to ``run_float``, so tests can pass the same values
    as a numpy array of another dtype (uint8 / bool spikes) or as a torch tensor.
    """
    x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    graph = snncompile.trace(net, x_t[0])
    run = snncompile.run_float(graph, x if run_input is None else run_input)
    ref = snntorch_reference(net, x_t)
    paths = neuron_paths(net)
    nodes = {p: neuron_node(graph, p) for p in paths}
    assert sorted(nodes.values()) == sorted(graph.neurons()), (
        f"graph neurons {graph.neurons()} do not match the model's neurons {paths}\n{graph}"
    )
    for p, node in nodes.items():
        assert_exact(run.spikes[node], ref.spikes[p], f"spikes of {p!r} (node {node!r})")
        assert set(ref.states[p]) <= set(run.states[node]), (
            f"node {node!r} has states {sorted(run.states[node])}, snnTorch {sorted(ref.states[p])}"
        )
        for s, want in ref.states[p].items():
            assert_exact(run.states[node][s], want, f"{s} of {p!r} (node {node!r})")
    assert_exact(run.output, ref.output, "network output")
    if check_activity:
        assert_active(ref)
    return graph, run, ref


@pytest.fixture(autouse=True)
def _fresh_snntorch_instances() -> Any:
    """snnTorch keeps every neuron ever built in a class-level list; keep it from growing across tests."""
    yield
    snn.SpikingNeuron.instances.clear()


def invoke(*args: Any) -> Result:
    """The ``snncompile`` CLI run in-process on ``args`` (converted to strings)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result: Result, *, silent_stdout: bool = False) -> str:
    """The one-line error of a failed command, with the checks every error exit must pass: exit 1, no
    traceback or internal error, one ``Error: ...`` line on stderr (and nothing on stdout when asked)."""
    assert result.exit_code == 1, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    if silent_stdout:
        assert result.stdout == ""
    return lines[0]
