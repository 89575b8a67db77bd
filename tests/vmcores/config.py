"""Lab configuration: which kernels, where the cache lives."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

__all__ = ["KernelSpec", "KERNELS", "DEFAULT_KERNEL", "cache_dir", "kernel_names"]


@dataclass(frozen=True)
class KernelSpec:
    """A Debian suite whose current ``cloud-amd64`` kernel the lab uses."""

    name: str  # short name used on the command line and in test ids
    suite: str  # Debian suite
    series: str  # upstream series, for humans ("6.1", "7.x")


KERNELS: Dict[str, KernelSpec] = {
    k.name: k
    for k in (
        KernelSpec("bullseye", "bullseye", "5.10"),
        KernelSpec("bookworm", "bookworm", "6.1"),
        KernelSpec("trixie", "trixie", "6.12"),
        KernelSpec("sid", "sid", "7.x"),
    )
}

#: The kernel the README's quick start uses.
DEFAULT_KERNEL = "bookworm"


def kernel_names() -> List[str]:
    """Kernels selected by ``SKBINSPECT_LAB_KERNELS`` (comma separated), default all."""
    env = os.environ.get("SKBINSPECT_LAB_KERNELS", "").strip()
    if not env or env == "all":
        return list(KERNELS)
    names = [n.strip() for n in env.split(",") if n.strip()]
    for n in names:
        if n not in KERNELS:
            raise SystemExit(f"SKBINSPECT_LAB_KERNELS: unknown kernel {n!r}; known: {', '.join(KERNELS)}")
    return names


def cache_dir() -> Path:
    """Root of everything the lab builds: ``$SKBINSPECT_LAB_CACHE`` or ``~/.cache/skbinspect-lab``."""
    env = os.environ.get("SKBINSPECT_LAB_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skbinspect-lab"
