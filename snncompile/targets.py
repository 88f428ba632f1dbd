"""Hardware targets: one declarative TOML file per target in ``hw_models/`` (shipped as package data).

A target file has these sections (every key is checked on load; unknown or missing keys are errors):

* ``[arithmetic]`` — ``weight_bits`` (signed weights, power-of-two scale per layer), ``bias_bits``,
  ``state`` (membrane/current format such as ``"s16.8"``; post-training quantization picks the frac per
  layer within its width), ``decay_frac`` (beta = beta_int * 2**-decay_frac), ``input_bits``,
  ``rounding`` (state rounding mode), ``decay_kinds`` (``multiply`` and/or ``shift``: shift-only cores
  need beta = 1 - 2**-s); optional ``per_channel``.
* ``[cores]`` — ``count``, ``neurons_per_core``.
* ``[microarchitecture]`` — ``lanes`` (synapses accumulated per cycle), ``update_lanes`` (neurons updated
  per cycle), ``pipeline_depth``, ``schedule`` (``sequential`` or ``pipelined``), ``clock_mhz``.
* ``[[memories]]`` — physical on-chip memory kinds: ``name``, ``bank_bits``, ``banks``, ``holds`` (which
  logical memories of the image they store: synapse, bias, neuron, state, layers).
* ``[energy_pj]`` — ``synaptic_op``, ``neuron_update``, ``memory_access``.
* ``[limits]`` — ``fan_in``, ``fan_out``, ``layer_types`` (op kinds the core runs), ``conv_engine`` (conv
  kernels in hardware; without it conv layers are unrolled into dense rows).
"""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from snncompile.errors import InputError
from snncompile.quant.fixed import ROUNDINGS, Fixed, FormatError, Rounding

LOGICAL_MEMORIES = ("synapse", "bias", "neuron", "state", "layers")
LAYER_TYPES = ("linear", "conv2d", "avgpool2d", "maxpool2d", "sumpool2d", "flatten", "lif", "cubalif")


@dataclasses.dataclass(frozen=True)
class Cores:
    count: int = 64
    neurons_per_core: int = 4096


@dataclasses.dataclass(frozen=True)
class Microarchitecture:
    lanes: int = 16
    update_lanes: int = 4
    pipeline_depth: int = 4
    schedule: Literal["sequential", "pipelined"] = "sequential"
    clock_mhz: float = 200.0


@dataclasses.dataclass(frozen=True)
class MemoryKind:
    """A kind of physical on-chip memory: ``banks`` banks of ``bank_bits`` bits each."""

    name: str
    bank_bits: int
    banks: int
    holds: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Energy:
    synaptic_op: float = 1.0
    neuron_update: float = 2.0
    memory_access: float = 5.0


@dataclasses.dataclass(frozen=True)
class Limits:
    fan_in: int = 65536
    fan_out: int = 65536
    layer_types: tuple[str, ...] = LAYER_TYPES
    conv_engine: bool = True


def _default_memories() -> tuple[MemoryKind, ...]:
    return (MemoryKind("sram", 1 << 20, 256, LOGICAL_MEMORIES),)


