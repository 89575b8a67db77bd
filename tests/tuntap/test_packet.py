"""skbinspect.tuntap.packet: both decoders read the same header descriptions (Header), and must apply them
the same way: the grouped JSON renderer (layers_json_many) must give exactly what json.dumps of the per-frame
decoders (decode_ethernet, decode_l3) gives, for well-formed, truncated and malformed frames alike."""

import json
import random
import struct
from typing import List

from skbinspect.tuntap.packet import decode_ethernet, decode_l3, layers_json_many


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _l4(rng: random.Random, proto: int) -> bytes:
    if proto == 6:
        return struct.pack(
            ">HHIIBBHHH",
            rng.randrange(65536),
            rng.choice([80, 443, 22]),
            rng.getrandbits(32),
            rng.getrandbits(32),
            0x50,
            rng.choice([0x02, 0x10, 0x12, 0x18, 0x11, 0x04, 0xFF, 0]),
            65535,
            0,
            0,
        )
    if proto == 17:
        return struct.pack(">HHHH", rng.randrange(65536), rng.choice([53, 5000]), rng.randrange(8, 1500), 0)
    if proto in (1, 58):
        return struct.pack(">BBHI", rng.randrange(256), rng.randrange(4), 0, rng.getrandbits(32))
    return bytes(rng.getrandbits(8) for _ in range(12))


def _l3(rng: random.Random, ethertype: int) -> bytes:
    if ethertype == 0x0800:
        proto = rng.choice([6, 17, 1, 47, 132, 2])
        ihl = rng.choice([5, 5, 5, 6, 4])  # 4: bad (notes)
        version = rng.choice([4, 4, 4, 4, 6])
        frag = rng.choice([0, 0, 0x4000, 0x2000, 0x2000 | 0x10, 0x00B9])
        hdr = struct.pack(
            ">BBHHHBBH4s4s",
            version << 4 | ihl,
            0,
            rng.randrange(20, 1500),
            rng.randrange(65536),
            frag,
            rng.randrange(256),
            proto,
            0,
            bytes(rng.getrandbits(8) for _ in range(4)),
            bytes([10, 1, 0, rng.randrange(256)]),
        )
        return hdr + bytes(4 * max(0, ihl - 5)) + _l4(rng, proto)
    if ethertype == 0x86DD:
        nh = rng.choice([6, 17, 58, 58, 0, 43, 60, 47])
        hdr = struct.pack(
            ">IHBB16s16s",
            rng.choice([6, 6, 6, 4]) << 28 | rng.randrange(1 << 20),
            rng.randrange(2000),
            nh,
            rng.randrange(256),
            bytes([0xFD] + [0] * 14 + [rng.randrange(3)]),
            bytes(rng.getrandbits(8) for _ in range(16)) if rng.random() < 0.5 else bytes(15) + b"\1",
        )
        ext = b""
        if nh in (0, 43, 60):
            ext = bytes([rng.choice([6, 17, 58]), 0]) + bytes(6)
            nh = ext[0]
        return hdr + ext + _l4(rng, nh)
    if ethertype == 0x0806:
        hlen, plen = rng.choice([(6, 4), (6, 4), (8, 4)])
        return struct.pack(
            ">HHBBH6s4s6s4s",
            1,
            0x0800,
            hlen,
            plen,
            rng.choice([1, 2, 3]),
            bytes(rng.getrandbits(8) for _ in range(6)),
            bytes([10, 0, 0, rng.randrange(256)]),
            bytes(6),
            bytes([10, 0, 0, 1]),
        )
    return bytes(rng.getrandbits(8) for _ in range(30))


def _frame(rng: random.Random) -> bytes:
    ethertype = rng.choice([0x0800, 0x0800, 0x86DD, 0x0806, 0x88CC, 0x1234, 0x8100, 0x88A8])
    frame = bytes(rng.getrandbits(8) for _ in range(12)) + struct.pack(">H", ethertype)
    if ethertype in (0x8100, 0x88A8):  # 1 to 5 stacked tags (decode_ethernet reads at most 4)
        ethertype = rng.choice([0x0800, 0x86DD, 0x0806, 0x9999])
        frame += _tags(rng, rng.choice([1, 1, 2, 4, 5]), ethertype)
    return frame + _l3(rng, ethertype) + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))


