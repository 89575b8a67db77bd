"""Timing helper shared by the benchmarks."""

from __future__ import annotations

import time
from typing import Callable, List

__all__ = ["timeit"]


def timeit(fn: Callable[[], object], repeat: int) -> List[float]:
    """Wall-clock seconds of each of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
