"""Driver of the reference RTL core: support check, Verilator build cache, co-simulation, golden
vectors and Yosys synthesis.

The core (``hw_models/rtl/snn_core.sv``) is one design programmed by the image: the driver never
generates RTL per network. It only chooses the core's parameters (memory widths from the manifest,
``lanes``/``update_lanes``/``pipeline_depth`` from the target, memory depths rounded up to powers of two
so that one Verilator build serves many images) and passes ``.mem`` files as plusargs: written, into
the run's own temporary directory, from the words :func:`~snncompile.backends.image.load_image`
verified, so the core runs exactly the program the simulator decodes (never unchecked files).

Supported subset (anything else is refused by :func:`check_supported` before simulation, naming the
layer and the feature): ``Input`` (binary spikes, frac 0) -> ``QLinear`` (dense, bias, no per-channel
shift) -> ``QLIF`` (every reset mode and zero mode, delayed or immediate reset, every rounding mode,
saturation, floor) or ``QCubaLIF``, with no recurrence, a dense or a one-to-one recurrence, chained
any number of times (up to ``MAX_L`` neuron layers); binary spikes (graded 1 on 2^0); every neuron layer
on one core (``N <= neurons_per_core``); the sequential schedule. A ``QConv2d`` stored unrolled (targets
without a conv engine: ``conv_unrolled = 1``, dense rows encoding any stride/padding/dilation/groups)
runs as a ``QLinear`` of ``prod(in_shape)`` inputs and ``prod(out_shape)`` outputs, its bias per output
channel; ``Flatten`` passes its input through. Convs stored as kernels and pools are refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from snncompile.backends.image import Image
from snncompile.backends.image.layout import RECORD, RECORD_FIELDS, unroll_conv

from snncompile.errors import SnnCompileError
from snncompile.ir import QLIF, Flatten, Graph, Input, Output, QConv2d, QCubaLIF, QLinear
from snncompile.ir.ops import DenseRecurrence, OneToOneRecurrence
from snncompile.targets import Target, load_target

MEMORIES = ("layers", "synapse", "bias", "neuron", "state")
ACC_W = 32
IDX_LIMIT = (1 << 16) - 1
STIM_DEPTH = 1 << 22
DP_W = 64
_DEFAULTS = {
    "MAX_REC": 16,
    "MAX_L": 8,
    "SYN_DEPTH": 1 << 16,
    "BIAS_DEPTH": 1 << 12,
    "NEUR_DEPTH": 1 << 10,
    "STATE_DEPTH": 1 << 11,
    "IN_DEPTH": 1 << 10,
}


class RtlError(SnnCompileError):
    """The RTL flow failed: a tool error, a malformed result."""


class RtlToolError(RtlError):
    """A tool the RTL flow needs (verilator, yosys) is not installed or failed."""


class RtlUnsupportedError(RtlError):
    """The program uses a feature the reference RTL core does not implement (refused, never run wrong)."""


def rtl_sources() -> dict[str, Path]:
    """The core, host interface and testbench sources shipped in ``snncompile.hw_models/rtl``."""
    root = resources.files("snncompile.hw_models") / "rtl"
    names = ("snn_core.sv", "snn_host.sv", "snn_tb.sv", "snn_host_tb.sv")
    return {name: Path(str(root / name)) for name in names}


def _check_field_offsets() -> None:
    """The core hardcodes the layer-record offsets it reads; they must match the image format."""
    text = rtl_sources()["snn_core.sv"].read_text()
    for name, value in re.findall(r"\bF_([A-Z_]+) = (\d+)", text):
        if RECORD_FIELDS.index(name.lower()) != int(value):
            raise RtlError(
                f"snn_core.sv: field {name.lower()} is at offset {value}, the image format says "
                f"{RECORD_FIELDS.index(name.lower())}"
            )
    if f"REC = {RECORD}" not in text:
        raise RtlError(f"snn_core.sv: the layer record is not {RECORD} words")


# ------------------------------------------------------------------------------------ support check


def _refuse(node: str, feature: str) -> RtlUnsupportedError:
    return RtlUnsupportedError(f"layer {node!r}: {feature} is not supported by the reference RTL core")


def _through_flatten(graph: Graph, node: str) -> str:
    """The node a chain of flattens stands for (a flatten only renames axes: the flat order is unchanged)."""
    while isinstance(graph.op(node), Flatten):
        node = graph.args(node)[0]
    return node


def check_supported(graph: Graph, target: Target) -> dict[str, int]:
    """Refuses (:class:`RtlUnsupportedError`) anything the core does not implement; returns the sizes it
    needs (records, neuron layers, input size, output size)."""
    graph.verify()
    if target.micro.schedule != "sequential":
        raise RtlUnsupportedError(
            f"target {target.name!r}: the {target.micro.schedule} schedule is not supported by the reference "
            "RTL core (it runs layers one after the other: schedule = 'sequential')"
        )
    shapes = graph.shapes()
    order = graph.topo_order()
    neurons = 0
    for n in order:
        op = graph.op(n)
        args = graph.args(n)
        if isinstance(op, Input):
            if op.frac:
                raise _refuse(n, f"an input on 2^-{op.frac} (currents; the core takes binary spikes)")
        elif isinstance(op, QLinear | QConv2d):
            kind = "linear" if isinstance(op, QLinear) else "conv"
            if isinstance(op, QConv2d) and target.limits.conv_engine:
                raise _refuse(
                    n,
                    f"a conv layer stored as kernels (target {target.name!r} has a conv engine; the core "
                    "runs convs stored unrolled, conv_unrolled = 1)",
                )
            if op.channel_shift is not None:
                raise _refuse(n, "per-channel weight shifts (channel_shift)")
            src = graph.op(_through_flatten(graph, args[0]))
            if not isinstance(src, Input | QLIF | QCubaLIF):
                raise _refuse(n, f"a {kind} layer fed by {src.kind} (only an input or a neuron layer)")
            users = graph.users(n)
            if len(users) != 1 or not isinstance(graph.op(users[0]), QLIF | QCubaLIF):
                raise _refuse(n, f"a {kind} layer that does not feed exactly one neuron layer")
        elif isinstance(op, Flatten):
            src = graph.op(args[0])
            if not isinstance(src, Input | QLIF | QCubaLIF | Flatten):
                raise _refuse(n, f"a flatten of {src.kind} (only of an input or a neuron layer)")
            for user in graph.users(n):
                if not isinstance(graph.op(user), QLinear | QConv2d | Flatten):
                    raise _refuse(n, f"a flatten feeding {graph.op(user).kind} (only a linear or conv layer)")
        elif isinstance(op, QLIF | QCubaLIF):
            neurons += 1
            if not isinstance(graph.op(args[0]), QLinear | QConv2d):
                raise _refuse(
                    n, f"a neuron layer fed by {graph.op(args[0]).kind} (only a linear or conv layer)"
                )
            if not (np.all(op.graded == 1) and op.graded_frac == 0):
                raise _refuse(n, "graded spikes")
            if isinstance(op, QLIF) and op.bias is not None:
                raise _refuse(n, "a neuron bias (LeakyParallel)")
            rec = op.recurrence
            if rec is not None and not isinstance(rec, DenseRecurrence | OneToOneRecurrence):
                raise _refuse(n, f"a {type(rec).__name__}")
            size = math.prod(shapes[n])
            if isinstance(rec, OneToOneRecurrence) and rec.weight.size not in (1, size):
                raise _refuse(n, f"a one-to-one recurrence with {rec.weight.size} weights for {size} neurons")
            if size > target.cores.neurons_per_core:
                raise _refuse(
                    n,
                    f"{size} neurons on {math.ceil(size / target.cores.neurons_per_core)} cores "
                    f"(the core holds one layer of at most neurons_per_core = {target.cores.neurons_per_core})",
                )
            if size > IDX_LIMIT:
                raise _refuse(n, f"{size} neurons (at most {IDX_LIMIT})")
            lin = graph.op(args[0])
            assert isinstance(lin, QLinear | QConv2d)
            # (n_out, n_in) rows of the accumulated weights: a conv as its unrolled dense matrix
            w_ff = (
                lin.weight if isinstance(lin, QLinear) else unroll_conv(lin, shapes[graph.args(args[0])[0]]).T
            )
            for what, w, b in (
                ("synapse", w_ff, lin.bias),
                (
                    "recurrent",
                    rec.weight if isinstance(rec, DenseRecurrence) else None,
                    rec.bias if isinstance(rec, DenseRecurrence) else None,
                ),
            ):
                if w is None:
                    continue
                bound = int(np.abs(w).sum(axis=1).max(initial=0)) + int(
                    np.abs(b).max(initial=0) if b is not None else 0
                )
                if bound >= 1 << (ACC_W - 1):
                    raise _refuse(n, f"{what} sums up to {bound}, beyond the {ACC_W}-bit accumulators")
            _check_datapath(n, op, target)
        elif isinstance(op, Output):
            if n != graph.outputs[0] or op.state is not None:
                raise _refuse(n, "a second output, or an output of a neuron's state (the core emits spikes)")
            if not isinstance(graph.op(args[0]), QLIF | QCubaLIF):
                raise _refuse(n, f"an output taken from {graph.op(args[0]).kind} (only from a neuron layer)")
        else:
            raise _refuse(
                n,
                f"the {op.kind} op (the core runs Input -> QLinear/unrolled QConv2d -> QLIF/QCubaLIF chains"
                " and Flatten)",
            )
    if neurons == 0:
        raise RtlUnsupportedError("the program has no neuron layer")
    n_in = math.prod(shapes[graph.input_name])
    if n_in > IDX_LIMIT:
        raise _refuse(graph.input_name, f"{n_in} inputs (at most {IDX_LIMIT})")
    out = graph.args(graph.output_name)[0]
    return {"records": len(order), "layers": neurons, "inputs": n_in, "outputs": math.prod(shapes[out])}


def _check_datapath(node: str, op: QLIF | QCubaLIF, target: Target, dp_w: int = DP_W) -> None:
    """Every term of the neuron update must fit the core's ``dp_w``-bit datapath (a loose bound)."""
    f, d = op.mem.frac, op.decay_frac
    rf = op.rec_frac if op.recurrence is not None else op.in_frac
    state_bits = target.state.width
    if isinstance(op, QCubaLIF):
        big_i = max(op.syn.frac + op.alpha_frac, op.in_frac, rf)
        big = max(f + d, big_i)
        terms = [state_bits + 17 + big_i - op.syn.frac - op.alpha_frac, ACC_W + big - op.in_frac,
                 ACC_W + big - rf]  # fmt: skip
    else:
        big = max(f + d, op.in_frac, rf)
        terms = [state_bits + 17 + big - f - d, ACC_W + 1 + big - op.in_frac, ACC_W + big - rf]
    terms += [33 + big - f]
    bits = max(terms) + 3
    if bits > dp_w:
        raise _refuse(node, f"an update needing about {bits} bits (the core's datapath has {dp_w})")


