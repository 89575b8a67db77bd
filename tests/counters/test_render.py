"""skbinspect.counters.render: names and notes read from the target (reason names, subsystems, devices,
drivers, drop sites) are printed as they are, piped and on a terminal."""

from __future__ import annotations

import pytest

from skbinspect.counters.reasons import DropReason, DropReasonTable
from skbinspect.counters.render import render_reason, render_reasons, render_stats
from skbinspect.counters.stats import (
    CounterRow,
    DeviceStats,
    DropMonitorCpu,
    DropMonitorState,
    DropStats,
    SoftnetCpu,
    SoftnetStats,
)
from tests.target_text import HOSTILE, rendered


def _reasons() -> DropReasonTable:
    r = DropReason(2, HOSTILE, HOSTILE, HOSTILE, enum_name=HOSTILE, conflicts={"btf": HOSTILE})
    return DropReasonTable([r], True, [HOSTILE], {0: HOSTILE}, [HOSTILE], [HOSTILE])


@pytest.mark.parametrize("terminal", [False, True])
def test_reasons(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    table = _reasons()
    text = rendered(monkeypatch, render_reasons, table, HOSTILE, terminal=terminal)
    # the title's release; the row's name, subsystem, source; subsystems; sources; the note
    assert text.count(HOSTILE) == 7, text
    assert f"{HOSTILE} [!]" in text  # the name's conflict mark
    text = rendered(monkeypatch, render_reason, table, table.reasons[0], terminal=terminal)
    # name, subsystem, enumerator, source, the disagreement
    assert text.count(HOSTILE) == 5, text
    none = DropReasonTable([], False, [HOSTILE])
    text = rendered(monkeypatch, render_reasons, none, HOSTILE, terminal=terminal)
    assert text.count(HOSTILE) == 2, text  # the release and the note


def _stats() -> DropStats:
    row = CounterRow(
        HOSTILE, {"tx_dropped": 3}, cpu=0, counts_as={"tx_dropped": ["tx_dropped"]}, note=HOSTILE
    )
    dev = DeviceStats(HOSTILE, 3, HOSTILE, HOSTILE, None, [row], {"tx_dropped": 3}, False, [HOSTILE])
    sn = SoftnetStats([SoftnetCpu(0, True, dropped=1, note=HOSTILE)], "unsigned int", 13, [HOSTILE])
    dm = DropMonitorState(
        True, True, HOSTILE, cpus=[DropMonitorCpu(0, "sw", summary=[(1, HOSTILE, 2)])], notes=[HOSTILE]
    )
    return DropStats(sn, [dev], dm, [HOSTILE])


@pytest.mark.parametrize("terminal", [False, True])
def test_stats(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    text = rendered(monkeypatch, render_stats, _stats(), terminal=terminal)
    # softnet: the CPU's note and the notes; devices: the name, kind and driver, the device's note, the
    # row's source and note, the stats' note; drop_monitor: the mode, a drop site, the note
    assert text.count(HOSTILE) == 12, text
