"""The command-line options of a ``.nir`` MODEL, shared by every command that takes one (compile,
simulate, verify, inspect in :mod:`snncompile.cli`; sweep in :mod:`snncompile.sweep.command`).

Only click is imported here, so ``--help`` stays light; the NIR frontend loads when a model is read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from snncompile.ir import Graph

F = TypeVar("F", bound=Callable[..., Any])

# each convention's reset and reset timing, as its producer runs them: snncompile.frontend.nir.CONVENTIONS,
# spelled out so that --help need not import the frontend (tests/test_cli.py checks that the two agree)
NIR_DEFAULTS: dict[str, tuple[str, bool]] = {
    "euler": ("zero", False),
    "norse": ("zero", False),
    "rockpool": ("subtract", False),
    "sinabs": ("subtract", False),
    "snntorch": ("subtract", True),
}
NIR_CONVENTIONS = tuple(NIR_DEFAULTS)

_RESETS = ", ".join(f"{c} {r}" for c, (r, _) in NIR_DEFAULTS.items())
_DELAYS = ", ".join(f"{c} {str(d).lower()}" for c, (_, d) in NIR_DEFAULTS.items())


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    ctx.ensure_object(dict).setdefault("nir", {})[param.name] = value


def nir_options(fn: F) -> F:
    """--convention, --reset, --reset-delay and --dt: how a `.nir` MODEL becomes discrete time (see
    :func:`snncompile.frontend.nir.import_nir`)."""
    options = [
        click.option("--convention", type=click.Choice(NIR_CONVENTIONS), default="snntorch", show_default=True,
                     expose_value=False, callback=_store, help=".nir models: how time constants become decays."),
        click.option("--reset", type=click.Choice(["subtract", "zero", "none"]), expose_value=False, callback=_store,
                     help=f".nir models: the reset (NIR does not record it); default: the convention's producer's ({_RESETS})."),
        click.option("--reset-delay", type=click.BOOL, metavar="true|false", expose_value=False, callback=_store,
                     help=".nir models: reset one step after the spike (snnTorch's reset_delay) or in the step it "
                          f"fires; default: the convention's producer's ({_DELAYS}). snnTorch's own import_nir "
                          "runs --reset zero --reset-delay false."),
        click.option("--dt", type=float, expose_value=False, callback=_store,
                     help=".nir models: the time step in seconds (default: the convention's)."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def import_nir_model(path: str) -> Graph:
    """The `.nir` MODEL at ``path`` under the options given; each place where the IR can compute otherwise
    than the convention's producer is printed as a ``note:`` line on stderr (unless --quiet)."""
    from snncompile.errors import ConventionWarning
    from snncompile.frontend.nir import import_nir

    root = click.get_current_context().find_root().ensure_object(dict)
    opts = root.get("nir", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConventionWarning)
        graph = import_nir(
            path,
            convention=opts.get("convention") or "snntorch",
            reset=opts.get("reset"),
            reset_delay=opts.get("reset_delay"),
            dt=opts.get("dt"),
        )
    for w in caught:
        if issubclass(w.category, ConventionWarning):
            if not root.get("quiet"):
                click.echo(f"note: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return graph