def _pow2(n: int, floor: int) -> int:
    return max(floor, 1 << max(0, int(n - 1).bit_length()))


def core_params(manifest: dict[str, Any], target: Target, sizes: dict[str, int]) -> dict[str, int]:
    """The core's parameters for an image: widths from its manifest, lanes from the target, depths
    rounded up to powers of two (at least the defaults, so one build serves many images)."""
    mem = {m["name"]: m for m in manifest["memories"]}
    return {
        "W_W": int(mem["synapse"]["width"]),
        "S_W": int(mem["state"]["width"]),
        "ACC_W": ACC_W,
        "LANES": target.micro.lanes,
        "UL": target.micro.update_lanes,
        "PIPE_DEPTH": target.micro.pipeline_depth,
        "MAX_REC": _pow2(sizes["records"] + 1, _DEFAULTS["MAX_REC"]),
        "MAX_L": _pow2(sizes["layers"], _DEFAULTS["MAX_L"]),
        "SYN_DEPTH": _pow2(mem["synapse"]["depth"], _DEFAULTS["SYN_DEPTH"]),
        "BIAS_DEPTH": _pow2(mem["bias"]["depth"], _DEFAULTS["BIAS_DEPTH"]),
        "NEUR_DEPTH": _pow2(mem["neuron"]["depth"], _DEFAULTS["NEUR_DEPTH"]),
        "STATE_DEPTH": _pow2(mem["state"]["depth"], _DEFAULTS["STATE_DEPTH"]),
        "IN_DEPTH": _pow2(sizes["inputs"], _DEFAULTS["IN_DEPTH"]),
    }


