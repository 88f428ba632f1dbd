"""Clear errors, pinned by message.

Contract under test: everything a user can get wrong raises a subclass of
:class:`snncompile.SnnCompileError` (never a bare ``AttributeError``/``TypeError`` traceback), and its
message names the module path or graph node, what was found, and what is expected or the valid choices.
Unsupported features are refused, never skipped: a model that traces must compute what snnTorch computes.

Each case builds its model right here with ``torch.nn`` / ``snntorch`` and pins the message with an
anchored regex, so a reworded message is a deliberate, visible change.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import brevitas.quant
import numpy as np
import pytest
import snntorch as snn
import torch
from brevitas.nn import QuantLinear
from snntorch import surrogate
from snntorch.functional import quant
from torch import nn

import snncompile
from snncompile import (
    GraphError,
    InconsistentModelError,
    InputError,
    SerializationError,
    SnnCompileError,
    TraceError,
    UnsupportedModuleError,
)
from snncompile.ir import LIF, Graph, Input, Linear, Output

N_IN = 20
N_HID = 5
X1 = torch.zeros(1, N_IN)  # one time step, (B, N_IN)

# The module types every "not supported" message must list (a subset: the list may grow).
CORE_SUPPORTED = ("Conv2d", "Leaky", "LeakyParallel", "Linear", "RLeaky", "RSynaptic", "Synaptic")


def leaky(**kw: Any) -> snn.Leaky:
    kw.setdefault("beta", 0.9)
    return snn.Leaky(init_hidden=True, **kw)


def dense(neuron: nn.Module, n_out: int = N_HID) -> nn.Sequential:
    """``Linear(N_IN, n_out)`` then ``neuron``: the neuron is module ``'1'``."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_IN, n_out), neuron)


def assert_lists_supported(message: str) -> None:
    listed = re.search(r"supported: (.*)", message)
    assert listed, f"message does not list the supported modules: {message}"
    for name in CORE_SUPPORTED:
        assert re.search(rf"\b{name}\b", listed.group(1)), f"{name} missing from: {message}"


# --------------------------------------------------------------------------------- hierarchy


@pytest.mark.parametrize(
    "cls",
    [UnsupportedModuleError, InconsistentModelError, TraceError, GraphError, InputError, SerializationError],
)
def test_every_error_is_an_snncompile_error(cls: type[Exception]) -> None:
    assert issubclass(cls, SnnCompileError)
    assert getattr(snncompile, cls.__name__) is cls
    assert not issubclass(SnnCompileError, (TypeError, ValueError, RuntimeError))


# ------------------------------------------------------------------------- unsupported modules


@pytest.mark.parametrize(
    ("bad", "qualname"),
    [
        (nn.ReLU(), "torch.nn.modules.activation.ReLU"),
        (nn.LSTM(16, 16), "torch.nn.modules.rnn.LSTM"),
        (nn.LayerNorm(16), "torch.nn.modules.normalization.LayerNorm"),
        (nn.Sigmoid(), "torch.nn.modules.activation.Sigmoid"),
    ],
    ids=["ReLU", "LSTM", "LayerNorm", "Sigmoid"],
)
def test_unsupported_module_in_sequential(bad: nn.Module, qualname: str) -> None:
    net = nn.Sequential(nn.Linear(N_IN, 16), bad, leaky())
    with pytest.raises(UnsupportedModuleError) as info:
        snncompile.trace(net, X1)
    message = str(info.value)
    assert re.match(rf"^module '1' \({re.escape(qualname)}\) is not supported; supported: ", message), message
    assert_lists_supported(message)


def test_unsupported_module_is_named_by_its_attribute_path() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(N_IN, N_HID)
            self.block = nn.Sequential(nn.Identity(), nn.GELU())
            self.lif1 = leaky()

        def forward(self, x: torch.Tensor) -> Any:
            return self.lif1(self.block(self.fc1(x)))

    with pytest.raises(
        UnsupportedModuleError, match=r"^module 'block\.1' \(torch\.nn\.modules\.activation\.GELU\)"
    ):
        snncompile.trace(Net(), X1)


class MyLinear(nn.Linear):
    """A user subclass of a supported type: dispatch is by exact type, so it must be refused by name."""


