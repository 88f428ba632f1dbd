"""Dispatch tables with explicit registration: registering one key twice is an error."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def registrar(table: dict[Any, Any]) -> Callable[..., Callable[[F], F]]:
    """A decorator factory filling ``table``: ``@handles(KeyA, KeyB)`` maps both keys to the function."""

    def handles(*keys: Hashable) -> Callable[[F], F]:
        def register(fn: F) -> F:
            for key in keys:
                if key in table:
                    raise RuntimeError(f"a handler for {getattr(key, '__name__', key)} is already registered")
                table[key] = fn
            return fn

        return register

    return handles
