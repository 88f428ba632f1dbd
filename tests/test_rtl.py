"""The reference RTL core (``hw_models/rtl/snn_core.sv``) co-simulated with Verilator (issue 7).

Contract under test:

* For QAT-compiled MLPs (subtract, zero and immediate reset), an RSynaptic network (QCubaLIF with a
  dense recurrence) and a one-to-one RLeaky network, written as build directories, the RTL core's
  output spikes equal the integer simulator's at every step, and the core's cycle count of every time
  step equals the cycle model's (``program.simulate(x).cycles.cycles``).
* Hand-built fixed-point graphs exercise what QAT models do not: every rounding mode, the QLIF floor,
  drop_update zero reset, narrow saturating states, per-neuron thresholds and three neuron layers; they
  are checked against the reference interpreter (``run_integer``) and the cycle model.
* Conv networks on ``ice40up5k`` (no conv engine: convs stored as unrolled dense rows, bias per output
  channel; Flatten passes through), with stride 1 and with stride 2 + groups, equal the integer
  simulator and the cycle model (full dense rows per event); convs stored as kernels are refused.
* A corrupted synapse word (one weight of a row that receives events) changes the RTL result.
* Unsupported programs are refused before simulation with :class:`RtlUnsupportedError`.
* Golden vectors written from the integer simulator agree with the RTL run.
* `compile --synth` synthesizes the core with Yosys for a Xilinx 7-series part and the report holds positive LUT and flip-flop counts (slow,
  about 45 s).

The Verilator build is cached (keyed by the sources and parameters), so it is compiled once.
Without Verilator (or Yosys, for synthesis) the tests skip, except under CI (``$CI`` set), where they fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
from conftest import require_tool
from snncompile.backends.image import ImageError, write_image
from snncompile.backends.intsim import CycleModel
from snncompile.backends.rtl import (
    RtlUnsupportedError,
    golden_files,
    host_command,
    host_flags,
    host_load,
    host_simulate,
    host_step,
    rtl_simulate,
)
from snncompile.backends.rtl.driver import _check_field_offsets
from snncompile.quant import prepare_qat
from torch import nn

import snncompile
from snncompile import run_integer
from snncompile.build import write_build
from snncompile.ir import QLIF, FixedQuant, Graph, Input, Output, QConv2d, QCubaLIF, QLinear
from snncompile.ir.ops import DenseRecurrence, OneToOneRecurrence
from snncompile.targets import load_target

T, B, N_IN = 12, 3, 20


@pytest.fixture(autouse=True, scope="module")
def _verilator() -> None:
    """Every test here runs the core in Verilator: skipped without it, failed without it under CI."""
    require_tool("verilator", "verilator")


def _scale_(layer: nn.Module, gain: float, bias_gain: float = 0.1) -> nn.Module:
    with torch.no_grad():
        layer.weight.uniform_(-gain, gain)
        if getattr(layer, "bias", None) is not None:
            layer.bias.uniform_(-bias_gain, bias_gain)
    return layer


def _mlp(hidden: nn.Module, gain: float = 1.8, seed: int = 1) -> nn.Module:
    """Linear(20, 24) + hidden + Linear(24, 8) + Leaky, weights ~3x those of test_image so layers fire."""
    torch.manual_seed(seed)
    return nn.Sequential(
        _scale_(nn.Linear(N_IN, 24), gain),
        hidden,
        _scale_(nn.Linear(24, 8), 1.5),
        snn.Leaky(beta=0.8, init_hidden=True),
    )


def _rsynaptic() -> nn.Module:
    net = _mlp(snn.RSynaptic(alpha=0.75, beta=0.875, linear_features=24, init_hidden=True), 0.9, seed=3)
    _scale_(net[1].recurrent, 0.45)
    return net


MODELS = {
    "mlp_subtract": lambda: _mlp(snn.Leaky(beta=0.9, init_hidden=True)),
    "mlp_zero": lambda: _mlp(snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero")),
    "mlp_zero_immediate": lambda: _mlp(
        snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero", reset_delay=False)
    ),
    "rsynaptic_dense": _rsynaptic,
    "rleaky_one_to_one": lambda: _mlp(snn.RLeaky(beta=0.9, all_to_all=False, V=0.25, init_hidden=True)),
}


def _spikes(seed: int = 0, t: int = T, b: int = B, n: int = N_IN, p: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(t, b, n, generator=g) < p).float()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[snncompile.Program, Path]]:
    out = {}
    for name, make in MODELS.items():
        prog = snncompile.compile(prepare_qat(make()), "default", example_input=torch.zeros(1, N_IN))
        path = tmp_path_factory.mktemp(name) / "build"
        write_build(prog, path)
        out[name] = (prog, path)
    return out


def test_field_offsets_match_the_image_format() -> None:
    _check_field_offsets()


@pytest.mark.parametrize("name", list(MODELS))
def test_rtl_equals_integer_simulator_and_cycle_model(
    builds: dict[str, tuple[snncompile.Program, Path]], name: str
) -> None:
    prog, path = builds[name]
    x = _spikes()
    sim = prog.simulate(x)
    spikes, cycles = rtl_simulate(path, x)
    assert sim.spikes.sum() > 0 and not np.all(sim.spikes == 1)  # layers fire, not saturated
    np.testing.assert_array_equal(spikes, sim.spikes)
    assert cycles.shape == (T, B)
    np.testing.assert_array_equal(cycles, sim.cycles.cycles)
    assert len(np.unique(cycles)) > 1  # event-driven: the count depends on the spikes


def test_an_edited_mem_file_is_refused_not_run(
    builds: dict[str, tuple[snncompile.Program, Path]], tmp_path: Path
) -> None:
    """The core runs .mem files written from the verified words, never the build's own: an edited
    synapse.mem is refused before simulation (tests/test_tampering.py covers every memory and format,
    and shows a consistent edit changes what both engines run)."""
    _, path = builds["mlp_subtract"]
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    mem = bad / "image" / "synapse.mem"
    lines = mem.read_text().splitlines()
    lines[1] = "7f" if lines[1] != "7f" else "80"
    mem.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ImageError, match=r"^memory 'synapse': synapse.mem does not match its sha256 .*: word 0 is "
    ):
        rtl_simulate(bad, _spikes())


# ------------------------------------------------------------------------------- host interface


def test_host_interface_loads_the_image_runs_it_and_flags_errors(
    builds: dict[str, tuple[snncompile.Program, Path]],
) -> None:
    """The image LOADed through the byte-stream host interface (memories otherwise empty) gives the
    spikes and cycles of the integer simulator and the cycle model, read back with RESULT and SPIKE;
    every error sets its flag without side effects and CLEAR clears them."""
    prog, path = builds["mlp_subtract"]
    x = _spikes(seed=4, t=5, b=1)
    sim = prog.simulate(x)
    n_out = sim.spikes.shape[-1]
    status, clear = host_command("status"), host_command("clear")
    stream: list[bytes | None] = [host_command("start"), status, clear]  # START before INIT: refused
    stream += [host_load(path), host_command("init"), None]
    for t in range(x.shape[0]):
        stream += [host_step(np.flatnonzero(x[t, 0].numpy())), None, host_command("result")]
        stream += [host_command("nop") * 5]
        stream += [host_command("spike", (i, 2)) for i in range(n_out)]  # beyond out_cnt: 0xffff
    stream += [clear, status]
    errors = {
        "bad opcode": bytes([0x42]),
        "address out of range": host_command("load", (1, 1), (1 << 30, 4), (0x7F, 8)),
        "event overflow": host_command("event", (1 << 15, 2), (0, 2)),
    }
    for command in errors.values():
        stream += [command, status, clear]
    stream += [host_step(np.array([0])), host_command("load", (1, 1), (0, 4), (0, 8)), None, status]
    replies = host_simulate(path, stream)

    pos = 0

    def take(n: int) -> int:
        nonlocal pos
        pos += n
        return int.from_bytes(replies[pos - n : pos], "little")

    assert host_flags(take(1)) == ["not ready"]
    for t in range(x.shape[0]):
        count, cycles = take(2), take(4)
        indices = [take(2) for _ in range(n_out)]
        expected = np.flatnonzero(sim.spikes[t, 0])
        assert count == len(expected) and cycles == sim.cycles.cycles[t, 0]
        assert sorted(indices[:count]) == expected.tolist()
        assert indices[count:] == [0xFFFF] * (n_out - count)
    assert take(1) == 0x80  # ready, no flags
    for flag in errors:
        assert host_flags(take(1)) == [flag]
    assert host_flags(take(1)) == ["not ready"]  # the LOAD while the step ran
    assert pos == len(replies)
    assert sim.spikes[:, 0].sum() > 0


def test_core_invariants_stop_a_layer_table_that_reads_beyond_its_memory(
    builds: dict[str, tuple[snncompile.Program, Path]],
) -> None:
    """The host interface loads words unchecked; the core's simulation invariants stop a linear
    record whose synapse rows reach beyond the synapse memory (instead of reading other words)."""
    from snncompile.backends.image import load_image
    from snncompile.backends.image.layout import RECORD, RECORD_FIELDS
    from snncompile.backends.rtl import RtlToolError

    _, path = builds["mlp_subtract"]
    records = load_image(path / "image").memories["layers"].words.reshape(-1, RECORD)
    linear = int(np.flatnonzero(records[:, RECORD_FIELDS.index("opcode")] == 3)[0])
    bad_base = host_command(
        "load", (0, 1), (linear * RECORD + RECORD_FIELDS.index("syn_base"), 4), (1 << 30, 8)
    )
    stream = [host_load(path), bad_base, host_command("init"), None, host_step(np.array([0, 1])), None]
    with pytest.raises(RtlToolError, match=r"synapse address .* beyond SYN_DEPTH"):
        host_simulate(path, stream)


# ------------------------------------------------------------------------------- unrolled convs

CONVS = {
    "conv_same": dict(stride=1, padding=1, groups=1, cin=1, cout=4),
    "conv_stride2_groups": dict(stride=2, padding=1, groups=2, cin=2, cout=4),
}


def _conv_net(stride: int, padding: int, groups: int, cin: int, cout: int) -> tuple[nn.Module, int]:
    torch.manual_seed(5)
    side = (6 + 2 * padding - 3) // stride + 1
    net = nn.Sequential(
        _scale_(nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, groups=groups), 1.2, 0.3),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Flatten(),
        _scale_(nn.Linear(cout * side * side, 5), 0.9),
        snn.Leaky(beta=0.9, init_hidden=True),
    )
    return net, cin


@pytest.mark.parametrize("name", list(CONVS))
def test_unrolled_conv_on_ice40_equals_integer_simulator_and_cycle_model(name: str, tmp_path: Path) -> None:
    """ice40up5k has no conv engine: the conv is stored as unrolled dense rows (bias per output channel)
    and runs on the core as a dense layer; Flatten passes through."""
    net, cin = _conv_net(**CONVS[name])
    prog = snncompile.compile(prepare_qat(net), "ice40up5k", example_input=torch.zeros(1, cin, 6, 6))
    assert not prog.target.limits.conv_engine
    write_build(prog, tmp_path / "build")
    g = torch.Generator().manual_seed(7)
    x = (torch.rand(T, 2, cin, 6, 6, generator=g) < 0.3).float()
    sim = prog.simulate(x)
    spikes, cycles = rtl_simulate(tmp_path / "build", x)
    assert sim.spikes.sum() > 0 and not np.all(sim.spikes == 1)
    conv = next(n for n in prog.graph.topo_order() if isinstance(prog.graph.op(n), QConv2d))
    hidden = sim.run.spikes[prog.graph.users(conv)[0]]
    assert 0 < hidden.sum() < hidden.size  # the conv layer fires, not saturated
    np.testing.assert_array_equal(spikes, sim.spikes)
    np.testing.assert_array_equal(cycles, sim.cycles.cycles)
    assert len(np.unique(cycles)) > 1


def test_conv_stored_as_kernels_is_refused(tmp_path: Path) -> None:
    net, cin = _conv_net(**CONVS["conv_same"])
    prog = snncompile.compile(prepare_qat(net), "default", example_input=torch.zeros(1, cin, 6, 6))
    assert prog.target.limits.conv_engine
    write_build(prog, tmp_path / "build")
    with pytest.raises(RtlUnsupportedError, match="conv layer stored as kernels"):
        rtl_simulate(tmp_path / "build", np.zeros((2, 1, cin, 6, 6)))


# ------------------------------------------------------------------------------- hand-built graphs


def _hand_graph(rounding: str, seed: int) -> Graph:
    """Input(16) -> QLinear -> QLIF (narrow state, per-neuron thresholds, floor, drop_update zero reset)
    -> QLinear -> QCubaLIF with a dense recurrence -> QLinear -> QLIF (immediate subtract reset)."""
    rng = np.random.default_rng(seed)
    g = Graph()
    g.add("x", Input((16,), frac=0))
    g.add("fc1", QLinear(rng.integers(-60, 90, (12, 16)), rng.integers(-20, 20, 12), weight_frac=3), ["x"])
    narrow = FixedQuant(3, -400, 300, rounding)
    g.add("n1", QLIF(np.array(181), 8, rng.integers(20, 60, 12), narrow, in_frac=3, reset="zero",
                     zero_mode="drop_update", floor=-150), ["fc1"])  # fmt: skip
    g.add("fc2", QLinear(rng.integers(-90, 100, (10, 12)), None, weight_frac=4), ["n1"])
    mem = FixedQuant(5, -3000, 2500, rounding)
    syn = FixedQuant(4, -1000, 900, rounding)
    rec = DenseRecurrence(rng.integers(-40, 40, (10, 10)), rng.integers(-8, 8, 10))
    g.add("n2", QCubaLIF(np.array(150), 8, np.array(205), 8, np.array(60), mem, syn, in_frac=4,
                         recurrence=rec, rec_frac=6), ["fc2"])  # fmt: skip
    g.add("fc3", QLinear(rng.integers(-70, 100, (6, 10)), rng.integers(-5, 9, 6), weight_frac=2), ["n2"])
    g.add("n3", QLIF(np.array(7), 3, np.array(9), FixedQuant(2, -500, 500, rounding), in_frac=2,
                     reset_delay=False), ["fc3"])  # fmt: skip
    g.add("o", Output(), ["n3"])
    g.verify()
    return g


@pytest.mark.parametrize("rounding", ["floor", "half_up", "half_down", "half_even", "trunc"])
def test_hand_built_graph_every_rounding_mode(rounding: str, tmp_path: Path) -> None:
    graph = _hand_graph(rounding, seed=len(rounding))
    target = load_target("default")
    write_image(graph, target, tmp_path)
    x = _spikes(seed=5, t=16, b=2, n=16, p=0.4).numpy()
    spikes, cycles = rtl_simulate(tmp_path, x)
    run = run_integer(graph, x)
    assert 0 < run.output.sum() < run.output.size
    np.testing.assert_array_equal(spikes, run.output)
    model = CycleModel(graph, target)
    np.testing.assert_array_equal(cycles, model.count(run, {**run.spikes, "x": x}).cycles)


# ------------------------------------------------------------------------------- random graphs

ROUNDINGS = ("floor", "half_up", "half_down", "half_even", "trunc")


def _random_neuron(rng: np.random.Generator, n: int, in_frac: int) -> QLIF | QCubaLIF:
    """A QLIF or QCubaLIF of ``n`` neurons with every parameter drawn: decays, (per-neuron)
    thresholds, formats and rounding, reset mode and timing, floor, recurrence."""
    d = int(rng.integers(1, 9))
    f = int(rng.integers(0, 6))
    hi = int(rng.integers(300, 4000))
    mem = FixedQuant(f, -int(rng.integers(300, 4000)), hi, str(rng.choice(ROUNDINGS)))
    thr = rng.integers(1, min(hi, 200), n if rng.random() < 0.5 else 1)
    thr = thr if thr.size > 1 else np.array(thr[0])
    beta = np.array(int(rng.integers(0, (1 << d) + 1)))
    rec_frac = int(rng.integers(0, 7))
    kind = rng.integers(0, 3)  # no recurrence, dense, one-to-one
    if kind == 1:
        rec = DenseRecurrence(
            rng.integers(-40, 40, (n, n)), rng.integers(-8, 8, n) if rng.random() < 0.5 else None
        )
    elif kind == 2:
        rec = OneToOneRecurrence(rng.integers(-60, 60, n if rng.random() < 0.5 else 1))
    else:
        rec = None
    reset = str(rng.choice(["subtract", "zero", "none"]))
    delay = bool(rng.random() < 0.7)
    if rng.random() < 0.3:  # CubaLIF: dense or no recurrence
        a = int(rng.integers(1, 9))
        syn = FixedQuant(int(rng.integers(0, 5)), -int(rng.integers(300, 2000)), int(rng.integers(300, 2000)),
                         str(rng.choice(ROUNDINGS)))  # fmt: skip
        return QCubaLIF(np.array(int(rng.integers(0, (1 << a) + 1))), a, beta, d, thr, mem, syn,
                        in_frac=in_frac, reset=reset, reset_delay=delay,
                        recurrence=rec if kind != 2 else None, rec_frac=rec_frac)  # fmt: skip
    floor = -int(rng.integers(0, -mem.lo + 1)) if rng.random() < 0.3 else None
    return QLIF(beta, d, thr, mem, in_frac=in_frac, reset=reset, reset_delay=delay,
                zero_mode=str(rng.choice(["keep_input", "drop_update"])), recurrence=rec,
                rec_frac=rec_frac, floor=floor)  # fmt: skip


def _random_graph(seed: int) -> Graph:
    """1 to 3 layers of 2 to 20 neurons on 4 to 24 binary inputs, every parameter drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    g = Graph()
    n_prev = int(rng.integers(4, 25))
    g.add("x", Input((n_prev,), frac=0))
    src = "x"
    for i in range(int(rng.integers(1, 4))):
        n = int(rng.integers(2, 21))
        k = int(rng.integers(0, 5))
        w = rng.integers(-90, 128, (n, n_prev))  # 8-bit weights on 2^-k
        bias = rng.integers(-(8 << k), (8 << k) + 1, n) if rng.random() < 0.6 else None
        g.add(f"fc{i}", QLinear(w, bias, weight_frac=k), [src])
        g.add(f"n{i}", _random_neuron(rng, n, k), [f"fc{i}"])
        src, n_prev = f"n{i}", n
    g.add("o", Output(), [src])
    g.verify()
    return g


