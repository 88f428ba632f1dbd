"""Functional glue in forward: the torch functions and Tensor methods that map onto IR ops.

A call is seen as its target, the way torch.fx records it: a function object (``F.max_pool2d``,
``torch.flatten``) for ``call_function`` or a Tensor method name (``"view"``) for ``call_method``. The
supported calls map onto existing ops:

* ``F.max_pool2d`` / ``torch.max_pool2d`` -> MaxPool2d, ``F.avg_pool2d`` -> AvgPool2d;
* ``torch.flatten`` / ``Tensor.flatten`` and ``Tensor.view`` / ``Tensor.reshape`` / ``torch.reshape``
  that keep the batch axis and merge consecutive axes (``.view(x.size(0), -1)``) -> Flatten;
* ``Tensor.clone`` / ``detach`` / ``contiguous`` -> nothing (the same values).

Every other call is refused; :func:`hint` names the module form to use instead.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from snncompile.errors import UnsupportedModuleError
from snncompile.ir import AvgPool2d, MaxPool2d, Op

SUPPORTED_CALLS = (
    "torch.flatten / Tensor.flatten / Tensor.view / Tensor.reshape merging axes after the batch axis, "
    "F.max_pool2d, F.avg_pool2d"
)
"""The supported calls, as listed in every refusal."""

FLATTEN: tuple[Any, ...] = (torch.flatten, "flatten")
RESHAPE: tuple[Any, ...] = (torch.reshape, "view", "reshape")
IDENTITY: tuple[Any, ...] = (torch.clone, "clone", "detach", "contiguous")
SHAPE_QUERIES: tuple[str, ...] = ("size", "dim")

_MAX_POOL = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_POOL = (
    "input",
    "kernel_size",
    "stride",
    "padding",
    "ceil_mode",
    "count_include_pad",
    "divisor_override",
)
_POOL_DEFAULTS: dict[str, Any] = {
    "stride": None,
    "padding": 0,
    "dilation": 1,
    "ceil_mode": False,
    "return_indices": False,
    "count_include_pad": True,
    "divisor_override": None,
}
POOLS: dict[Any, tuple[str, ...]] = {
    F.max_pool2d: _MAX_POOL,
    torch.max_pool2d: _MAX_POOL,
    F.avg_pool2d: _AVG_POOL,
}
"""Pool functions and their parameter names in order (``F.avg_pool2d`` is a builtin: no signature)."""

_SYMBOLS = {
    "add": "+",
    "iadd": "+",
    "sub": "-",
    "rsub": "-",
    "mul": "*",
    "imul": "*",
    "truediv": "/",
    "div": "/",
    "matmul": "@",
    "neg": "unary -",
    "getitem": "indexing",
}

_NOT_SPIKING = "not a spiking op; the nonlinearity of a spiking network is its neurons (snn.Leaky, ...)"
_ARITHMETIC = (
    "arithmetic in forward is not an IR op; fold scales and offsets into the weights and bias of "
    "nn.Linear / nn.Conv2d"
)
_HINTS: dict[str, str] = {
    **dict.fromkeys(
        ("relu", "relu6", "sigmoid", "tanh", "softmax", "log_softmax", "gelu", "leaky_relu", "elu", "silu"),
        _NOT_SPIKING,
    ),
    **dict.fromkeys(("+", "-", "*", "/", "unary -", "@"), _ARITHMETIC),
    "linear": "use nn.Linear",
    "conv2d": "use nn.Conv2d",
    "dropout": "use nn.Dropout (it is the identity in an inference network)",
    "adaptive_avg_pool2d": "use nn.AvgPool2d with a fixed kernel",
    "adaptive_max_pool2d": "use nn.MaxPool2d with a fixed kernel",
    "cat": "a layer takes one input; concatenation is not an IR op",
    "stack": "stack per-step recordings only to return them (return torch.stack(spk_rec, dim=0))",
    "indexing": "index only the input sequence (x[step]) and a neuron's returned tuple",
}


def call_name(target: Any) -> str:
    """How a call is written in Python: ``F.max_pool2d``, ``torch.flatten``, ``Tensor.view``, ``*``."""
    if isinstance(target, str):
        return _symbol(target) or f"Tensor.{target}"
    name = str(getattr(target, "__name__", target))
    symbol = _symbol(name)
    if symbol is not None and (target in vars(operator).values() or _is_tensor_method(target)):
        return symbol
    if _is_tensor_method(target):
        return f"Tensor.{name}"
    module = getattr(target, "__module__", None) or ""
    if module.startswith("torch.nn.functional") or module == "torch._C._nn" or target in POOLS:
        return f"F.{name}"
    if getattr(torch, name, None) is target:
        return f"torch.{name}"
    return f"{module}.{name}" if module else name


def _symbol(name: str) -> str | None:
    return _SYMBOLS.get(name.strip("_"))


def _is_tensor_method(target: Any) -> bool:
    name = getattr(target, "__name__", None)
    return isinstance(name, str) and getattr(torch.Tensor, name, None) is target


def hint(target: Any) -> str | None:
    """The module form to use instead of an unsupported call, where there is one."""
    name = call_name(target)
    short = name.rsplit(".", 1)[-1]
    return _HINTS.get(name) or _HINTS.get(short.strip("_"))


def refusal(node_op: str, target: Any, found: str, supported_modules: str) -> UnsupportedModuleError:
    """The one-line refusal of an unsupported call in forward, with the module form where there is one."""
    what = getattr(target, "__name__", str(target))
    message = (
        f"{node_op} {what!r} in forward ({found}) is not supported; supported: the modules "
        f"{supported_modules}, {SUPPORTED_CALLS}, and indexing a neuron's output tuple"
    )
    alternative = hint(target)
    if alternative:
        message += f". {call_name(target)}: {alternative}"
    return UnsupportedModuleError(message)


# ------------------------------------------------------------------------------------- pools


def _bind(names: Sequence[str], args: Sequence[Any], kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    if len(args) > len(names):
        raise UnsupportedModuleError(f"{where}: {len(args)} positional arguments, at most {len(names)}")
    bound = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in names or key in bound:
            raise UnsupportedModuleError(
                f"{where}: unexpected argument {key!r}; parameters: {', '.join(names)}"
            )
        bound[key] = value
    if "kernel_size" not in bound:
        raise UnsupportedModuleError(f"{where}: kernel_size is missing")
    return {**{n: _POOL_DEFAULTS[n] for n in names[2:]}, **bound}


def _pair(value: Any, field: str, where: str) -> tuple[int, int]:
    items = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, Sequence) else ()
    if len(items) == 1:
        items = (items[0], items[0])
    if len(items) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise UnsupportedModuleError(f"{where}: {field} must be an int or a pair of ints, got {value!r}")
    return (int(items[0]), int(items[1]))


def pool_op(target: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Op:
    """The MaxPool2d / AvgPool2d op of a pool call; ``args[0]`` (the input) is not read."""
    where = call_name(target)
    b = _bind(POOLS[target], args, kwargs, where)
    kernel = _pair(b["kernel_size"], "kernel_size", where)
    stride = kernel if b["stride"] is None or b["stride"] == [] else _pair(b["stride"], "stride", where)
    padding = _pair(b["padding"], "padding", where)
    if POOLS[target] is _MAX_POOL:
        if b["return_indices"]:
            raise UnsupportedModuleError(f"{where}(return_indices=True) is not supported")
        return MaxPool2d(
            kernel, stride, padding, _pair(b["dilation"], "dilation", where), bool(b["ceil_mode"])
        )
    divisor = b["divisor_override"]
    return AvgPool2d(
        kernel,
        stride,
        padding,
        bool(b["ceil_mode"]),
        bool(b["count_include_pad"]),
        None if divisor is None else int(divisor),
    )


# ---------------------------------------------------------------------------------- reshapes


def reshape_dims(
    target: Any, args: Sequence[Any], kwargs: dict[str, Any], resolve: Callable[[Any], Any]
) -> list[int]:
    """The requested shape of ``view`` / ``reshape`` (``args[0]`` is the tensor), each entry resolved to
    an int by ``resolve`` (which reads ``x.size(0)``-style values)."""
    rest = list(args[1:])
    if "shape" in kwargs or "size" in kwargs:
        rest = [kwargs.get("shape", kwargs.get("size"))]
    if len(rest) == 1 and not isinstance(resolve(rest[0]), int):
        rest = list(resolve(rest[0]))
    dims = [resolve(d) for d in rest]
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise UnsupportedModuleError(
            f"{call_name(target)} in forward: the shape {tuple(rest)} is not made of integers (constants, "
            "x.size(i) or x.shape[i]); use nn.Flatten"
        )
    return dims


def flatten_range(target: Any, shape: tuple[int, ...], dims: list[int]) -> tuple[int, int] | None:
    """The (start, end) axes of ``shape`` (batch axis included) that ``view``/``reshape`` to ``dims``
    merges, or None when it keeps the shape; refuses any other reshape."""
    total = math.prod(shape)
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise UnsupportedModuleError(f"{call_name(target)} in forward: invalid shape {tuple(dims)}")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        dims = [total // known if d == -1 and known else d for d in dims]
    out = tuple(dims)
    if out == shape:
        return None
    for start in range(1, len(shape)):
        for end in range(start + 1, len(shape)):
            if (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :]) == out:
                return (start, end)
    raise UnsupportedModuleError(
        f"{call_name(target)} in forward reshapes {shape} (batch first) to {out}; supported: merging "
        "consecutive axes after the batch axis, as .view(x.size(0), -1) or .flatten(1) do; use nn.Flatten"
    )
