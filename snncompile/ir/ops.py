"""The ops of the graph IR: frozen dataclasses whose fields are the schema.

Conventions shared by every op:

* Shapes are per sample: the batch and time axes are never part of an op. A layer that sees
  ``x[t]`` of shape ``(B, *shape)`` has ``shape`` as its input shape.
* Array fields are numpy arrays made read-only in ``__post_init__``. Ops change only through
  :func:`dataclasses.replace`. Equality compares the contents of every field (dtype, shape, values).
* Per-neuron parameters (beta, alpha, threshold, graded-spike factor) are arrays that broadcast
  against the neuron's per-sample state shape: ``()`` for one value per layer, ``(N,)`` for a dense
  layer, ``(C, 1, 1)`` for a conv map.
* Neuron ops carry one quantizer per state variable: ``None`` in the float IR, a
  :class:`LevelTable` for snnTorch's own ``state_quant`` level tables.

In the docstrings ``H(z) = 1 if z > 0 else 0`` (strict: a membrane equal to the threshold does not
fire), ``t`` is the time step and every state starts at zero.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np

from snncompile.errors import GraphError

Shape: TypeAlias = tuple[int, ...]
Reset: TypeAlias = Literal["subtract", "zero", "none"]
ZeroMode: TypeAlias = Literal["keep_input", "drop_update"]

RESETS: tuple[Reset, ...] = ("subtract", "zero", "none")
ZERO_MODES: tuple[ZeroMode, ...] = ("keep_input", "drop_update")


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, np.generic):  # a numpy scalar (e.g. from np.clip of a 0-d array)
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        value = value.copy()
        value.setflags(write=False)
    return value


def _check_field(owner: str, f: dataclasses.Field[Any], value: Any) -> None:
    """The field's annotation, checked: arrays are arrays, shapes and pairs are tuples of ints."""
    hint = str(f.type)
    optional = "None" in hint
    if value is None and optional:
        return
    if "np.ndarray" in hint:
        ok = isinstance(value, np.ndarray)
    elif hint.startswith(("Shape", "tuple[int")):
        ok = isinstance(value, tuple) and all(isinstance(v, int | np.integer) for v in value)
    elif hint.startswith(("int", "bool")):
        ok = isinstance(value, int | np.integer)
    elif hint.startswith("float"):
        ok = isinstance(value, int | float | np.number)
    else:
        return
    if not ok:
        raise GraphError(f"{owner}.{f.name} must be {hint}, got {type(value).__name__} {value!r:.60}")


def _field_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=True)
        )
    return bool(a == b)


def _fmt_array(a: np.ndarray) -> str:
    """A short printable form: the value when uniform, else the range and shape."""
    if a.size == 0:
        return f"empty{tuple(a.shape)}"
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        return f"{lo:g}" if a.ndim == 0 else f"{lo:g}{list(a.shape)}"
    return f"[{lo:g}..{hi:g}]{list(a.shape)}"


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """Base of every IR dataclass: read-only arrays and content equality."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _freeze(getattr(self, f.name))
            _check_field(type(self).__name__, f, value)
            object.__setattr__(self, f.name, value)

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return all(
            _field_equal(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True, eq=False)
class LevelTable(Node):
    """snnTorch's ``state_quant``: ``q(v) = levels[argmin_k |levels[k] - v|]`` (first minimum wins).

    ``levels`` is the closure's float32 table, ascending. Ties go to the lower level and values outside
    the table saturate to its end levels.
    """

    levels: np.ndarray

    def describe(self) -> str:
        return f"levels({self.levels.size})"


@dataclasses.dataclass(frozen=True, eq=False)
class FixedQuant(Node):
    """A fixed-point state quantizer: ``q(v) = clamp(round(v * 2**frac), lo, hi) * 2**-frac``.

    ``round`` is one of :data:`snncompile.quant.fixed.ROUNDINGS`. This is what the QAT hook
    :class:`snncompile.quant.FixedPoint` computes, and the state format of the fixed-point IR.
    """

    frac: int
    lo: int
    hi: int
    rounding: str = "floor"

    def describe(self) -> str:
        return f"fixed[{self.lo}..{self.hi}]/2^{self.frac},{self.rounding}"


Quantizer: TypeAlias = LevelTable | FixedQuant


class Op(Node):
    """Base of the graph ops. ``arity`` is the number of inputs the op takes; every array an op holds
    has dtype ``array_dtype`` (float32 in the float IR, int64 in the fixed-point IR)."""

    kind: ClassVar[str]
    arity: ClassVar[int] = 1
    array_dtype: ClassVar[type[np.generic]] = np.float32

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        raise NotImplementedError

    def attrs(self) -> list[str]:
        """The ``key=value`` strings printed between brackets by ``str(graph)``."""
        return []

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array this op holds (nested ones included), by a dotted field name."""
        out: dict[str, np.ndarray] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                out[f.name] = value
            elif isinstance(value, Node):
                for g in dataclasses.fields(value):
                    inner = getattr(value, g.name)
                    if isinstance(inner, np.ndarray):
                        out[f"{f.name}.{g.name}"] = inner
        return out


