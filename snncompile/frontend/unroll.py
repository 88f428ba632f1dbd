"""Time loops in forward: run forward once on the example input, record it, fold it back into one step.

snnTorch's tutorials write the time loop inside ``forward``::

    mem1 = self.lif1.init_leaky()
    for step in range(num_steps):              # or range(x.size(0)) with x[step], or range(x.size(1))
                                               # with x[:, step] of a batch-first x[B, T, ...]
        spk1, mem1 = self.lif1(self.fc1(x), mem1)
        ...
        spk_rec.append(spk2); mem_rec.append(mem2)
    return torch.stack(spk_rec, dim=0), torch.stack(mem_rec, dim=0)

torch.fx cannot follow a Python loop whose length comes from a tensor, so :func:`fold` runs forward on
the example tensors instead. A ``TorchFunctionMode`` records every torch call made in forward itself,
and hooks record every call of a library module (layer or neuron; what happens inside is not
recorded). A tensor is identified by the object itself, so the record is a dataflow graph.

The record is then checked to be one time step repeated: every neuron is called once per step (its
k-th call is step k), continues from the state it returned at the previous step (passed back, or kept
in its own buffers) starting from zero, and the input of its call at step k is the same computation as
at step 0, reading only step k's values (``x[k]`` of a sequence, ``x[:, k]`` of a batch-first one,
or the static input, and the spikes of step k). Anything else is refused with one line naming the module and what differs. Step 0 is then
written out as a one-step ``torch.fx.Graph`` (neurons called with their input alone), which the
frontend converts like any traced forward, together with what forward returns: per returned value,
the neuron and the variable (``spk``, ``mem``, ``syn``), or a readout (the values of a layer, e.g. a
non-spiking ``nn.Linear``, emitted into the step as the computation its step-0 twin is), and the step
(or all steps, for ``torch.stack(rec, dim=0)``, or ``dim=1``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import operator
from collections.abc import Callable, Iterator
from typing import Any

import snntorch as snn
import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from snncompile.errors import SnnCompileError, TraceError, UnsupportedModuleError
from snncompile.frontend import functional
from snncompile.quant.qat import QuantLeakyParallel

_NEURON_STATES: tuple[tuple[type[nn.Module], tuple[str, ...], str], ...] = (
    (snn.RSynaptic, ("spk", "syn", "mem"), "init_rsynaptic"),
    (snn.RLeaky, ("spk", "mem"), "init_rleaky"),
    (snn.Synaptic, ("syn", "mem"), "init_synaptic"),
    (snn.Leaky, ("mem",), "init_leaky"),
)
"""Each neuron class's state variables, in the order its forward takes them, and its init method."""

_READS_VALUE = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy")
_FACTORIES = (
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
    "new_zeros",
    "new_ones",
    "new_empty",
    "new_full",
)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _neuron_kind(m: nn.Module) -> tuple[tuple[str, ...], str] | None:
    for cls, states, init in _NEURON_STATES:
        if isinstance(m, cls):
            return states, init
    return None


# ---------------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class _In:
    """The forward argument: whole (``step`` None) or one step of a sequence, ``x[step]`` (or
    ``x[:, step]`` of a batch-first one); ``swapped``: the whole argument with its first two axes
    swapped (``x.transpose(0, 1)``), a view that only its steps may be read from."""

    step: int | None
    swapped: bool = False


@dataclasses.dataclass(frozen=True)
class _Out:
    """Output ``var`` of recorded call ``call``: ``"spk"``/``"mem"``/``"syn"`` of a neuron, ``""`` for
    a plain tensor result, ``"0"``, ``"1"``, ... for an item of a tuple result."""

    call: int
    var: str


class _Const:
    """A tensor forward uses that is not computed from the input (a parameter, a fresh zero tensor)."""

    def __init__(self, t: Tensor) -> None:
        self.shape = tuple(t.shape)
        data = t.detach().cpu().contiguous()
        self.key = (self.shape, str(t.dtype), hashlib.sha1(data.numpy().tobytes()).hexdigest())

    def __repr__(self) -> str:
        return f"<constant tensor of shape {self.shape}>"


Sym = _In | _Out


