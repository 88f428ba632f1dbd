"""Tampered builds: every edited word, in every memory and every file format, is refused by every
command that reads a build (``simulate``, ``inspect``, ``rtl-sim``), with one line naming the memory
(or file), the word and both values; or, when the edit is consistent everywhere (every format, the
header and every sha256 updated), it is a different but well-formed program that both engines run
identically.

Two builds are tampered with: a two-layer Leaky MLP on artix7-100t, and a strided, padded conv stored
unrolled into dense rows on ice40up5k (no conv engine), whose structurally-zero words (input/output
pairs no kernel tap connects) the decoder never reads as weights: they are checked by re-deriving every
row from the decoded kernel. The expected words and values are computed here from the files
themselves, not from the reader.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import Result
from conftest import error_line, invoke, require_tool
from snncompile.backends.image import Field, MemoryImage
from snncompile.backends.image.layout import RECORD, RECORD_FIELDS
from snncompile.backends.image.memory import FORMATS

MEMORIES = ("layers", "synapse", "bias", "neuron", "state")
COMMANDS = ("simulate", "inspect", "rtl-sim")

MODELS = textwrap.dedent(
    """
    import snntorch as snn
    import torch
    from torch import nn

    from snncompile.quant import prepare_qat


    def mlp():
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Linear(12, 10), snn.Leaky(beta=0.9, init_hidden=True),
            nn.Linear(10, 4), snn.Leaky(beta=0.8, init_hidden=True),
        )
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(3.0)
        return prepare_qat(net, "artix7-100t")


    def conv():
        torch.manual_seed(1)
        net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), snn.Leaky(beta=0.9, init_hidden=True))
        with torch.no_grad():
            net[0].weight.mul_(3.0)
        return prepare_qat(net, "ice40up5k")
    """
)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tamper")
    (d / "models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    np.savez(d / "x_mlp.npz", x=(rng.random((8, 2, 12)) < 0.4).astype(np.uint8))
    np.savez(d / "x_conv.npz", x=(rng.random((8, 2, 1, 6, 6)) < 0.4).astype(np.uint8))
    out = {"dir": d}
    for name, target, shape in (("mlp", "artix7-100t", "12"), ("conv", "ice40up5k", "1,6,6")):
        result = invoke("compile", f"{d / 'models.py'}:{name}", "--target", target, "--input-shape", shape,
                        "-o", d / name)  # fmt: skip
        assert result.exit_code == 0, result.output
        out[name] = d / name
    return out


def fresh(builds: dict[str, Path], name: str, tmp_path: Path) -> Path:
    build = tmp_path / name
    shutil.copytree(builds[name], build)
    return build


def run_command(command: str, build: Path, builds: dict[str, Path], name: str) -> Result:
    if command == "inspect":
        return invoke("inspect", build)
    x = builds["dir"] / f"x_{name}.npz"
    return invoke(command, build, "--input", x, "-o", build.parent / f"y_{command}.npz")


def manifest_entry(image: Path, memory: str) -> dict[str, Any]:
    manifest = json.loads((image / "manifest.json").read_text())
    return next(m for m in manifest["memories"] if m["name"] == memory)


def read_memory(image: Path, memory: str, ext: str) -> MemoryImage:
    e = manifest_entry(image, memory)
    fields = tuple(Field(f["name"], f["lsb"], f["width"], f["signed"]) for f in e["fields"])
    data = (image / f"{memory}.{ext}").read_bytes()
    return MemoryImage.parse(ext, memory, e["width"], e["depth"], data, fields, e["source"])


def write_memory(image: Path, memory: str, exts: tuple[str, ...], words: np.ndarray, fix_sha: bool) -> None:
    """Writes ``words`` into the ``exts`` files of ``memory`` (the others keep the original words)."""
    m = read_memory(image, memory, "bin")
    edited = MemoryImage(memory, m.width, words.astype(np.uint64), m.fields, m.source)
    path = image / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = next(e for e in manifest["memories"] if e["name"] == memory)
    for ext in exts:
        blob = edited.render(ext)
        (image / f"{memory}.{ext}").write_bytes(blob)
        entry["sha256"][ext] = hashlib.sha256(blob).hexdigest()
    if fix_sha:
        path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def rewrite_header(image: Path, old: str, new: str) -> None:
    """Replaces one C literal in image.h and updates its sha256 (the header holds every word too)."""
    text = (image / "image.h").read_text()
    assert text.count(old) >= 1
    (image / "image.h").write_text(text.replace(old, new, 1))
    manifest = json.loads((image / "manifest.json").read_text())
    manifest["header"]["sha256"] = hashlib.sha256((image / "image.h").read_bytes()).hexdigest()
    (image / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def word_to_edit(image: Path, memory: str) -> int:
    """A word that matters: the first weight, bias, threshold, initial state; the opcode of layer 1."""
    return RECORD if memory == "layers" else 0


def check_command(command: str, build: Path, builds: dict[str, Path], name: str) -> str:
    if command == "rtl-sim":
        require_tool("verilator", "verilator")
    line = error_line(run_command(command, build, builds, name)).removeprefix("Error: ")
    assert not (build.parent / f"y_{command}.npz").exists()
    return line


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("fix_sha", [False, True], ids=["sha-stale", "sha-updated"])
@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("memory", MEMORIES)
def test_one_edited_word_in_one_format_is_refused(
    memory: str, ext: str, fix_sha: bool, command: str, builds: dict[str, Path], tmp_path: Path
) -> None:
    build = fresh(builds, "mlp", tmp_path)
    image = build / "image"
    original = read_memory(image, memory, "bin")
    w = word_to_edit(image, memory)
    words = original.words.copy()
    words[w] ^= np.uint64(1)
    write_memory(image, memory, (ext,), words, fix_sha)
    digits = (original.width + 3) // 4
    was, now = f"0x{int(original.words[w]):0{digits}x}", f"0x{int(words[w]):0{digits}x}"
    line = check_command(command, build, builds, "mlp")
    if not fix_sha:
        ref = "mem" if ext == "bin" else "bin"
        assert line == (
            f"memory '{memory}': {memory}.{ext} does not match its sha256 (corrupt or edited): "
            f"word {w} is {now} in {memory}.{ext} but {was} in {memory}.{ref}"
        )
    elif ext == "bin":  # .bin is intact by its sha256, so it is the reference the .mem is checked against
        assert (
            line
            == f"memory '{memory}' word {w} is {was} in {memory}.mem but {now} in {memory}.bin (its formats disagree)"
        )
    else:
        assert (
            line
            == f"memory '{memory}' word {w} is {now} in {memory}.{ext} but {was} in {memory}.bin (its formats disagree)"
        )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_nonzero_initial_state_written_everywhere_is_refused(
    command: str, builds: dict[str, Path], tmp_path: Path
) -> None:
    """The program starts every state at 0 (the RTL would load the state memory, the simulator would
    not): a state word of 1 in every format, with every sha256 updated, is refused."""
    build = fresh(builds, "mlp", tmp_path)
    image = build / "image"
    words = read_memory(image, "state", "bin").words.copy()
    words[3] = 1
    write_memory(image, "state", FORMATS, words, fix_sha=True)
    assert check_command(command, build, builds, "mlp") == (
        "memory 'state' word 3 (layer 2 (lif_1) initial state (all 0)) is 0x0001; the program it decodes "
        "to has 0x0000 there"
    )


def _structural_zero(image: Path) -> tuple[int, int]:
    """The synapse address of an unrolled-conv word that no kernel tap connects, and the rows' base."""
    records = read_memory(image, "layers", "bin").unpack("word").reshape(-1, RECORD)
    (rec,) = [r for r in records if r[RECORD_FIELDS.index("opcode")] == 4]
    base = int(rec[RECORD_FIELDS.index("syn_base")])
    assert rec[RECORD_FIELDS.index("conv_unrolled")] == 1
    # input pixel (0, 5, 5) and output (0, 0, 0): stride 2, padding 1, 3x3 kernel reaches rows/cols
    # 0..1 of the input from output (0, 0) only, so this pair is a structural zero
    n_out = 2 * 3 * 3
    row, col = 5 * 6 + 5, 0
    assert read_memory(image, "synapse", "bin").unpack("weight")[base + row * n_out + col] == 0
    return base + row * n_out + col, base