# ---------------------------------------------------------------------------------------------- I/O


@dataclasses.dataclass(frozen=True, eq=False)
class Input(Op):
    """The network input ``x[t]``: spikes or currents of per-sample shape ``shape``.

    ``frac`` is None in the float IR; in the fixed-point IR the input arrives as integer codes on the
    ``2**-frac`` grid (0 for spikes).
    """

    kind: ClassVar[str] = "input"
    arity: ClassVar[int] = 0
    shape: Shape
    frac: int | None = None

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return tuple(self.shape)

    def attrs(self) -> list[str]:
        return [f"shape={list(self.shape)}"] + ([] if self.frac is None else [f"frac={self.frac}"])


@dataclasses.dataclass(frozen=True, eq=False)
class Output(Op):
    """Marks one network output: the value of its input node at every step (a neuron's spikes, a
    layer's values), or with ``state`` (``"mem"``, ``"syn"``) that state variable of its input neuron.

    A graph has one Output node per value the model returns, in order of position; the first is the
    network's main output.
    """

    kind: ClassVar[str] = "output"
    state: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.state not in OUTPUT_STATES:
            raise GraphError(f"output.state must be one of {list(OUTPUT_STATES)}, got {self.state!r}")

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return in_shapes[0]

    def attrs(self) -> list[str]:
        return [] if self.state is None else [f"state={self.state}"]


OUTPUT_STATES: tuple[str | None, ...] = (None, "mem", "syn")


# ------------------------------------------------------------------------------------- synapse ops


@dataclasses.dataclass(frozen=True, eq=False)
class Linear(Op):
    """Dense synapses: ``y[t] = W x[t] + b`` with ``W`` of shape (out, in)."""

    kind: ClassVar[str] = "linear"
    weight: np.ndarray
    bias: np.ndarray | None = None

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        (shape,) = in_shapes
        if len(shape) != 1 or shape[0] != self.weight.shape[1]:
            raise GraphError(f"linear expects an input of shape ({self.weight.shape[1]},), got {shape}")
        return (int(self.weight.shape[0]),)

    def attrs(self) -> list[str]:
        out = [f"{self.weight.shape[1]}->{self.weight.shape[0]}"]
        return out + (["bias"] if self.bias is not None else [])


def _conv_len(size: int, k: int, stride: int, pad: int, dil: int, ceil_mode: bool = False) -> int:
    """Output length of a sliding window (torch's formula), refusing impossible geometry."""
    if k < 1 or stride < 1 or dil < 1 or pad < 0:
        raise GraphError(
            f"window geometry kernel {k}, stride {stride}, dilation {dil}, padding {pad}: kernel, stride and "
            "dilation must be >= 1 and padding >= 0"
        )
    span = size + 2 * pad - dil * (k - 1) - 1
    n = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (n - 1) * stride >= size + pad:
        n -= 1  # torch: the last window must start inside the input or the left padding
    if n < 1:
        raise GraphError(
            f"a window of {dil * (k - 1) + 1} does not fit an input of {size} with padding {pad}"
        )
    return n


