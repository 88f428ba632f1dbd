"""Post-training quantization of a float model, and the clear errors of the quantize pass.

Contract under test: ``snncompile.compile(net, "default", calibration=x)`` puts a float-trained snnTorch
network on the default target (8-bit weights, 16-bit state) with a state grid per layer chosen from the
calibration run; the integer program then classifies about as well as the float model (within one
percentage point), and ``Program.notes`` says what was rounded. Models or graphs that cannot be put on
the target's grids raise :class:`snncompile.QuantizationError` with a message naming the problem.

The data set is scikit-learn's bundled ``load_digits`` (8x8 digits, 1797 samples, no download); pixels
0..16 are scaled to [0, 1] and fed as a constant current for ``T`` steps. The float accuracy is measured
on the float snnTorch model itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import torch
from brevitas.nn import QuantLinear
from brevitas.quant import Int8WeightPerTensorFixedPoint
from conftest import reset_snntorch_states
from hypothesis import given, settings
from hypothesis import strategies as st
from snncompile.quant import prepare_qat
from torch import nn
from torch.nn.utils import parametrize

import snncompile
from snncompile import QuantizationError, compile_graph, run_float, run_integer
from snncompile.ir import LIF, QLIF, CubaLIF, FixedQuant, Graph, Input, Linear, Output, QCubaLIF
from snncompile.passes import quantize
from snncompile.targets import Target, load_target

T = 20
N_TRAIN = 1400
N_CALIB = 200
EPOCHS = 25
BATCH = 128


@dataclasses.dataclass
class Trained:
    net: nn.Module
    x_train: np.ndarray  # (N, 64) in [0, 1]
    x_test: np.ndarray
    y_test: np.ndarray
    float_spikes: np.ndarray  # (T, N_test, 10) output spikes of the float model on x_test
    float_acc: float


def _currents(x: np.ndarray) -> np.ndarray:
    """Constant-current coding: the same pixel intensities at every step, ``(T, B, 64)`` float32."""
    return np.ascontiguousarray(np.broadcast_to(x, (T, *x.shape)), dtype=np.float32)


def _run_float(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    reset_snntorch_states(net)
    return torch.stack([net(x) for _ in range(T)])


@pytest.fixture(scope="module")
def trained() -> Trained:
    """A 64-64-10 Leaky MLP trained for a few seconds (fixed seeds) on the digits."""
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn (a dev extra) bundles the digits")
    torch.manual_seed(0)
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    x_train, y_train, x_test, y_test = x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]
    net = nn.Sequential(
        nn.Linear(64, 64),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(64, 10),
        snn.Leaky(beta=0.9, init_hidden=True),
    )
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train)
    net.train()
    for _ in range(EPOCHS):
        order = torch.randperm(N_TRAIN)
        for i in range(0, N_TRAIN, BATCH):
            idx = order[i : i + BATCH]
            counts = _run_float(net, xt[idx]).sum(0)  # spike counts as logits
            loss = loss_fn(counts, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        spikes = _run_float(net, torch.as_tensor(x_test)).numpy()
    acc = float((spikes.sum(0).argmax(1) == y_test).mean())
    return Trained(net, x_train, x_test, y_test, spikes, acc)


def test_ptq_digits_accuracy(trained: Trained, record_property: Any) -> None:
    assert trained.float_acc > 0.85, f"float training failed: test accuracy {trained.float_acc:.3f}"
    calib = _currents(trained.x_train[:N_CALIB])
    prog = snncompile.compile(trained.net, "default", calibration=calib)
    tgt = load_target("default")
    assert (tgt.weight_bits, tgt.state.width) == (8, 16)

    # it was rounded, and the notes say so: weights, decays, the state formats chosen from calibration
    assert prog.notes and not prog.exact
    text = "\n".join(prog.notes)
    assert "weight rounded to 8-bit codes" in text
    assert "beta rounded onto 2^-8" in text
    assert text.count("mem format chosen from calibration") == 2

    # every weight is an 8-bit code, every state a 16-bit one
    for node in prog.graph.neurons():
        mem = prog.graph.op(node).mem
        assert (mem.lo, mem.hi) == (-(2**15), 2**15 - 1)
    for node in prog.graph:
        w = getattr(prog.graph.op(node), "weight", None)
        if w is not None:
            assert w.dtype == np.int64 and np.abs(w).max() <= 127

    sim = prog.simulate(prog.quantize_input(_currents(trained.x_test)))
    assert sim.spikes.shape == trained.float_spikes.shape
    int_acc = float((sim.spikes.sum(0).argmax(1) == trained.y_test).mean())
    agreement = float((sim.spikes == trained.float_spikes.astype(np.int64)).mean())
    pred_agreement = float((sim.spikes.sum(0).argmax(1) == trained.float_spikes.sum(0).argmax(1)).mean())
    for key, value in (
        ("float_accuracy", trained.float_acc),
        ("integer_accuracy", int_acc),
        ("spike_agreement", agreement),
        ("prediction_agreement", pred_agreement),
    ):
        record_property(key, round(value, 4))
    print(
        f"\nPTQ digits: float acc {trained.float_acc:.4f}, integer acc {int_acc:.4f}, output spike "
        f"agreement {agreement:.4f}, prediction agreement {pred_agreement:.4f}, "
        f"saturations {sim.run.saturations}"
    )
    assert abs(int_acc - trained.float_acc) <= 0.01, (trained.float_acc, int_acc)
    assert agreement > 0.9, agreement
    assert pred_agreement > 0.95, pred_agreement
    assert 0 < trained.float_spikes.mean() < 1


def test_quantize_input_puts_currents_on_the_input_grid(trained: Trained) -> None:
    """Pixels k/16 lie on 2^-4 and need 5 bits: the input grid is read exactly (no input note)."""
    prog = snncompile.compile(trained.net, "default", calibration=_currents(trained.x_train[:N_CALIB]))
    assert prog.input_frac == 4
    assert not any(n.startswith("input:") for n in prog.notes)
    x = _currents(trained.x_test[:5])
    assert np.array_equal(prog.quantize_input(x), x)


def test_ptq_is_deterministic(trained: Trained) -> None:
    calib = _currents(trained.x_train[:N_CALIB])
    a = snncompile.compile(trained.net, "default", calibration=calib)
    b = snncompile.compile(trained.net, "default", calibration=torch.as_tensor(calib))
    assert a.graph == b.graph and a.notes == b.notes


def test_float_model_without_calibration_is_refused(trained: Trained) -> None:
    x0 = torch.as_tensor(trained.x_test[:2])
    with pytest.raises(QuantizationError, match=r"has no state quantizer.*calibration") as e:
        snncompile.compile(trained.net, "default", example_input=x0)
    assert "prepare_qat" in str(e.value)


# ----------------------------------------------------------------------------- clear errors


def _qat_mlp() -> nn.Module:
    torch.manual_seed(0)
    return prepare_qat(
        nn.Sequential(
            nn.Linear(10, 6),
            snn.Leaky(beta=0.875, init_hidden=True),
            nn.Linear(6, 3),
            snn.Leaky(beta=0.875, init_hidden=True),
        )
    )


def test_qat_threshold_off_the_state_grid_is_refused() -> None:
    q = _qat_mlp()
    neuron = q[1]
    parametrize.remove_parametrizations(neuron, "threshold", leave_parametrized=False)
    neuron.threshold = torch.tensor(0.3)
    with pytest.raises(
        QuantizationError,
        match=r"node 'lif_1': threshold 0\.3 is not representable on the state grid 2\^-8 \(nearest 0\.30078",
    ):
        snncompile.compile(q, example_input=torch.zeros(1, 10))


def test_qat_threshold_on_the_state_grid_is_accepted() -> None:
    q = _qat_mlp()
    with torch.no_grad():  # 77/256: DyadicGrid keeps it (it has no right_inverse: set the original)
        q[1].parametrizations.threshold.original.fill_(0.30078125)
    prog = snncompile.compile(q, example_input=torch.zeros(1, 10))
    assert prog.notes == ()
    assert int(prog.graph.op(prog.graph.node_for_source("1")).threshold) == 77


def _hand_graph(beta: float, threshold: float, mem_quant: FixedQuant | None) -> Graph:
    g = Graph()
    g.add("input", Input((4,)))
    g.add("fc", Linear(np.full((3, 4), 0.25, np.float32)), ("input",))
    lif = LIF(beta=np.array(beta, np.float32), threshold=np.array(threshold, np.float32), mem_quant=mem_quant)
    g.add("lif", lif, ("fc",))
    g.add("output", Output(), ("lif",))
    return g


def test_hand_built_threshold_off_the_state_grid_is_refused() -> None:
    g = _hand_graph(0.875, 0.3, FixedQuant(8, -32768, 32767, "floor"))
    with pytest.raises(
        QuantizationError, match=r"node 'lif': threshold 0\.3 is not representable on the state grid 2\^-8"
    ):
        quantize(g, load_target("default"))


def test_hand_built_exact_graph_quantizes_exactly() -> None:
    g = _hand_graph(0.875, 0.5, FixedQuant(8, -32768, 32767, "floor"))
    result = quantize(g, load_target("default"))
    assert result.notes == () and result.exact
    op = result.graph.op("lif")
    assert int(op.beta) == 224 and int(op.threshold) == 128 and op.mem.frac == 8


@pytest.mark.parametrize("beta", [1.5, -0.25])
def test_hand_built_beta_outside_unit_interval_is_refused(beta: float) -> None:
    g = _hand_graph(beta, 1.0, FixedQuant(8, -32768, 32767, "floor"))
    with pytest.raises(QuantizationError, match=r"node 'lif': beta must lie in \[0, 1\], found \["):
        quantize(g, load_target("default"))


def test_weights_wider_than_the_target_are_refused() -> None:
    torch.manual_seed(0)
    fc = QuantLinear(16, 8, bias=False, weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=12)
    with torch.no_grad():
        fc.weight.uniform_(-0.5, 0.5)
    net = nn.Sequential(fc, snn.Leaky(beta=0.875, init_hidden=True))
    q = prepare_qat(net)  # the neuron gets its state quantizer; the 12-bit brevitas layer is kept
    assert q[0].weight_quant.bit_width() == 12
    with pytest.raises(
        QuantizationError,
        match=r"node 'linear_0': weight lies on the grid 2\^-12 but its codes need 12 bits; target 'default' "
        r"has 8-bit weights \(the format is too narrow",
    ):
        snncompile.compile(q, example_input=torch.zeros(1, 16))
    # the same layer compiles exactly for a 12-bit target
    wide = Target("w12", weight_bits=12)
    prog = snncompile.compile(prepare_qat(net, wide), wide, example_input=torch.zeros(1, 16))
    assert prog.notes == ()


# ----------------------------------------------------------------------- reachable thresholds


def _neuron_graph(neuron: LIF | CubaLIF, weight: np.ndarray) -> Graph:
    g = Graph()
    g.add("input", Input((weight.shape[1],)))
    g.add("fc", Linear(weight.astype(np.float32)), ("input",))
    g.add("lif", neuron, ("fc",))
    g.add("output", Output(), ("lif",))
    return g


def test_immediate_zero_reset_keeps_its_threshold_reachable() -> None:
    """With an immediate zero reset the stored membrane is 0 after every spike: a neuron driven over
    its threshold at every step stores nothing but zeros, so the calibration peak is 0. The state grid
    used to come from that peak alone (s16.113, threshold code 2^113 wrapped); it now holds the
    threshold: s16.14, threshold code 2^14 < mem.hi, and the program fires as often as the float model."""
    lif = LIF(
        beta=np.array(0.9, np.float32), threshold=np.array(1.0, np.float32), reset="zero", reset_delay=False
    )
    g = _neuron_graph(lif, np.full((3, 4), 0.25))
    x = np.full((20, 3, 4), 1.25, np.float32)  # current 1.25 > 1 at every step
    float_run = run_float(g, x)
    assert float(np.abs(float_run.states["lif"]["mem"]).max()) == 0.0
    result = quantize(g, load_target("default"), x)
    op = result.graph.op("lif")
    assert isinstance(op, QLIF)
    assert op.mem.frac == 14 and int(op.threshold) == 1 << 14 < op.mem.hi
    assert "lif: mem format chosen from calibration: peak 0 and threshold 1 -> s16.14" in result.notes
    fired = int(run_integer(result.graph, x).spikes["lif"].sum())
    assert fired == int(float_run.spikes["lif"].sum()) == 20 * 3 * 3


def test_a_model_format_whose_threshold_cannot_be_crossed_is_a_loud_note() -> None:
    """mem format [-128, 127]/2^8 and threshold 0.5 = code 128: m <= 127 is never > 128."""
    lif = LIF(
        beta=np.array(0.875, np.float32),
        threshold=np.array(0.5, np.float32),
        mem_quant=FixedQuant(8, -128, 127, "floor"),
    )
    g = _neuron_graph(lif, np.full((3, 4), 0.25))
    x = np.ones((5, 2, 4), np.float32)
    result = quantize(g, load_target("default"), x)
    assert result.exact  # nothing was rounded: the graph is the model, which cannot fire either
    assert result.notes == (
        "lif: NEVER FIRES: threshold code 128 is not below the largest membrane code 127 of "
        "fixed[-128..127]/2^8,floor: 1 of 1 thresholds can never be crossed; the float model fires 0 "
        "times on the calibration data",
    )
    program = compile_graph(g, "default", x)  # the compiled program is still the model, and says so
    assert program.exact and program.notes == result.notes


def test_a_calibrated_grid_never_gets_an_uncrossable_threshold_even_per_neuron() -> None:
    lif = LIF(beta=np.array(0.5, np.float32), threshold=np.array([0.01, 1.0, 300.0], np.float32))
    result = quantize(
        _neuron_graph(lif, np.full((3, 4), 0.1)), load_target("default"), np.ones((4, 2, 4), np.float32)
    )
    op = result.graph.op("lif")
    assert isinstance(op, QLIF) and int(op.threshold.max()) < op.mem.hi


POSITIVE = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    cuba=st.booleans(),
    threshold=st.lists(POSITIVE, min_size=1, max_size=3),
    beta=st.floats(0, 1),
    reset=st.sampled_from(["subtract", "zero", "none"]),
    delay=st.booleans(),
    gain=st.floats(0.05, 1.9),
    scale=POSITIVE,
    rate=st.floats(0, 1),
    seed=st.integers(0, 2**16),
    width=st.sampled_from([8, 12, 16, 24]),
)
def test_ptq_thresholds_are_reachable_on_random_calibration_sets(
    cuba: bool,
    threshold: list[float],
    beta: float,
    reset: str,
    delay: bool,
    gain: float,
    scale: float,
    rate: float,
    seed: int,
    width: int,
) -> None:
    """Whatever the calibration data (currents from 0 to 10^3, any density), the threshold and the
    membrane range, every threshold code stays below mem.hi: every neuron can fire."""
    rng = np.random.default_rng(seed)
    n = len(threshold)
    thr = np.array(threshold, np.float32)
    common: dict[str, Any] = {
        "beta": np.array(beta, np.float32),
        "threshold": thr,
        "reset": reset,
        "reset_delay": delay,
    }
    neuron = CubaLIF(alpha=np.array(0.5, np.float32), **common) if cuba else LIF(**common)
    g = _neuron_graph(neuron, np.round(rng.uniform(-gain, gain, (n, 5)) * 64) / 64)  # 8-bit codes on 2^-6
    x = (scale * (rng.random((6, 3, 5)) < rate)).astype(np.float32)
    target = dataclasses.replace(
        load_target("default"), state=dataclasses.replace(load_target("default").state, width=width)
    )
    op = quantize(g, target, x).graph.op("lif")
    assert isinstance(op, QLIF | QCubaLIF)
    assert int(op.threshold.max()) < op.mem.hi, (op.mem, op.threshold)
