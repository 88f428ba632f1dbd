"""Which exact kernel is fastest on the machine that runs it: timed once per machine and shape class.

Every candidate path of a synapse op gives the same integers (the range analysis admits a float path
only where it is exact), so the choice is speed alone, and speed depends on the CPU: ``torch._int_mm``
is fast with VNNI or AMX and 10-20x slower than float32 BLAS without; float64 BLAS halves float32's
rate; the event-driven gather costs in proportion to the input's density. Each candidate is timed on
a synthetic workload of the op's shape class (dense: sizes rounded up to powers of two; conv: its exact
geometry), as seconds per sample and time step, and the figures are kept in a JSON file in the user's
cache directory (``$SNNCOMPILE_CACHE_DIR``, else ``$XDG_CACHE_HOME/snncompile``, else
``~/.cache/snncompile``), one file per machine: CPU model, its vector and matrix extensions, thread
counts and library versions. ``SNNCOMPILE_TUNE=0`` skips timing and uses fixed preferences.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch

#: CPU extensions that decide which kernels are fast (as /proc/cpuinfo names them)
FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)


@functools.cache
def machine() -> dict[str, Any]:
    """The facts that decide kernel speed: CPU model and extensions, threads, library versions."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
                break
    return {
        "cpu": model,
        "arch": platform.machine(),
        "features": [f for f in FEATURES if f in flags],
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "numpy": np.__version__,
    }


def describe_machine() -> str:
    m = machine()
    features = ", ".join(m["features"]) or "none of " + ", ".join(FEATURES)
    return f"{m['cpu']} ({m['arch']}; {features}; {m['torch_threads']} threads)"


def cache_file() -> Path:
    base = os.environ.get("SNNCOMPILE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "snncompile"
    )
    key = hashlib.sha256(json.dumps(machine(), sort_keys=True).encode()).hexdigest()[:16]
    return Path(base) / f"kernels-{key}.json"


def tuning_enabled() -> bool:
    return os.environ.get("SNNCOMPILE_TUNE", "1") != "0"


@functools.cache
def _cache() -> dict[str, dict[str, float]]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data.get("costs", {}) if isinstance(data, dict) and data.get("machine") == machine() else {}


def _save() -> None:
    """Writes the cache atomically; a cache that cannot be written only costs a re-measurement."""
    path = cache_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kernels-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"machine": machine(), "costs": _cache()}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)


#: timing rounds: every candidate runs twice per round (the first run untimed), interleaved, and keeps
#: its fastest round, so a burst of load on a shared machine slows one round of every candidate rather
#: than one candidate
ROUNDS = 7


def costs(key: str, candidates: dict[str, Callable[[], tuple[Callable[[], Any], int]]]) -> dict[str, float]:
    """Seconds per sample-step of every candidate for the shape class ``key``, from the cache or timed
    now. Each candidate's callable builds its workload and returns (one run of it, its sample-steps)."""
    known = _cache().setdefault(key, {})
    missing = [p for p in candidates if p not in known]
    if missing:
        runs = {p: candidates[p]() for p in missing}
        for run, _ in runs.values():
            run()  # compiles, allocates, warms the caches
        best = dict.fromkeys(missing, float("inf"))
        for _ in range(ROUNDS):
            for p, (run, _) in runs.items():
                run()  # untimed: wakes the thread pool this candidate uses (torch's or the kernels')
                start = time.perf_counter()
                run()
                best[p] = min(best[p], time.perf_counter() - start)
        known.update({p: best[p] / runs[p][1] for p in missing})
        _save()
    return {p: known[p] for p in candidates}


@contextlib.contextmanager
def exact_float() -> Iterator[None]:
    """Pins torch's float32 matmul and conv precision to IEEE float32 for the duration (a user or a
    machine default of TF32/bf16 would make the float paths inexact), then restores it."""
    saved = torch.get_float32_matmul_precision()
    backends = (getattr(torch.backends.mkldnn, name, None) for name in ("matmul", "conv"))
    mkldnn: list[Any] = [m for m in backends if hasattr(m, "fp32_precision")]
    saved_mkldnn = [m.fp32_precision for m in mkldnn]
    torch.set_float32_matmul_precision("highest")
    for m in mkldnn:
        m.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)
        for m, p in zip(mkldnn, saved_mkldnn, strict=True):
            m.fp32_precision = p