class MyLeaky(snn.Leaky):  # type: ignore[misc]
    """A user subclass of a supported neuron: may override the forward pass, so it must be refused."""


@pytest.mark.parametrize(
    ("net", "path", "type_name"),
    [
        (lambda: nn.Sequential(MyLinear(N_IN, N_HID), leaky()), "0", "MyLinear"),
        (lambda: dense(MyLeaky(beta=0.9, init_hidden=True)), "1", "MyLeaky"),
    ],
    ids=["Linear-subclass", "Leaky-subclass"],
)
def test_subclass_of_a_supported_module_is_refused_by_name(net: Any, path: str, type_name: str) -> None:
    # Exact-type dispatch: a subclass may change what forward computes, so it is refused, and the
    # message must say which module and which type (not an fx internal such as get_attr '0.weight').
    with pytest.raises(UnsupportedModuleError) as info:
        snncompile.trace(net(), X1)
    message = str(info.value)
    assert re.match(rf"^module '{path}' \([\w.]*\b{type_name}\) is not supported", message), message
    assert_lists_supported(message)


class _FnNet(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fc = nn.Linear(N_IN, N_HID)
        self.lif = leaky()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.lif(self.fn(self.fc(x)))


@pytest.mark.parametrize(
    ("fn", "pattern"),
    [
        (
            torch.relu,
            r"^call_function 'relu' in forward \(.*relu.*\) is not supported; supported: the modules ",
        ),
        (
            lambda x: x * 2,
            r"^call_function 'mul' in forward \(.*mul.*\) is not supported; supported: the modules ",
        ),
        (
            lambda x: x.sigmoid(),
            r"^call_method 'sigmoid' in forward \(.*\) is not supported; supported: the modules ",
        ),
        (
            torch.nn.functional.relu,
            r"^call_function 'relu' in forward \(.*\) is not supported; supported: the modules ",
        ),
    ],
    ids=["torch.relu", "mul", "Tensor.sigmoid", "F.relu"],
)
def test_unsupported_function_in_custom_forward(fn: Any, pattern: str) -> None:
    with pytest.raises(UnsupportedModuleError, match=pattern) as info:
        snncompile.trace(_FnNet(fn), X1)
    message = str(info.value)
    assert_lists_supported(message)
    assert "torch.flatten" in message and "indexing a neuron's output tuple" in message


# ----------------------------------------------------------------------------- neuron options

_RESET_MIX = (
    r"^module '1': reset_mechanism_val is {val} \({now}\) but the neuron was built with reset '{built}' "
    r"\(state_function _base_\w+\); snnTorch would run a mix of both\. "
    r"Build the neuron with reset_mechanism='{now}' instead"
)


def test_reset_changed_by_setter_is_inconsistent() -> None:
    lif = snn.Leaky(beta=0.9, init_hidden=True)
    lif.reset_mechanism = "zero"  # snnTorch updates reset_mechanism_val only; forward keeps subtracting
    with pytest.raises(InconsistentModelError, match=_RESET_MIX.format(val=1, now="zero", built="subtract")):
        snncompile.trace(dense(lif), X1)


@pytest.mark.parametrize(
    ("built", "loaded", "val"),
    [("subtract", "zero", 1), ("subtract", "none", 2), ("zero", "subtract", 0)],
)
def test_reset_changed_by_load_state_dict_is_inconsistent(built: str, loaded: str, val: int) -> None:
    net = dense(leaky(reset_mechanism=built))
    net.load_state_dict(dense(leaky(reset_mechanism=loaded)).state_dict())
    lif: Any = net[1]
    assert int(lif.reset_mechanism_val) == val
    with pytest.raises(InconsistentModelError, match=_RESET_MIX.format(val=val, now=loaded, built=built)):
        snncompile.trace(net, X1)


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
def test_consistent_reset_traces(reset: str) -> None:
    graph = snncompile.trace(dense(leaky(reset_mechanism=reset)), X1)
    assert f"reset={reset}" in str(graph)


@pytest.mark.filterwarnings("ignore:Inhibition is an unstable feature")
def test_inhibition_is_refused() -> None:
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '1': inhibition=True is not supported \(snnTorch marks it unstable\)$",
    ):
        snncompile.trace(dense(leaky(inhibition=True)), X1)


