"""skbinspect as drgn helpers: the public API for a drgn session or a script.

Each function takes the program as its optional first argument, as drgn's helpers do
(:func:`drgn.helpers.common.prog.takes_program_or_default`): in ``drgn -c vmcore`` call
``tap_devices()`` or ``tap_devices(prog)``.  The first call on a program finds the debug info of the
modules skbinspect reads (tun, tap, macvtap, ...) the same way the CLI does, once per program.
Results are the same dataclasses the CLI renders (``.to_json()`` gives what ``--json`` prints).

>>> from skbinspect.helpers import tap_devices, drops, post_mortem
>>> [q.ring.analysis.full for q in tap_devices(["tap0"])[0].queues]
[True]

**Damaged or changing memory is never silent** (a crashed kernel's memory may be corrupt; a live one
changes under the read).  What could not be read of one object is a note on that object
(``TapDevice.notes``, each queue's ``.notes``, a ``DeviceStats``' ``.notes``); what belongs to no one
object -- a device or namespace list that loops and whose walk stopped, per-CPU offsets that cannot be
right, a trace section that could not be read -- is a *problem*, given with the result of the call that
met it:

* ``tap_devices()`` returns a list with a ``.problems`` attribute (a list of sentences);
* ``drop_stats()``, ``drops()`` and ``post_mortem()`` add them to their result's ``.notes``, as the CLI
  does;
* :func:`problems` returns (and forgets) those met by anything else: ``skb_events()`` as it is iterated,
  ``drop_reasons()``, or drgn code calling skbinspect's modules directly.

Each problem is given once, with the first result it was met in.  An unexpected exception in one object
(a bug in skbinspect) is in that object's notes as "internal error while reading ..." and the call
returns the rest.

>>> devs = tap_devices()
>>> devs.problems          # e.g. ['device list of init_net loops back to tap0 after tap0: walk stopped']
[]
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Optional, Sequence

import drgn
from drgn.helpers.common.prog import takes_program_or_default

from skbinspect.counters.reasons import DropReasonTable
from skbinspect.counters.stats import DropStats
from skbinspect.ftrace.drops import DropsReport
from skbinspect.memory.cache import per_program
from skbinspect.memory.problems import take_bugs, take_problems
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
    "problems",
    "TapDevices",
]

_CACHE_KEY = "skbinspect.target"
_UNCLAIMED = "skbinspect.helpers.unclaimed"


class TapDevices(List[TapDevice]):
    """The list :func:`tap_devices` returns; :attr:`problems`: the damage met while reading it that belongs
    to no one device (a device list that loops, a namespace list cut short, per-CPU offsets that cannot be
    right), as sentences.  Empty when the memory read was sound."""

    problems: List[str]

    def __init__(self, devices: Iterable[TapDevice] = (), problems: Sequence[str] = ()) -> None:
        super().__init__(devices)
        self.problems = list(problems)


def _unclaimed(prog: drgn.Program) -> List[str]:
    lst: List[str] = per_program(prog, _UNCLAIMED, lambda p: [])
    return lst


def _pending(prog: drgn.Program) -> List[str]:
    """Take what was recorded on ``prog`` (by the notes' owners, :mod:`skbinspect.memory.problems`)."""
    bugs = [
        f"internal error while reading {b} (a bug in skbinspect; the rest was read)" for b in take_bugs(prog)
    ]
    return take_problems(prog) + bugs


def _begin(prog: drgn.Program) -> None:
    """Before a helper reads: what earlier reads recorded and no result took is kept for :func:`problems`,
    so that a result gets only the problems met while making it."""
    for p in _pending(prog):
        if p not in _unclaimed(prog):
            _unclaimed(prog).append(p)


@takes_program_or_default
def problems(prog: drgn.Program) -> List[str]:
    """The damage met while reading ``prog`` that no helper's result has given yet (``skb_events()`` as it
    is iterated, ``drop_reasons()``, skbinspect's modules called directly), as sentences; forgotten once
    returned.  See the module's documentation for where the other problems are."""
    out = list(prog.cache.pop(_UNCLAIMED, None) or [])
    return out + [p for p in _pending(prog) if p not in out]


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
    _begin(prog)
    devs = read_tap_devices(
        prog,
        tuple(names),
        netns,
        entries=entries,
        stale=stale and entries,
        holders=holders,
        module_ok=t.debug.module_ok,
    )
    return TapDevices(devs, _pending(prog))


@takes_program_or_default
def drop_reasons(prog: drgn.Program) -> DropReasonTable:
    """The target's own ``enum skb_drop_reason`` table (names, values, subsystems)."""
    from skbinspect.counters.reasons import drop_reason_table

    return drop_reason_table(prog)


@takes_program_or_default
def drop_stats(prog: drgn.Program, devices: Optional[Sequence[str]] = None) -> DropStats:
    """Per-CPU softnet counters, per-device drop counters and drop_monitor's state."""
    from skbinspect.counters.stats import drop_stats as _drop_stats

    _begin(prog)
    result = _drop_stats(prog, devices)
    result.notes += _pending(prog)  # damage met on the way: a device list that loops, per-CPU offsets, ...
    return result


@takes_program_or_default
def drops(prog: drgn.Program, instance: Optional[str] = None, reasons: Sequence[str] = ()) -> DropsReport:
    """kfree_skb drops of the ftrace ring buffer (``instance`` None: top-level) grouped by reason and
    location (``.groups``: :class:`~skbinspect.ftrace.drops.DropGroup`)."""
    from skbinspect.ftrace.drops import drops_report

    _begin(prog)
    rep = drops_report(prog, instance, reasons)
    rep.notes += _pending(prog)
    return rep


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
    _begin(prog)
    rep = build_report(prog, instance, module_ok=t.debug.module_ok, stale=stale)
    rep.notes = list(t.warnings) + rep.notes + _pending(prog)
    return rep
