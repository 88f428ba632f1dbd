"""QAT models: the float32 forward of ``prepare_qat(model)`` equals the integer interpreter, bit for bit.

Contract under test (QAT_NOTES.md §4): a model prepared with :func:`snncompile.quant.prepare_qat`
computes, in plain float32 torch, only values on power-of-two grids. ``snncompile.compile`` reads it
back *exactly* (``prog.notes == ()``) and the integer interpreter reproduces it: at every time step the
spikes of every neuron layer are identical and ``float_mem * 2**frac == int_mem`` (and ``syn``).

The reference is always the QAT torch model itself, run step by step under ``torch.no_grad()`` (or once
over the whole sequence for LeakyParallel models), with the states read by forward hooks
(``conftest.snntorch_reference``); nothing expected is computed with snncompile.

Also: the equality survives a few Adam steps with surrogate gradients and a state_dict round trip, holds
for every rounding mode, neuron option and per-channel weight scales, and the range analysis says when
float32 is not enough (a float64 reference then still matches).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import torch
from brevitas.nn import QuantLinear
from conftest import neuron_node, neuron_paths, reset_snntorch_states, snntorch_reference
from snncompile.quant import FixedPoint, QuantLeakyParallel, prepare_qat
from snncompile.quant.fixed import Fixed
from torch import nn

import snncompile
from snncompile.targets import Target

T = 24
B = 3
N_IN = 20
N_HID = 24
N_OUT = 8
P_IN = 0.3  # input spike probability


# --------------------------------------------------------------------------------- models


def _scale_(layer: nn.Module, gain: float, bias_gain: float = 0.1) -> nn.Module:
    """Seeded uniform weights in [-gain, gain], biases in [-bias_gain, bias_gain] (all layers built
    inside a ``torch.manual_seed`` block, so each model is deterministic)."""
    with torch.no_grad():
        layer.weight.uniform_(-gain, gain)
        if getattr(layer, "bias", None) is not None:
            layer.bias.uniform_(-bias_gain, bias_gain)
    return layer


def mlp(reset: str = "subtract") -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        _scale_(nn.Linear(N_IN, N_HID), 0.6),
        snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism=reset),
        _scale_(nn.Linear(N_HID, N_OUT), 0.5),
        snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism=reset),
    )


def conv_net(pool: str = "max") -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        _scale_(nn.Conv2d(1, 4, 3), 0.6),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2),
        nn.Flatten(),
        _scale_(nn.Linear(4 * 3 * 3, N_OUT), 0.7 if pool == "max" else 1.2),
        snn.Leaky(beta=0.85, init_hidden=True),
    )


def rsynaptic_dense() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(
        _scale_(nn.Linear(N_IN, N_HID), 0.3),
        snn.RSynaptic(alpha=0.75, beta=0.875, linear_features=N_HID, init_hidden=True),
        _scale_(nn.Linear(N_HID, N_OUT), 0.4),
        snn.Leaky(beta=0.9, init_hidden=True),
    )
    _scale_(net[1].recurrent, 0.15)
    return net


def rsynaptic_one_to_one(per_neuron: bool) -> nn.Module:
    torch.manual_seed(4)
    v = torch.linspace(-0.5, 0.5, N_HID) if per_neuron else torch.tensor(0.5)
    return nn.Sequential(
        _scale_(nn.Linear(N_IN, N_HID), 0.25 if per_neuron else 0.12, bias_gain=0.02),
        snn.RSynaptic(alpha=0.5, beta=0.8, all_to_all=False, V=v, init_hidden=True),
        _scale_(nn.Linear(N_HID, N_OUT), 0.4),
        snn.Leaky(beta=0.9, init_hidden=True),
    )


def synaptic() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(
        _scale_(nn.Linear(N_IN, N_HID), 0.3),
        snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
        _scale_(nn.Linear(N_HID, N_OUT), 0.35),
        snn.Synaptic(alpha=0.6, beta=0.85, init_hidden=True),
    )


def rleaky() -> nn.Module:
    torch.manual_seed(6)
    net = nn.Sequential(
        _scale_(nn.Linear(N_IN, N_HID), 0.6),
        snn.RLeaky(beta=0.9, linear_features=N_HID, init_hidden=True),
        _scale_(nn.Linear(N_HID, N_OUT), 0.35),
        snn.Leaky(beta=0.9, init_hidden=True),
    )
    _scale_(net[1].recurrent, 0.3)
    return net


def leaky_parallel(bias: bool = True) -> nn.Module:
    """``Sequential(LeakyParallel(20, 16, beta=0.9), LeakyParallel(16, 4, beta=0.8))``; with ``bias`` (the
    snnTorch default) both ``rnn.bias_ih_l0`` and ``rnn.bias_hh_l0`` are set to small random values."""
    torch.manual_seed(7)
    net = nn.Sequential(
        snn.LeakyParallel(20, 16, beta=0.9, bias=bias), snn.LeakyParallel(16, 4, beta=0.8, bias=bias)
    )
    with torch.no_grad():
        net[0].rnn.weight_ih_l0.uniform_(-0.4, 0.3)
        net[1].rnn.weight_ih_l0.uniform_(-0.5, 0.45)
        if bias:
            for lp in net:
                lp.rnn.bias_ih_l0.uniform_(-0.05, 0.05)
                lp.rnn.bias_hh_l0.uniform_(-0.05, 0.05)
    return net


def _mlp_with(hidden: nn.Module, gain: float = 0.6, out: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        _scale_(nn.Linear(N_IN, N_HID), gain),
        hidden,
        _scale_(nn.Linear(N_HID, N_OUT), 0.5),
        out if out is not None else snn.Leaky(beta=0.8, init_hidden=True),
    )


def rleaky_conv() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        _scale_(nn.Conv2d(1, 4, 3), 0.6),
        snn.RLeaky(beta=0.9, conv2d_channels=4, kernel_size=3, init_hidden=True),
        nn.Flatten(),
        _scale_(nn.Linear(4 * 6 * 6, N_OUT), 0.3),
        snn.Leaky(beta=0.8, init_hidden=True),
    )


OPTION_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "leaky_immediate_subtract": (
        lambda: _mlp_with(snn.Leaky(beta=0.9, init_hidden=True, reset_delay=False)),
        (N_IN,),
    ),
    "leaky_immediate_zero": (
        lambda: _mlp_with(snn.Leaky(beta=0.9, init_hidden=True, reset_delay=False, reset_mechanism="zero")),
        (N_IN,),
    ),
    "leaky_no_reset": (
        lambda: _mlp_with(snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="none"), 0.2),
        (N_IN,),
    ),
    "leaky_learned_per_neuron": (
        lambda: _mlp_with(
            snn.Leaky(
                beta=torch.linspace(0.5, 0.95, N_HID),
                threshold=torch.linspace(0.5, 1.5, N_HID),
                learn_beta=True,
                learn_threshold=True,
                init_hidden=True,
            )
        ),
        (N_IN,),
    ),
    "leaky_graded": (
        lambda: _mlp_with(snn.Leaky(beta=0.9, init_hidden=True, graded_spikes_factor=0.5)),
        (N_IN,),
    ),
    "leaky_output_tuple": (
        lambda: _mlp_with(
            snn.Leaky(beta=0.9, init_hidden=True), out=snn.Leaky(beta=0.8, init_hidden=True, output=True)
        ),
        (N_IN,),
    ),
    "synaptic_zero": (
        lambda: _mlp_with(snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, reset_mechanism="zero"), 0.3),
        (N_IN,),
    ),
    "synaptic_immediate": (
        lambda: _mlp_with(snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, reset_delay=False), 0.25),
        (N_IN,),
    ),
    "rleaky_zero": (
        lambda: _mlp_with(
            snn.RLeaky(beta=0.9, linear_features=N_HID, init_hidden=True, reset_mechanism="zero")
        ),
        (N_IN,),
    ),
    "rleaky_one_to_one": (
        lambda: _mlp_with(snn.RLeaky(beta=0.9, all_to_all=False, V=0.25, init_hidden=True)),
        (N_IN,),
    ),
    "rleaky_conv": (rleaky_conv, (1, 8, 8)),
}
"""More neuron options (resets, immediate reset, learned per-neuron parameters, graded spikes, conv
recurrence), each in the hidden layer of a small MLP."""


def _spikes(seed: int, shape: tuple[int, ...], p: float = P_IN) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp_subtract": (lambda: mlp("subtract"), (N_IN,)),
    "mlp_zero": (lambda: mlp("zero"), (N_IN,)),
    "conv_maxpool": (lambda: conv_net("max"), (1, 8, 8)),
    "conv_avgpool": (lambda: conv_net("avg"), (1, 8, 8)),
    "rsynaptic_dense": (rsynaptic_dense, (N_IN,)),
    "rsynaptic_one_to_one_scalar": (lambda: rsynaptic_one_to_one(False), (N_IN,)),
    "rsynaptic_one_to_one_per_neuron": (lambda: rsynaptic_one_to_one(True), (N_IN,)),
    "synaptic": (synaptic, (N_IN,)),
    "rleaky": (rleaky, (N_IN,)),
    "leaky_parallel": (leaky_parallel, (N_IN,)),
    "leaky_parallel_no_bias": (lambda: leaky_parallel(bias=False), (N_IN,)),
}


# ------------------------------------------------------------------------------- reference


def _qat_paths(net: nn.Module) -> list[str]:
    return neuron_paths(net) + [n for n, m in net.named_modules() if isinstance(m, QuantLeakyParallel)]


@torch.no_grad()
def qat_reference(
    q: nn.Module, x: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Spikes and states of every neuron of the QAT model ``q`` run (float32, eval) on ``x[T, B, ...]``.

    Step-wise models go through ``conftest.snntorch_reference``. A QuantLeakyParallel model is called once
    on the whole sequence; its membrane is what its state quantizer returns at each step (it is applied
    exactly once per step there), captured by a hook on ``state_quant``.
    """
    lps = {n: m for n, m in q.named_modules() if isinstance(m, QuantLeakyParallel)}
    if not lps:
        ref = snntorch_reference(q, x)
        return ref.spikes, ref.states
    q.eval()
    spikes: dict[str, list[torch.Tensor]] = {p: [] for p in lps}
    mems: dict[str, list[torch.Tensor]] = {p: [] for p in lps}
    handles = []
    for p, m in lps.items():
        handles.append(m.register_forward_hook(lambda mod, a, out, p=p: spikes[p].append(out.clone())))
        handles.append(
            m.state_quant.register_forward_hook(lambda mod, a, out, p=p: mems[p].append(out.clone()))
        )
    try:
        q(torch.as_tensor(x))
    finally:
        for h in handles:
            h.remove()
    for p in lps:
        assert len(spikes[p]) == 1 and len(mems[p]) == x.shape[0], (p, len(spikes[p]), len(mems[p]))
    return (
        {p: s[0].numpy() for p, s in spikes.items()},
        {p: {"mem": torch.stack(mems[p]).numpy()} for p in lps},
    )


