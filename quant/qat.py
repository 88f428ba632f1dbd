"""Quantization-aware training hooks whose float32 forward equals the integer simulator.

* :class:`FixedPoint` — a state quantizer for snnTorch's ``state_quant=``:
  ``q(v) = clamp(round(v * 2**f), lo, hi) / 2**f`` forward, clipped straight-through gradient.
* :class:`DyadicGrid` — a parametrization keeping a tensor on ``2**-frac`` (optionally clamped), used for
  beta/alpha (``decay_frac``) and thresholds (the membrane grid).
* :class:`PotWeight` — a power-of-two-scale weight quantizer (brevitas' FixedPoint rule) for tensors
  that are not brevitas layers: one-to-one recurrent V and LeakyParallel's RNN weights.
* :class:`InputQuant` — puts current inputs on the target's input codes (``prepare_qat(input_frac=)``).
* :func:`prepare_qat` — applies all of them from a target: an eval-mode BatchNorm is folded into the
  Linear/Conv2d before it, nn.Linear/nn.Conv2d become brevitas layers with FixedPoint weight
  quantizers, every neuron gets a FixedPoint state quantizer and grid parametrizations (beta, alpha,
  threshold, graded-spike factor), LeakyParallel becomes :class:`QuantLeakyParallel` (same parameter
  names).

Every forward rounds onto power-of-two grids, so while values stay below 2**24 LSB every float32
operation of the QAT model is exact and its result equals the integer reference (QAT_NOTES.md §4).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Iterator
from typing import Any, cast

import snntorch as snn
import torch
import torch.nn.functional as F
from brevitas.nn import QuantConv2d, QuantLinear
from brevitas.quant import Int8WeightPerTensorFixedPoint
from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint
from snncompile.quant.fixed import Fixed, Rounding, check_rounding, quantize_tensor, round_tensor
from torch import nn
from torch.nn.utils import parametrize

from snncompile.errors import UnsupportedModuleError


class _Quantize(torch.autograd.Function):
    """Forward: the quantized value itself (exact by construction). Backward: STE, zero where clamped."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, frac: int, lo: int, hi: int, mode: Rounding) -> torch.Tensor:
        scaled = round_tensor(v * 2.0**frac, mode)
        ctx.save_for_backward((scaled >= lo) & (scaled <= hi))
        return quantize_tensor(v, frac, lo, hi, mode)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(v: torch.Tensor, frac: int, lo: int, hi: int, mode: Rounding) -> torch.Tensor:
    """:func:`quantize_tensor` with the clipped straight-through gradient of :class:`_Quantize`."""
    return cast(torch.Tensor, _Quantize.apply(v, frac, lo, hi, mode))  # type: ignore[no-untyped-call]


class _Round(torch.autograd.Function):
    """``round_half_even(v * 2**frac) / 2**frac`` with a straight-through gradient."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, frac: int) -> torch.Tensor:
        return torch.round(v * 2.0**frac) / 2.0**frac

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return grad, None


class FixedPoint(nn.Module):
    """snnTorch ``state_quant`` onto ``fmt``: ``clamp(round(v * 2**frac), lo, hi) / 2**frac``.

    Idempotent (snnTorch applies it twice per step), saturating at the format's range, with a clipped
    straight-through gradient.
    """

    def __init__(self, fmt: Fixed | str, rounding: Rounding = "floor") -> None:
        super().__init__()
        self.fmt = Fixed.parse(fmt) if isinstance(fmt, str) else fmt
        self.rounding: Rounding = check_rounding(rounding)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return fake_quantize(v, self.fmt.frac, self.fmt.lo, self.fmt.hi, self.rounding)

    def extra_repr(self) -> str:
        return f"{self.fmt}, rounding={self.rounding}"


class DyadicGrid(nn.Module):
    """A parametrization onto ``2**-frac``: ``round(clamp(v, lo, hi) * 2**frac) / 2**frac`` (STE)."""

    def __init__(self, frac: int, lo: float | None = None, hi: float | None = None) -> None:
        super().__init__()
        self.frac, self.lo, self.hi = frac, lo, hi

    def right_inverse(self, v: torch.Tensor) -> torch.Tensor:
        """Assigning a value stores it as is (the forward puts it on the grid)."""
        return v

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.lo is not None or self.hi is not None:
            v = v.clamp(self.lo, self.hi)
        return cast(torch.Tensor, _Round.apply(v, self.frac))  # type: ignore[no-untyped-call]


class PotWeight(nn.Module):
    """brevitas' FixedPoint weight rule as a parametrization, for tensors outside brevitas layers.

    ``scale = 2**ceil(log2(max|w| / 2**(bits-1)))``, ``w_q = clamp(round_half_even(w / scale),
    -(2**(bits-1) - 1), 2**(bits-1) - 1) * scale``, straight-through gradient.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        frac = pot_frac(w, self.bits)
        if frac is None:
            return w
        limit = 2 ** (self.bits - 1) - 1
        return fake_quantize(w, frac, -limit, limit, "half_even")


