"""skbinspect as drgn helpers: the public API for a drgn session or a script.

Each function takes the program as its optional first argument, as drgn's helpers do
(:func:`drgn.helpers.common.prog.takes_program_or_default`): in ``drgn -c vmcore`` call
``tap_devices()`` or ``tap_devices(prog)``.  The first call on a program finds the debug info of the
modules skbinspect reads (tun, tap, macvtap, ...) the same way the CLI does, once per program.
Results are the same dataclasses the CLI renders (``.to_json()`` gives what ``--json`` prints).

>>> from skbinspect.helpers import tap_devices, drops, post_mortem
>>> [q.ring.analysis.full for q in tap_devices(["tap0"])[0].queues]
[True]
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence

import drgn
from drgn.helpers.common.prog import takes_program_or_default

from skbinspect.counters.reasons import DropReasonTable
from skbinspect.counters.stats import DropStats
from skbinspect.ftrace.drops import DropsReport
from skbinspect.memory.cache import per_program
from skbinspect.report.correlate import Report
from skbinspect.target.opener import Target
from skbinspect.tuntap.devices import TapDevice

__all__ = [
    "skbinspect_target",
    "tap_devices",
    "drop_reasons",
    "drop_stats",
    "drops",
    "skb_events",
    "post_mortem",
]

_CACHE_KEY = "skbinspect.target"


@takes_program_or_default
def skbinspect_target(prog: drgn.Program, symbols: Sequence[str] = ()) -> Target:
    """The program wrapped as a skbinspect :class:`~skbinspect.target.opener.Target`, with the debug info
    of the modules skbinspect reads loaded (once per program, cached in ``prog.cache``).

    :param symbols: more debug files or directories to search (like the CLI's ``-s``); given, the debug
        info is searched again with them and the cached target replaced.
    """
    from skbinspect.target.opener import target_from_program

    return per_program(
        prog, _CACHE_KEY, lambda p: target_from_program(p, tuple(symbols)), refresh=bool(symbols)
    )


@takes_program_or_default
def tap_devices(
    prog: drgn.Program,
    names: Sequence[str] = (),
    entries: bool = False,
    stale: bool = False,
    holders: bool = True,
    netns: Optional[int] = None,
) -> List[TapDevice]:
    """tun/tap/macvtap/ipvtap devices with their queues, rings (``queue.ring.analysis.full``) and holders.

    :param names: device names or ifindexes (``struct net_device`` ``name``); all devices if empty.
    :param entries: decode each queue's live entries (``struct sk_buff`` / ``struct xdp_frame``).
    """
    from skbinspect.tuntap.devices import read_tap_devices

    t = skbinspect_target(prog)
    return read_tap_devices(
        prog,
        tuple(names),
        netns,
        entries=entries,
        stale=stale and entries,
        holders=holders,
        module_ok=t.debug.module_ok,
    )


@takes_program_or_default
def drop_reasons(prog: drgn.Program) -> DropReasonTable:
    """The target's own ``enum skb_drop_reason`` table (names, values, subsystems)."""
    from skbinspect.counters.reasons import drop_reason_table

    return drop_reason_table(prog)


@takes_program_or_default
def drop_stats(prog: drgn.Program, devices: Optional[Sequence[str]] = None) -> DropStats:
    """Per-CPU softnet counters, per-device drop counters and drop_monitor's state."""
    from skbinspect.counters.stats import drop_stats as _drop_stats

    return _drop_stats(prog, devices)


@takes_program_or_default
def drops(prog: drgn.Program, instance: Optional[str] = None, reasons: Sequence[str] = ()) -> DropsReport:
    """kfree_skb drops of the ftrace ring buffer (``instance`` None: top-level) grouped by reason and
    location (``.groups``: :class:`~skbinspect.ftrace.drops.DropGroup`)."""
    from skbinspect.ftrace.drops import drops_report

    return drops_report(prog, instance, reasons)


@takes_program_or_default
def skb_events(
    prog: drgn.Program,
    instance: Optional[str] = None,
    kinds: Sequence[str] = ("skb:kfree_skb", "skb:consume_skb"),
) -> Iterator[object]:
    """kfree_skb / consume_skb events of a trace buffer, oldest first, with stacks and symbolised
    locations (:class:`~skbinspect.ftrace.skb_events.KfreeSkb`,
    :class:`~skbinspect.ftrace.skb_events.ConsumeSkb`)."""
    from skbinspect.ftrace.skb_events import iter_skb_events

    return iter_skb_events(prog, instance, kinds=kinds)


@takes_program_or_default
def post_mortem(prog: drgn.Program, instance: Optional[str] = None, stale: bool = True) -> Report:
    """What ``skbinspect report`` shows: ``.verdicts`` (:class:`~skbinspect.report.correlate.QueueVerdict`,
    each with a ``.summary`` sentence), then the evidence."""
    from skbinspect.report.correlate import build_report

    t = skbinspect_target(prog)
    return build_report(prog, instance, module_ok=t.debug.module_ok, stale=stale)
