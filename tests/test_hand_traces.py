"""Hand-computed neuron traces: each expected value is worked out by hand in the comments.

Every model is ``nn.Sequential(nn.Linear(1, 1, bias=False) with weight 1.0, <one neuron>)``, so the
neuron's input current is exactly the input value. The inputs are chosen so that every intermediate
value is exactly representable in float32 (halves, quarters, ...), and the traces are asserted with
exact equality on BOTH sides: snncompile's float interpreter and snnTorch itself (via
``conftest.compare_with_snntorch``, which also asserts the two agree bit for bit).

Notation: ``U[t]`` membrane after step t, ``I[t]`` synaptic current, ``S[t]`` spike, ``R[t] =
H(U[t-1] - thr)`` the (delayed) reset signal, ``H(z) = 1 if z > 0`` (strict).
"""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from conftest import Reference, compare_with_snntorch, neuron_node
from snntorch.functional import quant
from torch import nn

import snncompile

F32 = np.float32


def _identity_linear() -> nn.Linear:
    fc = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        fc.weight.fill_(1.0)
    return fc


def _net(neuron: nn.Module) -> nn.Sequential:
    return nn.Sequential(_identity_linear(), neuron)


def _run(net: nn.Module, *samples: list[float]) -> tuple[snncompile.Run, Reference, str, str]:
    """Runs one or more input sequences (one per batch sample) through both sides."""
    x = np.asarray(samples, dtype=F32).T[..., None]  # (T, B, 1)
    graph, run, ref = compare_with_snntorch(net, x, check_activity=False)
    path = [p for p in ref.spikes][-1]
    return run, ref, neuron_node(graph, path), path


def _expect(
    run: snncompile.Run, ref: Reference, node: str, path: str, b: int = 0, **expected: list[float]
) -> None:
    """Asserts the hand values of sample ``b`` for ``spk`` / ``mem`` / ``syn``, on both sides."""
    for key, values in expected.items():
        want = np.asarray(values, dtype=F32)
        ours = run.spikes[node] if key == "spk" else run.states[node][key]
        theirs = ref.spikes[path] if key == "spk" else ref.states[path][key]
        got_ours, got_theirs = ours[:, b, 0], theirs[:, b, 0]
        assert np.array_equal(got_theirs, want), (
            f"snnTorch {key} {got_theirs.tolist()} != hand {want.tolist()}"
        )
        assert np.array_equal(got_ours, want), f"snncompile {key} {got_ours.tolist()} != hand {want.tolist()}"


# ---------------------------------------------------------------------------------------- (a)


def test_tie_at_threshold_does_not_fire() -> None:
    """Leaky beta=0.5, thr=1, subtract. A membrane exactly at the threshold does not fire; one ulp
    above does, one ulp below does not.

    sample 0, x = [1, 0.5]:      U = [1, 0.5*1 + 0.5 = 1]            S = [0, 0] (ties twice)
    sample 1, x = [1+2^-23, 0]:  U0 = 1+2^-23 > 1 -> S0 = 1;
                                 U1 = 0.5*(1+2^-23) - 1 = -0.5 + 2^-24   (exact: ulp below 0.5 is 2^-25)
    sample 2, x = [1-2^-24, 0]:  U0 = 1-2^-24 -> S0 = 0;  U1 = 0.5 - 2^-25
    """
    up, down = float(np.nextafter(F32(1), F32(2))), float(np.nextafter(F32(1), F32(0)))
    assert up == 1 + 2**-23 and down == 1 - 2**-24
    net = _net(snn.Leaky(beta=0.5, threshold=1.0, init_hidden=True))
    run, ref, node, path = _run(net, [1.0, 0.5], [up, 0.0], [down, 0.0])
    _expect(run, ref, node, path, b=0, spk=[0, 0], mem=[1.0, 1.0])
    _expect(run, ref, node, path, b=1, spk=[1, 0], mem=[up, -0.5 + 2**-24])
    _expect(run, ref, node, path, b=2, spk=[0, 0], mem=[down, 0.5 - 2**-25])


