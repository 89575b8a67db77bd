"""Benchmark: ``ring --entries --json`` on a 65,536-entry full ring, against a naive drgn walk.

    python -m bench.bench_ring [--kernel bookworm] [--repeat 3]

Builds (or reuses) the lab's ``bench-ring`` vmcore: one tap queue whose 65,536-slot ring is full.
Debug-info loading is excluded: the target is opened once, then each method runs ``--repeat`` times.

The naive baselines give exactly what skbinspect gives, and the run checks it before timing:

* read: skbinspect's ``read_tap_devices(..., entries=True)`` and the entries' columns (bulk reads of the
  queue array, the skbs and the packet bytes, decoded column by column), against the naive walk: one drgn
  ``Object`` per slot and per member (``ring.queue[i]``, ``skb.len``, ...), the same 12 ``sk_buff``
  members and packet bytes, the same rules (link header before ``data``, accelerated VLAN tag), giving
  :class:`~skbinspect.tuntap.entries.RingEntry` objects equal to skbinspect's.  A second skbinspect line also builds a
  ``RingEntry`` per entry.  (Before 2026-11-22 the naive walk read 6 of the 12 members; that walk is kept
  as the last read line, for comparison with earlier figures.)
* command: ``ring --entries --json tapbig`` in-process on the opened target, JSON to /dev/null (entries
  read, rendered and written 4,096 at a time), against the naive walk + ``RingEntry.to_json`` (headers
  decoded frame by frame) + ``json.dumps``: the same entries JSON.
* summary: ``ring tapbig`` without ``-e`` (text, and ``--json``): counts by protocol and the top flows,
  against the naive walk + ``entries_summary_slow`` (each frame decoded and counted): the same summary.
* text: ``ring --entries tapbig`` as text piped to /dev/null (the entries table laid out by
  :func:`skbinspect.output.plain_table_lines`), against the same command with rich laying the table out
  (timed once: it is slow), after checking that both print the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import struct
import sys
import time
from typing import Dict, Iterator, List, Optional, TextIO, Tuple

import drgn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import timeit  # noqa: E402
from skbinspect.cli.app import State, run  # noqa: E402
from skbinspect.target.opener import open_target  # noqa: E402
from skbinspect.tuntap.devices import find_tap_devices, read_tap_devices  # noqa: E402
from skbinspect.tuntap.entries import HEADER_BYTES, UNSET_HEADER, RingEntry, entries_summary_slow  # noqa: E402
from tests.vmcores.config import DEFAULT_KERNEL, KERNELS  # noqa: E402
from tests.vmcores.kernels import fetch_kernel  # noqa: E402
from tests.vmcores.lab import build_vmcore  # noqa: E402

DEVICE = "tapbig"


def _naive_slots(prog: drgn.Program) -> Iterator[Tuple[int, drgn.Object, drgn.Object]]:
    """The naive walk's slots, from the consumer head while non-NULL: ``(index, slot, skb)``, one drgn
    Object each."""
    from drgn.helpers.linux.net import netdev_priv

    dev = find_tap_devices(prog, [DEVICE])[0][0]
    ring = netdev_priv(dev, "struct tun_struct").tfiles[0].tx_ring
    size = int(ring.size)
    head = int(ring.consumer_head)
    for k in range(size):
        i = (head + k) % size
        slot = ring.queue[i]
        if not slot:
            return
        yield i, slot, drgn.cast("struct sk_buff *", slot)


def naive_entries(prog: drgn.Program) -> List[RingEntry]:
    """What a straightforward helper would do: every slot and every ``sk_buff`` member through drgn
    Objects, the packet bytes with one read each; the same entries as skbinspect's."""
    has_vlan_present = any(m.name == "vlan_present" for m in prog.type("struct sk_buff").members if m.name)
    out = []
    for i, slot, skb in _naive_slots(prog):
        length = int(skb.len)
        linear = length - int(skb.data_len)
        p = int(skb.protocol)  # __be16
        e = RingEntry(
            i,
            "skb",
            slot.value_(),
            length=length,
            linear_length=linear,
            protocol=(p & 0xFF) << 8 | p >> 8,
            queue_mapping=int(skb.queue_mapping),
            tstamp_ns=int(skb.tstamp) or None,
            dev=skb.dev.value_() or None,
        )
        at = int(skb.data)
        mac_header = int(skb.mac_header)
        if mac_header != UNSET_HEADER and int(skb.head):
            mac = int(skb.head) + mac_header
            if at - 64 <= mac < at:  # the link header precedes data
                e.length += at - mac
                e.linear_length += at - mac
                at = mac
        vlan_tci, vlan_proto = int(skb.vlan_tci), int(skb.vlan_proto)
        present = int(skb.vlan_present) if has_vlan_present else vlan_tci or vlan_proto
        data = prog.read(at, min(e.linear_length, HEADER_BYTES))
        if present:  # an accelerated VLAN tag, inserted after the MAC addresses as a reader gets it
            e.vlan_tci = vlan_tci
            tag = struct.pack(">HH", (vlan_proto & 0xFF) << 8 | vlan_proto >> 8, vlan_tci)
            data = (data[:12] + tag + data[12:])[:HEADER_BYTES]
            e.length += 4
            e.linear_length += 4
        e.data = data
        out.append(e)
    return out


