"""skbinspect.tuntap.pcap: the pcapng blocks, read back field by field."""

from __future__ import annotations

import io
import struct
from typing import List, Tuple

from skbinspect.tuntap.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapPacket, write_pcapng


def _blocks(b: bytes) -> List[Tuple[int, bytes]]:
    out = []
    i = 0
    while i < len(b):
        kind, total = struct.unpack_from("<II", b, i)
        assert total % 4 == 0 and struct.unpack_from("<I", b, i + total - 4)[0] == total
        out.append((kind, b[i + 8 : i + total - 4]))
        i += total
    assert i == len(b)
    return out


def _options(b: bytes) -> List[Tuple[int, bytes]]:
    opts = []
    i = 0
    while i < len(b):
        code, n = struct.unpack_from("<HH", b, i)
        if code == 0:
            assert n == 0 and i + 4 == len(b)
            break
        opts.append((code, b[i + 4 : i + 4 + n]))
        i += 4 + n + (-n % 4)
    return opts


def test_pcapng_blocks() -> None:
    eth = bytes(range(61))  # odd length: padded to 4 in the file, caplen honest
    raw = bytes.fromhex("4500001c")
    buf = io.BytesIO()
    n = write_pcapng(
        buf,
        [
            PcapPacket(
                "tap0", LINKTYPE_ETHERNET, eth, 1514, 1_700_000_000_123_456_789, "tap0 queue 0 ring index 5"
            ),
            PcapPacket("tun0", LINKTYPE_RAW, raw, 4),
            PcapPacket("tap0", LINKTYPE_ETHERNET, eth[:14], 14, 0, ""),
        ],
    )
    assert n == 3
    blocks = _blocks(buf.getvalue())
    assert [k for k, _ in blocks] == [0x0A0D0D0A, 1, 6, 1, 6, 6]
    magic, major, minor, seclen = struct.unpack("<IHHq", blocks[0][1])
    assert (magic, major, minor, seclen) == (0x1A2B3C4D, 1, 0, -1)
    link, _, snap = struct.unpack_from("<HHI", blocks[1][1])
    assert (link, snap) == (LINKTYPE_ETHERNET, 0) and _options(blocks[1][1][8:]) == [(2, b"tap0")]
    assert struct.unpack_from("<H", blocks[3][1])[0] == LINKTYPE_RAW
    iface, hi, lo, cap, orig = struct.unpack_from("<IIIII", blocks[2][1])
    assert (iface, cap, orig) == (0, 61, 1514)  # longer than what was read: origlen is the frame's length
    assert (hi << 32 | lo) == 1_700_000_000_123_456  # microseconds
    body = blocks[2][1][20:]
    assert body[:61] == eth and body[61:64] == b"\0\0\0"
    assert _options(body[64:]) == [(1, b"tap0 queue 0 ring index 5")]
    iface, _, _, cap, orig = struct.unpack_from("<IIIII", blocks[4][1])
    assert (iface, cap, orig) == (1, 4, 4) and blocks[4][1][20:] == raw  # no comment: no options
    assert struct.unpack_from("<I", blocks[5][1])[0] == 0  # tap0 again: its first interface


def test_empty_capture_is_a_section_header() -> None:
    buf = io.BytesIO()
    assert write_pcapng(buf, []) == 0
    assert [k for k, _ in _blocks(buf.getvalue())] == [0x0A0D0D0A]