def _check_2d(shape: Shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise GraphError(f"{what} expects an input of shape (C, H, W), got {shape}")
    return shape[0], shape[1], shape[2]


@dataclasses.dataclass(frozen=True, eq=False)
class Conv2d(Op):
    """2-d convolution: ``y[t] = conv2d(x[t], W, b, stride, padding, dilation, groups)`` (zero padding).

    ``W`` has shape (out_channels, in_channels / groups, kh, kw).
    """

    kind: ClassVar[str] = "conv2d"
    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        c, h, w = _check_2d(in_shapes[0], "conv2d")
        if self.groups < 1 or self.weight.ndim != 4:
            raise GraphError(
                f"conv2d needs groups >= 1 and a 4-d weight, got {self.groups} and {self.weight.shape}"
            )
        if c != self.weight.shape[1] * self.groups:
            raise GraphError(f"conv2d expects {self.weight.shape[1] * self.groups} input channels, got {c}")
        kh, kw = int(self.weight.shape[2]), int(self.weight.shape[3])
        oh = _conv_len(h, kh, self.stride[0], self.padding[0], self.dilation[0])
        ow = _conv_len(w, kw, self.stride[1], self.padding[1], self.dilation[1])
        if oh <= 0 or ow <= 0:
            raise GraphError(f"conv2d output would be empty for input {in_shapes[0]}")
        return (int(self.weight.shape[0]), oh, ow)

    def attrs(self) -> list[str]:
        o, i, kh, kw = self.weight.shape
        out = [f"{i * self.groups}->{o}", f"k={kh}x{kw}"]
        if self.stride != (1, 1):
            out.append(f"stride={list(self.stride)}")
        if self.padding != (0, 0):
            out.append(f"pad={list(self.padding)}")
        if self.dilation != (1, 1):
            out.append(f"dil={list(self.dilation)}")
        if self.groups != 1:
            out.append(f"groups={self.groups}")
        return out + (["bias"] if self.bias is not None else [])


@dataclasses.dataclass(frozen=True, eq=False)
class AvgPool2d(Op):
    """Average pooling (torch ``avg_pool2d``): the mean of each window (or the sum / divisor_override)."""

    kind: ClassVar[str] = "avgpool2d"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        c, h, w = _check_2d(in_shapes[0], self.kind)
        return (
            c,
            _conv_len(h, self.kernel[0], self.stride[0], self.padding[0], 1, self.ceil_mode),
            _conv_len(w, self.kernel[1], self.stride[1], self.padding[1], 1, self.ceil_mode),
        )

    def attrs(self) -> list[str]:
        return [f"k={self.kernel[0]}x{self.kernel[1]}", f"stride={list(self.stride)}"]


@dataclasses.dataclass(frozen=True, eq=False)
class MaxPool2d(Op):
    """Max pooling (torch ``max_pool2d``). On binary spikes it is the OR of each window."""

    kind: ClassVar[str] = "maxpool2d"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        c, h, w = _check_2d(in_shapes[0], self.kind)
        k, s, p, d = self.kernel, self.stride, self.padding, self.dilation
        return (
            c,
            _conv_len(h, k[0], s[0], p[0], d[0], self.ceil_mode),
            _conv_len(w, k[1], s[1], p[1], d[1], self.ceil_mode),
        )

    def attrs(self) -> list[str]:
        return [f"k={self.kernel[0]}x{self.kernel[1]}", f"stride={list(self.stride)}"]


@dataclasses.dataclass(frozen=True, eq=False)
class SumPool2d(Op):
    """Sum pooling (NIR ``SumPool2d``): the sum of each window, zero padding."""

    kind: ClassVar[str] = "sumpool2d"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        c, h, w = _check_2d(in_shapes[0], self.kind)
        k, s, p = self.kernel, self.stride, self.padding
        return (c, _conv_len(h, k[0], s[0], p[0], 1), _conv_len(w, k[1], s[1], p[1], 1))

    def attrs(self) -> list[str]:
        return [f"k={self.kernel[0]}x{self.kernel[1]}", f"stride={list(self.stride)}"]


@dataclasses.dataclass(frozen=True, eq=False)
class Flatten(Op):
    """Merges the per-sample axes ``start_dim..end_dim`` (inclusive, per-sample numbering) into one."""

    kind: ClassVar[str] = "flatten"
    start_dim: int = 0
    end_dim: int = -1

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        n = len(shape)
        start = self.start_dim % n if n else 0
        end = self.end_dim % n if n else 0
        if not -n <= self.start_dim < n or not -n <= self.end_dim < n or start > end:
            raise GraphError(
                f"flatten dims {self.start_dim}..{self.end_dim} do not fit an input of shape {shape}"
            )
        return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])

    def attrs(self) -> list[str]:
        return [f"dims={self.start_dim}..{self.end_dim}"]

    def batched_dims(self) -> tuple[int, int]:
        """``start_dim, end_dim`` for values shaped (T, B, *shape) (negative dims count from the end)."""
        return tuple(d + 2 if d >= 0 else d for d in (self.start_dim, self.end_dim))  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True, eq=False)