@dataclasses.dataclass
class _Call:
    """One recorded call: a module (``target`` its path) or a torch function / Tensor method."""

    index: int
    target: Any
    module: bool
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    neuron: bool = False
    step: int = -1  # a neuron call's step (its call count)
    returned: tuple[str, ...] = ()  # the vars of a tuple result, by position; () for a single tensor

    @property
    def name(self) -> str:
        return str(self.target) if self.module else functional.call_name(_fx_target(self.target))


def _method_name(func: Any) -> str | None:
    name = getattr(func, "__name__", None)
    if isinstance(name, str) and getattr(torch.Tensor, name, None) is func:
        return name
    return None


def _fx_target(func: Any) -> Any:
    """What torch.fx would record: a method name for a Tensor method, else the function itself."""
    return _method_name(func) or func


def step_text(axis: int, step: int | str) -> str:
    """How forward reads one time step: ``x[3]`` of x[T, B, ...], ``x[:, 3]`` of x[B, T, ...]."""
    return f"x[{step}]" if axis == 0 else f"x[:, {step}]"


def _is_int(i: Any) -> bool:
    return isinstance(i, int) and not isinstance(i, bool)


def _is_all(i: Any) -> bool:
    return i is Ellipsis or (isinstance(i, slice) and i == slice(None))


def _step_index(index: Any) -> tuple[int, int] | None:
    """(axis, i) for an index that picks entry ``i`` of axis 0 or 1 and keeps every other axis whole:
    ``x[i]``, ``x[i, ...]``, ``x[:, i]``, ``x[:, i, :]``."""
    parts = index if isinstance(index, tuple) else (index,)
    for axis in (0, 1):
        if (
            len(parts) > axis
            and _is_int(parts[axis])
            and all(isinstance(p, slice) and p == slice(None) for p in parts[:axis])
            and all(_is_all(p) for p in parts[axis + 1 :])
        ):
            return axis, parts[axis]
    return None


def _select_index(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, int] | None:
    """(axis, i) of ``x.select(dim, i)`` along axis 0 or 1."""
    dim = kwargs.get("dim", args[0] if args else None)
    index = kwargs.get("index", args[1] if len(args) > 1 else None)
    if dim in (0, 1) and isinstance(index, int) and not isinstance(index, bool):
        return int(dim), index
    return None


def _swaps_first_axes(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], ndim: int) -> bool:
    """Whether a transpose-like call swaps axes 0 and 1 and keeps the others in place."""
    if name in ("transpose", "swapaxes", "swapdims") and len(args) == 2 and all(map(_is_int, args)):
        return sorted(a % ndim for a in args) == [0, 1]
    if name == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], tuple | list) else args
        dims = kwargs.get("dims", dims)
        return all(map(_is_int, dims)) and [d % ndim for d in dims] == [1, 0, *range(2, ndim)]
    if name == "movedim" and len(args) == 2 and all(map(_is_int, args)):
        return sorted(a % ndim for a in args) == [0, 1]
    return False


