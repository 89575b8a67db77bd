"""The paths frames take between network devices, read from the target: which device a frame sent on
(or received by) one device reaches next.  Used to tie a drop to the device that dropped it when the
trace names another device for the skb (a ``net:net_dev_queue`` on a veth whose peer carries a macvtap).

Edges (the direction a frame moves; see docs/kernel/report.md):

* a veth to its peer (``struct veth_priv.peer``): what one end sends, the other receives;
* a lower device to each macvlan/macvtap (``struct macvlan_dev.lowerdev``) and ipvlan/ipvtap
  (``struct ipvl_dev.phy_dev``) on it: their rx handler delivers its frames to them;
* a bridge to its ports and a port to its bridge (``struct net_bridge_port.br``): a frame received on a
  port is forwarded to the other ports.

Reads are bounded (:data:`MAX_DEVICES`) and fault-tolerant: a device whose private data cannot be read
(module debug info missing, a bad pointer) gives no edge and a note.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set

import drgn

__all__ = ["Topology", "read_topology", "MAX_DEVICES", "MAX_HOPS"]

#: Devices read at most (all network namespaces together).
MAX_DEVICES = 4096
#: Hops followed at most from the device a trace names (veth -> peer -> macvtap is two).
MAX_HOPS = 4

_IFF_BRIDGE_PORT = 1 << 9  # include/linux/netdevice.h enum netdev_priv_flags (5.10 .. 7.x)


@dataclass
class Topology:
    """Devices by name (names repeat across network namespaces) and the edges between them.

    :ivar kinds: device name -> link kinds (``veth``, ``macvtap``, ``bridge``, ...; ``""`` when none).
    :ivar edges: device name -> names of the devices its frames reach next.
    """

    kinds: Dict[str, Set[str]] = field(default_factory=dict)
    edges: Dict[str, Set[str]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def add_edge(self, a: str, b: str) -> None:
        if a and b and a != b:
            self.edges.setdefault(a, set()).add(b)

    def reach(self, name: str, targets: Iterable[str], hops: int = MAX_HOPS) -> Set[str]:
        """The ``targets`` that frames of device ``name`` can reach within ``hops`` edges; ``{name}``
        itself when it is a target (the trace named the dropping device)."""
        want = set(targets)
        if name in want:
            return {name}
        seen = {name}
        found: Set[str] = set()
        todo = deque([(name, 0)])
        while todo:
            cur, depth = todo.popleft()
            if depth >= hops:
                continue
            for nxt in sorted(self.edges.get(cur, ())):
                if nxt in seen:
                    continue
                seen.add(nxt)
                if nxt in want:
                    found.add(nxt)  # a dropping device: frames stop there
                    continue
                todo.append((nxt, depth + 1))
        return found


def _kind(dev: drgn.Object) -> str:
    try:
        ops = dev.rtnl_link_ops.read_()
        if not ops:
            return ""
        return ops.kind.string_().decode(errors="replace")
    except (drgn.FaultError, LookupError, ValueError):
        return ""


def _name(dev: drgn.Object) -> str:
    try:
        return dev.name.string_().decode(errors="replace")
    except (drgn.FaultError, LookupError, ValueError):
        return ""


def _priv(prog: drgn.Program, dev: drgn.Object, type_name: str) -> drgn.Object:
    from drgn.helpers.linux.net import netdev_priv

    return netdev_priv(dev, type_name)


def read_topology(prog: drgn.Program, max_devices: int = MAX_DEVICES) -> Topology:
    """Read every network device (all namespaces, at most ``max_devices``) and the edges between them."""
    from drgn.helpers.linux.net import for_each_net, for_each_netdev

    topo = Topology()
    failed: Dict[str, str] = {}  # link kind -> first error
    n = 0
    try:
        nets = list(for_each_net(prog))
    except (drgn.FaultError, LookupError, ValueError) as e:
        topo.notes.append(f"network namespaces unreadable: {e}")
        return topo
    for net in nets:
        try:
            devices = for_each_netdev(net)
            for dev in devices:
                n += 1
                if n > max_devices:
                    topo.notes.append(f"stopped after {max_devices} devices")
                    return topo
                _read_device(prog, dev, topo, failed)
        except (drgn.FaultError, LookupError, ValueError) as e:
            topo.notes.append(f"device list of a namespace unreadable: {e}")
    for kind, err in sorted(failed.items()):
        topo.notes.append(f"{kind} links unreadable ({err}): frames through them are not followed")
    return topo


def _bridge_port_flag(prog: drgn.Program) -> int:
    try:
        return int(prog.constant("IFF_BRIDGE_PORT"))
    except LookupError:
        return _IFF_BRIDGE_PORT


def _peer_name(obj: drgn.Object) -> Optional[str]:
    p = obj.read_()
    return _name(p) if p else None


def _read_device(prog: drgn.Program, dev: drgn.Object, topo: Topology, failed: Dict[str, str]) -> None:
    name = _name(dev)
    if not name:
        return
    kind = _kind(dev)
    topo.kinds.setdefault(name, set()).add(kind)
    try:
        if kind == "veth":
            peer = _peer_name(_priv(prog, dev, "struct veth_priv").peer)
            if peer:
                topo.add_edge(name, peer)
        elif kind in ("macvlan", "macvtap"):
            # struct macvtap_dev begins with its struct macvlan_dev (drivers/net/macvtap.c)
            lower = _peer_name(_priv(prog, dev, "struct macvlan_dev").lowerdev)
            if lower:
                topo.add_edge(lower, name)
        elif kind in ("ipvlan", "ipvtap"):
            # struct ipvtap_dev begins with its struct ipvl_dev (drivers/net/ipvlan/ipvtap.c)
            lower = _peer_name(_priv(prog, dev, "struct ipvl_dev").phy_dev)
            if lower:
                topo.add_edge(lower, name)
        if int(dev.priv_flags) & _bridge_port_flag(prog):
            hd = dev.rx_handler_data.read_()
            if hd:
                port = drgn.cast("struct net_bridge_port *", hd)
                br = _name(port.br.dev.read_())
                if br:
                    topo.add_edge(br, name)
                    topo.add_edge(name, br)
    except (drgn.FaultError, LookupError, ValueError, TypeError) as e:
        failed.setdefault(kind or "bridge port", str(e))