def test_custom_spike_grad_is_refused() -> None:
    lif = leaky(spike_grad=lambda mem: (mem > 0).float())
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '1': spike_grad <function .*<lambda>.*> is not from snntorch\.surrogate; "
        r"snncompile cannot know its forward pass",
    ):
        snncompile.trace(dense(lif), X1)


def test_custom_spike_grad_on_rsynaptic_is_refused_too() -> None:
    lif = snn.RSynaptic(alpha=0.8, beta=0.9, init_hidden=True, linear_features=N_HID, spike_grad=lambda m: m)
    with pytest.raises(
        UnsupportedModuleError, match=r"^module '1': spike_grad .* is not from snntorch\.surrogate"
    ):
        snncompile.trace(dense(lif), X1)


@pytest.mark.parametrize(
    "spike_grad",
    [surrogate.fast_sigmoid(), surrogate.atan(), surrogate.sigmoid(slope=5), None],
    ids=["fast_sigmoid", "atan", "sigmoid", "default"],
)
def test_snntorch_surrogates_are_accepted(spike_grad: Any) -> None:
    graph = snncompile.trace(dense(leaky(spike_grad=spike_grad)), X1)
    assert len(graph.neurons()) == 1


def test_custom_state_quant_is_refused() -> None:
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '1': state_quant <function .*<lambda>.*> is not supported; "
        r"use .*snntorch\.functional\.quant\.state_quant$",
    ):
        snncompile.trace(dense(leaky(state_quant=lambda v: v)), X1)


def test_snntorch_state_quant_is_accepted() -> None:
    graph = snncompile.trace(dense(leaky(state_quant=quant.state_quant(num_bits=4, uniform=True))), X1)
    assert "mem=levels(16)" in str(graph)


def test_rleaky_conv_recurrence_with_even_kernel_is_inconsistent() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        snn.RLeaky(beta=0.9, init_hidden=True, linear_features=None, conv2d_channels=4, kernel_size=2),
    )
    with pytest.raises(
        InconsistentModelError,
        match=r"^module '1': recurrent kernel_size \(2, 2\) is even, so the recurrent conv changes the map "
        r"size .*use an odd size$",
    ):
        snncompile.trace(net, torch.zeros(1, 1, 8, 8))


def test_rsynaptic_without_reset_delay_is_refused() -> None:
    lif = snn.RSynaptic(alpha=0.8, beta=0.9, init_hidden=True, linear_features=N_HID, reset_delay=False)
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '1': RSynaptic with reset_delay=False raises TypeError in snnTorch .*"
        r"build it with reset_delay=True$",
    ):
        snncompile.trace(dense(lif), X1)


# ---------------------------------------------------------------------------- LeakyParallel


def _leaky_parallel(weight_hh: np.ndarray) -> nn.Sequential:
    torch.manual_seed(0)
    lp = snn.LeakyParallel(N_IN, N_HID, beta=0.5)
    with torch.no_grad():
        lp.rnn.weight_hh_l0.copy_(torch.as_tensor(weight_hh, dtype=torch.float32))
    return nn.Sequential(lp)


def test_leaky_parallel_with_diagonal_decays_traces() -> None:
    graph = snncompile.trace(_leaky_parallel(np.diag([0.0, 0.25, 0.5, 0.75, 1.0])), X1)
    assert graph.whole_sequence


def test_leaky_parallel_with_non_diagonal_weight_hh_is_refused() -> None:
    w = np.diag([0.5] * N_HID)
    w[0, 1] = 0.1
    w[3, 2] = -0.2
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '0': rnn\.weight_hh_l0 is not diagonal \(2 off-diagonal entries\); "
        r"snncompile maps LeakyParallel to one decay per neuron$",
    ):
        snncompile.trace(_leaky_parallel(w), X1)


