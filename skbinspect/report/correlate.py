"""``skbinspect report``: one post-mortem summary of a target, most important first.

The report reads the target once (tun/tap queues, the kfree_skb trace, drop counters) and correlates:

* **ring-full drops**: drops whose location is a tun/tap driver's enqueue function (``tun_net_xmit``,
  ``tap_handle_frame``, where ``ptr_ring_produce()`` fails on a full ring) or whose reason is
  ``FULL_RING``, tied to the full queues of that driver (by the device the buffer names for the skb when
  it does, else to the driver's full queues);
* **counters against the trace**: the device counter those drops increment compared with the trace's
  count (the counter is cumulative, the trace is a window; the trace having more means drops that were
  not counted);
* **memory reused**: kfree_skb addresses that are now queued again in a ring (the slab object was freed
  and reallocated for a new skb);
* **stale skbs**: what can still be read of a dropped skb whose slab object is still free (device,
  length, headers) -- stale, best-effort evidence, as the allocator may have overwritten parts of it.

How the drops are tied to queues, and what that can and cannot tell, is in docs/kernel/report.md.
Logic only; rendering is in :mod:`skbinspect.report.render`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import drgn

from skbinspect.ftrace.attribution import (
    ENQUEUE_FUNCTIONS,
    KIND_COUNTER,
    KIND_MODULE,
    Portion,
    location_function,
    location_module,
    ring_full_counter_moved,
)
from skbinspect.memory.problems import section_note

__all__ = [
    "DropRef",
    "QueueVerdict",
    "CounterCheck",
    "ReusedSkb",
    "StaleSkb",
    "TraceLimits",
    "Report",
    "build_report",
    "ENQUEUE_FUNCTIONS",
    "MAX_STALE_PER_QUEUE",
    "CAUSE_CODES",
]

#: The stable codes of :attr:`QueueVerdict.cause_code` (``--json``), one per kind of cause.
CAUSE_CODES = {
    "reader-stalled": "the ring is full and the process holding the queue has not consumed",
    "no-reader": "the ring is full and no process holds the queue",
    "vhost-no-guest-buffers": "vhost-net took a batch from the ring and holds it: the guest posts no RX buffers",
    "vhost-stalled": "the ring is full and its vhost-net worker has not consumed",
    "reader-caught-up": "ring-full drops, but the ring is not full now",
    "queues-unreadable": "ring-full drops on a device whose queues could not be read",
}

#: Stale skbs read per queue (the most recent drops: their slab objects are the least likely reused).
MAX_STALE_PER_QUEUE = 8


_fn = location_function
_module = location_module


@dataclass
class DropRef:
    """A drop group (reason, location) of the trace, as tied to a queue."""

    reason: Optional[str]
    location: Optional[str]  # the address, hex
    location_symbol: Optional[str]
    count: int
    first_s: Optional[float]
    last_s: Optional[float]
    rate_per_s: Optional[float]
    tied_by: str  # "device" (the buffer names the skb's device), "topology (via DEV)" (the buffer names a
    # device whose frames reach this one: a veth peer, a macvlan/ipvlan lower device, a bridge), "driver"
    # (the driver's devices with a full queue), "stack" (the callers in the drops' stacks name the device
    # kind); " (ambiguous)" when several devices could be it
    candidates: List[str] = field(default_factory=list)  # the other devices these drops may belong to

    @property
    def ambiguous(self) -> bool:
        """These drops may be another device's (:attr:`candidates`): counted once, in
        :attr:`Report.shared_drops`, not in any device's count."""
        return self.tied_by.endswith("(ambiguous)")


@dataclass
class Holder:
    pid: int
    comm: str
    fd: int
    state: Optional[str] = None  # task state letter (R, S, D, T, ...) when readable
    kind: str = "process"  # "process" or "vhost" (a vhost-net worker reads the queue)


@dataclass
class StaleSkb:
    """What is still readable of a freed skb (its slab object not reused): stale, best-effort."""

    address: int
    ts_s: Optional[float]
    slab_state: str  # "free", "reused", "unknown"
    device: Optional[str] = None
    length: Optional[int] = None
    summary: Optional[str] = None
    error: Optional[str] = None


@dataclass
class QueueVerdict:
    """One tun/tap queue that is full or was dropping, with the likely cause.

    :ivar full: the ring is full now (the kernel's test: ``queue[producer] != NULL``).
    :ivar drops: drop groups of the trace tied to this queue.
    :ivar drop_count: their total, without the drops that may be another device's
        (:attr:`ambiguous_count`).
    :ivar cause_code: the cause as a stable code (see :data:`CAUSE_CODES`).
    :ivar vhost_batch: skbs a vhost-net worker took from this ring into its rxq batch and still holds.
    """

    device: str
    ifindex: int
    kind: str
    queue: Optional[int]
    full: bool
    live: int
    size: int
    holders: List[Holder]
    drops: List[DropRef]
    drop_count: int
    first_drop_s: Optional[float]
    last_drop_s: Optional[float]
    span_s: Optional[float]
    rate_per_s: Optional[float]
    ago_s: Optional[float]  # last drop, seconds before the last event in the buffer
    counter: Optional[str]
    counter_value: Optional[int]
    cause: str
    summary: str
    stale_skbs: List[StaleSkb] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    cause_code: str = ""
    vhost_batch: int = 0
    #: the first and last drop, seconds before the dump (at least: see :attr:`Report.dump_s`)
    first_before_dump_s: Optional[float] = None
    last_before_dump_s: Optional[float] = None

    @property
    def ambiguous_count(self) -> int:
        """How many of :attr:`drop_count` may be another device's (see :attr:`DropRef.ambiguous`)."""
        return sum(r.count for r in self.drops if r.ambiguous)


