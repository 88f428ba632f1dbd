"""The float interpreter against snnTorch itself: a parametrized matrix of neuron options.

Contract under test: ``run_float(trace(net, x[0]), x)`` is BIT-IDENTICAL to running the snnTorch module
in float32 (same spikes, same membrane and synaptic-current floats, ``np.array_equal``) for every neuron
class and option. The reference is always the real snnTorch model (``conftest.snntorch_reference``).

The matrix is the full product of the options that change the update equations (neuron class x reset
mechanism x reset_delay x front layer x scalar/per-neuron parameters x recurrence kind), with the
remaining options (learned or buffer parameters, graded-spike factor, spike or current inputs) drawn by
a fixed-seed generator per case; ``test_matrix_covers_every_option`` checks that each value of every
option occurs for every neuron class.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import zlib

import numpy as np
import pytest
import snntorch as snn
import torch
from brevitas.nn import QuantConv2d, QuantLinear
from brevitas.quant import Int8WeightPerTensorFixedPoint
from conftest import compare_with_snntorch, neuron_node, snntorch_reference
from snntorch import surrogate
from snntorch.functional import quant
from torch import nn

import snncompile

T = 24
B = 3
N_IN = 16  # linear front: inputs
N_HID = 24  # linear front: first neuron layer
N_OUT = 12  # second neuron layer (always dense-shaped)
CONV_IN = (2, 6, 6)  # conv front: Conv2d(2, 4, 3) -> (4, 4, 4) neurons
CONV_C = 4
CONV_HW = 4

NEURONS = ("Leaky", "RLeaky", "Synaptic", "RSynaptic")
RESETS = ("subtract", "zero", "none")
GRADED = ("one", "half", "per_neuron")
INPUTS = ("spikes", "currents")


@dataclasses.dataclass(frozen=True)
class Case:
    neuron: str
    reset: str
    reset_delay: bool
    front: str  # linear | conv | quantlinear | quantconv
    per_neuron: bool  # beta/alpha/threshold as (N,) or (C,1,1) tensors instead of scalars
    learned: bool  # learn_beta/learn_threshold/learn_alpha/learn_recurrent (nn.Parameter vs buffer)
    graded: str  # graded_spikes_factor: 1.0, 0.5 or a per-neuron tensor
    inputs: str  # binary spikes or float currents
    recurrence: str | None = None  # dense | conv | o2o_scalar | o2o_per_neuron (RLeaky / RSynaptic)
    state_quant: int | None = None  # snntorch.functional.quant.state_quant(num_bits=...)

    @property
    def id(self) -> str:
        parts = [
            self.neuron,
            self.reset,
            "delay" if self.reset_delay else "nodelay",
            self.front,
            "perneuron" if self.per_neuron else "scalar",
            "learned" if self.learned else "buffer",
            f"gsf_{self.graded}",
            self.inputs,
        ]
        if self.recurrence:
            parts.append(f"rec_{self.recurrence}")
        if self.state_quant:
            parts.append(f"sq{self.state_quant}")
        return "-".join(parts)

    @property
    def seed(self) -> int:
        return zlib.crc32(self.id.encode())


def _recurrences(neuron: str, front: str) -> tuple[str | None, ...]:
    if not neuron.startswith("R"):
        return (None,)
    return ("conv" if "conv" in front else "dense", "o2o_scalar", "o2o_per_neuron")


def _build_cases() -> list[Case]:
    rng = random.Random(20240601)
    cases = []

    def free() -> dict[str, object]:
        return {
            "learned": rng.random() < 0.5,
            "graded": rng.choice(GRADED),
            "inputs": rng.choice(INPUTS),
        }

    # the core product
    for neuron, reset, delay, front, per in itertools.product(
        NEURONS, RESETS, (True, False), ("linear", "conv"), (False, True)
    ):
        if neuron == "RSynaptic" and not delay:
            continue  # refused by snncompile (snnTorch crashes): see test_rsynaptic_without_reset_delay
        for rec in _recurrences(neuron, front):
            cases.append(Case(neuron, reset, delay, front, per, recurrence=rec, **free()))  # type: ignore[arg-type]
    # snnTorch's own state quantization (8 and 4 bits, threshold 1.0)
    for neuron, bits, reset, delay in itertools.product(NEURONS, (8, 4), RESETS, (True, False)):
        if neuron == "RSynaptic" and not delay:
            continue
        front = rng.choice(("linear", "conv"))
        rec = rng.choice(_recurrences(neuron, front))
        cases.append(
            Case(neuron, reset, delay, front, rng.random() < 0.5, recurrence=rec, state_quant=bits, **free())  # type: ignore[arg-type]
        )
    # brevitas weight-quantized front layers
    for front, reset, delay in itertools.product(("quantlinear", "quantconv"), RESETS, (True, False)):
        cases.append(Case("Leaky", reset, delay, front, rng.random() < 0.5, **free()))  # type: ignore[arg-type]
    for neuron in ("Synaptic", "RLeaky"):
        for front in ("quantlinear", "quantconv"):
            rec = rng.choice(_recurrences(neuron, front))
            cases.append(Case(neuron, "subtract", True, front, True, recurrence=rec, **free()))  # type: ignore[arg-type]
    return cases


CASES = _build_cases()


def test_matrix_covers_every_option() -> None:
    for neuron in NEURONS:
        mine = [c for c in CASES if c.neuron == neuron]
        assert {c.reset for c in mine} == set(RESETS)
        assert {c.reset_delay for c in mine} == ({True} if neuron == "RSynaptic" else {True, False})
        assert {c.front for c in mine} >= {"linear", "conv"}
        assert {c.per_neuron for c in mine} == {True, False}
        assert {c.learned for c in mine} == {True, False}
        assert {c.graded for c in mine} == set(GRADED)
        assert {c.inputs for c in mine} == set(INPUTS)
        assert {c.state_quant for c in mine} == {None, 8, 4}
        if neuron.startswith("R"):
            assert {c.recurrence for c in mine} == {"dense", "conv", "o2o_scalar", "o2o_per_neuron"}
    assert {c.front for c in CASES if c.neuron == "Leaky"} == {"linear", "conv", "quantlinear", "quantconv"}
    assert len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------ builders


def _uniform(shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return torch.empty(shape).uniform_(lo, hi)


def _param(per_neuron: bool, shape: tuple[int, ...], lo: float, hi: float, as_float: bool = False):
    """A per-neuron (shape) tensor, or one value: a 0-d tensor (or a Python float)."""
    if per_neuron:
        return _uniform(shape, lo, hi)
    v = _uniform((), lo, hi)
    return float(v) if as_float else v


def _make_neuron(case: Case, shape: tuple[int, ...], first: bool) -> nn.Module:
    """One neuron layer for ``case``; ``shape`` is (N,) or the per-channel (C, 1, 1)."""
    per = case.per_neuron
    as_float = not case.learned and first  # scalars given as Python floats sometimes
    if case.state_quant:
        thr = _param(per, shape, 0.6, 1.1, as_float)
        sq = quant.state_quant(num_bits=case.state_quant, uniform=True, threshold=1.0)
    else:
        thr = _param(per, shape, 0.5, 1.5, as_float)
        sq = False
    # per-neuron decays include values outside [0, 1], which snnTorch clamps on every step
    beta = _param(per, shape, -0.2, 1.2) if per else _param(False, shape, 0.3, 0.95, as_float)
    common = dict(
        beta=beta,
        threshold=thr,
        init_hidden=True,
        learn_beta=case.learned,
        learn_threshold=case.learned,
        reset_mechanism=case.reset,
        state_quant=sq,
        reset_delay=case.reset_delay,
    )
    gsf = {"one": 1.0, "half": 0.5, "per_neuron": _uniform(shape, 0.25, 1.5)}[case.graded]
    if case.neuron == "Leaky":
        return snn.Leaky(**common, graded_spikes_factor=gsf, learn_graded_spikes_factor=case.learned)
    if case.neuron in ("Synaptic", "RSynaptic"):
        alpha = _param(per, shape, -0.2, 1.2) if per else _param(False, shape, 0.3, 0.95)
        common.update(alpha=alpha, learn_alpha=case.learned)
    if case.neuron.startswith("R"):
        rec = case.recurrence if first or case.recurrence != "conv" else "dense"
        if rec == "dense":
            common.update(all_to_all=True, linear_features=shape[0])
        elif rec == "conv":
            common.update(all_to_all=True, conv2d_channels=shape[0], kernel_size=3)
        elif rec == "o2o_scalar":
            common.update(all_to_all=False, V=float(_uniform((), -0.8, 0.8)))
        else:
            common.update(all_to_all=False, V=_uniform(shape, -1.0, 1.0))
        common.update(learn_recurrent=case.learned)
    cls = {"RLeaky": snn.RLeaky, "Synaptic": snn.Synaptic, "RSynaptic": snn.RSynaptic}[case.neuron]
    m = cls(**common)
    if case.graded != "one":
        # no constructor argument for these classes, but fire() still multiplies by the buffer
        m.graded_spikes_factor = torch.as_tensor(gsf, dtype=torch.float32)
    return m


def _quant_kwargs() -> dict[str, object]:
    return dict(bias=True, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4)


def _scale_(layer: nn.Module, factor: float) -> None:
    with torch.no_grad():
        layer.weight.mul_(factor)
        if layer.bias is not None:
            layer.bias.mul_(factor)


def build_case(case: Case) -> tuple[nn.Module, np.ndarray]:
    """The model (front -> neuron -> [Flatten] -> Linear -> neuron) and an input x[T, B, ...]."""
    torch.manual_seed(case.seed)
    conv = "conv" in case.front
    quantized = case.front.startswith("quant")
    if conv:
        front: nn.Module = (
            QuantConv2d(CONV_IN[0], CONV_C, 3, **_quant_kwargs())
            if quantized
            else nn.Conv2d(CONV_IN[0], CONV_C, 3)
        )
        shape1: tuple[int, ...] = (CONV_C, 1, 1)
        n_flat = CONV_C * CONV_HW * CONV_HW
        in_shape: tuple[int, ...] = CONV_IN
    else:
        front = QuantLinear(N_IN, N_HID, **_quant_kwargs()) if quantized else nn.Linear(N_IN, N_HID)
        shape1 = (N_HID,)
        n_flat = N_HID
        in_shape = (N_IN,)
    second = QuantLinear(n_flat, N_OUT, **_quant_kwargs()) if quantized else nn.Linear(n_flat, N_OUT)
    n1 = _make_neuron(case, shape1, first=True)
    n2 = _make_neuron(case, (N_OUT,), first=False)
    # weights scaled so that both layers spike on a fair fraction of the steps (checked by every test);
    # the second layer makes up for graded spikes smaller than 1
    _scale_(front, 3.0)
    _scale_(second, 3.5 / float(torch.as_tensor(n1.graded_spikes_factor).detach().mean()))
    layers = [front, n1]
    if conv:
        layers.append(nn.Flatten())
    layers += [second, n2]
    net = nn.Sequential(*layers)
    if case.inputs == "spikes":
        x = (torch.rand(T, B, *in_shape) < 0.4).float()
    else:
        x = _uniform((T, B, *in_shape), -0.75, 1.5)
    return net, x.numpy()


# ------------------------------------------------------------------------------------ the matrix


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_snntorch(case: Case) -> None:
    net, x = build_case(case)
    # binary spikes go in as uint8 (exercising the input conversion), currents as a torch tensor
    run_input = x.astype(np.uint8) if case.inputs == "spikes" else torch.from_numpy(x)
    graph, run, ref = compare_with_snntorch(net, x, run_input=run_input)
    # the traced graph really is the configuration under test
    neurons = graph.neurons()
    assert len(neurons) == 2, str(graph)
    assert graph.node_for_source("1") == neurons[0]
    assert run.output.shape == (T, B, N_OUT)
    for p in ("1", str(len(net) - 1)):
        if case.neuron in ("Synaptic", "RSynaptic"):
            assert "syn" in ref.states[p]


# ------------------------------------------------------------------------------------ LeakyParallel


@dataclasses.dataclass(frozen=True)
class ParallelCase:
    two_layers: bool  # LeakyParallel -> Linear -> LeakyParallel
    decay: str  # "scalar": beta=<float>; "diag": per-neuron diagonal of weight_hh set by hand
    per_neuron_threshold: bool
    bias: bool
    learned: bool  # learn_beta / learn_threshold / learn_graded_spikes_factor
    graded: str
    inputs: str

    @property
    def id(self) -> str:
        return "-".join(
            [
                "two" if self.two_layers else "one",
                self.decay,
                "thrvec" if self.per_neuron_threshold else "thr",
                "bias" if self.bias else "nobias",
                "learned" if self.learned else "buffer",
                f"gsf_{self.graded}",
                self.inputs,
            ]
        )


def _parallel_cases() -> list[ParallelCase]:
    rng = random.Random(7)
    out = []
    for two, decay, thr, bias in itertools.product(
        (False, True), ("scalar", "diag"), (False, True), (False, True)
    ):
        out.append(
            ParallelCase(two, decay, thr, bias, rng.random() < 0.5, rng.choice(GRADED), rng.choice(INPUTS))
        )
    return out


PARALLEL_CASES = _parallel_cases()


def test_parallel_matrix_covers_every_option() -> None:
    assert {c.learned for c in PARALLEL_CASES} == {True, False}
    assert {c.graded for c in PARALLEL_CASES} == set(GRADED)
    assert {c.inputs for c in PARALLEL_CASES} == set(INPUTS)


def _leaky_parallel(case: ParallelCase, n_in: int, hidden: int) -> snn.LeakyParallel:
    beta = float(_uniform((), 0.3, 0.95))
    thr = _uniform((hidden,), 0.5, 1.5) if case.per_neuron_threshold else float(_uniform((), 0.75, 1.25))
    gsf = {"one": 1.0, "half": 0.5, "per_neuron": _uniform((hidden,), 0.25, 1.5)}[case.graded]
    m = snn.LeakyParallel(
        n_in,
        hidden,
        beta=beta,
        bias=case.bias,
        threshold=thr,
        learn_beta=case.learned,
        learn_threshold=case.learned,
        graded_spikes_factor=gsf,
        learn_graded_spikes_factor=case.learned,
    )
    with torch.no_grad():
        m.rnn.weight_ih_l0.mul_(3.0)
        if case.decay == "diag":
            m.rnn.weight_hh_l0.copy_(torch.diag(torch.rand(hidden)))
    return m


def build_parallel(case: ParallelCase) -> tuple[nn.Module, np.ndarray]:
    torch.manual_seed(zlib.crc32(case.id.encode()))
    layers: list[nn.Module] = [_leaky_parallel(case, N_IN, N_HID)]
    if case.two_layers:
        fc = nn.Linear(N_HID, N_OUT)
        _scale_(fc, 3.0)
        layers += [fc, _leaky_parallel(case, N_OUT, N_OUT)]
    net = nn.Sequential(*layers)
    if case.inputs == "spikes":
        x = (torch.rand(T, B, N_IN) < 0.4).float()
    else:
        x = _uniform((T, B, N_IN), -0.75, 1.5)
    return net, x.numpy()


@pytest.mark.parametrize("case", PARALLEL_CASES, ids=[c.id for c in PARALLEL_CASES])
def test_leaky_parallel_matches_snntorch(case: ParallelCase) -> None:
    net, x = build_parallel(case)
    graph, _run, ref = compare_with_snntorch(net, x)
    assert graph.whole_sequence
    assert len(graph.neurons()) == (2 if case.two_layers else 1)
    for p, st in ref.states.items():
        assert (st["mem"] >= 0).all(), f"{p}: nn.RNN(relu) membrane is never negative"


def test_leaky_parallel_node_for_source_is_the_neuron() -> None:
    """``graph.node_for_source(path)`` of a LeakyParallel names its neuron node (not its input linear)."""
    net, x = build_parallel(PARALLEL_CASES[-1])
    graph = snncompile.trace(net, torch.from_numpy(x[0]))
    for path in ("0", "2"):
        assert graph.node_for_source(path) == neuron_node(graph, path), str(graph)


def test_leaky_parallel_in_custom_module() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            case = PARALLEL_CASES[5]
            self.lp1 = _leaky_parallel(case, N_IN, N_HID)
            self.fc = nn.Linear(N_HID, N_OUT)
            _scale_(self.fc, 3.0)
            self.lp2 = _leaky_parallel(case, N_OUT, N_OUT)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lp2(self.fc(self.lp1(x)))

    torch.manual_seed(11)
    net = Net()
    x = (torch.rand(T, B, N_IN) < 0.4).float().numpy()
    graph, _, _ = compare_with_snntorch(net, x, run_input=x.astype(bool))
    assert graph.whole_sequence


# ------------------------------------------------------------------------------------ custom modules


@pytest.mark.parametrize("second", ["Leaky", "RLeaky", "Synaptic"])
def test_custom_module_returning_spikes_and_membrane(second: str) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(N_IN, N_HID)
            self.lif1 = snn.Leaky(beta=torch.rand(N_HID), threshold=0.8, init_hidden=True)
            self.fc2 = nn.Linear(N_HID, N_OUT)
            if second == "Leaky":
                self.lif2 = snn.Leaky(beta=0.7, init_hidden=True, output=True, reset_mechanism="zero")
            elif second == "RLeaky":
                self.lif2 = snn.RLeaky(beta=0.7, linear_features=N_OUT, init_hidden=True, output=True)
            else:
                self.lif2 = snn.Synaptic(alpha=0.6, beta=0.7, init_hidden=True, output=True)

        def forward(self, x: torch.Tensor):
            cur = self.fc1(x)
            spk1 = self.lif1(cur)
            cur2 = self.fc2(spk1)
            if second == "Synaptic":
                spk2, _syn2, mem2 = self.lif2(cur2)
            else:
                spk2, mem2 = self.lif2(cur2)
            return spk2, mem2

    torch.manual_seed(3)
    net = Net()
    _scale_(net.fc1, 2.5)
    _scale_(net.fc2, 3.0)
    x = _uniform((T, B, N_IN), -0.75, 1.5).numpy()
    graph, run, _ref = compare_with_snntorch(net, x)
    assert graph.node_for_source("lif1") in graph.neurons()
    assert graph.node_for_source("lif2") == graph.output_name
    assert "mem" in run.states[graph.output_name]


@pytest.mark.parametrize("style", ["function", "method"])
def test_custom_module_with_torch_flatten(style: str) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(CONV_IN[0], CONV_C, 3)
            self.lif1 = snn.Leaky(
                beta=torch.rand(CONV_C, 1, 1), threshold=torch.rand(CONV_C, 1, 1) + 0.5, init_hidden=True
            )
            self.fc = nn.Linear(CONV_C * CONV_HW * CONV_HW, N_OUT)
            self.lif2 = snn.Synaptic(alpha=0.5, beta=0.8, init_hidden=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spk = self.lif1(self.conv(x))
            flat = torch.flatten(spk, 1) if style == "function" else spk.flatten(1)
            return self.lif2(self.fc(flat))

    torch.manual_seed(5)
    net = Net()
    _scale_(net.conv, 2.5)
    _scale_(net.fc, 3.0)
    x = (torch.rand(T, B, *CONV_IN) < 0.4).float().numpy()
    compare_with_snntorch(net, x)


def test_custom_module_with_pooling_dropout_identity() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(2, 4, 3)  # (2, 10, 10) -> (4, 8, 8)
            self.lif1 = snn.Leaky(beta=0.8, init_hidden=True)
            self.pool1 = nn.AvgPool2d(2)  # -> (4, 4, 4)
            self.drop = nn.Dropout(0.3)
            self.conv2 = nn.Conv2d(4, 6, 3, padding=1)  # -> (6, 4, 4)
            self.lif2 = snn.RLeaky(beta=0.7, conv2d_channels=6, kernel_size=3, init_hidden=True)
            self.pool2 = nn.MaxPool2d(2)  # -> (6, 2, 2)
            self.ident = nn.Identity()
            self.fc = nn.Linear(24, N_OUT)
            self.lif3 = snn.Leaky(beta=0.9, threshold=0.75, init_hidden=True, reset_mechanism="zero")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s1 = self.drop(self.pool1(self.lif1(self.conv1(x))))
            s2 = self.ident(self.pool2(self.lif2(self.conv2(s1))))
            return self.lif3(self.fc(torch.flatten(s2, 1)))

    torch.manual_seed(9)
    net = Net()
    _scale_(net.conv1, 2.5)
    _scale_(net.conv2, 4.0)
    _scale_(net.fc, 3.0)
    x = _uniform((T, B, 2, 10, 10), -0.5, 1.5).numpy()
    graph, _, _ = compare_with_snntorch(net, x)
    assert len(graph.neurons()) == 3


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("reset", RESETS)
def test_rsynaptic_without_reset_delay_is_refused(reset: str) -> None:
    net = nn.Sequential(
        nn.Linear(N_IN, N_OUT),
        snn.RSynaptic(
            alpha=0.5,
            beta=0.5,
            linear_features=N_OUT,
            init_hidden=True,
            reset_mechanism=reset,
            reset_delay=False,
        ),
    )
    x = torch.rand(T, B, N_IN)
    with pytest.raises(snncompile.UnsupportedModuleError):
        snncompile.trace(net, x[0])
    # why: snnTorch itself cannot run it (it reads the unset `spk`/`mem` arguments)
    with pytest.raises(TypeError):
        snntorch_reference(net, x)


def test_leaky_inhibition_is_refused() -> None:
    with pytest.warns(UserWarning):
        lif = snn.Leaky(beta=0.5, init_hidden=True, inhibition=True)
    net = nn.Sequential(nn.Linear(N_IN, N_OUT), lif)
    with pytest.raises(snncompile.UnsupportedModuleError):
        snncompile.trace(net, torch.zeros(B, N_IN))


def test_leaky_parallel_default_beta_is_refused_or_exact() -> None:
    """``beta=None`` (snnTorch's default) leaves a random diagonal, partly negative: refused by name or exact."""
    torch.manual_seed(2)
    m = snn.LeakyParallel(N_IN, N_HID)
    with torch.no_grad():
        m.rnn.weight_ih_l0.mul_(3.0)
    net = nn.Sequential(m)
    x = _uniform((T, B, N_IN), -0.75, 1.5).numpy()
    try:
        snncompile.trace(net, torch.from_numpy(x[0]))
    except snncompile.UnsupportedModuleError as e:
        assert "weight_hh" in str(e)
    else:
        compare_with_snntorch(net, x)


# ------------------------------------------------------------------------------------ more options


SPIKE_GRADS = {
    "default_atan": None,
    "fast_sigmoid": surrogate.fast_sigmoid(slope=10),
    "sigmoid": surrogate.sigmoid(),
    "triangular": surrogate.triangular(),
    "ste": surrogate.straight_through_estimator(),
    "heaviside": surrogate.heaviside(),
    "spike_rate_escape": surrogate.spike_rate_escape(),
    "sso": surrogate.SSO(),
    "sfs": surrogate.SFS(),
    "surrogate_disable": "disable",
}


@pytest.mark.parametrize("name", list(SPIKE_GRADS))
@pytest.mark.parametrize("neuron", ["Leaky", "RSynaptic", "LeakyParallel"])
def test_spike_grad_choices(name: str, neuron: str) -> None:
    """Every snnTorch surrogate fires on ``mem - threshold > 0`` in the forward pass."""
    torch.manual_seed(4)
    fn = SPIKE_GRADS[name]
    kw = {"surrogate_disable": True} if fn == "disable" else {"spike_grad": fn}
    if neuron == "LeakyParallel":
        lp = snn.LeakyParallel(N_IN, N_HID, beta=0.75, **kw)
        with torch.no_grad():
            lp.rnn.weight_ih_l0.mul_(3.0)
        net: nn.Module = nn.Sequential(lp)
    else:
        fc = nn.Linear(N_IN, N_HID)
        _scale_(fc, 3.0)
        if neuron == "Leaky":
            n = snn.Leaky(beta=0.75, init_hidden=True, **kw)
        else:
            n = snn.RSynaptic(alpha=0.5, beta=0.75, linear_features=N_HID, init_hidden=True, **kw)
        net = nn.Sequential(fc, n)
    x = _uniform((T, B, N_IN), -0.75, 1.5).numpy()
    compare_with_snntorch(net, x)


@pytest.mark.parametrize(
    "shape",
    [(CONV_C, CONV_HW, CONV_HW), (1, CONV_HW, CONV_HW), (CONV_C, 1, CONV_HW), (1,), (1, CONV_C, 1, 1)],
    ids=["per_pixel", "per_position", "per_channel_and_column", "one_element", "leading_1"],
)
def test_conv_neuron_parameters_of_other_broadcast_shapes(shape: tuple[int, ...]) -> None:
    """Any parameter shape that broadcasts against a conv map is applied as snnTorch broadcasts it."""
    torch.manual_seed(6)
    conv = nn.Conv2d(CONV_IN[0], CONV_C, 3)
    _scale_(conv, 3.0)
    lif = snn.Leaky(
        beta=_uniform(shape, -0.2, 1.2),
        threshold=_uniform(shape, 0.5, 1.5),
        graded_spikes_factor=_uniform(shape, 0.25, 1.5),
        init_hidden=True,
        reset_delay=False,
        reset_mechanism="zero",
    )
    syn = snn.Synaptic(
        alpha=_uniform(shape, -0.2, 1.2),
        beta=_uniform(shape, 0.2, 1.0),
        threshold=_uniform(shape, 0.5, 1.5),
        init_hidden=True,
    )
    net = nn.Sequential(conv, lif, nn.Conv2d(CONV_C, CONV_C, 3, padding=1), syn)
    _scale_(net[2], 4.0)
    x = (torch.rand(T, B, *CONV_IN) < 0.4).float().numpy()
    compare_with_snntorch(net, x)


@pytest.mark.parametrize("shape", [(1, N_HID), (1,)], ids=["row", "one_element"])
def test_dense_neuron_parameters_of_other_broadcast_shapes(shape: tuple[int, ...]) -> None:
    torch.manual_seed(8)
    fc = nn.Linear(N_IN, N_HID, bias=False)
    _scale_(fc, 3.0)
    rl = snn.RLeaky(
        beta=_uniform(shape, 0.2, 1.0),
        threshold=_uniform(shape, 0.5, 1.5),
        all_to_all=False,
        V=_uniform(shape, -1.0, 1.0),
        init_hidden=True,
    )
    net = nn.Sequential(fc, rl)
    x = _uniform((T, B, N_IN), -0.75, 1.5).numpy()
    compare_with_snntorch(net, x)


def test_layer_options() -> None:
    """Strided / padded / dilated / grouped / 'same' convs, pooling options, bias-free layers."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)  # (2, 11, 11) -> (4, 6, 6)
            self.n1 = snn.Leaky(beta=0.8, init_hidden=True)
            self.c2 = nn.Conv2d(4, 4, 3, padding="same", dilation=1, groups=2, bias=False)  # -> (4, 6, 6)
            self.n2 = snn.RLeaky(beta=0.8, conv2d_channels=4, kernel_size=(3, 5), init_hidden=True)
            self.p2 = nn.AvgPool2d(
                3, stride=2, padding=1, ceil_mode=True, count_include_pad=False
            )  # -> (4, 4, 4)
            self.c3 = nn.Conv2d(4, 6, 2, dilation=2, padding=1)  # -> (6, 4, 4)
            self.n3 = snn.Synaptic(alpha=0.4, beta=0.8, init_hidden=True, reset_mechanism="zero")
            self.p3 = nn.MaxPool2d(2, stride=1, padding=1, ceil_mode=True)  # -> (6, 5, 5)
            self.fc = nn.Linear(150, N_OUT, bias=False)
            self.n4 = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.n1(self.c1(x))
            s = self.p2(self.n2(self.c2(s)))
            s = self.p3(self.n3(self.c3(s)))
            return self.n4(self.fc(s.flatten(1)))

    torch.manual_seed(10)
    net = Net()
    for layer, k in ((net.c1, 3.0), (net.c2, 4.0), (net.c3, 4.0), (net.fc, 3.0)):
        _scale_(layer, k)
    x = (torch.rand(T, B, 2, 11, 11) < 0.4).float().numpy()
    graph, _, _ = compare_with_snntorch(net, x)
    assert len(graph.neurons()) == 4


@pytest.mark.parametrize("thr_centered", [True, False])
@pytest.mark.parametrize("neuron", ["Leaky", "Synaptic", "RLeaky"])
def test_non_uniform_state_quant(neuron: str, thr_centered: bool) -> None:
    """snnTorch's exponential (non-uniform) level tables, centred on the threshold or on zero."""
    torch.manual_seed(12)
    sq = quant.state_quant(num_bits=4, uniform=False, thr_centered=thr_centered, threshold=1.0)
    fc = nn.Linear(N_IN, N_HID)
    _scale_(fc, 3.0)
    if neuron == "Leaky":
        n: nn.Module = snn.Leaky(beta=0.8, init_hidden=True, state_quant=sq)
    elif neuron == "Synaptic":
        n = snn.Synaptic(alpha=0.5, beta=0.8, init_hidden=True, state_quant=sq, reset_mechanism="zero")
    else:
        n = snn.RLeaky(beta=0.8, linear_features=N_HID, init_hidden=True, state_quant=sq, reset_delay=False)
    net = nn.Sequential(fc, n)
    x = _uniform((T, B, N_IN), -0.75, 1.5).numpy()
    compare_with_snntorch(net, x)


def test_nested_sequential_paths() -> None:
    """Neurons inside nested containers are found by their dotted module path."""
    torch.manual_seed(13)
    block1 = nn.Sequential(nn.Linear(N_IN, N_HID), snn.Leaky(beta=0.7, init_hidden=True))
    block2 = nn.Sequential(nn.Linear(N_HID, N_OUT), snn.Synaptic(alpha=0.5, beta=0.7, init_hidden=True))
    _scale_(block1[0], 3.0)
    _scale_(block2[0], 3.5)
    net = nn.Sequential(block1, nn.Identity(), block2)
    x = (torch.rand(T, B, N_IN) < 0.4).float().numpy()
    graph, _, _ = compare_with_snntorch(net, x)
    assert graph.node_for_source("0.1") in graph.neurons()
    assert graph.node_for_source("2.1") == graph.output_name


def test_stacked_leaky_parallel_without_linear() -> None:
    """LeakyParallel -> LeakyParallel directly (the second one's W_ih is the only synapse)."""
    case = PARALLEL_CASES[3]
    torch.manual_seed(14)
    lp1 = _leaky_parallel(case, N_IN, N_HID)
    lp2 = _leaky_parallel(case, N_HID, N_OUT)
    net = nn.Sequential(lp1, lp2)
    x = _uniform((T, B, N_IN), -0.75, 1.5).numpy()
    compare_with_snntorch(net, x)