def pot_frac(w: torch.Tensor, bits: int) -> int | None:
    """brevitas' power-of-two scale exponent: ``-ceil(log2(max|w| / 2**(bits-1)))`` (None for zeros)."""
    peak = float(w.detach().abs().max())
    return None if peak == 0 else -math.ceil(math.log2(peak / 2 ** (bits - 1)))


class BiasGrid(nn.Module):
    """Keeps a layer's bias on its weight grid (brevitas' per-tensor FixedPoint scale of ``weight``),
    as ``bias_bits`` codes, so that with spike inputs ``W s + b`` lies on one grid: exact in float32."""

    def __init__(self, weight: torch.Tensor, weight_bits: int, bias_bits: int) -> None:
        super().__init__()
        self._weight = [weight]  # a plain reference, not a registered parameter
        self.weight_bits, self.bias_bits = weight_bits, bias_bits

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        frac = pot_frac(self._weight[0], self.weight_bits)
        limit = 2 ** (self.bias_bits - 1) - 1
        return fake_quantize(b, 0 if frac is None else frac, -limit, limit, "half_even")


class InputQuant(nn.Module):
    """Current inputs onto ``bits``-bit codes on ``2**-frac``: ``clamp(round_half_even(x * 2**frac), -L, L)
    / 2**frac`` with ``L = 2**(bits-1) - 1`` (straight-through gradient inside the range), which is what
    a compiled program's ``quantize_input`` does before the currents enter the hardware.

    :func:`prepare_qat` sets it as the model's ``qat_input`` attribute (not a child module) and applies it to forward's first argument
    with a forward pre-hook; the tracer reads it from there (:meth:`bypassed` while tracing).
    """

    def __init__(self, frac: int, bits: int) -> None:
        super().__init__()
        self.frac, self.bits, self.enabled = frac, bits, True

    @property
    def limit(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self.frac, -self.limit, self.limit, "half_even")

    @contextlib.contextmanager
    def bypassed(self) -> Iterator[None]:
        """Forward's argument passes unchanged (the tracer puts the quantizer into the graph itself)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    def extra_repr(self) -> str:
        return f"{self.bits}-bit codes on 2^-{self.frac}"


def _quantize_input(model: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The forward pre-hook of a model with an input quantizer: forward's first argument quantized."""
    q = cast(InputQuant, model.qat_input)
    if not q.enabled or not args:
        return args
    return (q(args[0]), *args[1:])


class QuantLeakyParallel(nn.Module):
    """``snn.LeakyParallel`` computed step by step so a state quantizer can act on its membrane.

    ``U[t] = q(relu(W_ih x[t] + b_ih + W_hh U[t-1] + b_hh))``, ``S[t] = H(U[t] - thr) * gsf``, with the
    LeakyParallel's own parameter and buffer names (``rnn.weight_ih_l0`` ...), so checkpoints load.
    """

    def __init__(self, source: snn.LeakyParallel, state_quant: nn.Module) -> None:
        super().__init__()
        self.rnn = source.rnn
        self.register_buffer("beta", None if source.beta is None else source.beta.clone())
        for name in ("threshold", "graded_spikes_factor"):
            value = getattr(source, name)
            if isinstance(value, nn.Parameter):
                self.register_parameter(name, value)
            else:
                self.register_buffer(name, value)
        self.hidden_size = source.hidden_size
        self.spike_grad = source.spike_grad
        self.state_quant = state_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rnn = self.rnn
        w_hh = rnn.weight_hh_l0
        decay = torch.diagonal(w_hh)
        pre = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0 if rnn.bias else None)
        mem = torch.zeros_like(pre[0])
        spikes = []
        for t in range(pre.shape[0]):
            v = decay * mem
            if rnn.bias:
                v = v + rnn.bias_hh_l0
            mem = self.state_quant(torch.relu(v + pre[t]))
            spikes.append(self.spike_grad(mem - self.threshold) * self.graded_spikes_factor)
        return torch.stack(spikes)


