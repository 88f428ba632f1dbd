"""The compile entry point: module -> float graph -> fixed-point graph -> range analysis, memory image
and mapping onto the target = Program."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from snncompile.backends.image import MemoryImage, encode
from snncompile.backends.intsim import CycleModel, CycleReport, simulate
from snncompile.backends.intsim.kernels import spike_range
from snncompile.errors import InputError, SnnCompileError, UnsupportedModuleError
from snncompile.frontend import TracedForward, trace_forward
from snncompile.interpreters.common import Outputs, Run, as_input, kept_nodes
from snncompile.ir import Graph, Input, InputGrid
from snncompile.passes import RangeReport, analyze_ranges, quantize
from snncompile.passes.mapping import Mapping, map_graph
from snncompile.quant.fixed import to_fixed
from snncompile.targets import Target, load_target


def quantize_input(graph: Graph, target: Target, x: Any) -> np.ndarray:
    """``x[T, B, ...]`` rounded (half to even) and saturated to ``target.input_bits`` codes on the
    input grid of the fixed-point ``graph``, returned as float32 values (what the hardware receives)."""
    op = graph.op(graph.input_name)
    assert isinstance(op, Input) and op.frac is not None
    limit = (1 << (target.input_bits - 1)) - 1
    codes = np.clip(to_fixed(as_input(x, op.shape), op.frac), -limit, limit)
    return (codes * 2.0**-op.frac).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Program:
    """A compiled network: the fixed-point graph for a target, with what quantization did to it.

    ``notes`` lists every value that was rounded (empty for a QAT model read exactly) and warnings
    about the model as given (a threshold no membrane can cross); ``exact``: nothing was rounded, the
    program is the model (warnings aside); ``ranges`` is
    the static range analysis, whose ``verdict`` says whether a float32 (or only float64) QAT forward
    reproduces the integer run bit for bit. ``calibration_run`` summarises a run of the program on the
    calibration inputs (cycles, latency, energy, saturations, firing rates) when there were any.
    """

    float_graph: Graph
    graph: Graph
    target: Target
    notes: tuple[str, ...]
    exact: bool
    ranges: RangeReport
    input_max: int
    mapping: Mapping
    memories: dict[str, MemoryImage]
    calibration_run: dict[str, Any] | None = None

    @property
    def input_frac(self) -> int:
        op = self.graph.op(self.graph.input_name)
        assert isinstance(op, Input) and op.frac is not None
        return op.frac

    @functools.cached_property
    def cycle_model(self) -> CycleModel:
        """The target's cycle model of this program, built on first use and kept."""
        return CycleModel(self.graph, self.target)

    def quantize_input(self, x: Any) -> np.ndarray:
        """Float inputs rounded (half to even) and saturated onto the program's input grid, as floats."""
        return quantize_input(self.graph, self.target, x)

    def simulate(self, x: Any) -> Simulation:
        """Runs the program (fast engine, bit-identical to the reference interpreter) on ``x[T, B, *input_shape]``: spikes, or (for a program compiled with
        current calibration data) values on its input grid, see :meth:`quantize_input`."""
        op = self.graph.op(self.graph.input_name)
        assert isinstance(op, Input)
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        values = (
            x
            if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.uint8, np.bool_)
            else as_input(x, op.shape)
        )
        found = spike_range(values)  # one pass, no copy; the engine checks the shape and the grid
        if self.input_max == 1 and (found is None or found[0] < 0 or found[1] > 1):
            raise InputError(
                "this program was compiled for spike inputs (0/1); compile with calibration data holding "
                "currents to run currents"
            )
        model = self.cycle_model
        run = simulate(self.graph, values, keep=(*model.event_nodes, *kept_nodes(self.graph)))
        run = dataclasses.replace(run, output=run.outputs[0])
        out = self.graph.output_name
        return Simulation(run.output, run.states.get(out, {}).get("mem"), run, model.count(run, run.values))


@dataclasses.dataclass(frozen=True)
class Simulation:
    """``spikes``: the first output's codes (T, B, *output_shape): spike codes for a neuron output;
    ``membrane``: the membrane codes of the neuron it reads (on the grid of its state format), if any;
    ``outputs``: every output's codes, by name and position (:class:`Outputs`); ``run``: every neuron
    node, with saturation counts; ``cycles``: the target's cycle model of this run."""

    spikes: np.ndarray
    membrane: np.ndarray | None
    run: Run
    cycles: CycleReport

    @property
    def outputs(self) -> Outputs:
        return self.run.outputs


