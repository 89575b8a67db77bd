"""The packets of tun/tap rings as a pcapng file (``ring --pcap FILE``); pure: bytes in, bytes out.

pcapng blocks written (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html): one Section
Header Block, one Interface Description Block per device (``LINKTYPE_ETHERNET`` for tap, macvtap and
ipvtap, ``LINKTYPE_RAW`` for tun-mode devices, whose frames start at the IP header), and one Enhanced
Packet Block per ring entry, with a comment naming the device, queue, ring index and skb address.  The
captured bytes are the ones skbinspect read (the linear part); a frame longer than that keeps its real
length as the original length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Dict, Iterable, Optional

__all__ = ["LINKTYPE_ETHERNET", "LINKTYPE_RAW", "PcapPacket", "write_pcapng"]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT, _IF_NAME = 0, 1, 2
_SNAPLEN = 0  # no limit


@dataclass
class PcapPacket:
    """One frame: the device (an interface of the file), its link type, the bytes read, the frame's real
    length, the time in ns (0 when the kernel kept none) and a comment."""

    device: str
    linktype: int
    data: bytes
    length: int
    tstamp_ns: int = 0
    comment: str = ""


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _options(*opts: bytes) -> bytes:
    return b"".join(opts) + struct.pack("<HH", _OPT_END, 0) if opts else b""


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def section_header() -> bytes:
    return _block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1))


def interface_description(linktype: int, name: str) -> bytes:
    return _block(
        _IDB, struct.pack("<HHI", linktype, 0, _SNAPLEN) + _options(_option(_IF_NAME, name.encode()))
    )


def enhanced_packet(interface: int, p: PcapPacket) -> bytes:
    us = max(p.tstamp_ns, 0) // 1000  # the default if_tsresol: microseconds
    body = struct.pack(
        "<IIIII", interface, us >> 32, us & 0xFFFFFFFF, len(p.data), max(p.length, len(p.data))
    )
    body += _pad4(p.data)
    if p.comment:
        body += _options(_option(_OPT_COMMENT, p.comment.encode()))
    return _block(_EPB, body)


def write_pcapng(out: BinaryIO, packets: Iterable[PcapPacket]) -> int:
    """Write ``packets`` to ``out`` as one pcapng section; an interface per (device, link type), in order
    of first use.  Returns the number of packets written."""
    out.write(section_header())
    interfaces: Dict[tuple, int] = {}
    n = 0
    for p in packets:
        key = (p.device, p.linktype)
        iface: Optional[int] = interfaces.get(key)
        if iface is None:
            iface = interfaces[key] = len(interfaces)
            out.write(interface_description(p.linktype, p.device))
        out.write(enhanced_packet(iface, p))
        n += 1
    return n