def _brevitas(layer: nn.Module, bits: int, per_channel: bool, bias_bits: int) -> nn.Module:
    """A brevitas layer with power-of-two weight (and bias) quantizers and ``layer``'s weights."""
    kwargs: dict[str, Any] = {
        "weight_quant": Int8WeightPerChannelFixedPoint if per_channel else Int8WeightPerTensorFixedPoint,
        "weight_bit_width": bits,
        "bias": layer.bias is not None,
    }
    assert isinstance(layer, nn.Linear | nn.Conv2d)
    if isinstance(layer, nn.Linear):
        new: nn.Module = QuantLinear(layer.in_features, layer.out_features, **kwargs)
    else:
        new = QuantConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            **kwargs,
        )
    new.load_state_dict(layer.state_dict())
    if layer.bias is not None:
        parametrize.register_parametrization(
            new, "bias", BiasGrid(cast(torch.Tensor, new.weight), bits, bias_bits)
        )
    return new


def _grid_graded(neuron: nn.Module) -> None:
    """The graded-spike factor kept on ``2**-GRADED_FRAC`` (the grid the compiler reads it on)."""
    from snncompile.passes.quantize import GRADED_FRAC

    parametrize.register_parametrization(neuron, "graded_spikes_factor", DyadicGrid(GRADED_FRAC))


