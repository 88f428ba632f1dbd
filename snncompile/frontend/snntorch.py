"""The snnTorch frontend: traces a module into a float IR graph of one time step.

A single-step module (``nn.Sequential`` stacks of ``init_hidden=True`` neurons, or a hand-written
``forward``) is traced with torch.fx, neurons and layers as leaf modules. A forward with its own time
loop (snnTorch's tutorial style, ``init_leaky()`` and ``for step in range(num_steps)``) is run once on
the example input, recorded and folded back into one step by :mod:`.unroll`; both end in the same
conversion. Each leaf module is turned into ops by the handler registered for its exact type
(:data:`HANDLERS`), functional glue (``F.max_pool2d``, ``.view(x.size(0), -1)``) by
:mod:`.functional`; anything else is refused by name. Handlers read what the module really computes,
not only its ``state_dict``: the delayed reset comes from ``state_function``, LeakyParallel's decay
from ``rnn.weight_hh_l0``, brevitas weights from ``quant_weight()``. :func:`trace_forward` also says
how forward's argument and return values map onto a run of the graph (:mod:`.traced`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import snntorch as snn
import torch
import torch.fx as fx
from brevitas.nn import QuantConv2d, QuantLinear
from snntorch._neurons.rleaky import RecurrentOneToOne as RLeakyOneToOne
from snntorch._neurons.rsynaptic import RecurrentOneToOne as RSynapticOneToOne
from torch import nn
from torch.nn.utils import parametrize

from snncompile.errors import (
    GraphError,
    InconsistentModelError,
    SnnCompileError,
    TraceError,
    UnsupportedModuleError,
)
from snncompile.frontend import functional, unroll
from snncompile.frontend.traced import ForwardOutput, InputMode, TracedForward
from snncompile.ir import (
    LIF,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    ConvRecurrence,
    CubaLIF,
    DenseRecurrence,
    FixedQuant,
    Flatten,
    Graph,
    Input,
    InputGrid,
    LevelTable,
    Linear,
    MaxPool2d,
    OneToOneRecurrence,
    Op,
    Output,
    Quantizer,
    Recurrence,
    Reset,
    Shape,
)
from snncompile.quant.qat import FixedPoint, InputQuant, QuantLeakyParallel
from snncompile.registry import registrar

# ------------------------------------------------------------------------------------ values


@dataclasses.dataclass(frozen=True)
class Value:
    """What an fx node evaluates to, in IR terms.

    ``node`` is the IR node. ``state`` is None for a tensor (spikes or currents), ``"tuple"`` for a
    neuron's ``(spk, mem)``-style return value, or the name of one state variable picked out of it.
    """

    node: str
    state: str | None = None


@dataclasses.dataclass
class Context:
    """The graph under construction and what the handlers need to know about it."""

    graph: Graph
    shapes: dict[str, Shape]
    neuron_states: dict[str, tuple[str, ...]]

    def add(self, path: str, op: Op, inputs: tuple[str, ...]) -> str:
        """Adds ``op`` traced from module ``path``; its shape is checked now, naming the module."""
        base = path.replace(".", "_")
        if base[:1].isdigit():
            base = f"{op.kind}_{base}"
        node = self.graph.fresh_name(base)
        try:
            shape = op.out_shape([self.shapes[i] for i in inputs])
        except GraphError as e:
            raise GraphError(f"module {path!r} ({op.kind}): {e}") from None
        self.graph.add(node, op, inputs, source=path)
        self.shapes[node] = tuple(shape)
        return node


Handler = Callable[[Context, str, Any, str], Value]
HANDLERS: dict[type[nn.Module], Handler] = {}
"""The handler of every supported module type, keyed by exact type (subclasses are refused)."""


handles = registrar(HANDLERS)


def module_type(m: nn.Module) -> type[nn.Module]:
    """The module's class, seeing through torch's parametrization subclasses (``ParametrizedLeaky``)."""
    t = type(m)
    return t.__bases__[0] if parametrize.is_parametrized(m) else t


def _supported() -> str:
    return ", ".join(sorted(t.__name__ for t in HANDLERS))


_OVER_C1L = "over inputs shaped (C, 1, L), which computes the same (the IR has no 1-d layers)"
_REFUSAL_HINTS: dict[type[nn.Module], str] = {
    nn.Conv1d: f"write nn.Conv2d(C_in, C_out, (1, k)) with weight conv1d.weight.unsqueeze(2) {_OVER_C1L}",
    nn.MaxPool1d: f"write nn.MaxPool2d((1, k)) {_OVER_C1L}",
    nn.AvgPool1d: f"write nn.AvgPool2d((1, k)) {_OVER_C1L}",
}
"""What to write instead of an unsupported module that has an equivalent."""


# ---------------------------------------------------------------------------------- readers


def _array(path: str, field: str, value: Any) -> np.ndarray:
    """A float32 copy of a parameter/buffer, refusing other dtypes and non-finite values."""
    t = torch.as_tensor(value).detach().cpu()
    if t.dtype != torch.float32 and t.ndim > 0:
        raise UnsupportedModuleError(
            f"module {path!r}: {field} is {t.dtype}; snncompile compiles float32 models "
            "(call .float() on the model before tracing)"
        )
    a = t.to(torch.float32).numpy().copy()
    if not np.all(np.isfinite(a)):
        raise InconsistentModelError(f"module {path!r}: {field} holds NaN or infinite values")
    return a


def _opt_array(path: str, field: str, value: Any) -> np.ndarray | None:
    return None if value is None else _array(path, field, value)


def _per_neuron(path: str, field: str, value: Any, shape: Shape) -> np.ndarray:
    """A neuron parameter as an array broadcasting against the per-sample state ``shape``."""
    a = _array(path, field, value)
    if a.ndim == len(shape) + 1 and a.shape[0] == 1:
        a = a[0]  # a (1, N) tensor broadcast over the batch axis
    try:
        ok = np.broadcast_shapes(a.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise InconsistentModelError(
            f"module {path!r}: {field} has shape {tuple(a.shape)}, which does not broadcast to the "
            f"neurons' shape {shape} (use a scalar, ({shape[0]},) or a per-channel (C, 1, 1) tensor)"
        )
    return a


def _decay(path: str, field: str, value: Any, shape: Shape) -> np.ndarray:
    """A decay rate clamped to [0, 1], as snnTorch clamps it on every forward."""
    return np.asarray(np.clip(_per_neuron(path, field, value, shape), 0, 1), dtype=np.float32)


def _check_spike_fn(path: str, fn: Any) -> None:
    """Accepts snnTorch's own spike functions only: their forward is ``(x > 0).float()``."""
    if getattr(fn, "__module__", None) == "snntorch.surrogate":
        return
    if getattr(fn, "__name__", None) == "_surrogate_bypass":
        return
    if getattr(fn, "__self__", None) is snn.LeakyParallel.ATan:
        return
    raise UnsupportedModuleError(
        f"module {path!r}: spike_grad {fn!r} is not from snntorch.surrogate; snncompile cannot know "
        "its forward pass (snnTorch's surrogates all fire on mem > threshold)"
    )


