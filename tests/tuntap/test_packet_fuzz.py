"""Header decoders survive any bytes: stacked VLAN tags past the four decoded, and random frames.

Every way a frame is shown goes through its own decoder: the one-line summary, the flow, the JSON layers
(the columnar fast path must equal the per-frame decoder), and the ring summary's tallies."""

from __future__ import annotations

import json
import random
import struct
from typing import List

import pytest

from skbinspect.tuntap.packet import (
    decode_ethernet,
    decode_l3,
    flow_key_text,
    flow_text,
    layers_json_many,
    summarize_many,
)


def _udp4() -> bytes:
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    )
    return ip + struct.pack(">HHHH", 4000, 5000, 8, 0)


def vlan_frame(tags: int) -> bytes:
    """An Ethernet frame with ``tags`` stacked VLAN tags (802.1ad outside, 802.1Q inside), then IPv4/UDP."""
    types = [0x88A8] + [0x8100] * (tags - 1) if tags else []
    b = bytes(6) + bytes([2, 0, 0, 0, 0, 1]) + struct.pack(">H", types[0] if tags else 0x0800)
    for i in range(tags):
        b += struct.pack(">HH", 100 + i, types[i + 1] if i + 1 < tags else 0x0800)
    return (b + _udp4())[:256]


def _every_view(datas: List[bytes], l2: bool) -> None:
    protos = [0x0800] * len(datas)
    for d in datas:
        p = decode_ethernet(d) if l2 else decode_l3(0x0800, d)
        assert isinstance(p.summary(), str)
        p.flow()
        flow_text(p.layers)
    fast = layers_json_many(datas, l2, protos)
    for d, j in zip(datas, fast):
        p = decode_ethernet(d) if l2 else decode_l3(0x0800, d)
        assert j == json.dumps(p.layers, separators=(",", ":"))
    _, _, keys = summarize_many(datas, l2, protos, list(range(len(datas))))
    for k in keys:
        flow_key_text(k)


@pytest.mark.parametrize("tags", [1, 4, 5, 6, 64])
def test_stacked_vlan_tags(tags: int) -> None:
    """Five stacked tags made `ring -e` die with KeyError 'vid' (issue 17): the fifth and later tags are
    shown by name and the summary says they were not decoded."""
    d = vlan_frame(tags)
    _every_view([d], True)
    s = decode_ethernet(d).summary()
    assert s.startswith("00:00:00:00:00:00 > 02:00:00:00:00:01") or s.startswith("02:00")
    if tags > 4:
        assert "more than 4 stacked VLAN tags" in s
    else:
        assert "UDP 4000 > 5000" in s and s.count("vlan ") == tags


def test_random_frames_never_raise() -> None:
    """20,000 random frames (some with a VLAN, IP or ARP ethertype), as Ethernet and as tun frames."""
    rng = random.Random(17)
    batch: List[bytes] = []
    for i in range(20_000):
        n = rng.randrange(0, 90)
        d = bytearray(rng.getrandbits(8) for _ in range(n))
        if n > 14 and rng.random() < 0.6:
            d[12:14] = rng.choice([b"\x81\x00", b"\x88\xa8", b"\x08\x00", b"\x86\xdd", b"\x08\x06"])
        batch.append(bytes(d))
        if len(batch) == 500:
            _every_view(batch, l2=i % 3 != 0)
            batch = []