RANDOM_SEEDS = range(8)


def test_random_graphs_equal_the_reference_interpreter_and_the_cycle_model(tmp_path: Path) -> None:
    """Random graphs and random spike inputs (seeds 0-7, named on failure) run on the core give the
    reference interpreter's spikes and the cycle model's cycles at every step."""
    target = load_target("default")
    fired = 0
    for seed in RANDOM_SEEDS:
        graph = _random_graph(seed)
        image = tmp_path / f"seed{seed}"
        image.mkdir()
        write_image(graph, target, image)
        rng = np.random.default_rng(1000 + seed)
        n_in = graph.shapes()["x"][0]
        x = (rng.random((10, 2, n_in)) < rng.uniform(0.15, 0.6)).astype(np.float64)
        spikes, cycles = rtl_simulate(image, x)
        run = run_integer(graph, x)
        model = CycleModel(graph, target).count(run, {**run.spikes, "x": x})
        assert np.array_equal(spikes, run.output), f"seed {seed}: spikes differ"
        assert np.array_equal(cycles, model.cycles), f"seed {seed}: cycles differ"
        fired += bool(sum(int(v.sum()) for v in run.spikes.values()) > 0)
    assert fired >= len(RANDOM_SEEDS) // 2  # most random networks are active


# ------------------------------------------------------------------------------- refusals, golden, synth