@dataclass
class CounterCheck:
    """A device counter compared with the trace's count of the drops it should count."""

    device: str
    counter: str
    counter_value: int
    trace_count: int
    verdict: str  # "agree", "counter-higher", "trace-higher", "unattributed" (drops at the driver's drop
    # site are tied to no device and may be the difference), "unknown" (counters not fully readable)
    explanation: str


@dataclass
class ReusedSkb:
    """A kfree_skb address that is queued again in a ring: its memory was freed and reused."""

    address: int
    drops: int
    device: str
    queue: Optional[int]
    slot: int


@dataclass
class TraceLimits:
    instance: str
    entries: int
    written: int
    lost: int
    first_s: Optional[float]
    last_s: Optional[float]
    kfree_skb_events: int
    consume_skb_events: int
    has_reasons: bool
    notes: List[str] = field(default_factory=list)

    @property
    def span_s(self) -> Optional[float]:
        if self.first_s is None or self.last_s is None:
            return None
        return self.last_s - self.first_s


@dataclass
class Report:
    """What ``skbinspect report`` shows (see :func:`build_report`)."""

    release: str
    verdicts: List[QueueVerdict]
    other_drops: List[Dict[str, Any]]  # the trace's other drop groups, most common first
    top_stacks: List[Dict[str, Any]]
    counter_checks: List[CounterCheck]
    reused: List[ReusedSkb]
    trace: Optional[TraceLimits]
    softnet_moved: List[Dict[str, Any]]
    device_counters: List[Dict[str, Any]]
    rules: List[Dict[str, str]]
    notes: List[str] = field(default_factory=list)
    #: ring-full drops that may belong to several devices, counted once: reason, location_symbol, count,
    #: candidates, tied_by
    shared_drops: List[Dict[str, Any]] = field(default_factory=list)
    #: ring-full drops at a driver's enqueue function tied to no device: function, module, count
    unattributed_drops: List[Dict[str, Any]] = field(default_factory=list)
    #: the trace's drop time stamps per reason label, whether the clock counts ns, and the latest drop's
    #: time stamp (for the drops-over-time chart, :mod:`skbinspect.chart`; not in the JSON)
    drop_times: Optional[Tuple[Dict[str, List[int]], bool, Optional[int]]] = field(default=None, repr=False)
    #: the dump's time on the trace clock, in seconds, as a lower bound (the latest run-queue clock of
    #: any CPU; None when that clock is not the trace's), and how it was read
    dump_s: Optional[float] = None
    dump_basis: str = ""
    #: one line per device with a verdict, for people (see :func:`headlines`): device, queues,
    #: cause_code, text
    headlines: List[Dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        d = asdict(replace(self, drop_times=None))
        d.pop("drop_times", None)
        for v in d["verdicts"]:
            for s in v["stale_skbs"]:
                s["address"] = "%#x" % s["address"]
        for r in d["reused"]:
            r["address"] = "%#x" % r["address"]
        if self.trace is not None:
            d["trace"]["span_s"] = self.trace.span_s
        return d


RULES = [
    {
        "name": "ring-full drops",
        "explanation": "A drop whose reason is FULL_RING, or (kernels without drop reasons) whose location is the "
        "driver's enqueue function (tun_net_xmit for tun/tap, tap_handle_frame for macvtap/ipvtap), "
        "is tied to a device of that driver: to the device a net event of the same skb names, or to "
        "the one its frames reach through the devices read from the dump (a veth to its peer, a "
        "macvlan/ipvlan lower device to the macvtap/ipvtap on it, a bridge to its ports); else to the "
        "driver's devices with a full queue or a drop counter that moved. macvtap and ipvtap both drop in tap_handle_frame: their "
        "drops are told apart by the callers in each drop's recorded stack (macvlan_* or ipvlan_*). "
        "Every drop is counted once: drops that may be one of several devices' are listed for each "
        "as ambiguous but counted in none, and a counter within the ambiguous range agrees. On a "
        "device with several full queues the trace does not record which queue a drop was for: its "
        "drops are counted once, under its first full queue.",
    },
    {
        "name": "stalled reader",
        "explanation": "A full ring's reader is the process holding the queue's file (or the vhost-net worker). "
        "The ring has been full, so the reader has not consumed, since at least the first "
        "ring-full drop tied to it.",
    },
    {
        "name": "counters against the trace",
        "explanation": "The counter the driver increments for a ring-full drop (tun: tx_dropped, tap: "
        "rx_dropped) is compared with the trace's count. The counter is cumulative and the trace "
        "a window, so a higher counter means drops before the buffer's oldest event; a higher "
        "trace count means drops the driver freed without counting.",
    },
    {
        "name": "memory reused",
        "explanation": "A kfree_skb address that is an entry of a ring now: the slab object was freed and "
        "reallocated for another skb, so that entry is not the dropped packet.",
    },
    {
        "name": "stale skbs",
        "explanation": "For the most recent drops tied to a queue whose slab object is still free, the freed "
        "sk_buff is read as it was left: device, length, headers. Stale, best-effort evidence: "
        "the allocator may have overwritten parts of it and its data buffer may be reused.",
    },
]


def _sec(ts: Optional[int], in_ns: bool) -> Optional[float]:
    if ts is None:
        return None
    return ts / 1e9 if in_ns else float(ts)


def _task_state(prog: drgn.Program, pid: int) -> Optional[str]:
    try:
        from drgn.helpers.linux.pid import find_task
        from drgn.helpers.linux.sched import task_state_to_char

        t = find_task(prog, pid)
        if not t:
            return None
        return task_state_to_char(t)
    except (drgn.FaultError, LookupError, ValueError):
        return None


def build_report(
    prog: drgn.Program,
    instance: Optional[str] = None,
    module_ok: Optional[Callable[[str], bool]] = None,
    stale: bool = True,
    max_stale: int = MAX_STALE_PER_QUEUE,
    progress: Any = None,
) -> Report:
    """Read the target once and correlate queues, trace and counters.

    :param instance: trace instance to read drops from; None for the top-level buffer.
    :param module_ok: ``callable(name) -> bool``: whether a module has debug info (see
        :class:`~skbinspect.target.debuginfo.DebugInfoReport`); None: assume yes.
    :param stale: read what is left of freed skbs tied to full queues.
    :param progress: ``progress(done, total)`` called while the trace's sub-buffers are decoded.
    """
    from skbinspect.counters.stats import drop_stats
    from skbinspect.ftrace.drops import drops_report
    from skbinspect.tuntap.devices import read_tap_devices

    notes: List[str] = []
    try:
        release = prog["UTS_RELEASE"].string_().decode(errors="replace")
    except Exception as e:  # noqa: BLE001 - each section of the report is read on its own (section_note)
        release = "?"
        notes.append(section_note(prog, "the kernel release (UTS_RELEASE)", e))
    try:
        devs = read_tap_devices(prog, (), None, entries=False, stale=False, holders=True, module_ok=module_ok)
    except Exception as e:  # noqa: BLE001
        devs = []
        notes.append(section_note(prog, "tun/tap queues", e))
    for d in devs:
        notes += [f"{d.name}: {n}" for n in d.notes]

    # devices and counters
    try:
        stats = drop_stats(prog, [d.name for d in devs] or None)
        dev_totals = {s.name: s.totals for s in stats.devices}
        dev_complete = {s.name: s.complete for s in stats.devices}
        # counters that were not read (a damaged per-CPU offset, unreadable memory): why, per device
        dev_unread = {
            s.name: sorted({r.note for r in s.rows if r.note and not r.note.startswith("not allocated")})
            for s in stats.devices
        }
        softnet_moved = [
            {
                "cpu": c.cpu,
                "dropped": c.dropped,
                "time_squeeze": c.time_squeeze,
                "flow_limit_count": c.flow_limit_count,
                "backlog_len": c.backlog_len,
            }
            for c in stats.softnet.cpus
            if c.dropped or c.time_squeeze or c.flow_limit_count
        ]
        notes += stats.notes + stats.softnet.notes
        dm = stats.drop_monitor
        device_counters = [
            {"device": s.name, "kind": s.kind, "counters": {k: v for k, v in s.totals.items() if v}}
            for s in stats.devices
            if any(s.totals.values())
        ]
    except Exception as e:  # noqa: BLE001
        dev_totals, dev_complete, softnet_moved, device_counters, dm = {}, {}, [], [], None
        dev_unread = {}
        notes.append(section_note(prog, "drop counters", e))
    if dm is not None:
        notes += [f"drop_monitor: {n}" for n in dm.notes]

    def moved(d: Any) -> bool:
        """The device's ring-full drop counter, summed over every CPU, moved (or could not all be read)."""
        return ring_full_counter_moved(d, dev_totals.get(d.name, {}), dev_complete.get(d.name, False))

    # one pass over the trace: the drop groups, their ring-full drops tied to the devices (the rules
    # `drops` uses), and the skb addresses for memory reuse and stale reads
    rep = None
    trace: Optional[TraceLimits] = None
    try:
        from skbinspect.ftrace.reader import trace_reader

        reader = trace_reader(prog, instance, progress=progress)
        rep = drops_report(prog, reader=reader, devices=devs, moved=moved, addresses=True)
    except Exception as e:  # noqa: BLE001
        notes.append(section_note(prog, "trace", e))
    if rep is not None:
        tr = rep.trace_array
        trace = TraceLimits(
            tr.name,
            tr.entries,
            tr.written,
            tr.lost,
            _sec(rep.first_ts, rep.in_ns),
            _sec(rep.last_ts, rep.in_ns),
            rep.kfree_total,
            rep.consumed,
            rep.has_reasons,
            list(rep.notes),
        )
        if not tr.written and not tr.warnings:  # (a damaged buffer says so in its notes)
            trace.notes.append(
                "the buffer is empty (tracing off, or never enabled for skb events): no drop history"
            )
        elif not rep.kfree_total:
            trace.notes.append("no skb:kfree_skb events in the buffer (the event is not enabled?)")
        if not rep.has_reasons:
            trace.notes.append(
                "this kernel records no drop reasons (skb:kfree_skb has no reason before 5.17): "
                "drops are told apart by location only"
            )
    end_ts = rep.last_ts if rep is not None else None
    in_ns = rep.in_ns if rep is not None else True
    trace_clock = rep.trace_array.clock if rep is not None else None

    portions: List[Portion] = []
    unattributed: Counter = Counter()  # driver module -> ring-full drops tied to no device
    tied_groups: Set[int] = set()
    # kfree_skb addresses (skbaddr -> [events, last time stamp, group]): memory reuse and stale reads
    kaddrs: Dict[int, List[Any]] = {}
    consumed: Dict[int, int] = {}
    kfns: Dict[Any, str] = {}  # group key (reason value, location) -> location function
    if rep is not None:
        if rep.tying is not None:
            portions, unattributed, tied_groups = rep.tying.portions, rep.tying.unattributed, rep.tying.groups
        kaddrs, consumed = rep.kfree_addresses, rep.consume_addresses
        kfns = {(g.reason_value, g.location): _fn(g.location_symbol) for g in rep.groups}
    reused: List[ReusedSkb] = []
    for d in devs:
        for q in d.queues:
            r = q.ring
            for i in q.ring.analysis.live:
                a = r.slots[i] & ~1
                if a in kaddrs:
                    reused.append(ReusedSkb(a, kaddrs[a][0], d.name, q.index, i))

    names_by_addr = {d.address: d.name for d in devs}
    by_dev: Dict[str, List[Portion]] = {}
    for p in portions:
        for name in p.candidates:
            by_dev.setdefault(name, []).append(p)
    verdicts: List[QueueVerdict] = []

    def device_verdicts(d: Any) -> None:  # the verdicts of one device (called below, guarded)
        ctr_name = KIND_COUNTER.get(d.kind)
        ctr_val = dev_totals.get(d.name, {}).get(ctr_name) if ctr_name else None
        if ctr_val is None and ctr_name:
            ctr_val = d.counters.get(ctr_name)
        qlist: List[Any] = list(d.queues) if d.queues else []
        full_idx = [q.index for q in qlist if q.ring.analysis.full]
        # each portion of this device's drops goes to one queue: the queue the trace names, else its only
        # full queue, else (several full) the first full one, noted as split among them
        per_q: Dict[Optional[int], List[Portion]] = {}
        for p in by_dev.get(d.name, []):
            if p.queue is not None and p.queue in {q.index for q in qlist}:
                qi: Optional[int] = p.queue
            elif full_idx:
                qi = full_idx[0]
            else:
                qi = None
            per_q.setdefault(qi, []).append(p)
        split_note = None
        if len(full_idx) > 1 and any(p.queue is None for p in by_dev.get(d.name, [])):
            split_note = (
                f"split among queues {_and(full_idx)}; the trace does not record which: the drops are counted "
                f"once, under queue {full_idx[0]}"
            )
        keys = [(q.index, q) for q in qlist] + ([(None, None)] if None in per_q else [])

        def queue_verdict(qi: Optional[int], q: Any) -> None:  # one queue's (called below, guarded)
            parts = per_q.get(qi, [])
            full = bool(q is not None and q.ring.analysis.full)
            batch = _vhost_batch(q)
            if not full and not parts and not batch:
                return
            refs = []
            for p in parts:
                g = p.group
                rate = (
                    g.rate if (p.count, p.first_ts, p.last_ts) == (g.count, g.first_ts, g.last_ts) else None
                )
                if rate is None:
                    rate = _rate(p.count, p.first_ts, p.last_ts, in_ns)
                by = p.by + (" (ambiguous)" if len(p.candidates) > 1 else "")
                others = [c for c in p.candidates if c != d.name]
                refs.append(
                    DropRef(
                        g.reason,
                        "%#x" % g.location if g.location is not None else None,
                        g.location_symbol,
                        p.count,
                        _sec(p.first_ts, in_ns),
                        _sec(p.last_ts, in_ns),
                        rate,
                        by,
                        others,
                    )
                )
            n = sum(r.count for r in refs if not r.ambiguous)
            first = min((r.first_s for r in refs if r.first_s is not None), default=None)
            last = max((r.last_s for r in refs if r.last_s is not None), default=None)
            span = last - first if first is not None and last is not None else None
            nall = sum(r.count for r in refs)
            rate = (nall - 1) / span if span and nall > 1 else None
            end_s = _sec(end_ts, in_ns)
            ago = end_s - last if last is not None and end_s is not None else None
            holders: List[Holder] = []
            if q is not None:
                for h in q.holders:
                    holders.append(Holder(h.pid, h.comm, h.fd, _task_state(prog, h.pid)))
                for vu in q.vhost:
                    if vu.worker_pid is not None:
                        holders.append(
                            Holder(
                                vu.worker_pid,
                                vu.worker_comm or "?",
                                vu.fd,
                                _task_state(prog, vu.worker_pid),
                                "vhost",
                            )
                        )
            size = q.ring.size if q is not None else 0
            live = q.live if q is not None else 0
            cause, code = _cause_and_code(full, holders, first, nall, bool(d.queues), batch)
            v = QueueVerdict(
                d.name,
                d.ifindex,
                d.kind,
                qi,
                full,
                live,
                size,
                holders,
                refs,
                n,
                first,
                last,
                span,
                rate,
                ago,
                ctr_name,
                ctr_val,
                cause,
                "",
                cause_code=code,
                vhost_batch=batch,
            )
            if q is None and not d.queues:
                v.notes.append(
                    "its queues could not be read (see the notes): the drops are tied by driver and "
                    "counters only"
                )
            if dev_unread.get(d.name) and ctr_name:
                v.notes.append(f"{ctr_name} counts only what could be read: {'; '.join(dev_unread[d.name])}")
            if split_note and qi == full_idx[0]:
                v.notes.append(split_note)
            elif split_note and qi in full_idx:
                v.notes.append(f"its ring-full drops are counted under queue {full_idx[0]}: {split_note}")
            ambiguous = v.ambiguous_count
            if ambiguous:
                amb_devs = sorted({c for r in refs if r.ambiguous for c in r.candidates})
                v.notes.append(
                    f"{ambiguous} drops may be this device's or {_or(amb_devs)}'s: the trace does not tell "
                    "them apart among several devices; they are counted once, not in this device's count"
                )
            if stale and q is not None and parts:
                v.stale_skbs = _stale_skbs(
                    prog,
                    kaddrs,
                    kfns,
                    consumed,
                    {_fn(p.group.location_symbol) for p in parts},
                    names_by_addr,
                    d.mode == "tap" or d.kind != "tun",
                    in_ns,
                    max_stale,
                    d.name,
                )
            v.summary = _summary(v)
            verdicts.append(v)

        for qi, q in keys:
            try:
                queue_verdict(qi, q)
            except Exception as e:  # noqa: BLE001 - one queue's damage is a note; the others are still read
                what = f"{d.name} queue {qi}" if qi is not None else f"{d.name}'s drops"
                notes.append(section_note(prog, what, e))

    for d in devs:
        try:
            device_verdicts(d)
        except Exception as e:  # noqa: BLE001 - one device's damage is a note; the others are still read
            notes.append(section_note(prog, f"device {d.name}", e))
    verdicts.sort(key=lambda v: (not v.full, -v.drop_count, v.device, v.queue or 0))

    checks: List[CounterCheck] = []
    per_dev: Counter = Counter()
    per_dev_ambiguous: Counter = Counter()  # drops that may be this device's or another's
    for v in verdicts:
        per_dev[v.device] += v.drop_count + v.ambiguous_count
        per_dev_ambiguous[v.device] += v.ambiguous_count
    kind_of = {d.name: d.kind for d in devs}
    seen: Set[str] = set()
    for v in verdicts:
        if v.device in seen or v.counter is None or v.counter_value is None:
            continue
        seen.add(v.device)
        mod = KIND_MODULE.get(kind_of.get(v.device, ""), "")
        c = _counter_check(
            v.device,
            v.counter,
            v.counter_value,
            per_dev[v.device],
            trace,
            per_dev_ambiguous[v.device],
            unattributed.get(mod, 0),
            ENQUEUE_FUNCTIONS.get(mod, ""),
        )
        if not dev_complete.get(v.device, True) and c.verdict != "agree":
            c.verdict = "unknown"
            c.explanation = (
                f"{v.device}'s driver counters could not all be read (module debug info missing?): "
                f"{v.counter} {v.counter_value} may be incomplete"
            )
            if dev_unread.get(v.device):
                c.explanation = (
                    f"{v.device}'s counters could not all be read ({'; '.join(dev_unread[v.device])}): "
                    f"{v.counter} {v.counter_value} counts only what was read"
                )
        checks.append(c)

    shared = [
        {
            "reason": p.group.reason,
            "location_symbol": p.group.location_symbol,
            "count": p.count,
            "candidates": p.candidates,
            "tied_by": p.by,
        }
        for p in portions
        if len(p.candidates) > 1
    ]
    unattr = [
        {"function": ENQUEUE_FUNCTIONS[m], "module": m, "count": n} for m, n in sorted(unattributed.items())
    ]

    other, stacks = [], []
    if rep is not None:
        for gi, g in enumerate(rep.groups):
            if gi not in tied_groups:
                other.append(
                    {
                        "reason": g.reason,
                        "location": "%#x" % g.location if g.location is not None else None,
                        "location_symbol": g.location_symbol,
                        "count": g.count,
                        "first_s": _sec(g.first_ts, in_ns),
                        "last_s": _sec(g.last_ts, in_ns),
                        "rate_per_s": g.rate,
                        "tasks": dict(g.tasks.most_common(3)),
                    }
                )
        allst: List[Dict[str, Any]] = []
        for g in rep.groups:
            for frames, count in g.top_stacks(1, trim=True):
                allst.append(
                    {
                        "count": count,
                        "reason": g.reason,
                        "location_symbol": g.location_symbol,
                        "frames": frames,
                    }
                )
        stacks = sorted(allst, key=lambda s: -s["count"])[:5]
    dump_s, dump_basis = _dump_time(prog, trace_clock, end_ts, in_ns)
    if dump_s is not None:
        for v in verdicts:
            if v.first_drop_s is not None:
                v.first_before_dump_s = dump_s - v.first_drop_s
            if v.last_drop_s is not None:
                v.last_before_dump_s = dump_s - v.last_drop_s
    out = Report(
        release,
        verdicts,
        other,
        stacks,
        checks,
        reused,
        trace,
        softnet_moved,
        device_counters,
        RULES,
        notes,
        shared,
        unattr,
        (rep.times, rep.in_ns, rep.last_ts) if rep is not None and rep.times else None,
        dump_s,
        dump_basis,
    )
    out.headlines = headlines(out)
    return out


def _and(xs: List[Any]) -> str:
    xs = [str(x) for x in xs]
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def _or(xs: List[Any]) -> str:
    xs = [str(x) for x in xs]
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " or " + xs[-1]


def _vhost_batch(q: Any) -> int:
    """The skbs the queue's vhost-net users took into their rxq batch (``queue[head .. tail)``)."""
    if q is None:
        return 0
    return sum(max(0, v.rxq_tail - v.rxq_head) for v in q.vhost)


def _rate(n: int, first: Optional[int], last: Optional[int], in_ns: bool) -> Optional[float]:
    """Drops per second between the first and the last of ``n`` (None for one drop or no time)."""
    if n < 2 or first is None or last is None or not in_ns or last <= first:
        return None
    return (n - 1) / ((last - first) / 1e9)


def _cause(full: bool, holders: List[Holder], first: Optional[float], n: int, readable: bool = True) -> str:
    if not readable:
        return (
            f"{n} ring-full drops; the device's queues could not be read, so whether a ring is still full "
            "and who reads it is unknown"
        )
    if full:
        if not holders:
            return "the ring is full and no process holds the queue open: nothing will consume it"
        who = ", ".join(f"pid {h.pid} ({h.comm})" for h in holders)
        since = f" since at least {first:.6f} (its first ring-full drop)" if first is not None else ""
        state = "; ".join(f"pid {h.pid} is in state {h.state}" for h in holders if h.state)
        return (
            f"the reader, {who}, has not consumed{since}"
            + (f" ({state})" if state else "")
            + ": the ring filled and every further frame is dropped"
        )
    return (
        f"{n} ring-full drops, but the ring is not full now: the reader caught up (or the drops are "
        "from an earlier stall)"
    )


def _cause_and_code(
    full: bool, holders: List[Holder], first: Optional[float], n: int, readable: bool, batch: int
) -> Tuple[str, str]:
    """The verdict's sentence and its :data:`CAUSE_CODES` code."""
    if not readable:
        return _cause(full, holders, first, n, False), "queues-unreadable"
    workers = [h for h in holders if h.kind == "vhost"]
    if batch and workers:
        who = ", ".join(f"pid {h.pid} ({h.comm})" for h in workers)
        s = (
            f"the vhost-net worker {who} took {batch} skbs from the ring into its rxq batch and holds them: "
            "the guest posts no RX buffers, so vhost-net stopped delivering"
        )
        if full:
            s += "; the ring filled and every further frame is dropped"
        return s, "vhost-no-guest-buffers"
    if full:
        code = "no-reader" if not holders else "vhost-stalled" if workers else "reader-stalled"
        return _cause(full, holders, first, n), code
    return _cause(full, holders, first, n), "reader-caught-up"


def _summary(v: QueueVerdict) -> str:
    if v.queue is not None:
        q = f"queue {v.queue}"
    elif any(n.startswith("its queues could not be read") for n in v.notes):
        q = "(queues not read)"
    else:
        q = "(no full queue found)"
    s = f"{v.device} {q}"
    if v.full:
        s += f" full ({v.live}/{v.size})"
    if v.drops:
        agg: Dict[Tuple[str, str], List[int]] = {}  # (reason, function) -> [certain, maybe another's]
        others: Dict[Tuple[str, str], Set[str]] = {}
        for r in v.drops:
            key = (r.reason or "drops", _fn(r.location_symbol))
            a = agg.setdefault(key, [0, 0])
            a[1 if r.ambiguous else 0] += r.count
            if r.ambiguous:
                others.setdefault(key, set()).update(r.candidates)
        parts = []
        for (reason, fn), (n, amb) in agg.items():
            maybe = _or(sorted(others.get((reason, fn), ())) or ["another device"])
            if n and amb:
                parts.append(f"{n} {reason} in {fn} (and {amb} more that may be {maybe}'s)")
            elif n:
                parts.append(f"{n} {reason} in {fn}")
            else:
                parts.append(f"{amb} {reason} in {fn} that may be its or {maybe}'s")
        s += "; " + ", ".join(parts)
        if v.span_s is not None:
            s += f" over {v.span_s:.1f} s"
        if v.rate_per_s is not None:
            s += f" ({v.rate_per_s:.0f}/s)"
        if v.ago_s is not None:
            s += f", the last {v.ago_s:.1f} s before the end of the trace"
    elif any(n.startswith("its ring-full drops are counted under queue") for n in v.notes):
        s += "; " + next(n for n in v.notes if n.startswith("its ring-full drops are counted under queue"))
    elif v.full:
        s += "; no drops of it in the trace"
    return s + "; " + v.cause


def _counter_check(
    dev: str,
    name: str,
    value: int,
    n: int,
    trace: Optional[TraceLimits],
    ambiguous: int = 0,
    unattributed: int = 0,
    site: str = "",
) -> CounterCheck:
    """Compare a device's drop counter with the ``n`` trace drops tied to it, of which ``ambiguous`` may
    be another device's (the trace could not tell them apart).  ``unattributed`` drops at the driver's
    drop site ``site`` are tied to no device: a higher counter is not called earlier than the trace
    while they could be the difference."""
    if value == n:
        return CounterCheck(dev, name, value, n, "agree", f"{name} counts exactly the {n} drops in the trace")
    if ambiguous and n - ambiguous <= value <= n:
        return CounterCheck(
            dev,
            name,
            value,
            n,
            "agree",
            f"{name} counts {value}, within the {n} trace drops that can be {dev}'s: "
            f"{n - ambiguous} certainly, and {ambiguous} that the trace cannot tell apart from "
            "another device's",
        )
    if value > n and unattributed:
        why = (
            f"{value - n} drops counted in {name} are not tied to {dev} in the trace, and {unattributed} "
            f"ring-full drops at {site or 'the driver'} in the trace are unattributed (no device the trace "
            "names leads to a tun/tap device): they may be these"
        )
        if value - n > unattributed:
            why += f"; at least {value - n - unattributed} are earlier than the trace's oldest event"
        return CounterCheck(dev, name, value, n, "unattributed", why)
    if value > n:
        why = f"{value - n} drops counted in {name} are not in the trace: earlier than its oldest event"
        if trace is not None and trace.lost:
            why += f" (the buffer lost {trace.lost} events)"
        elif trace is not None:
            why += " (or before tracing started)"
        return CounterCheck(dev, name, value, n, "counter-higher", why)
    return CounterCheck(
        dev,
        name,
        value,
        n,
        "trace-higher",
        f"the trace has {n - value} drops that {name} did not count: freed without counting "
        "(e.g. tap's GSO path drops segments without counting them)",
    )


_STALE_FIELDS = ("dev", "len", "data_len", "head", "data", "tail", "mac_header", "protocol")


def _freelist_word(prog: drgn.Program, addr: int) -> Tuple[str, Optional[Tuple[int, int]]]:
    """The slab state of ``addr`` and, for a free SLUB object, the bytes (start, end) relative to the
    object that the allocator overwrote with its free-list pointer (``kmem_cache.offset``)."""
    try:
        from drgn.helpers.linux.slab import slab_object_info

        info = slab_object_info(prog, addr)
    except (drgn.FaultError, LookupError, ValueError, NotImplementedError, TypeError):
        return "unknown", None
    if info is None or not info.slab_cache:
        return "unknown", None
    if info.allocated:
        return "reused", None
    word = None
    try:
        cache = info.slab_cache
        if cache.type_.type.has_member("offset"):  # SLUB (mm/slub.c: the free pointer lives at s->offset)
            off = int(cache.offset) + (info.address - addr)
            word = (off, off + prog.type("void *").size)
    except (drgn.FaultError, LookupError):
        pass
    return "free", word


def _stale_skbs(
    prog: drgn.Program,
    kaddrs: Dict[int, List[Any]],
    kfns: Dict[Any, str],
    consumed: Dict[int, int],
    fns: Set[str],
    names_by_addr: Dict[int, str],
    l2: bool,
    in_ns: bool,
    limit: int,
    device: Optional[str] = None,
) -> List[StaleSkb]:
    """Read what is left of the most recently dropped skbs (at locations ``fns``) whose slab object is
    still free.  ``skb->dev`` is named only when it is one of the known devices (never dereferenced);
    fields the allocator's free-list pointer covers are not trusted.  Skbs whose ``dev`` is another known
    device than ``device`` are that device's drops (macvtap and ipvtap share tap_handle_frame): skipped."""
    from skbinspect.memory.layout import struct_layout
    from skbinspect.tuntap.packet import decode_ethernet

    lay = struct_layout(prog, "struct sk_buff", _STALE_FIELDS)
    cand: List[Tuple[int, int]] = []
    for a, (_, ts, gk) in kaddrs.items():
        if kfns.get(gk) in fns:
            cand.append((ts, a))
    cand.sort(reverse=True)
    out: List[StaleSkb] = []
    for ts, a in cand[: limit * 8]:
        if len(out) >= limit:
            break
        st, word = _freelist_word(prog, a)
        s = StaleSkb(a, _sec(ts, in_ns), st)
        out.append(s)
        if st == "free" and consumed.get(a, -1) > ts:
            s.slab_state = "reused"
            s.error = "the same address was consumed (consume_skb) after the drop: reused and freed again"
            continue
        if st != "free":
            s.error = (
                "slab object reallocated since: nothing of the dropped skb is left"
                if st == "reused"
                else "cannot tell whether the slab object was reused"
            )
            continue
        try:
            f = lay.decode(prog.read(a, lay.size))
        except drgn.FaultError as ex:
            s.error = f"unreadable: {ex}"
            continue
        bad = set()
        if word is not None:
            for name, (off, size, _, _) in lay.fields.items():
                if off < word[1] and off + size > word[0]:
                    bad.add(name)
        dev = f.get("dev") if "dev" not in bad else None
        if device is not None and dev in names_by_addr and names_by_addr[dev] != device:
            out.pop()
            continue
        if dev:
            s.device = names_by_addr.get(dev, "%#x (not a known device)" % dev)
        if dev not in names_by_addr:
            notes_dev = "skb->dev is not a tun/tap device: probably reused and freed again since the drop"
        else:
            notes_dev = None
        if "len" not in bad and f.get("len") is not None and f["len"] < 1 << 20:
            s.length = f["len"]
        notes = [notes_dev] if notes_dev else []
        if bad:
            notes.append("overwritten by the allocator's free-list pointer: " + ", ".join(sorted(bad)))
        head, data = f.get("head"), f.get("data")
        if "head" in bad or "data" in bad or not head or not data:
            s.error = "; ".join(notes + ["no packet data pointer left"])
            continue
        start = data
        mac = f.get("mac_header")
        if (
            l2
            and mac is not None
            and "mac_header" not in bad
            and mac != 0xFFFF
            and data - 64 <= head + mac < data
        ):
            start = head + mac
        n = 128
        if "tail" not in bad and f.get("tail") is not None and 0 < head + f["tail"] - start <= 4096:
            n = min(n, head + f["tail"] - start)
        try:
            raw = prog.read(start, n)
        except drgn.FaultError:
            s.error = "; ".join(notes + ["its data buffer is unreadable"])
            continue
        try:
            s.summary = decode_ethernet(raw).summary() if l2 else raw[:32].hex()
        except Exception as ex:  # noqa: BLE001 - stale bytes may be anything
            notes.append(f"headers undecodable: {ex}")
        if notes:
            s.error = "; ".join(notes)
    return out


def _dump_time(
    prog: drgn.Program, clock: Optional[str], end_ts: Optional[int], in_ns: bool
) -> Tuple[Optional[float], str]:
    """The dump's time on the trace clock, in seconds: a lower bound, the latest run-queue clock
    (``rq->clock``, kernel/sched/core.c update_rq_clock(): ``sched_clock_cpu()``) of any online CPU.

    ``rq->clock`` is the trace clock's own base only for the ``global`` clock
    (kernel/trace/trace_clock.c trace_clock_global(): ``sched_clock_cpu()``), and for ``local``
    (``sched_clock()``) when the scheduler clock is stable (kernel/sched/clock.c sched_clock_cpu():
    ``sched_clock() + __sched_clock_offset``).  Other clocks: None.  A value earlier than the trace's last
    event is not a dump time: None.  See docs/kernel/report.md."""
    if clock is None or not in_ns:
        return None, "the trace clock is not in nanoseconds"
    offset = 0
    try:
        if clock == "local":
            if int(prog["__sched_clock_stable"].key.enabled.counter) <= 0:
                return None, "the local trace clock (sched_clock) is not the run queues' clock: unstable"
            offset = int(prog["__sched_clock_offset"])
        elif clock != "global":
            return None, f"the {clock} trace clock is not the run queues' clock"
        from drgn.helpers.linux.cpumask import for_each_online_cpu
        from drgn.helpers.linux.percpu import per_cpu

        rq = prog["runqueues"]
        latest = None
        for i, cpu in enumerate(for_each_online_cpu(prog)):
            if i >= 8192:
                break
            c = int(per_cpu(rq, cpu).clock) - offset
            latest = c if latest is None else max(latest, c)
    except (drgn.FaultError, LookupError, ValueError, TypeError) as e:
        return None, f"the run queues' clocks are unreadable: {e}"
    if latest is None or (end_ts is not None and latest < end_ts):
        return None, "the run queues' clocks are earlier than the trace's last event"
    return latest / 1e9, "the latest run-queue clock of any CPU (the dump is no earlier)"


_STATE_WORDS = {
    "R": "running",
    "S": "asleep",
    "D": "blocked",
    "T": "stopped",
    "t": "traced",
    "Z": "zombie",
    "I": "idle",
}

#: The width a verdict's one-line headline must fit: an 80-column terminal, less the two columns of
#: indentation the text report gives it.
HEADLINE_WIDTH = 78


def _secs(x: float) -> str:
    if x < 1:
        return f"{x * 1000:.0f} ms"
    return f"{x:.1f} s" if x < 100 else f"{x:.0f} s"


def _rate_s(r: float) -> str:
    return f"{r / 1000:.1f}k/s" if r >= 1000 else f"{r:.0f}/s"


def _who(hs: List[Holder], comm: bool, state: bool = True) -> str:
    """The first holder (pid, command, state) and how many more."""
    if not hs:
        return "none"
    h = hs[0]
    st = ""
    if state and h.state:
        st = f" {_STATE_WORDS[h.state]} ({h.state})" if h.state in _STATE_WORDS else f" ({h.state})"
    return (
        f"pid {h.pid}" + (f" ({h.comm})" if comm else "") + st + (f" +{len(hs) - 1}" if len(hs) > 1 else "")
    )


def _headline_cause(
    code: str, head: QueueVerdict, procs: List[Holder], workers: List[Holder], comm: bool, short: bool = False
) -> str:
    if code == "vhost-no-guest-buffers":
        if short:
            return f"vhost holds {head.vhost_batch} skbs: no guest RX buffers"
        return f"vhost {_who(workers, comm, False)} holds {head.vhost_batch} skbs: no guest RX buffers"
    if short and code in ("reader-stalled", "vhost-stalled"):
        h = (procs if code == "reader-stalled" else workers)[:1]
        if h:
            st = f" ({h[0].state})" if h[0].state else ""
            more = len(procs if code == "reader-stalled" else workers) - 1
            return f"{'vhost ' if code == 'vhost-stalled' else ''}pid {h[0].pid}{st}" + (
                f" +{more}" if more else ""
            )
    if code == "no-reader":
        return "no process holds the queue"
    if code == "queues-unreadable":
        return "queues unreadable"
    if code == "reader-caught-up":
        return "the reader caught up"
    if code == "vhost-stalled":
        return f"vhost {_who(workers, comm)} not consuming"
    return ("reader " if len(procs) == 1 else "readers ") + _who(procs, comm)


def headlines(rep: Report, width: int = HEADLINE_WIDTH) -> List[Dict[str, Any]]:
    """One line per device with a verdict, at most ``width`` columns: the device and its queues, whether
    full, the ring-full drops tied to it (count, reason, function, span, rate, how long before the dump),
    and the cause (the reader and its state, or vhost-net's held batch).  Every part comes from the
    verdict; parts are left out, least important first, until the line fits."""
    out: List[Dict[str, Any]] = []
    order: List[str] = []
    by_dev: Dict[str, List[QueueVerdict]] = {}
    for v in rep.verdicts:
        if v.device not in by_dev:
            order.append(v.device)
        by_dev.setdefault(v.device, []).append(v)
    for dev in order:
        vs = by_dev[dev]
        head = max(vs, key=lambda v: (v.drop_count + v.ambiguous_count, v.full))
        queues = sorted(v.queue for v in vs if v.queue is not None)
        where = dev + (" q" + ",q".join(str(q) for q in queues) if queues else " (queues unread)")
        fulls = [v for v in vs if v.full]
        if fulls:
            sizes = {(v.live, v.size) for v in fulls}
            state = "FULL " + (f"{fulls[0].live}/{fulls[0].size}" if len(sizes) == 1 else "")
        else:  # not full: how full, when all its queues say the same
            sizes = {(v.live, v.size) for v in vs if v.queue is not None}
            state = f"{vs[0].live}/{vs[0].size}" if len(sizes) == 1 else "not full"
        state = state.strip()
        n = sum(v.drop_count for v in vs)
        amb = sum(v.ambiguous_count for v in vs)
        refs = [r for v in vs for r in v.drops]
        if refs:
            reason = refs[0].reason or "drops"
            fn = _fn(refs[0].location_symbol)
            drops = f"{n} {reason}" + (f" (+{amb} shared)" if amb else "")
            at = f" @ {fn}"
            keep_at = refs[0].reason is None  # no drop reasons (before 5.17): the function says ring-full
        else:
            drops, at, keep_at = "no drops tied", "", False
        span = f" over {_secs(head.span_s)}" if refs and head.span_s else ""
        rate = f" ({_rate_s(head.rate_per_s)})" if refs and head.rate_per_s else ""
        when = ""
        if refs and head.last_before_dump_s is not None:
            when = f", ≥{_secs(head.last_before_dump_s)} before the dump"
        elif refs and head.ago_s is not None:
            when = f", {_secs(head.ago_s)} before the trace's end"
        code = head.cause_code
        seen: Dict[int, Holder] = {}
        for v in vs:
            for h in v.holders:
                seen.setdefault(h.pid, h)
        procs = [h for h in seen.values() if h.kind == "process"]
        workers = [h for h in seen.values() if h.kind == "vhost"]

        short_when = when.replace(" before the dump", " ago").replace(
            " before the trace's end", " before trace end"
        )
        # from the most to the least detail, the first that fits: the location function, the reader's
        # command, the span and the rate go first; the count, the time before the dump and the reader last
        tries = [
            (True, True, span, rate, when, False),
            (False, True, span, rate, when, False),
            (False, False, span, rate, when, False),
            (False, False, "", rate, when, False),
            (False, False, "", rate, short_when, False),
            (False, False, "", "", short_when, False),
            (False, False, "", rate, short_when, True),
            (False, False, "", "", short_when, True),
            (False, False, "", "", "", True),
        ]
        if keep_at:  # the function is kept until nothing else is left to leave out
            tries = [(True, *t[1:]) for t in tries] + [(False, *tries[-1][1:])]
        text = ""
        for loc, comm, sp, rt, wh, short in tries:
            cause = _headline_cause(code, head, procs, workers, comm, short)
            if keep_at:
                text = f"{where} {state} · {n} drops{at if loc else ''}"
                text += f" (+{amb} shared)" if amb else ""
                text += f"{sp}{rt}{wh} · {cause}"
            else:
                text = f"{where} {state} · {drops}{at if loc else ''}{sp}{rt}{wh} · {cause}"
            if len(text) <= width:
                break
        out.append({"device": dev, "queues": queues, "cause_code": code, "text": text})
    return out
