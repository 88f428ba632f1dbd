"""Verification: the torch model against the integer simulator, with the first divergence.

The torch side is the real module, run step by step as snnTorch runs it (forward hooks record every
neuron layer's spikes and its ``mem``/``syn`` after each step; LeakyParallel takes the whole sequence,
and its membrane, which the module does not expose, comes from the float interpreter, which is
bit-identical to it). The hardware side is the fast integer engine on a compiled program or a build's
decoded image.

* A QAT program (read exactly) must agree bit for bit: every spike, and every membrane and synaptic
  current as the same real number (``float == code * 2**-frac``). The first divergence names the time
  step, node, sample, neuron, variable, both values and both values one step before.
* A post-training program is judged by spike agreement per layer (and accuracy when labels are given);
  it passes when the output layer's disagreement is at most ``tolerance``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import snntorch as snn
import torch
from torch import nn

from snncompile.backends.intsim import simulate
from snncompile.errors import InconsistentModelError, InputError
from snncompile.frontend import unroll
from snncompile.frontend.traced import TracedForward
from snncompile.interpreters.common import Run, as_input, kept_nodes
from snncompile.interpreters.float32 import run_float
from snncompile.ir import QLIF, Graph, QCubaLIF
from snncompile.quant.qat import QuantLeakyParallel

_VARIABLES = ("spikes", "mem", "syn")
_NAMES = {"spikes": "spike", "mem": "membrane", "syn": "synaptic current"}


def run_torch(module: nn.Module, traced: TracedForward, x: np.ndarray) -> Run:
    """The real module in eval mode on ``x[T, B, ...]`` from zero state, recording every neuron node of
    the traced graph (hooks), and what forward returns for outputs that read a layer rather than a
    neuron (``Run.values``). The module is left as it was (training flag, neuron states).

    A single-step forward is called once per step; a loop over ``x[step]`` (or a LeakyParallel model)
    once on the whole sequence (batch first for a loop over ``x[:, step]``); a loop over a static input
    once on ``x[0]``, which needs ``x`` to be that input repeated over the loop's steps. A readout that
    a loop returns at one step only (e.g. a Linear applied after the loop) has its other steps read
    from the float interpreter, which is bit-identical to torch (checked at the returned step).
    """
    graph = traced.graph
    xt = torch.from_numpy(as_input(x, graph.op(graph.input_name).out_shape([])))
    if traced.input_mode == "static" and (xt.shape[0] != traced.steps or not bool((xt == xt[0]).all())):
        raise InputError(
            f"forward of {type(module).__name__} runs {traced.steps} steps of one static input; x must "
            f"be that input repeated {traced.steps} times (got {xt.shape[0]} steps"
            f"{'' if xt.shape[0] != traced.steps else ' that differ'})"
        )
    neurons = {n: module.get_submodule(graph.source(n)) for n in graph.neurons()}
    spikes: dict[str, list[torch.Tensor]] = {n: [] for n in neurons}
    states: dict[str, dict[str, list[torch.Tensor]]] = {n: {} for n in neurons}

    def recorder(node: str) -> Any:
        def hook(mod: nn.Module, args: Any, out: Any) -> None:
            spikes[node].append((out[0] if isinstance(out, tuple) else out).detach().clone())
            for var in ("syn", "mem"):
                value = getattr(mod, var, None)
                if isinstance(value, torch.Tensor) and not isinstance(
                    mod, snn.LeakyParallel | QuantLeakyParallel
                ):
                    states[node].setdefault(var, []).append(value.detach().clone())

        return hook

    with unroll.preserved(module):
        module.eval()
        handles = [m.register_forward_hook(recorder(n)) for n, m in neurons.items()]
        try:
            for m in neurons.values():  # zero state: snnTorch re-initialises a state of the wrong shape
                for var in ("mem", "syn", "spk"):
                    if isinstance(getattr(m, var, None), torch.Tensor):
                        setattr(m, var, torch.zeros(0))
            with torch.no_grad():
                if traced.input_mode == "step":
                    per_step = [_flat(module(xt[t])) for t in range(xt.shape[0])]
                    returned = [torch.stack(v) for v in zip(*per_step, strict=True)]
                elif traced.input_mode == "static":
                    returned = _flat(module(xt[0]))
                else:  # the sequence, batch first when forward reads x[:, step]
                    returned = _flat(module(xt if traced.time_axis == 0 else xt.transpose(0, 1)))
        finally:
            for h in handles:
                h.remove()
    if len(returned) != len(graph.outputs):
        raise InconsistentModelError(
            f"forward of {type(module).__name__} returned {len(returned)} values, its trace {len(graph.outputs)}"
        )
    # a loop forward that returns a readout at one step only computes no other step of it
    one_step = [
        o for o in traced.outputs if o.var == "value" and o.step is not None and traced.input_mode != "step"
    ]
    float_run = run_float(graph, x) if graph.whole_sequence or one_step else None
    spk = {n: (v[0] if graph.whole_sequence else torch.stack(v)).numpy() for n, v in spikes.items()}
    st: dict[str, dict[str, np.ndarray]] = {}
    for n in neurons:
        if float_run is not None and graph.whole_sequence:
            st[n] = float_run.states[n]
        else:
            st[n] = {var: torch.stack(v).numpy() for var, v in states[n].items()}
    values: dict[str, np.ndarray] = {}  # (T, B, ...), as the graph's run has them
    for pos, (out, r) in enumerate(zip(traced.outputs, returned, strict=True)):
        if out.var != "value":
            continue
        if out not in one_step:
            values[out.node] = r.numpy() if out.axis == 0 else r.numpy().swapaxes(0, 1)
            continue
        # the other steps from the float interpreter (bit-identical to torch), checked at the step forward returns
        assert float_run is not None and out.step is not None
        full = float_run.outputs[out.output]
        if not np.array_equal(full[out.step], r.numpy()):
            raise InconsistentModelError(
                f"forward of {type(module).__name__}: its returned value {pos} (the values of "
                f"{graph.source(out.node)!r} at step {out.step}) differs from the traced graph's"
            )
        values[out.node] = full
    run = Run(graph, np.zeros(0), spk, st, values=values)
    return dataclasses.replace(run, output=run.outputs[0])


def _flat(out: Any) -> list[torch.Tensor]:
    """Forward's return value as a flat list of tensors (a neuron's (spk, mem) tuple spread out)."""
    if isinstance(out, tuple | list):
        return [t for item in out for t in _flat(item)]
    return [out]


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The first disagreement between the torch model and the hardware."""

    step: int
    node: str
    source: str
    sample: int
    neuron: tuple[int, ...]
    variable: str
    torch_value: float
    hardware_value: float
    torch_before: float | None
    hardware_before: float | None

    def text(self) -> str:
        where = ", ".join(str(i) for i in self.neuron)
        before = (
            "no earlier step"
            if self.torch_before is None
            else f"one step before: torch {self.torch_before:.10g}, hardware {self.hardware_before:.10g}"
        )
        return (
            f"first divergence at time step {self.step}, node {self.node!r} (module {self.source!r}), "
            f"sample {self.sample}, neuron [{where}], {_NAMES[self.variable]}: torch {self.torch_value:.10g}, "
            f"hardware {self.hardware_value:.10g} ({before})"
        )


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """``agreement``: spike agreement per neuron node; ``readouts``: per output that reads a layer
    rather than a neuron (a linear readout), the largest ``|torch - hardware|`` relative to the
    largest ``|torch|``; ``hardware``: node -> variable -> real values (T, B, ...)."""

    exact_expected: bool
    divergence: Divergence | None
    agreement: dict[str, float]
    readouts: dict[str, float]
    accuracy: tuple[float, float] | None
    tolerance: float
    torch_run: Run
    hardware: dict[str, dict[str, np.ndarray]]

    @property
    def output_node(self) -> str:
        return self.torch_run.graph.output_name

    @property
    def passed(self) -> bool:
        if self.exact_expected:
            return self.divergence is None and not any(self.readouts.values())
        return 1.0 - self.agreement.get(self.output_node, 1.0) <= self.tolerance and all(
            e <= self.tolerance for e in self.readouts.values()
        )

    def text(self) -> str:
        lines = []
        if self.exact_expected:
            lines.append(
                "bit-exact: every spike, membrane and synaptic current agrees at every step"
                if self.divergence is None
                else self.divergence.text()
            )
        lines.append(
            "spike agreement per layer: "
            + ", ".join(f"{n} {100 * a:.2f}%" for n, a in self.agreement.items())
        )
        graph = self.torch_run.graph
        for o, err in self.readouts.items():
            node = graph.output_source(o)[0]
            lines.append(
                f"readout {o} (values of {node!r}): largest difference {100 * err:.4g}% of the largest torch "
                f"value{'' if self.exact_expected else f' (tolerance {100 * self.tolerance:.2f}%)'}"
            )
        if self.accuracy is not None:
            lines.append(
                f"accuracy: torch {100 * self.accuracy[0]:.2f}%, hardware {100 * self.accuracy[1]:.2f}%"
            )
        if not self.exact_expected and self.output_node in self.agreement:
            lines.append(
                f"criterion: output spike disagreement {100 * (1 - self.agreement[self.output_node]):.2f}% "
                f"<= tolerance {100 * self.tolerance:.2f}%: {'pass' if self.passed else 'FAIL'}"
            )
        elif not self.exact_expected:
            lines.append(
                f"criterion: readout differences <= tolerance {100 * self.tolerance:.2f}%: "
                f"{'pass' if self.passed else 'FAIL'}"
            )
        return "\n".join(lines)


