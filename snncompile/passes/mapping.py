"""The mapping pass: places a fixed-point graph on a target's cores and memories, checking every limit.

Placement rules (what the cycle model and the reference core assume):

* neuron layers are placed in graph order: a layer larger than a core gets ``ceil(N / neurons_per_core)``
  cores of its own; smaller layers share a core while it has room (sequential schedule only);
* each logical memory of the image (synapse, bias, neuron, state, layers; see ``backends.image``) goes
  to the first physical memory kind that ``holds`` it and takes whole banks:
  ``ceil(bits / bank_bits)``;
* fan-in is the number of synapses one neuron sums per step (``in_features``, ``cin/groups * kh * kw``,
  plus its recurrent inputs); fan-out the number of synapses one spike drives.

A network that does not fit is refused with :class:`MappingError` naming the resource, what was needed
and what the target has. :class:`Mapping` lists every resource used against its limit.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import QLIF, AvgPool2d, Flatten, Graph, MaxPool2d, QConv2d, QCubaLIF, QLinear, SumPool2d
from snncompile.ir.ops import ConvRecurrence, DenseRecurrence, OneToOneRecurrence, Op
from snncompile.ir.qops import stored_codes
from snncompile.targets import Target

KINDS: dict[type[Op], str] = {
    QLinear: "linear",
    QConv2d: "conv2d",
    AvgPool2d: "avgpool2d",
    MaxPool2d: "maxpool2d",
    SumPool2d: "sumpool2d",
    Flatten: "flatten",
    QLIF: "lif",
    QCubaLIF: "cubalif",
}
"""The target ``layer_types`` name of each op that runs on the core (input and output are I/O)."""


class MappingError(SnnCompileError):
    """The network does not fit the target (a resource or limit is exceeded)."""


@dataclasses.dataclass(frozen=True)
class Usage:
    resource: str
    used: int
    limit: int
    unit: str

    def line(self) -> str:
        pct = 100.0 * self.used / self.limit if self.limit else 0.0
        return f"{self.resource}: {self.used:,} / {self.limit:,} {self.unit} ({pct:.1f}%)"


@dataclasses.dataclass(frozen=True)
class Mapping:
    """Where everything goes: ``cores[node]`` = first core and core count of each neuron layer,
    ``memory_bits[logical]`` = bits of each logical memory, ``usage`` = every resource against its limit."""

    target: Target
    cores: dict[str, tuple[int, int]]
    memory_bits: dict[str, int]
    memory_kind: dict[str, str]
    usage: tuple[Usage, ...]


def fan_in_out(op: Op, in_shape: tuple[int, ...]) -> tuple[int, int]:
    """Synapses summed per neuron, and synapses driven per presynaptic spike, for a synapse op."""
    if isinstance(op, QLinear):
        return int(op.weight.shape[1]), int(op.weight.shape[0])
    if isinstance(op, QConv2d):
        o, i, kh, kw = (int(d) for d in op.weight.shape)
        per_group = o // op.groups
        fan_out = per_group * math.ceil(kh / op.stride[0]) * math.ceil(kw / op.stride[1])
        return i * kh * kw, fan_out
    return 0, 0


def _recurrent_fan(op: QLIF | QCubaLIF) -> int:
    rec = op.recurrence
    if isinstance(rec, DenseRecurrence):
        return int(rec.weight.shape[1])
    if isinstance(rec, ConvRecurrence):
        return int(np.prod(rec.weight.shape[1:]))
    return 1 if isinstance(rec, OneToOneRecurrence) else 0


def map_graph(graph: Graph, target: Target, memory_bits: dict[str, int]) -> Mapping:
    """Checks ``graph`` against ``target`` (layer types, formats, fan-in/out, cores, memories)."""
    shapes = graph.shapes()
    name = target.name
    fan_in_max = fan_out_max = 0
    for n in graph.topo_order():
        op = graph.op(n)
        kind = KINDS.get(type(op))
        if kind is not None and kind not in target.limits.layer_types:
            raise MappingError(
                f"layer types: node {n!r} is a {kind} layer; {name} runs {list(target.limits.layer_types)}"
            )
        if isinstance(op, QLinear | QConv2d):
            limit = (1 << (target.weight_bits - 1)) - 1
            peak = int(np.abs(stored_codes(op)).max(initial=0))
            if peak > limit:
                raise MappingError(
                    f"weight format: node {n!r} has weight codes up to {peak}; {name} stores "
                    f"{target.weight_bits}-bit weights (max {limit})"
                )
            fi, fo = fan_in_out(op, shapes[graph.args(n)[0]])
        elif isinstance(op, QLIF | QCubaLIF):
            fi, fo = _recurrent_fan(op), _recurrent_fan(op)
            if "multiply" not in target.decay_kinds:
                _check_shift_decays(n, op, name)
            width = max(op.mem.hi.bit_length(), (-op.mem.lo - 1).bit_length()) + 1
            if width > target.state.width:
                raise MappingError(
                    f"state format: node {n!r} needs {width}-bit states; {name} has {target.state.width}"
                )
        else:
            continue
        fan_in_max, fan_out_max = max(fan_in_max, fi), max(fan_out_max, fo)
        if fi > target.limits.fan_in:
            raise MappingError(
                f"fan-in: node {n!r} sums {fi:,} synapses per neuron; {name} allows {target.limits.fan_in:,}"
            )
        if fo > target.limits.fan_out:
            raise MappingError(
                f"fan-out: node {n!r} drives {fo:,} synapses per spike; {name} allows {target.limits.fan_out:,}"
            )
    cores = _place(graph, target, shapes)
    used = max((first + count for first, count in cores.values()), default=0)
    if used > target.cores.count:
        biggest = max(graph.neurons(), key=lambda n: math.prod(shapes[n]))
        raise MappingError(
            f"cores: needs {used} cores of {target.cores.neurons_per_core:,} neurons (largest layer "
            f"{biggest!r} has {math.prod(shapes[biggest]):,} neurons), {name} has {target.cores.count}"
        )
    usage = [
        Usage("cores", used, target.cores.count, "cores"),
        Usage("fan-in", fan_in_max, target.limits.fan_in, "synapses"),
        Usage("fan-out", fan_out_max, target.limits.fan_out, "synapses"),
    ]
    placed: dict[str, str] = {}
    for logical in memory_bits:
        placed[logical] = next(m.name for m in target.memories if logical in m.holds)
    for mem_kind in target.memories:
        mine = {lg: b for lg, b in memory_bits.items() if placed[lg] == mem_kind.name}
        banks = {lg: math.ceil(b / mem_kind.bank_bits) for lg, b in mine.items()}
        total = sum(banks.values())
        if total > mem_kind.banks:
            worst = max(mine, key=lambda lg: mine[lg])
            raise MappingError(
                f"{worst} memory: needs {mine[worst]:,} bits in {mem_kind.bank_bits // 1024} Kb banks "
                f"({total} banks with {', '.join(sorted(mine))}), {name} has {mem_kind.banks}"
            )
        usage.append(
            Usage(
                f"{mem_kind.name} banks ({'/'.join(sorted(mine)) or 'unused'})",
                total,
                mem_kind.banks,
                "banks",
            )
        )
    return Mapping(target, cores, dict(memory_bits), placed, tuple(usage))


def _place(graph: Graph, target: Target, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, int]]:
    """First core and core count of each neuron layer. A layer larger than a core takes
    ``ceil(N / neurons_per_core)`` cores of its own; smaller layers share a core while it has room,
    unless the schedule is pipelined (layers then work at the same time, so each needs its own cores)."""
    per_core = target.cores.neurons_per_core
    share = target.micro.schedule == "sequential"
    cores: dict[str, tuple[int, int]] = {}
    next_core, room = 0, 0
    for n in graph.neurons():
        size = math.prod(shapes[n])
        if share and size <= room:
            cores[n] = (next_core - 1, 1)
            room -= size
            continue
        count = math.ceil(size / per_core)
        cores[n] = (next_core, count)
        next_core += count
        room = count * per_core - size if count == 1 else 0
    return cores


def _check_shift_decays(node: str, op: QLIF | QCubaLIF, target: str) -> None:
    """A shift-only core decays by ``1 - 2**-s``: codes ``2**d - 2**(d-s)`` (or 0, or exactly 1)."""
    decays = [(op.beta, op.decay_frac)] + ([(op.alpha, op.alpha_frac)] if isinstance(op, QCubaLIF) else [])
    for values, d in decays:
        ok = {0, 1 << d} | {(1 << d) - (1 << (d - s)) for s in range(1, d + 1)}
        bad = sorted({int(v) for v in np.ravel(values)} - ok)
        if bad:
            raise MappingError(
                f"decay kinds: node {node!r} has decay codes {bad[:4]} on 2^-{d}; {target} only shifts "
                "(decays 1 - 2^-s)"
            )
