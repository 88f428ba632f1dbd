"""The weight-memory image backend: encode, every file format, the reader, builds and the CLI.

Contract under test (issue 8):

* Simulating the image decoded from disk (``write_image`` -> ``read_image`` -> ``run_integer``) equals
  simulating the in-memory program bit for bit (spikes and every state of every neuron node), and the
  decoded graph equals ``program.graph``, for MLP, conv (max and avg pool), recurrent (dense, one-to-one,
  conv), Synaptic and LeakyParallel networks on EVERY shipped target they fit. ``ice40up5k`` has no conv
  engine, so its conv layers are stored unrolled into dense rows; single-neuron-layer conv networks
  cover that path on the real profile, and a copy of ``default`` without a conv engine covers it for
  the multi-layer conv networks. The same holds when the image is read back from the ``.mem`` files.
* Golden files: a tiny hand-built network's image, in every format, equals the files committed in
  ``tests/golden/image/`` byte for byte (reviewed by hand once; what was checked is written in
  :func:`test_golden_image_files`). To regenerate them after an intended format change, run

      SNNCOMPILE_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_image.py -k golden

  and review the diff (``git diff tests/golden``) by hand before committing. A normal run only compares.
* Determinism: two compiles give byte-identical image files, graph.json and reports (also across
  processes with different hash seeds).
* The reader never crashes or hangs on malformed input (hypothesis fuzzing of bytes, lengths, manifest
  fields and layer-table words): only ``SnnCompileError`` subclasses come out; the main messages are
  pinned.
* CLI: ``compile`` writes the whole build atomically; ``simulate BUILD`` runs the decoded image and equals
  the QAT torch model.
* Every word is checked on reading (issue 13): all four formats of a memory must hold the same words,
  and the decoded program must encode back to every word; ``tests/test_tampering.py`` edits each
  memory in each format and checks every command refuses the build.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import snntorch as snn
import torch
from click.testing import Result
from conftest import error_line, invoke, snntorch_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snncompile.backends.image import (
    Field,
    ImageError,
    MemoryImage,
    decode,
    encode,
    image_files,
    read_image,
    write_image,
)
from snncompile.backends.image.layout import RECORD, RECORD_FIELDS
from snncompile.quant import prepare_qat
from snncompile.quant.fixed import Fixed
from torch import nn

import snncompile
from snncompile import SnnCompileError, run_integer
from snncompile.build import write_build
from snncompile.ir import QLIF, FixedQuant, Graph, Input, Output, QConv2d, QLinear
from snncompile.passes.mapping import MappingError
from snncompile.targets import Limits, Target, load_target, target_names

T, B = 16, 2
MEMORIES = ("layers", "synapse", "bias", "neuron", "state")
FORMATS = ("mem", "coe", "mif", "bin")
GOLDEN = Path(__file__).parent / "golden" / "image"


# ------------------------------------------------------------------------------------------ models


def _scale_(layer: nn.Module, gain: float, bias_gain: float = 0.1) -> nn.Module:
    """Seeded uniform weights in [-gain, gain] (biases in [-bias_gain, bias_gain]): strong enough to
    spike (models are built inside a ``torch.manual_seed`` block, so each one is deterministic)."""
    with torch.no_grad():
        layer.weight.uniform_(-gain, gain)
        if getattr(layer, "bias", None) is not None:
            layer.bias.uniform_(-bias_gain, bias_gain)
    return layer


def _mlp(hidden: nn.Module, gain: float = 0.6, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        _scale_(nn.Linear(20, 24), gain),
        hidden,
        _scale_(nn.Linear(24, 8), 0.5),
        snn.Leaky(beta=0.8, init_hidden=True),
    )


def conv_net(pool: str) -> nn.Module:
    """Conv2d + Leaky + MaxPool2d/AvgPool2d(2) + Flatten + Linear + Leaky on (1, 8, 8)."""
    torch.manual_seed(2)
    return nn.Sequential(
        _scale_(nn.Conv2d(1, 4, 3), 0.6),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2),
        nn.Flatten(),
        _scale_(nn.Linear(4 * 3 * 3, 8), 0.7 if pool == "max" else 1.2),
        snn.Leaky(beta=0.85, init_hidden=True),
    )


def rleaky_dense() -> nn.Module:
    net = _mlp(snn.RLeaky(beta=0.9, linear_features=24, init_hidden=True), seed=6)
    _scale_(net[1].recurrent, 0.3)
    return net


def rsynaptic_dense() -> nn.Module:
    net = _mlp(snn.RSynaptic(alpha=0.75, beta=0.875, linear_features=24, init_hidden=True), 0.3, seed=3)
    _scale_(net[1].recurrent, 0.15)
    return net


def rleaky_conv() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        _scale_(nn.Conv2d(1, 4, 3), 0.6),
        snn.RLeaky(beta=0.9, conv2d_channels=4, kernel_size=3, init_hidden=True),
        nn.Flatten(),
        _scale_(nn.Linear(4 * 6 * 6, 8), 0.3),
        snn.Leaky(beta=0.8, init_hidden=True),
    )


def leaky_parallel(bias: bool = True) -> nn.Module:
    torch.manual_seed(7)
    net = nn.Sequential(
        snn.LeakyParallel(20, 16, beta=0.9, bias=bias), snn.LeakyParallel(16, 4, beta=0.8, bias=bias)
    )
    with torch.no_grad():
        net[0].rnn.weight_ih_l0.uniform_(-0.4, 0.3)
        net[1].rnn.weight_ih_l0.uniform_(-0.5, 0.45)
        if bias:
            for lp in net:
                lp.rnn.bias_ih_l0.uniform_(-0.05, 0.05)
                lp.rnn.bias_hh_l0.uniform_(-0.05, 0.05)
    return net


def conv_single() -> nn.Module:
    """One neuron layer (fits ice40up5k's single core): a padded conv, stored unrolled there."""
    torch.manual_seed(8)
    return nn.Sequential(_scale_(nn.Conv2d(1, 4, 3, padding=1), 0.8), snn.Leaky(beta=0.9, init_hidden=True))


def conv_grouped_avgpool_single() -> nn.Module:
    """One neuron layer: a grouped, strided, padded conv and a 2x2 average before the neurons."""
    torch.manual_seed(9)
    return nn.Sequential(
        _scale_(nn.Conv2d(2, 4, 3, stride=1, padding=1, groups=2), 0.9),
        nn.AvgPool2d(2),
        snn.Leaky(beta=0.875, init_hidden=True),
    )


def linear_single() -> nn.Module:
    torch.manual_seed(10)
    return nn.Sequential(_scale_(nn.Linear(20, 24), 0.6), snn.Synaptic(alpha=0.5, beta=0.9, init_hidden=True))


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp_subtract": (lambda: _mlp(snn.Leaky(beta=0.9, init_hidden=True)), (20,)),
    "mlp_zero": (lambda: _mlp(snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero")), (20,)),
    "conv_maxpool": (lambda: conv_net("max"), (1, 8, 8)),
    "conv_avgpool": (lambda: conv_net("avg"), (1, 8, 8)),
    "rleaky_dense": (rleaky_dense, (20,)),
    "rsynaptic_dense": (rsynaptic_dense, (20,)),
    "rleaky_one_to_one": (
        lambda: _mlp(snn.RLeaky(beta=0.9, all_to_all=False, V=0.25, init_hidden=True)),
        (20,),
    ),
    "rsynaptic_one_to_one_per_neuron": (
        lambda: _mlp(
            snn.RSynaptic(
                alpha=0.5, beta=0.8, all_to_all=False, V=torch.linspace(-0.5, 0.5, 24), init_hidden=True
            ),
            0.25,
            seed=4,
        ),
        (20,),
    ),
    "rleaky_conv": (rleaky_conv, (1, 8, 8)),
    "synaptic": (lambda: _mlp(snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True), 0.3, seed=5), (20,)),
    "leaky_parallel": (leaky_parallel, (20,)),
    "leaky_parallel_no_bias": (lambda: leaky_parallel(bias=False), (20,)),
    "leaky_graded_per_neuron": (
        lambda: _mlp(
            snn.Leaky(
                beta=torch.linspace(0.5, 0.95, 24),
                threshold=torch.linspace(0.5, 1.5, 24),
                learn_beta=True,
                learn_threshold=True,
                graded_spikes_factor=0.5,
                init_hidden=True,
            )
        ),
        (20,),
    ),
    "leaky_immediate_zero": (
        lambda: _mlp(snn.Leaky(beta=0.9, init_hidden=True, reset_delay=False, reset_mechanism="zero")),
        (20,),
    ),
    "conv_single": (conv_single, (1, 8, 8)),
    "conv_grouped_avgpool_single": (conv_grouped_avgpool_single, (2, 8, 8)),
    "linear_single": (linear_single, (20,)),
}
"""Float snnTorch builders and their per-sample input shapes; every test compiles ``prepare_qat(build())``
(exact, no calibration)."""

CONV_MODELS = ("conv_maxpool", "conv_avgpool", "rleaky_conv", "conv_single", "conv_grouped_avgpool_single")


def spikes(seed: int, shape: tuple[int, ...], p: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < p).astype(np.float32)


def compile_qat(name: str, target: str | Target) -> tuple[snncompile.Program, nn.Module]:
    build, shape = MODELS[name]
    q = prepare_qat(build(), target)
    prog = snncompile.compile(q, target, example_input=torch.zeros(1, *shape))
    assert prog.exact, prog.notes
    return prog, q


# ----------------------------------------------------------------------------------------- helpers


def rewrite_memory(directory: Path, name: str, words: np.ndarray) -> None:
    """Replaces memory ``name``'s words in all four formats and updates their sha256 in the manifest
    (a consistent edit: only the decoder and the re-encoding check can catch it)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = memory_entry(manifest, name)
    fields = tuple(Field(f["name"], f["lsb"], f["width"], f["signed"]) for f in entry["fields"])
    m = MemoryImage(name, entry["width"], np.asarray(words, np.uint64), fields, entry["source"])
    entry["depth"] = m.depth
    for ext in FORMATS:
        blob = m.render(ext)
        (directory / f"{name}.{ext}").write_bytes(blob)
        entry["sha256"][ext] = hashlib.sha256(blob).hexdigest()
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def assert_same_run(want: snncompile.Run, got: snncompile.Run, what: str) -> None:
    assert np.array_equal(want.output, got.output), f"{what}: outputs differ"
    assert sorted(want.spikes) == sorted(got.spikes), f"{what}: {sorted(want.spikes)} vs {sorted(got.spikes)}"
    for node in want.spikes:
        assert np.array_equal(want.spikes[node], got.spikes[node]), f"{what}: spikes of {node} differ"
        assert sorted(want.states[node]) == sorted(got.states[node])
        for var, value in want.states[node].items():
            assert np.issubdtype(value.dtype, np.integer) and np.issubdtype(
                got.states[node][var].dtype, np.integer
            )
            assert np.array_equal(value, got.states[node][var]), f"{what}: {var} of {node} differs"
    assert want.saturations == got.saturations, what


def assert_round_trip(prog: snncompile.Program, x: np.ndarray, directory: Path, what: str) -> Graph:
    """write_image -> read_image equals the program, bit for bit, and every format of every memory
    holds the program's words."""
    directory.mkdir(parents=True, exist_ok=True)
    write_image(prog.graph, prog.target, directory)
    decoded = read_image(directory)
    assert decoded == prog.graph, f"{what}: decoded graph differs\n{decoded}\n---\n{prog.graph}"
    sim = prog.simulate(x)
    run = run_integer(decoded, x)
    assert_same_run(sim.run, run, what)
    assert np.array_equal(sim.spikes, run.output)
    # the image in memory is the image on disk
    assert (
        decode(
            prog.memories, prog.graph.topo_order(), [prog.graph.source(n) for n in prog.graph.topo_order()]
        )
        == prog.graph
    )
    for name, m in prog.memories.items():
        for ext in FORMATS:
            data = (directory / f"{name}.{ext}").read_bytes()
            parsed = MemoryImage.parse(ext, name, m.width, m.depth, data, m.fields, m.source)
            assert np.array_equal(parsed.words, m.words), f"{what}: {name}.{ext} holds other words"
    return decoded


def assert_active(prog: snncompile.Program, x: np.ndarray, what: str) -> None:
    """Every neuron layer spikes somewhere and is silent somewhere: the comparison is not vacuous."""
    run = prog.simulate(x).run
    for node, s in run.spikes.items():
        rate = float((s != 0).mean())
        assert 0 < rate < 1, f"{what}: neuron node {node} fires at rate {rate}: the test is vacuous"


# --------------------------------------------------------------------- decoded image == program


@pytest.mark.parametrize("target", target_names())
@pytest.mark.parametrize("name", sorted(MODELS))
def test_decoded_image_simulates_like_the_program(name: str, target: str, tmp_path: Path) -> None:
    try:
        prog, _ = compile_qat(name, target)
    except MappingError as e:
        pytest.skip(f"{name} does not fit {target}: {e}")
    shape = MODELS[name][1]
    x = spikes(10, (T, B, *shape))
    assert_active(prog, x, f"{name} on {target}")
    assert_round_trip(prog, x, tmp_path / "image", f"{name} on {target}")
    if name in CONV_MODELS:
        conv_records = _records_of(prog.memories, 4)  # opcode 4 = QConv2d
        assert conv_records, name
        unrolled = {int(r[RECORD_FIELDS.index("conv_unrolled")]) for r in conv_records}
        assert unrolled == {int(not prog.target.limits.conv_engine)}, (name, target, unrolled)


def _records_of(memories: dict[str, MemoryImage], opcode: int) -> list[np.ndarray]:
    words = memories["layers"].unpack("word").reshape(-1, RECORD)
    return [r for r in words if r[0] == opcode]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_network_fits_at_least_three_shipped_targets(name: str) -> None:
    fits = []
    for target in target_names():
        try:
            compile_qat(name, target)
        except MappingError:
            continue
        fits.append(target)
    assert len(fits) >= 3, f"{name} fits only {fits}"
    if name in ("conv_single", "conv_grouped_avgpool_single", "linear_single"):
        assert "ice40up5k" in fits, f"{name} is meant to cover ice40up5k, fits only {fits}"


def test_ice40up5k_stores_conv_layers_unrolled() -> None:
    """ice40up5k has no conv engine: the conv's synapse words are the dense (in x out) matrix that the
    conv computes (row i = the output of a unit spike on input i), not the kernel."""
    prog, _ = compile_qat("conv_single", "ice40up5k")
    assert not prog.target.limits.conv_engine
    (rec,) = _records_of(prog.memories, 4)
    assert rec[RECORD_FIELDS.index("conv_unrolled")] == 1
    op = prog.graph.op("conv2d_0")
    assert isinstance(op, QConv2d)
    n_in, n_out = 1 * 8 * 8, 4 * 8 * 8
    base, count = (int(rec[RECORD_FIELDS.index(k)]) for k in ("syn_base", "syn_count"))
    assert count == n_in * n_out
    dense = prog.memories["synapse"].unpack("weight")[base : base + count].reshape(n_in, n_out)
    unit = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, 8, 8)
    ref = torch.nn.functional.conv2d(unit, torch.tensor(op.weight, dtype=torch.float64), None, 1, 1)
    assert np.array_equal(dense, ref.reshape(n_in, n_out).numpy().astype(np.int64))
    # the same network on a target with a conv engine stores the 4x1x3x3 kernel only
    prog2, _ = compile_qat("conv_single", "artix7-100t")
    (rec2,) = _records_of(prog2.memories, 4)
    assert rec2[RECORD_FIELDS.index("conv_unrolled")] == 0 and rec2[RECORD_FIELDS.index("syn_count")] == 36
    assert prog2.graph == prog.graph


