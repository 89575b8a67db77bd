"""Decoding packet headers from bytes: Ethernet, 802.1Q/802.1ad VLAN, ARP, IPv4, IPv6, TCP, UDP, ICMP, ICMPv6.

Pure functions on bytes: no kernel access.  Truncated or malformed headers end decoding at the last
complete layer, with a note, never an exception.
"""

from __future__ import annotations

from socket import AF_INET, AF_INET6, inet_ntop
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["DecodedPacket", "decode_ethernet", "decode_l3", "ETHERTYPES", "IPPROTOS"]

ETHERTYPES = {0x0800: "IPv4", 0x0806: "ARP", 0x86DD: "IPv6", 0x8100: "802.1Q", 0x88A8: "802.1ad", 0x8847: "MPLS",
              0x88CC: "LLDP", 0x8035: "RARP"}
IPPROTOS = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 58: "ICMPv6", 132: "SCTP"}
TCP_FLAGS = "FSRPAUEC"


def _mac(b: bytes) -> str:
    return b.hex(":")


def _ip4(b: bytes) -> str:
    return inet_ntop(AF_INET, b)


def _ip6(b: bytes) -> str:
    return inet_ntop(AF_INET6, b)


@dataclass
class DecodedPacket:
    """Headers found in a frame, outermost first (each a dict with a ``"proto"`` key)."""

    layers: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def protocol(self) -> str:
        """The innermost recognised protocol name."""
        return self.layers[-1]["proto"] if self.layers else "?"

    def flow(self) -> Optional[Tuple[str, str, str, Optional[int], Optional[int]]]:
        """(proto, src, dst, sport, dport) of the innermost IP flow, if any."""
        ip = next((l for l in reversed(self.layers) if l["proto"] in ("IPv4", "IPv6")), None)
        if ip is None:
            return None
        l4 = self.layers[-1]
        return (l4["proto"], ip["src"], ip["dst"], l4.get("sport"), l4.get("dport"))

    def summary(self) -> str:
        """One line, tcpdump-like."""
        parts = []
        for l in self.layers:
            p = l["proto"]
            if p == "Ethernet":
                parts.append(f"{l['src']} > {l['dst']}")
            elif p in ("802.1Q", "802.1ad"):
                parts.append(f"vlan {l['vid']}")
            elif p == "ARP":
                parts.append(f"ARP {l['op']} {l['tpa']} tell {l['spa']}")
            elif p in ("IPv4", "IPv6"):
                parts.append(f"{p} {l['src']} > {l['dst']}")
            elif p in ("TCP", "UDP"):
                s = f"{p} {l['sport']} > {l['dport']}"
                if p == "TCP":
                    s += f" [{l['flags']}]"
                parts.append(s)
            elif p in ("ICMP", "ICMPv6"):
                parts.append(f"{p} type {l['type']} code {l['code']}")
            else:
                parts.append(p)
        return ", ".join(parts) + (f" ({'; '.join(self.notes)})" if self.notes else "")


def decode_ethernet(data: bytes) -> DecodedPacket:
    """Decode a frame that starts with an Ethernet header."""
    pkt = DecodedPacket()
    if len(data) < 14:
        pkt.notes.append(f"{len(data)} bytes: shorter than an Ethernet header")
        return pkt
    ethertype = struct.unpack_from(">H", data, 12)[0]
    pkt.layers.append({"proto": "Ethernet", "dst": _mac(data[0:6]), "src": _mac(data[6:12]), "ethertype": ethertype})
    off = 14
    for _ in range(4):  # stacked VLAN tags, bounded
        if ethertype not in (0x8100, 0x88A8):
            break
        if len(data) < off + 4:
            pkt.notes.append("truncated VLAN tag")
            return pkt
        tci, ethertype = struct.unpack_from(">HH", data, off)
        pkt.layers.append({"proto": ETHERTYPES[pkt.layers[-1]["ethertype"]], "vid": tci & 0xFFF, "pcp": tci >> 13,
                           "ethertype": ethertype})
        off += 4
    _decode_l3(ethertype, data, off, pkt)
    return pkt