@pytest.mark.parametrize("neuron", ["Synaptic", "RLeaky"])
def test_tie_rule_other_neurons(neuron: str) -> None:
    """The same strict rule for Synaptic (alpha=beta=0.5) and RLeaky (V=0): x = [1, 0] reaches U0 = 1
    exactly (I0 = 1, U0 = 0 + I0) without firing."""
    m = (
        snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True)
        if neuron == "Synaptic"
        else snn.RLeaky(beta=0.5, all_to_all=False, V=0.0, init_hidden=True)
    )
    run, ref, node, path = _run(_net(m), [1.0, 0.0])
    _expect(run, ref, node, path, spk=[0, 0])
    assert run.states[node]["mem"][0, 0, 0] == 1.0


# ---------------------------------------------------------------------------------------- (b)


def test_leaky_delayed_subtract_reset() -> None:
    """Leaky beta=0.5, thr=1, subtract, x = [1.5, 0, 0]:
    U0 = 1.5 -> S0 = 1;  U1 = 0.5*1.5 + 0 - R1*thr = 0.75 - 1 = -0.25;  U2 = 0.5*(-0.25) = -0.125."""
    run, ref, node, path = _run(_net(snn.Leaky(beta=0.5, threshold=1.0, init_hidden=True)), [1.5, 0, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], mem=[1.5, -0.25, -0.125])


def test_leaky_delayed_zero_reset_keeps_the_input() -> None:
    """Leaky beta=0.5, thr=1, zero, x = [1.5, 0.3, 0]: the reset zeroes the OLD membrane, then the new
    input is added. U0 = 1.5 -> S0 = 1;  U1 = 0.5*(1-R1)*1.5 + 0.3 = 0.3;  U2 = 0.5*0.3 = 0.15.
    (0.3 is float32(0.3); halving is exact, so U2 == float32(0.15).)"""
    assert F32(0.3) / 2 == F32(0.15)
    net = _net(snn.Leaky(beta=0.5, threshold=1.0, init_hidden=True, reset_mechanism="zero"))
    run, ref, node, path = _run(net, [1.5, 0.3, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], mem=[1.5, F32(0.3), F32(0.15)])


def test_leaky_no_reset() -> None:
    """Leaky beta=0.5, reset none, x = [1.5, 0, 0]: U = [1.5, 0.75, 0.375], only S0 fires."""
    net = _net(snn.Leaky(beta=0.5, init_hidden=True, reset_mechanism="none"))
    run, ref, node, path = _run(net, [1.5, 0, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], mem=[1.5, 0.75, 0.375])


def test_leaky_graded_spikes() -> None:
    """Leaky beta=0.5, graded_spikes_factor=0.25, x = [1.5, 0, 2]: the spike is 0.25, the reset still
    subtracts thr (not thr*0.25). U = [1.5, 0.75 - 1 = -0.25, -0.125 + 2 = 1.875], S = [0.25, 0, 0.25]."""
    net = _net(snn.Leaky(beta=0.5, init_hidden=True, graded_spikes_factor=0.25))
    run, ref, node, path = _run(net, [1.5, 0, 2])
    _expect(run, ref, node, path, spk=[0.25, 0, 0.25], mem=[1.5, -0.25, 1.875])


# ---------------------------------------------------------------------------------------- (c)


