"""Decoding packet headers from bytes: Ethernet, 802.1Q/802.1ad VLAN, ARP, IPv4, IPv6, TCP, UDP, ICMP, ICMPv6.

Pure functions on bytes: no kernel access.  Truncated or malformed headers end decoding at the last
complete layer, with a note, never an exception.
"""

from __future__ import annotations

import json
import struct
from collections import deque
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import and_, eq, getitem, is_, itemgetter, le, rshift
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import Any, Dict, List, Optional, Sequence, Tuple

from skbinspect.memory.columns import column

__all__ = [
    "DecodedPacket",
    "decode_ethernet",
    "decode_l3",
    "flow_key_text",
    "flow_text",
    "layers_json_many",
    "summarize_many",
    "ETHERTYPES",
    "IPPROTOS",
]

ETHERTYPES = {
    0x0800: "IPv4",
    0x0806: "ARP",
    0x86DD: "IPv6",
    0x8100: "802.1Q",
    0x88A8: "802.1ad",
    0x8847: "MPLS",
    0x88CC: "LLDP",
    0x8035: "RARP",
}
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
                parts.append(f"vlan {l['vid']}" if "vid" in l else p)  # a tag past the 4 decoded has none
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
    pkt.layers.append(
        {"proto": "Ethernet", "dst": _mac(data[0:6]), "src": _mac(data[6:12]), "ethertype": ethertype}
    )
    off = 14
    for _ in range(4):  # stacked VLAN tags, bounded
        if ethertype not in (0x8100, 0x88A8):
            break
        if len(data) < off + 4:
            pkt.notes.append("truncated VLAN tag")
            return pkt
        tci, ethertype = struct.unpack_from(">HH", data, off)
        pkt.layers.append(
            {
                "proto": ETHERTYPES[pkt.layers[-1]["ethertype"]],
                "vid": tci & 0xFFF,
                "pcp": tci >> 13,
                "ethertype": ethertype,
            }
        )
        off += 4
    if ethertype in (0x8100, 0x88A8):
        pkt.notes.append("more than 4 stacked VLAN tags: the rest not decoded")
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
            pkt.layers.append(
                {
                    "proto": "ARP",
                    "op": {1: "request", 2: "reply"}.get(op, str(op)),
                    "sha": _mac(data[off + 8 : off + 14]),
                    "spa": _ip4(data[off + 14 : off + 18]),
                    "tha": _mac(data[off + 18 : off + 24]),
                    "tpa": _ip4(data[off + 24 : off + 28]),
                }
            )
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
        pkt.layers.append(
            {
                "proto": "IPv4",
                "src": _ip4(data[off + 12 : off + 16]),
                "dst": _ip4(data[off + 16 : off + 20]),
                "ttl": ttl,
                "ipproto": proto,
                "total_length": tot,
                "id": ident,
                "fragment": frag & 0x1FFF or bool(frag & 0x2000),
            }
        )
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
        pkt.layers.append(
            {
                "proto": "IPv6",
                "src": _ip6(data[off + 8 : off + 24]),
                "dst": _ip6(data[off + 24 : off + 40]),
                "hop_limit": hlim,
                "ipproto": nh,
                "payload_length": plen,
            }
        )
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
            layer.update(
                seq=seq, ack=ack, flags="".join(c for i, c in enumerate(TCP_FLAGS) if flags >> i & 1) or "."
            )
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