def compile(
    module: nn.Module,
    target: str | Target = "default",
    example_input: Any = None,
    calibration: Any = None,
    approximate_state_quant: bool = False,
) -> Program:
    """Traces, quantizes and analyses ``module`` for ``target``.

    ``example_input`` is what forward takes (see :func:`snncompile.frontend.trace_forward`);
    ``calibration`` is the per-step input ``x[T, B, *input_shape]`` (numpy or torch), needed for float
    models (post-training quantization) and optional for QAT models. Without ``example_input`` the
    module is traced from ``calibration`` (:func:`trace_sequence`).

    The input format comes from the data: spikes (0/1) unless ``calibration``, or else the example,
    holds other values, whose grid is then read from them (an example of currents without calibration
    data is its own calibration: a QAT model stays exact when the example's values lie on a grid).
    ``approximate_state_quant`` accepts snnTorch ``state_quant`` tables that no fixed-point format
    reproduces (see :func:`snncompile.passes.quantize`).
    """
    calib = None
    if calibration is not None:
        if isinstance(calibration, torch.Tensor):
            calibration = calibration.detach().cpu().numpy()
        calib = np.asarray(calibration)
        if calib.ndim < 3:
            raise InputError(f"calibration has shape {calib.shape}; expected (T, B, *input_shape)")
    if example_input is not None:
        traced = trace_forward(module, example_input)
    elif calib is not None:
        traced = trace_sequence(module, calib)
    else:
        raise InputError("compile needs example_input (what forward takes) or calibration (x[T, B, ...])")
    if calib is None and example_input is not None:
        # a float model is refused here: it needs calibration
        program = compile_graph(traced.graph, target, None, approximate_state_quant)
        example = traced.sequence(example_input)
        if np.all((example == 0) | (example == 1)):
            return program
        calib = example  # a QAT model fed currents: its input grid comes from the example
    return compile_graph(traced.graph, target, calib, approximate_state_quant)


def _placed(graph: Graph, target: Target) -> tuple[dict[str, MemoryImage], Mapping]:
    """The memory image of a fixed-point graph and its mapping onto ``target`` (MappingError if it does
    not fit)."""
    memories = encode(graph, target)
    return memories, map_graph(graph, target, {name: m.depth * m.width for name, m in memories.items()})


def check_fit(graph: Graph, target: str | Target, approximate_state_quant: bool = False) -> Mapping:
    """The mapping of the float ``graph`` onto ``target``, or the :class:`~snncompile.passes.mapping.MappingError` saying what does
    not fit, at once: the graph is quantized on a single zero input step instead of calibration data.
    What the mapping checks (layer kinds, fan-in and fan-out, cores, memory banks, weight, state and
    decay formats) depends on the graph's shapes, weights and the target, never on the calibration
    values, so this is the mapping the compile with calibration data will find."""
    tgt = load_target(target)
    op = graph.op(graph.input_name)
    assert isinstance(op, Input)
    probe = quantize(graph, tgt, np.zeros((1, 1, *op.shape), np.float32), approximate_state_quant)
    return _placed(probe.graph, tgt)[1]


def trace_sequence(module: nn.Module, x: Any) -> TracedForward:
    """Traces ``module`` from a per-step input ``x[T, B, *input_shape]``, with what its forward takes:
    one step ``x[0]`` (a single-step module, or a loop over a static input), or the whole sequence (a
    loop over ``x[step]``, found when forward indexes its one-step example along time), batch first
    (``x`` with its first two axes swapped) when forward reads its steps as ``x[:, step]``."""
    seq = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if seq.ndim < 3:
        raise InputError(f"the input has shape {tuple(seq.shape)}; expected (T, B, *input_shape)")
    errors: list[SnnCompileError] = []
    # one step; the sequence read as x[step]; the sequence batch first, read as x[:, step]
    for example, axis in ((seq[0], None), (seq, 0), (seq.transpose(0, 1).contiguous(), 1)):
        try:
            traced = trace_forward(module, example)
        except SnnCompileError as e:
            errors.append(e)
            continue
        if axis is None and (traced.input_mode != "sequence" or traced.graph.whole_sequence):
            return traced
        if axis is not None and traced.input_mode == "sequence" and traced.time_axis == axis:
            return traced
    if errors:
        raise errors[0]
    raise UnsupportedModuleError(
        f"forward of {type(module).__name__} reads its input step by step, but neither as x[step] of "
        "x[T, B, ...] nor as x[:, step] of x[B, T, ...]"
    )


def compile_graph(
    graph: Graph,
    target: str | Target = "default",
    calibration: Any = None,
    approximate_state_quant: bool = False,
) -> Program:
    """Quantizes, analyses and maps a float graph (traced, imported from NIR or loaded) for ``target``.

    With calibration data, whether the network fits the target is checked first (:func:`check_fit`),
    so a network that cannot fit is refused before the calibration run."""
    tgt = load_target(target)
    calib = None
    op = graph.op(graph.input_name)
    assert isinstance(op, Input)
    if calibration is not None:
        calib = as_input(calibration, op.shape)
        check_fit(graph, tgt, approximate_state_quant)
    result = quantize(graph, tgt, calib, approximate_state_quant)
    declared = any(isinstance(graph.op(n), InputGrid) for n in graph)  # the model quantizes currents
    binary = not declared and (calib is None or bool(np.all((calib == 0) | (calib == 1))))
    input_max = 1 if binary else 1 << (tgt.input_bits - 1)
    ranges = analyze_ranges(result.graph, input_max)
    memories, mapping = _placed(result.graph, tgt)
    program = Program(
        graph, result.graph, tgt, result.notes, result.exact, ranges, input_max, mapping, memories
    )
    if calib is None:
        return program
    sim = program.simulate(program.quantize_input(calib))
    summary: dict[str, Any] = {
        **sim.cycles.summary(),
        "cycles_per_step_mean": float(sim.cycles.cycles.mean()),
        "saturations": dict(sim.run.saturations),
        "firing_rates": {n: float(np.count_nonzero(s) / s.size) for n, s in sim.run.spikes.items()},
        "samples": int(calib.shape[1]),
        "steps": int(calib.shape[0]),
    }
    return dataclasses.replace(program, calibration_run=summary)
