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
from .bulk import read_many
from .packet import DecodedPacket, decode_ethernet, decode_l3

__all__ = ["RingEntry", "read_entries", "TUN_XDP_FLAG", "HEADER_BYTES"]

#: include/linux/if_tun.h (5.10 .. 7.1): tun rings tag xdp_frame pointers with bit 0.
TUN_XDP_FLAG = 0x1

#: Packet bytes read per entry for header decoding and the digest (the whole linear part up to this).
HEADER_BYTES = 256

#: (u16)~0U: the header offset is not set (skb_mac_header_was_set() is false).
UNSET_HEADER = 0xFFFF

# Order matters: read_entries unpacks the decoded tuple positionally.
SKB_FIELDS = ("len", "data_len", "protocol", "head", "data", "mac_header", "network_header", "transport_header",
              "tstamp", "dev", "queue_mapping", "truesize", "vlan_tci", "vlan_proto", "vlan_present")
XDP_FIELDS = ("data", "len", "headroom", "metasize", "frame_sz", "dev_rx")


@dataclass
class RingEntry:
    """One live (or stale) ring slot's object, decoded.

    :ivar kind: ``"skb"`` or ``"xdp_frame"``.
    :ivar address: the object's address (tag bit removed).
    :ivar length: bytes of the frame as a reader gets it (``skb->len``, plus an accelerated VLAN tag).
    :ivar linear_length: of which in the linear area (``len - data_len``).
    :ivar data: the first ``HEADER_BYTES`` of the frame, from the MAC header (hex in JSON).
    :ivar sha256: digest of ``data``; ``digest_complete`` says whether that is the whole frame.
    Headers are decoded from ``data`` on first use (:attr:`headers`, :attr:`summary`).
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
    stale: bool = False
    error: Optional[str] = None
    l2: bool = True
    _decoded: Optional[DecodedPacket] = field(default=None, repr=False)

    @property
    def digest_complete(self) -> bool:
        return self.length is not None and len(self.data) == self.length

    @property
    def sha256(self) -> Optional[str]:
        return hashlib.sha256(self.data).hexdigest() if self.error is None else None

    def decoded(self) -> DecodedPacket:
        if self._decoded is None:
            self._decoded = decode_ethernet(self.data) if self.l2 else decode_l3(self.protocol or 0, self.data)
        return self._decoded

    @property
    def headers(self) -> List[Dict[str, Any]]:
        return self.decoded().layers if self.error is None else []

    @property
    def summary(self) -> str:
        return self.decoded().summary() if self.error is None else ""

    def to_json(self) -> Dict[str, Any]:
        return {
            "index": self.index, "kind": self.kind, "address": f"{self.address:#x}", "stale": self.stale,
            "length": self.length, "linear_length": self.linear_length,
            "protocol": self.protocol, "vlan_tci": self.vlan_tci, "queue_mapping": self.queue_mapping,
            "tstamp_ns": self.tstamp_ns, "dev": f"{self.dev:#x}" if self.dev else None,
            "data": self.data.hex(), "sha256": self.sha256, "digest_complete": self.digest_complete,
            "headers": self.headers, "error": self.error,
        }  # fmt: skip


def read_entries(prog: drgn.Program, slots: List[int], indices: List[int], l2: bool = True,
                 stale: bool = False) -> List[RingEntry]:
    """Decode the objects in ``slots[i]`` for each ``i`` in ``indices`` (in that order).

    The structs are read together (:func:`~skbinspect.bulk.read_many`), then the packet bytes.

    :param slots: raw queue values of a ptr_ring (bit 0 set = ``xdp_frame``, tun only).
    :param l2: frames start with an Ethernet header (tap); False for IFF_TUN devices.
    """
    skb_lay = struct_layout(prog, "struct sk_buff", SKB_FIELDS)
    skb_unpack, pos, bitf = skb_lay.unpacker(SKB_FIELDS)
    skb_size = skb_lay.size
    xdp_lay = None
    entries: List[RingEntry] = []
    reqs = []
    for i in indices:
        raw_ptr = slots[i]
        if raw_ptr & TUN_XDP_FLAG:
            if xdp_lay is None:
                xdp_lay = struct_layout(prog, "struct xdp_frame", XDP_FIELDS)
            e = RingEntry(i, "xdp_frame", raw_ptr & ~TUN_XDP_FLAG, stale=stale, l2=l2)
            reqs.append((e.address, xdp_lay.size))
        else:
            e = RingEntry(i, "skb", raw_ptr, stale=stale, l2=l2)
            reqs.append((raw_ptr, skb_size))
        entries.append(e)
    structs = read_many(prog, reqs)
    data_reqs = []
    fixups = []  # (entry, vlan tag bytes or None)
    pack = struct.pack
    # positions of the members in the unpacked tuple (a member this kernel lacks reads as 0)
    P_LEN, P_DLEN, P_PROTO, P_HEAD, P_DATA, P_MAC = (pos[n] for n in ("len", "data_len", "protocol", "head", "data",
                                                                      "mac_header"))
    P_TSTAMP, P_DEV, P_QMAP = pos.get("tstamp"), pos.get("dev"), pos.get("queue_mapping")
    P_VTCI, P_VPROTO, P_VPRES = pos.get("vlan_tci"), pos.get("vlan_proto"), pos.get("vlan_present")
    vpres_shift, vpres_mask = bitf.get("vlan_present", (0, 1))
    pack = struct.pack
    for e, raw in zip(entries, structs):
        if raw is None:
            e.error = f"{e.kind} unreadable at {e.address:#x}"
            continue
        if e.kind == "xdp_frame":
            assert xdp_lay is not None
            x = xdp_lay.decode(raw)
            e.length = e.linear_length = x.get("len")
            e.dev = x.get("dev_rx") or None
            data_reqs.append((e, x["data"], min(e.length or 0, HEADER_BYTES)))
            fixups.append(None)
            continue
        t = skb_unpack(raw)
        length = t[P_LEN]
        data_len = t[P_DLEN]
        proto = t[P_PROTO]
        start = t[P_DATA]
        linear = length - data_len
        e.length = length
        e.linear_length = linear
        e.protocol = ((proto & 0xFF) << 8) | (proto >> 8)
        if P_QMAP is not None:
            e.queue_mapping = t[P_QMAP]
        if P_TSTAMP is not None:
            e.tstamp_ns = t[P_TSTAMP] or None
        if P_DEV is not None:
            e.dev = t[P_DEV] or None
        if length > 1 << 20 or linear < 0:
            e.error = f"implausible lengths len={length} data_len={data_len} (freed or corrupt skb?)"
            continue
        head = t[P_HEAD]
        mac_header = t[P_MAC]
        if l2 and mac_header != UNSET_HEADER and head:
            mac = head + mac_header
            if start - 64 <= mac < start:  # the link header precedes data (rx path before a push)
                e.length += start - mac
                linear += start - mac
                e.linear_length = linear
                start = mac
        # An accelerated VLAN tag lives in skb->vlan_tci/vlan_proto; tun_put_user() and tap_put_user()
        # insert it after the MAC addresses when a reader copies the frame out, so do the same.
        # Presence: the vlan_present bit up to 6.1; vlan_all != 0 since 6.2 (354259fa73e2).
        vlan_tci = t[P_VTCI] if P_VTCI is not None else 0
        vlan_proto = t[P_VPROTO] if P_VPROTO is not None else 0
        if P_VPRES is not None:
            present = (t[P_VPRES] >> vpres_shift) & vpres_mask
        else:
            present = vlan_tci or vlan_proto
        tag = None
        if present and l2:
            e.vlan_tci = vlan_tci
            tag = pack(">HH", ((vlan_proto & 0xFF) << 8) | (vlan_proto >> 8), vlan_tci)
            e.length += 4
            e.linear_length += 4
        data_reqs.append((e, start, linear if linear < HEADER_BYTES else HEADER_BYTES))
        fixups.append(tag)
    datas = read_many(prog, [(a, n) for _, a, n in data_reqs])
    for (e, a, n), tag, data in zip(data_reqs, fixups, datas):
        if data is None:
            e.error = f"packet data unreadable at {a:#x}"
            continue
        if tag is not None and len(data) >= 12:
            data = (data[:12] + tag + data[12:])[:HEADER_BYTES]
        e.data = data
    return entries