def layers_json_many(datas: Sequence[bytes], l2: bool, protocols: Sequence[Optional[int]]) -> List[str]:
    """For each frame, the compact JSON text of its decoded ``layers``: exactly what
    ``json.dumps(decode_ethernet(data).layers, separators=(",", ":"))`` gives (``decode_l3(protocol,
    data)`` when not ``l2``), for tens of thousands of frames at once.

    Frames are grouped by their header structure (ethertype, VLAN tags, IP version and protocol,
    fragment bits, TCP flags, ...); each group is unpacked with one precompiled ``struct`` and rendered
    column by column at C speed.  Frames outside the common structures (truncated, IP options handled,
    IPv6 extension headers, ...) go through :func:`decode_ethernet` / :func:`decode_l3`.
    """
    n = len(datas)
    out: List[Optional[str]] = [None] * n
    ctx = _JsonCtx(datas, out)
    if l2:
        _j_ethernet(ctx, list(range(n)))
    else:
        for proto, idx in _group([p or 0 for p in protocols]).items():
            _j_l3(ctx, idx, proto, 0, ())
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for k in compress(range(n), map(is_, out, repeat(None))):
        d = datas[k]
        out[k] = dumps(decode_ethernet(d).layers if l2 else decode_l3(protocols[k] or 0, d).layers)
    return out  # type: ignore[return-value]


# A layer is a tuple of items: a constant JSON text, or a field (struct code, offset, converter name).
_Field = Tuple[str, int, str]
_DEC = tuple(str(i) for i in range(256))
_ARP_OPS = {1: "request", 2: "reply"}


class _JsonCtx:
    __slots__ = ("datas", "out", "lens", "ip6", "groups")

    def __init__(self, datas: Sequence[bytes], out: List[Optional[str]]) -> None:
        self.datas = datas
        self.out = out
        self.lens = list(map(len, datas))
        self.ip6 = _Ip6Names()
        #: when not None, _j_emit only collects ``(positions, layers)`` of each header structure
        self.groups: Optional[List[Tuple[List[int], Tuple[Any, ...]]]] = None


class _Ip6Names(dict):  # type: ignore[type-arg]
    def __missing__(self, raw: bytes) -> str:
        name = self[raw] = inet_ntop(AF_INET6, raw)
        return name


def _group(keys: Sequence[Any]) -> Dict[Any, List[int]]:
    """Positions of each distinct key, in order."""
    distinct = set(keys)
    if len(distinct) <= 8:
        rng = range(len(keys))
        return {k: list(compress(rng, map(eq, keys, repeat(k)))) for k in distinct}
    groups: Dict[Any, List[int]] = {}
    for i, k in enumerate(keys):
        g = groups.get(k)
        if g is None:
            groups[k] = [i]
        else:
            g.append(i)
    return groups


def _keyed(
    ctx: _JsonCtx, idx: List[int], need: int, parts: Tuple[Tuple[int, int], ...]
) -> Dict[Tuple[int, ...], List[int]]:
    """Frames of ``idx`` at least ``need`` bytes long, grouped by the big-endian integers at ``parts``
    (``(offset, size)`` each), in order within each group.

    The key bytes are picked with one ``itemgetter`` per frame and the groups built with one pass of
    ``dict.setdefault`` and ``list.append`` (all at C speed), whatever the number of distinct keys.
    """
    if not idx:
        return {}
    lens = ctx.lens
    if min(map(lens.__getitem__, idx)) < need:
        idx = list(compress(idx, map(le, repeat(need), map(lens.__getitem__, idx))))
        if not idx:
            return {}
    positions = [p for off, size in parts for p in range(off, off + size)]
    keys = list(map(itemgetter(*positions), map(ctx.datas.__getitem__, idx)))
    groups: Any
    if keys.count(keys[0]) == len(keys):
        groups = ((keys[0], idx),)
    else:
        by: Dict[Any, List[int]] = {}
        deque(map(list.append, map(by.setdefault, keys, map(list, repeat(()))), idx), 0)
        groups = by.items()
    out = {}
    for k, g in groups:
        raw = k if len(positions) > 1 else (k,)
        vals = []
        j = 0
        for _, size in parts:
            v = 0
            for _ in range(size):
                v = v << 8 | raw[j]
                j += 1
            vals.append(v)
        out[tuple(vals)] = g
    return out


def _c(text: str) -> str:
    return text


