"""Pure parts of :mod:`skbinspect.tuntap.topology`: following frames from a named device."""

from __future__ import annotations

from skbinspect.tuntap.topology import Topology


def _topo() -> Topology:
    t = Topology()
    # v0 <-> v1 veth with mt0 (macvtap) on v1; v2 <-> v3 with it0 (ipvtap) on v3; br0 with ports tap1, v4
    for a, b in (("v0", "v1"), ("v1", "v0"), ("v2", "v3"), ("v3", "v2")):
        t.add_edge(a, b)
    t.add_edge("v1", "mt0")
    t.add_edge("v3", "it0")
    for port in ("tap1", "v4"):
        t.add_edge("br0", port)
        t.add_edge(port, "br0")
    return t


def test_reach_follows_veth_peer_and_lower_device() -> None:
    t = _topo()
    taps = {"mt0", "it0", "tap1", "mq0"}
    assert t.reach("v0", taps) == {"mt0"}
    assert t.reach("v2", taps) == {"it0"}
    assert t.reach("mt0", taps) == {"mt0"}  # named itself: no other candidate
    assert t.reach("v4", taps) == {"tap1"}  # through the bridge
    assert t.reach("br0", taps) == {"tap1"}
    assert t.reach("lo", taps) == set()
    assert t.reach("v0", taps, hops=1) == set()  # bounded


def test_reach_stops_at_a_dropping_device_and_loops_end() -> None:
    t = Topology()
    t.add_edge("a", "b")
    t.add_edge("b", "a")
    t.add_edge("b", "tap0")
    t.add_edge("tap0", "c")
    t.add_edge("c", "tap1")
    assert t.reach("a", {"tap0", "tap1"}) == {"tap0"}