def _first_diff(got: np.ndarray, want: np.ndarray) -> str:
    if got.shape != want.shape:
        return f"shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    idx = tuple(int(i) for i in bad[0])
    return f"{len(bad)} of {got.size} differ; first at (t, b, ...) = {idx}: integer {got[idx]} vs float {want[idx]}"


def assert_bit_exact(
    prog: snncompile.Program,
    q: nn.Module,
    x: np.ndarray,
    rates: tuple[float, float] | None = (0.01, 0.35),
) -> dict[str, float]:
    """Runs the integer program and the QAT model on ``x``; asserts identical spikes and states at every
    step for every neuron layer; returns each layer's firing rate (asserted within ``rates``)."""
    ref_spikes, ref_states = qat_reference(q, x)
    sim = prog.simulate(x)
    run = sim.run
    paths = _qat_paths(q)
    assert paths, "no neurons found"
    nodes = {p: neuron_node(prog.graph, p) for p in paths}
    assert sorted(nodes.values()) == sorted(prog.graph.neurons())
    firing: dict[str, float] = {}
    for p, node in nodes.items():
        op = prog.graph.op(node)
        want_spk = ref_spikes[p]
        assert want_spk.dtype == np.float32
        # spike codes are s * graded on 2^-graded_frac (plain 0/1 spikes: graded 1, frac 0)
        want_codes = want_spk.astype(np.float64) * 2.0**op.graded_frac
        assert np.array_equal(want_codes, np.round(want_codes)), (
            f"{p}: spikes off the 2^-{op.graded_frac} grid"
        )
        got_spk = run.spikes[node]
        assert np.issubdtype(got_spk.dtype, np.integer)  # compact codes (int8 spikes) from the fast engine
        same = np.array_equal(got_spk, want_codes.astype(np.int64))
        assert same, f"spikes of {p!r} (node {node!r}): {_first_diff(got_spk, want_codes)}"
        for var, want in ref_states[p].items():
            fmt = getattr(op, var)
            got = run.states[node][var]
            assert np.issubdtype(got.dtype, np.integer)
            scaled = want.astype(np.float64) * 2.0**fmt.frac
            assert np.array_equal(scaled, np.round(scaled)), f"{var} of {p!r} is off the 2^-{fmt.frac} grid"
            same = np.array_equal(got, scaled.astype(np.int64))
            assert same, f"{var} of {p!r} (node {node!r}, 2^-{fmt.frac}): {_first_diff(got, scaled)}"
        firing[p] = float((want_spk != 0).mean())
        if rates is not None:
            lo, hi = rates
            assert lo <= firing[p] <= hi, (
                f"{p!r} fires at rate {firing[p]:.3f}, outside [{lo}, {hi}]: vacuous"
            )
    out = neuron_node(prog.graph, paths[-1])
    assert np.array_equal(sim.spikes, run.spikes[out])
    assert np.array_equal(sim.membrane, run.states[out]["mem"])
    return firing