def _j_ethernet(ctx: _JsonCtx, idx: List[int]) -> None:
    for (ethertype,), g in _keyed(ctx, idx, 14, ((12, 2),)).items():
        eth = (
            _c('{"proto":"Ethernet","dst":"'),
            ("6s", 0, "mac"),
            _c('","src":"'),
            ("6s", 6, "mac"),
            _c(f'","ethertype":{ethertype}}}'),
        )
        _j_vlan(ctx, g, ethertype, 14, (eth,), 0)


def _j_vlan(
    ctx: _JsonCtx, idx: List[int], ethertype: int, off: int, layers: Tuple[Any, ...], depth: int
) -> None:
    """Stacked 802.1Q/802.1ad tags (at most 4, as decode_ethernet), then the L3 header."""
    if ethertype not in (0x8100, 0x88A8):
        _j_l3(ctx, idx, ethertype, off, layers)
        return
    if depth >= 4:
        return  # left to decode_ethernet
    name = json.dumps(ETHERTYPES[ethertype])
    for (inner,), g in _keyed(ctx, idx, off + 4, ((off + 2, 2),)).items():
        tag = (
            _c(f'{{"proto":{name},"vid":'),
            ("H", off, "vid"),
            _c(',"pcp":'),
            ("H", off, "pcp"),
            _c(f',"ethertype":{inner}}}'),
        )
        _j_vlan(ctx, g, inner, off + 4, layers + (tag,), depth + 1)


def _j_l3(ctx: _JsonCtx, idx: List[int], ethertype: int, off: int, layers: Tuple[Any, ...]) -> None:
    if ethertype == 0x0800:
        for (vihl, frag, proto), g in _keyed(
            ctx, idx, off + 20, ((off, 1), (off + 6, 2), (off + 9, 1))
        ).items():
            ihl = (vihl & 0xF) * 4
            if vihl >> 4 != 4 or ihl < 20:
                continue  # decode_ethernet notes it
            fragment = json.dumps(frag & 0x1FFF or bool(frag & 0x2000))
            ip = (
                _c('{"proto":"IPv4","src":"'),
                *_ip4_fields(off + 12),
                _c('","dst":"'),
                *_ip4_fields(off + 16),
                _c('","ttl":'),
                ("B", off + 8, "dec"),
                _c(f',"ipproto":{proto},"total_length":'),
                ("H", off + 2, "dec"),
                _c(',"id":'),
                ("H", off + 4, "dec"),
                _c(f',"fragment":{fragment}}}'),
            )
            if frag & 0x1FFF:
                _j_emit(ctx, g, layers + (ip,))  # not the first fragment: no L4 header
            else:
                _j_l4(ctx, g, proto, off + ihl, layers + (ip,))
    elif ethertype == 0x86DD:
        for (vtc, nh), g in _keyed(ctx, idx, off + 40, ((off, 1), (off + 6, 1))).items():
            if vtc >> 4 != 6 or nh in (0, 43, 60):
                continue  # bad version, or extension headers: decode_ethernet
            ip6 = (
                _c('{"proto":"IPv6","src":"'),
                ("16s", off + 8, "ip6"),
                _c('","dst":"'),
                ("16s", off + 24, "ip6"),
                _c('","hop_limit":'),
                ("B", off + 7, "dec"),
                _c(f',"ipproto":{nh},"payload_length":'),
                ("H", off + 4, "dec"),
                _c("}"),
            )
            _j_l4(ctx, g, nh, off + 40, layers + (ip6,))
    elif ethertype == 0x0806:
        for (hlen, plen, op), g in _keyed(
            ctx, idx, off + 28, ((off + 4, 1), (off + 5, 1), (off + 6, 2))
        ).items():
            if hlen == 6 and plen == 4:
                arp = (
                    _c(f'{{"proto":"ARP","op":{json.dumps(_ARP_OPS.get(op, str(op)))},"sha":"'),
                    ("6s", off + 8, "mac"),
                    _c('","spa":"'),
                    *_ip4_fields(off + 14),
                    _c('","tha":"'),
                    ("6s", off + 18, "mac"),
                    _c('","tpa":"'),
                    *_ip4_fields(off + 24),
                    _c('"}'),
                )
            else:
                arp = (_c(f'{{"proto":"ARP","op":{json.dumps(str(op))},"spa":"?","tpa":"?"}}'),)
            _j_emit(ctx, g, layers + (arp,))
    else:
        name = json.dumps(ETHERTYPES.get(ethertype, f"ethertype {ethertype:#06x}"))
        _j_emit(ctx, idx, layers + ((_c(f'{{"proto":{name}}}'),),))