def _tags(rng: random.Random, depth: int, final: int) -> bytes:
    out = b""
    for k in range(depth):
        nxt = final if k == depth - 1 else rng.choice([0x8100, 0x88A8])
        out += struct.pack(">HH", rng.randrange(65536), nxt)
    return out


def _frames(seed: int, count: int) -> List[bytes]:
    rng = random.Random(seed)
    frames = []
    for _ in range(count):
        f = _frame(rng)
        r = rng.random()
        if r < 0.25:
            f = f[: rng.randrange(len(f) + 1)]  # truncated anywhere
        elif r < 0.3:
            f = bytearray(f)
            f[rng.randrange(len(f))] = rng.randrange(256)  # one corrupt byte
            f = bytes(f)
        frames.append(f[:256])
    return frames


def test_layers_json_many_equals_json_of_decode_ethernet() -> None:
    frames = _frames(7, 6000)
    got = layers_json_many(frames, True, [None] * len(frames))
    for f, g in zip(frames, got):
        assert g == _dumps(decode_ethernet(f).layers), f.hex()


def test_layers_json_many_l3_equals_decode_l3() -> None:
    rng = random.Random(11)
    frames, protos = [], []
    for f in _frames(8, 4000):
        frames.append(f[14:])  # without the Ethernet header, as a tun device gives frames
        protos.append(
            rng.choice(
                [
                    0x0800,
                    0x86DD,
                    0x0806,
                    0x8100,
                    0,
                    None,
                    0x1234,
                    struct.unpack(">H", f[12:14])[0] if len(f) >= 14 else 0,
                ]
            )
        )
    got = layers_json_many(frames, False, protos)
    for f, p, g in zip(frames, protos, got):
        assert g == _dumps(decode_l3(p or 0, f).layers), (p, f.hex())


def test_layers_json_many_edge_cases() -> None:
    assert layers_json_many([], True, []) == []
    frames = [b"", b"\x01" * 13, bytes(14), bytes(12) + b"\x08\x00" + bytes(19)]
    got = layers_json_many(frames, True, [None] * 4)
    assert got == [_dumps(decode_ethernet(f).layers) for f in frames]


def test_fragment_is_a_bool_in_both_paths() -> None:
    """IPv4 ``fragment``: true for any part of a fragmented datagram (More Fragments, or an offset: then
    no L4 header follows), false otherwise; the same in the per-frame and the grouped decoder."""
    eth = bytes(12) + b"\x08\x00"
    frames = []
    for frag in (0, 0x4000, 0x2000, 0x00B9, 0x20B9):
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 1, frag, 64, 17, 0, bytes(4), bytes(4))
        frames.append(eth + ip + struct.pack(">HHHH", 53, 5000, 8, 0))
    layers = [decode_ethernet(f).layers for f in frames]
    assert [ls[1]["fragment"] for ls in layers] == [False, False, True, True, True]
    assert [ls[-1]["proto"] for ls in layers] == ["UDP", "UDP", "UDP", "IPv4", "IPv4"]
    assert layers_json_many(frames, True, [None] * len(frames)) == [_dumps(ls) for ls in layers]


def test_name_only_vlan_layer_summary() -> None:
    """A fifth stacked tag (and a tun frame whose protocol is 802.1Q) is a layer of its name only: the
    summary shows the name."""
    frame = bytes(12) + b"\x81\x00" + b"\x00\x05\x81\x00" * 5 + bytes(20)
    pkt = decode_ethernet(frame)
    assert [layer["proto"] for layer in pkt.layers] == ["Ethernet"] + ["802.1Q"] * 5
    assert pkt.summary().endswith("vlan 5, 802.1Q (more than 4 stacked VLAN tags: the rest not decoded)")
    assert decode_l3(0x8100, bytes(20)).summary() == "802.1Q"
