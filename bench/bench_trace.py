"""Benchmark: the ftrace decoder (``trace --json`` and ``drops``) on a buffer of 500,000+ events, against
a naive decoder that reads every event through drgn Objects, measured in the same run.

    python -m bench.bench_trace [--kernel bookworm] [--repeat 3] [--instance bench]

Builds (or reuses) the lab's ``bench-trace`` vmcore (tests/vmcores/guest/scenarios/bench-trace.sh: an
instance of 2 x 24 MiB full of ``net:net_dev_start_xmit`` and ``skb:kfree_skb`` FULL_RING drops from two
senders on a full tap ring).  The target is opened once (debug-info loading excluded); event formats,
saved comms and the symbol table are read once before timing (reported as setup).

Measured (median of --repeat runs, events per second):

* decode: the ring walked and every sub-buffer decoded and merged in time order (``TraceReader.windows``);
* events+fields: the Python API, every event as a ``TraceEvent`` with its fields decoded;
* ``trace --json`` and ``drops --json``: the commands in-process on the opened target, output to /dev/null;
* naive: the same output built from drgn Objects (``struct ring_buffer_event``, ``struct trace_entry``,
  ``struct trace_event_raw_*``) one event at a time, merged with ``sorted``.

Peak memory of the streamed ``trace --json`` (tracemalloc, Python allocations) is measured after 10%,
50% and 100% of the events, to show it does not grow with the number of events.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from typing import Any, Callable, Dict, List, Optional, Tuple

import drgn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import open_bench_trace  # noqa: E402
from skbinspect.cli.app import State, run  # noqa: E402
from skbinspect.ftrace.reader import TraceReader, event_formats, find_trace_array, saved_cmdlines  # noqa: E402
from skbinspect.ftrace.render import TraceTextFormatter, event_json  # noqa: E402
from skbinspect.ftrace.skb_events import symbolizer  # noqa: E402
from tests.vmcores.config import DEFAULT_KERNEL, KERNELS  # noqa: E402

INSTANCE = "bench"


# ---- the naive decoder -------------------------------------------------------------------------------


def _local(v: drgn.Object) -> int:
    while True:
        t = v.type_
        while t.kind == drgn.TypeKind.TYPEDEF:
            t = t.type
        if t.kind != drgn.TypeKind.STRUCT:
            return v.value_()
        v = getattr(v, t.members[0].name)


def naive_events(prog: drgn.Program, name: str) -> List[Dict[str, Any]]:
    """Every event of the instance, read one drgn Object at a time, merged by time stamp."""
    from drgn.helpers.linux.list import list_for_each_entry

    tr = next(
        t
        for t in list_for_each_entry("struct trace_array", prog["ftrace_trace_arrays"].address_of_(), "list")
        if t.name and t.name.string_().decode() == name
    )
    buf = tr.array_buffer.buffer
    ids = {}
    for call in list_for_each_entry("struct trace_event_call", prog["ftrace_events"].address_of_(), "list"):
        if call.flags.value_() & prog["TRACE_EVENT_FL_TRACEPOINT"].value_():
            ids[call.event.type.value_()] = call.tp.name.string_().decode()
    order = 0
    try:
        order = buf.subbuf_order.value_()
    except AttributeError:
        pass
    out = []
    page_size = prog["PAGE_SIZE"].value_() << order
    for cpu in range(prog["nr_cpu_ids"].value_()):
        cb = buf.buffers[cpu]
        if not cb:
            continue
        pages = []
        reader = cb.reader_page
        pages.append((reader, int(reader.read)))
        if reader != cb.commit_page:
            # find the head: the link flagged RB_PAGE_HEAD (1)
            pos = cb.pages
            for _ in range(int(cb.nr_pages) + 1):
                nxt = pos.next.value_()
                if nxt & 3 == 1:
                    head = drgn.Object(prog, "struct buffer_page *", nxt & ~3)
                    break
                pos = drgn.Object(prog, "struct list_head *", nxt & ~3)
            bp = head
            for _ in range(int(cb.nr_pages) + 1):
                pages.append((bp, 0))
                if bp == cb.commit_page:
                    break
                bp = drgn.Object(prog, "struct buffer_page *", bp.list.next.value_() & ~3)
        for bp, start in pages:
            data = bp.page
            ts = data.time_stamp.value_()
            commit = _local(data.commit) & 0x3FFFFFFF
            base = data.data.address_
            off = 0
            while off < commit and off < page_size:
                ev = drgn.Object(prog, "struct ring_buffer_event", address=base + off)
                tl = ev.type_len.value_()
                delta = ev.time_delta.value_()
                if tl == 29:
                    if delta == 0:
                        break
                    off += ev.array[0].value_() + 4
                    continue
                if tl == 30:
                    ts += (ev.array[0].value_() << 27) + delta
                    off += 8
                    continue
                if tl == 31:
                    ts = (ev.array[0].value_() << 27) + delta
                    off += 8
                    continue
                ts += delta
                if tl:
                    p, length = base + off + 4, tl * 4
                else:
                    length = ev.array[0].value_() - 4
                    p = base + off + 8
                off = p - base + length
                if p - base - 4 < start:
                    continue
                ent = drgn.Object(prog, "struct trace_entry", address=p)
                typ = ent.type.value_()
                e: Dict[str, Any] = {
                    "ts": ts,
                    "cpu": cpu,
                    "pid": ent.pid.value_(),
                    "event": ids.get(typ, str(typ)),
                }
                if e["event"] == "kfree_skb":
                    rec = drgn.Object(prog, "struct trace_event_raw_kfree_skb", address=p)
                    loc = rec.location.value_()
                    try:
                        sym = prog.symbol(loc)
                        locs = f"{sym.name}+{loc - sym.address:#x}"
                    except LookupError:
                        locs = hex(loc)
                    e["fields"] = {
                        "skbaddr": hex(rec.skbaddr.value_()),
                        "location": hex(loc),
                        "protocol": rec.protocol.value_(),
                    }
                    e["location_symbol"] = locs
                    try:
                        e["reason"] = rec.reason.format_(type_name=False).replace("SKB_DROP_REASON_", "")
                    except AttributeError:
                        pass
                elif e["event"] == "net_dev_start_xmit":
                    rec = drgn.Object(prog, "struct trace_event_raw_net_dev_start_xmit", address=p)
                    loc = rec.__data_loc_name.value_()
                    dev = prog.read(p + (loc & 0xFFFF), loc >> 16).split(b"\0")[0].decode()
                    e["fields"] = {
                        "name": dev,
                        "skbaddr": hex(rec.skbaddr.value_()),
                        "queue_mapping": rec.queue_mapping.value_(),
                        "len": rec.len.value_(),
                    }
                out.append(e)
    out.sort(key=lambda e: (e["ts"], e["cpu"]))
    return out


def naive_trace_json(prog: drgn.Program) -> int:
    evs = naive_events(prog, INSTANCE)
    with open(os.devnull, "w") as null:
        for e in evs:
            null.write(json.dumps(e) + "\n")
    return len(evs)


def naive_drops(prog: drgn.Program) -> int:
    evs = naive_events(prog, INSTANCE)
    groups: Counter = Counter()
    dev: Dict[str, str] = {}
    devices: Counter = Counter()
    for e in evs:
        if e["event"] == "net_dev_start_xmit":
            dev[e["fields"]["skbaddr"]] = e["fields"]["name"]
        elif e["event"] == "kfree_skb":
            key = (e.get("reason"), e["location_symbol"])
            groups[key] += 1
            devices[(key, dev.get(e["fields"]["skbaddr"]))] += 1
    with open(os.devnull, "w") as null:
        null.write(json.dumps([[list(k), n] for k, n in groups.items()]))
    return sum(groups.values())


# ---- skbinspect ------------------------------------------------------------------------------------------


def decode_only(prog: drgn.Program, tr: Any) -> int:
    return sum(len(keys) for keys, _ in TraceReader(prog, tr).windows())


def events_fields(prog: drgn.Program, tr: Any) -> int:
    n = 0
    for ev in TraceReader(prog, tr).events():
        _ = ev.fields  # decode them: the cost being measured
        n += 1
    return n


def command(prog: drgn.Program, target: Any, args: List[str]) -> None:
    state = State(None, None, (), True, True, prog_factory=lambda: target)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        rc = run(args, obj=state)
    if rc:
        raise SystemExit(f"skbinspect {' '.join(args)} failed ({rc})")


def timeit(fn: Callable[[], object], repeat: int) -> Tuple[float, float, Any]:
    """Median wall-clock and CPU (process) seconds of ``repeat`` runs, and the last result.  Both are
    reported: on a shared 2-core machine other work inflates wall-clock time."""
    walls = []
    cpus = []
    res = None
    for _ in range(repeat):
        t = time.perf_counter()
        c = time.process_time()
        res = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), res


def streamed_peak(prog: drgn.Program, tr: Any, limit: Optional[int]) -> Tuple[int, int]:
    """(events streamed, tracemalloc peak bytes) for ``trace --json`` output of the first ``limit`` events."""
    syms = symbolizer(prog)
    tracemalloc.start()
    tracemalloc.reset_peak()
    reader = TraceReader(prog, tr)
    fmt = TraceTextFormatter(reader, syms)
    n = 0
    with open(os.devnull, "w") as null:
        for ev in reader.events():
            null.write(json.dumps(event_json(ev, fmt, tr.name, True)) + "\n")
            n += 1
            if limit is not None and n >= limit:
                break
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return n, peak


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", default=DEFAULT_KERNEL, choices=list(KERNELS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive-repeat", type=int, default=1)
    args = ap.parse_args(argv)

    target = open_bench_trace(args.kernel)
    prog = target.prog

    t0 = time.perf_counter()
    tr = find_trace_array(prog, INSTANCE)
    event_formats(prog)
    saved_cmdlines(prog)
    symbolizer(prog)._table()
    setup = time.perf_counter() - t0
    total = tr.entries
    print(
        f"instance {INSTANCE}: {total} events in the buffer ({tr.written} written), "
        f"{len(tr.cpus)} CPUs, {sum(c.nr_pages for c in tr.cpus)} sub-buffers of {tr.subbuf_size} bytes; "
        f"setup (formats, comms, symbols) {setup:.2f} s"
    )
    if total < 500_000:
        print(f"WARNING: only {total} events (the benchmark wants at least 500,000)")

    rows: List[Tuple[str, float, float, int]] = []

    def bench(
        label: str, fn: Callable[[], object], repeat: int, n: Optional[int] = None
    ) -> Tuple[float, float]:
        dt, ct, res = timeit(fn, repeat)
        count = n if n is not None else int(res)  # type: ignore[arg-type]
        if count != total:
            print(f"WARNING: {label} saw {count} events, the buffer has {total}")
        rows.append((label, dt, ct, count))
        print(
            f"  {label:42} wall {dt:7.3f} s {count / dt / 1e6:6.3f} M ev/s | "
            f"cpu {ct:7.3f} s {count / ct / 1e6:6.3f} M ev/s"
        )
        return dt, ct

    print(f"load average before: {os.getloadavg()[0]:.2f}")

    print("skbinspect:")
    bench("decode (walk + decode + merge)", lambda: decode_only(prog, tr), args.repeat)
    bench("events + fields (Python API)", lambda: events_fields(prog, tr), args.repeat)
    t_json = bench(
        "trace --json (all events, to /dev/null)",
        lambda: command(prog, target, ["trace", "-i", INSTANCE]),
        args.repeat,
        total,
    )
    t_drops = bench(
        "drops --json", lambda: command(prog, target, ["drops", "-i", INSTANCE]), args.repeat, total
    )
    print("naive (one drgn Object per event and field):")
    t_naive_json = bench("naive trace json", lambda: naive_trace_json(prog), args.naive_repeat)
    t_naive_drops = bench("naive drops", lambda: naive_drops(prog), args.naive_repeat, total)
    d_wall, d_cpu = rows[0][1], rows[0][2]
    print("ratios (naive time / skbinspect time, same run; wall | cpu):")
    print(
        f"  trace --json: {t_naive_json[0] / t_json[0]:6.1f} x | {t_naive_json[1] / t_json[1]:6.1f} x faster"
    )
    print(
        f"  drops:        {t_naive_drops[0] / t_drops[0]:6.1f} x | {t_naive_drops[1] / t_drops[1]:6.1f} x faster"
    )
    print(
        f"  decode alone: {total / d_wall / 1e6:.3f} M events/s wall, {total / d_cpu / 1e6:.3f} M events/s cpu; "
        f"{t_naive_json[1] / d_cpu:.0f} x less CPU than the naive JSON path"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("peak Python memory of streamed trace --json (tracemalloc):")
    for frac in (0.1, 0.5, None):
        n, peak = streamed_peak(prog, tr, int(total * frac) if frac else None)
        print(f"  after {n:8d} events: peak {peak / 1e6:7.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