def _ip4_fields(off: int) -> Tuple[Any, ...]:
    return (
        ("B", off, "dec"),
        _c("."),
        ("B", off + 1, "dec"),
        _c("."),
        ("B", off + 2, "dec"),
        _c("."),
        ("B", off + 3, "dec"),
    )


def _j_l4(ctx: _JsonCtx, idx: List[int], proto: int, off: int, layers: Tuple[Any, ...]) -> None:
    name = json.dumps(IPPROTOS.get(proto, f"ipproto {proto}"))
    if proto == 6:
        for (flags,), g in _keyed(ctx, idx, off + 20, ((off + 13, 1),)).items():
            fl = "".join(c for i, c in enumerate(TCP_FLAGS) if flags >> i & 1) or "."
            tcp = (
                _c('{"proto":"TCP","sport":'),
                ("H", off, "dec"),
                _c(',"dport":'),
                ("H", off + 2, "dec"),
                _c(',"seq":'),
                ("I", off + 4, "dec"),
                _c(',"ack":'),
                ("I", off + 8, "dec"),
                _c(f',"flags":{json.dumps(fl)}}}'),
            )
            _j_emit(ctx, g, layers + (tcp,))
        return
    if proto == 17:
        layer: Tuple[Any, ...] = (
            _c('{"proto":"UDP","sport":'),
            ("H", off, "dec"),
            _c(',"dport":'),
            ("H", off + 2, "dec"),
            _c(',"length":'),
            ("H", off + 4, "dec"),
            _c("}"),
        )
        need = off + 8
    elif proto in (1, 58):
        layer = (
            _c(f'{{"proto":{name},"type":'),
            ("B", off, "dec"),
            _c(',"code":'),
            ("B", off + 1, "dec"),
            _c("}"),
        )
        need = off + 4
    else:
        layer = (_c(f'{{"proto":{name}}}'),)
        need = 0
    lens = ctx.lens
    if need and min(map(lens.__getitem__, idx)) < need:
        idx = [i for i in idx if lens[i] >= need]
    if idx:
        _j_emit(ctx, idx, layers + (layer,))


#: compiled layer lists: ([(offset, struct code, converter)], constant texts around them, bytes needed)
_SPECS: Dict[Tuple[Any, ...], Any] = {}
_SIZES = {"B": 1, "H": 2, "I": 4, "6s": 6, "16s": 16}


def _compile(layers: Tuple[Any, ...]) -> Any:
    spec = _SPECS.get(layers)
    if spec is not None:
        return spec
    items: List[Any] = []
    for k, layer in enumerate(layers):
        items.append("[" if k == 0 else ",")
        items.extend(layer)
    items.append("]")
    consts: List[str] = []
    fields: List[Tuple[int, str, str]] = []
    pending = ""
    for it in items:
        if isinstance(it, tuple):
            consts.append(pending)
            fields.append((it[1], it[0], it[2]))
            pending = ""
        else:
            pending += it
    consts.append(pending)
    need = max((off + _SIZES[code] for off, code, _ in fields), default=0)
    spec = _SPECS[layers] = (fields, consts, need)
    return spec