@pytest.mark.parametrize("command", COMMANDS)
def test_an_edited_structural_zero_of_an_unrolled_conv_is_refused(
    command: str, builds: dict[str, Path], tmp_path: Path
) -> None:
    build = fresh(builds, "conv", tmp_path)
    image = build / "image"
    address, _ = _structural_zero(image)
    words = read_memory(image, "synapse", "bin").words.copy()
    words[address] = 0x05
    write_memory(image, "synapse", FORMATS, words, fix_sha=True)
    assert check_command(command, build, builds, "conv") == (
        f"memory 'synapse' word {address} (layer 1 (conv2d_0) unrolled conv rows (re-derived from the "
        "kernel)) is 0x05; the program it decodes to has 0x00 there"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unused_record_field_is_refused(command: str, builds: dict[str, Path], tmp_path: Path) -> None:
    build = fresh(builds, "mlp", tmp_path)
    image = build / "image"
    words = read_memory(image, "layers", "bin").words.copy()
    slot = len(RECORD_FIELDS) + 2
    words[RECORD + slot] = 7
    write_memory(image, "layers", FORMATS, words, fix_sha=True)
    assert check_command(command, build, builds, "mlp") == (
        f"memory 'layers' word {RECORD + slot} (layer 1 (linear_0) layer record, field {slot} (unused)) is "
        "0x00000007; the program it decodes to has 0x00000000 there"
    )


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("fix_sha", [False, True], ids=["sha-stale", "sha-updated"])
def test_an_edited_header_is_refused(
    fix_sha: bool, command: str, builds: dict[str, Path], tmp_path: Path
) -> None:
    build = fresh(builds, "mlp", tmp_path)
    image = build / "image"
    first = int(read_memory(image, "synapse", "bin").words[0])
    old, new = f"  0x{first:02x},", f"  0x{first ^ 1:02x},"
    if fix_sha:
        rewrite_header(image, old, new)
    else:
        text = (image / "image.h").read_text()
        (image / "image.h").write_text(text.replace(old, new, 1))
    line = check_command(command, build, builds, "mlp")
    # the CLI prints one line with runs of whitespace collapsed
    assert re.fullmatch(
        rf"image\.h line \d+ is b' ?{new.strip()}', the verified memories give b' ?{old.strip()}' \(edited\)",
        line,
    ), line


@pytest.mark.parametrize("command", COMMANDS)
def test_an_edited_manifest_is_refused(command: str, builds: dict[str, Path], tmp_path: Path) -> None:
    """Memory files untouched, sha256s intact: the manifest's own facts (here a base address) must be
    what the writer makes of the verified words."""
    build = fresh(builds, "mlp", tmp_path)
    path = build / "image" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["memories"][1]["base_address"] += 4096
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    want = manifest["memories"][1]["base_address"] - 4096
    assert check_command(command, build, builds, "mlp") == (
        f"manifest.json['memories'][1]['base_address'] is {want + 4096}, expected {want} (the verified "
        "memories and node names give that)"
    )


def test_a_report_naming_another_target_is_refused(builds: dict[str, Path], tmp_path: Path) -> None:
    """The cycle model comes from the report's target: it must be the image's."""
    build = fresh(builds, "mlp", tmp_path)
    report = json.loads((build / "report.json").read_text())
    report["target"] = "zu3eg"
    (build / "report.json").write_text(json.dumps(report))
    for command in ("simulate", "inspect"):
        assert check_command(command, build, builds, "mlp") == (
            f"build {str(build)!r}: report.json names target 'zu3eg', its image was built for 'artix7-100t'"
        )


def test_a_consistent_edit_everywhere_is_a_program_both_engines_run_alike(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    """A weight changed in every format, in image.h and in every sha256 is a different, well-formed
    program: simulate and rtl-sim both run it, and give the same spikes."""
    require_tool("verilator", "verilator")
    build = fresh(builds, "mlp", tmp_path)
    image = build / "image"
    words = read_memory(image, "synapse", "bin").words.copy()
    header = (image / "image.h").read_text()
    first = header.index("\n", header.index("synapse[")) + 1  # the array's word lines: "  0xWW,\n"
    for j in range(10):  # input 0's whole row (W.T row 0, 10 hidden neurons) to the largest weight
        at = first + 8 * j
        assert header[at : at + 8] == f"  0x{int(words[j]):02x},\n"
        header = header[:at] + "  0x7f,\n" + header[at + 8 :]
        words[j] = 0x7F
    (image / "image.h").write_text(header)
    write_memory(image, "synapse", FORMATS, words, fix_sha=True)
    manifest = json.loads((image / "manifest.json").read_text())
    manifest["header"]["sha256"] = hashlib.sha256((image / "image.h").read_bytes()).hexdigest()
    (image / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    x = builds["dir"] / "x_mlp.npz"
    for command, b in (("simulate", builds["mlp"]), ("simulate", build), ("rtl-sim", build)):
        result = invoke(command, b, "--input", x, "-o", tmp_path / f"{command}_{b.name}_{b.parent.name}.npz")
        assert result.exit_code == 0, result.output
    sim = np.load(tmp_path / f"simulate_mlp_{build.parent.name}.npz")["spikes"]
    rtl = np.load(tmp_path / f"rtl-sim_mlp_{build.parent.name}.npz")["spikes"]
    original = np.load(tmp_path / f"simulate_mlp_{builds['mlp'].parent.name}.npz")["spikes"]
    assert np.array_equal(sim.astype(np.uint8), rtl)
    assert sim.any() and not np.array_equal(sim, original)  # the edit is what runs
