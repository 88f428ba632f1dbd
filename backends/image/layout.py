"""The image layout: a fixed-point graph as five memories, and back.

Memories (image format version 1):

* ``layers``: the layer table, one record of :data:`RECORD` signed 32-bit words per node in graph order
  (fields in :data:`RECORD_FIELDS`; unused fields are 0). ``arg`` is the index of the input node;
  an output record's ``out_state`` is what it reads (0: the node's value, 1: its membrane, 2: its
  synaptic current).
* ``synapse``: signed ``weight_bits`` words. Dense layers store one row per presynaptic neuron
  (``W.T``, row ``i`` = the weights that input ``i``'s spike reads); conv layers store their kernels
  (``out, in/groups, kh, kw``) when the target has a conv engine, else the unrolled dense rows
  (``in_features x out_features``); recurrences store dense rows, conv kernels or one-to-one ``V``.
* ``bias``: signed 32-bit words: synapse biases, LeakyParallel's ``b_hh``, recurrent biases and graded
  spike codes, each an array at a base address.
* ``neuron``: one 64-bit word per neuron: ``threshold`` bits 0-31 (signed), ``beta`` bits 32-47,
  ``alpha`` bits 48-63 (unsigned decay codes).
* ``state``: the initial membrane (then synaptic current) of every neuron, signed ``state.width`` bits.

Per-neuron parameters are stored broadcast to every neuron; the record keeps each parameter's own
shape, so decoding gives back the very arrays that were encoded.

Every word is checked when an image is read: :func:`check_words` encodes the decoded program again
(with the widths and conv storage the image itself declares) and compares the result word for word
with what was read, so a word the decoder skips or reads past (an unused record field, a
structurally-zero word of an unrolled conv, a non-zero initial state, a stray word after the last
array) is refused, naming the memory, the word, its owner and both values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from snncompile.backends.image.memory import Field, ImageError, MemoryImage
from snncompile.quant.fixed import ROUNDINGS

from snncompile.ir import (
    QLIF,
    AvgPool2d,
    ConvRecurrence,
    DenseRecurrence,
    FixedQuant,
    Flatten,
    Graph,
    Input,
    MaxPool2d,
    OneToOneRecurrence,
    Op,
    Output,
    QConv2d,
    QCubaLIF,
    QLinear,
    SumPool2d,
)
from snncompile.ir.ops import OUTPUT_STATES, RESETS, ZERO_MODES, Recurrence
from snncompile.ir.qops import stored_codes
from snncompile.targets import Target

VERSION = 1
OPCODES: dict[type[Op], int] = {
    Input: 1,
    Output: 2,
    QLinear: 3,
    QConv2d: 4,
    AvgPool2d: 5,
    MaxPool2d: 6,
    SumPool2d: 7,
    Flatten: 8,
    QLIF: 9,
    QCubaLIF: 10,
}
_PARAMS = ("beta", "threshold", "graded", "alpha", "v", "lif_bias")
RECORD_FIELDS: tuple[str, ...] = (
    "opcode", "arg", "ndim", "d0", "d1", "d2", "in_ndim", "in0", "in1", "in2",
    "frac", "weight_frac", "syn_base", "syn_count", "bias_base", "shift_base",
    "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw", "groups", "conv_unrolled",
    "ceil_mode", "count_include_pad", "divisor_override", "start_dim", "end_dim",
    "neuron_base", "neurons", "state_base", "decay_frac", "alpha_frac",
    "mem_frac", "mem_lo", "mem_hi", "mem_round", "syn_frac", "syn_lo", "syn_hi", "syn_round",
    "in_frac", "reset", "reset_delay", "zero_mode", "graded_frac", "graded_base",
    "rec_kind", "rec_frac", "rec_base", "rec_count", "rec_bias_base", "rec_ph", "rec_pw",
    "rec_o", "rec_i", "rec_kh", "rec_kw", "lif_bias_base", "floor_present", "floor",
    *(f"{p}_{k}" for p in _PARAMS for k in ("nd", "s0", "s1", "s2")), "out_state",
)  # fmt: skip
RECORD = 96
assert len(RECORD_FIELDS) <= RECORD
_REC_KINDS: dict[type, int] = {DenseRecurrence: 1, ConvRecurrence: 2, OneToOneRecurrence: 3}
NEURON_FIELDS = (Field("threshold", 0, 32, True), Field("beta", 32, 16, False), Field("alpha", 48, 16, False))
LOGICAL = ("layers", "synapse", "bias", "neuron", "state")


@dataclasses.dataclass(frozen=True)
class Layout:
    """What of a target shapes the words: the synapse and state word widths, and whether conv layers
    are stored unrolled into dense rows (targets without a conv engine) or as kernels."""

    weight_bits: int
    state_bits: int
    conv_unrolled: bool

    @classmethod
    def of(cls, target: Target) -> Layout:
        return cls(target.weight_bits, target.state.width, not target.limits.conv_engine)


@dataclasses.dataclass(frozen=True)
class Span:
    """Words ``[base, base + count)`` of ``memory`` hold ``what`` of layer ``layer``."""

    memory: str
    base: int
    count: int
    layer: str
    what: str


class _Builder:
    """Accumulates the memories while the layer records are written, and who owns which words."""

    def __init__(self, graph: Graph, layout: Layout) -> None:
        self.graph, self.layout = graph, layout
        self.shapes = graph.shapes()
        self.synapse: list[np.ndarray] = []
        self.bias: list[np.ndarray] = []
        self.neuron: dict[str, list[np.ndarray]] = {f.name: [] for f in NEURON_FIELDS}
        self.state: list[np.ndarray] = []
        self.sizes = {"synapse": 0, "bias": 0, "neuron": 0, "state": 0}
        self.spans: list[Span] = []
        self.layer = ""

    def put(self, memory: str, values: np.ndarray, what: str) -> tuple[int, int]:
        flat = np.asarray(values, dtype=np.int64).ravel()
        base = self.sizes[memory]
        getattr(self, memory).append(flat)
        self.sizes[memory] += flat.size
        self.spans.append(Span(memory, base, int(flat.size), self.layer, what))
        return base, int(flat.size)


def _shape_fields(rec: dict[str, int], prefix: str, shape: tuple[int, ...]) -> None:
    if len(shape) > 3:
        raise ImageError(f"{prefix} shape {shape} has more than 3 dimensions")
    rec[f"{prefix}_nd"] = len(shape)
    for i, d in enumerate(shape):
        rec[f"{prefix}_s{i}"] = int(d)


def _taps(size: int, out: int, kernel: int, stride: int, pad: int, dil: int) -> tuple[np.ndarray, ...]:
    """Along one axis, every (tap k, output o, input i = o*stride - pad + k*dil) with i in the input
    (at most one tap per (o, i) as dil >= 1, so there are at most ``out * size`` of them)."""
    ks, os_ = [], []
    for k in range(kernel):
        first = max(0, -(-(pad - k * dil) // stride))
        last = min(out - 1, (size - 1 + pad - k * dil) // stride)
        if first <= last:
            os_.append(np.arange(first, last + 1))
            ks.append(np.full(last + 1 - first, k))
    k_all = np.concatenate(ks) if ks else np.zeros(0, np.int64)
    o_all = np.concatenate(os_) if os_ else np.zeros(0, np.int64)
    return k_all, o_all, o_all * stride - pad + k_all * dil


def unroll_conv(op: QConv2d, in_shape: tuple[int, ...]) -> np.ndarray:
    """The conv as a dense (in_features, out_features) matrix: row i = the output of a unit input i,
    ``dense[(c, iy, ix), (o, y, x)] = sum of W[o, c - g*cin/groups, ky, kx]`` over the taps with
    ``iy = y*sh - ph + ky*dh``, ``ix = x*sw - pw + kx*dw`` (``g`` = o's group); built by scattering
    the kernel, so it costs O(its entries), not a convolution of the identity."""
    cin, h, w = in_shape
    cout, cg, kh, kw = op.weight.shape
    og = cout // op.groups
    (sh, sw), (ph, pw), (dh, dw) = op.stride, op.padding, op.dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    ky, y, iy = _taps(h, oh, kh, sh, ph, dh)
    kx, x, ix = _taps(w, ow, kw, sw, pw, dw)
    o, c = (a.ravel() for a in np.meshgrid(np.arange(cout), np.arange(cg), indexing="ij"))
    rows = (((o // og) * cg + c)[:, None, None] * h + iy[None, :, None]) * w + ix[None, None, :]
    cols = ((o[:, None, None] * oh + y[None, :, None]) * ow) + x[None, None, :]
    values = op.weight[o[:, None, None], c[:, None, None], ky[None, :, None], kx[None, None, :]]
    dense = np.zeros((cin * h * w, cout * oh * ow), np.int64)
    np.add.at(dense, (rows.ravel(), cols.ravel()), values.ravel())
    return dense


def _recurrence(b: _Builder, rec: dict[str, int], r: Recurrence | None) -> None:
    if r is None:
        return
    rec["rec_kind"] = _REC_KINDS[type(r)]
    if isinstance(r, OneToOneRecurrence):
        rec["rec_base"], rec["rec_count"] = b.put("synapse", r.weight, "one-to-one recurrent weights")
        _shape_fields(rec, "v", tuple(r.weight.shape))
        return
    weight = r.weight.T if isinstance(r, DenseRecurrence) else r.weight
    rec["rec_base"], rec["rec_count"] = b.put("synapse", weight, "recurrent weights")
    rec["rec_o"], rec["rec_i"] = int(r.weight.shape[0]), int(r.weight.shape[1])
    if isinstance(r, ConvRecurrence):
        rec["rec_kh"], rec["rec_kw"] = int(r.weight.shape[2]), int(r.weight.shape[3])
        rec["rec_ph"], rec["rec_pw"] = r.padding
    rec["rec_bias_base"] = b.put("bias", r.bias, "recurrent bias")[0] if r.bias is not None else -1


def _neuron(b: _Builder, rec: dict[str, int], node: str, op: QLIF | QCubaLIF) -> None:
    shape = b.shapes[node]
    n = math.prod(shape)
    alpha = op.alpha if isinstance(op, QCubaLIF) else np.zeros((), np.int64)
    rec["neuron_base"], rec["neurons"] = b.sizes["neuron"], n
    for name, value in (("threshold", op.threshold), ("beta", op.beta), ("alpha", alpha)):
        b.neuron[name].append(np.broadcast_to(value, shape).ravel())
        _shape_fields(rec, name, tuple(value.shape))
    b.spans.append(Span("neuron", b.sizes["neuron"], n, b.layer, "neuron parameters"))
    b.sizes["neuron"] += n
    states = 2 if isinstance(op, QCubaLIF) else 1
    rec["state_base"] = b.put("state", np.zeros(n * states, np.int64), "initial state (all 0)")[0]
    rec["decay_frac"], rec["in_frac"] = op.decay_frac, op.in_frac
    rec["mem_frac"], rec["mem_lo"], rec["mem_hi"] = op.mem.frac, op.mem.lo, op.mem.hi
    rec["mem_round"] = ROUNDINGS.index(op.mem.rounding)
    rec["reset"], rec["reset_delay"] = RESETS.index(op.reset), int(op.reset_delay)
    rec["graded_frac"] = op.graded_frac
    rec["graded_base"] = b.put("bias", op.graded, "graded spike codes")[0]
    _shape_fields(rec, "graded", tuple(op.graded.shape))
    rec["rec_frac"] = op.rec_frac
    rec["rec_bias_base"] = rec["lif_bias_base"] = -1
    _recurrence(b, rec, op.recurrence)
    if isinstance(op, QCubaLIF):
        rec["alpha_frac"] = op.alpha_frac
        rec["syn_frac"], rec["syn_lo"], rec["syn_hi"] = op.syn.frac, op.syn.lo, op.syn.hi
        rec["syn_round"] = ROUNDINGS.index(op.syn.rounding)
        return
    rec["zero_mode"] = ZERO_MODES.index(op.zero_mode)
    if op.bias is not None:
        rec["lif_bias_base"] = b.put("bias", op.bias, "neuron bias")[0]
        _shape_fields(rec, "lif_bias", tuple(op.bias.shape))
    if op.floor is not None:
        rec["floor_present"], rec["floor"] = 1, op.floor


def _pairs(rec: dict[str, int], keys: tuple[str, str], values: tuple[int, int]) -> None:
    rec[keys[0]], rec[keys[1]] = int(values[0]), int(values[1])


def encode(graph: Graph, target: Target) -> dict[str, MemoryImage]:
    """The memories of ``graph`` on ``target`` (the graph must be fixed-point and verified)."""
    return _encode(graph, Layout.of(target))[0]


def _encode(graph: Graph, layout: Layout) -> tuple[dict[str, MemoryImage], list[Span]]:
    """The memories of ``graph`` laid out by ``layout``, and the owner of every word."""
    graph.verify()
    b = _Builder(graph, layout)
    order = graph.topo_order()
    index = {n: i for i, n in enumerate(order)}
    records = np.zeros((len(order), RECORD), np.int64)
    for i, node in enumerate(order):
        op = graph.op(node)
        b.layer = f"layer {i} ({node})"
        if type(op) not in OPCODES:
            raise ImageError(
                f"node {node!r}: {op.kind} cannot be written to an image (quantize the graph first)"
            )
        rec: dict[str, int] = {
            "opcode": OPCODES[type(op)],
            "arg": index[graph.args(node)[0]] if graph.args(node) else -1,
        }
        out_shape = b.shapes[node]
        in_shape = b.shapes[graph.args(node)[0]] if graph.args(node) else out_shape
        rec["ndim"], rec["in_ndim"] = len(out_shape), len(in_shape)
        for axis, d in enumerate(out_shape):
            rec[f"d{axis}"] = d
        for axis, d in enumerate(in_shape):
            rec[f"in{axis}"] = d
        if isinstance(op, Input):
            rec["frac"] = int(op.frac or 0)
        elif isinstance(op, Output):
            rec["out_state"] = OUTPUT_STATES.index(op.state)
        elif isinstance(op, QLinear):
            rec["weight_frac"] = op.weight_frac
            rec["syn_base"], rec["syn_count"] = b.put("synapse", stored_codes(op).T, "weight rows")
            _synapse_extras(b, rec, op)
        elif isinstance(op, QConv2d):
            rec["weight_frac"], rec["groups"] = op.weight_frac, op.groups
            rec["kh"], rec["kw"] = int(op.weight.shape[2]), int(op.weight.shape[3])
            _pairs(rec, ("sh", "sw"), op.stride)
            _pairs(rec, ("ph", "pw"), op.padding)
            _pairs(rec, ("dh", "dw"), op.dilation)
            unrolled = layout.conv_unrolled
            rec["conv_unrolled"] = int(unrolled)
            codes = dataclasses.replace(op, weight=stored_codes(op), channel_shift=None)
            weights = unroll_conv(codes, in_shape) if unrolled else codes.weight
            what = "unrolled conv rows (re-derived from the kernel)" if unrolled else "conv kernel"
            rec["syn_base"], rec["syn_count"] = b.put("synapse", weights, what)
            _synapse_extras(b, rec, op)
        elif isinstance(op, AvgPool2d | MaxPool2d | SumPool2d):
            _pairs(rec, ("kh", "kw"), op.kernel)
            _pairs(rec, ("sh", "sw"), op.stride)
            _pairs(rec, ("ph", "pw"), op.padding)
            if isinstance(op, MaxPool2d):
                _pairs(rec, ("dh", "dw"), op.dilation)
            if isinstance(op, AvgPool2d | MaxPool2d):
                rec["ceil_mode"] = int(op.ceil_mode)
            if isinstance(op, AvgPool2d):
                rec["count_include_pad"] = int(op.count_include_pad)
                rec["divisor_override"] = op.divisor_override or 0
        elif isinstance(op, Flatten):
            rec["start_dim"], rec["end_dim"] = op.start_dim, op.end_dim
        elif isinstance(op, QLIF | QCubaLIF):
            _neuron(b, rec, node, op)
        for k, v in rec.items():
            records[i, RECORD_FIELDS.index(k)] = v
    w = layout.weight_bits
    concat = {
        m: (np.concatenate(getattr(b, m)) if getattr(b, m) else np.zeros(0, np.int64))
        for m in ("synapse", "bias", "state")
    }
    neuron_values = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in b.neuron.items()}
    b.spans += [
        Span("layers", i * RECORD, RECORD, f"layer {i} ({n})", "layer record") for i, n in enumerate(order)
    ]
    memories = {
        "layers": MemoryImage.pack(
            "layers", (Field("word", 0, 32, True),), {"word": records.ravel()}, "layer table"
        ),
        "synapse": MemoryImage.pack(
            "synapse", (Field("weight", 0, w, True),), {"weight": concat["synapse"]}, "synapse weights"
        ),
        "bias": MemoryImage.pack(
            "bias", (Field("value", 0, 32, True),), {"value": concat["bias"]}, "biases and graded spikes"
        ),
        "neuron": MemoryImage.pack("neuron", NEURON_FIELDS, neuron_values, "neuron parameters"),
        "state": MemoryImage.pack(
            "state",
            (Field("value", 0, layout.state_bits, True),),
            {"value": concat["state"]},
            "initial state",
        ),
    }
    return memories, b.spans


def _synapse_extras(b: _Builder, rec: dict[str, int], op: QLinear | QConv2d) -> None:
    rec["bias_base"] = b.put("bias", op.bias, "bias")[0] if op.bias is not None else -1
    shift = op.channel_shift
    rec["shift_base"] = b.put("bias", shift, "channel shifts")[0] if shift is not None else -1


def _hex(word: int, width: int) -> str:
    return f"0x{word:0{(width + 3) // 4}x}"


def check_words(memories: dict[str, MemoryImage], graph: Graph) -> None:
    """Refuses (:class:`ImageError`) memories that are not word for word the encoding of ``graph``,
    the program decoded from them, laid out as the memories themselves say (their synapse and state
    widths, and the conv records' ``conv_unrolled``)."""
    records = memories["layers"].unpack("word").reshape(-1, RECORD)
    shapes = graph.shapes()
    for i, node in enumerate(graph.topo_order()):  # before encoding: the record shapes bound its work
        args = graph.args(node)
        for prefix, count, shape in (
            ("d", "ndim", shapes[node]),
            ("in", "in_ndim", shapes[args[0]] if args else shapes[node]),
        ):
            recorded = _dims(records[i], prefix, count, f"layer {i} ({node})")
            if recorded != shape:
                raise ImageError(
                    f"layer {i} ({node}): the record's {'input ' if prefix == 'in' else ''}shape {recorded} is not "
                    f"the {shape} its program computes"
                )
    convs = records[records[:, RECORD_FIELDS.index("opcode")] == OPCODES[QConv2d]]
    unrolled = bool(convs[0, RECORD_FIELDS.index("conv_unrolled")]) if len(convs) else False
    layout = Layout(memories["synapse"].width, memories["state"].width, unrolled)
    expected, spans = _encode(graph, layout)
    for name in LOGICAL:
        got, want = memories[name], expected[name]
        if got.depth != want.depth:
            raise ImageError(
                f"memory {name!r} has {got.depth} words; the program it decodes to has {want.depth} "
                f"(words from {min(got.depth, want.depth)} on belong to no layer)"
            )
        differs = np.flatnonzero(got.words != want.words)
        if differs.size:
            word = int(differs[0])
            owner = next(s for s in spans if s.memory == name and s.base <= word < s.base + s.count)
            where = f"{owner.layer} {owner.what}"
            if name == "layers":
                k = word % RECORD
                where += f", field {RECORD_FIELDS[k] if k < len(RECORD_FIELDS) else f'{k} (unused)'}"
            raise ImageError(
                f"memory {name!r} word {word} ({where}) is {_hex(int(got.words[word]), got.width)}; the "
                f"program it decodes to has {_hex(int(want.words[word]), want.width)} there"
            )


# ------------------------------------------------------------------------------------------ decode


class _Reader:
    """Reads records and memory slices, refusing anything out of range (never a crash or a hang)."""

    def __init__(self, memories: dict[str, MemoryImage]) -> None:
        self.mem = memories
        self.values = {
            "synapse": memories["synapse"].unpack("weight"),
            "bias": memories["bias"].unpack("value"),
        }
        self.neuron = {f.name: memories["neuron"].unpack(f.name) for f in NEURON_FIELDS}

    def take(self, memory: str, base: int, count: int, where: str) -> np.ndarray:
        data = self.values[memory]
        if base < 0 or count < 0 or base + count > data.size:
            raise ImageError(
                f"{where}: {memory}[{base}:{base + count}] is outside the {memory} memory ({data.size} words)"
            )
        return data[base : base + count]


def _field(rec: np.ndarray, name: str) -> int:
    return int(rec[RECORD_FIELDS.index(name)])


def _shape(rec: np.ndarray, prefix: str, where: str) -> tuple[int, ...]:
    nd = _field(rec, f"{prefix}_nd")
    if not 0 <= nd <= 3:
        raise ImageError(f"{where}: {prefix} has {nd} dimensions (0..3 allowed)")
    shape = tuple(_field(rec, f"{prefix}_s{i}") for i in range(nd))
    if any(d <= 0 or d > 1 << 24 for d in shape):
        raise ImageError(f"{where}: {prefix} shape {shape} is out of range")
    return shape


def _dims(rec: np.ndarray, prefix: str, count_field: str, where: str) -> tuple[int, ...]:
    nd = _field(rec, count_field)
    if not 0 <= nd <= 3:
        raise ImageError(f"{where}: {nd} dimensions (0..3 allowed)")
    shape = tuple(_field(rec, f"{prefix}{i}") for i in range(nd))
    if any(d <= 0 or d > 1 << 24 for d in shape) or math.prod(shape) > 1 << 26:
        raise ImageError(f"{where}: shape {shape} is out of range")
    return shape


def _choice(options: tuple[Any, ...], value: int, what: str, where: str) -> Any:
    if not 0 <= value < len(options):
        raise ImageError(
            f"{where}: {what} code {value} is not one of 0..{len(options) - 1} ({list(options)})"
        )
    return options[value]


def _param(
    r: _Reader, rec: np.ndarray, name: str, node_shape: tuple[int, ...], base: int, where: str
) -> np.ndarray:
    """A per-neuron parameter back in its own shape (the encoder broadcast it to every neuron)."""
    shape = _shape(rec, name, where)
    full = r.neuron[name]
    n = math.prod(node_shape)
    if base < 0 or base + n > full.size:
        raise ImageError(
            f"{where}: neuron[{base}:{base + n}] is outside the neuron memory ({full.size} words)"
        )
    try:
        np.broadcast_shapes(shape, node_shape)
    except ValueError:
        raise ImageError(
            f"{where}: {name} shape {shape} does not fit neurons of shape {node_shape}"
        ) from None
    values = full[base : base + n].reshape(node_shape)
    lead = len(node_shape) - len(shape)
    index = (0,) * lead + tuple(slice(0, 1) if d == 1 else slice(None) for d in shape)
    out = values[index].reshape(shape).copy()
    if not np.array_equal(np.broadcast_to(out, node_shape), values):
        raise ImageError(f"{where}: {name} varies across neurons but its shape {shape} says it does not")
    return out


def _decode_neuron(r: _Reader, rec: np.ndarray, shape: tuple[int, ...], where: str) -> Op:
    base = _field(rec, "neuron_base")
    if _field(rec, "neurons") != math.prod(shape):
        raise ImageError(f"{where}: {_field(rec, 'neurons')} neurons recorded for a layer of shape {shape}")
    mem = FixedQuant(_field(rec, "mem_frac"), _field(rec, "mem_lo"), _field(rec, "mem_hi"),
                     _choice(ROUNDINGS, _field(rec, "mem_round"), "rounding", where))  # fmt: skip
    graded_shape = _shape(rec, "graded", where)
    graded = r.take("bias", _field(rec, "graded_base"), math.prod(graded_shape), where).reshape(graded_shape)
    rec_kind = _field(rec, "rec_kind")
    recurrence: Recurrence | None = None
    if rec_kind == 3:
        v_shape = _shape(rec, "v", where)
        recurrence = OneToOneRecurrence(
            r.take("synapse", _field(rec, "rec_base"), math.prod(v_shape), where).reshape(v_shape)
        )
    elif rec_kind in (1, 2):
        o, i = _field(rec, "rec_o"), _field(rec, "rec_i")
        kh, kw = (_field(rec, "rec_kh"), _field(rec, "rec_kw")) if rec_kind == 2 else (1, 1)
        if min(o, i, kh, kw) <= 0 or o * i * kh * kw > 1 << 26:
            raise ImageError(f"{where}: recurrent weight shape {(o, i, kh, kw)} is out of range")
        w = r.take("synapse", _field(rec, "rec_base"), o * i * kh * kw, where)
        bias_base = _field(rec, "rec_bias_base")
        bias = None if bias_base < 0 else r.take("bias", bias_base, o, where)
        if rec_kind == 1:
            recurrence = DenseRecurrence(w.reshape(i, o).T.copy(), bias)
        else:
            recurrence = ConvRecurrence(
                w.reshape(o, i, kh, kw), bias, (_field(rec, "rec_ph"), _field(rec, "rec_pw"))
            )
    elif rec_kind != 0:
        raise ImageError(f"{where}: recurrence kind {rec_kind} is not one of 0..3")
    common: dict[str, Any] = {
        "beta": _param(r, rec, "beta", shape, base, where),
        "decay_frac": _field(rec, "decay_frac"),
        "threshold": _param(r, rec, "threshold", shape, base, where),
        "mem": mem,
        "in_frac": _field(rec, "in_frac"),
        "reset": _choice(RESETS, _field(rec, "reset"), "reset", where),
        "reset_delay": bool(_field(rec, "reset_delay")),
        "graded": graded,
        "graded_frac": _field(rec, "graded_frac"),
        "recurrence": recurrence,
        "rec_frac": _field(rec, "rec_frac"),
    }
    if _field(rec, "opcode") == OPCODES[QCubaLIF]:
        syn = FixedQuant(_field(rec, "syn_frac"), _field(rec, "syn_lo"), _field(rec, "syn_hi"),
                         _choice(ROUNDINGS, _field(rec, "syn_round"), "rounding", where))  # fmt: skip
        return QCubaLIF(
            alpha=_param(r, rec, "alpha", shape, base, where),
            alpha_frac=_field(rec, "alpha_frac"),
            syn=syn,
            **common,
        )
    bias_base = _field(rec, "lif_bias_base")
    bias = None
    if bias_base >= 0:
        bshape = _shape(rec, "lif_bias", where)
        bias = r.take("bias", bias_base, math.prod(bshape), where).reshape(bshape)
    return QLIF(
        zero_mode=_choice(ZERO_MODES, _field(rec, "zero_mode"), "zero mode", where),
        bias=bias,
        floor=_field(rec, "floor") if _field(rec, "floor_present") else None,
        **common,
    )


def _extract_kernel(
    dense: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...], rec: np.ndarray
) -> np.ndarray:
    """The conv kernel read back from its unrolled rows at one output position per tap (a tap that
    never meets the input reads 0); :func:`check_words` then re-derives every row from it."""
    cin, h, w = in_shape
    cout, oh, ow = out_shape
    groups, kh, kw = _field(rec, "groups"), _field(rec, "kh"), _field(rec, "kw")
    (sh, sw), (ph, pw), (dh, dw) = [
        (_field(rec, a), _field(rec, b)) for a, b in (("sh", "sw"), ("ph", "pw"), ("dh", "dw"))
    ]
    cg, og = cin // groups, cout // groups
    kernel = np.zeros((cout, cg, kh, kw), np.int64)
    for i in range(kh):
        ys = [y for y in range(oh) if 0 <= y * sh - ph + i * dh < h]
        for j in range(kw):
            xs = [x for x in range(ow) if 0 <= x * sw - pw + j * dw < w]
            if not ys or not xs:
                continue
            y, x = ys[0], xs[0]
            iy, ix = y * sh - ph + i * dh, x * sw - pw + j * dw
            for o in range(cout):
                g = o // og
                rows = [((g * cg + c) * h + iy) * w + ix for c in range(cg)]
                kernel[o, :, i, j] = dense[rows, (o * oh + y) * ow + x]
    return kernel


def _shift(r: _Reader, rec: np.ndarray, channels: int, where: str) -> np.ndarray | None:
    base = _field(rec, "shift_base")
    if base < 0:
        return None
    shift = r.take("bias", base, channels, where).copy()
    if np.any(shift < 0) or np.any(shift > 30):
        raise ImageError(f"{where}: channel shifts must lie in 0..30")
    return shift


def _unshift(codes: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """Stored per-channel codes back on the shared grid."""
    return codes if shift is None else codes << shift.reshape((-1,) + (1,) * (codes.ndim - 1))


def decode(
    memories: dict[str, MemoryImage], names: list[str] | None = None, sources: list[str] | None = None
) -> Graph:
    """The fixed-point graph stored in ``memories`` (with node names from the manifest, if given)."""
    missing = [m for m in LOGICAL if m not in memories]
    if missing:
        raise ImageError(f"the image lacks the memories {missing}")
    words = memories["layers"].unpack("word")
    if words.size % RECORD or words.size == 0:
        raise ImageError(f"the layer table has {words.size} words, not a positive multiple of {RECORD}")
    records = words.reshape(-1, RECORD)
    r = _Reader(memories)
    names = (
        names
        if names is not None and len(names) == len(records)
        else [f"layer{i}" for i in range(len(records))]
    )
    sources = sources if sources is not None and len(sources) == len(records) else [""] * len(records)
    graph = Graph()
    for i, rec in enumerate(records):
        where = f"layer {i} ({names[i]})"
        opcode = _field(rec, "opcode")
        cls = next((c for c, code in OPCODES.items() if code == opcode), None)
        if cls is None:
            raise ImageError(f"{where}: opcode {opcode} is not one of {sorted(OPCODES.values())}")
        arg = _field(rec, "arg")
        if cls is Input:
            if arg != -1:
                raise ImageError(f"{where}: an input layer has no argument (found {arg})")
            inputs: tuple[str, ...] = ()
        elif not 0 <= arg < i:
            raise ImageError(f"{where}: argument {arg} must name an earlier layer (0..{i - 1})")
        else:
            inputs = (names[arg],)
        shape = _dims(rec, "d", "ndim", where)
        in_shape = _dims(rec, "in", "in_ndim", where)
        op: Op
        if cls is Input:
            op = Input(shape, _field(rec, "frac"))
        elif cls is Output:
            state = _field(rec, "out_state")
            if not 0 <= state < len(OUTPUT_STATES):
                raise ImageError(f"{where}: out_state {state} is not one of 0..{len(OUTPUT_STATES) - 1}")
            op = Output(OUTPUT_STATES[state])
        elif cls is QLinear:
            n_in, n_out = math.prod(in_shape), math.prod(shape)
            w = r.take("synapse", _field(rec, "syn_base"), n_in * n_out, where).reshape(n_in, n_out).T.copy()
            bb = _field(rec, "bias_base")
            shift = _shift(r, rec, n_out, where)
            op = QLinear(
                _unshift(w, shift),
                None if bb < 0 else r.take("bias", bb, n_out, where),
                weight_frac=_field(rec, "weight_frac"),
                channel_shift=shift,
            )
        elif cls is QConv2d:
            if len(in_shape) != 3 or len(shape) != 3:
                raise ImageError(f"{where}: a conv layer needs (C, H, W) shapes, got {in_shape} -> {shape}")
            groups, kh, kw = _field(rec, "groups"), _field(rec, "kh"), _field(rec, "kw")
            if groups <= 0 or in_shape[0] % groups or shape[0] % groups or not 0 < kh * kw <= 1 << 12:
                raise ImageError(f"{where}: bad conv geometry (groups {groups}, kernel {kh}x{kw})")
            if _field(rec, "conv_unrolled"):
                n_in, n_out = math.prod(in_shape), math.prod(shape)
                dense = r.take("synapse", _field(rec, "syn_base"), n_in * n_out, where).reshape(n_in, n_out)
                kernel = _extract_kernel(dense, in_shape, shape, rec)
            else:
                count = shape[0] * (in_shape[0] // groups) * kh * kw
                kernel = r.take("synapse", _field(rec, "syn_base"), count, where).reshape(
                    shape[0], in_shape[0] // groups, kh, kw
                )
            bb = _field(rec, "bias_base")
            shift = _shift(r, rec, shape[0], where)
            op = QConv2d(
                _unshift(kernel, shift), None if bb < 0 else r.take("bias", bb, shape[0], where),
                (_field(rec, "sh"), _field(rec, "sw")), (_field(rec, "ph"), _field(rec, "pw")),
                (_field(rec, "dh"), _field(rec, "dw")), groups, weight_frac=_field(rec, "weight_frac"),
                channel_shift=shift,
            )  # fmt: skip
        elif cls is AvgPool2d:
            div = _field(rec, "divisor_override")
            op = AvgPool2d((_field(rec, "kh"), _field(rec, "kw")), (_field(rec, "sh"), _field(rec, "sw")),
                           (_field(rec, "ph"), _field(rec, "pw")), bool(_field(rec, "ceil_mode")),
                           bool(_field(rec, "count_include_pad")), div or None)  # fmt: skip
        elif cls is MaxPool2d:
            op = MaxPool2d((_field(rec, "kh"), _field(rec, "kw")), (_field(rec, "sh"), _field(rec, "sw")),
                           (_field(rec, "ph"), _field(rec, "pw")), (_field(rec, "dh"), _field(rec, "dw")),
                           bool(_field(rec, "ceil_mode")))  # fmt: skip
        elif cls is SumPool2d:
            op = SumPool2d((_field(rec, "kh"), _field(rec, "kw")), (_field(rec, "sh"), _field(rec, "sw")),
                           (_field(rec, "ph"), _field(rec, "pw")))  # fmt: skip
        elif cls is Flatten:
            op = Flatten(_field(rec, "start_dim"), _field(rec, "end_dim"))
        else:
            op = _decode_neuron(r, rec, shape, where)
        graph.add(names[i], op, inputs, sources[i])
    return graph