@pytest.mark.parametrize("v", [0.0, 1.0])
def test_rleaky_zero_reset_drops_the_whole_update(v: float) -> None:
    """RLeaky beta=0.5, thr=1, zero, one-to-one V, x = [1.5, 0.3, 0]. Unlike Leaky, RLeaky's zero
    reset subtracts the whole new value: U1 = base - R1*base with base = 0.5*1.5 + 0.3 + V*S0.
    U0 = 1.5 -> S0 = 1;  U1 = base - base = 0 (any V);  U2 = 0.5*0 + 0 + V*S1 = 0 (S1 = 0)."""
    net = _net(
        snn.RLeaky(beta=0.5, threshold=1.0, all_to_all=False, V=v, init_hidden=True, reset_mechanism="zero")
    )
    run, ref, node, path = _run(net, [1.5, 0.3, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], mem=[1.5, 0.0, 0.0])


def test_rleaky_one_to_one_recurrence_subtract() -> None:
    """RLeaky beta=0.5, V=0.5, subtract, x = [1.5, 0, 0]:
    U0 = 1.5 -> S0 = 1;  U1 = 0.75 + 0 + V*S0 - thr = 0.75 + 0.5 - 1 = 0.25;  U2 = 0.125 + 0 + V*0."""
    net = _net(snn.RLeaky(beta=0.5, all_to_all=False, V=0.5, init_hidden=True))
    run, ref, node, path = _run(net, [1.5, 0, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], mem=[1.5, 0.25, 0.125])


def test_rleaky_recurrence_feeds_back_the_graded_spike() -> None:
    """RLeaky beta=0.5, V=1, graded_spikes_factor=0.5 set on the buffer, x = [1.5, 0, 0]:
    S0 = 0.5 (graded);  U1 = 0.75 + 0 + V*S0 - thr = 0.75 + 0.5 - 1 = 0.25 (a binary feedback would
    give 0.75);  U2 = 0.125."""
    m = snn.RLeaky(beta=0.5, all_to_all=False, V=1.0, init_hidden=True)
    m.graded_spikes_factor = torch.tensor(0.5)
    run, ref, node, path = _run(_net(m), [1.5, 0, 0])
    _expect(run, ref, node, path, spk=[0.5, 0, 0], mem=[1.5, 0.25, 0.125])


def test_rleaky_dense_recurrence() -> None:
    """RLeaky with a dense 1x1 recurrent layer, weight 0.25 and bias -0.125, beta=0.5, x = [1.5, 0, 0]:
    the recurrent bias is added every step, spike or not.
    U0 = 0 + 1.5 + (0.25*0 - 0.125) = 1.375 -> S0 = 1
    U1 = 0.6875 + 0 + (0.25*1 - 0.125) - 1 = -0.1875
    U2 = -0.09375 + 0 + (0 - 0.125) = -0.21875"""
    m = snn.RLeaky(beta=0.5, linear_features=1, init_hidden=True)
    with torch.no_grad():
        m.recurrent.weight.fill_(0.25)
        m.recurrent.bias.fill_(-0.125)
    run, ref, node, path = _run(_net(m), [1.5, 0, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], mem=[1.375, -0.1875, -0.21875])


# ---------------------------------------------------------------------------------------- (d)


def test_synaptic_zero_reset() -> None:
    """Synaptic alpha=beta=0.5, thr=1, zero, x = [1.5, 0.3, 0]:
    t0: I = 1.5, U = 0 + I = 1.5 -> S = 1
    t1: I = 0.5*1.5 + 0.3 = 1.05, base U = 0.5*1.5 + 1.05 = 1.8, U = base - R*base = 0, S = 0
        (the synaptic current is NOT reset)
    t2: I = 0.5*1.05 = 0.525, U = 0.5*0 + 0.525 = 0.525, S = 0
    In float32, I1 = fl(0.75 + fl(0.3)) (one rounding, within 1e-7 of 1.05) and I2 = I1/2 exactly."""
    i1 = F32(0.75) + F32(0.3)
    assert abs(float(i1) - 1.05) < 1e-7
    net = _net(snn.Synaptic(alpha=0.5, beta=0.5, threshold=1.0, init_hidden=True, reset_mechanism="zero"))
    run, ref, node, path = _run(net, [1.5, 0.3, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], syn=[1.5, i1, i1 / 2], mem=[1.5, 0.0, i1 / 2])