def _state_quant(path: str, module: Any) -> Quantizer | None:
    sq = module.state_quant
    if sq is False or sq is None:
        return None
    if type(sq) is FixedPoint:
        return FixedQuant(sq.fmt.frac, sq.fmt.lo, sq.fmt.hi, sq.rounding)
    if (
        callable(sq)
        and getattr(sq, "__module__", None) == "snntorch.functional.quant"
        and getattr(sq, "__qualname__", None) == "state_quant.<locals>.inner"
    ):
        levels = inspect.getclosurevars(sq).nonlocals["levels"]
        return LevelTable(_array(path, "state_quant levels", levels))
    raise UnsupportedModuleError(
        f"module {path!r}: state_quant {sq!r} is not supported; use snncompile.quant.FixedPoint or "
        "snntorch.functional.quant.state_quant"
    )


_STATE_FUNCTIONS: dict[str, Reset] = {"_base_sub": "subtract", "_base_zero": "zero", "_base_int": "none"}
_RESET_VALS: dict[int, Reset] = {0: "subtract", 1: "zero", 2: "none"}


def _reset(path: str, module: Any) -> Reset:
    """The reset that really runs: ``state_function`` (delayed path) and ``reset_mechanism_val``
    (immediate path) must agree, since a setter or a loaded state_dict can change only the latter."""
    fn_name = getattr(module.state_function, "__name__", "")
    if fn_name not in _STATE_FUNCTIONS:
        raise UnsupportedModuleError(f"module {path!r}: unknown state_function {fn_name!r}")
    delayed = _STATE_FUNCTIONS[fn_name]
    val = int(module.reset_mechanism_val)
    immediate = _RESET_VALS.get(val)
    if immediate != delayed:
        raise InconsistentModelError(
            f"module {path!r}: reset_mechanism_val is {val} ({immediate}) but the neuron was built "
            f"with reset {delayed!r} (state_function {fn_name}); snnTorch would run a mix of both. "
            f"Build the neuron with reset_mechanism={immediate!r} instead of changing it afterwards "
            "or loading a state_dict of another reset"
        )
    return delayed


