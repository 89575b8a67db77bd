"""Benchmark: types from the kernel's BTF + kallsyms against types from the -dbg package's DWARF, on
the same lab vmcore, in one run.

    python bench/bench_btf.py [--kernel bookworm ...] [--repeat 5]

* open: ``open_target()`` in this process (``--types dwarf`` with the lab's debug files, ``--types btf``
  with none): a fresh drgn program each time; DWARF indexing, or BTF + kallsyms + module BTF.
* report: a whole ``skbinspect --json report`` as a user runs it (a new process: Python start, imports,
  open, the report), each mode.

Runs alternate between the modes so that a busy machine slows both alike; the medians and the ratio
BTF/DWARF are printed.  Kernels without kallsyms in VMCOREINFO (5.10) cannot open in BTF mode and are
skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skbinspect.target.opener import open_target  # noqa: E402
from tests.vmcores.config import KERNELS, kernel_names  # noqa: E402
from tests.vmcores.kernels import fetch_kernel  # noqa: E402
from tests.vmcores.lab import LabVmcore, build_vmcore  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _open(lab: LabVmcore, mode: str) -> float:
    t0 = time.perf_counter()
    if mode == "dwarf":
        open_target(lab.vmcore, symbols=lab.symbols, default_symbols=False, types="dwarf")
    else:
        open_target(lab.vmcore, default_symbols=False, types="btf")
    return time.perf_counter() - t0


def _report(lab: LabVmcore, mode: str) -> float:
    args = [sys.executable, "-m", "skbinspect", "-c", lab.vmcore, "--no-default-symbols", "--types", mode]
    if mode == "dwarf":
        args += sum((["-s", s] for s in lab.symbols), [])
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    p = subprocess.run(args + ["--json", "report"], capture_output=True, env=env, cwd=ROOT)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"report --types {mode} failed: {p.stderr.decode(errors='replace')}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", action="append", choices=sorted(KERNELS), help="lab kernel(s); default all")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    for name in a.kernel or kernel_names():
        lab = build_vmcore(fetch_kernel(KERNELS[name]))
        if KERNELS[name].series == "5.10":
            print(
                f"{name}: skipped: a 5.10 dump has no kallsyms in VMCOREINFO, so it cannot open without DWARF"
            )
            continue
        times: Dict[str, Dict[str, List[float]]] = {
            "open": {"dwarf": [], "btf": []},
            "report": {"dwarf": [], "btf": []},
        }
        _open(lab, "btf")  # warm the page cache for both files
        _open(lab, "dwarf")
        for _ in range(a.repeat):
            for mode in ("dwarf", "btf"):
                times["open"][mode].append(_open(lab, mode))
        for _ in range(a.repeat):
            for mode in ("dwarf", "btf"):
                times["report"][mode].append(_report(lab, mode))
        print(f"{name} ({lab.kernel.release}), {a.repeat} runs each, median (min):")
        for what, t in times.items():
            d, b = statistics.median(t["dwarf"]), statistics.median(t["btf"])
            print(
                f"  {what:7s} DWARF {d:6.3f} s ({min(t['dwarf']):.3f})   BTF {b:6.3f} s ({min(t['btf']):.3f})"
                f"   BTF/DWARF {b / d:.2f}"
            )


if __name__ == "__main__":
    main()