class Scale(Op):
    """Elementwise gain: ``y[t] = scale * x[t]`` (``scale`` broadcasts against the input)."""

    kind: ClassVar[str] = "scale"
    scale: np.ndarray

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return _broadcast_param("scale", self.scale, in_shapes[0])

    def attrs(self) -> list[str]:
        return [f"scale={_fmt_array(self.scale)}"]


@dataclasses.dataclass(frozen=True, eq=False)
class BatchNorm(Op):
    """Batch normalization in evaluation mode (torch ``BatchNorm1d`` / ``BatchNorm2d`` with running
    statistics), per channel ``c`` (axis 0 of the per-sample shape (C,), (C, L) or (C, H, W))::

        y[t] = (x[t] - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]

    in float32 as torch computes it (the float interpreter calls ``torch.nn.functional.batch_norm``);
    ``weight`` / ``bias`` are None without ``affine``. It has no fixed-point form: quantization first
    folds it into the Linear or Conv2d before it (:mod:`snncompile.passes.fold_batchnorm`).
    """

    kind: ClassVar[str] = "batchnorm"
    mean: np.ndarray
    var: np.ndarray
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    eps: float = 1e-5

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        (shape,) = in_shapes
        c = int(self.mean.shape[0]) if self.mean.ndim == 1 else -1
        fields = [self.mean, self.var] + [a for a in (self.weight, self.bias) if a is not None]
        if c < 0 or any(a.shape != (c,) for a in fields):
            raise GraphError(
                f"batchnorm parameters must all have shape (C,), got {[a.shape for a in fields]}"
            )
        if not 1 <= len(shape) <= 3 or shape[0] != c:
            raise GraphError(f"batchnorm over {c} channels expects an input of shape ({c}, ...), got {shape}")
        return tuple(shape)

    def attrs(self) -> list[str]:
        return [f"channels={self.mean.shape[0]}", f"eps={self.eps:g}"] + (
            [] if self.weight is None else ["affine"]
        )


@dataclasses.dataclass(frozen=True, eq=False)
class InputGrid(Op):
    """The network input put on a fixed-point grid (the QAT input quantizer of
    :func:`snncompile.quant.prepare_qat`): ``y[t] = clamp(round_half_even(x[t] * 2**frac), lo, hi) * 2**-frac``.

    It has no fixed-point form of its own: quantization makes it the input format (the fixed-point
    ``Input.frac``), which is what a compiled program's ``quantize_input`` rounds currents onto.
    """

    kind: ClassVar[str] = "inputgrid"
    frac: int
    lo: int
    hi: int

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        if self.lo > 0 or self.hi < 0:
            raise GraphError(f"input grid codes [{self.lo}, {self.hi}] must include 0")
        return tuple(in_shapes[0])

    def attrs(self) -> list[str]:
        return [f"codes=[{self.lo}..{self.hi}]/2^{self.frac}"]


# ----------------------------------------------------------------------------------- recurrence


@dataclasses.dataclass(frozen=True, eq=False)
class DenseRecurrence(Node):
    """All-to-all recurrence through a dense layer: ``R(s) = W s + b``, W of shape (N, N)."""

    weight: np.ndarray
    bias: np.ndarray | None = None

    def check(self, shape: Shape) -> None:
        n = self.weight.shape[0]
        if self.weight.ndim != 2 or self.weight.shape != (n, n) or shape != (n,):
            raise GraphError(
                f"dense recurrence of shape {self.weight.shape} does not fit neurons of shape {shape}"
            )

    def describe(self) -> str:
        return f"rec=dense{list(self.weight.shape)}"