def _neuron_common(path: str, module: Any, shape: Shape) -> dict[str, Any]:
    if module.inhibition:
        raise UnsupportedModuleError(
            f"module {path!r}: inhibition=True is not supported (snnTorch marks it unstable)"
        )
    _check_spike_fn(path, module.spike_grad)
    return {
        "beta": _decay(path, "beta", module.beta, shape),
        "threshold": _per_neuron(path, "threshold", module.threshold, shape),
        "reset": _reset(path, module),
        "reset_delay": bool(module.reset_delay),
        "graded": _per_neuron(path, "graded_spikes_factor", module.graded_spikes_factor, shape),
    }


def _recurrence(path: str, module: Any, shape: Shape) -> Recurrence:
    rec = module.recurrent
    rec_type = module_type(rec)
    if rec_type in (nn.Linear, QuantLinear):
        return DenseRecurrence(*_weights(f"{path}.recurrent", rec))
    if rec_type in (nn.Conv2d, QuantConv2d):
        if (
            rec.stride != (1, 1)
            or rec.dilation != (1, 1)
            or rec.groups != 1
            or rec.padding_mode != "zeros"
            or isinstance(rec.padding, str)
        ):
            raise UnsupportedModuleError(f"module {path!r}: recurrent conv must be stride 1, zero padding")
        if any(k % 2 == 0 for k in rec.kernel_size):
            raise InconsistentModelError(
                f"module {path!r}: recurrent kernel_size {tuple(rec.kernel_size)} is even, so the "
                "recurrent conv changes the map size (snnTorch fails on the second step); use an odd size"
            )
        return ConvRecurrence(*_weights(f"{path}.recurrent", rec), (int(rec.padding[0]), int(rec.padding[1])))
    if rec_type in (RLeakyOneToOne, RSynapticOneToOne):
        return OneToOneRecurrence(_per_neuron(path, "V", rec.V, shape))
    raise UnsupportedModuleError(f"module {path!r}: recurrent layer {type(rec).__name__} is not supported")


def _neuron_value(ctx: Context, node: str, module: Any, states: tuple[str, ...]) -> Value:
    ctx.neuron_states[node] = states
    returns_tuple = bool(module.output) or not bool(module.init_hidden)
    return Value(node, "tuple" if returns_tuple else None)


# --------------------------------------------------------------------------------- handlers


@handles(snn.Leaky)
def _leaky(ctx: Context, path: str, m: Any, x: str) -> Value:
    op = LIF(
        **_neuron_common(path, m, ctx.shapes[x]),
        zero_mode="keep_input",
        mem_quant=_state_quant(path, m),
    )
    return _neuron_value(ctx, ctx.add(path, op, (x,)), m, ("mem",))


@handles(snn.RLeaky)
def _rleaky(ctx: Context, path: str, m: Any, x: str) -> Value:
    shape = ctx.shapes[x]
    op = LIF(
        **_neuron_common(path, m, shape),
        zero_mode="drop_update",
        recurrence=_recurrence(path, m, shape),
        mem_quant=_state_quant(path, m),
    )
    return _neuron_value(ctx, ctx.add(path, op, (x,)), m, ("mem",))


def _cuba(ctx: Context, path: str, m: Any, x: str, recurrent: bool) -> Value:
    shape = ctx.shapes[x]
    sq = _state_quant(path, m)
    op = CubaLIF(
        alpha=_decay(path, "alpha", m.alpha, shape),
        **_neuron_common(path, m, shape),
        recurrence=_recurrence(path, m, shape) if recurrent else None,
        mem_quant=sq,
        syn_quant=sq,
    )
    return _neuron_value(ctx, ctx.add(path, op, (x,)), m, ("syn", "mem"))


@handles(snn.Synaptic)
def _synaptic(ctx: Context, path: str, m: Any, x: str) -> Value:
    return _cuba(ctx, path, m, x, recurrent=False)


@handles(snn.RSynaptic)
def _rsynaptic(ctx: Context, path: str, m: Any, x: str) -> Value:
    if not m.reset_delay:
        raise UnsupportedModuleError(
            f"module {path!r}: RSynaptic with reset_delay=False raises TypeError in snnTorch unless its "
            "states are passed by hand (and then behaves as reset_delay=True); build it with reset_delay=True"
        )
    return _cuba(ctx, path, m, x, recurrent=True)


