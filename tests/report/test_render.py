"""skbinspect.report.render: what the target names is printed as it is, and so is the report's own
``[vhost worker]`` (rich took it for a markup tag and hid it)."""

from __future__ import annotations

import pytest

from skbinspect.report.correlate import (
    CounterCheck,
    DropRef,
    Holder,
    QueueVerdict,
    Report,
    ReusedSkb,
    StaleSkb,
    TraceLimits,
)
from skbinspect.report.render import render_report
from tests.target_text import HOSTILE, rendered


def _report() -> Report:
    holders = [Holder(5, HOSTILE, 3, HOSTILE), Holder(9, HOSTILE, 4, "S", kind="vhost")]
    drop = DropRef(HOSTILE, "0x1", HOSTILE, 3, 1.0, 2.0, 2.0, HOSTILE)
    stale = StaleSkb(0x10, 1.5, HOSTILE, HOSTILE, 60, HOSTILE, HOSTILE)
    v = QueueVerdict(
        HOSTILE, 3, "tun", 0, True, 2, 2, holders, [drop], 3, 1.0, 2.0, 1.0, 2.0, 0.0, HOSTILE, 3, HOSTILE, HOSTILE,
        stale_skbs=[stale], notes=[HOSTILE],
    )  # fmt: skip
    check = CounterCheck(HOSTILE, HOSTILE, 3, 3, HOSTILE, HOSTILE)
    group = {"count": 2, "reason": HOSTILE, "location_symbol": HOSTILE, "tasks": [HOSTILE]}
    stack = {"count": 2, "reason": HOSTILE, "location_symbol": HOSTILE, "frames": [HOSTILE]}
    trace = TraceLimits(HOSTILE, 10, 10, 0, 1.0, 2.0, 5, 5, True, [HOSTILE])
    return Report(
        HOSTILE, [v], [group], [stack], [check], [ReusedSkb(0x10, 1, HOSTILE, 0, 1)], trace, [],
        [{"device": HOSTILE, "counters": {HOSTILE: 3}}], [{"name": HOSTILE, "explanation": HOSTILE}],
        notes=[HOSTILE], headlines=[{"text": HOSTILE}],
    )  # fmt: skip


@pytest.mark.parametrize("terminal", [False, True])
def test_target_text_is_printed_as_is(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    text = rendered(
        monkeypatch, render_report, _report(), explain=True, verbose=True, height=1000, terminal=terminal
    )
    assert "reader: pid 9 (" in text and "[vhost worker]" in text
    # release, headline; verdict summary; drop (reason, location, tied by); the two readers (comm, state
    # and comm); counter; stale skb (state, device, summary, error); verdict note; counter check (device,
    # counter, verdict, explanation); device counters (device, counter); other drops (reason, location,
    # task); stack (reason, location, frame); reused; trace (instance, note); report note; rule (name,
    # explanation)
    assert text.count(HOSTILE) == 33, text