@pytest.mark.parametrize(
    ("decays", "lo_hi"),
    [([0.5, 0.5, 1.5, 0.5, 0.5], r"\[0\.5, 1\.5\]"), ([0.5, -0.25, 0.5, 0.5, 0.5], r"\[-0\.25, 0\.5\]")],
    ids=["above-1", "negative"],
)
def test_leaky_parallel_decay_outside_unit_interval_is_refused(decays: list[float], lo_hi: str) -> None:
    with pytest.raises(
        UnsupportedModuleError,
        match=rf"^module '0': the decays diag\(rnn\.weight_hh_l0\) lie in {lo_hi}; expected \[0, 1\]",
    ):
        snncompile.trace(_leaky_parallel(np.diag(decays)), X1)


_LP_MIX = (
    r"^module '{path}' \({kind}\) cannot follow or precede LeakyParallel: a LeakyParallel model takes the "
    r"whole sequence \(T, B, features\) per call; supported there: Linear and LeakyParallel$"
)


@pytest.mark.parametrize(
    ("layers", "path", "kind"),
    [
        (lambda: [snn.LeakyParallel(N_IN, N_HID, beta=0.5), nn.Flatten()], "1", "flatten"),
        (lambda: [snn.LeakyParallel(N_IN, N_HID, beta=0.5), leaky()], "1", "lif"),
        (lambda: [snn.LeakyParallel(N_IN, N_HID, beta=0.5), nn.Linear(N_HID, 3), leaky()], "2", "lif"),
        (lambda: [nn.Linear(N_IN, N_HID), leaky(), snn.LeakyParallel(N_HID, 3, beta=0.5)], "1", "lif"),
    ],
    ids=["LP-Flatten", "LP-Leaky", "LP-Linear-Leaky", "Leaky-LP"],
)
def test_leaky_parallel_mixed_with_stepwise_layers_is_refused(layers: Any, path: str, kind: str) -> None:
    with pytest.raises(UnsupportedModuleError, match=_LP_MIX.format(path=path, kind=kind)):
        snncompile.trace(nn.Sequential(*layers()), X1)


# ------------------------------------------------------------------------------ model structure


def test_neuron_called_twice_is_refused() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(N_IN, N_HID)
            self.fc2 = nn.Linear(N_HID, N_HID)
            self.lif = leaky()

        def forward(self, x: torch.Tensor) -> Any:
            return self.lif(self.fc2(self.lif(self.fc1(x))))

    with pytest.raises(
        UnsupportedModuleError,
        match=r"^neuron module 'lif' is called twice per step; a neuron has one state, so use one module per layer$",
    ):
        snncompile.trace(Net(), X1)


def test_forward_with_state_argument_is_refused() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(N_IN, N_HID)
            self.lif = snn.Leaky(beta=0.9)

        def forward(self, x: torch.Tensor, mem: torch.Tensor) -> Any:
            return self.lif(self.fc(x), mem)

    with pytest.raises(
        UnsupportedModuleError,
        match=r"^forward takes a second argument 'mem'; snncompile traces single-step modules whose only "
        r"argument is the input",
    ):
        snncompile.trace(Net(), X1)


def test_neuron_called_with_explicit_state_is_refused() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(N_IN, N_HID)
            self.fc_mem = nn.Linear(N_IN, N_HID)
            self.lif = snn.Leaky(beta=0.9)

        def forward(self, x: torch.Tensor) -> Any:
            return self.lif(self.fc(x), self.fc_mem(x))

    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module 'lif' is called with 2 tensor arguments; neurons must keep their own state "
        r"\(init_hidden=True, or called with the input alone\)",
    ):
        snncompile.trace(Net(), X1)


def test_neuron_state_read_in_forward_traces() -> None:
    """``init_leaky()`` in forward (snnTorch's tutorial style) starts the neuron from zero: the same
    graph as the init_hidden=True twin (tests/test_forward_styles.py covers the time-loop forms)."""

    class Net(nn.Module):
        def __init__(self, init_hidden: bool) -> None:
            super().__init__()
            self.fc = nn.Linear(N_IN, N_HID)
            self.lif = snn.Leaky(beta=0.9, init_hidden=init_hidden)

        def forward(self, x: torch.Tensor) -> Any:
            if self.lif.init_hidden:
                return self.lif(self.fc(x))
            mem = self.lif.init_leaky()
            return self.lif(self.fc(x), mem)

    torch.manual_seed(0)
    net, twin = Net(False), Net(True)
    twin.load_state_dict(net.state_dict())
    graph, twin_graph = snncompile.trace(net, X1), snncompile.trace(twin, X1)
    # the same network; forward returns (spk, mem), so the traced graph has a second output (the membrane)
    assert [graph.line(n) for n in graph if n != "output_1"] == str(twin_graph).splitlines()
    assert graph.line("output_1") == "%output_1 = output[state=mem](%lif)"


