"""Benchmark: ``report`` against ``drops`` on the same big trace, side by side in the same run.

    python -m bench.bench_report [--kernel bookworm] [--repeat 3]

Builds (or reuses) the lab's ``bench-trace`` vmcore (tests/vmcores/guest/scenarios/bench-trace.sh: an
instance of 2 x 24 MiB full of ``net:net_dev_start_xmit`` and ``skb:kfree_skb`` FULL_RING drops on a full
tap ring).  The target is opened once (debug-info loading excluded) and the event formats, saved comms and
symbol table are read once before timing, so both commands start warm.  ``drops --json`` and
``report --json`` run in-process on that instance, output to /dev/null, alternately ``--repeat`` times;
the medians of wall-clock and CPU time are printed with the ratio report / drops (issue 14's target: at
most 1.2).  A benchmark, not a test: it prints, it does not assert.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import open_bench_trace  # noqa: E402
from skbinspect.cli.app import State, run  # noqa: E402
from skbinspect.ftrace.reader import event_formats, find_trace_array, saved_cmdlines  # noqa: E402
from skbinspect.ftrace.skb_events import symbolizer  # noqa: E402
from tests.vmcores.config import DEFAULT_KERNEL, KERNELS  # noqa: E402

INSTANCE = "bench"


def command(target: Any, args: List[str]) -> Tuple[float, float]:
    """Wall-clock and CPU seconds of one in-process ``skbinspect --json ARGS``, output to /dev/null."""
    state = State(None, None, (), True, True, prog_factory=lambda: target)
    t, c = time.perf_counter(), time.process_time()
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        rc = run(args, obj=state)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if rc:
        raise SystemExit(f"skbinspect {' '.join(args)} failed ({rc})")
    return wall, cpu


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default=DEFAULT_KERNEL, choices=list(KERNELS))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    target = open_bench_trace(args.kernel)
    prog = target.prog
    tr = find_trace_array(prog, INSTANCE)
    event_formats(prog)
    saved_cmdlines(prog)
    symbolizer(prog)._table()
    print(f"instance {INSTANCE}: {tr.entries} events in the buffer ({tr.written} written)")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    times: Dict[str, List[Tuple[float, float]]] = {"drops": [], "report": []}
    for i in range(args.repeat):
        for name in ("drops", "report"):  # alternately: a change of machine load hits both alike
            wall, cpu = command(target, [name, "-i", INSTANCE])
            times[name].append((wall, cpu))
            print(f"  run {i + 1}: {name:6} wall {wall:7.3f} s | cpu {cpu:7.3f} s")
    med = {
        n: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts))
        for n, ts in times.items()
    }
    for n, (w, c) in med.items():
        print(f"{n:6} median: wall {w:7.3f} s | cpu {c:7.3f} s")
    print(
        f"ratio report / drops: wall {med['report'][0] / med['drops'][0]:.2f} x | "
        f"cpu {med['report'][1] / med['drops'][1]:.2f} x (target: at most 1.2 x)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