def hardware_values(graph: Graph, run: Run) -> dict[str, dict[str, np.ndarray]]:
    """A fixed-point run's spikes and states as real numbers (codes times their grid)."""
    fracs = graph.fracs()
    out: dict[str, dict[str, np.ndarray]] = {}
    for n in graph.neurons():
        op = graph.op(n)
        assert isinstance(op, QLIF | QCubaLIF)
        out[n] = {"spikes": run.spikes[n] * 2.0 ** -fracs[n]}
        for var, codes in run.states[n].items():
            out[n][var] = codes * 2.0 ** -getattr(op, var).frac
    return out


def first_divergence(
    torch_run: Run, hardware: dict[str, dict[str, np.ndarray]], graph: Graph
) -> Divergence | None:
    best: tuple[int, int, int] | None = None
    found: Divergence | None = None
    for order, n in enumerate(graph.neurons()):
        ref = {"spikes": torch_run.spikes[n], **torch_run.states[n]}
        for v_order, var in enumerate(_VARIABLES):
            if var not in ref or var not in hardware[n]:
                continue
            a, b = ref[var].astype(np.float64), hardware[n][var]
            diff = a != b
            if not diff.any():
                continue
            t = int(np.argmax(diff.reshape(diff.shape[0], -1).any(axis=1)))
            key = (t, order, v_order)
            if best is not None and key >= best:
                continue
            best = key
            flat = int(np.argmax(diff[t].reshape(-1)))
            idx = tuple(int(i) for i in np.unravel_index(flat, diff.shape[1:]))
            now, before = a[t].reshape(-1), b[t].reshape(-1)
            prev_a = None if t == 0 else float(a[t - 1].reshape(-1)[flat])
            prev_b = None if t == 0 else float(b[t - 1].reshape(-1)[flat])
            found = Divergence(
                t,
                n,
                graph.source(n),
                idx[0],
                idx[1:],
                var,
                float(now[flat]),
                float(before[flat]),
                prev_a,
                prev_b,
            )
    return found