def test_output_tuple_fed_into_linear_is_refused() -> None:
    net = nn.Sequential(
        nn.Linear(N_IN, N_HID),
        leaky(output=True),
        nn.Linear(N_HID, 4),
        leaky(output=True),
    )
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '2' receives the returned tuple of neuron 'lif_1'; only a neuron's spikes can feed a "
        r"layer \(index the tuple, or build the neuron with output=False and init_hidden=True\)$",
    ):
        snncompile.trace(net, X1)


def test_membrane_fed_into_linear_is_refused() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(N_IN, N_HID)
            self.lif1 = leaky(output=True)
            self.fc2 = nn.Linear(N_HID, 4)
            self.lif2 = leaky()

        def forward(self, x: torch.Tensor) -> Any:
            _, mem = self.lif1(self.fc1(x))
            return self.lif2(self.fc2(mem))

    with pytest.raises(
        UnsupportedModuleError, match=r"^module 'fc2' receives the 'mem' state of neuron 'lif1'"
    ):
        snncompile.trace(Net(), X1)


def test_indexed_output_tuple_traces() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(N_IN, N_HID)
            self.lif1 = leaky(output=True)
            self.fc2 = nn.Linear(N_HID, 4)
            self.lif2 = leaky(output=True)

        def forward(self, x: torch.Tensor) -> Any:
            spk, _ = self.lif1(self.fc1(x))
            return self.lif2(self.fc2(spk))

    graph = snncompile.trace(Net(), X1)
    assert graph.source(graph.output_name) == "lif2"


# ---------------------------------------------------------------------------- parameter values


def test_float64_model_is_refused() -> None:
    net = nn.Sequential(nn.Linear(N_IN, N_HID), leaky()).double()
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '0': weight is torch\.float64; snncompile compiles float32 models "
        r"\(call \.float\(\) on the model before tracing\)$",
    ):
        snncompile.trace(net, X1.double())


def test_float16_model_is_refused() -> None:
    with pytest.raises(UnsupportedModuleError, match=r"^module '0': weight is torch\.float16; .*float32"):
        snncompile.trace(nn.Sequential(nn.Linear(N_IN, N_HID), leaky()).half(), X1)


@pytest.mark.parametrize(
    ("path", "field", "mutate"),
    [
        ("0", "weight", lambda net: net[0].weight.__setitem__((2, 3), float("nan"))),
        ("0", "bias", lambda net: net[0].bias.__setitem__(1, float("inf"))),
        ("1", "threshold", lambda net: net[1].threshold.fill_(float("nan"))),
        ("1", "beta", lambda net: net[1].beta.fill_(float("nan"))),
    ],
    ids=["nan-weight", "inf-bias", "nan-threshold", "nan-beta"],
)
def test_non_finite_parameter_is_inconsistent(path: str, field: str, mutate: Any) -> None:
    net = dense(leaky())
    with torch.no_grad():
        mutate(net)
    with pytest.raises(
        InconsistentModelError, match=rf"^module '{path}': {field} holds NaN or infinite values$"
    ):
        snncompile.trace(net, X1)


@pytest.mark.parametrize(
    ("field", "kw"),
    [
        ("beta", {"beta": torch.full((7,), 0.9)}),
        ("threshold", {"beta": 0.9, "threshold": torch.ones(7)}),
    ],
)
def test_per_neuron_parameter_of_wrong_shape(field: str, kw: dict[str, Any]) -> None:
    net = dense(snn.Leaky(init_hidden=True, **kw))
    with pytest.raises(
        InconsistentModelError,
        match=rf"^module '1': {field} has shape \(7,\), which does not broadcast to the neurons' shape "
        rf"\({N_HID},\) \(use a scalar, \({N_HID},\) or a per-channel \(C, 1, 1\) tensor\)$",
    ):
        snncompile.trace(net, X1)