@dataclasses.dataclass(frozen=True)
class Target:
    """A hardware target. The arithmetic fields are flat (what quantization reads); the rest nests."""

    name: str
    weight_bits: int = 8
    per_channel: bool = False
    bias_bits: int = 16
    state: Fixed = dataclasses.field(default_factory=lambda: Fixed(16, 8))
    decay_frac: int = 8
    input_bits: int = 8
    rounding: Rounding = "floor"
    decay_kinds: tuple[str, ...] = ("multiply", "shift")
    description: str = ""
    family: str = "generic"
    cores: Cores = dataclasses.field(default_factory=Cores)
    micro: Microarchitecture = dataclasses.field(default_factory=Microarchitecture)
    memories: tuple[MemoryKind, ...] = dataclasses.field(default_factory=_default_memories)
    energy: Energy = dataclasses.field(default_factory=Energy)
    limits: Limits = dataclasses.field(default_factory=Limits)

    def __post_init__(self) -> None:
        where = f"target {self.name!r}"
        if self.rounding not in ROUNDINGS:
            raise InputError(f"{where}: rounding {self.rounding!r} is not one of {list(ROUNDINGS)}")
        for name in ("weight_bits", "bias_bits", "input_bits"):
            if not 2 <= getattr(self, name) <= 32:
                raise InputError(f"{where}: {name} must be 2..32, got {getattr(self, name)}")
        if not 1 <= self.decay_frac <= 15:
            raise InputError(f"{where}: decay_frac must be 1..15, got {self.decay_frac}")
        if not self.state.signed or self.state.width > 32:
            raise InputError(f"{where}: state must be a signed format of at most 32 bits, got {self.state}")
        bad = sorted(set(self.decay_kinds) - {"multiply", "shift"})
        if bad or not self.decay_kinds:
            raise InputError(
                f"{where}: decay_kinds {list(self.decay_kinds)} must be from ['multiply', 'shift']"
            )
        for mem in self.memories:
            unknown = sorted(set(mem.holds) - set(LOGICAL_MEMORIES))
            if unknown:
                raise InputError(
                    f"{where}: memory {mem.name!r} holds {unknown}; choose from {list(LOGICAL_MEMORIES)}"
                )
        for logical in LOGICAL_MEMORIES:
            if not any(logical in m.holds for m in self.memories):
                raise InputError(f"{where}: no memory holds the {logical!r} memory of the image")
        unknown_types = sorted(set(self.limits.layer_types) - set(LAYER_TYPES))
        if unknown_types:
            raise InputError(f"{where}: unknown layer_types {unknown_types}; choose from {list(LAYER_TYPES)}")
        if self.micro.schedule not in ("sequential", "pipelined"):
            raise InputError(
                f"{where}: schedule must be 'sequential' or 'pipelined', got {self.micro.schedule!r}"
            )
        for section, value in (
            ("cores", self.cores),
            ("microarchitecture", self.micro),
            ("limits", self.limits),
            ("energy_pj", self.energy),
        ):
            for f in dataclasses.fields(value):
                v = getattr(value, f.name)
                if isinstance(v, int | float) and not isinstance(v, bool) and v <= 0:
                    raise InputError(f"{where}: [{section}] {f.name} must be positive, got {v}")

    def describe(self) -> str:
        """A few aligned lines for ``snncompile targets NAME``."""
        mems = ", ".join(
            f"{m.name}: {m.banks} x {m.bank_bits // 1024} Kb ({'/'.join(m.holds)})" for m in self.memories
        )
        rows = [
            ("target", f"{self.name} — {self.description}"),
            (
                "arithmetic",
                f"weights s{self.weight_bits}, bias s{self.bias_bits}, state {self.state}, "
                f"decay 2^-{self.decay_frac} ({'/'.join(self.decay_kinds)}), rounding {self.rounding}",
            ),
            ("cores", f"{self.cores.count} x {self.cores.neurons_per_core} neurons"),
            (
                "micro",
                f"{self.micro.lanes} lanes, {self.micro.update_lanes} update lanes, pipeline "
                f"{self.micro.pipeline_depth}, {self.micro.schedule}, {self.micro.clock_mhz:g} MHz",
            ),
            ("memories", mems),
            (
                "energy",
                f"{self.energy.synaptic_op:g} pJ/synop, {self.energy.neuron_update:g} pJ/update, "
                f"{self.energy.memory_access:g} pJ/access",
            ),
            (
                "limits",
                f"fan-in {self.limits.fan_in}, fan-out {self.limits.fan_out}, conv engine "
                f"{'yes' if self.limits.conv_engine else 'no (unrolled)'}",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


_SECTIONS: dict[str, type] = {
    "cores": Cores,
    "microarchitecture": Microarchitecture,
    "energy_pj": Energy,
    "limits": Limits,
}
_ARITHMETIC = (
    "weight_bits",
    "bias_bits",
    "state",
    "decay_frac",
    "input_bits",
    "rounding",
    "decay_kinds",
    "per_channel",
)


def _typed(where: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (int, float, bool, str, tuple[str, ...], Literal)."""
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if getattr(hint, "__origin__", None) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{where}: {key} must be a list of strings, got {value!r}")
        return tuple(value)
    if getattr(hint, "__origin__", None) is Literal:
        if value not in get_args(hint):
            raise InputError(f"{where}: {key} must be one of {list(get_args(hint))}, got {value!r}")
        return value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise InputError(f"{where}: {key} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _section(where: str, cls: type, data: Any, required: bool = True) -> Any:
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a table, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; valid: {names}")
    missing = [n for n in names if n not in data]
    if required and missing:
        raise InputError(f"{where}: missing key(s) {missing}")
    return cls(**{k: _typed(where, k, v, hints[k]) for k, v in data.items()})


def parse_target(data: dict[str, Any], source: str) -> Target:
    """A Target from the parsed TOML of ``source`` (a file name, for messages)."""
    where = f"target file {source}"
    valid = {"name", "description", "family", "arithmetic", "memories", *_SECTIONS}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise InputError(f"{where}: unknown section(s) or key(s) {unknown}; valid: {sorted(valid)}")
    missing = sorted({"name", "arithmetic", "memories", *_SECTIONS} - set(data))
    if missing:
        raise InputError(f"{where}: missing {missing}")
    arith = data["arithmetic"]
    if not isinstance(arith, dict):
        raise InputError(f"{where}: [arithmetic] must be a table")
    bad = sorted(set(arith) - set(_ARITHMETIC))
    if bad:
        raise InputError(f"{where}: [arithmetic] unknown key(s) {bad}; valid: {list(_ARITHMETIC)}")
    absent = [k for k in _ARITHMETIC if k not in arith and k != "per_channel"]
    if absent:
        raise InputError(f"{where}: [arithmetic] missing key(s) {absent}")
    hints = get_type_hints(Target)
    fields: dict[str, Any] = {}
    for key, value in arith.items():
        if key == "state":
            try:
                fields["state"] = Fixed.parse(_typed(f"{where} [arithmetic]", key, value, str))
            except FormatError as e:
                raise InputError(f"{where} [arithmetic]: {e}") from None
        elif key == "rounding":
            fields[key] = _typed(f"{where} [arithmetic]", key, value, str)
        else:
            fields[key] = _typed(f"{where} [arithmetic]", key, value, hints[key])
    mems = data["memories"]
    if not isinstance(mems, list) or not mems:
        raise InputError(f"{where}: [[memories]] must list at least one memory kind")
    memories = tuple(_section(f"{where} [[memories]] #{i}", MemoryKind, m) for i, m in enumerate(mems))
    for m in memories:
        if m.bank_bits <= 0 or m.banks <= 0:
            raise InputError(f"{where}: memory {m.name!r} needs positive bank_bits and banks")
    return Target(
        name=_typed(where, "name", data["name"], str),
        description=_typed(where, "description", data.get("description", ""), str),
        family=_typed(where, "family", data.get("family", "generic"), str),
        cores=_section(f"{where} [cores]", Cores, data["cores"]),
        micro=_section(f"{where} [microarchitecture]", Microarchitecture, data["microarchitecture"]),
        energy=_section(f"{where} [energy_pj]", Energy, data["energy_pj"]),
        limits=_section(f"{where} [limits]", Limits, data["limits"]),
        memories=memories,
        **fields,
    )


def target_names() -> list[str]:
    """The names of the targets shipped in ``hw_models/``."""
    files = resources.files("snncompile.hw_models")
    return sorted(p.name[: -len(".toml")] for p in files.iterdir() if p.name.endswith(".toml"))


def load_target_file(path: str | Path) -> Target:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise InputError(f"cannot read target file {str(path)!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"target file {str(path)!r} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"target file {str(path)!r} is not valid TOML: {e}") from None
    return parse_target(data, str(path))


def load_target(target: str | Target) -> Target:
    """A Target: itself, a shipped target by name (see :func:`target_names`), or a ``.toml`` file path."""
    if isinstance(target, Target):
        return target
    if target.endswith(".toml"):
        return load_target_file(target)
    if target not in target_names():
        raise InputError(
            f"unknown target {target!r}; available: {target_names()} (or a path to a .toml file)"
        )
    resource = resources.files("snncompile.hw_models") / f"{target}.toml"
    return parse_target(tomllib.loads(resource.read_text()), f"{target}.toml")
