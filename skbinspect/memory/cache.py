"""Values computed once per drgn program and kept in ``prog.cache`` (drgn's per-program dictionary)."""

from __future__ import annotations

from typing import Callable, TypeVar

import drgn

__all__ = ["per_program"]

T = TypeVar("T")


def per_program(prog: drgn.Program, key: str, build: Callable[[drgn.Program], T]) -> T:
    """``prog.cache[key]``, built by ``build(prog)`` on first use."""
    value = prog.cache.get(key)
    if value is None:
        value = prog.cache[key] = build(prog)
    return value