def verify(
    module: nn.Module | None,
    traced: TracedForward | Graph,
    graph: Graph,
    x: np.ndarray,
    hardware_x: np.ndarray,
    *,
    exact: bool,
    labels: np.ndarray | None = None,
    tolerance: float = 0.05,
) -> VerifyReport:
    """Runs ``module`` on ``x`` and the fixed-point ``graph`` on ``hardware_x`` and compares them.

    ``traced`` is the module's trace (its float graph shares node names with ``graph``), or only its
    float graph for a single-step module (called once per step). Without a module (a NIR model) the
    float interpreter's run of the float graph is the reference. Labels give the accuracy of the first
    output's prediction (the argmax of its sum over time), per sample.
    """
    if isinstance(traced, Graph):
        traced = TracedForward.of_graph(traced)
    float_graph = traced.graph
    _check_same_network(float_graph, graph)
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != x.shape[1]):
        raise InputError(
            f"labels y have shape {labels.shape}; expected ({x.shape[1]},), one label per sample of x "
            f"{x.shape}"
        )
    torch_run = run_torch(module, traced, x) if module is not None else run_float(float_graph, x)
    hw_run = simulate(graph, hardware_x, keep=kept_nodes(graph))
    hardware = hardware_values(graph, hw_run)
    agreement = {
        n: float(np.mean(torch_run.spikes[n].astype(np.float64) == hardware[n]["spikes"]))
        for n in graph.neurons()
    }
    fracs = graph.fracs()
    neurons = set(graph.neurons())
    readouts: dict[str, float] = {}
    hw_outputs = {o: hw_run.outputs[o] * 2.0 ** -fracs[o] for o in graph.outputs}
    for o in graph.outputs:
        node, state = graph.output_source(o)
        if state is None and node not in neurons:
            want = torch_run.outputs[o].astype(np.float64)
            scale = max(float(np.abs(want).max(initial=0)), float(np.finfo(np.float32).tiny))
            readouts[o] = float(np.abs(want - hw_outputs[o]).max(initial=0)) / scale
    accuracy = None
    if labels is not None:
        first = graph.outputs[0]
        accuracy = (
            float(np.mean(_prediction(torch_run.outputs[first]) == labels)),
            float(np.mean(_prediction(hw_outputs[first]) == labels)),
        )
    divergence = first_divergence(torch_run, hardware, graph) if exact else None
    return VerifyReport(exact, divergence, agreement, readouts, accuracy, tolerance, torch_run, hardware)


