"""Ring-full drops of the trace tied to the tun/tap devices that dropped them: one set of rules, used by
``drops`` (its device column) and ``report`` (its verdicts), so that the two always agree.

A drop group (reason, location) of a tun/tap driver module is ring-full when its reason is FULL_RING, or
(kernels without drop reasons) when its location is the driver's enqueue function.  Its drops are split
into *portions*, each counted once, for one device or for several candidates:

* the device a net event of the same skb names, when it is one of the driver's devices ("device");
* else the driver's devices that the named device's frames reach, read from the dump (a veth to its peer,
  a macvlan/ipvlan lower device to the macvtap/ipvtap on it, a bridge to its ports: "topology (via X)");
* the rest (no net event names the skb's device): the driver's devices with a full queue or whose drop
  counter moved, else all of them ("driver"); macvtap and ipvtap both drop in
  tap_handle_frame(), and their drops are told apart by the callers in each drop's recorded stack
  (``macvlan_*`` or ``ipvlan_*``: "stack").

How this can and cannot tell, is in docs/kernel/report.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import drgn

from skbinspect.memory.problems import section_note
from skbinspect.tuntap.topology import Topology, read_topology

__all__ = [
    "ENQUEUE_FUNCTIONS",
    "KIND_MODULE",
    "KIND_COUNTER",
    "ring_full_counter_moved",
    "Portion",
    "Tying",
    "tie_ring_full",
    "split_by_caller",
    "CALLER_PREFIXES",
]

#: The function of each driver module that puts a frame in a queue's ptr_ring and frees it when the ring
#: is full (drivers/net/tun.c tun_net_xmit(), drivers/net/tap.c tap_handle_frame(); 5.10 .. 7.x).  Used
#: when the kernel records no drop reason (before 5.17) and to tell ring-full drops from other drops in
#: the same module (e.g. tun_queue_purge() when a queue is closed).
ENQUEUE_FUNCTIONS = {"tun": "tun_net_xmit", "tap": "tap_handle_frame"}

#: The driver module whose code handles each device kind's queues.
KIND_MODULE = {"tun": "tun", "macvtap": "tap", "ipvtap": "tap"}

#: The device counter the driver increments for a ring-full drop (drivers/net/tun.c tun_net_xmit(): drop:
#: dev_core_stats_tx_dropped_inc(); atomic_long_inc(&dev->tx_dropped) in 5.11 to 5.17, tun's own per-CPU
#: tx_dropped in 5.10; drivers/net/tap.c tap_handle_frame(): drop: tap->count_rx_dropped() ->
#: macvlan/ipvlan rx_dropped).  See docs/kernel/counters.md.
KIND_COUNTER = {"tun": "tx_dropped", "macvtap": "rx_dropped", "ipvtap": "rx_dropped"}


def ring_full_counter_moved(
    device: Any, counters: Optional[Dict[str, int]] = None, complete: Optional[bool] = None
) -> bool:
    """Whether a device's ring-full drop counter (:data:`KIND_COUNTER`) moved, or could not all be read (a
    counter that can't be read may have moved, so the device stays a candidate).

    :param device: a :class:`~skbinspect.tuntap.devices.TapDevice`.
    :param counters: the device's counters summed over every CPU (``stats``); default the core counters
        read with the device (``device.counters``, empty when they could not be read).
    :param complete: whether every CPU's share of ``counters`` was read; default: ``counters`` is not empty.
    """
    if counters is None:
        counters = device.counters
    if not (bool(counters) if complete is None else complete):
        return True
    return bool(counters.get(KIND_COUNTER.get(device.kind, ""), 0))


#: Device kinds that drop in one shared function (drivers/net/tap.c tap_handle_frame() serves macvtap
#: and ipvtap, 5.10 .. 7.x) are told apart by the callers in each drop's stack: macvlan's broadcast work
#: or rx handler (``macvlan_*``) delivers to macvtap, ipvlan's (``ipvlan_*``) to ipvtap.
CALLER_PREFIXES = (("macvlan_", "macvtap"), ("ipvlan_", "ipvtap"))


def location_function(location_symbol: Optional[str]) -> str:
    return (location_symbol or "").split("+", 1)[0].split(" ", 1)[0]


def location_module(location_symbol: Optional[str]) -> Optional[str]:
    s = location_symbol or ""
    if s.endswith("]") and "[" in s:
        return s.rsplit("[", 1)[1][:-1]
    return None


@dataclass
class Portion:
    """Ring-full drops of one group with the same evidence: counted once, for one or several devices.

    :ivar by: "device", "topology (via X)", "driver" or "stack".
    :ivar queue: the TX queue a net event names, when it names the dropping device's queue.
    """

    group: Any  # DropGroup
    module: str
    count: int
    first_ts: Optional[int]
    last_ts: Optional[int]
    candidates: List[str]
    by: str
    queue: Optional[int] = None

    @property
    def label(self) -> str:
        """The portion as ``drops`` shows it: ``mt0``, ``mq0 queue 1``, ``mt0 (via v0)``, ``mt0 or it0``."""
        s = " or ".join(self.candidates)
        if self.queue is not None and len(self.candidates) == 1:
            s += f" queue {self.queue}"
        if self.by.startswith("topology (via "):
            s += " " + self.by[len("topology ") :]
        return s


@dataclass
class Tying:
    """The ring-full drops of a trace tied to devices (see :func:`tie_ring_full`).

    :ivar groups: indexes (in the groups given) of the ring-full groups of a tun/tap driver.
    :ivar unattributed: driver module -> ring-full drops tied to no device.
    """

    portions: List[Portion] = field(default_factory=list)
    groups: Set[int] = field(default_factory=set)
    unattributed: Counter = field(default_factory=Counter)
    notes: List[str] = field(default_factory=list)


def split_by_caller(g: Any, kinds: Set[str]) -> Optional[Dict[Optional[str], Tuple[int, Any, Any]]]:
    """A drop group's (count, first, last time stamp) per device kind, from the stacks recorded with its
    events; ``None`` holds the drops whose stack names no caller (or no stack was recorded, e.g. softirqs
    run by ksoftirqd).  None when no stack tells the kinds apart."""
    parts: Dict[Optional[str], List[Any]] = {}

    def add(kind: Optional[str], n: int, first: Optional[int], last: Optional[int]) -> None:
        p = parts.get(kind)
        if p is None:
            parts[kind] = [n, first, last]
            return
        p[0] += n
        if first is not None and (p[1] is None or first < p[1]):
            p[1] = first
        if last is not None and (p[2] is None or last > p[2]):
            p[2] = last

    for st, n in g.stacks.items():
        names = [f.split(" ", 1)[0] for f in g.frames(st)]
        found = {
            kind
            for prefix, kind in CALLER_PREFIXES
            if kind in kinds and any(name.startswith(prefix) for name in names)
        }
        first, last = g.stack_spans.get(st, (g.first_ts, g.last_ts))
        add(found.pop() if len(found) == 1 else None, n, first, last)
    rest = g.count - sum(g.stacks.values())
    if rest > 0:
        add(None, rest, g.first_ts, g.last_ts)
    if not any(k is not None for k in parts):
        return None
    return {k: (v[0], v[1], v[2]) for k, v in parts.items()}


def topology_of(prog: drgn.Program, notes: List[str]) -> Topology:
    """The device topology, read once; a failure is a note and an empty topology."""
    try:
        topo = read_topology(prog)
    except Exception as e:  # noqa: BLE001 - one section: a note (a bug: exit 70 after the output)
        notes.append(section_note(prog, "device topology", e))
        return Topology()
    notes += [f"device topology: {n}" for n in topo.notes]
    return topo


def tie_ring_full(
    prog: drgn.Program,
    groups: List[Any],
    has_reasons: bool,
    devs: List[Any],
    moved: Callable[[Any], bool],
    topo: Optional[Topology] = None,
) -> Tying:
    """Split the ring-full drop groups among the tun/tap devices ``devs``
    (:class:`~skbinspect.tuntap.devices.TapDevice`).

    :param moved: ``moved(dev)``: whether the device's ring-full drop counter moved (or could not be
        read): with the devices with a full queue, those the unnamed drops go to.
    :param topo: the device topology, when already read (else read on first need).
    """
    out = Tying()
    drv_devs: Dict[str, List[Any]] = {}
    for d in devs:
        mod = KIND_MODULE.get(d.kind)
        if mod:
            drv_devs.setdefault(mod, []).append(d)
    for gi, g in enumerate(groups):
        mod = location_module(g.location_symbol)
        fn = location_function(g.location_symbol)
        if mod not in ENQUEUE_FUNCTIONS:
            continue
        ring_full = g.reason == "FULL_RING" if has_reasons else fn == ENQUEUE_FUNCTIONS[mod]
        if not ring_full:
            continue
        out.groups.add(gi)
        drv = drv_devs.get(mod, [])
        targets = {d.name for d in drv}
        rest = g.count
        for key, cnt in g.devices.most_common():
            name, _, qs = key.partition(" queue ")
            if name in targets:
                cands, by = {name}, "device"
            else:
                if topo is None:
                    topo = topology_of(prog, out.notes)
                cands, by = topo.reach(name, targets), f"topology (via {name})"
            if not cands or cnt <= 0:
                continue
            queue = int(qs) if qs.isdigit() and name in targets else None
            out.portions.append(Portion(g, mod, cnt, g.first_ts, g.last_ts, sorted(cands), by, queue))
            rest -= cnt
        if rest <= 0:
            continue
        # the drops the trace names no (known) device for: the driver's devices with a full queue or
        # whose drop counter moved (or could not all be read: a reader that caught up leaves no full
        # queue, only its counter), else all of them (random lab seed 1021: an ipvtap whose readers
        # caught up had its drops given to the full macvtap)
        pick = [d for d in drv if any(q.ring.analysis.full for q in d.queues) or moved(d)] or drv
        if not pick:
            out.unattributed[mod] += rest
            continue
        kinds = {d.kind for d in pick}
        split = split_by_caller(g, kinds) if len(kinds) > 1 and rest == g.count else None
        if split is None:
            out.portions.append(
                Portion(g, mod, rest, g.first_ts, g.last_ts, [d.name for d in pick], "driver")
            )
            continue
        for kind, (n, first_ts, last_ts) in split.items():
            names = [d.name for d in pick if kind is None or d.kind == kind]
            out.portions.append(
                Portion(g, mod, n, first_ts, last_ts, names, "driver" if kind is None else "stack")
            )
    return out
