"""Eval-mode BatchNorm1d / BatchNorm2d, pinned against torch itself.

Contract under test: a BatchNorm traced into the float IR computes what the module computes, bit for
bit (``run_float`` == the snnTorch model's forward, every neuron's spikes and membranes), in
``nn.Sequential`` stacks and in a tutorial-style forward with its own time loop; post-training
quantization folds it into the layer before it (and says so); ``prepare_qat`` folds it before training,
so the QAT model's torch forward equals the compiled integer program bit for bit; what cannot be
compiled (training mode, no running statistics, a BatchNorm after a pooling) is refused with one line.
``nn.Conv1d`` and the 1-d pools are refused naming their 2-d form over (C, 1, L), which is checked to
compute what the Conv1d model computes.

The reference is always torch / snnTorch itself (eval, ``torch.no_grad()``); the fold is checked
against the float module's forward at float32 tolerance only where it cannot be exact.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import snntorch as snn
import torch
from conftest import (
    assert_exact,
    compare_with_snntorch,
    neuron_node,
    reset_snntorch_states,
    snntorch_reference,
)
from snncompile.quant import prepare_qat
from test_qat_exact import assert_bit_exact
from torch import Tensor, nn

import snncompile
from snncompile import QuantizationError, UnsupportedModuleError
from snncompile.frontend.snntorch import trace_forward
from snncompile.ir import BatchNorm
from snncompile.passes import fold_batchnorm

T = 16
B = 4
N_IN = 20
N_HID = 24
N_OUT = 6
IMG = (1, 10, 10)


def _spikes(seed: int, shape: tuple[int, ...], p: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


def _stats_(bn: nn.Module, affine_gain: float = 0.5) -> nn.Module:
    """Running statistics (and affine parameters) far from the identity, as after training."""
    with torch.no_grad():
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.1, 2.0)
        if bn.weight is not None:
            bn.weight.uniform_(1 - affine_gain, 1 + affine_gain)
            bn.bias.uniform_(-0.2, 0.2)
    return bn


def mlp_bn(affine: bool = True, bias: bool = True) -> nn.Module:
    torch.manual_seed(21)
    net = nn.Sequential(
        nn.Linear(N_IN, N_HID, bias=bias),
        _stats_(nn.BatchNorm1d(N_HID, affine=affine)),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(N_HID, N_OUT),
        _stats_(nn.BatchNorm1d(N_OUT, eps=1e-3, affine=affine)),
        snn.Leaky(beta=0.8, init_hidden=True),
    )
    with torch.no_grad():
        net[0].weight.uniform_(-0.5, 0.5)
        net[3].weight.uniform_(-0.5, 0.5)
    return net.eval()


def conv_bn() -> nn.Module:
    torch.manual_seed(22)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        _stats_(nn.BatchNorm2d(4)),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, N_OUT),
        _stats_(nn.BatchNorm1d(N_OUT)),
        snn.Leaky(beta=0.85, init_hidden=True),
    )
    with torch.no_grad():
        net[0].weight.uniform_(-0.7, 0.7)
        net[5].weight.uniform_(-0.4, 0.4)
    return net.eval()


class TutorialBN(nn.Module):
    """snnTorch tutorial 5's network with a BatchNorm after each Linear, its own time loop in forward
    over ``x[step]`` (for ``num_steps`` steps, or ``x.size(0)`` when ``num_steps`` is None)."""

    def __init__(self, num_steps: int | None = T) -> None:
        super().__init__()
        self.num_steps = num_steps
        torch.manual_seed(23)
        self.fc1 = nn.Linear(N_IN, N_HID)
        self.bn1 = _stats_(nn.BatchNorm1d(N_HID))
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(N_HID, N_OUT)
        self.bn2 = _stats_(nn.BatchNorm1d(N_OUT))
        self.lif2 = snn.Leaky(beta=0.85)
        with torch.no_grad():
            self.fc1.weight.uniform_(-0.5, 0.5)
            self.fc2.weight.uniform_(-0.5, 0.5)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for step in range(x.size(0) if self.num_steps is None else self.num_steps):
            spk1, mem1 = self.lif1(self.bn1(self.fc1(x[step])), mem1)
            spk2, mem2 = self.lif2(self.bn2(self.fc2(spk1)), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec, dim=0), torch.stack(mem_rec, dim=0)


MODELS = {
    "mlp": (mlp_bn, (N_IN,)),
    "mlp_no_affine": (lambda: mlp_bn(affine=False), (N_IN,)),
    "mlp_no_layer_bias": (lambda: mlp_bn(bias=False), (N_IN,)),
    "conv": (conv_bn, IMG),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batchnorm_float_run_equals_snntorch(name: str) -> None:
    build, shape = MODELS[name]
    graph, _, _ = compare_with_snntorch(build(), _spikes(1, (T, B, *shape)))
    assert sum(isinstance(graph.op(n), BatchNorm) for n in graph) == 2


@pytest.mark.parametrize("num_steps", [T, None])
def test_batchnorm_in_a_time_loop_equals_forward(num_steps: int | None) -> None:
    net = TutorialBN(num_steps).eval()
    x = torch.as_tensor(_spikes(2, (T, B, N_IN)))
    with torch.no_grad():
        want = net(x)
    traced = trace_forward(net, x)
    got = traced.returned(snncompile.run_float(traced.graph, traced.sequence(x)))
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w.numpy())
    assert 0 < float(want[0].mean()) < 0.5


def test_fold_matches_the_float_model_to_float32_rounding() -> None:
    """The folded Linear computes the same function up to float32 rounding (torch rounds W x + b
    before normalizing, so only a tolerance holds here)."""
    net = mlp_bn()
    x = torch.as_tensor(_spikes(3, (B, N_IN)))
    graph = snncompile.trace(net, x)
    folded, notes = fold_batchnorm(graph)
    assert len(notes) == 2 and not any(isinstance(folded.op(n), BatchNorm) for n in folded)
    w, b = folded.op("linear_0").weight, folded.op("linear_0").bias
    with torch.no_grad():
        want = net[1](net[0](x)).numpy()
    np.testing.assert_allclose(x.numpy() @ w.T + b, want, rtol=0, atol=1e-5)


def test_ptq_notes_every_fold() -> None:
    x = _spikes(4, (T, B, N_IN))
    prog = snncompile.compile(mlp_bn(), calibration=x)
    folds = [n for n in prog.notes if "folded into" in n]
    assert folds == [
        "batchnorm_1: folded into linear_0 (weights and bias scaled per output channel)",
        "batchnorm_4: folded into linear_3 (weights and bias scaled per output channel)",
    ]
    assert not prog.exact
    sim = prog.simulate(x)
    run = snncompile.run_float(prog.float_graph, x)
    agree = float(np.mean(sim.spikes == run.output))
    assert agree > 0.9, agree


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prepare_qat_folds_batchnorm_and_stays_exact(name: str) -> None:
    build, shape = MODELS[name]
    net = build()
    q = prepare_qat(net)
    assert not any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in q.modules())
    assert any(isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) for m in net.modules()), "float model changed"
    x = _spikes(5, (T, B, *shape))
    prog = snncompile.compile(q, example_input=torch.as_tensor(x[0]))
    assert prog.exact, prog.notes
    assert_bit_exact(prog, q, x, rates=None)
    # the fold keeps the function: the QAT model is close to the float model before training
    reset_snntorch_states(net)
    with torch.no_grad():
        first = net[0](torch.as_tensor(x[0]))
        want = net[1](first)
        got = q[0](torch.as_tensor(x[0]))
    assert float((got - want).abs().max()) < 0.05


def test_prepare_qat_folds_batchnorm_in_a_time_loop_forward() -> None:
    q = prepare_qat(TutorialBN())
    assert isinstance(q.bn1, nn.Identity) and isinstance(q.bn2, nn.Identity)
    x = torch.as_tensor(_spikes(6, (T, B, N_IN)))
    q.eval()
    with torch.no_grad():
        want = q(x)
    prog = snncompile.compile(q, example_input=x)
    assert prog.exact, prog.notes
    traced = trace_forward(q, x)
    sim = prog.simulate(traced.sequence(x))
    spk, mem = traced.returned(sim.run)
    assert np.array_equal(spk, want[0].numpy().astype(np.int64))
    frac = prog.graph.op(traced.outputs[1].node).mem.frac
    assert np.array_equal(mem, (want[1].numpy().astype(np.float64) * 2.0**frac).astype(np.int64))
    assert 0 < float(want[0].mean()) < 0.5


# ------------------------------------------------------------------------------------ refusals


def test_batchnorm_in_training_mode_is_refused() -> None:
    net = mlp_bn().train()
    with pytest.raises(
        UnsupportedModuleError, match=r"^module '1' \(BatchNorm1d\) is in training mode, .*model\.eval\(\)"
    ):
        snncompile.trace(net, torch.zeros(B, N_IN))


def test_batchnorm_without_running_stats_is_refused() -> None:
    net = nn.Sequential(
        nn.Linear(N_IN, N_HID),
        nn.BatchNorm1d(N_HID, track_running_stats=False),
        snn.Leaky(beta=0.9, init_hidden=True),
    ).eval()
    with pytest.raises(
        UnsupportedModuleError, match=r"^module '1' \(BatchNorm1d\) has track_running_stats=False"
    ):
        snncompile.trace(net, torch.zeros(B, N_IN))
    with pytest.raises(
        UnsupportedModuleError, match=r"^module '1' \(BatchNorm1d\) has track_running_stats=False"
    ):
        prepare_qat(net)


def test_batchnorm_of_the_wrong_rank_is_refused() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm1d(4), snn.Leaky(beta=0.9, init_hidden=True)).eval()
    with pytest.raises(
        UnsupportedModuleError,
        match=re.escape("module '1' (BatchNorm1d) receives a 4-d input (B, *(4, 8, 8)); expected 2-d or 3-d"),
    ):
        snncompile.trace(net, torch.zeros(B, *IMG))


def _bn_after_pool() -> nn.Module:
    torch.manual_seed(24)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.MaxPool2d(2),
        _stats_(nn.BatchNorm2d(4)),
        nn.Flatten(),
        nn.Linear(64, N_OUT),
        snn.Leaky(beta=0.9, init_hidden=True),
    ).eval()


def test_batchnorm_not_after_a_layer_runs_in_float_but_is_refused_by_quantization() -> None:
    x = _spikes(7, (T, B, *IMG))
    compare_with_snntorch(_bn_after_pool(), x, check_activity=False)
    with pytest.raises(
        QuantizationError,
        match=r"^node 'batchnorm_3' \(batchnorm, module '3'\) follows a maxpool2d; only a BatchNorm directly after a Linear or Conv",
    ):
        snncompile.compile(_bn_after_pool(), calibration=x)
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module '3' \(BatchNorm2d\): prepare_qat folds a BatchNorm into the layer before it, but its input is not",
    ):
        prepare_qat(_bn_after_pool())


def test_batchnorm_in_a_forward_torch_fx_cannot_trace_is_refused_by_prepare_qat() -> None:
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module 'bn1' \(BatchNorm1d\): prepare_qat folds .* forward does not trace with torch\.fx \(.*\), so the layer feeding it is not known \(loop over a fixed num_steps",
    ):
        prepare_qat(TutorialBN(None))


def test_batchnorm_sharing_its_layer_is_refused() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(N_IN, N_HID)
            self.bn = _stats_(nn.BatchNorm1d(N_HID))
            self.lif = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x: Tensor) -> Tensor:
            h = self.fc(x)
            return self.lif(self.bn(h) + h)

    with pytest.raises(UnsupportedModuleError, match=r"^module 'bn' \(BatchNorm1d\): prepare_qat folds"):
        prepare_qat(Shared().eval())


# ------------------------------------------------------------------------------------------ Conv1d
# The IR has no 1-d layers (they would need a reshape op that the integer engine does not have), so
# nn.Conv1d / MaxPool1d / AvgPool1d are refused naming their 2-d form over (C, 1, L); that form is
# checked here to compute what the 1-d model computes.

AUDIO = (2, 24)  # (C, L) per step


def conv1d_net() -> nn.Module:
    torch.manual_seed(24)
    net = nn.Sequential(
        nn.Conv1d(2, 4, 5, padding=2),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.MaxPool1d(2),
        nn.Conv1d(4, 3, 3, stride=2),
        snn.Leaky(beta=0.85, init_hidden=True),
        nn.Flatten(),
        nn.Linear(3 * 5, N_OUT),
        snn.Leaky(beta=0.8, init_hidden=True),
    )
    with torch.no_grad():
        net[0].weight.uniform_(-0.8, 0.8)
        net[3].weight.uniform_(-0.6, 0.6)
        net[6].weight.uniform_(-0.6, 0.6)
    return net.eval()


def as_conv2d(net: nn.Module) -> nn.Module:
    """The refusal's advice followed: each 1-d layer as its 2-d form with a (1, k) kernel, same weights."""
    layers: list[nn.Module] = []
    for m in net:
        if isinstance(m, nn.Conv1d):
            c = nn.Conv2d(
                m.in_channels, m.out_channels, (1, m.kernel_size[0]), (1, m.stride[0]), (0, m.padding[0])
            )
            with torch.no_grad():
                c.weight.copy_(m.weight.unsqueeze(2))
                c.bias.copy_(m.bias)
            layers.append(c)
        elif isinstance(m, nn.MaxPool1d):
            layers.append(nn.MaxPool2d((1, m.kernel_size)))
        else:
            layers.append(m)
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize(
    ("module", "pattern"),
    [
        (
            nn.Conv1d(2, 4, 5),
            r"^module '0' \(torch\.nn\.modules\.conv\.Conv1d\) is not supported; write nn\.Conv2d\(C_in, C_out, "
            r"\(1, k\)\) with weight conv1d\.weight\.unsqueeze\(2\) over inputs shaped \(C, 1, L\), which computes "
            r"the same \(the IR has no 1-d layers\)$",
        ),
        (
            nn.MaxPool1d(2),
            r"^module '0' \(.*MaxPool1d\) is not supported; write nn\.MaxPool2d\(\(1, k\)\) over ",
        ),
        (
            nn.AvgPool1d(2),
            r"^module '0' \(.*AvgPool1d\) is not supported; write nn\.AvgPool2d\(\(1, k\)\) over ",
        ),
    ],
    ids=["Conv1d", "MaxPool1d", "AvgPool1d"],
)
def test_one_d_layers_are_refused_naming_their_two_d_form(module: nn.Module, pattern: str) -> None:
    net = nn.Sequential(module, snn.Leaky(beta=0.9, init_hidden=True))
    with pytest.raises(UnsupportedModuleError, match=pattern):
        snncompile.trace(net, torch.zeros(B, *AUDIO))


def test_the_two_d_form_of_a_conv1d_network_computes_what_it_computes() -> None:
    """Every neuron's spikes and membranes of the Conv2d form on x[..., None, :] equal those of the
    Conv1d model's own forward on x, bit for bit."""
    net = conv1d_net()
    x = _spikes(25, (T, B, *AUDIO), 0.4)
    ref = snntorch_reference(net, x)
    graph = snncompile.trace(as_conv2d(net), torch.zeros(B, AUDIO[0], 1, AUDIO[1]))
    run = snncompile.run_float(graph, x[:, :, :, None, :])
    for path in ("1", "4", "7"):
        node = neuron_node(graph, path)
        want_spk, want_mem = ref.spikes[path], ref.states[path]["mem"]
        assert_exact(run.spikes[node].reshape(want_spk.shape), want_spk, f"spikes of {path}")
        assert_exact(run.states[node]["mem"].reshape(want_mem.shape), want_mem, f"mem of {path}")
        assert 0 < want_spk.mean() < 1, f"layer {path} is silent or saturated"