def decode_l3(ethertype: int, data: bytes) -> DecodedPacket:
    """Decode a frame without link-layer header (tun mode, IFF_TUN) given its protocol."""
    pkt = DecodedPacket()
    _decode_l3(ethertype, data, 0, pkt)
    return pkt


def _decode_l3(ethertype: int, data: bytes, off: int, pkt: DecodedPacket) -> None:
    if ethertype == 0x0806:
        if len(data) < off + 28:
            pkt.notes.append("truncated ARP")
            return
        htype, ptype, hlen, plen, op = struct.unpack_from(">HHBBH", data, off)
        if hlen == 6 and plen == 4:
            pkt.layers.append({
                "proto": "ARP", "op": {1: "request", 2: "reply"}.get(op, str(op)),
                "sha": _mac(data[off + 8:off + 14]), "spa": _ip4(data[off + 14:off + 18]),
                "tha": _mac(data[off + 18:off + 24]), "tpa": _ip4(data[off + 24:off + 28]),
            })
        else:
            pkt.layers.append({"proto": "ARP", "op": str(op), "spa": "?", "tpa": "?"})
        return
    if ethertype == 0x0800:
        if len(data) < off + 20:
            pkt.notes.append("truncated IPv4 header")
            return
        vihl, tos, tot, ident, frag, ttl, proto = struct.unpack_from(">BBHHHBB", data, off)
        ihl = (vihl & 0xF) * 4
        if vihl >> 4 != 4 or ihl < 20:
            pkt.notes.append(f"bad IPv4 header (version/ihl {vihl:#x})")
            return
        pkt.layers.append({
            "proto": "IPv4", "src": _ip4(data[off + 12:off + 16]),
            "dst": _ip4(data[off + 16:off + 20]), "ttl": ttl, "ipproto": proto,
            "total_length": tot, "id": ident, "fragment": frag & 0x1FFF or bool(frag & 0x2000),
        })
        if frag & 0x1FFF:
            return  # not the first fragment: no L4 header
        _decode_l4(proto, data, off + ihl, pkt)
        return
    if ethertype == 0x86DD:
        if len(data) < off + 40:
            pkt.notes.append("truncated IPv6 header")
            return
        vtc, plen, nh, hlim = struct.unpack_from(">IHBB", data, off)
        if vtc >> 28 != 6:
            pkt.notes.append("bad IPv6 version")
            return
        pkt.layers.append({
            "proto": "IPv6", "src": _ip6(data[off + 8:off + 24]),
            "dst": _ip6(data[off + 24:off + 40]), "hop_limit": hlim, "ipproto": nh,
            "payload_length": plen,
        })
        off += 40
        for _ in range(8):  # extension headers, bounded
            if nh not in (0, 43, 60) or len(data) < off + 8:
                break
            nh, hdrlen = data[off], data[off + 1]
            off += (hdrlen + 1) * 8
        _decode_l4(nh, data, off, pkt)
        return
    pkt.layers.append({"proto": ETHERTYPES.get(ethertype, f"ethertype {ethertype:#06x}")})


def _decode_l4(proto: int, data: bytes, off: int, pkt: DecodedPacket) -> None:
    name = IPPROTOS.get(proto, f"ipproto {proto}")
    if proto in (6, 17):
        need = 20 if proto == 6 else 8
        if len(data) < off + need:
            pkt.notes.append(f"truncated {name} header")
            return
        sport, dport = struct.unpack_from(">HH", data, off)
        layer: Dict[str, Any] = {"proto": name, "sport": sport, "dport": dport}
        if proto == 6:
            seq, ack, doff, flags = struct.unpack_from(">IIBB", data, off + 4)
            layer.update(seq=seq, ack=ack, flags="".join(c for i, c in enumerate(TCP_FLAGS) if flags >> i & 1) or ".")
        else:
            layer["length"] = struct.unpack_from(">H", data, off + 4)[0]
        pkt.layers.append(layer)
    elif proto in (1, 58):
        if len(data) < off + 4:
            pkt.notes.append(f"truncated {name} header")
            return
        pkt.layers.append({"proto": name, "type": data[off], "code": data[off + 1]})
    else:
        pkt.layers.append({"proto": name})
