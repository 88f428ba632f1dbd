"""QAT completeness: graded spikes, current inputs and snnTorch state_quant tables.

Contract under test: ``prepare_qat`` keeps a (learned) graded-spike factor on its grid, so the QAT
model with graded spikes is still exact; with ``input_frac`` it puts current inputs on the target's
input codes, so the QAT model fed real-valued currents equals the compiled program fed
``program.quantize_input(currents)``, bit for bit; an snnTorch ``state_quant`` table that is not a
dyadic uniform grid is refused with one line, and compiled only when the caller opts in
(``approximate_state_quant=True``), with notes giving the measured error and spike agreement.

The references are the QAT torch models themselves (``test_qat_exact.qat_reference``) and snnTorch's
own level tables; nothing expected is computed with snncompile.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import snntorch as snn
import torch
from conftest import reset_snntorch_states
from snncompile.quant import InputQuant, prepare_qat
from snntorch.functional import quant
from test_qat_exact import assert_bit_exact, neuron_node, qat_reference
from torch import nn

import snncompile
from snncompile import QuantizationError

T = 20
B = 4
N_IN = 16
N_HID = 24
N_OUT = 6


def _spikes(seed: int, shape: tuple[int, ...], p: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


def _mlp(hidden: nn.Module, gain: float = 0.5, out_gain: float = 0.6) -> nn.Module:
    torch.manual_seed(31)
    net = nn.Sequential(
        nn.Linear(N_IN, N_HID), hidden, nn.Linear(N_HID, N_OUT), snn.Leaky(beta=0.8, init_hidden=True)
    )
    with torch.no_grad():
        net[0].weight.uniform_(-gain, gain)
        net[2].weight.uniform_(-out_gain, out_gain)
    return net.eval()


# --------------------------------------------------------------------------------- graded spikes


@pytest.mark.parametrize("learn", [False, True])
def test_graded_spike_factor_is_kept_on_its_grid(learn: bool) -> None:
    """A factor of 0.3 (learned or fixed) is off every short grid; prepare_qat keeps it on 2^-8."""
    hidden = snn.Leaky(beta=0.9, init_hidden=True, graded_spikes_factor=0.3, learn_graded_spikes_factor=learn)
    q = prepare_qat(_mlp(hidden, out_gain=1.5))
    factor = float(q[1].graded_spikes_factor.detach())
    assert factor == 77 / 256  # round(0.3 * 256) / 256
    x = _spikes(1, (T, B, N_IN))
    prog = snncompile.compile(q, example_input=torch.as_tensor(x[0]))
    assert prog.exact, prog.notes
    assert prog.graph.op(neuron_node(prog.graph, "1")).graded_frac == 8
    assert_bit_exact(prog, q, x)


def test_graded_spike_factor_stays_on_its_grid_while_training() -> None:
    hidden = snn.Leaky(beta=0.9, init_hidden=True, graded_spikes_factor=0.3, learn_graded_spikes_factor=True)
    q = prepare_qat(_mlp(hidden, out_gain=1.5)).train()
    opt = torch.optim.Adam(q.parameters(), lr=0.01)
    x = torch.as_tensor(_spikes(2, (T, B, N_IN)))
    for _ in range(3):
        reset_snntorch_states(q)
        loss = torch.stack([q(x[t]) for t in range(T)]).sum() + q[1].graded_spikes_factor.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    factor = float(q[1].graded_spikes_factor.detach())
    assert factor != 77 / 256 and factor * 256 == round(factor * 256)
    prog = snncompile.compile(q.eval(), example_input=x[0])
    assert prog.exact, prog.notes
    assert_bit_exact(prog, q, x.numpy(), rates=None)


# ---------------------------------------------------------------------------------- current inputs


def _currents(seed: int, shape: tuple[int, ...], scale: float = 1.5) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def test_current_inputs_are_quantized_and_exact() -> None:
    """QAT model on raw currents == program on quantize_input(currents), spikes and membranes."""
    q = prepare_qat(_mlp(snn.Leaky(beta=0.9, init_hidden=True), gain=0.3), input_frac=4)
    assert isinstance(q.qat_input, InputQuant)
    assert "qat_input" not in dict(q.named_children()) and list(q.state_dict()) == list(
        prepare_qat(_mlp(snn.Leaky(beta=0.9, init_hidden=True))).state_dict()
    )
    x = _currents(3, (T, B, N_IN))
    x[0, 0, :3] = [100.0, -100.0, 0.03125]  # saturating codes and a tie (0.5 LSB), rounded to even
    prog = snncompile.compile(q, example_input=torch.as_tensor(x[0]))
    assert prog.exact, prog.notes
    assert prog.input_frac == 4 and prog.input_max == 128
    assert prog.ranges.verdict == "float32-exact"
    want_spk, want_states = qat_reference(q, x)
    sim = prog.simulate(prog.quantize_input(x))
    for path in ("1", "3"):
        node = neuron_node(prog.graph, path)
        assert np.array_equal(sim.run.spikes[node], want_spk[path].astype(np.int64)), path
        frac = prog.graph.op(node).mem.frac
        assert np.array_equal(
            sim.run.states[node]["mem"],
            (want_states[path]["mem"].astype(np.float64) * 2.0**frac).astype(np.int64),
        ), path
        assert 0.01 < float(want_spk[path].mean()) < 0.5, path


def test_without_input_frac_currents_are_not_exact() -> None:
    """The model without an input quantizer sees raw currents; the program cannot (it is told so)."""
    q = prepare_qat(_mlp(snn.Leaky(beta=0.9, init_hidden=True), gain=0.3))
    x = _currents(4, (T, B, N_IN))
    prog = snncompile.compile(q, calibration=x)
    assert any(n.startswith("input: input currents are rounded") for n in prog.notes)


def test_input_quantizer_wider_than_the_target_is_refused() -> None:
    q = prepare_qat(_mlp(snn.Leaky(beta=0.9, init_hidden=True)), input_frac=4)
    narrow = snncompile.targets.Target("narrow", input_bits=4)
    with pytest.raises(
        QuantizationError,
        match=re.escape(
            "input: the model's input quantizer has codes [-127, 127]; target 'narrow' takes 4-bit inputs [-7, 7]"
        ),
    ):
        snncompile.compile(q, narrow, example_input=torch.zeros(B, N_IN))


# ---------------------------------------------------------------------------- state_quant tables


def _table_model(sq: object) -> nn.Module:
    torch.manual_seed(33)
    net = nn.Sequential(
        nn.Linear(N_IN, N_HID),
        snn.Leaky(beta=0.875, init_hidden=True, state_quant=sq),
        nn.Linear(N_HID, N_OUT),
        snn.Leaky(beta=0.75, init_hidden=True, state_quant=sq),
    )
    with torch.no_grad():
        net[0].weight.uniform_(-0.5, 0.5)
        net[2].weight.uniform_(-0.6, 0.6)
    return net.eval()


@pytest.mark.parametrize("uniform", [True, False])
def test_non_dyadic_state_quant_is_refused(uniform: bool) -> None:
    net = _table_model(quant.state_quant(num_bits=8, uniform=uniform))
    with pytest.raises(
        QuantizationError,
        match=r"^node 'lif_1': its mem state_quant is an snnTorch level table of 256 levels in .* not a dyadic uniform grid, so no fixed-point format reproduces it; .* approximate_state_quant=True \(--approximate-state-quant on the command line\)$",
    ):
        snncompile.compile(net, example_input=torch.zeros(B, N_IN))


def test_approximated_state_quant_reports_measured_error_and_agreement() -> None:
    net = _table_model(quant.state_quant(num_bits=8, uniform=True))
    x = _spikes(5, (T, B, N_IN))
    prog = snncompile.compile(net, calibration=x, approximate_state_quant=True)
    assert not prog.exact
    approx = [n for n in prog.notes if "state_quant table approximated" in n]
    assert len(approx) == 2
    m = re.fullmatch(
        r"lif_1: mem state_quant table approximated by (\S+): differs from it on ([\d.]+)% of its range, by up to ([\d.]+) LSB \(not bit-exact with the float model\)",
        approx[0],
    )
    assert m, approx[0]
    assert 0 < float(m.group(2)) <= 100 and 0 < float(m.group(3)) <= 2
    agree = [n for n in prog.notes if "spike agreement" in n]
    assert len(agree) == 2
    pct = float(re.search(r"([\d.]+)% on the calibration data", agree[0]).group(1))  # type: ignore[union-attr]
    assert 50 < pct <= 100


def test_dyadic_state_quant_table_is_read_exactly() -> None:
    """QAT_NOTES §5: thr=1, lower_limit=-1/128, upper_limit=0, 8 bits -> levels -127/128..128/128."""
    sq = quant.state_quant(num_bits=8, uniform=True, threshold=1, lower_limit=-1 / 128, upper_limit=0)
    net = _table_model(sq)
    x = _spikes(6, (T, B, N_IN))
    prog = snncompile.compile(net, example_input=torch.as_tensor(x[0]))
    weight_notes = [n for n in prog.notes if "state_quant" in n]
    assert weight_notes == []
    op = prog.graph.op(neuron_node(prog.graph, "1"))
    assert (op.mem.frac, op.mem.lo, op.mem.hi, op.mem.rounding) == (7, -127, 128, "half_down")
