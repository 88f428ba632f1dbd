"""Design-space sweeps: every (target, weight bits, state bits[, decay bits]) point of a model compiled
and simulated on Dask, with the accuracy / energy and accuracy / memory frontiers.

``from snncompile.sweep import Point, grid, sweep``. The names load on first use, so that the
command line can register ``snncompile sweep`` (:mod:`snncompile.sweep.command`) without importing
Dask, torch or the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from snncompile import lazy_names

if TYPE_CHECKING:
    from snncompile.sweep.api import sweep
    from snncompile.sweep.core import Point, frontier, grid

_LAZY = {
    "sweep": "snncompile.sweep.api",
    "Point": "snncompile.sweep.core",
    "frontier": "snncompile.sweep.core",
    "grid": "snncompile.sweep.core",
}

__all__ = ["Point", "frontier", "grid", "sweep"]


__getattr__ = lazy_names(__name__, _LAZY)