def _j_emit(ctx: _JsonCtx, idx: List[int], layers: Tuple[Any, ...]) -> None:
    """Render the frames of ``idx``, which share the header structure ``layers``.

    The frames' header bytes are packed back to back; each field is then one strided slice (a column),
    a field with one value in the whole group becomes part of the constant text, and the rows are
    joined from constant and column pieces, all at C speed.
    """
    if ctx.groups is not None:
        ctx.groups.append((idx, layers))
        return
    fields, consts, need = _compile(layers)
    out = ctx.out
    n = len(idx)
    rows = b"".join(map(getitem, map(ctx.datas.__getitem__, idx), repeat(slice(0, need)))) if need else b""
    parts: List[Any] = []
    pending = consts[0]
    for (off, code, how), after in zip(fields, consts[1:]):
        size = _SIZES[code]
        text: Optional[str] = None
        it: Any = None
        if how in ("mac", "ip6"):
            arr = bytearray(size * n)
            end = off + need * (n - 1) + 1
            for k in range(size):
                arr[k::size] = rows[off + k : end + k : need]
            if arr == arr[:size] * n:
                text = bytes(arr[:size]).hex(":") if how == "mac" else inet_ntop(AF_INET6, bytes(arr[:size]))
            elif how == "mac":
                hx = arr.hex(":")
                it = map(getitem, repeat(hx), map(slice, range(0, 18 * n, 18), range(17, 18 * n, 18)))
            else:
                raw = bytes(arr)
                it = map(
                    ctx.ip6.__getitem__,
                    map(getitem, repeat(raw), map(slice, range(0, 16 * n, 16), range(16, 16 * n + 1, 16))),
                )
        else:
            col = column(rows, need, n, off, size, big_endian=True)
            if how == "vid":
                col = list(map(and_, col, repeat(0xFFF)))
            elif how == "pcp":
                col = list(map(rshift, col, repeat(13)))
            if col.count(col[0]) == n:
                text = str(col[0])
            else:
                it = map(_DEC.__getitem__, col) if max(col) < 256 else map(str, col)
        if text is not None:
            pending += text + after
        else:
            parts.append(repeat(pending))
            parts.append(it)
            pending = after
    if not parts:
        for i in idx:
            out[i] = pending
        return
    parts.append(repeat(pending))
    for i, text in zip(idx, map("".join, zip(*parts))):
        out[i] = text


# ---- contents summary ----------------------------------------------------------------------------------


def flow_text(layers: Sequence[Dict[str, Any]]) -> Optional[str]:
    """The flow of decoded ``layers`` as ``skbinspect ring`` summarises it (innermost IP header and the last
    layer): ``"UDP 10.0.0.1:53 > 10.0.0.2:5000"``, ``"ICMP 10.0.0.1 > 10.0.0.2"``; None without IP."""
    ip = next((h for h in reversed(layers) if h["proto"] in ("IPv4", "IPv6")), None)
    if ip is None:
        return None
    l4 = layers[-1]
    if "sport" in l4:
        return f"{l4['proto']} {ip['src']}:{l4['sport']} > {ip['dst']}:{l4['dport']}"
    return f"{l4['proto']} {ip['src']} > {ip['dst']}"


def _layer_name(layer: Tuple[Any, ...]) -> str:
    head = layer[0]
    assert isinstance(head, str) and head.startswith('{"proto":')
    return json.JSONDecoder().raw_decode(head, 9)[0]


def _tally(table: Dict[str, List[int]], key: str, count: int, first: int) -> None:
    t = table.get(key)
    if t is None:
        table[key] = [count, first]
    else:
        t[0] += count
        if first < t[1]:
            t[1] = first


#: A flow as raw bytes: (last layer's name, address length, source + destination address, ports or None).
FlowKey = Tuple[str, int, bytes, Optional[bytes]]


