"""Issue 14: drops attributes a tun/tap driver's drops to the dropping device through the device topology,
as the report ties them."""

from __future__ import annotations

from collections import Counter

from skbinspect.ftrace.drops import DropGroup, attribute_devices
from skbinspect.tuntap.topology import Topology


def _topo() -> Topology:
    t = Topology()
    t.kinds = {"v0": {"veth"}, "v1": {"veth"}, "mt0": {"macvtap"}, "it0": {"ipvtap"}, "mq0": {"tun"}}
    t.add_edge("v0", "v1")
    t.add_edge("v1", "v0")
    t.add_edge("v1", "mt0")
    return t


def test_named_lower_device_is_attributed_to_the_tap_on_it() -> None:
    g = DropGroup("FULL_RING", 2, 0x1, "tap_handle_frame+0x1 [tap]", count=270)
    g.devices = Counter({"v0": 200, "it0": 70})
    attribute_devices(None, [g], _topo())  # type: ignore[arg-type]  # no program: the topology is given
    assert g.attributed == Counter({"mt0 (via v0)": 200, "it0": 70})
    assert g.device_label == "mt0 (via v0) (200), it0 (70)"


def test_dropping_devices_named_directly_change_nothing() -> None:
    g = DropGroup("FULL_RING", 2, 0x1, "tun_net_xmit+0x1 [tun]", count=10)
    g.devices = Counter({"mq0": 10})
    attribute_devices(None, [g], _topo())  # type: ignore[arg-type]
    assert not g.attributed and g.device_label == "mq0"
    other = DropGroup("NO_SOCKET", 3, 0x2, "udp_rcv+0x1", count=5)
    other.devices = Counter({"v0": 5})
    attribute_devices(None, [other], _topo())  # type: ignore[arg-type]
    assert not other.attributed