NO_CONV_ENGINE = dataclasses.replace(
    load_target("default"), name="default-noconv", limits=Limits(conv_engine=False)
)


@pytest.mark.parametrize("name", ["conv_maxpool", "conv_avgpool", "rleaky_conv"])
def test_multi_layer_conv_networks_unrolled_round_trip(name: str, tmp_path: Path) -> None:
    prog, _ = compile_qat(name, NO_CONV_ENGINE)
    x = spikes(12, (T, B, *MODELS[name][1]))
    assert_round_trip(prog, x, tmp_path / "image", f"{name} unrolled")
    (rec,) = _records_of(prog.memories, 4)
    assert rec[RECORD_FIELDS.index("conv_unrolled")] == 1


def _conv_graph(
    cin: int,
    cout: int,
    groups: int,
    k: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    dil: tuple[int, int],
    hw: tuple[int, int],
) -> Graph:
    rng = np.random.default_rng(cin * 100 + cout * 10 + groups)
    w = rng.integers(-100, 100, (cout, cin // groups, *k))
    w[w == 0] = 7
    g = Graph()
    g.add("x", Input((cin, *hw), frac=0))
    g.add("c", QConv2d(w, rng.integers(-5, 5, cout), stride, pad, dil, groups, weight_frac=4), ["x"])
    mem = FixedQuant(4, -(1 << 15), (1 << 15) - 1, "floor")
    g.add("n", QLIF(np.array(200), 8, np.array(64), mem, in_frac=4), ["c"])
    g.add("o", Output(), ["n"])
    g.verify()
    return g


@pytest.mark.parametrize(
    ("cin", "cout", "groups", "k", "stride", "pad", "dil", "hw"),
    [
        (1, 2, 1, (3, 3), (1, 1), (0, 0), (1, 1), (5, 5)),
        (2, 4, 2, (3, 3), (2, 1), (1, 2), (1, 1), (6, 4)),
        (4, 4, 4, (2, 3), (3, 3), (1, 2), (2, 1), (6, 4)),
        (2, 4, 1, (3, 3), (1, 2), (1, 1), (2, 2), (6, 5)),
    ],
)
def test_unrolled_conv_geometries_decode_exactly(
    cin: int,
    cout: int,
    groups: int,
    k: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    dil: tuple[int, int],
    hw: tuple[int, int],
) -> None:
    g = _conv_graph(cin, cout, groups, k, stride, pad, dil, hw)
    for target in (NO_CONV_ENGINE, load_target("default")):
        decoded = decode(encode(g, target), g.topo_order())
        assert decoded == g, f"{target.name}\n{decoded}"
        x = spikes(3, (6, 2, cin, *hw), 0.4)
        assert_same_run(run_integer(g, x), run_integer(decoded, x), target.name)


def test_unrolled_conv_tap_that_never_meets_the_input_reads_back_zero() -> None:
    """Documented limit of the unrolled form: a kernel tap that no output ever applies to an input pixel
    (here stride 3, padding 1, dilation 2 on a 5x5 input) is not in the dense rows, so it decodes as 0;
    the decoded program still computes exactly the same values."""
    g = _conv_graph(1, 2, 1, (3, 3), (3, 3), (1, 2), (2, 1), (5, 5))
    decoded = decode(encode(g, NO_CONV_ENGINE), g.topo_order())
    want = g.op("c").weight.copy()
    got = decoded.op("c").weight
    differs = want != got
    assert differs.any() and (got[differs] == 0).all()
    x = spikes(4, (6, 2, 1, 5, 5), 0.5)
    assert_same_run(run_integer(g, x), run_integer(decoded, x), "dead tap")


@pytest.mark.parametrize(
    "target",
    [
        dataclasses.replace(
            load_target("default"),
            name="odd-widths",
            weight_bits=6,
            bias_bits=12,
            state=Fixed(20, 9),
            rounding="half_even",
            decay_frac=10,
        ),
        dataclasses.replace(
            load_target("default"), name="wide", weight_bits=16, bias_bits=32, state=Fixed(32, 12)
        ),
        dataclasses.replace(load_target("default"), name="per-channel", per_channel=True),
    ],
    ids=lambda t: t.name,
)
def test_custom_formats_round_trip(target: Target, tmp_path: Path) -> None:
    """Words that are not a power-of-two number of bytes (6-bit weights in 1 byte, 20-bit states in 3
    bytes), 32-bit states and per-channel weights."""
    for name in ("synaptic", "rleaky_dense", "conv_avgpool"):
        prog, _ = compile_qat(name, target)
        mems = prog.memories
        assert mems["synapse"].width == target.weight_bits
        assert mems["state"].width == target.state.width
        assert mems["state"].bytes_per_word == -(-target.state.width // 8)
        x = spikes(20, (T, B, *MODELS[name][1]))
        assert_active(prog, x, f"{name} on {target.name}")
        assert_round_trip(prog, x, tmp_path / name, f"{name} on {target.name}")


# ------------------------------------------------------------------------------------------ golden


def tiny_graph() -> Graph:
    """Input(3) -> QLinear(W = [[1, -2, 3], [127, -127, 0]] / 2^2, b = [5, -6] / 2^2) -> QLIF(beta
    192/2^8 = 0.75, threshold [4, 6] / 2^2, subtract reset, s16 state on 2^-2) -> Output."""
    g = Graph()
    g.add("x", Input((3,), frac=0))
    w = np.array([[1, -2, 3], [127, -127, 0]], np.int64)
    g.add("fc", QLinear(w, np.array([5, -6], np.int64), weight_frac=2), ["x"])
    mem = FixedQuant(2, -32768, 32767, "floor")
    g.add("lif", QLIF(np.array(192, np.int64), 8, np.array([4, 6], np.int64), mem, in_frac=2), ["fc"])
    g.add("out", Output(), ["lif"])
    g.verify()
    return g


def test_golden_image_files(tmp_path: Path) -> None:
    """Every file of the tiny network's image equals the committed golden file, byte for byte.

    Reviewed by hand when generated (and asserted below where it can be):

    * synapse (8-bit, one row per presynaptic neuron = W.T): rows (1, 127), (-2, -127), (3, 0) ->
      ``01 7f fe 81 03 00`` (two's complement: -2 = fe, -127 = 81); .bin is those 6 bytes.
    * bias (32-bit): 5, -6 (= fffffffa), then the QLIF's graded spike value 1 at address 2 (its record's
      graded_base); .bin little-endian ``05000000 faffffff 01000000``.
    * neuron (64-bit: threshold bits 0-31, beta 32-47, alpha 48-63): ``000000c000000004`` and
      ``000000c000000006`` (beta 192 = c0, thresholds 4 and 6, alpha 0); .bin ``04000000 c0000000 ...``.
    * state: two 16-bit zero words (``0000``), 2 bytes each in .bin.
    * layers: 4 records of 96 signed 32-bit words = 384 words; the records' non-zero fields are listed
      in ``EXPECTED_RECORDS`` (input arg -1 = ffffffff, mem_lo -32768 = ffff8000).
    * .mem: a ``//`` comment line, then one word per line with ceil(width/4) hex digits ($readmemh).
    * .coe: ``;`` comment, ``memory_initialization_radix=16;``, ``memory_initialization_vector=``, words
      separated by ``,`` + newline, the last one ending in ``;``.
    * .mif: WIDTH/DEPTH/ADDRESS_RADIX=HEX/DATA_RADIX=HEX, ``CONTENT BEGIN``, ``addr : word;`` rows with
      addresses 0..5 (synapse, one hex digit) or 000..17f (layers, three), ``END;``.
    * manifest.json: format snncompile.image, version 1, compiler "snncompile <version>", target default,
      node names/sources, per memory width, depth, base_address (0, 4096, 8192, 12288, 16384: each
      memory is under 4 KiB and bases are 4 KiB aligned), bytes_per_word (4, 1, 4, 8, 2), fields, signed,
      source, file names and the sha256 of each file (recomputed below), and image.h's sha256.
    * image.h: the widths/depths as #defines, record field indices, and one C array per memory
      (uint32_t layers[384], uint8_t synapse[6], uint32_t bias[3], uint64_t neuron[2], uint16_t
      state[2]); compiled with a C compiler in :func:`test_golden_header_compiles_and_holds_the_words`.
    """
    files = image_files(tiny_graph(), load_target("default"))
    names = sorted([f"{m}.{e}" for m in MEMORIES for e in FORMATS] + ["image.h", "manifest.json"])
    assert sorted(files) == names
    if os.environ.get("SNNCOMPILE_REGEN_GOLDEN") == "1":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        GOLDEN.mkdir(parents=True)
        for name, blob in files.items():
            (GOLDEN / name).write_bytes(blob)
    assert GOLDEN.is_dir(), f"{GOLDEN} is missing; see this module's docstring to generate it"
    assert sorted(p.name for p in GOLDEN.iterdir()) == names
    for name, blob in files.items():
        golden = (GOLDEN / name).read_bytes()
        assert blob == golden, f"{name} differs from tests/golden/image/{name}:\n{blob[:400]!r}"

    g = {name: (GOLDEN / name).read_bytes() for name in names}
    # hand-checked contents
    assert g["synapse.mem"].decode().splitlines()[1:] == ["01", "7f", "fe", "81", "03", "00"]
    assert g["synapse.bin"] == bytes([0x01, 0x7F, 0xFE, 0x81, 0x03, 0x00])
    assert g["bias.mem"].decode().splitlines()[1:] == ["00000005", "fffffffa", "00000001"]
    assert g["bias.bin"] == bytes.fromhex("05000000faffffff01000000")
    assert g["neuron.mem"].decode().splitlines()[1:] == ["000000c000000004", "000000c000000006"]
    assert g["neuron.bin"] == bytes.fromhex("04000000c000000006000000c0000000")
    assert g["state.mem"].decode().splitlines()[1:] == ["0000", "0000"]
    assert g["state.bin"] == bytes(4)
    assert g["synapse.coe"].decode() == (
        "; synapse: 6 x 8 bits\nmemory_initialization_radix=16;\nmemory_initialization_vector=\n"
        "01,\n7f,\nfe,\n81,\n03,\n00;\n"
    )
    assert g["synapse.mif"].decode() == (
        "-- synapse\nWIDTH=8;\nDEPTH=6;\nADDRESS_RADIX=HEX;\nDATA_RADIX=HEX;\nCONTENT BEGIN\n"
        "0 : 01;\n1 : 7f;\n2 : fe;\n3 : 81;\n4 : 03;\n5 : 00;\nEND;\n"
    )
    layers_mif = g["layers.mif"].decode().splitlines()
    assert layers_mif[6:8] == ["000 : 00000001;", "001 : ffffffff;"] and layers_mif[-2:] == [
        "17f : 00000000;",
        "END;",
    ]
    records = np.frombuffer(g["layers.bin"], "<i4").reshape(-1, RECORD)
    got = [{f: int(v) for f, v in zip(RECORD_FIELDS, r, strict=False) if v} for r in records]
    assert got == EXPECTED_RECORDS
    assert not records[:, len(RECORD_FIELDS) :].any()  # padding words of each record are 0
    manifest = json.loads(g["manifest.json"])
    assert manifest["format"] == "snncompile.image" and manifest["version"] == 1
    assert manifest["compiler"] == f"snncompile {snncompile.__version__}" and manifest["target"] == "default"
    assert [n["name"] for n in manifest["nodes"]] == ["x", "fc", "lif", "out"]
    assert [
        (m["name"], m["width"], m["depth"], m["base_address"], m["bytes_per_word"])
        for m in manifest["memories"]
    ] == [
        ("layers", 32, 384, 0, 4),
        ("synapse", 8, 6, 4096, 1),
        ("bias", 32, 3, 8192, 4),
        ("neuron", 64, 2, 12288, 8),
        ("state", 16, 2, 16384, 2),
    ]
    for m in manifest["memories"]:
        for ext, fname in m["files"].items():
            assert fname == f"{m['name']}.{ext}"
            assert m["sha256"][ext] == hashlib.sha256(g[fname]).hexdigest()
    assert manifest["header"]["sha256"] == hashlib.sha256(g["image.h"]).hexdigest()
    neuron_fields = next(m["fields"] for m in manifest["memories"] if m["name"] == "neuron")
    assert neuron_fields == [
        {"name": "threshold", "lsb": 0, "width": 32, "signed": True},
        {"name": "beta", "lsb": 32, "width": 16, "signed": False},
        {"name": "alpha", "lsb": 48, "width": 16, "signed": False},
    ]
    header = g["image.h"].decode()
    for decl in (
        "uint32_t layers[384]",
        "uint8_t synapse[6]",
        "uint32_t bias[3]",
        "uint64_t neuron[2]",
        "uint16_t state[2]",
        "#define SNN_SYNAPSE_WIDTH 8",
        "#define SNN_LAYER_RECORD_WORDS 96",
    ):
        assert decl in header, decl


EXPECTED_RECORDS = [
    {"opcode": 1, "arg": -1, "ndim": 1, "d0": 3, "in_ndim": 1, "in0": 3},
    # arg 0, syn_base 0 and bias_base 0 are zeros (not listed); shift_base -1: no per-channel shifts
    {
        "opcode": 3,
        "ndim": 1,
        "d0": 2,
        "in_ndim": 1,
        "in0": 3,
        "weight_frac": 2,
        "syn_count": 6,
        "shift_base": -1,
    },
    {
        "opcode": 9,
        "arg": 1,
        "ndim": 1,
        "d0": 2,
        "in_ndim": 1,
        "in0": 2,
        "neurons": 2,
        "decay_frac": 8,
        "mem_frac": 2,
        "mem_lo": -32768,
        "mem_hi": 32767,
        "in_frac": 2,
        "reset_delay": 1,
        "graded_base": 2,
        "rec_bias_base": -1,
        "lif_bias_base": -1,
        "threshold_nd": 1,
        "threshold_s0": 2,
    },
    {"opcode": 2, "arg": 2, "ndim": 1, "d0": 2, "in_ndim": 1, "in0": 2},
]


def test_golden_image_decodes_and_runs_as_traced_by_hand() -> None:
    """The committed golden image is a program: decoded, it is the tiny graph, and on input (1, 1, 1)
    then zeros its membrane codes (on 2^-2) are, by hand (F = max(2 + 8, 2) = 10, floor rounding):

    t0: n0 = 1 - 2 + 3 + 5 = 7 (> 4: spike);  n1 = 127 - 127 + 0 - 6 = -6
    t1: n0 = (192*7 + 5*256 - 4*256) >> 8 = 1600 >> 8 = 6 (spike);  n1 = (192*-6 - 6*256) >> 8 = -10.5 -> -11
    t2: n0 = (192*6 + 256) >> 8 = 5.5 -> 5 (spike);  n1 = (192*-11 - 1536) >> 8 = -14.25 -> -15
    """
    g = read_image(GOLDEN)
    assert g == tiny_graph()
    x = np.zeros((3, 1, 3), np.float32)
    x[0] = 1
    run = run_integer(g, x)
    assert run.states["lif"]["mem"][:, 0].tolist() == [[7, -6], [6, -11], [5, -15]]
    assert run.spikes["lif"][:, 0].tolist() == [[1, 0], [1, 0], [1, 0]]


def test_golden_header_compiles_and_holds_the_words(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    shutil.copy(GOLDEN / "image.h", tmp_path / "image.h")
    (tmp_path / "main.c").write_text(
        textwrap.dedent(
            """
            #include <stdio.h>
            #include <inttypes.h>
            #include "image.h"
            int main(void) {
                for (int i = 0; i < SNN_SYNAPSE_DEPTH; i++) printf("%02x ", synapse[i]);
                for (int i = 0; i < SNN_BIAS_DEPTH; i++) printf("%08" PRIx32 " ", bias[i]);
                for (int i = 0; i < SNN_NEURON_DEPTH; i++) printf("%016" PRIx64 " ", neuron[i]);
                printf("%d %d %s\\n", SNN_LAYERS_DEPTH, (int)layers[SNN_REC_ARG], SNN_TARGET);
                return 0;
            }
            """
        )
    )
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-o", "main", "main.c"], cwd=tmp_path, check=True)
    out = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, check=True).stdout
    assert out.split() == [
        "01",
        "7f",
        "fe",
        "81",
        "03",
        "00",
        "00000005",
        "fffffffa",
        "00000001",
        "000000c000000004",
        "000000c000000006",
        "384",
        "-1",
        "default",
    ]


# ------------------------------------------------------------------------------------ determinism


def test_two_compiles_give_identical_files(tmp_path: Path) -> None:
    builds = []
    for i in range(2):
        prog, _ = compile_qat("rsynaptic_one_to_one_per_neuron", "zu3eg")
        write_build(prog, tmp_path / f"b{i}")
        builds.append(tmp_path / f"b{i}")
    a, b = (_tree(p) for p in builds)
    assert sorted(a) == sorted(b)
    assert "graph.json" in a and "report.json" in a and "report.txt" in a and "image/manifest.json" in a
    for name in a:
        assert a[name] == b[name], f"{name} differs between two compiles"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------- reader


@functools.cache
def base_image(key: str) -> dict[str, bytes]:
    """The files of a few images to corrupt: tiny (the golden network), conv (avg pool), unrolled (conv
    on ice40up5k), recurrent (one-to-one RSynaptic), rconv (conv recurrence)."""
    if key == "tiny":
        return image_files(tiny_graph(), load_target("default"))
    name, target = {
        "conv": ("conv_avgpool", "default"),
        "unrolled": ("conv_grouped_avgpool_single", "ice40up5k"),
        "recurrent": ("rsynaptic_one_to_one_per_neuron", "artix7-100t"),
        "rconv": ("rleaky_conv", "zu3eg"),
    }[key]
    prog, _ = compile_qat(name, target)
    return image_files(prog.graph, prog.target, prog.memories)


def materialize(files: dict[str, bytes], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (directory / name).write_bytes(blob)
    return directory


def fix_sha(directory: Path, filename: str) -> None:
    """Updates manifest.json so that ``filename``'s sha256 matches its (edited) content."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    digest = hashlib.sha256((directory / filename).read_bytes()).hexdigest()
    for entry in manifest["memories"]:
        for ext, name in entry["files"].items():
            if name == filename:
                entry["sha256"][ext] = digest
    path.write_text(json.dumps(manifest, indent=1))


def assert_clean(directory: Path) -> Graph | None:
    """read_image gives a graph or an SnnCompileError (anything else propagates and fails the test),
    quickly and without big allocations."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        return read_image(directory)
    except SnnCompileError:
        return None
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 5, f"read_image took {elapsed:.1f} s"
        assert peak < 256 << 20, f"read_image allocated {peak >> 20} MiB"


FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_DEEP = int(os.environ.get("SNNCOMPILE_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int) -> settings:
    """``examples`` derandomized examples (a quick, reproducible run); ``SNNCOMPILE_FUZZ_EXAMPLES=N``
    runs N random examples per fuzz test instead, for a deeper search."""
    return settings(FUZZ, max_examples=_DEEP or examples, derandomize=not _DEEP)


@fuzz(40)
@given(
    base=st.sampled_from(["tiny", "conv", "unrolled", "recurrent", "rconv"]),
    memory=st.sampled_from(MEMORIES),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1, max_size=4),
    fix=st.booleans(),
)
def test_fuzz_flipped_bytes(base: str, memory: str, flips: list[tuple[int, int]], fix: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = materialize(base_image(base), Path(tmp))
        data = bytearray((d / f"{memory}.bin").read_bytes())
        if not data:
            return
        for pos, xor in flips:
            data[pos % len(data)] ^= xor
        (d / f"{memory}.bin").write_bytes(bytes(data))
        if fix:
            fix_sha(d, f"{memory}.bin")
        elif bytes(data) != base_image(base)[f"{memory}.bin"]:
            with pytest.raises(ImageError, match="does not match its sha256"):
                read_image(d)
        assert_clean(d)


@fuzz(30)
@given(
    base=st.sampled_from(["tiny", "conv", "recurrent"]),
    filename=st.sampled_from([f"{m}.{e}" for m in MEMORIES for e in ("bin", "mem")] + ["manifest.json"]),
    cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
    extra=st.binary(min_size=0, max_size=16),
    fix=st.booleans(),
    ext=st.sampled_from(FORMATS),
)
def test_fuzz_truncated_and_padded_files(
    base: str,
    filename: str,
    cut: int | None,
    extra: bytes,
    fix: bool,
    ext: str,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = materialize(base_image(base), Path(tmp))
        if filename.endswith(".bin"):
            filename = filename[:-3] + ext
        data = (d / filename).read_bytes()
        data = (data[: cut % (len(data) + 1)] if cut is not None else data) + extra
        (d / filename).write_bytes(data)
        if fix and filename != "manifest.json":
            fix_sha(d, filename)
        assert_clean(d)


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 70), 1 << 70),
    st.sampled_from(
        [0, 1, 2, 7, 8, 31, 32, 33, 63, 64, 65, -1, 1 << 24, 1 << 31, (1 << 31) + 1, 1 << 62, 10**30]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(
        [
            "../x",
            "..",
            ".",
            "",
            "/etc/passwd",
            "sub/layers.bin",
            "manifest.json",
            "image.h",
            "synapse.mem",
            "layers.bin",
            "x\x00.bin",
            "bias.coe",
            "0" * 64,
        ]
    ),
    st.lists(st.integers(-3, 3), max_size=2),
    st.dictionaries(st.sampled_from(["bin", "mem", "name", "lsb"]), st.integers(-2, 70), max_size=2),
)
MEMORY_KEYS = ("width", "depth", "name", "fields", "files", "sha256", "source", "base_address")
FIELD_KEYS = ("name", "lsb", "width", "signed")


@fuzz(60)
@given(
    base=st.sampled_from(["tiny", "conv", "recurrent"]),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["top", "memory", "field", "file", "sha", "delete"]),
            st.integers(0, 10),
            st.sampled_from(
                ["version", "format", "memories", "nodes", *MEMORY_KEYS, *FIELD_KEYS, "bin", "mem"]
            ),
            JSON_VALUES,
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_fuzz_edited_manifest(base: str, edits: list[tuple[str, int, str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = materialize(base_image(base), Path(tmp))
        manifest = json.loads((d / "manifest.json").read_text())
        for where, index, key, value in edits:
            try:  # an earlier edit may have replaced what this one edits: then it does nothing
                if where == "top":
                    manifest[key] = value
                    continue
                entry = manifest["memories"][index % len(manifest["memories"])]
                if where == "memory":
                    entry[key] = value
                elif where == "field":
                    entry["fields"][index % len(entry["fields"])][key] = value
                elif where == "file":
                    entry["files"][key if key in ("bin", "mem") else "bin"] = value
                elif where == "sha":
                    entry["sha256"][key if key in ("bin", "mem") else "bin"] = value
                else:
                    entry.pop(key, None)
            except (TypeError, KeyError, IndexError, ZeroDivisionError, AttributeError):
                pass
        (d / "manifest.json").write_text(json.dumps(manifest))
        assert_clean(d)


RECORD_VALUES = st.one_of(
    st.integers(-2, 4),
    st.integers(-(1 << 31), (1 << 31) - 1),
    st.sampled_from(
        [0, 1, -1, 2, 3, 4, 10, 11, 96, 1 << 12, 1 << 24, (1 << 24) + 1, (1 << 31) - 1, -(1 << 31)]
    ),
)


@fuzz(70)
@given(
    base=st.sampled_from(["tiny", "conv", "unrolled", "recurrent", "rconv"]),
    writes=st.lists(
        st.tuples(
            st.integers(0, 63),  # record (modulo the number of records)
            st.one_of(st.sampled_from(RECORD_FIELDS), st.integers(len(RECORD_FIELDS), RECORD - 1)),
            RECORD_VALUES,
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_corrupted_layer_table(base: str, writes: list[tuple[int, str | int, int]]) -> None:
    """Random int32 values in random record slots, written in every format with the sha256 updated so
    that the decoder really sees them."""
    with tempfile.TemporaryDirectory() as tmp:
        d = materialize(base_image(base), Path(tmp))
        words = np.frombuffer((d / "layers.bin").read_bytes(), "<i4").copy().reshape(-1, RECORD)
        for rec, where, value in writes:
            words[rec % len(words), RECORD_FIELDS.index(where) if isinstance(where, str) else where] = value
        rewrite_memory(d, "layers", words.ravel().astype("<u4"))
        assert_clean(d)


# ----------------------------------------------------------------------------- pinned reader errors


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    d = tmp_path / "image"
    d.mkdir()
    write_image(tiny_graph(), load_target("default"), d)
    return d


def edit_manifest(d: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((d / "manifest.json").read_text())
    fn(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))


def memory_entry(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in manifest["memories"] if m["name"] == name)


def write_records(d: Path, fn: Callable[[np.ndarray], None]) -> None:
    words = np.frombuffer((d / "layers.bin").read_bytes(), "<i4").copy().reshape(-1, RECORD)
    fn(words)
    rewrite_memory(d, "layers", words.ravel().astype("<u4"))


def slot(name: str) -> int:
    return RECORD_FIELDS.index(name)


def test_missing_file_is_refused(tiny_dir: Path) -> None:
    (tiny_dir / "synapse.bin").unlink()
    with pytest.raises(ImageError) as e:
        read_image(tiny_dir)
    assert (
        str(e.value)
        == f"memory 'synapse': cannot read {str(tiny_dir / 'synapse.bin')!r}: No such file or directory"
    )


def test_missing_manifest_or_directory_is_refused(tiny_dir: Path) -> None:
    with pytest.raises(ImageError, match=r"has no manifest.json \(not an snncompile image\)"):
        read_image(tiny_dir / "nowhere")
    (tiny_dir / "manifest.json").unlink()
    with pytest.raises(ImageError, match=r"has no manifest.json \(not an snncompile image\)"):
        read_image(tiny_dir)


def test_bad_checksum_is_refused(tiny_dir: Path) -> None:
    data = bytearray((tiny_dir / "synapse.bin").read_bytes())
    data[2] ^= 0x01
    (tiny_dir / "synapse.bin").write_bytes(bytes(data))
    with pytest.raises(ImageError) as e:
        read_image(tiny_dir)
    assert str(e.value) == (
        "memory 'synapse': synapse.bin does not match its sha256 (corrupt or edited): "
        "word 2 is 0xff in synapse.bin but 0xfe in synapse.mem"
    )


def test_truncated_memory_is_refused(tiny_dir: Path) -> None:
    (tiny_dir / "synapse.bin").write_bytes((tiny_dir / "synapse.bin").read_bytes()[:5])
    fix_sha(tiny_dir, "synapse.bin")
    with pytest.raises(ImageError) as e:
        read_image(tiny_dir)
    assert str(e.value) == (
        "memory 'synapse': 5 bytes for 6 words of 1 bytes (expected 6): truncated or padded"
    )


def test_truncated_mem_file_is_refused(tiny_dir: Path) -> None:
    lines = (tiny_dir / "neuron.mem").read_text().splitlines()
    (tiny_dir / "neuron.mem").write_text("\n".join(lines[:-1]) + "\n")
    fix_sha(tiny_dir, "neuron.mem")
    with pytest.raises(ImageError) as e:
        read_image(tiny_dir)
    assert str(e.value) == "memory 'neuron': the .mem file has 1 words, the manifest says 2"


def test_mem_word_out_of_range_is_refused(tiny_dir: Path) -> None:
    (tiny_dir / "synapse.mem").write_text("01\n7f\n1fe\n81\n03\n00\n")
    fix_sha(tiny_dir, "synapse.mem")
    with pytest.raises(ImageError, match=r"^memory 'synapse': a .mem word is wider than 8 bits$"):
        read_image(tiny_dir)
    (tiny_dir / "synapse.mem").write_text("01\n7f\nzz\n81\n03\n00\n")
    fix_sha(tiny_dir, "synapse.mem")
    with pytest.raises(
        ImageError, match=r"^memory 'synapse': the .mem file holds a word that is not hexadecimal$"
    ):
        read_image(tiny_dir)


def test_bin_word_with_bits_above_its_width_is_refused() -> None:
    fields = (Field("weight", 0, 6, True),)
    assert MemoryImage.from_bin("synapse", 6, 2, b"\x3f\x01", fields).unpack("weight").tolist() == [-1, 1]
    with pytest.raises(ImageError, match=r"^memory 'synapse': a word has bits above its width 6$"):
        MemoryImage.from_bin("synapse", 6, 2, b"\x40\x01", fields)


def test_layer_table_field_out_of_range_is_refused(tiny_dir: Path) -> None:
    write_records(tiny_dir, lambda w: w[2].__setitem__(slot("reset"), 7))
    with pytest.raises(ImageError) as e:
        read_image(tiny_dir)
    assert str(e.value) == "layer 2 (lif): reset code 7 is not one of 0..2 (['subtract', 'zero', 'none'])"


def test_layer_table_address_out_of_range_is_refused(tiny_dir: Path) -> None:
    write_records(tiny_dir, lambda w: w[1].__setitem__(slot("syn_base"), 5))
    with pytest.raises(ImageError) as e:
        read_image(tiny_dir)
    assert str(e.value) == "layer 1 (fc): synapse[5:11] is outside the synapse memory (6 words)"


def test_unknown_opcode_is_refused(tiny_dir: Path) -> None:
    write_records(tiny_dir, lambda w: w[1].__setitem__(slot("opcode"), 99))
    with pytest.raises(ImageError) as e:
        read_image(tiny_dir)
    assert str(e.value) == "layer 1 (fc): opcode 99 is not one of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"


def test_unknown_version_is_refused(tiny_dir: Path) -> None:
    edit_manifest(tiny_dir, lambda m: m.__setitem__("version", 2))
    with pytest.raises(ImageError) as e:
        read_image(tiny_dir)
    assert str(e.value) == "image version 2 is not supported (this snncompile reads 1)"


def test_other_manifest_errors_are_pinned(tiny_dir: Path) -> None:
    cases: list[tuple[Callable[[dict[str, Any]], None], str]] = [
        (lambda m: m.__setitem__("format", "other"), r"manifest is not an snncompile.image manifest$"),
        (
            lambda m: memory_entry(m, "synapse")["files"].__setitem__("bin", "../x"),
            r"^manifest: memory 'synapse' file name '../x' is not a plain file name$",
        ),
        (
            lambda m: memory_entry(m, "synapse").__setitem__("width", 65),
            r"^manifest: memory 'synapse' width 65 is not 1..64$",
        ),
        (
            lambda m: memory_entry(m, "synapse").__setitem__("depth", 1 << 40),
            r"^manifest: memory 'synapse' depth 1099511627776 is out of range$",
        ),
        (
            lambda m: memory_entry(m, "neuron")["fields"][1].__setitem__("lsb", 33),
            r"^manifest: memory 'neuron' fields .* differ from image version 1$",
        ),
        (
            lambda m: memory_entry(m, "synapse").__setitem__("name", "weights"),
            r"^manifest: unknown memory 'weights'; expected \['layers', 'synapse', 'bias', 'neuron', 'state'\]$",
        ),
        (lambda m: m["memories"].pop(1), r"^the image lacks the memories \['synapse'\]$"),
    ]
    original = (tiny_dir / "manifest.json").read_text()
    for fn, pattern in cases:
        (tiny_dir / "manifest.json").write_text(original)
        edit_manifest(tiny_dir, fn)
        with pytest.raises(ImageError, match=pattern):
            read_image(tiny_dir)


def test_huge_depth_or_shapes_are_refused_without_allocating(tmp_path: Path) -> None:
    """A corrupted depth or shape must be refused before anything that large is allocated."""
    files = image_files(tiny_graph(), load_target("default"))
    d = materialize(files, tmp_path / "bin")
    edit_manifest(d, lambda m: memory_entry(m, "synapse").__setitem__("depth", 1 << 31))
    assert assert_clean(d) is None
    fields = (Field("weight", 0, 8, True),)
    for ext, message in (  # the text readers must not trust the depth either
        ("mem", "the .mem file has 6 words, the manifest says 2147483648"),
        ("coe", "the .coe file has 6 words, the manifest says 2147483648"),
        ("mif", r"the .mif header or end is not \['WIDTH=8;', 'DEPTH=2147483648;'"),
    ):
        start = time.perf_counter()
        with pytest.raises(ImageError, match=message):
            MemoryImage.parse(ext, "synapse", 8, 1 << 31, files[f"synapse.{ext}"], fields, "synapse weights")
        assert time.perf_counter() - start < 1

    def huge_input(w: np.ndarray) -> None:
        w[0, slot("ndim")], w[0, slot("d0")], w[0, slot("d1")] = 2, 1 << 24, 1 << 24

    for i, corrupt in enumerate(
        [
            huge_input,
            lambda w: w[1].__setitem__(slot("d0"), 1 << 24),  # QLinear 3 -> 16,777,216
            lambda w: w[2].__setitem__(slot("neurons"), 1 << 30),
            lambda w: w[2].__setitem__(slot("graded_nd"), 3),
            lambda w: [
                w[2].__setitem__(slot(f"graded_{k}"), 3 if k == "nd" else 1 << 24)
                for k in ("nd", "s0", "s1", "s2")
            ],
        ]
    ):
        d = materialize(files, tmp_path / f"rec{i}")
        write_records(d, corrupt)
        assert assert_clean(d) is None, i


# The next tests pin crashes that the fuzzers above found: each input must give an SnnCompileError.


def test_manifest_with_infinite_field_lsb_is_refused_cleanly(tiny_dir: Path) -> None:
    # json.dumps writes float('inf') as Infinity, which json.loads reads back: int(inf) -> OverflowError
    edit_manifest(tiny_dir, lambda m: memory_entry(m, "layers")["fields"][0].__setitem__("lsb", float("inf")))
    with pytest.raises(ImageError, match="malformed fields"):
        read_image(tiny_dir)


def test_file_name_with_a_nul_byte_is_refused_cleanly(tiny_dir: Path) -> None:
    # Path.read_bytes raises ValueError (not OSError) for an embedded NUL
    edit_manifest(
        tiny_dir, lambda m: memory_entry(m, "synapse")["files"].__setitem__("bin", "syn\x00apse.bin")
    )
    with pytest.raises(ImageError, match="synapse"):
        read_image(tiny_dir)


def test_deeply_nested_manifest_is_refused_cleanly(tiny_dir: Path) -> None:
    (tiny_dir / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)  # json.loads: RecursionError
    with pytest.raises(ImageError, match="manifest"):
        read_image(tiny_dir)


def test_manifest_with_a_huge_integer_literal_is_refused_cleanly(tiny_dir: Path) -> None:
    # json.loads raises a plain ValueError (int max str digits), not JSONDecodeError
    text = (tiny_dir / "manifest.json").read_text().replace('"version": 1', '"version": 1' + "0" * 5000)
    (tiny_dir / "manifest.json").write_text(text)
    with pytest.raises(ImageError, match="manifest"):
        read_image(tiny_dir)


@pytest.mark.parametrize(
    ("base", "record", "field", "value"),
    [
        ("conv", 3, "sh", 0),  # conv_avgpool's AvgPool2d: ZeroDivisionError in the shape inference
        ("conv", 3, "sw", 0),
        ("unrolled", 2, "kh", 0),  # AvgPool2d over 0 elements: ValueError (negative shift) in pool_shift
    ],
)
def test_pool_geometry_out_of_range_in_the_layer_table_is_refused_cleanly(
    base: str, record: int, field: str, value: int, tmp_path: Path
) -> None:
    d = materialize(base_image(base), tmp_path / "image")
    assert (
        np.frombuffer((d / "layers.bin").read_bytes(), "<i4").reshape(-1, RECORD)[record, 0] == 5
    )  # avgpool
    write_records(d, lambda w: w[record].__setitem__(slot(field), value))
    with pytest.raises(SnnCompileError):
        read_image(d)


def _read_and_run(d: Path, x: np.ndarray) -> None:
    """An image is refused (SnnCompileError) or decodes to a program that runs; nothing else."""
    try:
        graph = read_image(d)
        run_integer(graph, x)
    except SnnCompileError:
        pass


@pytest.mark.parametrize(
    ("base", "record", "field", "value"),
    [
        ("tiny", 2, "decay_frac", -3),  # accepted by the reader; round_shift then raises FormatError
        ("tiny", 2, "mem_frac", -(1 << 31)),
        ("conv", 3, "dh", 0),  # AvgPool ignores dilation; see the maxpool case below
        ("unrolled", 2, "sh", -1),  # AvgPool2d with a negative stride
    ],
)
def test_accepted_corruptions_run_or_are_refused(
    base: str, record: int, field: str, value: int, tmp_path: Path
) -> None:
    d = materialize(base_image(base), tmp_path / "image")
    write_records(d, lambda w: w[record].__setitem__(slot(field), value))
    in_shape = {"tiny": (3,), "conv": (1, 8, 8), "unrolled": (2, 8, 8)}[base]
    _read_and_run(d, spikes(1, (3, 1, *in_shape)))


def test_maxpool_with_zero_dilation_is_refused_or_runs(tmp_path: Path) -> None:
    prog, _ = compile_qat("conv_maxpool", "default")
    d = tmp_path / "image"
    d.mkdir()
    write_image(prog.graph, prog.target, d)
    records = np.frombuffer((d / "layers.bin").read_bytes(), "<i4").reshape(-1, RECORD)
    (index,) = np.nonzero(records[:, 0] == 6)[0]  # opcode 6 = MaxPool2d
    write_records(d, lambda w: w[index].__setitem__(slot("dw"), 0))
    _read_and_run(d, spikes(1, (3, 1, 1, 8, 8)))


def test_encoder_refuses_values_its_fields_cannot_hold() -> None:
    g = tiny_graph()
    big = g.with_op(
        "fc", QLinear(np.array([[1, -2, 3], [200, -127, 0]], np.int64), np.array([5, -6]), weight_frac=2)
    )
    with pytest.raises(ImageError) as e:
        encode(big, load_target("default"))
    assert str(e.value) == (
        "memory 'synapse': field weight holds 200, outside its 8-bit signed range [-128, 127] "
        "(source synapse weights)"
    )


# ---------------------------------------------------------------------------------------------- CLI

MODEL_SOURCE = textwrap.dedent(
    """
    import snntorch as snn
    import torch
    from torch import nn

    from snncompile.quant import prepare_qat


    def build_float():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(20, 16),
            snn.Leaky(beta=0.9, init_hidden=True),
            nn.Linear(16, 4),
            snn.Leaky(beta=0.9, init_hidden=True, output=True),
        )


    def build():
        return prepare_qat(build_float(), "artix7-100t")


    def wide():
        torch.manual_seed(0)
        return prepare_qat(nn.Sequential(nn.Linear(1100, 4), snn.Leaky(beta=0.9, init_hidden=True)))
    """
)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model file (factories returning QAT models), a "trained" QAT checkpoint, an input, and the
    QAT torch model's own spikes and output membrane on it (the reference)."""
    d = tmp_path_factory.mktemp("cli")
    (d / "model.py").write_text(MODEL_SOURCE)
    namespace: dict[str, Any] = {}
    exec(MODEL_SOURCE, namespace)
    net = namespace["build_float"]()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    q = prepare_qat(net, "artix7-100t")
    torch.save(q.state_dict(), d / "q.pt")
    x = (np.random.default_rng(0).random((20, 3, 20)) < 0.3).astype(np.uint8)
    np.savez(d / "x.npz", x=x)
    ref = snntorch_reference(q, x)
    np.savez(d / "ref.npz", spikes=ref.output, hidden=ref.spikes["1"], mem=ref.states["3"]["mem"])
    for s in (ref.output, ref.spikes["1"]):
        assert 0 < s.mean() < 1, "degenerate reference"
    snn.SpikingNeuron.instances.clear()
    return {"dir": d, "model": d / "model.py", "ckpt": d / "q.pt", "x": d / "x.npz", "ref": d / "ref.npz"}


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def compile_cli(
    files: dict[str, Path], build: Path, target: str = "artix7-100t", factory: str = "build"
) -> Result:
    checkpoint = ["--checkpoint", files["ckpt"]] if factory == "build" else []
    return invoke("compile", f"{files['model']}:{factory}", *checkpoint, "--target", target, "-o", build)


def hidden_entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_cli_compile_writes_the_whole_build(cli_files: dict[str, Path], tmp_path: Path) -> None:
    build = tmp_path / "BUILD"
    result = compile_cli(cli_files, build)
    assert_ok(result)
    assert result.stdout.rstrip().endswith(f"wrote {build}")
    expected = {f"image/{m}.{e}" for m in MEMORIES for e in FORMATS}
    expected |= {"image/image.h", "image/manifest.json", "graph.json", "report.json", "report.txt"}
    assert set(_tree(build)) == expected
    assert hidden_entries(tmp_path) == []
    manifest = json.loads((build / "image" / "manifest.json").read_text())
    assert manifest["target"] == "artix7-100t"
    report = json.loads((build / "report.json").read_text())
    assert report["target"] == "artix7-100t" and report["exact"] is True
    assert [r["resource"] for r in report["resources"]][:3] == ["cores", "fan-in", "fan-out"]
    assert "bram36 banks" in (build / "report.txt").read_text()
    # graph.json and the image describe the same program
    assert read_image(build / "image") == snncompile.load_graph(build / "graph.json")


def test_cli_simulate_build_equals_the_qat_model(cli_files: dict[str, Path], tmp_path: Path) -> None:
    build = tmp_path / "BUILD"
    assert_ok(compile_cli(cli_files, build))
    y = tmp_path / "y.npz"
    assert_ok(invoke("simulate", build, "--input", cli_files["x"], "-o", y))
    out, ref = np.load(y), np.load(cli_files["ref"])
    assert out["spikes"].dtype == np.uint8
    assert np.array_equal(out["spikes"], ref["spikes"].astype(np.uint8))
    assert np.array_equal(out["membrane"], ref["mem"].astype(np.float64))
    # what is simulated is the image: a corrupted image is refused
    blob = bytearray((build / "image" / "synapse.bin").read_bytes())
    blob[0] ^= 0x10
    (build / "image" / "synapse.bin").write_bytes(bytes(blob))
    line = error_line(invoke("simulate", build, "--input", cli_files["x"], "-o", tmp_path / "z.npz"))
    assert line.startswith(
        "Error: memory 'synapse': synapse.bin does not match its sha256 (corrupt or edited): word 0 is 0x"
    )
    assert not (tmp_path / "z.npz").exists()


def test_cli_inspect_build(cli_files: dict[str, Path], tmp_path: Path) -> None:
    build = tmp_path / "BUILD"
    assert_ok(compile_cli(cli_files, build))
    result = invoke("inspect", build)
    assert_ok(result)
    assert "target artix7-100t" in result.stdout and "%lif_3 = qlif" in result.stdout


@pytest.mark.parametrize(
    ("target", "factory", "message"),
    [
        (
            "nope",
            "build",
            "Error: unknown target 'nope'; available: ['artix7-100t', 'asic-generic', 'default', "
            "'ice40up5k', 'zu3eg'] (or a path to a .toml file)",
        ),
        (
            "ice40up5k",
            "wide",
            "Error: fan-in: node 'linear_0' sums 1,100 synapses per neuron; ice40up5k allows 1,024",
        ),
    ],
)
def test_cli_failed_compile_leaves_nothing(
    cli_files: dict[str, Path], tmp_path: Path, target: str, factory: str, message: str
) -> None:
    build = tmp_path / "BUILD"
    assert error_line(compile_cli(cli_files, build, target, factory)) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_compile_over_an_existing_build_replaces_it_whole(
    cli_files: dict[str, Path], tmp_path: Path
) -> None:
    build = tmp_path / "BUILD"
    assert_ok(compile_cli(cli_files, build, "artix7-100t"))
    (build / "stale.txt").write_text("old")
    (build / "image" / "stale.mem").write_text("00\n")
    assert_ok(compile_cli(cli_files, build, "zu3eg"))
    assert "stale.txt" not in _tree(build) and "image/stale.mem" not in _tree(build)
    assert json.loads((build / "image" / "manifest.json").read_text())["target"] == "zu3eg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BUILD"]
    # a failed compile over it leaves the old build untouched
    before = _tree(build)
    error_line(compile_cli(cli_files, build, "ice40up5k", "wide"))
    assert _tree(build) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BUILD"]


def test_cli_refuses_to_overwrite_a_directory_that_is_not_a_build(
    cli_files: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    line = error_line(compile_cli(cli_files, other))
    assert line == f"Error: {str(other)!r} exists and is not an snncompile build; choose another -o"
    assert _tree(other) == {"cat.jpg": b"meow"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_a_failure_while_writing_leaves_the_old_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prog, _ = compile_qat("mlp_subtract", "default")
    build = tmp_path / "BUILD"
    write_build(prog, build)
    before = _tree(build)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("snncompile.build.save_graph", boom)
    with pytest.raises(OSError, match="No space left"):
        write_build(prog, build)
    assert _tree(build) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BUILD"]
    shutil.rmtree(build)
    with pytest.raises(OSError, match="No space left"):
        write_build(prog, build)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_compiles_are_deterministic_across_processes(cli_files: dict[str, Path], tmp_path: Path) -> None:
    """One compile in this process, one in a fresh interpreter with another hash seed: same bytes."""
    assert_ok(compile_cli(cli_files, tmp_path / "a"))
    script = Path(sys.executable).parent / "snncompile"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "snncompile.cli"]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [
            *cmd,
            "-q",
            "compile",
            f"{cli_files['model']}:build",
            "--checkpoint",
            str(cli_files["ckpt"]),
            "--target",
            "artix7-100t",
            "-o",
            str(tmp_path / "b"),
        ],
        check=True,
        env=env,
        capture_output=True,
        cwd=tmp_path,
    )
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs between two compiles"
    assert not re.search(rb"/tmp|pytest", a["report.json"]), "the report must not depend on the path"