def test_synaptic_subtract_reset() -> None:
    """Synaptic alpha=beta=0.5, subtract, x = [1.5, 0, 0]:
    t0: I = 1.5, U = 1.5 -> S = 1;  t1: I = 0.75, U = 0.75 + 0.75 - 1 = 0.5;
    t2: I = 0.375, U = 0.25 + 0.375 = 0.625."""
    net = _net(snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True))
    run, ref, node, path = _run(net, [1.5, 0, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], syn=[1.5, 0.75, 0.375], mem=[1.5, 0.5, 0.625])


def test_rsynaptic_zero_reset_keeps_the_current() -> None:
    """RSynaptic alpha=beta=0.5, V=0.5 one-to-one, zero, x = [1.5, 0, 0]:
    t0: I = 1.5, U = 1.5 -> S = 1
    t1: I = 0.75 + 0 + V*S0 = 1.25, base U = 0.75 + 1.25 = 2, U = 2 - R*2 = 0
    t2: I = 0.625 + 0 + V*0 = 0.625, U = 0 + 0.625 = 0.625."""
    net = _net(
        snn.RSynaptic(alpha=0.5, beta=0.5, all_to_all=False, V=0.5, init_hidden=True, reset_mechanism="zero")
    )
    run, ref, node, path = _run(net, [1.5, 0, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], syn=[1.5, 1.25, 0.625], mem=[1.5, 0.0, 0.625])


# ---------------------------------------------------------------------------------------- (e)


def test_leaky_immediate_subtract_reset() -> None:
    """Leaky beta=1, thr=1, subtract, reset_delay=False, x = [3.5, 0, 0, 0, 0]. After firing, snnTorch
    subtracts (S/gsf - R) * thr at once, where R is the delayed reset already applied this step:
    t0: U = 3.5, S = 1, R = 0 -> U = 3.5 - 1 = 2.5
    t1: R = H(2.5-1) = 1: U = 2.5 - 1 = 1.5, S = 1 -> U -= (1-1)*1 -> 1.5
    t2: R = 1: U = 1.5 - 1 = 0.5, S = 0 -> U -= (0-1)*1 -> 1.5 (the correction undoes the reset)
    t3, t4: the same as t2: U = 1.5, no spike.  Two spikes in all."""
    net = _net(snn.Leaky(beta=1.0, threshold=1.0, init_hidden=True, reset_delay=False))
    run, ref, node, path = _run(net, [3.5, 0, 0, 0, 0])
    _expect(run, ref, node, path, spk=[1, 1, 0, 0, 0], mem=[2.5, 1.5, 1.5, 1.5, 1.5])
    assert run.spikes[node].sum() == 2


def test_leaky_immediate_zero_reset() -> None:
    """Leaky beta=1, thr=1, zero, reset_delay=False, x = [1.5, 0.25, 0]:
    t0: U = 1.5, S = 1, R = 0 -> U = 1.5 - (1-0)*1.5 = 0
    t1: R = H(0-1) = 0: U = 0 + 0.25 = 0.25, S = 0;  t2: U = 0.25."""
    net = _net(snn.Leaky(beta=1.0, init_hidden=True, reset_mechanism="zero", reset_delay=False))
    run, ref, node, path = _run(net, [1.5, 0.25, 0])
    _expect(run, ref, node, path, spk=[1, 0, 0], mem=[0.0, 0.25, 0.25])


def test_synaptic_immediate_subtract_reset() -> None:
    """Synaptic alpha=0.5, beta=0.5, subtract, reset_delay=False, x = [2, 0, 0]:
    t0: I = 2, U = 2, S = 1 -> U = 2 - 1 = 1
    t1: R = H(1-1) = 0 (tie): I = 1, U = 0.5 + 1 = 1.5, S = 1 -> U = 0.5
    t2: R = 0: I = 0.5, U = 0.25 + 0.5 = 0.75, S = 0."""
    net = _net(snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True, reset_delay=False))
    run, ref, node, path = _run(net, [2, 0, 0])
    _expect(run, ref, node, path, spk=[1, 1, 0], syn=[2, 1, 0.5], mem=[1, 0.5, 0.75])


