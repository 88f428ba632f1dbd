"""snnTorch's forward idioms, pinned against the module's own forward in torch.

Contract under test: a module written the way snnTorch's tutorials write it (``init_hidden=False``
neurons, ``init_leaky()`` / ``init_synaptic()`` / ``init_rleaky()`` / ``init_rsynaptic()`` /
``reset_mem()`` in forward, a time loop over a static input or over ``x[step]`` of a sequence,
per-step recordings returned with ``torch.stack(rec, dim=0)``, readouts of a layer's values, a
batch-first sequence read as ``x[:, step]``) traces to the same one-step graph as its
``init_hidden=True`` twin, and ``run_float(traced.graph, traced.sequence(x))`` reproduces every value
forward returns bit for bit: ``traced.returned(run)`` == ``net(x)``, spikes and membranes alike.
Functional glue (``F.max_pool2d``, ``F.avg_pool2d``, ``view`` / ``reshape`` / ``flatten`` that keep the
batch axis) maps onto the existing ops, in loop and single-step forwards. The QAT form
(``prepare_qat``) compiled for artix7-100t simulates to the QAT module's own forward, bit for bit.

The reference is always the module's forward in float32 torch (eval, ``torch.no_grad()``); nothing
expected is computed with snncompile. What breaks the pattern is refused with one line, pinned here by
anchored regexes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from conftest import assert_exact, compare_with_snntorch, reset_snntorch_states
from snncompile.quant import prepare_qat
from snntorch import utils
from torch import Tensor, nn

import snncompile
from snncompile import TraceError, UnsupportedModuleError
from snncompile.frontend.snntorch import TracedForward, trace_forward
from snncompile.ir import AvgPool2d, MaxPool2d

T = 8
B = 3
N_IN = 12
N_HID = 16
N_OUT = 6
IMG = (1, 14, 14)  # conv1 (k3) -> 12x12, pool -> 6x6, conv2 (k3) -> 4x4, pool -> 2x2
FLAT = 6 * 2 * 2


def _scale_(layer: nn.Module, gain: float, bias_gain: float = 0.1) -> nn.Module:
    with torch.no_grad():
        layer.weight.uniform_(-gain, gain)
        if getattr(layer, "bias", None) is not None:
            layer.bias.uniform_(-bias_gain, bias_gain)
    return layer


def _spikes(seed: int, shape: tuple[int, ...], p: float = 0.35) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


def _currents(seed: int, shape: tuple[int, ...]) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 1.5 - 0.25


# -------------------------------------------------------------------------------------- models


class Tutorial5(nn.Module):
    """snnTorch tutorial 5: Linear-Leaky-Linear-Leaky, ``num_steps`` steps of the static input.

    ``init``: ``"init_leaky"`` (the tutorial), ``"reset_mem"``, or ``"implicit"`` (no state passed:
    each neuron keeps its own).
    """

    GLUE: ClassVar[dict[str, Callable[[Tensor], Tensor]]] = {}

    def __init__(self, init: str = "init_leaky", num_steps: int = T) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.init, self.num_steps = init, num_steps
        self.fc1 = _scale_(nn.Linear(N_IN, N_HID), 0.7)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = _scale_(nn.Linear(N_HID, N_OUT), 0.6)
        self.lif2 = snn.Leaky(beta=0.8, reset_mechanism="zero")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.init == "init_leaky":
            mem1 = self.lif1.init_leaky()
            mem2 = self.lif2.init_leaky()
        elif self.init == "reset_mem":
            mem1 = self.lif1.reset_mem()
            mem2 = self.lif2.reset_mem()
        spk2_rec = []
        mem2_rec = []
        for _step in range(self.num_steps):
            cur1 = self.fc1(x)
            if self.init == "implicit":
                spk1, mem1 = self.lif1(cur1)
            else:
                spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            if self.init == "implicit":
                spk2, mem2 = self.lif2(cur2)
            else:
                spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


_FLATTENS: dict[str, Callable[[Tensor], Tensor]] = {
    "view_size": lambda s: s.view(s.size(0), -1),
    "view_batch": lambda s: s.view(B, -1),
    "reshape_shape": lambda s: s.reshape(s.shape[0], -1),
    "flatten_method": lambda s: s.flatten(1),
    "torch_flatten": lambda s: torch.flatten(s, 1),
}
_POOLS: dict[str, Callable[[Tensor], Tensor]] = {
    "max": lambda v: F.max_pool2d(v, 2),
    "avg": lambda v: F.avg_pool2d(v, kernel_size=2, stride=2),
}


class ConvLoop(nn.Module):
    """snnTorch tutorials 6/7 (sizes reduced): Conv2d, F.max_pool2d, Leaky (init_leaky), Conv2d, pool,
    Leaky, ``.view(batch_size, -1)``, Linear, Leaky; the loop over ``num_steps`` of a static image, or
    over ``x[step]`` of an image sequence."""

    def __init__(self, pool: str = "max", flatten: str = "view_batch", sequence: bool = False) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.pool, self.flat, self.sequence = _POOLS[pool], _FLATTENS[flatten], sequence
        self.GLUE = {"conv1": self.pool, "conv2": self.pool, "lif2": self.flat}
        self.conv1 = _scale_(nn.Conv2d(1, 4, 3), 0.8)
        self.lif1 = snn.Leaky(beta=0.9)
        self.conv2 = _scale_(nn.Conv2d(4, 6, 3), 0.5 if pool == "max" else 0.9)
        self.lif2 = snn.Leaky(beta=0.85)
        self.fc1 = _scale_(nn.Linear(FLAT, N_OUT), 0.9)
        self.lif3 = snn.Leaky(beta=0.9)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        mem3 = self.lif3.init_leaky()
        spk3_rec = []
        mem3_rec = []
        for step in range(x.size(0) if self.sequence else T):
            x_t = x[step] if self.sequence else x
            cur1 = self.pool(self.conv1(x_t))
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.pool(self.conv2(spk1))
            spk2, mem2 = self.lif2(cur2, mem2)
            cur3 = self.fc1(self.flat(spk2))
            spk3, mem3 = self.lif3(cur3, mem3)
            spk3_rec.append(spk3)
            mem3_rec.append(mem3)
        return torch.stack(spk3_rec), torch.stack(mem3_rec, dim=0)


class SequenceLoop(nn.Module):
    """A loop over the input sequence ``x[T, B, ...]``: ``range(x.size(0))`` / ``range(x.shape[0])`` with
    ``x[step]``, or ``for x_t in x``; returns the output spikes and membranes and the hidden spikes."""

    GLUE: ClassVar[dict[str, Callable[[Tensor], Tensor]]] = {}

    def __init__(self, loop: str = "size") -> None:
        super().__init__()
        torch.manual_seed(3)
        self.loop = loop
        self.fc1 = _scale_(nn.Linear(N_IN, N_HID), 0.8)
        self.lif1 = snn.Leaky(beta=torch.linspace(0.6, 0.95, N_HID), threshold=0.9, learn_beta=True)
        self.fc2 = _scale_(nn.Linear(N_HID, N_OUT), 0.6)
        self.lif2 = snn.Leaky(beta=0.8, reset_delay=False)

    def _steps(self, x: Tensor) -> Any:
        if self.loop == "size":
            return (x[step] for step in range(x.size(0)))
        if self.loop == "shape":
            return (x[step] for step in range(x.shape[0]))
        return iter(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk1_rec, spk2_rec, mem2_rec = [], [], []
        for x_t in self._steps(x):
            spk1, mem1 = self.lif1(self.fc1(x_t), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk1_rec.append(spk1)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0), torch.stack(spk1_rec, dim=0)


class BatchFirstLoop(nn.Module):
    """A batch-first sequence ``x[B, T, ...]`` (as audio and event-camera loaders hand it over), read one
    step at a time along axis 1: ``x[:, step]`` over ``range(x.size(1))``, ``x[:, step, :]`` over
    ``range(x.shape[1])``, ``x.select(1, step)``, ``for x_t in x.unbind(1)``, or swapped to time first
    (``x.transpose(0, 1)``, ``x.permute(1, 0, 2)``) and read as ``x[step]``; returns the output spikes
    stacked batch first (``dim=1``: (B, T, ...)), the membranes time first, and the last hidden spikes."""

    GLUE: ClassVar[dict[str, Callable[[Tensor], Tensor]]] = {}
    LOOPS: ClassVar[dict[str, Callable[[Tensor], Any]]] = {
        "size": lambda x: (x[:, step] for step in range(x.size(1))),
        "shape": lambda x: (x[:, step, :] for step in range(x.shape[1])),
        "select": lambda x: (x.select(1, step) for step in range(x.size(1))),
        "unbind": lambda x: iter(x.unbind(1)),
        "transpose": lambda x: (lambda t: (t[step] for step in range(t.size(0))))(x.transpose(0, 1)),
        "permute": lambda x: iter(x.permute(1, 0, 2).contiguous()),
    }

    def __init__(self, loop: str = "size") -> None:
        super().__init__()
        torch.manual_seed(9)
        self.steps = self.LOOPS[loop]
        self.fc1 = _scale_(nn.Linear(N_IN, N_HID), 0.8)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = _scale_(nn.Linear(N_HID, N_OUT), 0.6)
        self.lif2 = snn.Leaky(beta=0.85)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for x_t in self.steps(x):
            spk1, mem1 = self.lif1(self.fc1(x_t), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec, dim=1), torch.stack(mem_rec, dim=0), spk1


class ReadoutLoop(nn.Module):
    """A loop with a non-spiking readout, over ``x[step]`` of a sequence or a static input: each step's
    ``fc_out(spk2)`` (a Linear after the last neuron) and the last layer's membrane are recorded and
    stacked, ``fc_out`` of the last step's spikes is applied once more after the loop, and the hidden
    spikes are returned stacked too. With ``current`` the input current of ``lif2`` (``fc2``'s output,
    a layer inside the network) is recorded and returned as well."""

    def __init__(self, sequence: bool = True, current: bool = False) -> None:
        super().__init__()
        torch.manual_seed(10)
        self.sequence, self.current = sequence, current
        self.fc1 = _scale_(nn.Linear(N_IN, N_HID), 0.8)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = _scale_(nn.Linear(N_HID, N_OUT), 0.6)
        self.lif2 = snn.Leaky(beta=0.85)
        self.fc_out = _scale_(nn.Linear(N_OUT, 4), 0.7)
        self.GLUE: dict[str, Callable[[Tensor], Tensor]] = {}

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        out_rec, mem_rec, spk1_rec, cur_rec = [], [], [], []
        for step in range(x.size(0) if self.sequence else T):
            spk1, mem1 = self.lif1(self.fc1(x[step] if self.sequence else x), mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            out_rec.append(self.fc_out(spk2))
            mem_rec.append(mem2)
            spk1_rec.append(spk1)
            cur_rec.append(cur2)
        returned = (torch.stack(out_rec), torch.stack(mem_rec), self.fc_out(spk2), torch.stack(spk1_rec))
        return (*returned, torch.stack(cur_rec)) if self.current else returned


class SynapticLoop(nn.Module):
    """Synaptic in a sequence loop: ``syn1, mem1 = lif1.init_synaptic()``, ``spk1, syn1, mem1 = lif1(cur,
    syn1, mem1)``; returns the output spikes, synaptic currents and membranes."""

    GLUE: ClassVar[dict[str, Callable[[Tensor], Tensor]]] = {}

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.fc1 = _scale_(nn.Linear(N_IN, N_HID), 0.5)
        self.lif1 = snn.Synaptic(alpha=0.8, beta=0.9)
        self.fc2 = _scale_(nn.Linear(N_HID, N_OUT), 0.5)
        self.lif2 = snn.Synaptic(alpha=0.6, beta=0.85, reset_mechanism="zero")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        syn1, mem1 = self.lif1.init_synaptic()
        syn2, mem2 = self.lif2.init_synaptic()
        spk_rec, syn_rec, mem_rec = [], [], []
        for step in range(x.size(0)):
            spk1, syn1, mem1 = self.lif1(self.fc1(x[step]), syn1, mem1)
            spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
            spk_rec.append(spk2)
            syn_rec.append(syn2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec, dim=0), torch.stack(syn_rec, dim=0), torch.stack(mem_rec, dim=0)


class RLeakyLoop(nn.Module):
    """RLeaky in a static-input loop: ``spk1, mem1 = rlif1.init_rleaky()``, ``spk1, mem1 = rlif1(cur,
    spk1, mem1)``, then a Leaky output layer; returns the RLeaky membranes too."""

    GLUE: ClassVar[dict[str, Callable[[Tensor], Tensor]]] = {}

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.fc1 = _scale_(nn.Linear(N_IN, N_HID), 0.7)
        self.rlif1 = snn.RLeaky(beta=0.9, linear_features=N_HID)
        _scale_(self.rlif1.recurrent, 0.3)
        self.fc2 = _scale_(nn.Linear(N_HID, N_OUT), 0.5)
        self.lif2 = snn.Leaky(beta=0.85)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        spk1, mem1 = self.rlif1.init_rleaky()
        mem2 = self.lif2.init_leaky()
        spk_rec, mem_rec, mem1_rec = [], [], []
        for _step in range(T):
            spk1, mem1 = self.rlif1(self.fc1(x), spk1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
            mem1_rec.append(mem1)
        return torch.stack(spk_rec, dim=0), torch.stack(mem_rec, dim=0), torch.stack(mem1_rec, dim=0)


class RSynapticLoop(nn.Module):
    """RSynaptic (one-to-one recurrence) in a sequence loop: ``spk, syn, mem = init_rsynaptic()``,
    ``spk, syn, mem = rsyn(cur, spk, syn, mem)``; returns the last step's spikes and membrane only."""

    GLUE: ClassVar[dict[str, Callable[[Tensor], Tensor]]] = {}

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.fc1 = _scale_(nn.Linear(N_IN, N_HID), 0.4, bias_gain=0.02)
        self.rsyn1 = snn.RSynaptic(alpha=0.5, beta=0.8, all_to_all=False, V=torch.linspace(-0.4, 0.4, N_HID))
        self.fc2 = _scale_(nn.Linear(N_HID, N_OUT), 0.6)
        self.lif2 = snn.Leaky(beta=0.9)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        spk1, syn1, mem1 = self.rsyn1.init_rsynaptic()
        mem2 = self.lif2.init_leaky()
        for step in range(x.size(0)):
            spk1, syn1, mem1 = self.rsyn1(self.fc1(x[step]), spk1, syn1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
        return spk2, mem2


class HiddenLoop(nn.Module):
    """A Sequential of init_hidden=True neurons called in a loop over ``x[step]`` after
    ``utils.reset``; returns the output spikes stacked."""

    GLUE: ClassVar[dict[str, Callable[[Tensor], Tensor]]] = {}

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.net = nn.Sequential(
            _scale_(nn.Linear(N_IN, N_HID), 0.8),
            snn.Leaky(beta=0.9, init_hidden=True),
            _scale_(nn.Linear(N_HID, N_OUT), 0.6),
            snn.Leaky(beta=0.8, init_hidden=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        utils.reset(self.net)
        return torch.stack([self.net(x[step]) for step in range(x.size(0))], dim=0)


class Twin(nn.Module):
    """The ``init_hidden=True`` single-step form of a loop model: its children in order (deep copies,
    same weights, neurons with init_hidden=True), ``glue[name]`` applied after child ``name``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        for name, child in net.named_children():
            child = copy.deepcopy(child)
            for m in child.modules():
                if isinstance(m, snn.SpikingNeuron):
                    m.init_hidden = True
            self.add_module(name, child)
        self.glue = dict(net.GLUE)

    def forward(self, x: Tensor) -> Tensor:
        for name, child in self.named_children():
            x = child(x)
            if name in self.glue:
                x = self.glue[name](x)
        return x


# -------------------------------------------------------------------------------------- checks


def _tuple(v: Any) -> tuple[Any, ...]:
    return (v,) if isinstance(v, Tensor | np.ndarray) else tuple(v)


@torch.no_grad()
def _forward(net: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
    """The module's own forward, from zero neuron state (the reference)."""
    net.eval()
    reset_snntorch_states(net)
    return tuple(v.clone() for v in _tuple(net(x)))


def check_forward(net: nn.Module, x: Tensor, mode: str) -> TracedForward:
    """Traces ``net``; asserts run_float reproduces every returned value of ``net(x)`` bit for bit, the
    graph equals the init_hidden twin's, and tracing left the module as it was."""
    want = _forward(net, x)
    buffers = {n: b for n, b in net.named_buffers()}
    traced = trace_forward(net, x)
    after = dict(net.named_buffers())
    assert after.keys() == buffers.keys() and all(after[n] is b for n, b in buffers.items()), (
        "tracing changed the module's buffers"
    )
    assert traced.input_mode == mode
    run = snncompile.run_float(traced.graph, traced.sequence(x))
    got = _tuple(traced.returned(run))
    assert len(got) == len(want) == len(traced.outputs)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_exact(g, w.numpy(), f"returned value {i} ({traced.outputs[i]})")
    spikes = [w for o, w in zip(traced.outputs, want, strict=True) if o.var == "spk"]
    assert spikes and all(bool((s != 0).any()) and bool((s == 0).any()) for s in spikes), "vacuous: no spikes"
    for o, w in zip(traced.outputs, want, strict=True):
        stacked_readout = o.var == "value" and o.step is None
        assert not stacked_readout or len(torch.unique(w)) > w.shape[-1], f"{o}: vacuous (no input spikes)"
    # every returned value is an output node of the graph, in position order, readable by name and position
    assert traced.graph.outputs == tuple(o.output for o in traced.outputs)
    for i, (o, w) in enumerate(zip(traced.outputs, want, strict=True)):
        assert traced.graph.output_source(o.output) == (o.node, o.var if o.var in ("mem", "syn") else None)
        assert run.outputs[i] is run.outputs[o.output]
        value = run.outputs[i] if o.step is None else run.outputs[i][o.step]  # runs are time first
        assert_exact(value if o.axis == 0 else value.swapaxes(0, 1), w.numpy(), f"output {i}")
    assert_exact(run.output, run.outputs[0], "run.output")
    step = x if mode != "sequence" else x[0] if traced.time_axis == 0 else x[:, 0]
    twin = snncompile.trace(Twin(net), step)
    assert _body(traced.graph) == _body(twin), f"{traced.graph}\n!=\n{twin}"
    assert twin.outputs == ("output",) and twin.output_name == traced.graph.output_name
    assert _forward(net, x)[0].equal(want[0]), "forward changed after tracing"
    return traced


def _body(graph: snncompile.Graph) -> list[str]:
    """The graph's lines without its output nodes (a loop forward returns more than its twin)."""
    return [graph.line(n) for n in graph.topo_order() if n not in graph.outputs]


def check_qat(net: nn.Module, x: Tensor) -> None:
    """The QAT form compiled for artix7-100t: ``program.simulate`` equals the QAT module's forward
    (spike codes == spikes, state codes == states * 2**frac), every returned value."""
    q = prepare_qat(net)
    want = _forward(q, x)
    prog = snncompile.compile(q, "artix7-100t", example_input=x)
    assert prog.exact, prog.notes
    traced = trace_forward(q, x)
    sim = prog.simulate(traced.sequence(x))
    got = _tuple(traced.returned(sim.run))
    for out, g, w in zip(traced.outputs, got, want, strict=True):
        op = prog.graph.op(out.node)
        if out.var == "value":  # a readout: values on its node's grid
            frac = prog.graph.fracs()[out.output]
        else:
            frac = op.graded_frac if out.var == "spk" else getattr(op, out.var).frac
        codes = w.numpy().astype(np.float64) * 2.0**frac
        assert np.array_equal(codes, np.round(codes)), f"{out}: off the 2^-{frac} grid"
        assert np.array_equal(g, codes.astype(np.int64)), f"{out}: integer program != QAT forward"
        if out.var == "spk":
            assert bool((w != 0).any()) and bool((w == 0).any()), f"{out}: vacuous (no spikes or all spikes)"
    assert np.array_equal(sim.spikes, sim.run.outputs[0])  # the first output's codes


# ---------------------------------------------------------------------------------- time loops


@pytest.mark.parametrize("init", ["init_leaky", "reset_mem", "implicit"])
def test_tutorial5_static_input_loop(init: str) -> None:
    net = Tutorial5(init)
    x = _currents(10, (B, N_IN))
    traced = check_forward(net, x, "static")
    assert traced.steps == T
    assert [(o.node, o.var, o.step) for o in traced.outputs] == [("lif2", "spk", None), ("lif2", "mem", None)]
    # the per-step input is the static input repeated num_steps times
    seq = traced.sequence(x)
    assert seq.shape == (T, B, N_IN) and all(np.array_equal(seq[t], x.numpy()) for t in range(T))


def test_tutorial5_qat() -> None:
    check_qat(Tutorial5(), _spikes(11, (B, N_IN)))


@pytest.mark.parametrize("pool", sorted(_POOLS))
@pytest.mark.parametrize("flatten", sorted(_FLATTENS))
def test_conv_loop_with_functional_glue(pool: str, flatten: str) -> None:
    net = ConvLoop(pool, flatten)
    traced = check_forward(net, _spikes(12, (B, *IMG), 0.5), "static")
    kinds = [traced.graph.op(n).kind for n in traced.graph]
    assert kinds.count(f"{pool}pool2d") == 2 and kinds.count("flatten") == 1


def test_conv_loop_over_an_image_sequence() -> None:
    check_forward(ConvLoop("max", "view_size", sequence=True), _spikes(13, (T, B, *IMG), 0.5), "sequence")


def test_conv_loop_qat() -> None:
    check_qat(ConvLoop("max", "view_batch"), _spikes(14, (B, *IMG), 0.5))


@pytest.mark.parametrize("loop", ["size", "shape", "iterate"])
def test_sequence_loop(loop: str) -> None:
    traced = check_forward(SequenceLoop(loop), _currents(15, (T, B, N_IN)), "sequence")
    assert [(o.node, o.var) for o in traced.outputs] == [("lif2", "spk"), ("lif2", "mem"), ("lif1", "spk")]
    assert traced.graph.output_name == "lif2"


def test_sequence_loop_qat() -> None:
    check_qat(SequenceLoop(), _spikes(16, (T, B, N_IN)))


@pytest.mark.parametrize("loop", sorted(BatchFirstLoop.LOOPS))
def test_batch_first_sequence_loop(loop: str) -> None:
    """x[B, T, ...] read along axis 1: the same one-step graph; the run takes x time first."""
    x = _currents(23, (B, T, N_IN))
    traced = check_forward(BatchFirstLoop(loop), x, "sequence")
    assert traced.time_axis == 1 and traced.steps == T
    assert [(o.node, o.var, o.step, o.axis) for o in traced.outputs] == [
        ("lif2", "spk", None, 1),
        ("lif2", "mem", None, 0),
        ("lif1", "spk", -1, 0),
    ]
    assert np.array_equal(traced.sequence(x), x.numpy().swapaxes(0, 1))


def test_batch_first_sequence_loop_qat() -> None:
    check_qat(BatchFirstLoop(), _spikes(24, (B, T, N_IN)))


def test_batch_first_model_traced_and_compiled_from_a_time_first_sequence() -> None:
    """``trace_sequence`` and ``compile(calibration=)`` take x[T, B, ...]; a forward that reads
    ``x[:, step]`` is handed x batch first, and the program simulates x time first."""
    q = prepare_qat(BatchFirstLoop())
    x = _spikes(25, (B, T, N_IN))
    want = _forward(q, x)
    time_first = x.transpose(0, 1).contiguous()
    traced = snncompile.trace_sequence(q, time_first)
    assert (traced.input_mode, traced.time_axis, traced.steps) == ("sequence", 1, T)
    assert traced.graph == trace_forward(q, x).graph
    prog = snncompile.compile(q, "artix7-100t", calibration=time_first)
    assert prog.exact, prog.notes
    sim = prog.simulate(time_first.numpy())
    spikes = want[0].numpy().swapaxes(0, 1)  # forward stacks the output spikes batch first
    assert np.array_equal(sim.spikes, spikes.astype(np.int64)) and 0 < spikes.mean() < 1


def test_batch_first_model_on_the_command_line(tmp_path: Any) -> None:
    """X.npz is time first whatever forward takes; simulate and verify hand a batch-first forward its
    x[B, T, ...]."""
    from click.testing import CliRunner

    from snncompile.cli import main

    (tmp_path / "model.py").write_text(
        "import torch\nfrom snncompile.quant import prepare_qat\nfrom test_forward_styles import BatchFirstLoop\n\n"
        "def net():\n    return BatchFirstLoop()\n\ndef qat():\n    return prepare_qat(BatchFirstLoop())\n"
    )
    x = _spikes(26, (B, T, N_IN))
    np.savez(tmp_path / "x.npz", x=x.numpy().swapaxes(0, 1).astype(np.uint8))
    out = tmp_path / "y.npz"
    result = CliRunner().invoke(
        main, ["simulate", f"{tmp_path}/model.py:net", "--input", str(tmp_path / "x.npz"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    want = _forward(BatchFirstLoop(), x)
    with np.load(out) as y:
        assert np.array_equal(y["output"], want[0].numpy().swapaxes(0, 1).astype(np.uint8))
        assert np.array_equal(y["output_1"], want[1].numpy())
    result = CliRunner().invoke(
        main, ["verify", f"{tmp_path}/model.py:qat", "--input", str(tmp_path / "x.npz")]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("bit-exact: every spike, membrane and synaptic current agrees")


def test_batch_first_refusals() -> None:
    class Mixed(BatchFirstLoop):
        def forward(self, x: Tensor) -> Tensor:
            mem1 = self.lif1.init_leaky()
            rec = []
            for step in range(x.size(1)):
                spk1, mem1 = self.lif1(self.fc1(x[:, step] + 0 * x[step]), mem1)
                rec.append(spk1)
            return torch.stack(rec)

    with pytest.raises(
        UnsupportedModuleError,
        match=r"^forward of Mixed reads its input \(3, 3, 12\) step by step along axis 1 and along axis 0; read "
        r"time steps along one axis: x\[step\] of x\[T, B, \.\.\.\] or x\[:, step\] of x\[B, T, \.\.\.\]$",
    ):
        snncompile.trace(Mixed(), torch.zeros(B, B, N_IN))
    short = _Loop(lambda n, x, step, st: _standard(n, n.fc1(x[:, step]), st), steps=4)
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^forward runs 4 time steps over an input sequence of 6 \(x\[B, T, \.\.\.\]\); pass an example "
        r"input of 4 steps$",
    ):
        snncompile.trace(short, torch.zeros(B, 6, N_IN))
    whole = _Loop(lambda n, x, step, st: _standard(n, n.fc1(x.transpose(0, 1)[0]), st), steps=4)
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^module 'lif1': at step 1 its input reads x\[:, 0\]; each step of the loop in forward may read "
        r"only its own step's values",
    ):
        snncompile.trace(whole, torch.zeros(B, 4, N_IN))


@pytest.mark.parametrize("current", [False, True], ids=["linear_readout", "input_current"])
@pytest.mark.parametrize("sequence", [True, False], ids=["sequence", "static"])
def test_readouts_in_a_time_loop(sequence: bool, current: bool) -> None:
    """Each step's readout stacked, and the readout of the last step after the loop: outputs reading
    the layer's node, equal to forward's values bit for bit."""
    x = _currents(27, (T, B, N_IN) if sequence else (B, N_IN))
    traced = check_forward(ReadoutLoop(sequence, current), x, "sequence" if sequence else "static")
    assert [(o.node, o.var, o.step, o.axis) for o in traced.outputs] == [
        ("fc_out", "value", None, 0),
        ("lif2", "mem", None, 0),
        ("fc_out", "value", -1, 0),
        ("lif1", "spk", None, 0),
        *([("fc2", "value", None, 0)] if current else []),
    ]
    # fc_out(spk2) after the loop is the node that each step's fc_out(spk2) is: one readout layer
    assert [n for n in traced.graph if traced.graph.op(n).kind == "linear"] == ["fc1", "fc2", "fc_out"]


@pytest.mark.parametrize("current", [False, True], ids=["linear_readout", "input_current"])
def test_readouts_in_a_time_loop_qat(current: bool) -> None:
    check_qat(ReadoutLoop(current=current), _spikes(28, (T, B, N_IN)))


def test_readouts_in_a_time_loop_verify_exact() -> None:
    """verify of the QAT loop: every spike, membrane and readout (also the one forward computes only
    after the loop) agrees with the module's own forward."""
    from snncompile.verify import verify

    q = prepare_qat(ReadoutLoop())
    x = _spikes(29, (T, B, N_IN))
    prog = snncompile.compile(q, "artix7-100t", example_input=x)
    traced = trace_forward(q, x)
    report = verify(q, traced, prog.graph, x.numpy(), x.numpy(), exact=True)
    assert report.passed and report.divergence is None, report.text()
    assert report.readouts == {"output": 0.0, "output_2": 0.0}


def test_readouts_in_a_time_loop_on_the_command_line(tmp_path: Any) -> None:
    """``verify`` passes the QAT loop bit for bit, readouts included; ``simulate`` writes each readout
    as real values, equal to what forward returns."""
    from click.testing import CliRunner

    from snncompile.cli import main

    (tmp_path / "model.py").write_text(
        "from snncompile.quant import prepare_qat\nfrom test_forward_styles import ReadoutLoop\n\n"
        "def net():\n    return ReadoutLoop()\n\ndef qat():\n    return prepare_qat(ReadoutLoop())\n"
    )
    x = _spikes(30, (T, B, N_IN))
    np.savez(tmp_path / "x.npz", x=x.numpy().astype(np.uint8))
    result = CliRunner().invoke(
        main, ["verify", f"{tmp_path}/model.py:qat", "--input", str(tmp_path / "x.npz")]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "bit-exact: every spike, membrane and synaptic current agrees at every step"
    assert "readout output (values of 'fc_out'): largest difference 0% of the largest torch value" in lines
    assert "readout output_2 (values of 'fc_out'): largest difference 0% of the largest torch value" in lines
    out = tmp_path / "y.npz"
    args = ["-q", "simulate", f"{tmp_path}/model.py:net", "--input", str(tmp_path / "x.npz"), "-o", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    want = _forward(ReadoutLoop(), x)
    with np.load(out) as y:
        assert np.array_equal(y["output"], want[0].numpy()) and y["output"].dtype == np.float32
        assert np.array_equal(y["output_2"][-1], want[2].numpy())


def test_readouts_that_break_the_pattern_are_refused() -> None:
    class Mixed(ReadoutLoop):
        def forward(self, x: Tensor) -> Tensor:
            mem1 = self.lif1.init_leaky()
            rec = []
            for step in range(x.size(0)):
                _, mem1 = self.lif1(self.fc1(x[step]), mem1)
                rec.append(mem1 if step else self.fc1(x[step]))
            return torch.stack(rec)

    with pytest.raises(
        UnsupportedModuleError,
        match=r"^forward's result stacks values of several neurons, variables or layers \(fc1\(x\[step\]\), "
        r"lif1\.mem\)$",
    ):
        snncompile.trace(Mixed(), torch.zeros(4, B, N_IN))


@pytest.mark.parametrize(
    ("build", "mode", "outputs"),
    [
        (SynapticLoop, "sequence", [("lif2", "spk", None), ("lif2", "syn", None), ("lif2", "mem", None)]),
        (RLeakyLoop, "static", [("lif2", "spk", None), ("lif2", "mem", None), ("rlif1", "mem", None)]),
        (RSynapticLoop, "sequence", [("lif2", "spk", -1), ("lif2", "mem", -1)]),
        (HiddenLoop, "sequence", [("net_3", "spk", None)]),
    ],
    ids=["Synaptic", "RLeaky", "RSynaptic", "init_hidden_in_loop"],
)
def test_other_neuron_loops(build: Callable[[], nn.Module], mode: str, outputs: list[Any]) -> None:
    x = _currents(17, (T, B, N_IN) if mode == "sequence" else (B, N_IN))
    traced = check_forward(build(), x, mode)
    assert [(o.node, o.var, o.step) for o in traced.outputs] == outputs
    assert traced.single == (build is HiddenLoop)


@pytest.mark.parametrize(
    "build", [SynapticLoop, RLeakyLoop, RSynapticLoop], ids=["Synaptic", "RLeaky", "RSynaptic"]
)
def test_other_neuron_loops_qat(build: Callable[[], nn.Module]) -> None:
    sequence = build is not RLeakyLoop
    check_qat(build(), _spikes(18, (T, B, N_IN) if sequence else (B, N_IN)))


def test_compile_takes_what_forward_takes() -> None:
    """``snncompile.compile(module, target, example_input=x)`` traces a loop model from forward's own
    argument; its float graph is the folded one."""
    q = prepare_qat(Tutorial5())
    x = _spikes(19, (B, N_IN))
    prog = snncompile.compile(q, "artix7-100t", example_input=x)
    assert prog.float_graph == snncompile.trace(q, x)
    assert [prog.graph.op(n).kind for n in prog.graph.neurons()] == ["qlif", "qlif"]


# ------------------------------------------------------------------------ single-step functional glue


class StepConv(nn.Module):
    """A single-step (init_hidden=True) conv net whose pools and flatten are functional calls."""

    def __init__(self, pool: str, flatten: str) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.pool, self.flat = _POOLS[pool], _FLATTENS[flatten]
        self.conv1 = _scale_(nn.Conv2d(1, 4, 3), 0.8)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
        self.conv2 = _scale_(nn.Conv2d(4, 6, 3), 0.5 if pool == "max" else 0.9)
        self.lif2 = snn.Leaky(beta=0.85, init_hidden=True)
        self.fc1 = _scale_(nn.Linear(FLAT, N_OUT), 0.9)
        self.lif3 = snn.Leaky(beta=0.9, init_hidden=True, output=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        spk1 = self.lif1(self.pool(self.conv1(x)))
        spk2 = self.lif2(self.pool(self.conv2(spk1)))
        return self.lif3(self.fc1(self.flat(spk2)))


@pytest.mark.parametrize("pool", sorted(_POOLS))
@pytest.mark.parametrize("flatten", sorted(_FLATTENS))
def test_single_step_functional_glue_matches_snntorch(pool: str, flatten: str) -> None:
    graph, _run, _ = compare_with_snntorch(StepConv(pool, flatten), _spikes(20, (T, B, *IMG), 0.5).numpy())
    kinds = [graph.op(n).kind for n in graph]
    assert kinds.count(f"{pool}pool2d") == 2 and kinds.count("flatten") == 1
    traced = trace_forward(StepConv(pool, flatten), torch.zeros(B, *IMG))
    assert traced.input_mode == "step" and not traced.single
    assert [(o.node, o.var, o.step) for o in traced.outputs] == [("lif3", "spk", -1), ("lif3", "mem", -1)]


def test_single_step_forward_output_mapping_reproduces_one_call() -> None:
    net = StepConv("avg", "view_size")
    x = _spikes(21, (B, *IMG), 0.5)
    want = _forward(net, x)
    traced = trace_forward(net, x)
    got = traced.returned(snncompile.run_float(traced.graph, traced.sequence(x)))
    for g, w in zip(got, want, strict=True):
        assert_exact(g, w.numpy(), "returned value")


def test_pool_options_are_read() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.lif = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x: Tensor) -> Tensor:
            v = F.max_pool2d(self.conv(x), kernel_size=3, stride=2, padding=1, ceil_mode=True)
            return self.lif(F.avg_pool2d(v, 2, 1, 0, False, False, 2))

    graph = snncompile.trace(Net(), torch.zeros(1, *IMG))
    assert graph.op("max_pool2d") == MaxPool2d((3, 3), (2, 2), (1, 1), (1, 1), True)
    assert graph.op("avg_pool2d") == AvgPool2d((2, 2), (1, 1), (0, 0), False, False, 2)
    torch.manual_seed(0)
    compare_with_snntorch(Net(), _currents(22, (T, B, *IMG)).numpy(), check_activity=False)


# ------------------------------------------------------------------------------------ refusals


class _Loop(nn.Module):
    """Tutorial 5 with one line of the loop body replaced by ``body(self, x, step, state)``."""

    def __init__(self, body: Callable[..., Any], steps: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.steps = body, steps
        self.fc1 = nn.Linear(N_IN, N_HID)
        self.fc1b = nn.Linear(N_IN, N_HID)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(N_HID, N_OUT)
        self.lif2 = snn.Leaky(beta=0.8)

    def forward(self, x: Tensor) -> Any:
        state = {"mem1": self.lif1.init_leaky(), "mem2": self.lif2.init_leaky()}
        rec = []
        for step in range(self.steps):
            rec.append(self.body(self, x, step, state))
        return torch.stack(rec, dim=0)


def _standard(net: Any, cur1: Tensor, state: dict[str, Tensor], mem2: Any = None) -> Tensor:
    spk1, state["mem1"] = net.lif1(cur1, state["mem1"])
    spk2, state["mem2"] = net.lif2(net.fc2(spk1), state["mem2"] if mem2 is None else mem2)
    return spk2


def _first_layer(net: Any, x: Tensor, state: dict[str, Tensor]) -> Tensor:
    _, state["mem1"] = net.lif1(net.fc1(x), state["mem1"])
    return torch.zeros(B, N_OUT)


_X = torch.zeros(B, N_IN)
_XS = torch.zeros(4, B, N_IN)


@pytest.mark.parametrize(
    ("body", "x", "pattern"),
    [
        (
            lambda n, x, step, st: _standard(n, (n.fc1 if step % 2 == 0 else n.fc1b)(x), st),
            _X,
            r"^module 'lif1': at step 1 its input is fc1b\(x\), but at step 0 it is fc1\(x\); every step of the "
            r"loop in forward must compute the same thing$",
        ),
        (
            lambda n, x, step, st: _standard(n, n.fc1(x), st, mem2=st["mem1"] if step else None),
            _X,
            r"^module 'lif2': at step 1 its mem is the mem of module 'lif1' at step 0, not the mem it returned "
            r"at step 0; a neuron continues from its own state \(pass back what it returned, or nothing\)$",
        ),
        (
            lambda n, x, step, st: _standard(n, n.fc1(x), st, mem2=n.lif2.init_leaky() if step else None),
            _X,
            r"^module 'lif2': at step 1 its mem is a fresh zero state \(init_leaky\(\) or reset_mem\(\) inside "
            r"the time loop\?\), not the mem it returned at step 0",
        ),
        (
            lambda n, x, step, st: _standard(
                n, n.fc1(x), st, mem2=torch.ones(B, N_OUT) if step == 0 else None
            ),
            _X,
            r"^module 'lif2' starts from a nonzero mem; snncompile runs every neuron from zero state \(start it "
            r"with init_leaky\(\) or reset_mem\(\)\)$",
        ),
        (
            lambda n, x, step, st: _standard(n, n.fc1(x[3 - step]), st),
            _XS,
            r"^module 'lif1': at step 0 its input reads x\[3\]; each step of the loop in forward may read only "
            r"its own step's values",
        ),
        (
            lambda n, x, step, st: (
                _standard(n, n.fc1(x[step]), st) if step < 2 else _first_layer(n, x[step], st)
            ),
            _XS,
            r"^neuron module 'lif2' is called 2 times in forward but 'lif1' 4 times; a neuron has one state, so "
            r"call each neuron once per time step \(one module per layer\)$",
        ),
        (
            lambda n, x, step, st: _standard(n, F.relu(n.fc1(x)), st),
            _X,
            r"^call_function 'relu' in forward \(.*\) is not supported; supported: the modules .*, F\.max_pool2d, "
            r"F\.avg_pool2d, and indexing a neuron's output tuple\. F\.relu: not a spiking op",
        ),
        (
            lambda n, x, step, st: _standard(n, n.fc1(x) * 0.5, st),
            _X,
            r"^call_method 'mul' in forward \(.*\) is not supported; .*\. \*: arithmetic in forward is not an IR "
            r"op; fold scales and offsets into the weights and bias of nn\.Linear / nn\.Conv2d$",
        ),
        (
            lambda n, x, step, st: _standard(n, n.fc1(x), st) if x.sum() >= 0 else None,
            _X,
            r"^torch\.fx cannot trace _Loop: symbolically traced variables cannot be used as inputs to control "
            r"flow; and running forward on the example input, Tensor\.__bool__ reads a tensor value into Python "
            r"\(control flow or sizes that depend on the data\), which snncompile cannot follow$",
        ),
    ],
    ids=[
        "iterations_differ",
        "state_of_another_neuron",
        "state_reset_inside_loop",
        "nonzero_initial_state",
        "reads_another_step",
        "neuron_skipped_on_some_steps",
        "F.relu",
        "arithmetic",
        "data_dependent_branch",
    ],
)
def test_loop_breaking_the_pattern_is_refused(body: Callable[..., Any], x: Tensor, pattern: str) -> None:
    with pytest.raises(UnsupportedModuleError if "__bool__" not in pattern else TraceError, match=pattern):
        snncompile.trace(_Loop(body), x)


def test_sequence_shorter_than_the_loop_is_refused() -> None:
    net = _Loop(lambda n, x, step, st: _standard(n, n.fc1(x[step]), st), steps=4)
    with pytest.raises(
        UnsupportedModuleError,
        match=r"^forward runs 4 time steps over an input sequence of 6 \(x\[T, B, \.\.\.\]\); pass an example "
        r"input of 4 steps$",
    ):
        snncompile.trace(net, torch.zeros(6, B, N_IN))


@pytest.mark.parametrize(
    ("ret", "pattern"),
    [
        (
            lambda rec: torch.stack(rec).sum(0),
            r"^forward's result is the output of Tensor\.sum, which combines values of several time steps; "
            r"forward may return neuron spikes and states or a layer's values \(a readout\): one step's, or all "
            r"steps' stacked with torch\.stack\(rec, dim=0\) \(or dim=1, batch first\)$",
        ),
        (
            lambda rec: torch.stack(rec, dim=2),
            r"^forward's result is torch\.stack\(\.\.\., dim=2\); stack per-step recordings on dim 0 \(time "
            r"first\) or dim 1 \(batch first\)$",
        ),
        (
            lambda rec: torch.stack(rec[1:]),
            r"^forward's result stacks 3 values, but forward runs 4 time steps$",
        ),
        (
            lambda rec: torch.stack(rec[::-1]),
            r"^forward's result: item 0 of the stack uses the spk of module 'lif2' from step 3; record each "
            r"step's value in step order$",
        ),
    ],
    ids=["sum", "dim2", "short", "reversed"],
)
def test_unsupported_return_values_are_refused(ret: Callable[[list[Tensor]], Tensor], pattern: str) -> None:
    class Net(_Loop):
        def forward(self, x: Tensor) -> Any:
            st = {"mem1": self.lif1.init_leaky(), "mem2": self.lif2.init_leaky()}
            return ret([_standard(self, self.fc1(x), st) for _ in range(4)])

    with pytest.raises(UnsupportedModuleError, match=pattern):
        snncompile.trace(Net(lambda *a: None), _X)


def test_reshape_that_is_not_a_flatten_is_refused() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(N_IN, N_HID)
            self.lif = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x: Tensor) -> Tensor:
            return self.lif(self.fc(x.view(x.size(0), 2, -1).flatten(1)))

    with pytest.raises(
        UnsupportedModuleError,
        match=r"^Tensor\.view in forward reshapes \(3, 12\) \(batch first\) to \(3, 2, 6\); supported: merging "
        r"consecutive axes after the batch axis, as \.view\(x\.size\(0\), -1\) or \.flatten\(1\) do; use nn\.Flatten$",
    ):
        snncompile.trace(Net(), _X)


def test_view_flattening_the_batch_axis_is_refused() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(B * N_IN, N_HID)
            self.lif = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x: Tensor) -> Tensor:
            return self.lif(self.fc(x.view(-1)))

    with pytest.raises(
        UnsupportedModuleError,
        match=r"^Tensor\.view in forward reshapes \(3, 12\) \(batch first\) to \(36,\)",
    ):
        snncompile.trace(Net(), _X)


def test_functional_linear_names_the_module_form() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(N_IN, N_HID)
            self.lif = snn.Leaky(beta=0.9)

        def forward(self, x: Tensor) -> Any:
            mem = self.lif.init_leaky()
            rec = []
            for _ in range(3):
                spk, mem = self.lif(F.linear(x, self.fc.weight, self.fc.bias), mem)
                rec.append(spk)
            return torch.stack(rec)

    with pytest.raises(
        UnsupportedModuleError,
        match=r"^call_function 'linear' in forward \(.*\) is not supported; .*\. F\.linear: use nn\.Linear$",
    ):
        snncompile.trace(Net(), _X)


def test_loop_forward_failing_on_the_example_names_the_module() -> None:
    with pytest.raises(
        TraceError,
        match=r"^forward of Tutorial5 fails on the example input of shape \(3, 5\) in module 'fc1': ",
    ):
        snncompile.trace(Tutorial5(), torch.zeros(B, 5))
