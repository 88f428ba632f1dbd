"""What a sweep writes: ``sweep.json``, ``sweep.csv``, ``sweep.txt`` (the table) and ``pareto.png``.

Every file is written to a temporary name beside it and renamed into place, so an interrupted run
leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from snncompile.loading import write_atomic
from snncompile.sweep.core import Record, score

COLUMNS = (
    "target",
    "weight_bits",
    "state_bits",
    "decay_bits",
    "ok",
    "fits",
    "reason",
    "exact",
    "range_verdict",
    "samples",
    "accuracy",
    "float_accuracy",
    "agreement",
    "bit_exact",
    "memory_bits_total",
    "cycles_per_sample",
    "latency_s",
    "energy_j",
    "saturations_total",
    "frontier_energy",
    "frontier_memory",
)
"""The CSV columns; the per-kind memory bits follow as ``memory_bits.KIND``."""


def records_json(records: Sequence[Record]) -> bytes:
    """``sweep.json``: one record a point, in the sweep's order, keys sorted."""
    return (json.dumps(list(records), indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def records_csv(records: Sequence[Record]) -> bytes:
    """``sweep.csv``: :data:`COLUMNS`, then ``memory_bits.KIND`` for every memory kind any point has;
    empty cells where a value does not apply."""
    kinds = sorted({k for r in records for k in (r["memory_bits"] or {})})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*COLUMNS, *(f"memory_bits.{k}" for k in kinds)])
    for r in records:
        memory = r["memory_bits"] or {}
        writer.writerow(
            [("" if r[c] is None else r[c]) for c in COLUMNS] + [memory.get(k, "") for k in kinds]
        )
    return buf.getvalue().encode()


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


def table(records: Sequence[Record]) -> str:
    """The records as aligned columns; ``E`` / ``M`` marks the energy / memory frontier; a point that
    was not measured shows its reason."""
    header = ("target", "w", "s", "d", "accuracy", "agreement", "memory kb", "cycles", "latency us",
              "energy nJ", "sat", "frontier")  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for r in records:
        point = (r["target"], str(r["weight_bits"]), str(r["state_bits"]), str(r["decay_bits"] or "-"))
        if not r["ok"]:
            rows.append((*point, f"{'not measured' if r['fits'] else 'does not fit'}: {r['reason']}"))
            continue
        marks = ("E" if r["frontier_energy"] else "") + ("M" if r["frontier_memory"] else "")
        rows.append(
            (
                *point,
                _pct(r["accuracy"]),
                "bit-exact" if r["bit_exact"] else _pct(r["agreement"]),
                f"{r['memory_bits_total'] / 1000:,.1f}",
                f"{r['cycles_per_sample']:,.0f}",
                f"{r['latency_s'] * 1e6:,.2f}",
                f"{r['energy_j'] * 1e9:,.2f}",
                str(r["saturations_total"]),
                marks,
            )
        )
    full = [row for row in rows if len(row) == len(header)]
    widths = [max(len(row[i]) for row in [header, *full]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        if len(row) < len(header):  # the reason runs on past the columns
            cells[-1] = row[-1]
        lines.append("  ".join(cells).rstrip())
    measured = [r for r in records if r["ok"]]
    criterion = "accuracy" if measured and measured[0]["accuracy"] is not None else "agreement"
    lines += [
        "",
        f"frontier: E = best {criterion} for its energy, M = for its memory (no point is better on both)",
    ]
    return "\n".join(lines) + "\n"


def plot_png(records: Sequence[Record]) -> bytes:
    """``pareto.png``: the score (accuracy, else agreement) against energy per inference and against
    memory bits, one colour per target, the frontier joined by a line and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    measured = [r for r in records if r["ok"]]
    label = "accuracy (%)" if measured and measured[0]["accuracy"] is not None else "agreement with float (%)"
    targets = sorted({r["target"] for r in measured})
    colours = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(targets)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("energy_j", 1e9, "energy per inference (nJ)", "frontier_energy"),
              ("memory_bits_total", 1e-3, "memory (kb)", "frontier_memory"))  # fmt: skip
    for ax, (cost, scale, xlabel, flag) in zip(axes, panels, strict=True):
        for t in targets:
            mine = [r for r in measured if r["target"] == t]
            ax.scatter([r[cost] * scale for r in mine], [100 * score(r) for r in mine], s=22,
                       color=colours[t], label=t)  # fmt: skip
        front = sorted((r for r in measured if r[flag]), key=lambda r: (r[cost], -score(r)))
        ax.plot([r[cost] * scale for r in front], [100 * score(r) for r in front], "k--", lw=1,
                drawstyle="steps-post", label="frontier")  # fmt: skip
        ax.scatter([r[cost] * scale for r in front], [100 * score(r) for r in front], s=90,
                   facecolors="none", edgecolors="k")  # fmt: skip
        if cost == "energy_j" and measured:  # energies span decades across targets; memories do not
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, loc="center right")
    fig.suptitle(f"{len(measured)} of {len(records)} design points measured")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_outputs(directory: Path, records: Sequence[Record]) -> None:
    """Writes the four files of a finished sweep into ``directory``, each atomically."""
    write_atomic(directory / "sweep.json", records_json(records))
    write_atomic(directory / "sweep.csv", records_csv(records))
    write_atomic(directory / "sweep.txt", table(records).encode())
    write_atomic(directory / "pareto.png", plot_png(records))
