"""Values computed once per drgn program and kept in ``prog.cache`` (drgn's per-program dictionary).

Every cached value of skbinspect goes through :func:`per_program`, under a key that starts with
``"skbinspect."`` (e.g. ``"skbinspect.stats.cpus"``; a tuple led by one, e.g. ``("skbinspect.layout",
type name, members)``), so that ``prog.cache`` shows what is cached and a benchmark or a test can clear
or pre-fill it by key.
"""

from __future__ import annotations

from typing import Callable, Hashable, TypeVar

import drgn

__all__ = ["forget", "per_program"]

T = TypeVar("T")


def per_program(
    prog: drgn.Program, key: Hashable, build: Callable[[drgn.Program], T], refresh: bool = False
) -> T:
    """``prog.cache[key]``, built by ``build(prog)`` on first use.  A value of None is cached too (e.g.
    "cannot be read on this target"), so a failed look-up is not repeated.

    :param refresh: build it again and replace the cached value (kept if ``build`` raises).
    """
    cache = prog.cache
    if key in cache and not refresh:
        value: T = cache[key]
        return value
    value = cache[key] = build(prog)
    return value


def forget(prog: drgn.Program, key: Hashable) -> None:
    """Drop ``prog.cache[key]`` (if any): the next :func:`per_program` call builds it again.  For a live
    target whose state has changed since the value was cached."""
    prog.cache.pop(key, None)