@handles(snn.LeakyParallel, QuantLeakyParallel)
def _leaky_parallel(ctx: Context, path: str, m: Any, x: str) -> Value:
    """``U[t] = relu(W_ih x[t] + b_ih + W_hh U[t-1] + b_hh)``, ``S = H(U - thr) * gsf``, W_hh diagonal."""
    _check_spike_fn(path, m.spike_grad)
    rnn = m.rnn
    w_hh = _array(path, "rnn.weight_hh_l0", rnn.weight_hh_l0)
    diag = np.diagonal(w_hh).copy()
    if not np.array_equal(w_hh, np.diag(diag)):
        raise UnsupportedModuleError(
            f"module {path!r}: rnn.weight_hh_l0 is not diagonal ({int(np.count_nonzero(w_hh - np.diag(diag)))} "
            "off-diagonal entries); snncompile maps LeakyParallel to one decay per neuron"
        )
    if np.any(diag < 0) or np.any(diag > 1):
        raise UnsupportedModuleError(
            f"module {path!r}: the decays diag(rnn.weight_hh_l0) lie in [{diag.min():g}, {diag.max():g}]; "
            "expected [0, 1] (a negative decay oscillates, one above 1 grows without bound)"
        )
    has_bias = bool(rnn.bias)
    b_ih = _opt_array(path, "rnn.bias_ih_l0", rnn.bias_ih_l0 if has_bias else None)
    b_hh = _opt_array(path, "rnn.bias_hh_l0", rnn.bias_hh_l0 if has_bias else None)
    syn = ctx.add(f"{path}.rnn", Linear(_array(path, "rnn.weight_ih_l0", rnn.weight_ih_l0), b_ih), (x,))
    shape = ctx.shapes[syn]
    op = LIF(
        beta=diag,
        threshold=_per_neuron(path, "threshold", m.threshold, shape),
        reset="none",
        graded=_per_neuron(path, "graded_spikes_factor", m.graded_spikes_factor, shape),
        bias=b_hh,
        floor=0.0,
        mem_quant=_state_quant(path, m) if isinstance(m, QuantLeakyParallel) else None,
    )
    ctx.graph.whole_sequence = True
    return Value(ctx.add(path, op, (syn,)))


@handles(nn.Linear, QuantLinear)
def _linear(ctx: Context, path: str, m: Any, x: str) -> Value:
    weight, bias = _weights(path, m)
    return Value(ctx.add(path, Linear(weight, bias), (x,)))


@handles(nn.Conv2d, QuantConv2d)
def _conv2d(ctx: Context, path: str, m: Any, x: str) -> Value:
    if m.padding_mode != "zeros":
        raise UnsupportedModuleError(f"module {path!r}: padding_mode {m.padding_mode!r}; supported: 'zeros'")
    padding = m.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if any(d * (k - 1) % 2 for d, k in zip(m.dilation, m.kernel_size, strict=True)):
            raise UnsupportedModuleError(
                f"module {path!r}: padding='same' with an even kernel pads asymmetrically; pad explicitly"
            )
        padding = tuple(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size, strict=True))
    weight, bias = _weights(path, m)
    op = Conv2d(weight, bias, _pair(m.stride), _pair(padding), _pair(m.dilation), int(m.groups))
    return Value(ctx.add(path, op, (x,)))