def flow_key_text(key: FlowKey) -> str:
    """The :func:`flow_text` of a raw :data:`FlowKey` (one-to-one)."""
    l4, alen, raw, ports = key
    fam = AF_INET if alen == 4 else AF_INET6
    src, dst = inet_ntop(fam, raw[:alen]), inet_ntop(fam, raw[alen:])
    if ports is None:
        return f"{l4} {src} > {dst}"
    sport, dport = struct.unpack(">HH", ports)
    return f"{l4} {src}:{sport} > {dst}:{dport}"


def _flow_key(layers: Sequence[Dict[str, Any]]) -> Optional[FlowKey]:
    """The :data:`FlowKey` of decoded ``layers`` (what :func:`flow_text` shows), None without IP."""
    ip = next((h for h in reversed(layers) if h["proto"] in ("IPv4", "IPv6")), None)
    if ip is None:
        return None
    fam, alen = (AF_INET, 4) if ip["proto"] == "IPv4" else (AF_INET6, 16)
    l4 = layers[-1]
    ports = struct.pack(">HH", l4["sport"], l4["dport"]) if "sport" in l4 else None
    return (l4["proto"], alen, inet_pton(fam, ip["src"]) + inet_pton(fam, ip["dst"]), ports)


def summarize_many(
    datas: Sequence[bytes], l2: bool, protocols: Sequence[Optional[int]], positions: Sequence[int]
) -> Tuple[Dict[str, List[int]], List[int], List[FlowKey]]:
    """The innermost protocol (``"?"`` when nothing decodes) and the flow (:func:`flow_text`) of many
    frames at once, without decoding each frame: ``({name: [count, first position]}, flow positions, flow
    keys)``, where ``positions[k]`` is frame ``k``'s position and the frames with a flow are listed (in no
    particular order) with their position and :data:`FlowKey` (:func:`flow_key_text` gives the text).

    Frames are grouped by header structure as in :func:`layers_json_many`; within a group the protocol is
    the same and the flow key is the raw address and port bytes, sliced at C speed.  Frames outside the
    common structures are decoded one by one.
    """
    n = len(datas)
    protos: Dict[str, List[int]] = {}
    fpos: List[int] = []
    fkeys: List[FlowKey] = []
    if not n:
        return protos, fpos, fkeys
    ctx = _JsonCtx(datas, [None] * n)
    ctx.groups = []
    if l2:
        _j_ethernet(ctx, list(range(n)))
    else:
        for proto, idx in _group([p or 0 for p in protocols]).items():
            _j_l3(ctx, idx, proto, 0, ())
    covered = bytearray(n)
    for idx, layers in ctx.groups:
        for i in idx:
            covered[i] = 1
        names = [_layer_name(layer) for layer in layers]
        pos = list(map(positions.__getitem__, idx))
        _tally(protos, names[-1], len(idx), min(pos))
        ip_k = next((k for k in range(len(names) - 1, -1, -1) if names[k] in ("IPv4", "IPv6")), None)
        if ip_k is None:
            continue
        alen = 4 if names[ip_k] == "IPv4" else 16
        s = layers[ip_k][1][1]  # the source address field's offset; the destination follows it
        frames = list(map(datas.__getitem__, idx))
        addrs = map(getitem, frames, repeat(slice(s, s + 2 * alen)))
        if "sport" in layers[-1][0] and ip_k != len(layers) - 1:
            p = layers[-1][1][1]  # sport, then dport
            ports: Any = map(getitem, frames, repeat(slice(p, p + 4)))
        else:
            ports = repeat(None)
        fkeys.extend(zip(repeat(names[-1]), repeat(alen), addrs, ports))
        fpos.extend(pos)
    for k in compress(range(n), map(eq, covered, repeat(0))):
        d = datas[k]
        layers_ = (decode_ethernet(d) if l2 else decode_l3(protocols[k] or 0, d)).layers
        _tally(protos, layers_[-1]["proto"] if layers_ else "?", 1, positions[k])
        fk = _flow_key(layers_)
        if fk is not None:
            fpos.append(positions[k])
            fkeys.append(fk)
    return protos, fpos, fkeys
