"""Hardware targets (``hw_models/*.toml``) and the mapping pass: resources, schema errors, does-not-fit.

Contract under test (issue 8):

* The shipped targets load and model the real parts' on-chip memory: iCE40 UltraPlus 5K 30 x 4 Kb EBR
  and 4 x 256 Kb SPRAM, Artix-7 XC7A100T 135 x 36 Kb BRAM, Zynq UltraScale+ ZU3EG 216 x 36 Kb BRAM, and
  a configurable SRAM-macro ASIC. ``snncompile targets`` lists them, ``snncompile targets NAME`` describes
  one, an unknown name is a one-line error listing the available ones.
* Target files are validated on load with clear errors (pinned by message): unknown or missing keys,
  wrong types, bad rounding / state format / schedule, a logical memory that no physical memory holds,
  unknown layer types, invalid TOML.
* A network that does not fit is refused with a message naming the resource, what was needed and what
  the target has, for every kind of limit (synapse memory, cores, fan-in, fan-out, layer types, weight
  format, decay kinds, state format); the report lists every resource used against its limit.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import re
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import torch
from conftest import error_line, invoke
from snncompile.quant import prepare_qat
from snncompile.quant.fixed import Fixed
from torch import nn

import snncompile
from snncompile import InputError
from snncompile.build import program_report, report_text
from snncompile.passes.mapping import MappingError, map_graph
from snncompile.targets import (
    LAYER_TYPES,
    LOGICAL_MEMORIES,
    Limits,
    Target,
    load_target,
    load_target_file,
    parse_target,
    target_names,
)

SHIPPED = ["artix7-100t", "asic-generic", "default", "ice40up5k", "zu3eg"]


# ------------------------------------------------------------------------------ shipped targets


# name: (memories as (kind, banks, bank_bits, holds), cores, neurons per core, conv engine, fan-in,
#        phrases the description and describe() must show)
EXPECTED: dict[str, tuple[list[tuple[str, int, int, set[str]]], int, int, bool, int, list[str]]] = {
    "ice40up5k": (
        [("spram", 4, 256 * 1024, {"synapse"}), ("ebr", 30, 4 * 1024, {"bias", "neuron", "state", "layers"})],
        1,
        1024,
        False,
        1024,
        [
            "30 x 4 Kb EBR, 4 x 256 Kb SPRAM, 8 DSP, 5,280 LUTs",
            "spram: 4 x 256 Kb (synapse)",
            "ebr: 30 x 4 Kb (bias/neuron/state/layers)",
            "conv engine no (unrolled)",
        ],
    ),
    "artix7-100t": (
        [("bram36", 135, 36 * 1024, set(LOGICAL_MEMORIES))],
        8,
        1024,
        True,
        4096,
        [
            "135 x 36 Kb BRAM (4,860 Kb), 240 DSP48E1, 63,400 LUTs",
            "bram36: 135 x 36 Kb (synapse/bias/neuron/state/layers)",
            "conv engine yes",
        ],
    ),
    "zu3eg": (
        [("bram36", 216, 36 * 1024, set(LOGICAL_MEMORIES))],
        16,
        2048,
        True,
        8192,
        ["216 x 36 Kb BRAM (7.6 Mb), 360 DSP, 70,560 LUTs", "bram36: 216 x 36 Kb", "pipelined"],
    ),
    "asic-generic": (
        [("sram1m", 128, 1 << 20, set(LOGICAL_MEMORIES))],
        64,
        8192,
        True,
        65536,
        ["128 x 1 Mb SRAM macros", "sram1m: 128 x 1024 Kb", "64 x 8192 neurons"],
    ),
    "default": (
        [("sram", 256, 1 << 20, set(LOGICAL_MEMORIES))],
        64,
        4096,
        True,
        65536,
        ["Generic neuromorphic core", "sram: 256 x 1024 Kb"],
    ),
}


def test_the_shipped_targets_are_listed() -> None:
    assert target_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_target_models_its_real_resources(name: str) -> None:
    mems, cores, per_core, conv, fan_in, phrases = EXPECTED[name]
    t = load_target(name)
    assert t.name == name
    assert [(m.name, m.banks, m.bank_bits, set(m.holds)) for m in t.memories] == mems
    assert (t.cores.count, t.cores.neurons_per_core) == (cores, per_core)
    assert t.limits.conv_engine is conv and t.limits.fan_in == fan_in
    assert set(t.limits.layer_types) == set(LAYER_TYPES)
    # the arithmetic every shipped profile shares
    assert (t.weight_bits, t.bias_bits, str(t.state), t.decay_frac, t.rounding) == (
        8,
        16,
        "s16.8",
        8,
        "floor",
    )
    for logical in LOGICAL_MEMORIES:
        assert any(logical in m.holds for m in t.memories), logical
    text = t.describe()
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in\n{text}"
    assert text.splitlines()[0] == f"target      {name} — {t.description}"
    assert [line.split()[0] for line in text.splitlines()] == [
        "target",
        "arithmetic",
        "cores",
        "micro",
        "memories",
        "energy",
        "limits",
    ]


def test_real_memory_totals() -> None:
    """The banks add up to the datasheet totals the descriptions quote."""
    artix = load_target("artix7-100t").memories[0]
    assert artix.banks * artix.bank_bits == 4860 * 1024  # 4,860 Kb
    zu = load_target("zu3eg").memories[0]
    assert round(zu.banks * zu.bank_bits / 2**20, 1) == 7.6  # 7.6 Mb
    spram, ebr = load_target("ice40up5k").memories
    assert spram.banks * spram.bank_bits == 1 << 20 and ebr.banks * ebr.bank_bits == 120 * 1024


def test_cli_lists_the_targets() -> None:
    result = invoke("targets")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == SHIPPED
    for line, name in zip(lines, SHIPPED, strict=True):
        assert line == f"{name.ljust(14)}  {load_target(name).description}"


@pytest.mark.parametrize("name", SHIPPED)
def test_cli_describes_one_target(name: str) -> None:
    result = invoke("targets", name)
    assert result.exit_code == 0, result.output
    assert result.stdout == load_target(name).describe() + "\n"


def test_cli_unknown_target_is_one_line_listing_the_available_ones() -> None:
    line = error_line(invoke("targets", "artix7"), silent_stdout=True)
    assert line == (
        "Error: unknown target 'artix7'; available: ['artix7-100t', 'asic-generic', 'default', 'ice40up5k', "
        "'zu3eg'] (or a path to a .toml file)"
    )


# ----------------------------------------------------------------------------------------- schema


ARTIX = (resources.files("snncompile.hw_models") / "artix7-100t.toml").read_text()


def edited(old: str, new: str, text: str = ARTIX) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the target file exactly once"
    return text.replace(old, new)


def load_text(tmp_path: Path, text: str, name: str = "board.toml") -> Target:
    path = tmp_path / name
    path.write_text(text)
    return load_target_file(path)


SCHEMA_ERRORS: list[tuple[str, str, str, str]] = [
    # (id, old, new, message after "target file PATH" or "target 'artix7-100t'")
    (
        "unknown key",
        "count = 8\n",
        "count = 8\nthreads = 2\n",
        "{file} [cores]: unknown key(s) ['threads']; valid: ['count', 'neurons_per_core']",
    ),
    (
        "unknown section",
        'family = "xilinx7"\n',
        'family = "xilinx7"\ncolour = "red"\n',
        "{file}: unknown section(s) or key(s) ['colour']; valid: ['arithmetic', 'cores', 'description', "
        "'energy_pj', 'family', 'limits', 'memories', 'microarchitecture', 'name']",
    ),
    (
        "unknown arithmetic key",
        "weight_bits = 8\n",
        "weight_bits = 8\nbits = 3\n",
        "{file}: [arithmetic] unknown key(s) ['bits']; valid: ['weight_bits', 'bias_bits', 'state', "
        "'decay_frac', 'input_bits', 'rounding', 'decay_kinds', 'per_channel']",
    ),
    ("missing key", "neurons_per_core = 1024\n", "", "{file} [cores]: missing key(s) ['neurons_per_core']"),
    (
        "missing memory key",
        "banks = 135\n",
        "",
        "{file} [[memories]] #0: missing key(s) ['banks']",
    ),
    (
        "missing section",
        "[energy_pj]\nsynaptic_op = 2.5\nneuron_update = 6.0\nmemory_access = 10.0\n",
        "",
        "{file}: missing ['energy_pj']",
    ),
    ("wrong type", "count = 8\n", 'count = "8"\n', "{file} [cores]: count must be int, got str '8'"),
    ("bool for int", "count = 8\n", "count = true\n", "{file} [cores]: count must be int, got bool True"),
    (
        "float for int",
        "lanes = 16\n",
        "lanes = 16.5\n",
        "{file} [microarchitecture]: lanes must be int, got float 16.5",
    ),
    (
        "list of strings",
        'decay_kinds = ["multiply", "shift"]',
        'decay_kinds = "shift"',
        "{file} [arithmetic]: decay_kinds must be a list of strings, got 'shift'",
    ),
    (
        "bad rounding",
        'rounding = "floor"',
        'rounding = "nearest"',
        "{target}: rounding 'nearest' is not one of ['floor', 'half_up', 'half_down', 'half_even', 'trunc']",
    ),
    (
        "bad state format",
        'state = "s16.8"',
        'state = "q16.8"',
        "{file} [arithmetic]: fixed-point format 'q16.8' must look like s16.8 or u8.0",
    ),
    (
        "unsigned state",
        'state = "s16.8"',
        'state = "u16.8"',
        "{target}: state must be a signed format of at most 32 bits, got u16.8",
    ),
    (
        "bad schedule",
        'schedule = "sequential"',
        'schedule = "parallel"',
        "{file} [microarchitecture]: schedule must be one of ['sequential', 'pipelined'], got 'parallel'",
    ),
    (
        "unheld logical memory",
        'holds = ["synapse", "bias", "neuron", "state", "layers"]',
        'holds = ["synapse", "bias", "neuron", "state"]',
        "{target}: no memory holds the 'layers' memory of the image",
    ),
    (
        "unknown logical memory",
        'holds = ["synapse", "bias", "neuron", "state", "layers"]',
        'holds = ["synapse", "bias", "neuron", "state", "layers", "weights"]',
        "{target}: memory 'bram36' holds ['weights']; choose from ['synapse', 'bias', 'neuron', 'state', 'layers']",
    ),
    (
        "unknown layer type",
        'layer_types = ["linear", "conv2d",',
        'layer_types = ["linear", "lstm", "conv2d",',
        "{target}: unknown layer_types ['lstm']; choose from ['linear', 'conv2d', 'avgpool2d', 'maxpool2d', "
        "'sumpool2d', 'flatten', 'lif', 'cubalif']",
    ),
    (
        "bad decay kind",
        'decay_kinds = ["multiply", "shift"]',
        'decay_kinds = ["exp"]',
        "{target}: decay_kinds ['exp'] must be from ['multiply', 'shift']",
    ),
    ("weight bits", "weight_bits = 8", "weight_bits = 1", "{target}: weight_bits must be 2..32, got 1"),
    ("zero cores", "count = 8\n", "count = 0\n", "{target}: [cores] count must be positive, got 0"),
    (
        "empty bank",
        "bank_bits = 36864",
        "bank_bits = 0",
        "{file}: memory 'bram36' needs positive bank_bits and banks",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "message"), [c[1:] for c in SCHEMA_ERRORS], ids=[c[0] for c in SCHEMA_ERRORS]
)
def test_schema_errors_are_pinned(old: str, new: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    with pytest.raises(InputError) as e:
        load_text(tmp_path, edited(old, new))
    assert str(e.value) == message.format(file=f"target file {path}", target="target 'artix7-100t'")


def test_the_unedited_file_loads_from_a_path(tmp_path: Path) -> None:
    """The fixture the schema cases edit is valid as it is, and a .toml path works wherever a name does."""
    path = tmp_path / "board.toml"
    path.write_text(edited('name = "artix7-100t"', 'name = "my-board"'))
    t = load_target(str(path))
    assert t.name == "my-board"
    assert dataclasses.replace(t, name="artix7-100t") == load_target("artix7-100t")
    result = invoke("targets", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("target      my-board — Xilinx Artix-7 XC7A100T")


def test_missing_arithmetic_keys_are_errors(tmp_path: Path) -> None:
    """Every [arithmetic] key but per_channel is required (the module docstring: "every key is checked on
    load; unknown or missing keys are errors"); a forgotten one must not silently take a default."""
    accepted = []
    for key in ("weight_bits", "bias_bits", "state", "decay_frac", "input_bits", "rounding", "decay_kinds"):
        line = next(ln for ln in ARTIX.splitlines() if ln.startswith(f"{key} = "))
        try:
            load_text(tmp_path, edited(line + "\n", ""))
        except InputError as e:
            assert re.search(rf"\[arithmetic\].*missing.*{key}", str(e)), str(e)
        else:
            accepted.append(key)
    assert accepted == [], f"target files without these [arithmetic] keys load silently: {accepted}"


def test_negative_energy_is_an_error(tmp_path: Path) -> None:
    """Energies are pJ per operation: like every other count and rate in the file they must be positive."""
    with pytest.raises(InputError, match=r"synaptic_op must be positive"):
        load_text(tmp_path, edited("synaptic_op = 2.5", "synaptic_op = -2.5"))


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[cores\ncount = 1\n')
    with pytest.raises(InputError) as e:
        load_target_file(path)
    assert str(e.value).startswith(f"target file {str(path)!r} is not valid TOML: ")
    assert "line 2" in str(e.value)


def test_unreadable_target_files_are_refused(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    with pytest.raises(InputError) as e:
        load_target(str(missing))
    assert str(e.value) == f"cannot read target file {str(missing)!r}: No such file or directory"
    with pytest.raises(InputError, match="unknown target 'nope'; available: "):
        load_target("nope")


def test_a_target_file_that_is_not_utf8_is_refused_cleanly(tmp_path: Path) -> None:
    # Path.read_text raises UnicodeDecodeError (a ValueError), which load_target_file does not catch
    path = tmp_path / "latin1.toml"
    path.write_bytes(edited('name = "artix7-100t"', 'name = "caf\xe9"').encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.toml"):
        load_target_file(path)


def test_parse_target_refuses_non_tables() -> None:
    import tomllib

    data = tomllib.loads(ARTIX)
    for key, value, message in [
        ("arithmetic", 3, "target file x.toml: [arithmetic] must be a table"),
        ("cores", 3, "target file x.toml [cores]: expected a table, got int"),
        ("memories", [], "target file x.toml: [[memories]] must list at least one memory kind"),
        ("memories", [1], "target file x.toml [[memories]] #0: expected a table, got int"),
        ("name", 3, "target file x.toml: name must be str, got int 3"),
    ]:
        with pytest.raises(InputError) as e:
            parse_target({**data, key: value}, "x.toml")
        assert str(e.value) == message


# ---------------------------------------------------------------------------------- does not fit


def _qat(net: nn.Module, target: str | Target, gain: float = 3.0) -> nn.Module:
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
    return prepare_qat(net, target)


def _compile(net: nn.Module, target: str | Target, shape: tuple[int, ...]) -> snncompile.Program:
    return snncompile.compile(_qat(net, target), target, example_input=torch.zeros(1, *shape))


def _refused(net: nn.Module, target: str | Target, shape: tuple[int, ...]) -> str:
    with pytest.raises(MappingError) as e:
        _compile(net, target, shape)
    return str(e.value)


def mlp(*sizes: int) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), snn.Leaky(beta=0.9, init_hidden=True)]
    return nn.Sequential(*layers)


def conv(cin: int, cout: int, k: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(cin, cout, k), snn.Leaky(beta=0.9, init_hidden=True))


def memory_bits(prog: snncompile.Program) -> dict[str, int]:
    return {name: m.depth * m.width for name, m in prog.memories.items()}


def test_synapse_memory_784_1024_256_10_on_artix7() -> None:
    """784*1024 + 1024*256 + 256*10 = 1,067,520 8-bit weights = 8,540,160 bits = 232 banks of 36 Kb;
    with bias (1,290 biases + 3 graded words, 32-bit: 2 banks), layers (8 records x 96 x 32 bit: 1),
    neuron (1,290 x 64 bit: 3) and state (1,290 x 16 bit: 1) that is 239 banks; the part has 135."""
    net = mlp(784, 1024, 256, 10)
    assert _refused(net, "artix7-100t", (784,)) == (
        "synapse memory: needs 8,540,160 bits in 36 Kb banks (239 banks with bias, layers, neuron, state, "
        "synapse), artix7-100t has 135"
    )
    assert _refused(net, "zu3eg", (784,)).endswith(
        "(239 banks with bias, layers, neuron, state, synapse), zu3eg has 216"
    )
    prog = _compile(net, "asic-generic", (784,))  # 9 + 1 + 1 + 1 + 1 banks of 1 Mb
    assert (
        prog.mapping.usage[-1].line()
        == "sram1m banks (bias/layers/neuron/state/synapse): 13 / 128 banks (10.2%)"
    )


def test_synapse_memory_on_ice40_spram() -> None:
    """1024 x 200 8-bit weights = 1,638,400 bits = 7 SPRAM banks of 256 Kb; the part has 4."""
    assert _refused(mlp(1024, 200), "ice40up5k", (1024,)) == (
        "synapse memory: needs 1,638,400 bits in 256 Kb banks (7 banks with synapse), ice40up5k has 4"
    )


def test_cores_a_layer_larger_than_ice40s_one_core() -> None:
    """Conv2d(1, 2, 3) on 25x25: 2 x 23 x 23 = 1,058 neurons > 1 core x 1,024 (fan-out 18, fan-in 9)."""
    assert _refused(conv(1, 2), "ice40up5k", (1, 25, 25)) == (
        "cores: needs 2 cores of 1,024 neurons (largest layer 'lif_1' has 1,058 neurons), ice40up5k has 1"
    )
    assert _compile(mlp(20, 900), "ice40up5k", (20,)).mapping.cores == {"lif_1": (0, 1)}


def test_a_network_that_cannot_fit_is_refused_before_the_calibration_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A float model compiled with calibration data: the fit check quantizes it on one zero step, so the
    refusal (here ice40up5k's one core) comes before any float run over the calibration data, and the
    check finds the mapping the full compile would."""
    quantize_module = importlib.import_module(
        "snncompile.passes.quantize"
    )  # the package exports the function
    runs: list[tuple[int, ...]] = []
    real = quantize_module.run_float

    def counted(graph: snncompile.Graph, x: Any) -> snncompile.Run:
        runs.append(tuple(np.shape(x)))
        return real(graph, x)

    monkeypatch.setattr(quantize_module, "run_float", counted)
    graph = snncompile.trace(conv(1, 2), torch.zeros(1, 1, 25, 25))
    calib = (torch.rand(30, 16, 1, 25, 25) > 0.7).float().numpy()
    with pytest.raises(MappingError, match=r"^cores: needs 2 cores of 1,024 neurons .* ice40up5k has 1$"):
        snncompile.compile_graph(graph, "ice40up5k", calib)
    assert runs == [(1, 1, 1, 25, 25)]
    np.savez(tmp_path / "calib.npz", x=calib)
    torch.save(conv(1, 2).state_dict(), tmp_path / "w.pt")
    (tmp_path / "net.py").write_text(
        "import snntorch as snn\nfrom torch import nn\n\n\ndef build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.9, init_hidden=True))\n"
    )
    result = invoke(
        "compile", f"{tmp_path}/net.py:build", "--checkpoint", tmp_path / "w.pt", "--target", "ice40up5k",
        "--calibration", tmp_path / "calib.npz", "-o", tmp_path / "build",
    )  # fmt: skip
    assert error_line(result, silent_stdout=True).startswith("Error: cores: needs 2 cores of 1,024 neurons")
    runs.clear()
    fits = snncompile.compile_graph(
        snncompile.trace(mlp(20, 24), torch.zeros(1, 20)), "ice40up5k", calib[..., 0, 0, :20]
    )
    assert runs == [(1, 1, 20), (30, 16, 20)]
    assert fits.mapping == snncompile.check_fit(
        snncompile.trace(mlp(20, 24), torch.zeros(1, 20)), "ice40up5k"
    )


def test_neuron_memory_on_ice40_ebr() -> None:
    """1,024 neurons fill ice40up5k's core, but not its EBR: neuron 1,024 x 64 bits = 65,536 (16 banks of
    4 Kb), state 1,024 x 16 (4), bias 1,025 x 32 (9), layers 4 x 96 x 32 (3) = 32 banks; it has 30."""
    assert _refused(mlp(20, 1024), "ice40up5k", (20,)) == (
        "neuron memory: needs 65,536 bits in 4 Kb banks (32 banks with bias, layers, neuron, state), "
        "ice40up5k has 30"
    )


def test_small_layers_share_ice40s_time_multiplexed_core() -> None:
    """ice40up5k has one time-multiplexed core (sequential schedule): small layers share it; a pipelined
    target (zu3eg) gives each layer its own core."""
    prog = _compile(mlp(20, 24, 8), "ice40up5k", (20,))
    assert prog.mapping.cores == {"lif_1": (0, 1), "lif_3": (0, 1)}
    assert prog.mapping.usage[0].line() == "cores: 1 / 1 cores (100.0%)"
    pipelined = _compile(mlp(20, 24, 8), "zu3eg", (20,))
    assert pipelined.mapping.cores == {"lif_1": (0, 1), "lif_3": (1, 1)}
    # 1000 + 30 neurons do not share one 1,024-neuron core
    assert _refused(mlp(20, 1000, 30), "ice40up5k", (20,)).startswith("cores: needs 2 cores of 1,024 neurons")


def test_fan_in() -> None:
    assert _refused(mlp(1100, 10), "ice40up5k", (1100,)) == (
        "fan-in: node 'linear_0' sums 1,100 synapses per neuron; ice40up5k allows 1,024"
    )


def test_fan_out() -> None:
    assert _refused(mlp(10, 1100), "ice40up5k", (10,)) == (
        "fan-out: node 'linear_0' drives 1,100 synapses per spike; ice40up5k allows 1,024"
    )
    # a conv input pixel drives cout * kh * kw synapses (stride 1): 200 * 9 = 1,800
    assert _refused(conv(1, 200), "ice40up5k", (1, 6, 6)) == (
        "fan-out: node 'conv2d_0' drives 1,800 synapses per spike; ice40up5k allows 1,024"
    )


def test_fan_in_of_a_recurrent_layer_counts_its_recurrent_synapses() -> None:
    torch.manual_seed(0)
    small = dataclasses.replace(load_target("default"), name="small", limits=Limits(fan_in=30, fan_out=100))
    net = nn.Sequential(nn.Linear(20, 40), snn.RLeaky(beta=0.9, linear_features=40, init_hidden=True))
    assert _refused(net, small, (20,)) == "fan-in: node 'lif_1' sums 40 synapses per neuron; small allows 30"


NO_CONV_TYPES = ["linear", "avgpool2d", "maxpool2d", "sumpool2d", "flatten", "lif", "cubalif"]


def test_layer_types(tmp_path: Path) -> None:
    path = tmp_path / "noconv.toml"
    text = edited('name = "artix7-100t"', 'name = "noconv"')
    text = edited('layer_types = ["linear", "conv2d",', 'layer_types = ["linear",', text)
    path.write_text(text)
    target = load_target(str(path))
    assert list(target.limits.layer_types) == NO_CONV_TYPES
    assert _refused(conv(1, 2), target, (1, 6, 6)) == (
        f"layer types: node 'conv2d_0' is a conv2d layer; noconv runs {NO_CONV_TYPES}"
    )
    # a Synaptic layer needs "cubalif"
    no_cuba = dataclasses.replace(target, name="nocuba", limits=Limits(layer_types=("linear", "lif")))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), snn.Synaptic(alpha=0.5, beta=0.75, init_hidden=True))
    assert _refused(net, no_cuba, (4,)) == (
        "layer types: node 'cubalif_1' is a cubalif layer; nocuba runs ['linear', 'lif']"
    )


def test_weight_format() -> None:
    """A program compiled for 12-bit weights, mapped onto an 8-bit target."""
    wide = dataclasses.replace(load_target("default"), name="w12", weight_bits=12)
    prog = _compile(mlp(10, 6), wide, (10,))
    peak = int(np.abs(prog.graph.op("linear_0").weight).max())
    assert 127 < peak <= 2047
    with pytest.raises(MappingError) as e:
        map_graph(prog.graph, load_target("default"), memory_bits(prog))
    assert str(e.value) == (
        f"weight format: node 'linear_0' has weight codes up to {peak}; default stores 8-bit weights (max 127)"
    )
    map_graph(prog.graph, wide, memory_bits(prog))  # fits its own target


def test_decay_kinds() -> None:
    """A shift-only core decays by 1 - 2^-s: beta 0.875 (224/256) fits, beta 0.9 (230/256) does not."""
    shift = dataclasses.replace(load_target("default"), name="shift-only", decay_kinds=("shift",))
    torch.manual_seed(0)
    ok = nn.Sequential(nn.Linear(10, 6), snn.Leaky(beta=0.875, init_hidden=True))
    assert int(_compile(ok, shift, (10,)).graph.op("lif_1").beta) == 224
    assert _refused(mlp(10, 6), shift, (10,)) == (
        "decay kinds: node 'lif_1' has decay codes [230] on 2^-8; shift-only only shifts (decays 1 - 2^-s)"
    )
    torch.manual_seed(0)
    cuba = nn.Sequential(nn.Linear(10, 6), snn.Synaptic(alpha=0.8, beta=0.875, init_hidden=True))
    assert _refused(cuba, shift, (10,)) == (
        "decay kinds: node 'cubalif_1' has decay codes [205] on 2^-8; shift-only only shifts (decays 1 - 2^-s)"
    )


def test_state_format() -> None:
    """A program compiled for 24-bit states, mapped onto a 16-bit target."""
    wide = dataclasses.replace(load_target("default"), name="s24", state=Fixed(24, 8))
    prog = _compile(mlp(10, 6), wide, (10,))
    with pytest.raises(MappingError) as e:
        map_graph(prog.graph, load_target("default"), memory_bits(prog))
    assert str(e.value) == "state format: node 'lif_1' needs 24-bit states; default has 16"


def test_the_report_lists_every_resource_against_its_limit() -> None:
    """Synaptic 20 -> 24 on ice40up5k: 480 weights (3,840 bits: 1 SPRAM bank); EBR: layers 4 records x 96
    x 32 bit = 12,288 bits (3 banks), bias 25 x 32 (1), neuron 24 x 64 (1), state 48 x 16 (1) = 6 banks."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 24), snn.Synaptic(alpha=0.5, beta=0.9, init_hidden=True))
    prog = _compile(net, "ice40up5k", (20,))
    assert [u.line() for u in prog.mapping.usage] == [
        "cores: 1 / 1 cores (100.0%)",
        "fan-in: 20 / 1,024 synapses (2.0%)",
        "fan-out: 24 / 1,024 synapses (2.3%)",
        "spram banks (synapse): 1 / 4 banks (25.0%)",
        "ebr banks (bias/layers/neuron/state): 6 / 30 banks (20.0%)",
    ]
    report = program_report(prog)
    assert [(r["resource"], r["used"], r["limit"]) for r in report["resources"]] == [
        (u.resource, u.used, u.limit) for u in prog.mapping.usage
    ]
    assert {k: v["placed_in"] for k, v in report["memories"].items()} == {
        "layers": "ebr",
        "synapse": "spram",
        "bias": "ebr",
        "neuron": "ebr",
        "state": "ebr",
    }
    text = report_text(report)
    assert "  ebr banks (bias/layers/neuron/state): 6 / 30 banks" in text


def test_a_custom_target_file_works_on_the_command_line(tmp_path: Path) -> None:
    """--target PATH.toml compiles for that file's target (here: no conv engine and 16 banks)."""
    path = tmp_path / "board.toml"
    text = edited('name = "artix7-100t"', 'name = "my-board"')
    text = edited("banks = 135", "banks = 16", text)
    path.write_text(edited("conv_engine = true", "conv_engine = false", text))
    model = tmp_path / "model.py"
    model.write_text(
        textwrap.dedent(
            """
            import snntorch as snn
            import torch
            from torch import nn
            from snncompile.quant import prepare_qat


            def build():
                torch.manual_seed(0)
                net = nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.9, init_hidden=True))
                return prepare_qat(net, "artix7-100t")
            """
        )
    )
    build = tmp_path / "BUILD"
    result = invoke("compile", f"{model}:build", "--input-shape", "1,6,6", "--target", path, "-o", build)
    assert result.exit_code == 0, result.output
    assert "target my-board" in result.stdout and re.search(r"bram36 banks .*: \d+ / 16 banks", result.stdout)
    assert json.loads((build / "image" / "manifest.json").read_text())["target"] == "my-board"
    layers = np.frombuffer((build / "image" / "layers.bin").read_bytes(), "<i4").reshape(-1, 96)
    from snncompile.backends.image.layout import RECORD_FIELDS

    (conv_rec,) = [r for r in layers if r[0] == 4]
    assert conv_rec[RECORD_FIELDS.index("conv_unrolled")] == 1