def _weights(path: str, m: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Float weights, or for brevitas layers the fake-quantized ``quant_weight().value``."""
    if not isinstance(m, QuantLinear | QuantConv2d):
        return _array(path, "weight", m.weight), _opt_array(path, "bias", m.bias)
    for proxy in ("input_quant", "output_quant"):
        if getattr(m, proxy).is_quant_enabled:
            raise UnsupportedModuleError(
                f"module {path!r}: brevitas {proxy} is not supported; quantize weights (and bias) only"
            )
    with torch.no_grad():
        weight = _array(path, "quant_weight()", m.quant_weight().value)
        if m.bias is None:
            return weight, None
        if not m.bias_quant.is_quant_enabled:
            return weight, _array(path, "bias", m.bias)
        if m.bias_quant.requires_input_scale:
            raise UnsupportedModuleError(
                f"module {path!r}: its bias quantizer needs the input scale, which the layer does not "
                "have (no input_quant); use bias=False or a bias quantizer with internal scaling"
            )
        qb = m.bias_quant(m.bias)
        return weight, _array(path, "quant_bias()", getattr(qb, "value", qb))


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


_BATCHNORM_DIMS: dict[type[nn.Module], tuple[int, ...]] = {nn.BatchNorm1d: (1, 2), nn.BatchNorm2d: (3,)}


@handles(nn.BatchNorm1d, nn.BatchNorm2d)
def _batchnorm(ctx: Context, path: str, m: Any, x: str) -> Value:
    """Eval-mode batch normalization with the running statistics (see :class:`BatchNorm`)."""
    name = type(m).__name__
    if m.training:
        raise UnsupportedModuleError(
            f"module {path!r} ({name}) is in training mode, where it normalizes by each batch's own "
            "statistics; call model.eval() before compiling (the compiled network uses the running statistics)"
        )
    if m.running_mean is None or m.running_var is None:
        raise UnsupportedModuleError(
            f"module {path!r} ({name}) has track_running_stats=False, so it always normalizes by the batch's "
            "own statistics; build it with track_running_stats=True to compile it"
        )
    shape = ctx.shapes[x]
    if len(shape) not in _BATCHNORM_DIMS[type(m)]:
        expected = " or ".join(f"{d + 1}-d" for d in _BATCHNORM_DIMS[type(m)])
        raise UnsupportedModuleError(
            f"module {path!r} ({name}) receives a {len(shape) + 1}-d input (B, *{shape}); expected {expected}"
        )
    op = BatchNorm(
        _array(path, "running_mean", m.running_mean),
        _array(path, "running_var", m.running_var),
        _opt_array(path, "weight", m.weight),
        _opt_array(path, "bias", m.bias),
        float(m.eps),
    )
    return Value(ctx.add(path, op, (x,)))


@handles(nn.AvgPool2d)
def _avgpool(ctx: Context, path: str, m: Any, x: str) -> Value:
    kernel = _pair(m.kernel_size)
    op = AvgPool2d(
        kernel,
        _pair(m.stride) if m.stride is not None else kernel,
        _pair(m.padding),
        bool(m.ceil_mode),
        bool(m.count_include_pad),
        None if m.divisor_override is None else int(m.divisor_override),
    )
    return Value(ctx.add(path, op, (x,)))


@handles(nn.MaxPool2d)
def _maxpool(ctx: Context, path: str, m: Any, x: str) -> Value:
    if m.return_indices:
        raise UnsupportedModuleError(f"module {path!r}: MaxPool2d(return_indices=True) is not supported")
    kernel = _pair(m.kernel_size)
    stride = _pair(m.stride) if m.stride is not None else kernel
    op = MaxPool2d(kernel, stride, _pair(m.padding), _pair(m.dilation), bool(m.ceil_mode))
    return Value(ctx.add(path, op, (x,)))


@handles(nn.Flatten)
def _flatten(ctx: Context, path: str, m: Any, x: str) -> Value:
    return _flatten_dims(ctx, path, x, int(m.start_dim), int(m.end_dim))


def _flatten_dims(ctx: Context, path: str, x: str, start: int, end: int) -> Value:
    """A flatten over batched dims ``start..end``; the batch axis 0 must stay."""
    ndim = len(ctx.shapes[x]) + 1
    if start % ndim == 0:
        raise UnsupportedModuleError(f"{path!r}: flattening the batch axis (start_dim=0) is not supported")
    start, end = start % ndim - 1, end % ndim - 1
    return Value(ctx.add(path, Flatten(start, end), (x,)))


@handles(nn.Identity, nn.Dropout)
def _identity(ctx: Context, path: str, m: Any, x: str) -> Value:
    """Identity, and dropout as it runs in evaluation (the compiled network is an inference network)."""
    return Value(x)


# ------------------------------------------------------------------------------------ tracing


def _is_leaf(m: nn.Module) -> bool:
    """Library modules are leaves (handled or refused by name); containers and user modules are traced into."""
    if isinstance(m, nn.Sequential):
        return False
    return isinstance(m, tuple(HANDLERS)) or m.__module__.startswith(("torch.nn", "snntorch", "brevitas"))


class _Tracer(fx.Tracer):
    """Traces into containers and user modules; library modules stay leaves (handled or refused)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _is_leaf(m)


def _node_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _tensor_arg(node: fx.Node, values: dict[fx.Node, Value], what: str) -> str:
    if not node.args or not isinstance(node.args[0], fx.Node) or node.args[0] not in values:
        raise UnsupportedModuleError(f"{what} takes no tensor input")
    extra = [a for a in _node_args(node)[1:] if a in values]
    if extra:
        raise UnsupportedModuleError(
            f"{what} is called with {len(extra) + 1} tensor arguments; neurons must keep their own state "
            "(init_hidden=True, or called with the input alone) and layers take one input"
        )
    value = values[node.args[0]]
    if value.state is not None:
        kind = "the returned tuple" if value.state == "tuple" else f"the {value.state!r} state"
        raise UnsupportedModuleError(
            f"{what} receives {kind} of neuron {value.node!r}; only a neuron's spikes can feed a layer "
            "(index the tuple, or build the neuron with output=False and init_hidden=True)"
        )
    return value.node


_INT_OPS: tuple[Any, ...] = (operator.add, operator.sub, operator.mul, operator.floordiv)


class _Converter:
    """Turns a one-step torch.fx graph into IR nodes, one fx opcode per method (the fx Interpreter
    pattern): modules through :data:`HANDLERS`, calls through :mod:`.functional`.

    ``step_shape`` is one time step of the input, (B, *input_shape). Values computed from shapes
    (``x.size(0)``, ``x.shape``) are kept as Python values in ``consts``, so ``view(x.size(0), -1)``
    resolves to the example's sizes.
    """

    def __init__(self, module: nn.Module, step_shape: Shape) -> None:
        self.module = module
        self.batch = int(step_shape[0])
        self.input_shape = tuple(step_shape[1:])
        self.ctx = Context(Graph(), {}, {})
        self.values: dict[fx.Node, Value] = {}
        self.consts: dict[fx.Node, Any] = {}
        self.called: set[str] = set()
        self.returned: list[Value] = []
        self.single = True

    def run(self, fx_graph: fx.Graph) -> None:
        """Converts every fx node; :meth:`finish` then adds the outputs."""
        for node in fx_graph.nodes:
            getattr(self, node.op)(node)
        if not self.returned:
            raise UnsupportedModuleError("forward returns nothing; expected a tensor of output spikes")

    def returns(self) -> list[tuple[str, str, int | None, int]]:
        """What a one-step (or whole-sequence) forward returns, by position: (node, var, step, time
        axis)."""
        graph = self.ctx.graph
        step = None if graph.whole_sequence else -1
        neurons = set(graph.neurons())
        out: list[tuple[str, str, int | None, int]] = []
        for v in self.returned:
            if v.state == "tuple":
                out += [(v.node, var, step, 0) for var in ("spk", *self.ctx.neuron_states[v.node])]
            elif v.state is not None:
                out.append((v.node, v.state, step, 0))
            else:
                out.append((v.node, "spk" if v.node in neurons else "value", step, 0))
        return out

    def finish(
        self, returns: list[tuple[str, str, int | None, int]]
    ) -> tuple[Graph, tuple[ForwardOutput, ...]]:
        """Adds one Output node per returned value (``output``, ``output_1``, ... by position) and
        checks the graph."""
        graph = self.ctx.graph
        outputs = []
        for node, var, step, axis in returns:
            name = graph.fresh_name("output")
            state = var if var in ("mem", "syn") else None
            graph.add(name, Output(state), (node,), source="output")
            outputs.append(ForwardOutput(name, node, var, step, axis))
        _check_whole_sequence(graph)
        graph.verify()
        return graph, tuple(outputs)

    # ------------------------------------------------------------------------------ opcodes

    def placeholder(self, node: fx.Node) -> None:
        if self.values:
            raise UnsupportedModuleError(
                f"forward takes a second argument {node.name!r}; snncompile traces single-step modules "
                "whose only argument is the input (neurons keep their state: init_hidden=True)"
            )
        x = self.ctx.add("input", Input(self.input_shape), ())
        quant = _input_quant(self.module)
        if quant is not None:  # prepare_qat(input_frac=): the model rounds its input currents
            x = self.ctx.add("qat_input", InputGrid(quant.frac, -quant.limit, quant.limit), (x,))
        self.values[node] = Value(x)

    def call_module(self, node: fx.Node) -> None:
        target = str(node.target)
        sub = self.module.get_submodule(target)
        sub_type = module_type(sub)
        handler = HANDLERS.get(sub_type)
        if handler is None:
            instead = _REFUSAL_HINTS.get(sub_type)
            raise UnsupportedModuleError(
                f"module {target!r} ({sub_type.__module__}.{sub_type.__name__}) is not supported; "
                + (instead or f"supported: {_supported()} (exact types: subclasses are refused)")
            )
        if isinstance(sub, snn.SpikingNeuron | snn.LeakyParallel | QuantLeakyParallel):
            if target in self.called:
                raise UnsupportedModuleError(
                    f"neuron module {target!r} is called twice per step; a neuron has one state, "
                    "so use one module per layer"
                )
            self.called.add(target)
        x = _tensor_arg(node, self.values, f"module {target!r}")
        self.values[node] = handler(self.ctx, target, sub, x)

    def call_function(self, node: fx.Node) -> None:
        self._call(node)

    def call_method(self, node: fx.Node) -> None:
        self._call(node)

    def get_attr(self, node: fx.Node) -> None:
        raise self._refuse(node)

    def output(self, node: fx.Node) -> None:
        ret = node.args[0]
        items = list(ret) if isinstance(ret, tuple | list) else [ret]
        if not items or not all(isinstance(i, fx.Node) and i in self.values for i in items):
            raise UnsupportedModuleError(f"the module returns {ret!r}; expected a tensor of output spikes")
        self.returned = [self.values[i] for i in items]  # type: ignore[index]
        values = self.returned
        self.single = not isinstance(ret, tuple | list) and values[0].state != "tuple"

    # -------------------------------------------------------------------------------- calls

    def _call(self, node: fx.Node) -> None:
        target = node.target
        name = functional.call_name(target)
        if target is operator.getitem:
            self._getitem(node)
        elif self._shape_query(node):
            pass
        elif target in functional.IDENTITY:
            self.values[node] = Value(_tensor_arg(node, self.values, name))
        elif target in functional.FLATTEN:
            self._flatten(node, name)
        elif target in functional.RESHAPE:
            x = _tensor_arg(node, self.values, name)
            dims = functional.reshape_dims(target, node.args, dict(node.kwargs), self._resolve)
            merged = functional.flatten_range(target, (self.batch, *self.ctx.shapes[x]), dims)
            self.values[node] = Value(x) if merged is None else _flatten_dims(self.ctx, node.name, x, *merged)
        elif target in functional.POOLS:
            x = _tensor_arg(node, self.values, name)
            op = functional.pool_op(target, node.args, dict(node.kwargs))
            self.values[node] = Value(self.ctx.add(node.name, op, (x,)))
        else:
            raise self._refuse(node)

    def _refuse(self, node: fx.Node) -> UnsupportedModuleError:
        return functional.refusal(node.op, node.target, node.format_node() or node.name, _supported())

    def _full_shape(self, node: Any) -> tuple[int, ...]:
        value = self.values.get(node) if isinstance(node, fx.Node) else None
        if value is None or value.state == "tuple":
            raise UnsupportedModuleError(f"the shape of {node!r} in forward is not known (not a tensor)")
        return (self.batch, *self.ctx.shapes[value.node])

    def _resolve(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            if a not in self.consts:
                raise UnsupportedModuleError(
                    f"{a.name!r} in forward is a tensor used as a size; sizes must be constants, x.size(i) or x.shape[i]"
                )
            return self.consts[a]
        if isinstance(a, tuple | list):
            return type(a)(self._resolve(i) for i in a)
        return a

    def _is_value(self, a: Any) -> bool:
        return isinstance(a, fx.Node) and a in self.values

    def _shape_query(self, node: fx.Node) -> bool:
        """``x.size()``, ``x.size(i)``, ``x.shape``, ``x.dim()`` and integer arithmetic on them."""
        target, args = node.target, node.args
        if (
            node.op == "call_method"
            and target in functional.SHAPE_QUERIES
            and args
            and self._is_value(args[0])
        ):
            shape = self._full_shape(args[0])
            if target == "dim":
                self.consts[node] = len(shape)
            else:
                dim = node.kwargs.get("dim", args[1] if len(args) > 1 else None)
                if dim is not None and not isinstance(dim, int):
                    raise UnsupportedModuleError(
                        f"{node.format_node()}: the size's dim must be a constant integer"
                    )
                self.consts[node] = tuple(shape) if dim is None else shape[dim]
            return True
        if target is getattr and len(args) == 2 and args[1] == "shape" and self._is_value(args[0]):
            self.consts[node] = self._full_shape(args[0])
            return True
        if target in _INT_OPS and all(a in self.consts for a in _node_args(node)):
            resolved = [self._resolve(a) for a in args]
            if all(isinstance(a, int) for a in resolved):
                self.consts[node] = target(*resolved)  # type: ignore[operator]
                return True
        return False

    def _getitem(self, node: fx.Node) -> None:
        src, index = node.args
        if isinstance(src, fx.Node) and src in self.consts:
            self.consts[node] = self.consts[src][index]
            return
        value = self.values.get(src) if isinstance(src, fx.Node) else None
        if value is None or value.state != "tuple" or not isinstance(index, int):
            raise UnsupportedModuleError(
                f"indexing {node.name!r} ({node.format_node()}) is not supported; "
                f"{functional.hint(operator.getitem)}"
            )
        states = self.ctx.neuron_states[value.node]
        if index == 0:
            self.values[node] = Value(value.node)
        elif 1 <= index <= len(states):
            self.values[node] = Value(value.node, states[index - 1])
        else:
            raise UnsupportedModuleError(
                f"{node.name!r}: neuron {value.node!r} returns {1 + len(states)} values"
            )

    def _flatten(self, node: fx.Node, name: str) -> None:
        x = _tensor_arg(node, self.values, name)
        args = list(node.args[1:])
        start = node.kwargs.get("start_dim", args[0] if args else 0)
        end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
        if not isinstance(start, int) or not isinstance(end, int):
            raise UnsupportedModuleError(f"{node.format_node()}: flatten dims must be constant integers")
        self.values[node] = _flatten_dims(self.ctx, node.name, x, start, end)


def _input_quant(module: nn.Module) -> InputQuant | None:
    q = getattr(module, "qat_input", None)
    return q if isinstance(q, InputQuant) else None


def _is_time_loop(fx_graph: fx.Graph, module: nn.Module) -> bool:
    """Whether torch.fx unrolled a time loop: a neuron called more than once, or a neuron state read in
    forward (``init_leaky()``); such a forward is recorded and folded by :mod:`.unroll` instead."""
    calls: dict[str, int] = {}
    for node in fx_graph.nodes:
        if node.op == "get_attr":
            return True
        if node.op == "call_module" and isinstance(module.get_submodule(str(node.target)), snn.SpikingNeuron):
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    return any(n > 1 for n in calls.values())


def trace(module: nn.Module, example_input: Any) -> Graph:
    """Traces an snnTorch module into a float IR graph of one time step; see :func:`trace_forward`."""
    return trace_forward(module, example_input).graph


def trace_forward(module: nn.Module, example_input: Any) -> TracedForward:
    """Traces an snnTorch module into a float IR graph of one time step, and says what forward returns.

    ``example_input`` is what forward takes. For a single-step module (``init_hidden=True`` neurons,
    or neurons called with their input alone) that is one time step (B, *input_shape); only its shape
    is used (torch.fx) and the module is not run. A forward with its own time loop (snnTorch's
    tutorial style: ``init_leaky()`` and ``for step in range(num_steps)``) takes (B, *input_shape) when
    it injects that input at every step, x[T, B, *input_shape] when it reads ``x[step]``, or a
    batch-first x[B, T, *input_shape] when it reads ``x[:, step]`` (the axis it reads steps along is
    the time axis, ``time_axis`` of the result); it is run
    once on ``example_input`` from zero neuron state (in eval mode, the module is left as it was) and
    its repeated step is folded into the same graph as its ``init_hidden=True`` twin
    (:mod:`.unroll`). Models built on ``LeakyParallel`` take the whole sequence per call; they are
    traced from the same one-step example.

    The result's ``sequence(x)`` is the per-step input ``x[T, B, ...]`` of the run reproducing
    ``forward(x)`` (a static input repeated ``steps`` times), and ``returned(run)`` reads forward's
    return values from that run (:mod:`.traced`).
    """
    if not isinstance(module, nn.Module):
        raise TraceError(f"expected a torch.nn.Module, got {type(module).__name__}")
    shape = tuple(int(d) for d in getattr(example_input, "shape", ()))
    if len(shape) < 2:
        raise TraceError(
            f"example_input must be one time step shaped (B, *input_shape), got shape {shape or 'none'}"
        )
    quant = _input_quant(module)
    with quant.bypassed() if quant is not None else contextlib.nullcontext():
        return _trace_forward(module, example_input, shape)


def _trace_forward(module: nn.Module, example_input: Any, shape: Shape) -> TracedForward:
    fx_error: str | None = None
    try:
        with unroll.preserved(module):  # forward may call init_leaky(), which replaces the state
            fx_graph: fx.Graph | None = _Tracer().trace(module)
    except SnnCompileError:
        raise
    except Exception as e:  # torch.fx raises many types; keep the first line for the messages
        fx_graph, fx_error = None, (str(e).splitlines() or [type(e).__name__])[0]
    if fx_graph is not None and not _is_time_loop(fx_graph, module):
        converter = _Converter(module, shape)
        converter.run(fx_graph)
        graph, outputs = converter.finish(converter.returns())
        mode: InputMode = "sequence" if graph.whole_sequence else "step"
        steps = None if graph.whole_sequence else 1
        return TracedForward(graph, mode, steps, outputs, converter.single, 0)
    x = torch.as_tensor(example_input)
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    folded = unroll.fold(module, x, _is_leaf, fx_error)
    converter = _Converter(module, folded.step_shape)
    converter.run(folded.graph)
    nodes = {converter.ctx.graph.source(n): n for n in converter.ctx.graph.neurons()}
    returns = [
        (converter.values[src].node if isinstance(src, fx.Node) else nodes[src], var, step, axis)
        for src, var, step, axis in folded.outputs
    ]
    graph, outputs = converter.finish(returns)
    mode = "sequence" if folded.sequence else "static"
    return TracedForward(graph, mode, folded.steps, outputs, folded.single, folded.time_axis)


def _check_whole_sequence(graph: Graph) -> None:
    """LeakyParallel models run over the whole sequence per call; step-wise layers cannot join them."""
    if not graph.whole_sequence:
        return
    for n in graph.topo_order():
        op = graph.op(n)
        stepwise = isinstance(op, CubaLIF) or (isinstance(op, LIF) and op.floor is None)
        if stepwise or not isinstance(op, Input | Output | Linear | LIF):
            raise UnsupportedModuleError(
                f"module {graph.source(n)!r} ({op.kind}) cannot follow or precede LeakyParallel: a "
                "LeakyParallel model takes the whole sequence (T, B, features) per call; supported there: "
                "Linear and LeakyParallel"
            )
