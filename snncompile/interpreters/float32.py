"""The float interpreter: runs a float IR graph exactly as snnTorch float32 computes it.

Bit-identity with snnTorch comes from doing the same torch float32 operations in the same order on
tensors of the same shapes: synapse ops run once per time step on ``x[t]`` of shape (B, ...) (or once
over all ``T*B`` rows for ``whole_sequence`` graphs, as ``torch.nn.RNN`` does), and each neuron's update
follows its op's docstring term by term. Nodes are evaluated layer by layer over the whole sequence,
which computes the same values as snnTorch's step-by-step loop because no node reads a later node's
state.

The rules live in one table, :data:`EVAL`, keyed by op type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from snncompile.errors import GraphError
from snncompile.interpreters.common import Run, as_input, kept_nodes, output_value
from snncompile.ir import (
    LIF,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    ConvRecurrence,
    CubaLIF,
    DenseRecurrence,
    Flatten,
    Graph,
    Input,
    InputGrid,
    LevelTable,
    Linear,
    MaxPool2d,
    Op,
    Output,
    Quantizer,
    Recurrence,
    Scale,
    SumPool2d,
)
from snncompile.quant.fixed import check_rounding, quantize_tensor

States = dict[str, Tensor]
Rule = Callable[[Any, list[Tensor], bool], tuple[Tensor, States]]


def _t(a: np.ndarray | None) -> Tensor | None:
    return None if a is None else torch.tensor(a)


def _tt(a: np.ndarray) -> Tensor:
    return torch.tensor(a)


def _per_step(fn: Callable[[Tensor], Tensor], x: Tensor, whole_sequence: bool) -> Tensor:
    """Applies a stateless op to every step: per ``x[t]``, or to all ``T*B`` rows at once."""
    if whole_sequence:
        y = fn(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])
    return torch.stack([fn(x[t]) for t in range(x.shape[0])])


def _quantize(q: Quantizer | None) -> Callable[[Tensor], Tensor]:
    if q is None:
        return lambda v: v
    if isinstance(q, LevelTable):
        levels = _tt(q.levels)

        def level_table(v: Tensor) -> Tensor:
            # snnTorch's StateQuant: the first level at minimal |level - v|
            idx = torch.min(torch.abs(levels - v.reshape(-1, 1)), dim=-1)[1]
            return levels[idx].reshape(v.shape)

        return level_table
    frac, lo, hi, mode = q.frac, q.lo, q.hi, check_rounding(q.rounding)
    return lambda v: quantize_tensor(v, frac, lo, hi, mode)


def _recurrent(rec: Recurrence | None) -> Callable[[Tensor], Tensor] | None:
    if rec is None:
        return None
    if isinstance(rec, DenseRecurrence):
        w, b = _tt(rec.weight), _t(rec.bias)
        return lambda s: F.linear(s, w, b)
    if isinstance(rec, ConvRecurrence):
        cw, cb, pad = _tt(rec.weight), _t(rec.bias), rec.padding
        return lambda s: F.conv2d(s, cw, cb, padding=pad)
    v = _tt(rec.weight)
    return lambda s: s * v


def _spike(mem: Tensor, thr: Tensor) -> Tensor:
    """snnTorch's spike function forward: ``(mem - thr > 0).float()`` (strict)."""
    return (mem - thr > 0).float()


def _immediate_reset(
    op: LIF | CubaLIF, mem: Tensor, spk: Tensor, r: Tensor, thr: Tensor, gsf: Tensor
) -> Tensor:
    """snnTorch's ``reset_delay=False`` correction: ``d = s/gsf - r``, then subtract or zero."""
    d = spk / gsf - r
    if op.reset == "subtract":
        return mem - d * thr
    if op.reset == "zero":
        return mem - d * mem
    return mem


def eval_lif(op: LIF, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    (x,) = args
    beta, thr, gsf = _tt(op.beta), _tt(op.threshold), _tt(op.graded)
    bias = _t(op.bias)
    rec = _recurrent(op.recurrence)
    q = _quantize(op.mem_quant)
    mem = torch.zeros_like(x[0])
    spk = torch.zeros_like(x[0])
    spikes, mems = [], []
    for t in range(x.shape[0]):
        r = _spike(mem, thr)
        if op.reset == "zero" and op.zero_mode == "keep_input":
            mem = (1 - r) * mem
        v = beta * mem
        if bias is not None:
            v = v + bias
        v = v + x[t]
        if rec is not None:
            v = v + rec(spk)
        if op.reset == "subtract":
            v = v - r * thr
        elif op.reset == "zero" and op.zero_mode == "drop_update":
            v = v - r * v
        mem = q(v)
        if op.floor is not None:
            mem = torch.clamp_min(mem, op.floor)
        spk = _spike(mem, thr) * gsf
        if not op.reset_delay:
            mem = _immediate_reset(op, mem, spk, r, thr, gsf)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), {"mem": torch.stack(mems)}


