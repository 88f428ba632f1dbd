"""Frontends: turn trained models into float IR graphs."""

from snncompile.frontend.snntorch import HANDLERS, trace

__all__ = ["HANDLERS", "trace"]