def _compile(q: nn.Module, x: np.ndarray, target: Any = "default") -> snncompile.Program:
    prog = snncompile.compile(q, target, example_input=torch.as_tensor(x[0]))
    assert prog.notes == (), f"a QAT model must be read exactly, got notes {prog.notes}"
    assert prog.exact
    return prog


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", sorted(MODELS))
def test_qat_forward_equals_integer_run(name: str) -> None:
    build, in_shape = MODELS[name]
    x = _spikes(10, (T, B, *in_shape))
    q = prepare_qat(build())
    prog = snncompile.compile(q, example_input=torch.as_tensor(x[0]))
    try:
        assert_bit_exact(prog, q, x)
    except AssertionError as e:
        raise AssertionError(f"{e}\nquantize notes: {prog.notes}") from None
    assert prog.notes == (), f"a QAT model must be read exactly, got notes {prog.notes}"
    assert prog.exact
    assert prog.ranges.verdict == "float32-exact", prog.ranges
    # A second, independent input: the state is reset between runs on both sides.
    assert_bit_exact(prog, q, _spikes(11, (T, B + 1, *in_shape)), rates=None)


@pytest.mark.parametrize("name", sorted(OPTION_MODELS))
def test_qat_neuron_options_are_exact(name: str) -> None:
    build, in_shape = OPTION_MODELS[name]
    x = _spikes(14, (T, B, *in_shape))
    q = prepare_qat(build())
    prog = _compile(q, x)
    assert prog.ranges.verdict == "float32-exact"
    assert_bit_exact(prog, q, x)


