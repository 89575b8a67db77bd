"""The rule both ``drops`` and ``report`` use for whether a tun/tap device's ring-full drop counter moved
(skbinspect.ftrace.attribution.ring_full_counter_moved)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict

import pytest

from skbinspect.ftrace.attribution import KIND_COUNTER, ring_full_counter_moved


def _device(kind: str, counters: Dict[str, int]) -> Any:
    return SimpleNamespace(name="d0", kind=kind, counters=counters)


@pytest.mark.parametrize("kind", sorted(KIND_COUNTER))
def test_the_kinds_own_counter_decides(kind: str) -> None:
    mine = KIND_COUNTER[kind]
    other = next(c for c in ("rx_dropped", "tx_dropped") if c != mine)
    assert ring_full_counter_moved(_device(kind, {mine: 3, other: 0}))
    assert not ring_full_counter_moved(_device(kind, {mine: 0, other: 9}))
    # summed over every CPU (report): the device's own core counters are not looked at
    assert ring_full_counter_moved(_device(kind, {}), {mine: 1}, complete=True)
    assert not ring_full_counter_moved(_device(kind, {mine: 5}), {mine: 0}, complete=True)


@pytest.mark.parametrize("kind", sorted(KIND_COUNTER))
def test_a_counter_not_read_may_have_moved(kind: str) -> None:
    mine = KIND_COUNTER[kind]
    assert ring_full_counter_moved(_device(kind, {}))  # the core counters could not be read
    assert ring_full_counter_moved(
        _device(kind, {mine: 0}), {mine: 0}, complete=False
    )  # a CPU's share unread
    assert not ring_full_counter_moved(_device(kind, {}), {}, complete=True)  # read: no counter, no drop


def test_a_kind_without_a_ring_full_counter_never_moved() -> None:
    assert not ring_full_counter_moved(_device("veth", {"rx_dropped": 4, "tx_dropped": 4}))