def eval_cubalif(op: CubaLIF, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    (x,) = args
    alpha, beta, thr, gsf = _tt(op.alpha), _tt(op.beta), _tt(op.threshold), _tt(op.graded)
    rec = _recurrent(op.recurrence)
    qm, qs = _quantize(op.mem_quant), _quantize(op.syn_quant)
    mem = torch.zeros_like(x[0])
    syn = torch.zeros_like(x[0])
    spk = torch.zeros_like(x[0])
    spikes, mems, syns = [], [], []
    for t in range(x.shape[0]):
        r = _spike(mem, thr)
        cur = alpha * syn + x[t]
        if rec is not None:
            cur = cur + rec(spk)
        v = beta * mem + cur
        if op.reset == "subtract":
            v = v - r * thr
        elif op.reset == "zero":
            v = v - v * r
        mem, syn = qm(v), qs(cur)
        spk = _spike(mem, thr) * gsf
        if not op.reset_delay:
            mem = _immediate_reset(op, mem, spk, r, thr, gsf)
        spikes.append(spk)
        mems.append(mem)
        syns.append(syn)
    return torch.stack(spikes), {"mem": torch.stack(mems), "syn": torch.stack(syns)}


def eval_linear(op: Linear, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    w, b = _tt(op.weight), _t(op.bias)
    return _per_step(lambda v: F.linear(v, w, b), args[0], whole_sequence), {}


def eval_conv2d(op: Conv2d, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    w, b = _tt(op.weight), _t(op.bias)

    def conv(v: Tensor) -> Tensor:
        return F.conv2d(v, w, b, op.stride, op.padding, op.dilation, op.groups)

    return _per_step(conv, args[0], whole_sequence), {}


def eval_avgpool(op: AvgPool2d, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    def pool(v: Tensor) -> Tensor:
        return F.avg_pool2d(
            v, op.kernel, op.stride, op.padding, op.ceil_mode, op.count_include_pad, op.divisor_override
        )

    return _per_step(pool, args[0], whole_sequence), {}


def eval_maxpool(op: MaxPool2d, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    def pool(v: Tensor) -> Tensor:
        return F.max_pool2d(v, op.kernel, op.stride, op.padding, op.dilation, op.ceil_mode)

    return _per_step(pool, args[0], whole_sequence), {}


def eval_sumpool(op: SumPool2d, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    def pool(v: Tensor) -> Tensor:
        return F.avg_pool2d(v, op.kernel, op.stride, op.padding, divisor_override=1)

    return _per_step(pool, args[0], whole_sequence), {}


def eval_flatten(op: Flatten, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    (x,) = args
    return x.flatten(*op.batched_dims()), {}


def eval_scale(op: Scale, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    return args[0] * _tt(op.scale), {}


def eval_batchnorm(op: BatchNorm, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    """torch's own eval-mode batch_norm on every step ``x[t]`` (B, C, ...), as the module runs it."""
    mean, var, w, b = _tt(op.mean), _tt(op.var), _t(op.weight), _t(op.bias)
    return _per_step(
        lambda v: F.batch_norm(v, mean, var, w, b, False, 0.0, op.eps), args[0], whole_sequence
    ), {}


def eval_inputgrid(op: InputGrid, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    return quantize_tensor(args[0], op.frac, op.lo, op.hi, "half_even"), {}


def eval_output(op: Output, args: list[Tensor], whole_sequence: bool) -> tuple[Tensor, States]:
    return args[0], {}


EVAL: dict[type[Op], Rule] = {
    LIF: eval_lif,
    CubaLIF: eval_cubalif,
    Linear: eval_linear,
    Conv2d: eval_conv2d,
    AvgPool2d: eval_avgpool,
    MaxPool2d: eval_maxpool,
    SumPool2d: eval_sumpool,
    Flatten: eval_flatten,
    Scale: eval_scale,
    BatchNorm: eval_batchnorm,
    InputGrid: eval_inputgrid,
    Output: eval_output,
}
"""The float32 rule of every op except Input (whose value is the run's input)."""


def run_float(graph: Graph, x: Any) -> Run:
    """Runs ``graph`` on ``x[T, B, *input_shape]`` from zero state, in float32 as snnTorch does.

    Every output is in ``Run.outputs``; ``Run.values`` keeps the stateless nodes that outputs read."""
    graph.verify()
    inp = graph.input_name
    op_in = graph.op(inp)
    assert isinstance(op_in, Input)
    values: dict[str, Tensor] = {inp: torch.from_numpy(as_input(x, op_in.shape))}
    spikes: dict[str, np.ndarray] = {}
    states: dict[str, dict[str, np.ndarray]] = {}
    with torch.no_grad():
        for name in graph.topo_order():
            if name == inp:
                continue
            op = graph.op(name)
            rule = EVAL.get(type(op))
            if rule is None:
                raise GraphError(f"the float interpreter has no rule for {op.kind} (node {name!r})")
            out, st = rule(op, [values[a] for a in graph.args(name)], graph.whole_sequence)
            values[name] = out
            if st:
                spikes[name] = out.numpy()
                states[name] = {k: v.numpy() for k, v in st.items()}
    kept = {n: values[n].numpy() for n in kept_nodes(graph)}
    first = output_value(graph, graph.outputs[0], spikes, states, kept)
    return Run(graph, first, spikes, states, values=kept)