# ------------------------------------------------------------------------------------- trace()


@pytest.mark.parametrize(
    ("example", "shown"),
    [(torch.zeros(N_IN), r"\(20,\)"), (torch.tensor(1.0), "none"), (None, "none")],
    ids=["1-D", "0-D", "None"],
)
def test_trace_with_bad_example_input(example: Any, shown: str) -> None:
    with pytest.raises(
        TraceError,
        match=rf"^example_input must be one time step shaped \(B, \*input_shape\), got shape {shown}$",
    ):
        snncompile.trace(dense(leaky()), example)


def test_trace_with_example_input_of_wrong_size_names_the_layer() -> None:
    with pytest.raises(
        GraphError, match=r"^module '0' \(linear\): linear expects an input of shape \(20,\), got \(7,\)$"
    ):
        snncompile.trace(dense(leaky()), torch.zeros(1, 7))


def test_trace_of_a_non_module() -> None:
    with pytest.raises(TraceError, match=r"^expected a torch\.nn\.Module, got function$"):
        snncompile.trace(lambda x: x, X1)  # type: ignore[arg-type]


def test_untraceable_control_flow_is_a_trace_error() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(N_IN, N_HID)
            self.lif = leaky()

        def forward(self, x: torch.Tensor) -> Any:
            if x.sum() > 0:
                x = x + 0
            return self.lif(self.fc(x))

    with pytest.raises(TraceError, match=r"^torch\.fx cannot trace Net: "):
        snncompile.trace(Net(), X1)


# ------------------------------------------------------------------------------------- brevitas


def test_brevitas_input_quant_is_refused() -> None:
    layer = QuantLinear(N_IN, N_HID, bias=True, input_quant=brevitas.quant.Int8ActPerTensorFloat)
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '0': brevitas input_quant is not supported; quantize weights \(and bias\) only$",
    ):
        snncompile.trace(nn.Sequential(layer, leaky()), X1)


def test_brevitas_output_quant_is_refused() -> None:
    layer = QuantLinear(N_IN, N_HID, bias=True, output_quant=brevitas.quant.Int8ActPerTensorFloat)
    with pytest.raises(UnsupportedModuleError, match=r"^module '0': brevitas output_quant is not supported"):
        snncompile.trace(nn.Sequential(layer, leaky()), X1)


def test_brevitas_bias_quant_needing_input_scale_is_refused() -> None:
    layer = QuantLinear(N_IN, N_HID, bias=True, bias_quant=brevitas.quant.Int16Bias)
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '0': its bias quantizer needs the input scale, which the layer does not have "
        r"\(no input_quant\); use bias=False or a bias quantizer with internal scaling$",
    ):
        snncompile.trace(nn.Sequential(layer, leaky()), X1)


def test_brevitas_weight_only_quant_linear_traces() -> None:
    graph = snncompile.trace(nn.Sequential(QuantLinear(N_IN, N_HID, bias=True), leaky()), X1)
    assert len(graph.neurons()) == 1


# -------------------------------------------------------------------------------- run_float input