class _Recorder(TorchFunctionMode):
    """Records forward's torch calls and library-module calls as a dataflow graph over tensor identities."""

    def __init__(self, x: Tensor, fx_error: str | None, model: str) -> None:
        super().__init__()
        self.x = x
        self.fx_error = fx_error
        self.model = model
        self.syms: dict[int, Sym] = {id(x): _In(None)}
        self.keep: list[Tensor] = [x]  # tracked tensors stay alive, so their ids stay theirs
        self.calls: list[_Call] = []
        self.depth = 0
        self.open: list[_Call | None] = []
        self.open_paths: list[str] = []
        self.neuron_calls: dict[str, list[int]] = {}
        self.state_out: dict[str, dict[str, Tensor]] = {}
        # the whole argument and its views with the first two axes swapped: the argument's axes at
        # their axes 0 and 1
        self.views: dict[int, tuple[int, int]] = {id(x): (0, 1)}
        self.time_axis: int | None = None  # the argument's axis forward reads step by step

    @property
    def sequence(self) -> bool:
        """Forward reads its argument step by step: a sequence, x[T, B, ...] or x[B, T, ...]."""
        return self.time_axis is not None

    # ------------------------------------------------------------------------------ tensors

    def _track(self, t: Tensor, sym: Sym) -> None:
        self.syms[id(t)] = sym
        self.keep.append(t)

    def _arg(self, a: Any) -> Any:
        if isinstance(a, Tensor):
            sym = self.syms.get(id(a))
            return sym if sym is not None else _Const(a)
        if isinstance(a, tuple | list):
            return type(a)(self._arg(i) for i in a)
        if isinstance(a, dict):
            return {k: self._arg(v) for k, v in a.items()}
        return a

    def _record(self, call: _Call, out: Any) -> None:
        self.calls.append(call)
        if isinstance(out, Tensor):
            self._track(out, _Out(call.index, ""))
        elif isinstance(out, tuple | list):
            call.returned = tuple(str(i) for i in range(len(out)))
            for i, item in enumerate(out):
                if isinstance(item, Tensor):
                    self._track(item, _Out(call.index, str(i)))

    # ---------------------------------------------------------------------------- functions

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.depth:
            return func(*args, **kwargs)
        tensors = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, Tensor)]
        tracked = [a for a in tensors if id(a) in self.syms]
        name = getattr(func, "__name__", "")
        if tracked and name in _READS_VALUE:
            raise TraceError(self._data_dependent(name))
        out = func(*args, **kwargs)
        if not tracked or name in _FACTORIES:
            return out
        if not isinstance(out, Tensor) and not (
            isinstance(out, tuple | list) and out and all(isinstance(o, Tensor) for o in out)
        ):
            return out  # sizes, shapes, dims: Python values
        if self._input_step(func, args, kwargs, out):
            return out
        identity = _method_name(func) in functional.IDENTITY or func in functional.IDENTITY
        if identity and isinstance(out, Tensor) and id(args[0]) in self.syms:
            self._track(out, self.syms[id(args[0])])
            if id(args[0]) in self.views:
                self.views[id(out)] = self.views[id(args[0])]
            return out
        call = _Call(len(self.calls), func, False, self._arg(tuple(args)), self._arg(dict(kwargs)))
        self._record(call, out)
        return out

    def _data_dependent(self, name: str) -> str:
        found = (
            f"Tensor.{name} reads a tensor value into Python (control flow or sizes that depend on the data)"
        )
        if self.fx_error is not None:
            return (
                f"torch.fx cannot trace {self.model}: {self.fx_error}; and running forward on the example "
                f"input, {found}, which snncompile cannot follow"
            )
        return (
            f"running forward of {self.model} on the example input, {found}, which snncompile cannot follow"
        )

    def _input_step(self, func: Any, args: Any, kwargs: Any, out: Any) -> bool:
        """One step of the forward argument along axis 0 or 1: ``x[step]``, ``x[:, step]``,
        ``x.select(dim, step)``, ``x.unbind(dim)`` (``for x_t in x``); or the argument with its first two
        axes swapped (``x.transpose(0, 1)``, ``x.permute(1, 0, ...)``), whose steps are the argument's."""
        if not args or not isinstance(args[0], Tensor) or id(args[0]) not in self.views:
            return False
        axes = self.views[id(args[0])]
        name = str(_method_name(func) or getattr(func, "__name__", ""))
        if name in ("__getitem__", "select"):
            found = _step_index(args[1]) if name == "__getitem__" else _select_index(args[1:], kwargs)
            if found is None:
                return False
            axis, index = axes[found[0]], found[1]
            steps = self.x.shape[axis]
            if not -steps <= index < steps:
                return False
            self._step(axis, out, index % steps)
            return True
        if name == "unbind":
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim not in (0, 1):
                return False
            for t, item in enumerate(out):
                self._step(axes[dim], item, t)
            return True
        if _swaps_first_axes(name, args[1:], kwargs, args[0].dim()):
            self._track(out, _In(None, swapped=True))
            self.views[id(out)] = (axes[1], axes[0])
            return True
        return False

    def _step(self, axis: int, t: Tensor, step: int) -> None:
        if self.time_axis is None:
            self.time_axis = axis
        elif axis != self.time_axis:
            raise UnsupportedModuleError(
                f"forward of {self.model} reads its input {tuple(self.x.shape)} step by step along axis "
                f"{self.time_axis} and along axis {axis}; read time steps along one axis: x[step] of x[T, B, ...] "
                "or x[:, step] of x[B, T, ...]"
            )
        self._track(t, _In(step))

    # ------------------------------------------------------------------------------ modules

    def before(self, path: str, m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.depth += 1
        if self.depth > 1:
            self.open.append(None)
            return
        self.open_paths.append(path)
        if isinstance(m, snn.LeakyParallel | QuantLeakyParallel):
            reason = f"torch.fx failed: {self.fx_error}" if self.fx_error else "it is called in a time loop"
            raise UnsupportedModuleError(
                f"module {path!r} ({type(m).__name__}) runs the whole sequence in one call, so its model must "
                f"be traceable by torch.fx without a time loop in forward ({reason})"
            )
        index = len(self.calls)  # nothing is recorded until this call returns
        kind = _neuron_kind(m)
        if kind is None:
            call = _Call(index, path, True, self._arg(tuple(args)), self._arg(dict(kwargs)))
        else:
            bound = inspect.signature(m.forward).bind(*args, **kwargs).arguments
            first = next(iter(bound.values()))
            calls = self.neuron_calls.setdefault(path, [])
            self._check_states(path, m, kind, bound, first, len(calls))
            calls.append(index)
            call = _Call(index, path, True, (self._arg(first),), {}, neuron=True, step=len(calls) - 1)
        self.open.append(call)

    def after(self, path: str, m: nn.Module, args: Any, out: Any) -> None:
        call = self.open.pop()
        if call is not None:
            self.open_paths.pop()
            kind = _neuron_kind(m)
            if kind is None:
                self._record(call, out)
            else:
                self.calls.append(call)
                states = {s: getattr(m, s) for s in kind[0]}
                items = list(out) if isinstance(out, tuple | list) else [out]
                self._track(items[0], _Out(call.index, "spk"))
                for s, t in states.items():
                    self._track(t, _Out(call.index, s))
                if isinstance(out, tuple | list):
                    names = [
                        next((s for s, t in states.items() if t is i), str(n)) for n, i in enumerate(items)
                    ]
                    call.returned = ("spk", *names[1:])
                self.state_out[path] = states
        self.depth -= 1

    def _check_states(
        self,
        path: str,
        m: nn.Module,
        kind: tuple[tuple[str, ...], str],
        bound: dict[str, Any],
        first: Any,
        step: int,
    ) -> None:
        """A neuron starts from zero state and then continues from the state it returned last step."""
        names, init = kind
        for s in names:
            passed = bound.get(s)
            state = passed if passed is not None else getattr(m, s)
            if not isinstance(state, Tensor):
                raise UnsupportedModuleError(
                    f"module {path!r}: its {s} argument is {type(state).__name__}, not a tensor"
                )
            if step == 0:
                sym = self.syms.get(id(state))
                if sym is not None:
                    n = sum(isinstance(v, Tensor) for v in bound.values())
                    raise UnsupportedModuleError(
                        f"module {path!r} is called with {n} tensor arguments; neurons must keep their own state "
                        f"(init_hidden=True, or called with the input alone) or start from zero ({init}() or "
                        f"reset_mem() before the time loop); its {s} at step 0 is {self._describe(sym)}"
                    )
                if isinstance(first, Tensor) and state.shape == first.shape and bool(state.ne(0).any()):
                    raise UnsupportedModuleError(
                        f"module {path!r} starts from a nonzero {s}; snncompile runs every neuron from zero state "
                        f"(start it with {init}() or reset_mem())"
                    )
            elif state is not self.state_out[path][s]:
                sym = self.syms.get(id(state))
                if sym is not None:
                    found = self._describe(sym)
                elif bool(state.eq(0).all()):
                    found = f"a fresh zero state ({init}() or reset_mem() inside the time loop?)"
                else:
                    found = "a tensor not computed by the network"
                raise UnsupportedModuleError(
                    f"module {path!r}: at step {step} its {s} is {found}, not the {s} it returned at step "
                    f"{step - 1}; a neuron continues from its own state (pass back what it returned, or nothing)"
                )

    def _describe(self, sym: Sym) -> str:
        if isinstance(sym, _In):
            if sym.step is None:
                return "the input with its first two axes swapped" if sym.swapped else "the input"
            return step_text(self.time_axis or 0, sym.step)
        call = self.calls[sym.call]
        if call.neuron:
            return f"the {sym.var} of module {call.target!r} at step {call.step}"
        return f"the output of {call.name}"


# ---------------------------------------------------------------------------------- folding


class _Mismatch(Exception):
    """A value of another step (or the whole sequence) inside step ``step``; ``neuron`` names the
    neuron whose output it is, if any."""

    def __init__(self, found: str, neuron: str | None = None) -> None:
        super().__init__(found)
        self.found = found
        self.neuron = neuron


@dataclasses.dataclass(frozen=True)
class _Return:
    """One value forward returns: variable ``var`` (``"spk"``, ``"mem"``, ``"syn"``) of neuron ``path``,
    or a readout (``var`` ``"value"``, ``path`` empty): what ``sym`` computes at step ``at``. ``step``:
    None for all steps stacked on axis ``axis``, -1 for the last step, else the step."""

    path: str
    var: str
    step: int | None
    axis: int
    sym: _Out | None = None
    at: int = 0


@dataclasses.dataclass(frozen=True)
class Folded:
    """One time step of a forward with a time loop, as a torch.fx graph, and what forward returns.

    ``sequence``: forward takes a sequence and reads it step by step along ``time_axis``: 0 for
    ``x[T, B, ...]`` (``x[step]``), 1 for a batch-first ``x[B, T, ...]`` (``x[:, step]``); else it takes
    ``x[B, ...]`` and injects it at every step (``time_axis`` 0). ``steps``: the loop's step count.
    ``step_shape``: one step's input (B, ...). ``outputs``: per returned value, (source, var, step,
    axis): the source is a neuron's module path (var ``spk``, ``mem``, ``syn``) or, for a readout (var
    ``value``: a layer's values, e.g. a non-spiking ``nn.Linear``), its node in ``graph``; step None for
    all steps stacked on axis ``axis`` (0: (T, B, ...), 1: (B, T, ...)), -1 for the last step.
    ``single``: forward returns one tensor, not a tuple.
    """

    graph: fx.Graph
    sequence: bool
    time_axis: int
    steps: int
    step_shape: tuple[int, ...]
    outputs: tuple[tuple[str | fx.Node, str, int | None, int], ...]
    single: bool


def _leaves(module: nn.Module, is_leaf: Callable[[nn.Module], bool]) -> dict[str, nn.Module]:
    """The library modules forward calls directly (their insides are not recorded), by path."""
    found: dict[str, nn.Module] = {}

    def walk(m: nn.Module, prefix: str) -> None:
        for name, child in m.named_children():
            path = f"{prefix}{name}"
            if not isinstance(child, _CONTAINERS) and is_leaf(child):
                found[path] = child
            else:
                walk(child, f"{path}.")

    walk(module, "")
    return found


@contextlib.contextmanager
def preserved(module: nn.Module) -> Iterator[None]:
    """Leaves ``module`` as it was: the neurons' state buffers (which forward and ``init_leaky()``
    replace, even under torch.fx tracing) and every submodule's training flag."""
    modes = {m: m.training for m in module.modules()}
    saved = {m: dict(m._buffers) for m in module.modules() if isinstance(m, snn.SpikingNeuron)}
    try:
        yield
    finally:
        for m, buffers in saved.items():
            m._buffers.clear()
            m._buffers.update(buffers)
        for m, mode in modes.items():
            m.training = mode


def _run_recorded(
    module: nn.Module, x: Tensor, is_leaf: Callable[[nn.Module], bool], fx_error: str | None
) -> tuple[_Recorder, Any]:
    """Runs ``module(x)`` in eval mode from zero neuron state, recording it; the module is left as it was."""
    model = type(module).__name__
    rec = _Recorder(x, fx_error, model)
    handles = []
    with preserved(module):
        for m in module.modules():
            if isinstance(m, snn.SpikingNeuron):
                for name in ("spk", "syn", "mem"):
                    if name in m._buffers:
                        m._buffers[name] = torch.zeros(0)
        module.eval()
        for path, m in _leaves(module, is_leaf).items():
            handles.append(
                m.register_forward_pre_hook(
                    lambda mod, a, kw, p=path: rec.before(p, mod, a, kw), with_kwargs=True
                )
            )
            handles.append(m.register_forward_hook(lambda mod, a, out, p=path: rec.after(p, mod, a, out)))
        try:
            with torch.no_grad(), rec:
                ret = module(x)
        except SnnCompileError:
            raise
        except Exception as e:
            where = f" in module {rec.open_paths[-1]!r}" if rec.open_paths else ""
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TraceError(
                f"forward of {model} fails on the example input of shape {tuple(x.shape)}{where}: {first}"
            ) from None
        finally:
            for h in handles:
                h.remove()
    return rec, ret


def fold(
    module: nn.Module, x: Tensor, is_leaf: Callable[[nn.Module], bool], fx_error: str | None = None
) -> Folded:
    """Records ``module(x)`` and folds its time loop into one step (see the module docstring).

    ``is_leaf`` says which modules are recorded as calls (layers and neurons); ``fx_error`` is why
    torch.fx could not trace the module, if it could not, for the messages.
    """
    rec, ret = _run_recorded(module, x, is_leaf, fx_error)
    return _Folder(rec, x).fold(ret)


class _Folder:
    def __init__(self, rec: _Recorder, x: Tensor) -> None:
        self.rec = rec
        self.calls = rec.calls
        self.x = x
        self.order = sorted(rec.neuron_calls, key=lambda p: rec.neuron_calls[p][0])

    def fold(self, ret: Any) -> Folded:
        rec = self.rec
        if not self.order:
            raise UnsupportedModuleError(
                f"forward of {rec.model} calls no snnTorch neuron module (Leaky, Synaptic, RLeaky, RSynaptic)"
            )
        counts = {p: len(rec.neuron_calls[p]) for p in self.order}
        first = self.order[0]
        steps = counts[first]
        for p, n in counts.items():
            if n != steps:
                raise UnsupportedModuleError(
                    f"neuron module {p!r} is called {n} times in forward but {first!r} {steps} times; a neuron has "
                    "one state, so call each neuron once per time step (one module per layer)"
                )
        axis = rec.time_axis or 0
        if rec.sequence and steps != self.x.shape[axis]:
            layout = "x[T, B, ...]" if axis == 0 else "x[B, T, ...]"
            raise UnsupportedModuleError(
                f"forward runs {steps} time steps over an input sequence of {self.x.shape[axis]} ({layout}); "
                f"pass an example input of {steps} steps"
            )
        for p in self.order:
            self._check_steps(p)
        returns = self._outputs(ret)
        shape = tuple(self.x.shape)
        step_shape = shape[:axis] + shape[axis + 1 :] if rec.sequence else shape
        graph, readouts = self._graph(returns)
        outputs = tuple(
            (r.path if node is None else node, r.var, r.step, r.axis)
            for r, node in zip(returns, readouts, strict=True)
        )
        return Folded(graph, rec.sequence, axis, steps, step_shape, outputs, isinstance(ret, Tensor))

    # ----------------------------------------------------------------------------- checking

    def canon(self, a: Any, step: int) -> Any:
        """``a`` as a comparable value relative to ``step``: equal for equal computations."""
        if isinstance(a, _In):
            if a.step is None:
                if self.rec.sequence or a.swapped:
                    raise _Mismatch(
                        f"uses {self.rec._describe(a)}, of shape {tuple(self.x.shape)}, as a whole"
                    )
                return ("x",)
            if a.step != step:
                raise _Mismatch(f"reads {self.rec._describe(a)}")
            return ("x[step]",)
        if isinstance(a, _Out):
            call = self.calls[a.call]
            if call.neuron:
                if call.step != step:
                    raise _Mismatch(
                        f"uses the {a.var} of module {call.target!r} from step {call.step}", call.target
                    )
                return ("neuron", call.target, a.var)
            return ("call", call.name, a.var, self.canon(call.args, step), self.canon(call.kwargs, step))
        if isinstance(a, _Const):
            return ("const", a.key)
        if isinstance(a, tuple | list):
            return tuple(self.canon(i, step) for i in a)
        if isinstance(a, dict):
            return tuple(sorted((k, self.canon(v, step)) for k, v in a.items()))
        return ("py", a)

    def _check_steps(self, path: str) -> None:
        first: Any = None
        for step, index in enumerate(self.rec.neuron_calls[path]):
            try:
                now = self.canon(self.calls[index].args[0], step)
            except _Mismatch as e:
                if e.neuron == path:
                    raise UnsupportedModuleError(
                        f"neuron module {path!r} is called twice per step; a neuron has one state, so use one "
                        "module per layer"
                    ) from None
                raise UnsupportedModuleError(
                    f"module {path!r}: at step {step} its input {e.found}; each step of the loop in forward may "
                    "read only its own step's values (x[step] or the static input, and that step's spikes)"
                ) from None
            if step == 0:
                first = now
            elif now != first:
                raise UnsupportedModuleError(
                    f"module {path!r}: at step {step} its input is {_pretty(now)}, but at step 0 it is "
                    f"{_pretty(first)}; every step of the loop in forward must compute the same thing"
                )

    def _outputs(self, ret: Any) -> list[_Return]:
        items = [ret] if isinstance(ret, Tensor) else list(ret) if isinstance(ret, tuple | list) else None
        if not items:
            raise UnsupportedModuleError(
                f"forward returns {type(ret).__name__}; expected tensors (spikes, states)"
            )
        steps = len(self.rec.neuron_calls[self.order[0]])
        out: list[_Return] = []
        for pos, item in enumerate(items):
            where = (
                f"forward's returned value {pos}"
                if len(items) > 1 or not isinstance(ret, Tensor)
                else "forward's result"
            )
            sym = self.rec.syms.get(id(item)) if isinstance(item, Tensor) else None
            if sym is None:
                found = (
                    type(item).__name__
                    if not isinstance(item, Tensor)
                    else "a tensor not computed from the input"
                )
                raise UnsupportedModuleError(
                    f"{where} is {found}; expected a neuron's spikes or state, or a layer's values"
                )
            if isinstance(sym, _In):
                raise UnsupportedModuleError(f"{where} is {self.rec._describe(sym)}; {_RETURNS}")
            call = self.calls[sym.call]
            if call.neuron:
                out.append(_Return(str(call.target), sym.var, -1 if call.step == steps - 1 else call.step, 0))
            elif call.target is torch.stack and sym.var == "":
                out.append(self._stacked(where, call, steps))
            else:
                at = self._step_of(where, sym, steps)
                out.append(_Return("", "value", -1 if at == steps - 1 else at, 0, sym, at))
        return out

    def _step_of(self, where: str, sym: _Out, steps: int) -> int:
        """The step whose values a readout computes (the last, when it reads no step's values)."""
        for step in reversed(range(steps)):
            try:
                self.canon(sym, step)
            except _Mismatch:
                continue
            return step
        raise UnsupportedModuleError(
            f"{where} is {self.rec._describe(sym)}, which combines values of several time steps; {_RETURNS}"
        )

    def _stacked(self, where: str, call: _Call, steps: int) -> _Return:
        seq = call.args[0] if call.args else call.kwargs.get("tensors")
        dim = call.kwargs.get("dim", call.args[1] if len(call.args) > 1 else 0)
        if dim not in (0, 1) or not isinstance(seq, tuple | list):
            raise UnsupportedModuleError(
                f"{where} is torch.stack(..., dim={dim!r}); stack per-step recordings on dim 0 (time first) "
                "or dim 1 (batch first)"
            )
        if len(seq) != steps:
            raise UnsupportedModuleError(
                f"{where} stacks {len(seq)} values, but forward runs {steps} time steps"
            )
        found: set[Any] = set()
        for step, item in enumerate(seq):
            if isinstance(item, _In):
                raise UnsupportedModuleError(f"{where} stacks {self.rec._describe(item)}; {_RETURNS}")
            try:
                c = self.canon(item, step)
            except _Mismatch as e:
                raise UnsupportedModuleError(
                    f"{where}: item {step} of the stack {e.found}; record each step's value in step order"
                ) from None
            if not isinstance(item, _Out) or c[0] not in ("neuron", "call"):
                raise UnsupportedModuleError(f"{where} stacks {_pretty(c)}; {_RETURNS}")
            found.add(c)
        if len(found) != 1:
            raise UnsupportedModuleError(
                f"{where} stacks values of several neurons, variables or layers "
                f"({', '.join(sorted(_pretty(c) for c in found))})"
            )
        c = found.pop()
        if c[0] == "neuron":
            return _Return(c[1], c[2], None, dim)
        return _Return("", "value", None, dim, seq[0], 0)  # a readout: emitted from its step-0 value

    # ---------------------------------------------------------------------------- emitting

    def _graph(self, returns: list[_Return]) -> tuple[fx.Graph, list[fx.Node | None]]:
        """Step 0 as a torch.fx graph: every neuron, called with its input alone, and the readouts
        forward returns; and each returned readout's node (None for a neuron's variable).

        A value is emitted once per computation (calls compared by :meth:`canon`), so a readout that
        forward computes after the loop, or records at every step, is the node its step-0 twin is."""
        g = fx.Graph()
        x = g.placeholder("x")
        emitted: dict[Any, fx.Node] = {}
        items: dict[tuple[int, int], fx.Node] = {}

        def item(node: fx.Node, call: int, i: int) -> fx.Node:
            if (call, i) not in items:
                items[(call, i)] = g.call_function(operator.getitem, (node, i))
            return items[(call, i)]

        def arg(a: Any, consumer: str, step: int) -> Any:
            if isinstance(a, _In):
                return x
            if isinstance(a, _Out):
                call = self.calls[a.call]
                if call.neuron:  # every step's call of a neuron is its one node
                    call = self.calls[self.rec.neuron_calls[str(call.target)][0]]
                node = emit(call, step)
                if not call.returned:
                    if a.var in ("", "spk"):
                        return node
                    raise UnsupportedModuleError(
                        f"{consumer} receives the {a.var!r} state of neuron {call.target!r}; only a neuron's "
                        "spikes can feed a layer"
                    )
                return item(node, call.index, call.returned.index(a.var))
            if isinstance(a, tuple | list):
                return type(a)(arg(i, consumer, step) for i in a)
            if isinstance(a, dict):
                return {k: arg(v, consumer, step) for k, v in a.items()}
            return a

        def emit(call: _Call, step: int) -> fx.Node:
            if call.neuron:
                key: Any = ("neuron", call.target)
                step = 0
            else:
                key = ("call", call.name, self.canon(call.args, step), self.canon(call.kwargs, step))
            if key in emitted:
                return emitted[key]
            consumer = f"module {call.target!r}" if call.module else call.name
            args = arg(call.args, consumer, step)
            kwargs = arg(call.kwargs, consumer, step)
            if call.module:
                node = g.call_module(str(call.target), args, kwargs)
            elif _method_name(call.target):
                node = g.call_method(str(_method_name(call.target)), args, kwargs)
            else:
                node = g.call_function(call.target, args, kwargs)
            emitted[key] = node
            return node

        for p in self.order:
            emit(self.calls[self.rec.neuron_calls[p][0]], 0)
        readouts = [None if r.sym is None else arg(r.sym, "the output", r.at) for r in returns]
        first = readouts[0]
        if first is None:
            out_call = self.calls[self.rec.neuron_calls[returns[0].path][0]]
            first = arg(_Out(out_call.index, "spk"), "the output", 0)
        g.output(first)
        return g, readouts


_RETURNS = (
    "forward may return neuron spikes and states or a layer's values (a readout): one step's, or all "
    "steps' stacked with torch.stack(rec, dim=0) (or dim=1, batch first)"
)


def _pretty(c: Any) -> str:
    """A canonical value written as an expression: ``fc2(lif1.spk)``, ``F.max_pool2d(conv1(x), 2)``."""
    if isinstance(c, tuple) and c:
        head = c[0]
        if head in ("x", "x[step]"):
            return str(head)
        if head == "neuron":
            return f"{c[1]}.{c[2]}"
        if head == "const":
            return f"<tensor {c[1][0]}>"
        if head == "py":
            return repr(c[1])
        if head == "call":
            _, name, var, args, kwargs = c
            parts = [_pretty(a) for a in args] + [f"{k}={_pretty(v)}" for k, v in kwargs]
            text = f"{name}({', '.join(parts)})"
            return f"{text}[{var}]" if var else text
        return f"({', '.join(_pretty(i) for i in c)})"
    return repr(c)