def naive_walk_fewer_members(prog: drgn.Program) -> list:
    """The naive walk of the earlier figures: 6 of the 12 members and the packet bytes."""
    out = []
    for i, slot, skb in _naive_slots(prog):
        length = int(skb.len)
        linear = length - int(skb.data_len)
        e = {
            "index": i,
            "address": hex(slot.value_()),
            "length": length,
            "protocol": int(skb.protocol),
            "queue_mapping": int(skb.queue_mapping),
            "dev": hex(skb.dev.value_()),
        }
        e["data"] = prog.read(int(skb.data), min(linear, HEADER_BYTES)).hex()
        out.append(e)
    return out


def naive_command_json(prog: drgn.Program) -> str:
    """The entries' JSON the naive way: the walk, ``to_json`` of each entry, ``json.dumps``."""
    return json.dumps([e.to_json() for e in naive_entries(prog)], separators=(",", ":"))


def naive_summary(prog: drgn.Program) -> Dict[str, object]:
    """The summary of ``ring DEV`` (no -e) the naive way: the walk, each frame decoded and counted."""
    return entries_summary_slow(naive_entries(prog))


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

    def command(*args: str, out: Optional[TextIO] = None) -> None:
        # the args say --json or not (before 2026-11-30 every line ran as --json, "ring (text, no -e)" too)
        state = State(None, None, (), True, False, prog_factory=lambda: target)
        with contextlib.ExitStack() as stack:
            sink = out if out is not None else stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(sink))
            rc = run([*args, "--no-holders", DEVICE], obj=state)
        assert rc == 0

    def command_rich_layout(*args: str, out: Optional[TextIO] = None) -> None:
        """``command`` with every piped table laid out by rich (output.plain_table_lines turned off)."""
        from skbinspect import output

        fast = output.plain_table_lines
        output.plain_table_lines = lambda t: None  # type: ignore[assignment]
        try:
            command(*args, out=out)
        finally:
            output.plain_table_lines = fast

    # the baselines give what skbinspect gives
    text, rich_text = io.StringIO(), io.StringIO()
    command("ring", "--entries", out=text)
    command_rich_layout("ring", "--entries", out=rich_text)
    assert text.getvalue() == rich_text.getvalue(), "the piped entries table differs from rich's layout"
    ours = io.StringIO()
    command("--json", "ring", "--entries", out=ours)
    queue = json.loads(ours.getvalue())["devices"][0]["queues"][0]
    assert json.loads(naive_command_json(prog)) == queue["entries"], "naive entries differ from skbinspect's"
    summary = io.StringIO()
    command("--json", "ring", out=summary)
    want = json.loads(json.dumps(naive_summary(prog)))
    assert json.loads(summary.getvalue())["devices"][0]["queues"][0]["summary"] == want, (
        "naive summary differs"
    )
    print("checked: the naive entries JSON and summary equal skbinspect's")

    # (name, timings, baseline name)
    rows: List[Tuple[str, List[float], str]] = []
    read_base = "read: naive Object walk, same 12 members"
    for name, fn in (
        (read_base, lambda: naive_entries(prog)),
        ("read: skbinspect API (read_tap_devices)", api),
        ("read: API + a RingEntry object per entry", api_objects),
        ("read: naive walk, 6 members (earlier figures)", lambda: naive_walk_fewer_members(prog)),
    ):
        rows.append((name, timeit(fn, args.repeat), read_base))
    cmd_base = "command: naive walk + to_json + json.dumps"
    for name, fn in (
        (cmd_base, lambda: naive_command_json(prog)),
        ("command: ring --entries --json", lambda: command("--json", "ring", "--entries")),
    ):
        rows.append((name, timeit(fn, args.repeat), cmd_base))
    sum_base = "summary: naive walk + decode + count"
    for name, fn in (
        (sum_base, lambda: naive_summary(prog)),
        ("summary: ring (text, no -e)", lambda: command("ring")),
        ("summary: ring --json (no -e)", lambda: command("--json", "ring")),
    ):
        rows.append((name, timeit(fn, args.repeat), sum_base))
    text_base = "text: ring --entries, rich's own table layout"
    rows.append((text_base, timeit(lambda: command_rich_layout("ring", "--entries"), 1), text_base))
    rows.append(
        ("text: ring --entries (piped)", timeit(lambda: command("ring", "--entries"), args.repeat), text_base)
    )
    medians = {name: statistics.median(ts) for name, ts, _ in rows}
    print(f"\n{'method':46} {'median s':>9} {'best s':>8} {'entries/s':>11} {'vs naive':>9}")
    for name, ts, base in rows:
        med = medians[name]
        print(f"{name:46} {med:9.3f} {min(ts):8.3f} {live / med:11.0f} {medians[base] / med:8.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
