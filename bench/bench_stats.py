"""Benchmark: ``reasons`` and ``stats`` on the lab vmcores, against a naive drgn walk.

    python bench/bench_stats.py [--kernel bookworm ...] [--repeat 5]

Debug-info loading is excluded: each target is opened once, then each method runs ``--repeat`` times
(caches cleared between runs, so every run reads the target again).

* reasons: ``drop_reason_table()`` built from scratch (subsystem/string tables read in bulk).
* stats API: ``drop_stats()`` (softnet, every device, drop_monitor), one ``prog.read()`` per per-CPU struct.
* naive baseline: the same per-CPU counters through one drgn ``Object`` per CPU and per field
  (``per_cpu_ptr(dev.core_stats, cpu).rx_dropped`` ...).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import drgn  # noqa: E402

from bench.timing import timeit  # noqa: E402
from skbinspect.counters.reasons import drop_reason_table  # noqa: E402
from skbinspect.counters.stats import drop_stats  # noqa: E402
from skbinspect.memory.cache import forget  # noqa: E402
from skbinspect.target.opener import open_target  # noqa: E402
from tests.vmcores.config import KERNELS, kernel_names  # noqa: E402
from tests.vmcores.kernels import fetch_kernel  # noqa: E402
from tests.vmcores.lab import build_vmcore  # noqa: E402


def _clear(prog: drgn.Program) -> None:
    """Forget what skbinspect cached on the program, except struct layouts (DWARF, not target memory)."""
    for k in [k for k in prog.cache if str(k).startswith("skbinspect.")]:
        forget(prog, k)


def naive_stats(prog: drgn.Program) -> Dict[str, int]:
    """Per-CPU softnet and core/driver counters, one drgn Object per field."""
    from drgn.helpers.linux.cpumask import for_each_possible_cpu
    from drgn.helpers.linux.net import for_each_netdev
    from drgn.helpers.linux.percpu import per_cpu, per_cpu_ptr

    out: Dict[str, int] = {}
    cpus = list(for_each_possible_cpu(prog))
    sd = prog["softnet_data"]
    for c in cpus:
        s = per_cpu(sd, c)
        out[f"softnet{c}"] = s.processed.value_() + s.time_squeeze.value_() + s.input_pkt_queue.qlen.value_()
    has_core = prog.type("struct net_device").has_member("core_stats")
    for dev in for_each_netdev(prog):
        total = 0
        if has_core and dev.core_stats.value_():
            for c in cpus:
                p = per_cpu_ptr(dev.core_stats, c)
                total += p.rx_dropped.value_() + p.tx_dropped.value_() + p.rx_nohandler.value_()
        out[dev.name.string_().decode()] = total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", action="append", choices=sorted(KERNELS), help="lab kernel(s); default all")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    for name in a.kernel or kernel_names():
        lab = build_vmcore(fetch_kernel(KERNELS[name]))
        t0 = time.perf_counter()
        target = open_target(lab.vmcore, None, lab.symbols, False)
        open_s = time.perf_counter() - t0
        prog = target.prog
        drop_stats(prog)  # warm drgn's type caches once, as a real run would after opening

        def reasons() -> None:
            _clear(prog)
            drop_reason_table(prog)

        def stats() -> None:
            _clear(prog)
            drop_stats(prog)

        # Per-unit cost: one device's per-CPU core counters (tap0), bulk vs one Object per field.
        from drgn.helpers.linux.cpumask import for_each_possible_cpu
        from drgn.helpers.linux.net import netdev_get_by_name
        from drgn.helpers.linux.percpu import per_cpu_ptr

        from skbinspect.counters.stats import read_percpu_counters
        from skbinspect.memory.layout import struct_layout

        tap0 = netdev_get_by_name(prog, "tap0")
        if prog.type("struct net_device").has_member("core_stats"):
            ct = prog.type("struct net_device_core_stats")
            names = [m.name for m in ct.members]
            ptr = tap0.core_stats
            lay = struct_layout(prog, "struct net_device_core_stats", names)
        else:  # 5.10: tun's own per-CPU counters
            from drgn.helpers.linux.net import netdev_priv

            names = ["rx_dropped", "tx_dropped", "rx_frame_errors"]
            ptr = netdev_priv(tap0, "struct tun_struct").pcpu_stats
            lay = struct_layout(prog, "struct tun_pcpu_stats", names)
        cpus = list(for_each_possible_cpu(prog))
        loops = 200

        def bulk_dev() -> None:
            for _ in range(loops):
                read_percpu_counters(prog, ptr.value_(), lay, "x")

        def naive_dev() -> None:
            for _ in range(loops):
                {(c, n): getattr(per_cpu_ptr(ptr, c), n).value_() for c in cpus for n in names}

        res = {
            "reasons table": timeit(reasons, a.repeat),
            "stats (all)": timeit(stats, a.repeat),
            "naive per-field Objects (subset)": timeit(lambda: naive_stats(prog), a.repeat),
        }
        per_dev = {
            "one device's per-CPU counters, bulk": timeit(bulk_dev, a.repeat),
            "same, one Object per field": timeit(naive_dev, a.repeat),
        }
        n = len(drop_reason_table(prog).reasons)
        d = drop_stats(prog)
        print(
            f"{name} ({target.release}): open {open_s:.2f}s; {n} reasons; {len(d.devices)} devices, "
            f"{len(d.softnet.cpus)} CPUs"
        )
        for k, v in res.items():
            print(f"  {k:40s} median {statistics.median(v) * 1000:8.1f} ms  (min {min(v) * 1000:.1f})")
        for k, v in per_dev.items():
            print(
                f"  {k:40s} median {statistics.median(v) / loops * 1e6:8.1f} us per device "
                f"({len(cpus)} CPUs x {len(names)} counters)"
            )


if __name__ == "__main__":
    main()
