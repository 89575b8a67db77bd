"""skbinspect.tuntap.render: what the target names (devices, flags, tasks, notes, frames) is printed as it
is, piped and on a terminal."""

from __future__ import annotations

import pytest

from skbinspect.tuntap.devices import QueueHolder, TapDevice, TapQueue, VhostUser
from skbinspect.tuntap.entries import RingEntry
from skbinspect.tuntap.ptr_ring import RingAnalysis, RingSnapshot
from skbinspect.tuntap.render import render_ring
from tests.target_text import HOSTILE, rendered


def _device() -> TapDevice:
    full = RingSnapshot(
        0x2000, 2, 0, 0, 0, 1, 0x3000, [0x10, 0x18], RingAnalysis([0, 1], [], 0, True, [HOSTILE])
    )
    entry = RingEntry(0, "skb", 0x10, length=60, error=HOSTILE)
    vhost = VhostUser(7, HOSTILE, 4, 0x4000, 8, HOSTILE, 0, 1, [entry], [HOSTILE])
    q = TapQueue(
        0, "enabled", 0x1000, full, [QueueHolder(5, HOSTILE, 3)], [vhost], entries=[entry], notes=[HOSTILE]
    )
    return TapDevice(
        HOSTILE, 3, 4026531840, "tun", "tap", [HOSTILE], 500, HOSTILE, True, 0x5000, [q],
        counters={HOSTILE: 1}, char_device=HOSTILE, notes=[HOSTILE],
    )  # fmt: skip


@pytest.mark.parametrize("terminal", [False, True])
def test_target_text_is_printed_as_is(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    text = rendered(monkeypatch, render_ring, [_device()], True, False, terminal=terminal)
    # the head (name, flags, operstate, char device: 4), drops, the device note, the queue table's holder
    # and vhost user, the ring's problem, the queue's note, the vhost line (comm, worker: 2), its note and
    # rxq entry, the entries table's title and row
    assert text.count(HOSTILE) == 16, text
    assert "FULL 2/2" in text


@pytest.mark.parametrize("terminal", [False, True])
def test_summary_lines_are_printed_as_is(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    """Without ``-e``: no entries table, no rxq entry lines; the contents summary instead."""
    text = rendered(monkeypatch, render_ring, [_device()], False, False, terminal=terminal)
    assert text.count(HOSTILE) == 13, text
    assert "queue 0 holds: 1 " in text
