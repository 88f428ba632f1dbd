"""Build directories: what ``snncompile compile`` writes, written atomically.

``BUILD/image/`` (the weight-memory image: every memory as .mem/.coe/.mif/.bin, ``image.h`` and
``manifest.json``), ``BUILD/graph.json`` (the fixed-point graph), ``BUILD/report.json`` and ``BUILD/report.txt`` (the same facts, for machines and people).
Simulating a build runs the program decoded from its image, so what is simulated is what is shipped. A build is
first written into a hidden sibling directory and renamed into place, so a failed compile leaves no
partial BUILD and an existing BUILD is replaced whole.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from snncompile._version import __version__
from snncompile.backends.image import image_files, load_image
from snncompile.compiler import Program
from snncompile.errors import InputError
from snncompile.ir import Graph, save_graph

GRAPH = "graph.json"


def program_report(program: Program) -> dict[str, Any]:
    """The compile report as plain data: target, per-node formats, range analysis, quantization notes."""
    graph, ranges = program.graph, program.ranges
    shapes = graph.shapes()
    fracs = graph.fracs()
    nodes = [
        {
            "name": n,
            "source": graph.source(n),
            "op": graph.op(n).kind,
            "shape": list(shapes[n]),
            "frac": fracs[n],
            "max_code": ranges.nodes[n].out_max,
            "bits": ranges.nodes[n].bits,
            "saturating": ranges.nodes[n].saturating,
            "line": graph.line(n),
        }
        for n in graph.topo_order()
    ]
    return {
        "compiler": f"snncompile {__version__}",
        "target": program.target.name,
        "exact": program.exact,
        "range_verdict": ranges.verdict,
        "max_intermediate_bits": ranges.bits,
        "saturating": ranges.saturating,
        "neurons": int(sum(np.prod(shapes[n]) for n in graph.neurons())),
        "synapses": int(program.memories["synapse"].depth),
        "resources": [
            {"resource": u.resource, "used": u.used, "limit": u.limit, "unit": u.unit}
            for u in program.mapping.usage
        ],
        "memories": {
            name: {
                "width": m.width,
                "depth": m.depth,
                "bits": m.width * m.depth,
                "placed_in": program.mapping.memory_kind[name],
            }
            for name, m in program.memories.items()
        },
        "nodes": nodes,
        "notes": list(program.notes),
        "calibration_run": program.calibration_run,
    }


def report_text(report: dict[str, Any]) -> str:
    """``report.json`` as aligned tables."""
    lines = [
        f"{report['compiler']} — target {report['target']}",
        f"range analysis: {report['range_verdict']} (largest intermediate {report['max_intermediate_bits']} bits)",
        f"quantization: {'exact (model read as trained)' if report['exact'] else 'post-training (rounded, see notes)'}",
        f"neurons: {report['neurons']}, synapse words: {report['synapses']}",
        "",
        "resources:",
        *(f"  {r['resource']}: {r['used']:,} / {r['limit']:,} {r['unit']}" for r in report["resources"]),
        "",
    ]
    header = ("node", "op", "shape", "frac", "max code", "bits", "saturating")
    rows = [
        (
            n["name"],
            n["op"],
            "x".join(str(d) for d in n["shape"]),
            str(n["frac"]),
            str(n["max_code"]),
            str(n["bits"]),
            "yes" if n["saturating"] else "",
        )
        for n in report["nodes"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    run = report.get("calibration_run")
    if run:
        lines += [
            "",
            f"run on the calibration data ({run['samples']} samples x {run['steps']} steps):",
            f"  cycles per step: mean {run['cycles_per_step_mean']:,.1f}, max {run['cycles_per_step_max']:,.0f}; "
            f"per sample {run['cycles_per_sample']:,.0f}",
            f"  latency {run['latency_per_sample_s'] * 1e6:,.2f} us per sample, throughput "
            f"{run['throughput_samples_per_s']:,.0f} samples/s, energy {run['energy_per_sample_j'] * 1e9:,.2f} nJ per sample",
            "  firing: " + ", ".join(f"{n} {100 * r:.1f}%" for n, r in run["firing_rates"].items()),
            "  saturations: " + ", ".join(f"{n} {c}" for n, c in run["saturations"].items()),
        ]
    else:
        lines += ["", "no calibration data: pass --calibration for cycles, latency and energy estimates"]
    synth = report.get("synthesis")
    if synth is not None:
        if "luts" in synth:
            fmax = "not analysed" if synth["fmax_mhz"] is None else f"{synth['fmax_mhz']:.1f} MHz"
            lines += [
                "",
                f"synthesis of the reference core ({synth['command']}, part {synth['part']}): "
                f"{synth['luts']:,} LUTs, {synth['flip_flops']:,} flip-flops, {synth['block_rams']} block RAMs, "
                f"{synth['dsps']} DSPs; {'fits' if synth['fits'] else 'does NOT fit'}; "
                f"Fmax {fmax} for a {synth['clock_mhz']:g} MHz clock; "
                f"bitstream {synth['bitstream'] or 'none'}",
                *(f"  - {p}" for p in synth["problems"]),
            ]
        else:
            lines += ["", f"synthesis: {synth['reason']}"]
    if report["notes"]:
        lines += ["", "notes:"] + [f"  - {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def write_build(
    program: Program,
    path: str | os.PathLike[str],
    extras: dict[str, Any] | None = None,
    write_more: Callable[[Path], None] | None = None,
) -> None:
    """Writes the build directory for ``program`` at ``path`` atomically (replacing an old one).

    ``extras`` are added to the report (e.g. ``synthesis``); ``write_more(tmp_dir)`` may add files
    (e.g. golden vectors) before the directory is moved into place."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write build {str(target)!r}: {str(parent)!r} is not a directory")
    if target.exists() and not (target / GRAPH).is_file():
        raise InputError(f"{str(target)!r} exists and is not an snncompile build; choose another -o")
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        (tmp / "image").mkdir()
        for name, blob in image_files(program.graph, program.target, program.memories).items():
            (tmp / "image" / name).write_bytes(blob)
        save_graph(program.graph, tmp / GRAPH)
        report = {**program_report(program), **(extras or {})}
        if write_more is not None:
            write_more(tmp)
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "report.txt").write_text(report_text(report))
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, old / "build")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_build(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / GRAPH).is_file()


def read_build(path: str | os.PathLike[str]) -> tuple[Graph, dict[str, Any]]:
    """The program decoded from a build's image (every word checked, node names from its manifest)
    and the build's report, which must name the image's target."""
    image = load_image(Path(path) / "image")
    try:
        report = json.loads((Path(path) / "report.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"build {str(path)!r}: cannot read report.json: {e}") from None
    target = report.get("target") if isinstance(report, dict) else None
    if target != image.manifest["target"]:
        raise InputError(
            f"build {str(path)!r}: report.json names target {target!r}, its image was built for "
            f"{image.manifest['target']!r}"
        )
    return image.graph, report