# ---------------------------------------------------------------------------------------- (f)


def _parallel(beta: float, bias: bool, **kw: object) -> snn.LeakyParallel:
    m = snn.LeakyParallel(1, 1, beta=beta, bias=bias, **kw)
    with torch.no_grad():
        m.rnn.weight_ih_l0.fill_(1.0)
    return m


def test_leaky_parallel_relu_floor_and_no_reset() -> None:
    """LeakyParallel(1, 1, beta=0.5, bias=False), W_ih = 1: U[t] = relu(x[t] + 0.5*U[t-1]), no reset.
    x = [4, 0, 0, -2, 1.25, 0]:
    U = [4, 2, 1, relu(0.5 - 2) = 0, 1.25, 0.625];  S = H(U - 1) = [1, 1, 0 (tie), 0, 1, 0]:
    it fires on every step while above threshold (no reset pulls it down) and never goes negative."""
    net = nn.Sequential(_parallel(0.5, bias=False))
    run, ref, node, path = _run(net, [4, 0, 0, -2, 1.25, 0])
    _expect(run, ref, node, path, spk=[1, 1, 0, 0, 1, 0], mem=[4, 2, 1, 0, 1.25, 0.625])


def test_leaky_parallel_biases_and_graded_spikes() -> None:
    """LeakyParallel beta=0.5 with b_ih = 0.25, b_hh = -0.5 and graded_spikes_factor=0.5:
    U[t] = relu(x + 0.25 + 0.5*U[t-1] - 0.5), x = [2.25, 0, 0, 0]:
    U0 = 2 (S = 0.5);  U1 = relu(0.25 + 1 - 0.5) = 0.75;  U2 = relu(0.25 + 0.375 - 0.5) = 0.125;
    U3 = relu(0.25 + 0.0625 - 0.5) = 0 (the floor)."""
    m = _parallel(0.5, bias=True, graded_spikes_factor=0.5)
    with torch.no_grad():
        m.rnn.bias_ih_l0.fill_(0.25)
        m.rnn.bias_hh_l0.fill_(-0.5)
    run, ref, node, path = _run(nn.Sequential(m), [2.25, 0, 0, 0])
    _expect(run, ref, node, path, spk=[0.5, 0, 0, 0], mem=[2, 0.75, 0.125, 0])


# ---------------------------------------------------------------------------------------- (g)


def test_state_quant_levels() -> None:
    """Leaky beta=0.5 with state_quant(num_bits=2, uniform=True, threshold=1.0): the 4 levels are
    linspace(-1, 1.2, 4) = [-1, -0.2667, 0.4667, 1.2] (as torch computes them in float32).
    x = [0.5, 0, 0.9]:
    t0: v = 0.5 -> nearest level 0.4667 (no spike)
    t1: v = 0.2333 -> nearest 0.4667 (distance 0.233, vs 0.5 to -0.2667)
    t2: v = 0.2333 + 0.9 = 1.1333 -> 1.2 -> spike."""
    levels = torch.linspace(-1.0, 1.2, 4).numpy()
    assert np.allclose(levels, [-1, -0.26667, 0.46667, 1.2], atol=1e-4)
    sq = quant.state_quant(num_bits=2, uniform=True, threshold=1.0)
    net = _net(snn.Leaky(beta=0.5, threshold=1.0, init_hidden=True, state_quant=sq))
    run, ref, node, path = _run(net, [0.5, 0, 0.9])
    _expect(run, ref, node, path, spk=[0, 0, 1], mem=[levels[2], levels[2], levels[3]])