# ------------------------------------------------------------------------------------ verilator build


def _cache_root() -> Path:
    return Path(os.environ.get("SNNCOMPILE_RTL_CACHE", Path(tempfile.gettempdir()) / "snncompile-rtl"))


def verilator_binary(params: dict[str, int], testbench: str = "snn_tb") -> Path:
    """The Verilator-built ``testbench`` (``snn_tb``: the core; ``snn_host_tb``: the core behind its
    host interface) for ``params``, built once and cached (keyed by the sources' hash and the
    parameters) under ``$SNNCOMPILE_RTL_CACHE`` (default: the temp dir)."""
    exe = shutil.which("verilator")
    if exe is None:
        raise RtlToolError(
            "verilator is not installed; install it with `apt-get install verilator` (Verilator 5 is needed)"
        )
    _check_field_offsets()
    src = rtl_sources()
    key = hashlib.sha256(testbench.encode())
    for p in src.values():
        key.update(p.read_bytes())
    key.update(json.dumps(params, sort_keys=True).encode())
    key.update(subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.encode())
    out = _cache_root() / key.hexdigest()[:16]
    binary = out / f"V{testbench}"
    if binary.is_file():
        return binary
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=".build."))
    design = [src["snn_core.sv"], *([src["snn_host.sv"]] if testbench == "snn_host_tb" else [])]
    depth = {"snn_tb": "STIM_DEPTH", "snn_host_tb": "CMD_DEPTH"}[testbench]
    cmd = [
        exe, "--binary", "--timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-O2",
        "--top-module", testbench, "-Mdir", str(work), "-j", str(min(8, os.cpu_count() or 1)),
        f"-G{depth}={STIM_DEPTH}", *(f"-G{k}={v}" for k, v in params.items()),
        *(str(f) for f in design), str(src[f"{testbench}.sv"]),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (work / binary.name).is_file():
        shutil.rmtree(work, ignore_errors=True)
        raise RtlToolError(
            f"verilator failed to build the core:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    try:
        os.replace(work, out)
    except OSError:  # another process built it first
        shutil.rmtree(work, ignore_errors=True)
    return binary


# ------------------------------------------------------------------------------------ co-simulation


def _load(build_or_image: str | os.PathLike[str], target: str | Target | None) -> tuple[Image, Target]:
    """The verified image of a build (or image directory) and its target."""
    from snncompile.backends.image import load_image

    root = Path(build_or_image).resolve()
    image = load_image(root / "image" if (root / "image" / "manifest.json").is_file() else root)
    return image, load_target(target if target is not None else image.manifest["target"])


def _input_codes(graph: Graph, x: Any) -> np.ndarray:
    from snncompile.interpreters.integer import input_codes

    codes = input_codes(graph, x)
    codes = codes.reshape(codes.shape[0], codes.shape[1], -1)
    if not np.all((codes == 0) | (codes == 1)):
        raise RtlUnsupportedError("the reference RTL core takes binary spike inputs (0/1)")
    return codes


def stimulus_words(codes: np.ndarray) -> np.ndarray:
    """The testbench stimulus: per sample, per step, the event count then the nonzero input indices."""
    words: list[int] = []
    for b in range(codes.shape[1]):
        for t in range(codes.shape[0]):
            idx = np.flatnonzero(codes[t, b])
            words.append(idx.size)
            words.extend(idx.tolist())
    return np.asarray(words, np.int64)


def _write_words(path: Path, words: np.ndarray, width: int, comment: str) -> None:
    digits = (width + 3) // 4
    path.write_text(f"// {comment}\n" + "".join(f"{int(w):0{digits}x}\n" for w in words))


def rtl_simulate(
    build_dir: str | os.PathLike[str], x: Any, *, target: str | Target | None = None, timeout: float = 600.0
) -> tuple[np.ndarray, np.ndarray]:
    """Runs the image of ``build_dir`` (a build or an image directory) on the RTL core in Verilator.

    Returns ``spikes[T, B, N_out]`` (uint8) and ``cycles[T, B]`` (int64, the core's cycle counter per
    time step). The core's counter is checked against the testbench's own count of busy cycles."""
    image, tgt = _load(build_dir, target)
    graph = image.graph
    sizes = check_supported(graph, tgt)
    codes = _input_codes(graph, x)
    t_steps, batch = codes.shape[:2]
    binary = verilator_binary(core_params(image.manifest, tgt, sizes))
    with tempfile.TemporaryDirectory(prefix="snn-rtl-") as tmp:
        for m in MEMORIES:  # the verified words, not the build's files
            (Path(tmp) / f"{m}.mem").write_bytes(image.memories[m].to_mem())
        stim, out = Path(tmp) / "stimulus.mem", Path(tmp) / "out.txt"
        words = stimulus_words(codes)
        if words.size > STIM_DEPTH:
            raise RtlUnsupportedError(
                f"the stimulus has {words.size} words (at most {STIM_DEPTH}); run fewer samples"
            )
        _write_words(stim, words, 32, "stimulus")
        args = [str(binary), f"+stim={stim}", f"+out={out}", f"+samples={batch}", f"+steps={t_steps}"]
        args += [f"+{m}={Path(tmp) / f'{m}.mem'}" for m in MEMORIES]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise RtlToolError(f"the RTL simulation ran past {timeout:.0f} s") from None
        if proc.returncode != 0 or not out.is_file():
            raise RtlToolError(f"the RTL simulation failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        lines = out.read_text().splitlines()
    spikes = np.zeros((t_steps, batch, sizes["outputs"]), np.uint8)
    cycles = np.zeros((t_steps, batch), np.int64)
    if len(lines) != t_steps * batch:
        raise RtlError(f"the RTL simulation recorded {len(lines)} steps, expected {t_steps * batch}")
    for line in lines:
        b, t, core_cycles, busy, n, *idx = (int(v) for v in line.split())
        if core_cycles != busy:
            raise RtlError(f"sample {b} step {t}: the core counted {core_cycles} cycles but was busy {busy}")
        if n != len(idx):
            raise RtlError(f"sample {b} step {t}: {n} spikes announced, {len(idx)} recorded")
        cycles[t, b] = core_cycles
        spikes[t, b, idx] = 1
    out_shape = graph.shapes()[graph.args(graph.output_name)[0]]
    return spikes.reshape(t_steps, batch, *out_shape), cycles


# ------------------------------------------------------------------------------------ host interface

# opcodes of the byte-stream host interface (hw_models/rtl/snn_host.sv documents the protocol)
HOST = {"nop": 0, "load": 1, "event": 2, "count": 3, "init": 4, "start": 5, "status": 6, "result": 7,
        "spike": 8, "clear": 9}  # fmt: skip
HOST_FLAGS = ("bad opcode", "address out of range", "event overflow", "not ready", "reply overrun")
_WAIT = 0x100  # snn_host_tb: wait until the core is ready again (not a byte of the protocol)


def host_command(name: str, *fields: tuple[int, int]) -> bytes:
    """One host command: its opcode, then each ``(value, bytes)`` field little-endian."""
    out = bytes([HOST[name]])
    for value, size in fields:
        out += (value % (1 << (8 * size))).to_bytes(size, "little")
    return out


def host_load(build_or_image: str | os.PathLike[str]) -> bytes:
    """The LOAD commands that write every word of a build's (or image directory's) five memories
    through the host interface: the words :func:`~snncompile.backends.image.load_image` verified."""
    image, _ = _load(build_or_image, None)
    out = b""
    for sel, name in enumerate(MEMORIES):
        words = image.memories[name].words
        out += b"".join(host_command("load", (sel, 1), (a, 4), (int(w), 8)) for a, w in enumerate(words))
    return out


def host_step(events: np.ndarray) -> bytes:
    """The EVENT, COUNT and START commands of one time step whose inputs ``events`` spike."""
    out = b"".join(host_command("event", (a, 2), (int(i), 2)) for a, i in enumerate(events))
    return out + host_command("count", (len(events), 2)) + host_command("start")


def host_flags(status: int) -> list[str]:
    """The error flags a STATUS reply byte holds, in words."""
    return [flag for bit, flag in enumerate(HOST_FLAGS) if status >> bit & 1]


def host_simulate(
    build_dir: str | os.PathLike[str],
    stream: list[bytes | None],
    *,
    target: str | Target | None = None,
    timeout: float = 600.0,
) -> bytes:
    """Plays ``stream`` (command bytes; ``None``: wait until the core is ready again after an INIT or
    START) into the host interface in Verilator, with the image memories empty (the stream LOADs
    them); returns every reply byte, in order."""
    image, tgt = _load(build_dir, target)
    sizes = check_supported(image.graph, tgt)
    binary = verilator_binary(core_params(image.manifest, tgt, sizes), "snn_host_tb")
    words = [w for part in stream for w in ([_WAIT] if part is None else list(part))]
    if len(words) > STIM_DEPTH:
        raise RtlUnsupportedError(f"the host stream has {len(words)} bytes (at most {STIM_DEPTH})")
    with tempfile.TemporaryDirectory(prefix="snn-host-") as tmp:
        cmd, out = Path(tmp) / "cmd.mem", Path(tmp) / "out.txt"
        _write_words(cmd, np.asarray(words, np.int64), 9, "host stream")
        args = [str(binary), f"+cmd={cmd}", f"+n={len(words)}", f"+out={out}"]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise RtlToolError(f"the RTL simulation ran past {timeout:.0f} s") from None
        if proc.returncode != 0 or not out.is_file():
            raise RtlToolError(f"the RTL simulation failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        return bytes(int(ln, 16) for ln in out.read_text().split())


# ------------------------------------------------------------------------------------ golden vectors


def golden_files(program_or_build: Any, x: Any, directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Writes golden vectors for a third-party testbench from the integer simulator into ``directory``:

    * ``stimulus.mem``: 32-bit words; per sample, per step: the input event count, then the indices
      of the nonzero inputs (the format ``snn_tb.sv`` reads);
    * ``expected_spikes.mem``: one ``N_out``-bit word per (sample, step), bit ``i`` = output ``i`` spiked;
    * ``expected_cycles.mem``: one 32-bit word per (sample, step): the cycle model's cycles;
    * ``golden.json``: shapes, order and the target.
    """
    from snncompile.backends.intsim import CycleModel, simulate

    if hasattr(program_or_build, "graph") and hasattr(program_or_build, "target"):
        graph, tgt = program_or_build.graph, program_or_build.target
    else:
        image, tgt = _load(program_or_build, None)
        graph = image.graph
    codes = _input_codes(graph, x)
    model = CycleModel(graph, tgt)
    run = simulate(
        graph,
        codes.reshape(codes.shape[0], codes.shape[1], *graph.shapes()[graph.input_name]),
        keep=model.event_nodes,
        progress=False,
    )
    report = model.count(run, run.values)
    out = np.asarray(run.output).reshape(run.output.shape[0], run.output.shape[1], -1)
    t_steps, batch, n_out = out.shape
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "stimulus": root / "stimulus.mem",
        "expected_spikes": root / "expected_spikes.mem",
        "expected_cycles": root / "expected_cycles.mem",
        "golden": root / "golden.json",
    }
    _write_words(
        files["stimulus"], stimulus_words(codes), 32, "stimulus: per sample, per step: count, indices"
    )
    vectors = [
        int("".join("1" if v else "0" for v in out[t, b, ::-1] != 0) or "0", 2)
        for b in range(batch)
        for t in range(t_steps)
    ]
    _write_words(
        files["expected_spikes"],
        np.asarray(vectors, dtype=object),
        n_out,
        f"expected output spikes: {batch} samples x {t_steps} steps, {n_out} bits (bit i = output i)",
    )
    _write_words(
        files["expected_cycles"],
        report.cycles.T.ravel(),
        32,
        f"expected cycles per step: {batch} samples x {t_steps} steps",
    )
    files["golden"].write_text(json.dumps({
        "target": tgt.name, "samples": batch, "steps": t_steps, "inputs": int(codes.shape[2]),
        "outputs": n_out, "order": "sample-major, then step",
    }, indent=1) + "\n")  # fmt: skip
    return files


# ------------------------------------------------------------------------------------ synthesis


@dataclasses.dataclass(frozen=True)
class Part:
    """The device a family's synthesis flow implements the core on, and its resources."""

    name: str
    luts: int
    flip_flops: int
    block_rams: int  # iCE40: 4 Kb EBR + SPRAM; Xilinx: RAMB36 equivalents (a RAMB18 counts 1/2)
    dsps: int
    yosys: str  # the yosys synthesis command (``-top snn_host`` is added)


PARTS = {
    "ice40": Part("iCE40UP5K-SG48", 5280, 5280, 30 + 4, 8, "synth_ice40 -dsp"),
    "xilinx7": Part("XC7A100T", 63400, 126800, 135, 240, "synth_xilinx -family xc7"),
    "xilinxus": Part("XCZU3EG", 70560, 141120, 216, 360, "synth_xilinx -family xcup"),
}

_SYNTH_PARAMS = {
    "ACC_W": 24, "MAX_REC": 8, "MAX_L": 2, "SYN_DEPTH": 256, "BIAS_DEPTH": 32, "NEUR_DEPTH": 16,
    "STATE_DEPTH": 32, "IN_DEPTH": 16, "IDX_W": 8, "DP_W": 40,
}  # fmt: skip

# the default budget of one synthesis run: over 10 times the slowest measured run, so that a loaded
# machine gets its figures late rather than not at all
SYNTH_TIMEOUT_S = 1800.0


def synthesis_params(target: Target) -> dict[str, int]:
    """The core parameters synthesized for ``target``: its widths (weights, state) and lanes, update
    lanes and pipeline depth, with small memory depths (``_SYNTH_PARAMS``)."""
    return {
        "W_W": target.weight_bits,
        "S_W": target.state.width,
        "LANES": target.micro.lanes,
        "UL": target.micro.update_lanes,
        "PIPE_DEPTH": target.micro.pipeline_depth,
        **_SYNTH_PARAMS,
    }


def _family_target(family: str) -> Target:
    """The shipped target of a family (``ice40`` -> ``ice40up5k``), for callers that name a family."""
    from snncompile.targets import target_names

    for name in target_names():
        target = load_target(name)
        if target.family == family:
            return target
    raise RtlUnsupportedError(
        f"target family {family!r}: synthesis figures cover the families {', '.join(sorted(PARTS))}"
    )


def _run_tool(cmd: list[str], what: str, deadline: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs one step of the flow; raises :class:`_SynthTimeout` past ``deadline`` (monotonic seconds)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _SynthTimeout(what)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=left, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise _SynthTimeout(what) from None


class _SynthTimeout(Exception):
    """A step of the synthesis flow ran past the flow's time budget."""


def _cells(stat: str) -> dict[str, int]:
    """Cell counts of the top module's hierarchy from yosys ``stat`` (the last block: the design total)."""
    blocks = stat.split("=== design hierarchy ===")
    text = blocks[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+(\S+)\s+(\d+)\s*$", text, re.M)}


def _count(cells: dict[str, int], pattern: str) -> int:
    return sum(v for k, v in cells.items() if re.fullmatch(pattern, k))


def synthesize(
    target: Target | str,
    params: dict[str, int] | None = None,
    timeout: float = SYNTH_TIMEOUT_S,
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any] | None:
    """Implements the core behind its host interface (``snn_host``) on ``target``'s part.

    ``target`` is a :class:`Target`, a target name or a family (``ice40``, ``xilinx7``, ``xilinxus``:
    its shipped target). Parameters: :func:`synthesis_params` updated with ``params``.

    * iCE40: yosys ``synth_ice40 -dsp``, ``nextpnr-ice40 --up5k`` against the target's clock and
      ``icepack``: the bitstream is written to ``out_dir`` (default: a directory in the RTL cache)
      and ``fmax_mhz`` is nextpnr's post-route estimate; nextpnr runs only when yosys's counts fit.
    * Xilinx: yosys ``synth_xilinx`` resource figures; ``fmax_mhz`` and ``bitstream`` are None
      (timing needs the vendor tools).

    Returns ``{"part", "luts", "flip_flops", "block_rams", "dsps", "fmax_mhz", "clock_mhz", "fits",
    "meets_timing", "bitstream", "parameters", "command", "problems", "seconds"}`` (``problems`` says
    in words why it does not fit or misses timing), or None when yosys is missing or the flow runs
    past ``timeout`` seconds (with a :class:`RuntimeWarning` giving the reason)."""
    tgt = target if isinstance(target, Target) else _load_named(target)
    part = PARTS.get(tgt.family)
    if part is None:
        raise RtlUnsupportedError(
            f"target {tgt.name!r} (family {tgt.family!r}): synthesis figures cover the families "
            f"{', '.join(sorted(PARTS))}"
        )
    ice40 = tgt.family == "ice40"
    tools = ["yosys", *(["nextpnr-ice40", "icepack"] if ice40 else [])]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        warnings.warn(
            f"synthesis figures unavailable: {', '.join(missing)} not installed "
            "(apt-get install yosys nextpnr-ice40 fpga-icestorm)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    p = dict(synthesis_params(tgt), **(params or {}))
    src = rtl_sources()
    start = time.monotonic()
    deadline = start + timeout
    cmd = f"{part.yosys} -top snn_host"
    chparam = " ".join(f"-set {k} {v}" for k, v in p.items())
    key = hashlib.sha256(json.dumps([tgt.name, p], sort_keys=True).encode())
    for f in src.values():
        key.update(f.read_bytes())
    work = Path(out_dir) if out_dir is not None else _cache_root() / "synth" / key.hexdigest()[:16]
    work.mkdir(parents=True, exist_ok=True)
    # `-run :check` then the check label's steps without `autoname` (quadratic on this design)
    script = (
        f"read_verilog -sv {src['snn_core.sv']} {src['snn_host.sv']}; chparam {chparam} snn_host; "
        f"{cmd} -run :check; hierarchy -check; check -noinit; tee -o stat.txt stat; "
        + ("write_json snn_host.json" if ice40 else "")
    )
    try:
        proc = _run_tool(["yosys", "-q", "-p", script], "yosys", deadline, work)
        if proc.returncode != 0:
            raise RtlToolError(f"yosys failed: {proc.stderr[-2000:] or proc.stdout[-2000:]}")
        cells = _cells((work / "stat.txt").read_text())
        if ice40:
            used = {
                "luts": _count(cells, r"SB_LUT4"),
                "flip_flops": _count(cells, r"SB_DFF\w*"),
                "block_rams": _count(cells, r"SB_RAM40_4K\w*|SB_SPRAM256KA"),
                "dsps": _count(cells, r"SB_MAC16"),
            }
        else:
            used = {
                "luts": _count(cells, r"LUT\d"),
                "flip_flops": _count(cells, r"FD\w*"),
                "block_rams": _count(cells, r"RAMB36\w*") + (_count(cells, r"RAMB18\w*") + 1) // 2,
                "dsps": _count(cells, r"DSP48\w*"),
            }
        problems = [
            f"{used[k]:,} {k.replace('_', ' ')} of the part's {getattr(part, k):,}"
            for k in used
            if used[k] > getattr(part, k)
        ]
        fits = not problems
        fmax: float | None = None
        bitstream: str | None = None
        if ice40 and fits:
            fmax, bitstream, failure = _place_and_route(tgt, work, deadline)
            if failure is not None:
                problems.append(failure)
                fits = False
    except _SynthTimeout as e:
        warnings.warn(
            f"synthesis figures unavailable: {e} ran past the {timeout:.0f} s budget",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    clock = tgt.micro.clock_mhz
    meets = None if fmax is None else fmax >= clock
    if meets is False:
        problems.append(f"Fmax {fmax:.1f} MHz is below the target's clock of {clock:g} MHz")
    if not ice40:
        problems.append("timing not analysed: Fmax needs the vendor tools (Vivado)")
    return {
        "part": part.name, **used, "fmax_mhz": fmax, "clock_mhz": clock, "fits": fits,
        "meets_timing": meets, "bitstream": bitstream, "parameters": p, "command": cmd,
        "problems": problems, "seconds": round(time.monotonic() - start, 1),
    }  # fmt: skip


def _load_named(name: str) -> Target:
    """A target by name, or the shipped target of a family."""
    return _family_target(name) if name in PARTS else load_target(name)


def _place_and_route(
    target: Target, work: Path, deadline: float
) -> tuple[float | None, str | None, str | None]:
    """nextpnr-ice40 (UP5K, SG48) and icepack on ``work/snn_host.json``: (Fmax in MHz, the bitstream's
    path, why placement or routing failed)."""
    proc = _run_tool(
        ["nextpnr-ice40", "--up5k", "--package", "sg48", "--json", "snn_host.json", "--asc", "snn_host.asc",
         "--freq", f"{target.micro.clock_mhz:g}", "--timing-allow-fail", "--seed", "1"],
        "nextpnr-ice40", deadline, work,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    (work / "nextpnr.log").write_text(log)
    if proc.returncode != 0 or not (work / "snn_host.asc").is_file():
        last = [ln for ln in log.splitlines() if "ERROR" in ln][-1:] or log.splitlines()[-1:]
        return None, None, f"place and route failed: {' '.join(last).strip()}"
    found = re.findall(r"Max frequency for clock '[^']*': ([\d.]+) MHz", log)
    fmax = float(found[-1]) if found else None
    pack = _run_tool(["icepack", "snn_host.asc", "snn_host.bin"], "icepack", deadline, work)
    if pack.returncode != 0:
        raise RtlToolError(f"icepack failed: {pack.stderr[-2000:]}")
    return fmax, str(work / "snn_host.bin"), None