_FOLDABLE = (nn.Linear, nn.Conv2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _sequential_pairs(model: nn.Module) -> dict[str, str]:
    """BatchNorm path -> path of the Linear/Conv2d right before it in the same nn.Sequential."""
    pairs: dict[str, str] = {}
    for path, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            children = list(m.named_children())
            for (prev, a), (name, b) in itertools.pairwise(children):
                if type(a) in _FOLDABLE and type(b) in _BATCHNORMS:
                    prefix = f"{path}." if path else ""
                    pairs[prefix + name] = prefix + prev
    return pairs


def _batchnorm_pairs(model: nn.Module) -> dict[str, str]:
    """Every BatchNorm's path -> the path of the Linear/Conv2d whose output it alone normalizes, read
    from forward's torch.fx graph (or, where forward does not trace, from nn.Sequential order)."""
    from snncompile.frontend import unroll
    from snncompile.frontend.snntorch import _Tracer

    bns = [path for path, m in model.named_modules() if type(m) in _BATCHNORMS]
    if not bns:
        return {}
    try:
        with unroll.preserved(model):
            graph = _Tracer().trace(model)
    except Exception as e:  # torch.fx raises many types: fall back to the Sequential order
        first = (str(e).splitlines() or [type(e).__name__])[0]
        pairs = _sequential_pairs(model)
        why = (
            f"forward does not trace with torch.fx ({first}), so the layer feeding it is not known (loop over a "
            "fixed num_steps rather than x.size(0), or put the layer and its BatchNorm in one nn.Sequential)"
        )
    else:
        found: dict[str, set[str | None]] = {}
        for node in graph.nodes:
            if node.op == "call_module" and str(node.target) in bns:
                src = node.args[0] if node.args else None
                ok = (
                    isinstance(src, torch.fx.Node)
                    and src.op == "call_module"
                    and type(model.get_submodule(str(src.target))) in _FOLDABLE
                    and len(src.users) == 1
                )
                found.setdefault(str(node.target), set()).add(str(src.target) if ok else None)  # type: ignore[union-attr]
        pairs = {bn: next(iter(s)) for bn, s in found.items() if len(s) == 1 and None not in s}  # type: ignore[misc]
        why = (
            "its input is not the output of one nn.Linear / nn.Conv2d used by nothing else; put it right "
            "after its layer"
        )
    for bn in bns:
        if bn not in pairs:
            raise UnsupportedModuleError(
                f"module {bn!r} ({type(model.get_submodule(bn)).__name__}): prepare_qat folds a BatchNorm into "
                f"the layer before it, but {why}"
            )
    return pairs


def _fold_batchnorm(layer: Any, bn: Any, path: str) -> nn.Module:
    """``layer`` with ``bn`` (its running statistics) folded in: ``W' = a W``, ``b' = (b - mean) a + beta``
    per output channel, ``a = gamma / sqrt(var + eps)`` (float64, stored as float32)."""
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedModuleError(
            f"module {path!r} ({type(bn).__name__}) has track_running_stats=False, so it has no statistics "
            "to fold; build it with track_running_stats=True"
        )
    with torch.no_grad():
        mean, var = bn.running_mean.double(), bn.running_var.double()
        gamma = torch.ones_like(mean) if bn.weight is None else bn.weight.double()
        beta = torch.zeros_like(mean) if bn.bias is None else bn.bias.double()
        a = gamma / torch.sqrt(var + bn.eps)
        b = torch.zeros_like(mean) if layer.bias is None else layer.bias.double()
        new = copy.deepcopy(layer)
        if new.bias is None:
            new.bias = nn.Parameter(torch.zeros_like(mean, dtype=layer.weight.dtype))
        new.weight.copy_(layer.weight.double() * a.reshape(-1, *[1] * (layer.weight.ndim - 1)))
        new.bias.copy_((b - mean) * a + beta)
    return new


def _quantize_neuron(neuron: nn.Module, target: Any) -> None:
    state = FixedPoint(target.state, target.rounding)
    neuron.state_quant = state
    for name in ("beta", "alpha"):
        if isinstance(getattr(neuron, name, None), torch.Tensor):
            parametrize.register_parametrization(neuron, name, DyadicGrid(target.decay_frac, 0.0, 1.0))
    parametrize.register_parametrization(neuron, "threshold", DyadicGrid(target.state.frac))
    _grid_graded(neuron)
    rec = getattr(neuron, "recurrent", None)
    if isinstance(rec, nn.Module) and type(rec) in (nn.Linear, nn.Conv2d):
        neuron.recurrent = _brevitas(rec, target.weight_bits, target.per_channel, target.bias_bits)
    elif rec is not None and "V" in dict(rec.named_parameters(recurse=False)):
        parametrize.register_parametrization(rec, "V", PotWeight(target.weight_bits))


def prepare_qat(model: nn.Module, target: Any = "default", input_frac: int | None = None) -> nn.Module:
    """A copy of ``model`` ready for quantization-aware training on ``target`` (a name or a Target).

    Training then runs unchanged; the compiler reads the quantizers back and the integer simulator
    reproduces the model's float32 forward bit for bit (while the static range bound holds).

    An ``nn.BatchNorm1d/2d`` right after an ``nn.Linear`` / ``nn.Conv2d`` is folded into that layer with
    its running statistics (the BatchNorm becomes ``nn.Identity``; its statistics are no longer
    updated, its affine part trains on as the layer's weights). With ``input_frac``, forward's input
    (currents) is put on the target's ``input_bits`` codes on ``2**-input_frac`` (:class:`InputQuant`), so
    a model fed currents stays exact; without it the model is compiled for spike inputs.
    """
    from snncompile.targets import load_target

    tgt = load_target(target)
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, snn.SpikingNeuron):
            # snnTorch resets hidden states (utils.reset, reset_hidden) through a class-level list that
            # a deep copy skips: register the copies, or their states would carry over between batches
            snn.SpikingNeuron.instances.append(module)
    for bn, layer in _batchnorm_pairs(model).items():
        model.set_submodule(layer, _fold_batchnorm(model.get_submodule(layer), model.get_submodule(bn), bn))
        model.set_submodule(bn, nn.Identity())
    if input_frac is not None:
        # a plain attribute, not a child module: nn.Sequential would run a child as one more layer
        object.__setattr__(model, "qat_input", InputQuant(input_frac, tgt.input_bits))
        model.register_forward_pre_hook(_quantize_input)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) in (nn.Linear, nn.Conv2d):
                setattr(module, name, _brevitas(child, tgt.weight_bits, tgt.per_channel, tgt.bias_bits))
            elif type(child) is snn.LeakyParallel:
                lp = QuantLeakyParallel(child, FixedPoint(tgt.state, tgt.rounding))
                rnn = lp.rnn
                w_ih = rnn.weight_ih_l0
                parametrize.register_parametrization(rnn, "weight_ih_l0", PotWeight(tgt.weight_bits))
                parametrize.register_parametrization(
                    rnn, "weight_hh_l0", DyadicGrid(tgt.decay_frac, 0.0, 1.0)
                )
                if rnn.bias:  # both biases on the input weights' grid: W_ih x + b_ih + b_hh on one grid
                    for b in ("bias_ih_l0", "bias_hh_l0"):
                        grid = BiasGrid(w_ih, tgt.weight_bits, tgt.bias_bits)
                        parametrize.register_parametrization(rnn, b, grid)
                parametrize.register_parametrization(lp, "threshold", DyadicGrid(tgt.state.frac))
                _grid_graded(lp)
                setattr(module, name, lp)
            elif isinstance(child, snn.SpikingNeuron):
                _quantize_neuron(child, tgt)
    return model