@pytest.mark.parametrize("rounding", ["half_even", "half_up", "half_down", "trunc"])
def test_other_rounding_modes_are_exact(rounding: str) -> None:
    for build in (mlp, synaptic):
        tgt = Target(f"r_{rounding}", rounding=rounding)
        x = _spikes(13, (T, B, N_IN))
        q = prepare_qat(build(), tgt)
        prog = _compile(q, x, tgt)
        for node in prog.graph.neurons():
            op = prog.graph.op(node)
            assert {getattr(op, s).rounding for s in ("mem", "syn") if hasattr(op, s)} == {rounding}
        assert_bit_exact(prog, q, x)


def test_prepare_qat_leaves_the_float_model_alone() -> None:
    net = mlp()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    q = prepare_qat(net)
    assert q is not net
    assert type(net[0]) is nn.Linear and not hasattr(net[1].state_quant, "fmt")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert isinstance(q[0], QuantLinear)
    assert isinstance(q[1].state_quant, FixedPoint) and str(q[1].state_quant.fmt) == "s16.8"


def test_state_formats_follow_the_target() -> None:
    """Each neuron node's state format is the target's: s16.8 by default, s16.10 by hand (both
    float32-exact), and s24.16, whose decay products need more than float32's 24 bits (flagged)."""
    x = _spikes(12, (T, B, N_IN))
    cases = (
        ("default", 16, 8, "float32-exact"),
        (Target("fine", state=Fixed(16, 10)), 16, 10, "float32-exact"),
        (Target("wide", state=Fixed(24, 16)), 24, 16, "float64-exact"),
    )
    for tgt, width, frac, verdict in cases:
        q = prepare_qat(synaptic(), tgt)
        prog = _compile(q, x, tgt)
        for node in prog.graph.neurons():
            op = prog.graph.op(node)
            for fmt in (op.mem, op.syn):
                assert (fmt.frac, fmt.lo, fmt.hi) == (frac, -(1 << (width - 1)), (1 << (width - 1)) - 1)
        assert prog.ranges.verdict == verdict, (tgt, prog.ranges)
        if verdict == "float32-exact":
            assert_bit_exact(prog, q, x)