def test_unsupported_programs_are_refused(tmp_path: Path) -> None:
    graph = _hand_graph("floor", 1)
    write_image(graph, load_target("zu3eg"), tmp_path)  # pipelined schedule
    with pytest.raises(RtlUnsupportedError, match="pipelined schedule"):
        rtl_simulate(tmp_path, _spikes(n=16).numpy())
    g = Graph()
    g.add("x", Input((4,), frac=0))
    g.add("fc", QLinear(np.ones((3, 4), np.int64), None, weight_frac=0), ["x"])
    g.add("n", QLIF(np.array(1), 1, np.array(2), FixedQuant(0, -99, 99), in_frac=0,
                    graded=np.array(3)), ["fc"])  # fmt: skip
    g.add("o", Output(), ["n"])
    d = tmp_path / "graded"
    d.mkdir()
    write_image(g, load_target("default"), d)
    with pytest.raises(RtlUnsupportedError, match="layer 'n': graded spikes"):
        rtl_simulate(d, np.zeros((2, 1, 4)))


def test_golden_files_agree_with_the_rtl(
    builds: dict[str, tuple[snncompile.Program, Path]], tmp_path: Path
) -> None:
    prog, path = builds["rsynaptic_dense"]
    x = _spikes(seed=3, t=6, b=2)
    files = golden_files(prog, x, tmp_path)
    spikes, cycles = rtl_simulate(path, x)
    words = [ln for ln in files["expected_spikes"].read_text().splitlines() if not ln.startswith("//")]
    rtl_words = [
        int("".join("1" if v else "0" for v in spikes[t, b, ::-1]), 2) for b in range(2) for t in range(6)
    ]
    assert [int(w, 16) for w in words] == rtl_words
    cyc = [int(ln, 16) for ln in files["expected_cycles"].read_text().splitlines() if not ln.startswith("//")]
    assert cyc == cycles.T.ravel().tolist()
    stim = [int(ln, 16) for ln in files["stimulus"].read_text().splitlines() if not ln.startswith("//")]
    assert stim[0] == int(x[0, 0].sum())