def _prediction(values: np.ndarray) -> np.ndarray:
    """Per sample, the index of the largest sum over time (spike count, or summed readout)."""
    return values.reshape(*values.shape[:2], -1).sum(axis=0).argmax(axis=1)


def _check_same_network(float_graph: Graph, graph: Graph) -> None:
    """The build (or program) must come from the model: the same neuron and output nodes, same shapes."""
    ours, theirs = float_graph.shapes(), graph.shapes()
    wanted = [*float_graph.neurons(), *float_graph.outputs]
    found = [*graph.neurons(), *graph.outputs]
    if wanted != found or any(ours[n] != theirs[n] for n in wanted):
        model = ", ".join(f"{n}{list(ours[n])}" for n in wanted)
        program = ", ".join(f"{n}{list(theirs[n])}" for n in found)
        raise InputError(
            f"the program was not compiled from this model: the model has neuron and output nodes {model}, "
            f"the program {program}"
        )


def plot(report: VerifyReport, directory: str | Path) -> list[Path]:
    """Spike rasters (torch | hardware) for the output and one hidden layer, membrane traces around the
    first divergence, and a per-layer agreement chart, as PNG files in ``directory``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    graph = report.torch_run.graph
    neurons = graph.neurons()
    shown = [neurons[0], report.output_node] if len(neurons) > 1 else [report.output_node]
    written = []
    fig, axes = plt.subplots(len(shown), 2, figsize=(10, 3 * len(shown)), squeeze=False)
    for row, n in enumerate(shown):
        for col, (who, values) in enumerate(
            (("torch", report.torch_run.spikes[n]), ("hardware", report.hardware[n]["spikes"]))
        ):
            ax = axes[row][col]
            raster = values[:, 0].reshape(values.shape[0], -1).T
            ax.imshow(raster != 0, aspect="auto", cmap="Greys", interpolation="nearest")
            ax.set_title(f"{n} — {who} (sample 0)")
            ax.set_xlabel("time step")
            ax.set_ylabel("neuron")
    fig.tight_layout()
    written.append(root / "raster.png")
    fig.savefig(written[-1], dpi=80)
    plt.close(fig)

    d = report.divergence
    node = d.node if d is not None else shown[0]
    sample = d.sample if d is not None else 0
    flat_index = (
        int(np.ravel_multi_index(d.neuron, report.hardware[node]["mem"].shape[2:])) if d is not None else 0
    )
    fig, ax = plt.subplots(figsize=(10, 4))
    t_mem = report.torch_run.states[node]["mem"][:, sample].reshape(
        report.torch_run.states[node]["mem"].shape[0], -1
    )
    h_mem = report.hardware[node]["mem"][:, sample].reshape(t_mem.shape)
    for k in range(max(0, flat_index - 1), min(t_mem.shape[1], flat_index + 2)):
        ax.plot(t_mem[:, k], label=f"torch neuron {k}")
        ax.plot(h_mem[:, k], "--", label=f"hardware neuron {k}")
    if d is not None:
        ax.axvline(d.step, color="red", linestyle=":", label=f"first divergence (t={d.step})")
    ax.set_title(f"membrane of {node}, sample {sample}")
    ax.set_xlabel("time step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(root / "membrane.png")
    fig.savefig(written[-1], dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(4, len(report.agreement)), 3))
    ax.bar(list(report.agreement), [100 * a for a in report.agreement.values()])
    ax.set_ylabel("spike agreement (%)")
    ax.set_ylim(min(90.0, 100 * min(report.agreement.values()) - 1), 100.5)
    fig.tight_layout()
    written.append(root / "agreement.png")
    fig.savefig(written[-1], dpi=80)
    plt.close(fig)
    return written
