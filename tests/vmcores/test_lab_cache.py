"""The lab cache does not grow with killed builds: their work directories are swept once no build can
still be using them (tests.vmcores.lab.sweep_stale_work)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.vmcores.lab import STALE_WORK_S, sweep_stale_work


def test_stale_work_directories_are_swept(tmp_path: Path) -> None:
    old, fresh, other, built = (tmp_path / n for n in (".host-old", ".host-fresh", ".lab-old", "host-0123"))
    for d in (old, fresh, other, built):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "vmcore").write_bytes(b"x")
    then = time.time() - STALE_WORK_S - 60
    for d in (old, other, built):
        os.utime(d, (then, then))
    sweep_stale_work(tmp_path, ".host-")
    assert not old.exists()  # killed long ago
    assert fresh.exists()  # a build may be running in it
    assert other.exists() and built.exists()  # another boot's, and a finished build
