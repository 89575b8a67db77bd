"""The skb events of the trace buffer: ``skb:kfree_skb`` and ``skb:consume_skb``, decoded for people.

Field layouts come from the target's own event formats (``struct ftrace_event_field``), so every kernel
shape is handled without version checks (docs/kernel/ftrace.md has them with their commits):

* kfree_skb: ``skbaddr, location, protocol``; ``reason`` since v5.17; ``rx_sk`` since v6.11;
* consume_skb: ``skbaddr``; ``location`` since v6.3.

Reason names come from the target's drop-reason table (:func:`skbinspect.counters.reasons.drop_reason_table`),
falling back to ``enum skb_drop_reason`` from DWARF.  ``location`` is symbolised the way the kernel's
``%pS`` does (``function+0xoff/0xsize [module]``, the size being the distance to the next symbol, as
kallsyms computes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import drgn

from skbinspect.ftrace.reader import TraceEvent, TraceReader, trace_reader
from skbinspect.memory.cache import per_program
from skbinspect.symbols import Symbolizer, symbolizer

__all__ = [
    "ReasonNames",
    "reason_names",
    "KfreeSkb",
    "ConsumeSkb",
    "SkbEvent",
    "skb_event",
    "iter_skb_events",
    "SKB_EVENTS",
]

SKB_EVENTS = ("skb:kfree_skb", "skb:consume_skb")


# ---- reason names -------------------------------------------------------------------------------------


class ReasonNames:
    """Drop-reason names of the target: the reasons table (:mod:`skbinspect.reasons`) when it is there,
    else the enumerators of ``enum skb_drop_reason`` from DWARF (``SKB_DROP_REASON_`` stripped)."""

    def __init__(self, prog: drgn.Program) -> None:
        self.has_reasons = False
        self.source = "none"
        self._table: Any = None
        self._enum: Dict[int, str] = {}
        try:
            from skbinspect.counters.reasons import drop_reason_table  # issue 4; imported lazily

            self._table = drop_reason_table(prog)
            self.has_reasons = bool(self._table.has_reasons)
            self.source = "reasons table"
        except ImportError:
            self._table = None
        except Exception:  # noqa: BLE001 - a broken table must not stop the trace decoder
            self._table = None
        if self._table is None:
            try:
                t = prog.type("enum skb_drop_reason")
                for name, value in t.enumerators or ():
                    if name.startswith("SKB_DROP_REASON_"):
                        name = name[len("SKB_DROP_REASON_") :]
                    elif name.startswith("SKB_"):
                        name = name[len("SKB_") :]
                    self._enum.setdefault(value, name)
                self.has_reasons = True
                self.source = "enum skb_drop_reason"
            except LookupError:
                self.has_reasons = False

    def name(self, value: Optional[int]) -> Optional[str]:
        if value is None:
            return None
        if self._table is not None:
            try:
                return self._table.name(value)
            except Exception:  # noqa: BLE001
                return None
        return self._enum.get(value)


def reason_names(prog: drgn.Program) -> ReasonNames:
    return per_program(prog, "skbinspect.skb_events.reasons", ReasonNames)


# ---- skb events -----------------------------------------------------------------------------------------


@dataclass
class _SkbBase:
    ts: int
    cpu: int
    pid: int
    comm: str
    skbaddr: int
    location: Optional[int]
    location_symbol: Optional[str]
    stack: Optional[List[int]] = field(default=None, repr=False)
    event: Optional[TraceEvent] = field(default=None, repr=False, compare=False)

    @property
    def function(self) -> Optional[str]:
        """The function the location is in (``tun_net_xmit``), without offset or module."""
        if not self.location_symbol or self.location_symbol.startswith("0x"):
            return None
        return self.location_symbol.split("+", 1)[0].split(" ", 1)[0]

    @property
    def module(self) -> Optional[str]:
        s = self.location_symbol or ""
        if s.endswith("]") and "[" in s:
            return s[s.rindex("[") + 1 : -1]
        return None


@dataclass
class KfreeSkb(_SkbBase):
    """One ``skb:kfree_skb`` event.

    :ivar reason: the ``enum skb_drop_reason`` value (None before 5.17, where the event has no reason).
    :ivar reason_name: its name from the target's table (``"FULL_RING"``), None if unnamed or absent.
    :ivar rx_sk: the receiving socket (``struct sock *``, 6.11+; None before).
    :ivar protocol: ``skb->protocol`` as the host-order number the trace prints (e.g. 2048 for IPv4).
    """

    protocol: int = 0
    reason: Optional[int] = None
    reason_name: Optional[str] = None
    rx_sk: Optional[int] = None
    kind: str = "kfree_skb"

    def to_json(self) -> Dict[str, Any]:
        d = _base_json(self)
        d["protocol"] = self.protocol
        if self.reason is not None:
            d["reason"] = self.reason_name
            d["reason_value"] = self.reason
        if self.rx_sk is not None:
            d["rx_sk"] = "0x%x" % self.rx_sk
        return d


@dataclass
class ConsumeSkb(_SkbBase):
    """One ``skb:consume_skb`` event (``location`` is None before 6.3)."""

    kind: str = "consume_skb"

    def to_json(self) -> Dict[str, Any]:
        return _base_json(self)


SkbEvent = Union[KfreeSkb, ConsumeSkb]


def _base_json(e: SkbEvent) -> Dict[str, Any]:
    d: Dict[str, Any] = {
        "event": e.kind,
        "ts": e.ts,
        "cpu": e.cpu,
        "pid": e.pid,
        "comm": e.comm,
        "skbaddr": "0x%x" % e.skbaddr,
    }
    if e.location is not None:
        d["location"] = "0x%x" % e.location
        d["location_symbol"] = e.location_symbol
    if e.stack is not None:
        d["stack"] = ["0x%x" % a for a in e.stack]
    return d


def skb_event(
    ev: TraceEvent,
    reasons: Optional[ReasonNames] = None,
    syms: Optional[Symbolizer] = None,
    stack_symbols: bool = False,
) -> Optional[SkbEvent]:
    """The :class:`KfreeSkb` / :class:`ConsumeSkb` view of ``ev`` (None for other events)."""
    name = ev.name
    if name not in ("kfree_skb", "consume_skb") or ev.system != "skb":
        return None
    prog = ev.reader.prog
    syms = syms or symbolizer(prog)
    f = ev.fields
    loc = f.get("location")
    loc_sym = syms.format(loc) if loc is not None else None  # function+0xoff [module]
    common: Dict[str, Any] = dict(
        ts=ev.ts,
        cpu=ev.cpu,
        pid=ev.pid,
        comm=ev.comm,
        skbaddr=f.get("skbaddr", 0) or 0,
        location=loc,
        location_symbol=loc_sym,
        stack=ev.stack,
        event=ev,
    )
    if name == "consume_skb":
        return ConsumeSkb(**common)
    reasons = reasons or reason_names(prog)
    reason = f.get("reason")
    rx_sk = f.get("rx_sk")
    return KfreeSkb(
        **common,
        protocol=f.get("protocol", 0) or 0,
        reason=reason,
        reason_name=reasons.name(reason) if reason is not None else None,
        rx_sk=rx_sk,
    )


def iter_skb_events(
    prog: drgn.Program,
    instance: Optional[str] = None,
    cpus: Optional[Sequence[int]] = None,
    kinds: Sequence[str] = SKB_EVENTS,
    reader: Optional[TraceReader] = None,
) -> Iterator[SkbEvent]:
    """kfree_skb / consume_skb events of a trace array, oldest first, with their stacks.

    :param instance: trace instance; None for the top-level buffer.
    :param kinds: which of ``skb:kfree_skb`` and ``skb:consume_skb`` to yield.

    >>> for d in iter_skb_events(prog, kinds=["skb:kfree_skb"]):
    ...     print(d.reason_name, d.location_symbol)
    """
    r = reader or trace_reader(prog, instance, cpus)
    want = set()
    for k in kinds:
        f = r.formats.lookup(k)
        if f is not None:
            want.add(f.id)
    if not want:
        return
    reasons = reason_names(prog)
    syms = symbolizer(prog)
    for ev in r.events():
        if ev.type in want:
            e = skb_event(ev, reasons, syms)
            if e is not None:
                yield e
