"""``skbinspect drops``: the kfree_skb events of a trace buffer grouped for people.

Drops are grouped by reason and location (the function that freed the skb), with counts, first and last
time, rate, the most common stacks, the tasks that dropped, and the device (and TX queue) when the same
buffer holds an event that names the device for the same skb (``net:net_dev_queue``,
``net:net_dev_start_xmit``, ``net:netif_receive_skb``, ... recorded before the drop).  The kfree_skb event
itself carries no device, and the skb's own memory is freed (and soon reused) by the time the event is
read, so no guess is made from it.  The ring-full drops of tun/tap drivers are tied to the devices that
dropped them by the rules ``report`` uses (:mod:`skbinspect.ftrace.attribution`): the device a net event
names, or the tap device its frames reach (a veth's peer, a macvlan/ipvlan lower device), else the
driver's full devices (told apart by their stacks' callers).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import drgn

from skbinspect.ftrace.formats import decode_stack
from skbinspect.ftrace.reader import TraceArray, TraceEvent, TraceReader, trace_reader
from skbinspect.ftrace.skb_events import Symbolizer, reason_names, symbolizer

__all__ = ["DropGroup", "DropsReport", "drops_report", "attribute_devices", "TIMELINE_BUCKETS"]

#: The device kinds (``rtnl_link_ops.kind``) whose frames each tun/tap driver module drops on a full ring.
DROPPING_KINDS = {"tun": ("tun",), "tap": ("macvtap", "ipvtap")}

TIMELINE_BUCKETS = 48
#: A group of drops: ``(reason value, location)`` (either None when the event lacks it).
GroupKey = Tuple[Optional[int], Optional[int]]
_PID = struct.Struct("<i")  # struct trace_entry.pid, at offset 4
_U32 = struct.Struct("<I")
#: net events that name the device of an skb (fields ``skbaddr`` and ``name``).
DEVICE_EVENTS = (
    "net_dev_queue",
    "net_dev_start_xmit",
    "net_dev_xmit",
    "netif_receive_skb",
    "netif_rx",
    "netif_receive_skb_entry",
    "netif_rx_entry",
    "napi_gro_receive_entry",
    "napi_gro_frags_entry",
)


@dataclass
class DropGroup:
    """Drops with one reason at one location.

    :ivar reason: the reason's name (None: the kernel records no reasons, or the value has no name).
    :ivar reason_value: the ``enum skb_drop_reason`` value (None before 5.17).
    :ivar location_symbol: ``function+0xoff [module]``.
    :ivar stacks: distinct stacks (tuples of return addresses) and how often each was recorded.
    :ivar stack_spans: each distinct stack's first and last time stamp.
    :ivar devices: ``"dev"`` or ``"dev queue N"`` -> count, from net events of the same skb in the buffer.
    :ivar attributed: for ring-full drops in a tun/tap driver, the dropping device(s) (``"mt0"``,
        ``"mq0 queue 1"``, ``"mt0 (via v0)"``, ``"mt0 or it0"``) -> count, tied as ``report`` ties them
        (:func:`skbinspect.ftrace.attribution.tie_ring_full`); for other groups, or when the tun/tap
        devices cannot be read, the devices the named ones lead to (:func:`attribute_devices`).
    """

    reason: Optional[str]
    reason_value: Optional[int]
    location: Optional[int]
    location_symbol: Optional[str]
    count: int = 0
    first_ts: Optional[int] = None
    last_ts: Optional[int] = None
    protocols: Counter = field(default_factory=Counter)
    stacks: Counter = field(default_factory=Counter)
    stack_spans: Dict[Tuple[int, ...], Tuple[int, int]] = field(
        default_factory=dict
    )  # first, last time stamp
    devices: Counter = field(default_factory=Counter)
    attributed: Counter = field(default_factory=Counter)
    tasks: Counter = field(default_factory=Counter)
    in_ns: bool = True
    _syms: Optional[Symbolizer] = field(default=None, repr=False, compare=False)

    @property
    def reason_label(self) -> str:
        if self.reason:
            return self.reason
        if self.reason_value is not None:
            return "0x%x" % self.reason_value
        return "-"

    @property
    def span_s(self) -> Optional[float]:
        if self.first_ts is None or self.last_ts is None or not self.in_ns:
            return None
        return (self.last_ts - self.first_ts) / 1e9

    @property
    def rate(self) -> Optional[float]:
        """Drops per second between the first and the last (None for a single drop)."""
        span = self.span_s
        if not span or self.count < 2:
            return None
        return (self.count - 1) / span

    @property
    def device_label(self) -> Optional[str]:
        devices = self.attributed or self.devices
        if not devices:
            return None
        parts = [f"{d} ({n})" if len(devices) > 1 else d for d, n in devices.most_common(3)]
        known = sum(devices.values())
        s = ", ".join(parts)
        if known < self.count:
            s += f"; {self.count - known} unknown"
        return s

    def frames(self, stack: Tuple[int, ...]) -> List[str]:
        syms = self._syms
        if syms is None:
            return ["0x%x" % a for a in stack]
        return [syms.format(a, offset=False) for a in stack]

    def top_stacks(self, n: int = 3, trim: bool = False) -> List[Tuple[List[str], int]]:
        """The ``n`` most common stacks as symbol names (stacks that differ only in return offsets are
        counted together); with ``trim`` the tracing frames above the dropping function are left out."""
        merged: Counter = Counter()
        for st, c in self.stacks.items():
            merged[tuple(self.frames(st))] += c
        out = []
        fn = (self.location_symbol or "").split("+", 1)[0].split(" ", 1)[0]
        for frames, c in merged.most_common(n):
            fl = list(frames)
            if trim and fn:
                for i, fr in enumerate(fl):
                    if fr.split(" ", 1)[0] == fn:
                        fl = fl[i:]
                        break
            out.append((fl, c))
        return out

    @property
    def distinct_stacks(self) -> int:
        return len({tuple(self.frames(st)) for st in self.stacks})

    def to_json(self, stacks: int = 3) -> Dict[str, Any]:
        return {
            "reason": self.reason,
            "reason_value": self.reason_value,
            "location": "0x%x" % self.location if self.location is not None else None,
            "location_symbol": self.location_symbol,
            "count": self.count,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "rate_per_s": self.rate,
            "protocols": {str(k): v for k, v in self.protocols.most_common()},
            "tasks": dict(self.tasks.most_common(10)),
            "devices": dict(self.devices.most_common()),
            **({"attributed_devices": dict(self.attributed.most_common())} if self.attributed else {}),
            "stacks": [{"count": c, "frames": f} for f, c in self.top_stacks(stacks)],
            "distinct_stacks": self.distinct_stacks,
        }


@dataclass
class DropsReport:
    """The drops of one trace array (see :func:`drops_report`)."""

    trace_array: TraceArray
    groups: List[DropGroup]
    total: int  # kfree_skb events counted (after the reason filter)
    kfree_total: int  # kfree_skb events in the buffer
    consumed: int  # consume_skb events in the buffer
    first_ts: Optional[int]
    last_ts: Optional[int]
    in_ns: bool
    has_reasons: bool
    timelines: Dict[str, List[int]] = field(default_factory=dict)
    bucket_s: float = 0.0
    notes: List[str] = field(default_factory=list)
    filtered: bool = False
    #: every counted drop's time stamp per reason label (for :mod:`skbinspect.chart`; not in the JSON)
    times: Dict[str, List[int]] = field(default_factory=dict, repr=False)
    #: the ring-full drops tied to tun/tap devices (None: not tied, see :func:`drops_report`'s ``tie``)
    tying: Any = None
    #: with ``addresses``: skbaddr -> [kfree_skb events, time stamp of the last, its group]
    kfree_addresses: Dict[int, List[Any]] = field(default_factory=dict)
    #: with ``addresses``: skbaddr -> time stamp of its last consume_skb event
    consume_addresses: Dict[int, int] = field(default_factory=dict)

    @property
    def span_s(self) -> Optional[float]:
        if self.first_ts is None or self.last_ts is None or not self.in_ns:
            return None
        return (self.last_ts - self.first_ts) / 1e9

    def by_reason(self) -> Dict[str, int]:
        c: Counter = Counter()
        for g in self.groups:
            c[g.reason_label] += g.count
        return dict(c.most_common())

    def to_json(self, stacks: int = 3) -> Dict[str, Any]:
        return {
            "instance": self.trace_array.name,
            "total": self.total,
            "kfree_skb_events": self.kfree_total,
            "consume_skb_events": self.consumed,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "has_reasons": self.has_reasons,
            "by_reason": self.by_reason(),
            "groups": [g.to_json(stacks) for g in self.groups],
            "timelines": self.timelines,
            "bucket_s": self.bucket_s,
            "buffer": {
                "entries": self.trace_array.entries,
                "written": self.trace_array.written,
                "lost": self.trace_array.lost,
            },
            "notes": self.notes,
        }


def drops_report(
    prog: drgn.Program,
    instance: Optional[str] = None,
    reasons: Sequence[str] = (),
    reader: Optional[TraceReader] = None,
    buckets: int = TIMELINE_BUCKETS,
    tie: bool = True,
    devices: Optional[List[Any]] = None,
    moved: Optional[Callable[[Any], bool]] = None,
    module_ok: Optional[Callable[[str], bool]] = None,
    addresses: bool = False,
) -> DropsReport:
    """Group the kfree_skb events of a trace array by reason and location, in one pass over the buffer.

    :param instance: trace instance name; None for the top-level buffer.
    :param reasons: keep only these reason names (case-insensitive); default all.
    :param tie: tie the ring-full drops of tun/tap drivers to their devices
        (:func:`skbinspect.ftrace.attribution.tie_ring_full`, the rules ``report`` uses), filling
        :attr:`DropGroup.attributed`; ``devices`` are the tun/tap devices when already read (else read
        here, ``module_ok`` telling which modules have debug info), ``moved(dev)`` whether a device's
        ring-full drop counter moved (default: its core counter read with the device).
    :param addresses: also collect the skb addresses of kfree_skb and consume_skb events
        (:attr:`DropsReport.kfree_addresses`, :attr:`DropsReport.consume_addresses`) in the same pass.
    """
    r = reader or trace_reader(prog, instance)
    tr = r.tr
    names = reason_names(prog)
    syms = symbolizer(prog)
    kfree = r.formats.lookup("skb:kfree_skb")
    consume = r.formats.lookup("skb:consume_skb")
    dev_ids = set()
    for n in DEVICE_EVENTS:
        dev_fmt = r.formats.lookup("net:" + n)
        if dev_fmt is not None and dev_fmt.field("skbaddr") is not None and dev_fmt.field("name") is not None:
            dev_ids.add(dev_fmt.id)
    notes: List[str] = []
    if kfree is None:
        notes.append("this kernel has no skb:kfree_skb event")
    want = {x.upper() for x in reasons}
    types = {f.id for f in (kfree, consume) if f is not None} | dev_ids
    groups: Dict[GroupKey, DropGroup] = {}
    filtered: Set[GroupKey] = set()  # groups left out by the reason filter
    group_ts: Dict[GroupKey, List[int]] = {}  # each group's time stamps, in order
    per: Dict[Tuple[Any, int, int], int] = {}
    last_dev: Dict[int, str] = {}
    times: Dict[str, List[int]] = {}
    total = kfree_total = consumed = 0
    first = last = None
    kid = kfree.id if kfree else -1
    cid = consume.id if consume else -1
    kdec = kfree.decoder if kfree else None
    knames = list(kdec.scalar_names) if kdec else []
    kstruct = struct.Struct("<")  # used only for payloads of at least kmin bytes: none unless set below
    kmin = 1 << 30
    if kdec is not None and kdec.scalar_struct.format[1:9] == "x" * 8:
        # the pid (trace_entry at offset 4) and the event's fixed fields in one struct
        kstruct = struct.Struct("<4xi" + kdec.scalar_struct.format[9:])
        kmin = max(kdec.min_len, 8)

    cdec = consume.decoder if consume else None
    cstruct, cmin, c_skb = struct.Struct("<"), 1 << 30, 0
    if cdec is not None and "skbaddr" in cdec.scalar_names:
        cstruct, cmin = cdec.scalar_struct, cdec.min_len
        c_skb = list(cdec.scalar_names).index("skbaddr")
    kaddrs: Dict[int, List[Any]] = {}
    caddrs: Dict[int, int] = {}

    def idx(name: str) -> Optional[int]:
        return knames.index(name) + 1 if name in knames else None

    i_reason, i_loc, i_proto, i_skb = idx("reason"), idx("location"), idx("protocol"), idx("skbaddr")
    cmdlines = r.cmdlines
    stacks_of = r.attached_stacks
    pop_stacks = stacks_of.pop
    codec = r.codec
    # the key's fields, read inline in the loop below (see KeyCodec)
    ts_shift, pshift, pmask, tmask = codec.ts_shift, codec.POS_SHIFT, codec.pos_mask, codec.TYPE_MASK
    u32 = _U32.unpack_from
    for k, page, page_id in r.grouped_keys(types):
        t = k & tmask
        srec = pop_stacks((k, page_id), None) if stacks_of else None
        if t in dev_ids:
            fields = TraceEvent(r, k, page).fields
            dev = fields.get("name") or "?"
            q = fields.get("queue_mapping")
            last_dev[fields.get("skbaddr", 0)] = f"{dev} queue {q}" if q is not None else dev
            continue
        if t == cid:
            consumed += 1
            if last_dev or addresses:  # the skb is freed: a later skb at its address is another one
                ev = TraceEvent(r, k, page)
                if ev.length >= cmin:
                    caddr = cstruct.unpack_from(page, ev.off)[c_skb]
                else:
                    caddr = ev.fields.get("skbaddr", 0)
                if last_dev:
                    last_dev.pop(caddr, None)
                if addresses:
                    caddrs[caddr] = k >> ts_shift
            continue
        if t != kid:
            continue
        kfree_total += 1
        # the payload (ringbuf.payload_span inlined): type_len * 4 bytes, or a length word first
        w = (k >> pshift) & pmask
        (h,) = u32(page, w * 4)
        if h & 31:
            off, length = (w + 1) * 4, (h & 31) * 4
        else:
            off = (w + 2) * 4
            length = u32(page, w * 4 + 4)[0] - 4
        if length < 8:  # no room for struct trace_entry: not a real event
            continue
        if length >= kmin:
            vals = kstruct.unpack_from(page, off)  # one struct call: the pid and the fixed fields
            pid = vals[0]
            rv = vals[i_reason] if i_reason is not None else None
            loc = vals[i_loc] if i_loc is not None else None
            proto = vals[i_proto] if i_proto is not None else 0
            skbaddr = vals[i_skb] if i_skb is not None else 0
        else:
            pid = _PID.unpack_from(page, off + 4)[0]
            fields = TraceEvent(r, k, page).fields
            rv, loc, proto, skbaddr = (
                fields.get("reason"),
                fields.get("location"),
                fields.get("protocol", 0),
                fields.get("skbaddr", 0),
            )
        gk = (rv, loc)
        tsl = group_ts.get(gk)
        if tsl is None:
            if gk in filtered:
                continue
            rname = names.name(rv) if rv is not None else None
            g = DropGroup(
                rname, rv, loc, syms.format(loc) if loc is not None else None, in_ns=tr.in_ns, _syms=syms
            )
            if want and g.reason_label.upper() not in want:
                filtered.add(gk)
                continue
            groups[gk] = g
            tsl = group_ts[gk] = []
        # the hot path: a time stamp appended, one counter for (group, protocol, task); the rest after
        ts = k >> ts_shift
        tsl.append(ts)
        ck = (gk, proto, pid)
        per[ck] = per.get(ck, 0) + 1
        if srec:
            sp, sk = srec[0]
            st = tuple(decode_stack(sp, *codec.payload(sp, sk)))
            g = groups[gk]
            g.stacks[st] += 1
            span = g.stack_spans.get(st)
            g.stack_spans[st] = (ts, ts) if span is None else (span[0], ts)
        if last_dev:
            device = last_dev.pop(skbaddr, None)  # freed: a later skb at this address is another one
            if device is not None:
                groups[gk].devices[device] += 1
        if addresses:
            a = kaddrs.get(skbaddr)
            if a is None:
                kaddrs[skbaddr] = [1, ts, gk]
            else:
                a[0] += 1
                a[1] = ts
                a[2] = gk
    for (gk, proto, pid), count in per.items():
        g = groups[gk]
        g.protocols[proto] += count
        g.tasks[cmdlines.find(pid)] += count
    for gk, tsl in group_ts.items():
        g = groups[gk]
        g.count = len(tsl)
        g.first_ts, g.last_ts = tsl[0], tsl[-1]
        total += len(tsl)
        first = tsl[0] if first is None else min(first, tsl[0])
        last = tsl[-1] if last is None else max(last, tsl[-1])
        times.setdefault(g.reason_label, []).extend(tsl)
    if not names.has_reasons and kfree is not None and kfree.field("reason") is None:
        has_reasons = False
    else:
        has_reasons = kfree is not None and kfree.field("reason") is not None
    timelines: Dict[str, List[int]] = {}
    bucket_s = 0.0
    if first is not None and last is not None and last > first and total >= 2:
        width = last - first
        top = buckets - 1
        for label, ts_list in sorted(times.items(), key=lambda kv: -len(kv[1])):
            counts = [0] * buckets
            for ts in ts_list:
                b = (ts - first) * buckets // width
                counts[b if b < top else top] += 1
            timelines[label] = counts
        bucket_s = width / buckets / (1e9 if tr.in_ns else 1)
    if tr.lost:
        notes.append(f"the buffer lost {tr.lost} older events (it wrapped): earlier drops are not counted")
    notes += [f"skipped: {d}" for d in r.damage]
    # what could not be read of the buffer itself (a damaged trace_buffer or per-CPU buffer): the counts
    # above are only what was readable, never a silent 0
    notes += [w for w in r.warnings if w not in notes]
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.reason_label, g.location_symbol or ""))
    tying = None
    if tie:
        tying = _tie(prog, ordered, has_reasons, devices, moved, module_ok, notes)
    if tying is None and any(g.devices for g in groups.values()):
        notes += attribute_devices(prog, groups.values())
    rep = DropsReport(
        tr,
        ordered,
        total,
        kfree_total,
        consumed,
        first,
        last,
        tr.in_ns,
        has_reasons,
        timelines,
        bucket_s,
        notes,
        bool(want),
        times,
        tying,
    )
    if addresses:
        rep.kfree_addresses, rep.consume_addresses = kaddrs, caddrs
    return rep


def _tie(
    prog: drgn.Program,
    groups: List[DropGroup],
    has_reasons: bool,
    devices: Optional[List[Any]],
    moved: Optional[Callable[[Any], bool]],
    module_ok: Optional[Callable[[str], bool]],
    notes: List[str],
) -> Any:
    """The ring-full drops tied to tun/tap devices (:func:`~skbinspect.ftrace.attribution.tie_ring_full`),
    each group's :attr:`DropGroup.attributed` filled from them; None when no group is a tun/tap driver's
    or the devices cannot be read."""
    from skbinspect.errors import SkbinspectError
    from skbinspect.ftrace.attribution import (
        ENQUEUE_FUNCTIONS,
        location_module,
        ring_full_counter_moved,
        tie_ring_full,
    )

    if not any(location_module(g.location_symbol) in ENQUEUE_FUNCTIONS for g in groups):
        return None
    if devices is None:
        from skbinspect.tuntap.devices import read_tap_devices

        try:
            devices = read_tap_devices(
                prog, (), None, entries=False, stale=False, holders=False, module_ok=module_ok
            )
        except (SkbinspectError, drgn.FaultError, LookupError, ValueError, TypeError) as e:
            notes.append(f"tun/tap devices unreadable ({e}): drops are not tied to them")
            return None
    tying = tie_ring_full(prog, groups, has_reasons, devices, moved or ring_full_counter_moved)
    notes += tying.notes
    for p in tying.portions:
        p.group.attributed[p.label] += p.count
    return tying


def attribute_devices(prog: drgn.Program, groups: Any, topo: Any = None) -> List[str]:
    """Fill :attr:`DropGroup.attributed` for the groups of a tun/tap driver whose skbs net events name:
    the named device when it is one of the driver's, else the driver's devices that the named device's
    frames reach (a veth to its peer, a lower device to the macvtap/ipvtap on it, a bridge to its ports),
    as :func:`skbinspect.report.correlate.build_report` ties them.  Returns notes."""
    from skbinspect.tuntap.topology import read_topology

    notes: List[str] = []
    for g in groups:
        sym = g.location_symbol or ""
        mod = sym.rsplit("[", 1)[1][:-1] if sym.endswith("]") and "[" in sym else None
        if mod not in DROPPING_KINDS or not g.devices:
            continue
        if topo is None:
            try:
                topo = read_topology(prog)
            except (drgn.FaultError, LookupError, ValueError) as e:
                notes.append(f"device topology unreadable: {e}")
                return notes
            notes += [f"device topology: {n}" for n in topo.notes]
        targets = {n for n, kinds in topo.kinds.items() if kinds & set(DROPPING_KINDS[mod])}
        for key, n in g.devices.items():
            name = key.split(" queue ", 1)[0]
            reach = sorted(topo.reach(name, targets))
            if not reach or reach == [name]:
                g.attributed[key] += n
            else:
                g.attributed[" or ".join(reach) + f" (via {name})"] += n
        if all(" (via " not in k for k in g.attributed):
            g.attributed.clear()  # the net events named the dropping devices themselves: nothing to add
    return notes