@dataclasses.dataclass(frozen=True, eq=False)
class ConvRecurrence(Node):
    """All-to-all recurrence through a same-size conv: ``R(s) = conv2d(s, W, b, padding)``, stride 1."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    padding: tuple[int, int] = (0, 0)

    def check(self, shape: Shape) -> None:
        c, h, w = _check_2d(shape, "conv recurrence")
        o, i, kh, kw = self.weight.shape
        oh = _conv_len(h, kh, 1, self.padding[0], 1)
        ow = _conv_len(w, kw, 1, self.padding[1], 1)
        if (o, i, oh, ow) != (c, c, h, w):
            raise GraphError(
                f"conv recurrence {list(self.weight.shape)} with padding {list(self.padding)} maps "
                f"neurons of shape {shape} to {(o, oh, ow)}; it must keep the shape "
                "(an even kernel size cannot)"
            )

    def describe(self) -> str:
        return f"rec=conv{list(self.weight.shape)}"


@dataclasses.dataclass(frozen=True, eq=False)
class OneToOneRecurrence(Node):
    """Each neuron feeds back its own spike: ``R(s) = s * V`` (V broadcasts against the state)."""

    weight: np.ndarray

    def check(self, shape: Shape) -> None:
        _broadcast_param("recurrence V", self.weight, shape)

    def describe(self) -> str:
        return f"rec=one-to-one({_fmt_array(self.weight)})"


Recurrence: TypeAlias = DenseRecurrence | ConvRecurrence | OneToOneRecurrence


# -------------------------------------------------------------------------------------- neurons


def _broadcast_param(name: str, value: np.ndarray, shape: Shape) -> Shape:
    try:
        out = np.broadcast_shapes(value.shape, shape)
    except ValueError:
        out = None
    if out != tuple(shape):
        raise GraphError(f"{name} of shape {value.shape} does not broadcast to the neurons' shape {shape}")
    return tuple(shape)


def _neuron_attrs(op: LIF | CubaLIF, decays: list[str]) -> list[str]:
    out = [*decays, f"thr={_fmt_array(op.threshold)}", f"reset={op.reset}"]
    if op.reset == "zero" and isinstance(op, LIF):
        out.append(f"zero={op.zero_mode}")
    if not op.reset_delay:
        out.append("immediate")
    if not np.all(op.graded == 1):
        out.append(f"graded={_fmt_array(op.graded)}")
    if op.recurrence is not None:
        out.append(op.recurrence.describe())
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class LIF(Op):
    """First-order leaky integrate-and-fire neuron: snnTorch ``Leaky``, ``RLeaky``, ``LeakyParallel``.

    One step, in snnTorch's operation order (every ``*``/``+`` a float32 op in the float IR)::

        r[t] = H(m[t-1] - thr)                                  # delayed reset: previous stored state
        V    = beta*m[t-1] (+ bias) + x[t] (+ R(s[t-1]))
        subtract:          m' = V - r[t]*thr
        zero, keep_input:  m' = beta*((1 - r[t])*m[t-1]) + x[t]   # Leaky: the new input survives
        zero, drop_update: m' = V - r[t]*V                        # RLeaky: the whole update is lost
        none:              m' = V
        m[t] = q(m')  (then m[t] = max(m[t], floor) when a floor is set)
        s[t] = H(m[t] - thr) * graded

    With ``reset_delay=False`` (snnTorch's immediate reset) the step continues with
    ``d = s[t]/graded - r[t]`` and ``m[t] -= d*thr`` (subtract) or ``m[t] -= d*m[t]`` (zero); the
    returned and stored membrane is this post-reset value.

    ``beta`` is already clamped to [0, 1] as snnTorch does every forward. ``bias`` is a constant
    current added every step (LeakyParallel's ``b_hh``, kept apart from the input synapse's bias because
    float32 addition is not associative). ``floor`` is LeakyParallel's relu (0.0); it comes with no reset.
    """

    kind: ClassVar[str] = "lif"
    beta: np.ndarray
    threshold: np.ndarray
    reset: Reset = "subtract"
    reset_delay: bool = True
    zero_mode: ZeroMode = "keep_input"
    graded: np.ndarray = dataclasses.field(default_factory=lambda: np.array(1.0, np.float32))
    recurrence: Recurrence | None = None
    bias: np.ndarray | None = None
    floor: float | None = None
    mem_quant: Quantizer | None = None

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        _check_neuron(self, shape)
        if self.bias is not None:
            _broadcast_param("bias", self.bias, shape)
        if self.floor is not None and self.reset != "none":
            raise GraphError(f"a floor (relu) is only defined without reset, got reset={self.reset}")
        if self.zero_mode not in ZERO_MODES:
            raise GraphError(f"zero_mode must be one of {list(ZERO_MODES)}, got {self.zero_mode!r}")
        return shape

    def attrs(self) -> list[str]:
        out = _neuron_attrs(self, [f"beta={_fmt_array(self.beta)}"])
        if self.bias is not None:
            out.append(f"bias={_fmt_array(self.bias)}")
        if self.floor is not None:
            out.append(f"floor={self.floor:g}")
        if self.mem_quant is not None:
            out.append(f"mem={self.mem_quant.describe()}")
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class CubaLIF(Op):
    """Current-based (second-order) LIF neuron: snnTorch ``Synaptic`` and ``RSynaptic``.

    One step, in snnTorch's operation order::

        r[t] = H(m[t-1] - thr)
        I'   = alpha*I[t-1] + x[t] (+ R(s[t-1]))               # recurrence enters the current
        V    = beta*m[t-1] + I'
        subtract: m' = V - r[t]*thr
        zero:     m' = V - V*r[t]                              # the current I' is kept
        none:     m' = V
        I[t] = q(I');  m[t] = q(m')
        s[t] = H(m[t] - thr) * graded

    ``reset_delay=False`` continues as in :class:`LIF` (snnTorch's ``Synaptic`` only: its
    ``RSynaptic`` ignores the flag). ``alpha`` and ``beta`` are already clamped to [0, 1].
    """

    kind: ClassVar[str] = "cubalif"
    alpha: np.ndarray
    beta: np.ndarray
    threshold: np.ndarray
    reset: Reset = "subtract"
    reset_delay: bool = True
    graded: np.ndarray = dataclasses.field(default_factory=lambda: np.array(1.0, np.float32))
    recurrence: Recurrence | None = None
    mem_quant: Quantizer | None = None
    syn_quant: Quantizer | None = None

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        shape = in_shapes[0]
        _check_neuron(self, shape)
        _broadcast_param("alpha", self.alpha, shape)
        return shape

    def attrs(self) -> list[str]:
        decays = [f"alpha={_fmt_array(self.alpha)}", f"beta={_fmt_array(self.beta)}"]
        out = _neuron_attrs(self, decays)
        for name, q in (("mem", self.mem_quant), ("syn", self.syn_quant)):
            if q is not None:
                out.append(f"{name}={q.describe()}")
        return out


def _check_neuron(op: LIF | CubaLIF, shape: Shape) -> None:
    if op.reset not in RESETS:
        raise GraphError(f"reset must be one of {list(RESETS)}, got {op.reset!r}")
    for name in ("beta", "threshold", "graded"):
        _broadcast_param(name, getattr(op, name), shape)
    if op.recurrence is not None:
        op.recurrence.check(shape)


NEURON_OPS: tuple[type[Op], ...] = (LIF, CubaLIF)

OPS: dict[str, type[Node]] = {
    cls.__name__: cls
    for cls in (
        Input,
        Output,
        Linear,
        Conv2d,
        AvgPool2d,
        MaxPool2d,
        SumPool2d,
        Flatten,
        Scale,
        BatchNorm,
        InputGrid,
        LIF,
        CubaLIF,
        DenseRecurrence,
        ConvRecurrence,
        OneToOneRecurrence,
        LevelTable,
        FixedQuant,
    )
}
"""Every IR dataclass by its type name: the registry the JSON reader looks types up in."""