@pytest.fixture(scope="module")
def graph() -> Graph:
    return snncompile.trace(dense(leaky()), X1)


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (
            np.zeros((3, N_IN), np.float32),
            r"^input has shape \(3, 20\); expected \(T, B, 20\) \(time first, then batch\)$",
        ),
        (
            np.zeros((4, 3, N_IN + 1), np.float32),
            r"^input has shape \(4, 3, 21\); expected \(T, B, 20\) \(time first, then batch\)$",
        ),
        (
            np.zeros((4, 3, 2, 10), np.float32),
            r"^input has shape \(4, 3, 2, 10\); expected \(T, B, 20\)",
        ),
        (np.zeros((0, 3, N_IN), np.float32), r"^input has shape \(0, 3, 20\): no time steps or no samples$"),
        (
            np.full((4, 3, N_IN), 0.1, np.float64),
            r"^input of dtype float64 holds values that float32 cannot represent exactly$",
        ),
        (
            np.full((4, 3, N_IN), 2**24 + 1, np.int64),
            r"^input of dtype int64 holds values that float32 cannot represent exactly$",
        ),
        (np.full((4, 3, N_IN), np.nan, np.float32), r"^input holds NaN or infinite values$"),
        (np.full((4, 3, N_IN), np.nan, np.float64), r"^input holds NaN or infinite values$"),
        (np.full((4, 3, N_IN), -np.inf, np.float32), r"^input holds NaN or infinite values$"),
        (
            np.full((4, 3, N_IN), "1"),
            r"^input dtype <U1 is not supported; use bool/uint8 spikes or float32 currents$",
        ),
        (np.zeros((4, 3, N_IN), np.complex64), r"^input dtype complex64 is not supported"),
        ([[0.0] * N_IN], r"^input must be a numpy array or torch tensor, got list$"),
    ],
    ids=[
        "no-time-axis",
        "per-sample-size",
        "per-sample-rank",
        "empty",
        "float64-0.1",
        "int64-2**24+1",
        "nan",
        "nan-float64",
        "-inf",
        "string",
        "complex",
        "list",
    ],
)
def test_run_float_bad_input(graph: Graph, x: Any, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        snncompile.run_float(graph, x)


@pytest.mark.parametrize(
    "x",
    [
        np.full((4, 3, N_IN), 0.5, np.float64),  # exactly a float32
        np.ones((4, 3, N_IN), np.uint8),
        np.ones((4, 3, N_IN), bool),
        torch.ones(4, 3, N_IN),
    ],
    ids=["float64-exact", "uint8", "bool", "torch"],
)
def test_run_float_accepts_exact_inputs(graph: Graph, x: Any) -> None:
    assert snncompile.run_float(graph, x).output.shape == (4, 3, N_HID)


# --------------------------------------------------------------------------------- Graph.verify


def _f32(*shape: int) -> np.ndarray:
    return np.full(shape, 0.5, np.float32)


def _graph(*nodes: tuple[Any, ...]) -> Graph:
    g = Graph()
    for node in nodes:
        g.add(*node)
    return g


def _net(
    linear: Linear | None = None, lif: LIF | None = None, extra: tuple[Any, ...] = (), output: bool = True
) -> Graph:
    """input(3) -> fc (2 out) -> lif -> output, with the pieces swapped in by each case."""
    nodes: list[tuple[Any, ...]] = [
        ("input", Input((3,))),
        *extra,
        ("fc", linear if linear is not None else Linear(_f32(2, 3), _f32(2)), ("input",)),
        ("lif", lif if lif is not None else LIF(_f32(), _f32()), ("fc",)),
    ]
    if output:
        nodes.append(("output", Output(), ("lif",)))
    return _graph(*nodes)


def test_handbuilt_graph_verifies() -> None:
    _net().verify()


@pytest.mark.parametrize(
    ("graph", "pattern"),
    [
        (
            lambda: _net(linear=Linear(np.ones((2, 3), np.float64))),
            r"^node 'fc': weight must be float32, got float64$",
        ),
        (
            lambda: _net(linear=Linear(_f32(2, 3), np.ones(2, np.float64))),
            r"^node 'fc': bias must be float32, got float64$",
        ),
        (
            lambda: _net(linear=Linear(_f32(2, 4))),
            r"^node 'fc' \(%fc = linear\[4->2\]\(%input\)\): linear expects an input of shape \(4,\), got \(3,\)$",
        ),
        (
            lambda: _net(lif=LIF(_f32(3), _f32())),
            r"^node 'lif' \(%lif = lif\[.*\]\(%fc\)\): beta of shape \(3,\) does not broadcast to the "
            r"neurons' shape \(2,\)$",
        ),
        (
            lambda: _net(lif=LIF(_f32(), _f32(2, 2))),
            r"^node 'lif' \(.*\): threshold of shape \(2, 2\) does not broadcast to the neurons' shape \(2,\)$",
        ),
        (
            lambda: _net(lif=LIF(_f32(), _f32(), reset="bogus")),  # type: ignore[arg-type]
            r"^node 'lif' \(.*\): reset must be one of \['subtract', 'zero', 'none'\], got 'bogus'$",
        ),
        (
            lambda: _net(linear=Linear(np.full((2, 3), np.nan, np.float32))),
            r"^node 'fc': weight holds NaN or infinite values$",
        ),
        (
            lambda: _net(extra=(("input2", Input((3,))),)),
            r"^a graph needs exactly one input node, found 2: \['input', 'input2'\]$",
        ),
        (lambda: _net(output=False), r"^a graph needs at least one output node, found none$"),
    ],
    ids=[
        "float64-weight",
        "float64-bias",
        "linear-input-size",
        "beta-shape",
        "threshold-shape",
        "bad-reset",
        "nan-weight",
        "two-inputs",
        "no-output",
    ],
)
def test_graph_verify_names_the_problem(graph: Any, pattern: str) -> None:
    g = graph()
    with pytest.raises(GraphError, match=pattern):
        g.verify()


def test_graph_add_checks_arity_and_inputs() -> None:
    g = _graph(("input", Input((3,))))
    with pytest.raises(GraphError, match=r"^node 'fc': linear takes 1 input\(s\), got 0$"):
        g.add("fc", Linear(_f32(2, 3)), ())
    with pytest.raises(GraphError, match=r"^node 'fc': input 'nope' is not in the graph$"):
        g.add("fc", Linear(_f32(2, 3)), ("nope",))
    with pytest.raises(GraphError, match=r"^node name 'input' is used twice$"):
        g.add("input", Input((3,)))
    with pytest.raises(GraphError, match=r"^node name 'no good' is not an identifier$"):
        g.add("no good", Input((3,)))


def test_op_with_python_float_parameter_is_a_graph_error() -> None:
    # A hand-built op with a plain float where an array belongs is refused when it is built, naming the
    # op and field, not an AttributeError from deep inside the shape check.
    with pytest.raises(GraphError, match=r"^LIF\.beta must be np\.ndarray, got float 0\.9$"):
        LIF(0.9, 1.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- graph files


@pytest.fixture
def graph_file(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "g.json"
    snncompile.save_graph(_net(), path)
    return path, json.loads(path.read_text())


def _write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_graph_file_not_json(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.json", "{not json")
    with pytest.raises(SerializationError, match=r"^'.*g\.json' is not valid JSON: "):
        snncompile.load_graph(path)


def test_graph_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SerializationError, match=r"^cannot read graph file '.*nope\.json': No such file"):
        snncompile.load_graph(tmp_path / "nope.json")


def test_graph_file_of_another_version(graph_file: tuple[Path, dict[str, Any]]) -> None:
    path, data = graph_file
    data["version"] = 99
    with pytest.raises(
        SerializationError, match=r"^graph file version 99 is not supported \(this snncompile reads 1\)$"
    ):
        snncompile.load_graph(_write(path, data))


def test_graph_file_with_unknown_op(graph_file: tuple[Path, dict[str, Any]]) -> None:
    path, data = graph_file
    data["nodes"][1]["op"]["type"] = "Bogus"
    with pytest.raises(
        SerializationError, match=r"^node 'fc': unknown op type 'Bogus'; known: \[.*'LIF'.*\]$"
    ):
        snncompile.load_graph(_write(path, data))


def test_graph_file_with_unknown_field(graph_file: tuple[Path, dict[str, Any]]) -> None:
    path, data = graph_file
    data["nodes"][1]["op"]["gain"] = 2
    with pytest.raises(SerializationError, match=r"^node 'fc': Linear has no field\(s\) \['gain'\]$"):
        snncompile.load_graph(_write(path, data))


@pytest.mark.parametrize(
    ("node", "field", "value"),
    [(2, "beta", 0.9), (0, "shape", 3)],
    ids=["beta-as-number", "input-shape-as-number"],
)
def test_graph_file_with_field_of_the_wrong_type(
    graph_file: tuple[Path, dict[str, Any]], node: int, field: str, value: Any
) -> None:
    # A hand-edited file with a bare number where an array / list belongs must give a clean error
    # (the CLI would otherwise print "internal error (AttributeError)").
    path, data = graph_file
    data["nodes"][node]["op"][field] = value
    with pytest.raises(SnnCompileError, match=rf"{field}"):
        snncompile.load_graph(_write(path, data)).verify()