MODEL_FILE = (
    "import torch, snntorch as snn\nfrom torch import nn\nfrom snncompile.quant import prepare_qat\n"
    "def build():\n    torch.manual_seed(0)\n"
    "    net = nn.Sequential(nn.Linear(20, 16), snn.Leaky(beta=0.9, init_hidden=True),\n"
    "                        nn.Linear(16, 4), snn.Leaky(beta=0.9, init_hidden=True))\n"
    "    with torch.no_grad():\n        [p.mul_(3.0) for p in net.parameters()]\n"
    "    return prepare_qat(net)\n"
)


@pytest.mark.slow
def test_synthesis_figures_land_in_the_compile_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compile --synth` implements the core behind its host interface on the target's part at the
    target's lanes and widths, and says whether it fits (every count against the part's resources)."""
    for tool, package in (
        ("yosys", "yosys"),
        ("nextpnr-ice40", "nextpnr-ice40"),
        ("icepack", "fpga-icestorm"),
    ):
        require_tool(tool, package)
    from click.testing import CliRunner
    from snncompile.backends.rtl.driver import PARTS

    from snncompile.cli import main

    (tmp_path / "m.py").write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["compile", "m.py:build", "--target", "ice40up5k", "--synth", "-o", "b"]
    )
    assert result.exit_code == 0, result.stderr
    figures = json.loads((tmp_path / "b" / "report.json").read_text())["synthesis"]
    target, part = load_target("ice40up5k"), PARTS["ice40"]
    assert figures["parameters"]["LANES"] == target.micro.lanes and figures["parameters"]["S_W"] == 16
    assert figures["clock_mhz"] == target.micro.clock_mhz and figures["luts"] > 0
    over = [k for k in ("luts", "flip_flops", "block_rams", "dsps") if figures[k] > getattr(part, k)]
    if over:  # not placed: no timing, no bitstream, and the report says what does not fit
        assert not figures["fits"] and figures["fmax_mhz"] is None and figures["bitstream"] is None
        assert all(any(k.replace("_", " ") in p for p in figures["problems"]) for k in over)
    else:
        assert figures["fits"] == (figures["bitstream"] is not None)
        assert figures["meets_timing"] == (figures["fmax_mhz"] >= target.micro.clock_mhz)
    text = (tmp_path / "b" / "report.txt").read_text()
    assert "synthesis of the reference core (synth_ice40" in text
    assert ("; fits;" in text) == figures["fits"] and all(p in text for p in figures["problems"])
    if figures["bitstream"] is not None:
        assert (tmp_path / "b" / figures["bitstream"]).stat().st_size > 100_000


def test_compile_synth_puts_the_bitstream_in_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A placed and routed core's bitstream is copied into the build (the flow's own directory is a
    cache) and the report names it there; the text report says it fits and gives Fmax and clock."""
    import snncompile.backends.rtl as rtl
    from click.testing import CliRunner

    from snncompile.cli import main

    flow_output = tmp_path / "flow" / "snn_host.bin"
    flow_output.parent.mkdir()
    flow_output.write_bytes(b"\x7e\xaa\x99\x7e" * 1000)
    figures = {
        "part": "iCE40UP5K", "luts": 4000, "flip_flops": 3000, "block_rams": 20, "dsps": 4,
        "fmax_mhz": 31.5, "clock_mhz": 24.0, "fits": True, "meets_timing": True,
        "bitstream": str(flow_output), "parameters": {}, "command": "synth_ice40 -dsp -top snn_host",
        "problems": [], "seconds": 1.0,
    }  # fmt: skip
    monkeypatch.setattr(rtl, "synthesize", lambda target: dict(figures))
    (tmp_path / "m.py").write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["compile", "m.py:build", "--target", "ice40up5k", "--synth", "-o", "b"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b" / "report.json").read_text())["synthesis"]
    assert report["bitstream"] == "rtl/snn_host.bin"
    assert (tmp_path / "b" / "rtl" / "snn_host.bin").read_bytes() == flow_output.read_bytes()
    text = (tmp_path / "b" / "report.txt").read_text()
    assert "; fits; Fmax 31.5 MHz for a 24 MHz clock; bitstream rtl/snn_host.bin" in text


COUNTER = """module snn_host(input wire clk, output reg [7:0] q);
    always @(posedge clk) q <= q + 8'd1;
endmodule
"""


@pytest.mark.parametrize("clock_mhz, meets", [(24.0, True), (2000.0, False)])
def test_place_and_route_reports_fmax_against_the_clock_and_packs_a_bitstream(
    tmp_path: Path, clock_mhz: float, meets: bool
) -> None:
    """The iCE40 back end of the flow (nextpnr-ice40 --up5k, icepack) on a counter: a bitstream, and
    an Fmax that an 8-bit counter reaches at 24 MHz but not at 2 GHz."""
    import dataclasses
    import subprocess
    import time

    from snncompile.backends.rtl.driver import _place_and_route

    for tool, package in (
        ("yosys", "yosys"),
        ("nextpnr-ice40", "nextpnr-ice40"),
        ("icepack", "fpga-icestorm"),
    ):
        require_tool(tool, package)
    (tmp_path / "counter.v").write_text(COUNTER)
    subprocess.run(
        ["yosys", "-q", "-p", "read_verilog counter.v; synth_ice40 -top snn_host -json snn_host.json"],
        cwd=tmp_path, check=True, timeout=600,
    )  # fmt: skip
    target = load_target("ice40up5k")
    target = dataclasses.replace(target, micro=dataclasses.replace(target.micro, clock_mhz=clock_mhz))
    fmax, bitstream, failure = _place_and_route(target, tmp_path, time.monotonic() + 600)
    assert failure is None and fmax is not None and bitstream is not None
    assert (fmax >= clock_mhz) is meets
    assert Path(bitstream).stat().st_size > 100_000  # a whole UP5K configuration image


def test_cli_compile_golden_and_rtl_sim_with_a_relative_build_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compile --golden` writes the vectors into the build; `rtl-sim` on a relative path equals `simulate`."""
    from click.testing import CliRunner

    from snncompile.cli import main

    (tmp_path / "m.py").write_text(MODEL_FILE)
    np.savez(tmp_path / "x.npz", x=(np.random.default_rng(0).random((12, 2, 20)) < 0.3).astype(np.uint8))
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    result = run(main, ["compile", "m.py:build", "--target", "artix7-100t", "--golden", "x.npz", "-o", "b"])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "b" / "golden").iterdir()) == [
        "expected_cycles.mem", "expected_spikes.mem", "golden.json", "stimulus.mem"
    ]  # fmt: skip
    assert "synthesis: not run (--synth)" in (tmp_path / "b" / "report.txt").read_text()
    assert run(main, ["-q", "rtl-sim", "b", "--input", "x.npz", "-o", "r.npz"]).exit_code == 0
    assert run(main, ["-q", "simulate", "b", "--input", "x.npz", "-o", "s.npz"]).exit_code == 0
    with np.load(tmp_path / "r.npz") as r, np.load(tmp_path / "s.npz") as s:
        assert np.array_equal(r["spikes"], s["spikes"]) and np.array_equal(r["cycles"], s["cycles"])
        assert r["spikes"].any()
