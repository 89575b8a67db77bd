"""Timing helper and the big-trace target shared by the benchmarks."""

from __future__ import annotations

import time
from typing import Any, Callable, List

__all__ = ["open_bench_trace", "timeit"]


def timeit(fn: Callable[[], object], repeat: int) -> List[float]:
    """Wall-clock seconds of each of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def open_bench_trace(kernel_name: str) -> Any:
    """The lab's ``bench-trace`` vmcore of ``kernel_name`` (built or found), opened once: a
    :class:`skbinspect.target.opener.Target`.  Says where it is and how long each step took."""
    from skbinspect.target.opener import open_target
    from tests.vmcores.config import KERNELS
    from tests.vmcores.kernels import fetch_kernel
    from tests.vmcores.lab import build_vmcore

    kernel = fetch_kernel(KERNELS[kernel_name])
    t0 = time.perf_counter()
    lab = build_vmcore(kernel, "bench-trace")
    print(f"vmcore: {lab.vmcore} ({time.perf_counter() - t0:.0f} s to build or find)")
    t0 = time.perf_counter()
    target = open_target(core=lab.vmcore, symbols=lab.symbols)
    print(f"opened in {time.perf_counter() - t0:.1f} s: {target.release}")
    return target
