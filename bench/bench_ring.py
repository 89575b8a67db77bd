"""Benchmark: ``ring --entries --json`` on a 65,536-entry full ring, against a naive drgn walk.

    python -m bench.bench_ring [--kernel bookworm] [--repeat 3]

Builds (or reuses) the lab's ``bench-ring`` vmcore: one tap queue whose 65,536-slot ring is full.
Debug-info loading is excluded: the target is opened once, then each method runs ``--repeat`` times.

* skbinspect API: ``read_tap_devices(..., entries=True)`` and the entries' columns (bulk reads, decoded
  column by column; on a vmcore the entries are read on first use, so the line asks for the columns); the
  entries are an ``EntryTable`` whose ``RingEntry`` objects are built on first use, so a second line also
  builds them (iterating every entry).
* ``ring --entries --json`` reads, renders and writes 4,096 entries at a time (nothing kept).
* skbinspect command: ``ring --entries --json tapbig`` in-process on the opened target, JSON to /dev/null.
* summary: ``ring tapbig`` without ``-e`` (text, and ``--json``): counts by protocol and the top flows of
  every entry, against the naive walk decoding each frame and counting it.
* naive baseline: one drgn ``Object`` per slot and per field (``ring.queue[i]``, ``skb.len``, ...), the same
  packet bytes read and the same headers decoded.
"""

from __future__ import annotations

import argparse
import json
import contextlib
import os
import statistics
import sys
import time
from typing import Callable, List

import drgn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skbinspect.cli import State, run  # noqa: E402
from skbinspect.packet import decode_ethernet  # noqa: E402
from skbinspect.target import open_target  # noqa: E402
from skbinspect.tuntap import find_tap_devices, read_tap_devices  # noqa: E402
from tests.vmcores.config import DEFAULT_KERNEL, KERNELS  # noqa: E402
from tests.vmcores.kernels import fetch_kernel  # noqa: E402
from tests.vmcores.lab import build_vmcore  # noqa: E402

DEVICE = "tapbig"


def naive_walk(prog: drgn.Program, decode: bool = False) -> list:
    """Read every slot and every entry through drgn Objects (what a straightforward helper would do):
    the same fields and packet bytes skbinspect reads; with ``decode``, the same headers decoded."""
    dev = find_tap_devices(prog, [DEVICE])[0][0]
    from drgn.helpers.linux.net import netdev_priv

    tun = netdev_priv(dev, "struct tun_struct")
    ring = tun.tfiles[0].tx_ring
    size = int(ring.size)
    head = int(ring.consumer_head)
    out = []
    for k in range(size):
        i = (head + k) % size
        slot = ring.queue[i]
        if not slot:
            break
        skb = drgn.cast("struct sk_buff *", slot)
        length = int(skb.len)
        linear = length - int(skb.data_len)
        e = {"index": i, "address": hex(slot.value_()), "length": length, "protocol": int(skb.protocol),
             "queue_mapping": int(skb.queue_mapping), "dev": hex(skb.dev.value_())}
        data = prog.read(int(skb.data), min(linear, 256))
        e["data"] = data.hex()
        if decode:
            e["headers"] = decode_ethernet(data).layers
        out.append(e)
    return out


def naive_command(prog: drgn.Program) -> None:
    entries = naive_walk(prog, decode=True)
    with open(os.devnull, "w") as null:
        null.write(json.dumps({"devices": [{"name": DEVICE, "queues": [{"entries": entries}]}]}))


def naive_summary(prog: drgn.Program) -> None:
    """The summary of ``ring DEV`` (no -e) the naive way: the walk, each frame decoded, counted per entry."""
    import collections

    from skbinspect.packet import flow_text

    protos: collections.Counter = collections.Counter()
    flows: collections.Counter = collections.Counter()
    for e in naive_walk(prog, decode=True):
        layers = e["headers"]
        protos[layers[-1]["proto"] if layers else "?"] += 1
        f = flow_text(layers)
        if f is not None:
            flows[f] += 1
    with open(os.devnull, "w") as null:
        null.write(json.dumps({"protocols": dict(protos.most_common()), "top_flows": flows.most_common(5)}))


def timeit(fn: Callable[[], object], repeat: int) -> List[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default=DEFAULT_KERNEL, choices=list(KERNELS))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    lab = build_vmcore(fetch_kernel(KERNELS[args.kernel]), "bench-ring")
    t = time.perf_counter()
    target = open_target(core=lab.vmcore, symbols=lab.symbols)
    print(f"vmcore {lab.vmcore}\nopen + debug info: {time.perf_counter() - t:.2f} s (excluded below)")
    prog = target.prog

    devs = read_tap_devices(prog, [DEVICE], holders=False)
    live = devs[0].queues[0].live
    print(f"{DEVICE}: ring size {devs[0].queues[0].ring.size}, {live} live entries")

    def api() -> None:
        for d in read_tap_devices(prog, [DEVICE], entries=True, holders=False):
            for q in d.queues:
                q.entries.columns()  # a vmcore's entries are read on first use: read them now

    def api_objects() -> None:
        for d in read_tap_devices(prog, [DEVICE], entries=True, holders=False):
            for q in d.queues:
                for e in q.entries:
                    assert e.address

    def command(*args: str) -> None:
        state = State(None, None, (), True, True, prog_factory=lambda: target)
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            rc = run([*args, "--no-holders", DEVICE], obj=state)
        assert rc == 0

    results = {
        "read: skbinspect API (read_tap_devices)": timeit(api, args.repeat),
        "read: API + a RingEntry object per entry": timeit(api_objects, args.repeat),
        "read: naive drgn Object walk": timeit(lambda: naive_walk(prog), args.repeat),
        "command: ring --entries --json": timeit(lambda: command("--json", "ring", "--entries"), args.repeat),
        "command: naive walk + same decode + JSON": timeit(lambda: naive_command(prog), args.repeat),
        "summary: ring (text, no -e)": timeit(lambda: command("ring"), args.repeat),
        "summary: ring --json (no -e)": timeit(lambda: command("--json", "ring"), args.repeat),
        "summary: naive walk + decode + count": timeit(lambda: naive_summary(prog), args.repeat),
    }
    print(f"\n{'method':44} {'median s':>9} {'best s':>8} {'entries/s':>11} {'vs naive':>9}")
    for name, ts in results.items():
        kind = name.split(":")[0]
        base = statistics.median(results[next(k for k in results if k.startswith(kind) and "naive" in k)])
        med = statistics.median(ts)
        print(f"{name:44} {med:9.3f} {min(ts):8.3f} {live / med:11.0f} {base / med:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
