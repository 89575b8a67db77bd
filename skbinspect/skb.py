"""Reading ``struct sk_buff`` and ``struct xdp_frame`` entries in bulk, with their packet headers.

One read of the struct and one read of the linear packet data per entry; fields are decoded from the
bytes with offsets taken from the target's DWARF (:mod:`skbinspect.layout`), not one drgn Object each.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import drgn

from .layout import struct_layout
from .packet import decode_ethernet, decode_l3

__all__ = ["RingEntry", "read_entries", "TUN_XDP_FLAG", "HEADER_BYTES"]

#: include/linux/if_tun.h (5.10 .. 7.1): tun rings tag xdp_frame pointers with bit 0.
TUN_XDP_FLAG = 0x1

#: Packet bytes read per entry for header decoding and the digest (the whole linear part up to this).
HEADER_BYTES = 256

#: (u16)~0U: the header offset is not set (skb_mac_header_was_set() is false).
UNSET_HEADER = 0xFFFF

SKB_FIELDS = ("len", "data_len", "protocol", "head", "data", "mac_header", "network_header", "transport_header",
              "tstamp", "dev", "queue_mapping", "truesize", "vlan_tci", "vlan_proto", "vlan_present")
XDP_FIELDS = ("data", "len", "headroom", "metasize", "frame_sz", "dev_rx")


@dataclass
class RingEntry:
    """One live (or stale) ring slot's object, decoded.

    :ivar kind: ``"skb"`` or ``"xdp_frame"``.
    :ivar address: the object's address (tag bit removed).
    :ivar length: bytes of packet (``skb->len`` / ``xdp_frame->len``).
    :ivar linear_length: bytes in the linear area (``len - data_len``).
    :ivar data: the first ``HEADER_BYTES`` of the frame, from the MAC header (hex in JSON).
    :ivar sha256: digest of the whole frame when it is linear and at most ``HEADER_BYTES`` long,
        else of what was read (``digest_complete`` says which).
    """

    index: int
    kind: str
    address: int
    length: Optional[int] = None
    linear_length: Optional[int] = None
    protocol: Optional[int] = None  # skb->protocol, host order
    vlan_tci: Optional[int] = None  # an accelerated (out-of-band) VLAN tag, re-inserted in ``data``
    queue_mapping: Optional[int] = None
    tstamp_ns: Optional[int] = None
    dev: Optional[int] = None
    data: bytes = b""
    digest_complete: bool = False
    sha256: Optional[str] = None
    headers: List[Dict[str, Any]] = field(default_factory=list)
    summary: str = ""
    stale: bool = False
    error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {
            "index": self.index, "kind": self.kind, "address": f"{self.address:#x}", "stale": self.stale,
            "length": self.length, "linear_length": self.linear_length,
            "protocol": self.protocol, "vlan_tci": self.vlan_tci, "queue_mapping": self.queue_mapping, "tstamp_ns": self.tstamp_ns,
            "dev": f"{self.dev:#x}" if self.dev else None,
            "data": self.data.hex(), "sha256": self.sha256, "digest_complete": self.digest_complete,
            "headers": self.headers, "summary": self.summary, "error": self.error,
        }  # fmt: skip


def _finish(e: RingEntry, data: bytes, l2: bool) -> None:
    e.data = data
    e.digest_complete = e.length is not None and len(data) == e.length
    e.sha256 = hashlib.sha256(data).hexdigest()
    if l2:
        pkt = decode_ethernet(data)
    else:
        pkt = decode_l3(e.protocol or 0, data)
    e.headers = pkt.layers
    e.summary = pkt.summary()


def read_entries(prog: drgn.Program, slots: List[int], indices: List[int], l2: bool = True,
                 stale: bool = False) -> List[RingEntry]:
    """Decode the objects in ``slots[i]`` for each ``i`` in ``indices`` (in that order).

    :param slots: raw queue values of a ptr_ring (bit 0 set = ``xdp_frame``, tun only).
    :param l2: frames start with an Ethernet header (tap); False for IFF_TUN devices.
    """
    skb_lay = struct_layout(prog, "struct sk_buff", SKB_FIELDS)
    xdp_lay = None
    out: List[RingEntry] = []
    read = prog.read
    for i in indices:
        raw_ptr = slots[i]
        if raw_ptr & TUN_XDP_FLAG:
            addr = raw_ptr & ~TUN_XDP_FLAG
            e = RingEntry(i, "xdp_frame", addr, stale=stale)
            try:
                if xdp_lay is None:
                    xdp_lay = struct_layout(prog, "struct xdp_frame", XDP_FIELDS)
                f = xdp_lay.decode(read(addr, xdp_lay.size))
                e.length = e.linear_length = f.get("len")
                e.dev = f.get("dev_rx")
                n = min(e.length or 0, HEADER_BYTES)
                _finish(e, read(f["data"], n) if n else b"", l2)
            except (drgn.FaultError, LookupError) as err:
                e.error = f"xdp_frame unreadable: {err}"
            out.append(e)
            continue
        e = RingEntry(i, "skb", raw_ptr, stale=stale)
        try:
            f = skb_lay.decode(read(raw_ptr, skb_lay.size))
        except drgn.FaultError as err:
            e.error = f"sk_buff unreadable: {err}"
            out.append(e)
            continue
        e.length = f["len"]
        e.linear_length = f["len"] - f["data_len"]
        proto = f["protocol"]
        e.protocol = ((proto & 0xFF) << 8) | (proto >> 8)
        e.queue_mapping = f.get("queue_mapping")
        e.tstamp_ns = f.get("tstamp") or None
        e.dev = f.get("dev") or None
        start = f["data"]
        if l2 and f["mac_header"] != UNSET_HEADER and f["head"]:
            mac = f["head"] + f["mac_header"]
            if mac <= start:  # the frame's link header precedes data (rx path before a push)
                e.length += start - mac
                e.linear_length += start - mac
                start = mac
        n = max(0, min(e.linear_length, HEADER_BYTES))
        if e.length > 1 << 20 or e.linear_length < 0:
            e.error = f"implausible lengths len={f['len']} data_len={f['data_len']} (freed or corrupt skb?)"
            out.append(e)
            continue
        # An accelerated VLAN tag lives in skb->vlan_tci/vlan_proto; tun_put_user() and tap_put_user()
        # insert it after the MAC addresses when a reader copies the frame out, so do the same.
        # Presence: the vlan_present bit up to 6.1, vlan_all != 0 since 6.2 (354259fa73e2 removed the bit).
        present = f["vlan_present"] if "vlan_present" in f else (f.get("vlan_tci", 0) or f.get("vlan_proto", 0))
        try:
            data = read(start, n) if n else b""
            if present and l2 and len(data) >= 12:
                e.vlan_tci = f["vlan_tci"]
                tag = struct.pack(">HH", ((f["vlan_proto"] & 0xFF) << 8) | (f["vlan_proto"] >> 8), f["vlan_tci"])
                data = (data[:12] + tag + data[12:])[:HEADER_BYTES]
                e.length += 4
                e.linear_length += 4
            _finish(e, data, l2)
        except drgn.FaultError as err:
            e.error = f"packet data unreadable at {start:#x}: {err}"
        out.append(e)
    return out