# ------------------------------------------------------------------------------- training


def _train(q: nn.Module, x: np.ndarray, steps: int = 4) -> list[float]:
    """A few Adam steps on MSE(output spike counts, target counts), surrogate gradients throughout."""
    xt = torch.as_tensor(x)
    target = torch.full((x.shape[1], N_OUT if not _is_lp(q) else 4), 4.0)
    opt = torch.optim.Adam(q.parameters(), lr=5e-3)
    q.train()
    losses = []
    for _ in range(steps):
        reset_snntorch_states(q)
        opt.zero_grad()
        out = q(xt) if _is_lp(q) else torch.stack([q(xt[t]) for t in range(xt.shape[0])])
        loss = ((out.sum(0) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    q.eval()
    return losses


def _is_lp(q: nn.Module) -> bool:
    return any(isinstance(m, QuantLeakyParallel) for m in q.modules())


def _weight_snapshot(q: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in q.named_parameters()}


@pytest.mark.parametrize(
    "name",
    ["mlp_subtract", "conv_avgpool", "rsynaptic_dense", "rleaky", "leaky_parallel", "leaky_parallel_no_bias"],
)
def test_exact_after_training_steps(name: str) -> None:
    build, in_shape = MODELS[name]
    x = _spikes(20, (T, B, *in_shape))
    q = prepare_qat(build())
    before = _weight_snapshot(q)
    prog0 = _compile(q, x)
    losses = _train(q, x)
    assert all(np.isfinite(losses))
    after = _weight_snapshot(q)
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed nothing"
    prog = _compile(q, x)
    assert prog.graph != prog0.graph, "the compiled graph did not follow the trained weights"
    # the quantizers survived training: still a QAT model, read exactly, and bit-exact
    assert_bit_exact(prog, q, x, rates=None)
    assert_bit_exact(prog, q, _spikes(21, (T, B, *in_shape)), rates=None)


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "name",
    ["mlp_zero", "conv_maxpool", "rsynaptic_one_to_one_per_neuron", "synaptic", "leaky_parallel"],
)
def test_state_dict_round_trip(name: str) -> None:
    build, in_shape = MODELS[name]
    x = _spikes(30, (T, B, *in_shape))
    q = prepare_qat(build())
    _train(q, x, steps=3)
    reset_snntorch_states(q)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    torch.manual_seed(999)  # a fresh model with other random weights
    fresh = prepare_qat(build())
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(0.01)
    result = fresh.load_state_dict(state)
    assert not result.missing_keys and not result.unexpected_keys
    prog = _compile(q, x)
    prog2 = _compile(fresh, x)
    assert prog2.graph == prog.graph
    assert_bit_exact(prog2, fresh, x, rates=None)


# --------------------------------------------------------------------------------- ranges


def _wide_mlp() -> nn.Module:
    torch.manual_seed(8)
    return nn.Sequential(
        _scale_(nn.Linear(N_IN, N_HID), 0.6),
        snn.Leaky(beta=0.9, init_hidden=True),
        _scale_(nn.Linear(N_HID, N_OUT), 0.5),
        snn.Leaky(beta=0.8, init_hidden=True),
    )


@torch.no_grad()
def _float64_reference(q: nn.Module, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The QAT model's own modules run in float64, layer by layer (snnTorch spikes come out float32, so
    they are cast back to float64 before the next layer)."""
    q64 = copy.deepcopy(q).double().eval()
    reset_snntorch_states(q64)
    spikes: dict[str, list[torch.Tensor]] = {}
    mems: dict[str, list[torch.Tensor]] = {}
    xt = torch.as_tensor(x, dtype=torch.float64)
    for t in range(x.shape[0]):
        h = xt[t]
        for name, layer in q64.named_children():
            h = layer(h)
            if isinstance(layer, snn.SpikingNeuron):
                assert layer.mem.dtype == torch.float64
                spikes.setdefault(name, []).append(h.clone())
                mems.setdefault(name, []).append(layer.mem.clone())
                h = h.double()
    return (
        {k: torch.stack(v).numpy() for k, v in spikes.items()},
        {k: torch.stack(v).numpy() for k, v in mems.items()},
    )


def test_float64_case_is_flagged_and_float64_reference_matches() -> None:
    tgt = Target("wide_state", state=Fixed(24, 16), decay_frac=8)
    x = _spikes(40, (32, 4, N_IN))
    q = prepare_qat(_wide_mlp(), tgt)
    prog = _compile(q, x, tgt)
    assert prog.ranges.verdict == "float64-exact"
    assert 24 < prog.ranges.bits <= 53
    run = prog.simulate(x).run
    spikes64, mems64 = _float64_reference(q, x)
    float32_differs = False
    for p, want_spk in spikes64.items():
        node = prog.graph.node_for_source(p)
        frac = prog.graph.op(node).mem.frac
        assert frac == 16
        assert np.array_equal(run.spikes[node], want_spk.astype(np.int64)), p
        scaled = mems64[p] * 2.0**frac
        assert np.array_equal(run.states[node]["mem"], scaled.astype(np.int64)), (
            f"{p}: {_first_diff(run.states[node]['mem'], scaled)}"
        )
        assert 0 < want_spk.mean() < 1
    # float32 is allowed to differ here (the decay product beta_int * mem needs up to 8 + 24 bits)
    _, states32 = qat_reference(q, x)
    for p in spikes64:
        node = prog.graph.node_for_source(p)
        scaled32 = states32[p]["mem"].astype(np.float64) * 2.0**16
        float32_differs |= not np.array_equal(run.states[node]["mem"], scaled32)
    print(f"float32 run differs from the integer run: {float32_differs}")


def test_default_target_is_float32_exact() -> None:
    x = _spikes(41, (T, B, N_IN))
    prog = _compile(prepare_qat(_wide_mlp()), x)
    assert prog.ranges.verdict == "float32-exact"
    assert prog.ranges.bits <= 24


def test_sixteen_bit_weights_with_fan_in_1024_need_float64() -> None:
    """16-bit weight codes summed over 1024 inputs can pass 2**24 LSB: flagged, 8-bit ones are not; the
    float64 run of the 16-bit QAT model still equals the integer run."""
    x = _spikes(42, (T, B, 1024))
    torch.manual_seed(9)
    net = nn.Sequential(nn.Linear(1024, 6, bias=False), snn.Leaky(beta=0.875, init_hidden=True))
    w16 = Target("w16", weight_bits=16)
    prog16 = _compile(prepare_qat(net, w16), x, w16)
    prog8 = _compile(prepare_qat(net), x)
    assert prog8.ranges.verdict == "float32-exact"
    assert prog16.ranges.verdict == "float64-exact"
    assert prog16.ranges.nodes[prog16.graph.node_for_source("0")].bits > 24
    q16 = prepare_qat(net, w16)
    spikes64, mems64 = _float64_reference(q16, x)
    run = prog16.simulate(x).run
    node = prog16.graph.node_for_source("1")
    assert np.array_equal(run.spikes[node], spikes64["1"].astype(np.int64))
    assert np.array_equal(run.states[node]["mem"], (mems64["1"] * 2.0**8).astype(np.int64))
    assert 0 < spikes64["1"].mean() < 1


@pytest.mark.parametrize("channels", ["equal_scales", "unequal_scales"])
def test_per_channel_target(channels: str) -> None:
    """``per_channel=True``: brevitas picks one power-of-two scale per output channel. Every channel's
    codes fit the 8-bit weights, so the model must compile exactly and match bit for bit, also when the
    channels' magnitudes differ (as a trained layer's do) and so their scales differ."""
    tgt = Target("per_channel", per_channel=True)
    net = mlp()
    if channels == "unequal_scales":
        with torch.no_grad():
            net[0].weight[:4] *= 0.05
            net[2].weight[0] *= 0.1
    x = _spikes(43, (T, B, N_IN))
    q = prepare_qat(net, tgt)
    with torch.no_grad():
        qw = q[0].quant_weight()
    assert int(qw.int().abs().max()) <= 127
    assert len(set(qw.scale.flatten().tolist())) == (1 if channels == "equal_scales" else 2)
    prog = _compile(q, x, tgt)
    assert_bit_exact(prog, q, x, rates=None)
