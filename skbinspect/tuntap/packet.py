"""Decoding packet headers from bytes: Ethernet, 802.1Q/802.1ad VLAN, ARP, IPv4, IPv6, TCP, UDP, ICMP, ICMPv6.

Pure functions on bytes: no kernel access.  Truncated or malformed headers end decoding at the last
complete layer, with a note, never an exception.

Each header is described once, as a :class:`Header`: its JSON ``"proto"``, the bytes it needs, its JSON
fields in order (a big-endian value at an offset and how it converts, :class:`Field`) and the values that
decide what follows it (``keys``).  Two decoders read those descriptions and give the same JSON:

* :func:`decode_ethernet` / :func:`decode_l3`, one frame at a time: the layers as dicts, a one-line
  summary, notes on what could not be decoded;
* :func:`layers_json_many` (and :func:`summarize_many`), tens of thousands of frames at once: frames are
  grouped by their header structure and each group is rendered column by column at C speed.

Adding a field to a header is one :class:`Field` in its description.  Which header follows which is
decided by the same functions in both decoders (:func:`_link_next`, :func:`_l3_next`).  The frames a
tun/tap ring holds are described in docs/kernel/tuntap.md.
"""

from __future__ import annotations

import json
import struct
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress, repeat
from operator import and_, eq, getitem, is_, itemgetter, le, rshift
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, cast

from skbinspect.memory.columns import column

__all__ = [
    "DecodedPacket",
    "Field",
    "Header",
    "decode_ethernet",
    "decode_l3",
    "FlowKey",
    "flow_key",
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
#: Stacked VLAN tags decoded at most; a fifth tag is shown as a layer of its name only.
MAX_VLAN_TAGS = 4
#: IPv6 extension headers skipped on the way to the L4 header (hop-by-hop, routing, destination options),
#: and how many at most.
IPV6_EXTENSIONS = (0, 43, 60)
MAX_IPV6_EXTENSIONS = 8


def _mac(b: bytes) -> str:
    return b.hex(":")


def _ip4(b: bytes) -> str:
    return inet_ntop(AF_INET, b)


def _ip6(b: bytes) -> str:
    return inet_ntop(AF_INET6, b)


def _tcp_flags(flags: int) -> str:
    return "".join(c for i, c in enumerate(TCP_FLAGS) if flags >> i & 1) or "."


_ARP_OPS = {1: "request", 2: "reply"}

#: How a field's raw value (an int, or bytes for ``"Ns"`` codes) becomes its JSON value, by name.
CONVERTERS: Dict[str, Callable[[Any], Any]] = {
    "int": int,
    "str": str,
    "mac": _mac,
    "ip4": _ip4,
    "ip6": _ip6,
    "vid": lambda tci: tci & 0xFFF,  # 802.1Q TCI: VLAN id
    "pcp": lambda tci: tci >> 13,  # 802.1Q TCI: priority
    # IPv4 frag_off: More Fragments (0x2000) or a fragment offset (0x1FFF) = part of a fragmented datagram
    "fragment": lambda frag: bool(frag & 0x3FFF),
    "arp_op": lambda op: _ARP_OPS.get(op, str(op)),
    "tcp_flags": _tcp_flags,
}


class Field(NamedTuple):
    """One member of a layer's JSON: ``key``, the big-endian value of struct ``code`` (``"B"``, ``"H"``,
    ``"I"``, ``"4s"``, ...) at ``offset`` from the header's start, converted by ``CONVERTERS[conv]``; or,
    with no ``code``, the constant ``fixed``."""

    key: str
    code: str = ""
    offset: int = 0
    conv: str = "int"
    fixed: Any = None


_KEY_CODES = {1: "B", 2: "H", 4: "I"}


class Header:
    """One header as both decoders read it (see the module docstring).

    :ivar proto: the layer's ``"proto"`` in JSON.
    :ivar size: the bytes it needs; a frame that ends sooner gets the note ``truncated``.
    :ivar fields: the layer's JSON members after ``"proto"``, in order.
    :ivar keys: ``(offset, size)`` of the big-endian integers (in offset order) that decide how the frame
        goes on: the next protocol, a header length, a fragment offset.  The per-frame decoder reads them
        with :meth:`keys_at`; the grouped one groups frames by them, so the fields they cover are one
        constant within a group.
    """

    __slots__ = ("proto", "size", "fields", "keys", "truncated", "_unpack", "_plan", "_keys_unpack")

    def __init__(
        self,
        proto: str,
        size: int = 0,
        fields: Sequence[Field] = (),
        keys: Sequence[Tuple[int, int]] = (),
        truncated: Optional[str] = None,
    ) -> None:
        self.proto = proto
        self.size = size
        self.fields = tuple(fields)
        self.keys = tuple(keys)
        self.truncated = truncated or f"truncated {proto} header"
        # one struct unpack per layer: each distinct (offset, code) once, in offset order
        slots = sorted({(f.offset, f.code) for f in self.fields if f.code})
        fmt, pos = ">", 0
        for off, code in slots:
            assert off >= pos, f"{proto}: overlapping fields at {off}"
            fmt += f"{off - pos}x" if off > pos else ""
            fmt += code
            pos = off + struct.calcsize(">" + code)
        self._unpack = struct.Struct(fmt).unpack_from
        self._plan = tuple(
            (
                f.key,
                slots.index((f.offset, f.code)) if f.code else -1,
                None if f.conv == "int" else CONVERTERS[f.conv],
                f.fixed,
            )
            for f in self.fields
        )
        fmt, pos = ">", 0
        for off, size in self.keys:
            assert off >= pos, f"{proto}: keys out of order"
            fmt += (f"{off - pos}x" if off > pos else "") + _KEY_CODES[size]
            pos = off + size
        self._keys_unpack = struct.Struct(fmt).unpack_from

    def decode(self, data: bytes, off: int) -> Dict[str, Any]:
        """The layer of the header at ``off`` (``data`` holds at least ``off + size`` bytes)."""
        layer: Dict[str, Any] = {"proto": self.proto}
        if not self._plan:
            return layer
        vals = self._unpack(data, off)
        for key, i, conv, fixed in self._plan:
            layer[key] = fixed if i < 0 else vals[i] if conv is None else conv(vals[i])
        return layer

    def keys_at(self, data: bytes, off: int) -> Tuple[int, ...]:
        """The values of :attr:`keys` of the header at ``off``."""
        return self._keys_unpack(data, off)

    def key_of(self, f: Field) -> Optional[int]:
        """The index in :attr:`keys` of the value that is field ``f``, if it is one."""
        if f.code:
            where = (f.offset, struct.calcsize(">" + f.code))
            if where in self.keys:
                return self.keys.index(where)
        return None

    def field_offset(self, key: str) -> Optional[int]:
        """The offset of the field ``key``, None without one."""
        return next((f.offset for f in self.fields if f.key == key and f.code), None)

    def __repr__(self) -> str:
        return f"Header({self.proto!r})"


@lru_cache(maxsize=None)
def _named(proto: str) -> Header:
    """A layer of its name only (a protocol not decoded further)."""
    return Header(proto)


def _ethertype_header(ethertype: int) -> Header:
    return _named(ETHERTYPES.get(ethertype, f"ethertype {ethertype:#06x}"))


def _ipproto_header(proto: int) -> Header:
    return L4_HEADERS.get(proto) or _named(IPPROTOS.get(proto, f"ipproto {proto}"))


ETHERNET = Header(
    "Ethernet",
    14,
    (Field("dst", "6s", 0, "mac"), Field("src", "6s", 6, "mac"), Field("ethertype", "H", 12)),
    keys=((12, 2),),
)
_TAG_FIELDS = (Field("vid", "H", 0, "vid"), Field("pcp", "H", 0, "pcp"), Field("ethertype", "H", 2))
#: 802.1Q / 802.1ad tags by the ethertype that announces them.
VLAN_TAGS = {
    t: Header(ETHERTYPES[t], 4, _TAG_FIELDS, keys=((2, 2),), truncated="truncated VLAN tag")
    for t in (0x8100, 0x88A8)
}
IPV4 = Header(
    "IPv4",
    20,
    (
        Field("src", "4s", 12, "ip4"),
        Field("dst", "4s", 16, "ip4"),
        Field("ttl", "B", 8),
        Field("ipproto", "B", 9),
        Field("total_length", "H", 2),
        Field("id", "H", 4),
        Field("fragment", "H", 6, "fragment"),
    ),
    keys=((0, 1), (6, 2), (9, 1)),  # version/IHL, flags/fragment offset, protocol
)
IPV6 = Header(
    "IPv6",
    40,
    (
        Field("src", "16s", 8, "ip6"),
        Field("dst", "16s", 24, "ip6"),
        Field("hop_limit", "B", 7),
        Field("ipproto", "B", 6),
        Field("payload_length", "H", 4),
    ),
    keys=((0, 1), (6, 1)),  # version (high nibble), next header
)
_ARP_KEYS = ((4, 1), (5, 1), (6, 2))  # hardware and protocol address lengths, operation
ARP = Header(
    "ARP",
    28,
    (
        Field("op", "H", 6, "arp_op"),
        Field("sha", "6s", 8, "mac"),
        Field("spa", "4s", 14, "ip4"),
        Field("tha", "6s", 18, "mac"),
        Field("tpa", "4s", 24, "ip4"),
    ),
    keys=_ARP_KEYS,
    truncated="truncated ARP",
)
#: ARP for other than Ethernet and IPv4 addresses: the operation only.
ARP_OTHER = Header(
    "ARP", 28, (Field("op", "H", 6, "str"), Field("spa", fixed="?"), Field("tpa", fixed="?")), keys=_ARP_KEYS
)
L3_HEADERS = {0x0800: IPV4, 0x86DD: IPV6, 0x0806: ARP}
_PORTS = (Field("sport", "H", 0), Field("dport", "H", 2))
_ICMP_FIELDS = (Field("type", "B", 0), Field("code", "B", 1))
L4_HEADERS = {
    6: Header(
        "TCP",
        20,
        (*_PORTS, Field("seq", "I", 4), Field("ack", "I", 8), Field("flags", "B", 13, "tcp_flags")),
        keys=((13, 1),),
    ),
    17: Header("UDP", 8, (*_PORTS, Field("length", "H", 4))),
    1: Header("ICMP", 4, _ICMP_FIELDS),
    58: Header("ICMPv6", 4, _ICMP_FIELDS),
}


def _link_next(ethertype: int, tags: int) -> Optional[Header]:
    """The VLAN tag that follows a link header (or ``tags`` tags) announcing ``ethertype``; None when the
    L3 header follows."""
    return VLAN_TAGS.get(ethertype) if tags < MAX_VLAN_TAGS else None


def _l3_next(
    h: Header, keys: Tuple[int, ...], off: int
) -> Tuple[Optional[str], Header, Optional[Tuple[int, int]]]:
    """What an L3 header ``h`` at ``off`` with ``keys`` (:meth:`Header.keys_at`) makes of the frame:
    ``(note, layer, next)``.  ``note``: the header is not decoded, decoding stops there; else ``layer`` is
    the header's layer and ``next`` the ``(ipproto, offset)`` of the L4 header, None when there is none
    (ARP, a fragment other than the first).  After IPv6, extension headers may come first."""
    if h is IPV4:
        vihl, frag, proto = keys
        ihl = (vihl & 0xF) * 4
        if vihl >> 4 != 4 or ihl < 20:
            return f"bad IPv4 header (version/ihl {vihl:#x})", h, None
        return None, h, None if frag & 0x1FFF else (proto, off + ihl)
    if h is IPV6:
        version, nh = keys
        if version >> 4 != 6:
            return "bad IPv6 version", h, None
        return None, h, (nh, off + 40)
    hlen, plen, _ = keys  # ARP
    return None, ARP if hlen == 6 and plen == 4 else ARP_OTHER, None


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
            elif p in ("802.1Q", "802.1ad") and "vid" in l:  # not a name-only layer (a fifth tag)
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


# ---- one frame at a time --------------------------------------------------------------------------------


def decode_ethernet(data: bytes) -> DecodedPacket:
    """Decode a frame that starts with an Ethernet header."""
    pkt = DecodedPacket()
    if len(data) < ETHERNET.size:
        pkt.notes.append(f"{len(data)} bytes: shorter than an Ethernet header")
        return pkt
    pkt.layers.append(ETHERNET.decode(data, 0))
    (ethertype,) = ETHERNET.keys_at(data, 0)
    off = ETHERNET.size
    tags = 0
    tag = _link_next(ethertype, tags)
    while tag is not None:
        if len(data) < off + tag.size:
            pkt.notes.append(tag.truncated)
            return pkt
        pkt.layers.append(tag.decode(data, off))
        (ethertype,) = tag.keys_at(data, off)
        off += tag.size
        tags += 1
        tag = _link_next(ethertype, tags)
    if ethertype in VLAN_TAGS:  # MAX_VLAN_TAGS decoded and another follows: named below, not decoded
        pkt.notes.append(f"more than {MAX_VLAN_TAGS} stacked VLAN tags: the rest not decoded")
    _decode_l3(ethertype, data, off, pkt)
    return pkt


def decode_l3(ethertype: int, data: bytes) -> DecodedPacket:
    """Decode a frame without link-layer header (tun mode, IFF_TUN) given its protocol."""
    pkt = DecodedPacket()
    _decode_l3(ethertype, data, 0, pkt)
    return pkt


def _decode_l3(ethertype: int, data: bytes, off: int, pkt: DecodedPacket) -> None:
    h = L3_HEADERS.get(ethertype)
    if h is None:
        pkt.layers.append(_ethertype_header(ethertype).decode(data, off))
        return
    if len(data) < off + h.size:
        pkt.notes.append(h.truncated)
        return
    note, layer, nxt = _l3_next(h, h.keys_at(data, off), off)
    if note is not None:
        pkt.notes.append(note)
        return
    pkt.layers.append(layer.decode(data, off))
    if nxt is None:
        return
    proto, off = nxt
    if h is IPV6:
        for _ in range(MAX_IPV6_EXTENSIONS):
            if proto not in IPV6_EXTENSIONS or len(data) < off + 8:
                break
            proto, hdrlen = data[off], data[off + 1]
            off += (hdrlen + 1) * 8
    h = _ipproto_header(proto)
    if h.size and len(data) < off + h.size:
        pkt.notes.append(h.truncated)
        return
    pkt.layers.append(h.decode(data, off))


# ---- many frames at once ---------------------------------------------------------------------------------


def layers_json_many(datas: Sequence[bytes], l2: bool, protocols: Sequence[Optional[int]]) -> List[str]:
    """For each frame, the compact JSON text of its decoded ``layers``: exactly what
    ``json.dumps(decode_ethernet(data).layers, separators=(",", ":"))`` gives (``decode_l3(protocol,
    data)`` when not ``l2``), for tens of thousands of frames at once.

    Frames are grouped by their header structure (the :attr:`Header.keys` of each header: ethertypes,
    IP version and protocol, fragment bits, TCP flags, ...); each group is rendered column by column at C
    speed.  Frames outside the common structures (truncated, malformed, IPv6 extension headers) go
    through :func:`decode_ethernet` / :func:`decode_l3`.
    """
    n = len(datas)
    out: List[Optional[str]] = [None] * n
    ctx = _JsonCtx(datas, out)
    _j_frames(ctx, l2, protocols)
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for k in compress(range(n), map(is_, out, repeat(None))):
        d = datas[k]
        out[k] = dumps(decode_ethernet(d).layers if l2 else decode_l3(protocols[k] or 0, d).layers)
    return cast(List[str], out)  # every frame rendered


#: A layer of a group of frames: the header, its offset and its :attr:`Header.keys` values (the same in
#: every frame of the group).
_Layer = Tuple[Header, int, Tuple[int, ...]]
_DEC = tuple(str(i) for i in range(256))
#: ``bytes[slice]`` for ``map``: ``operator.getitem`` (faster than ``bytes.__getitem__``), typed as it acts on
#: bytes (typeshed types it on sequences).
_slice = cast(Callable[[bytes, slice], bytes], getitem)


class _JsonCtx:
    __slots__ = ("datas", "out", "lens", "ip6", "groups")

    def __init__(self, datas: Sequence[bytes], out: List[Optional[str]]) -> None:
        self.datas = datas
        self.out = out
        self.lens = list(map(len, datas))
        self.ip6 = _Ip6Names()
        #: when not None, _j_emit only collects ``(positions, layers)`` of each header structure
        self.groups: Optional[List[Tuple[List[int], Tuple[_Layer, ...]]]] = None


class _Ip6Names(Dict[bytes, str]):
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


def _keyed(ctx: _JsonCtx, idx: List[int], h: Header, off: int) -> Dict[Tuple[int, ...], List[int]]:
    """Frames of ``idx`` that hold header ``h`` at ``off`` whole, grouped by its :attr:`Header.keys`
    values, in order within each group.

    The key bytes are picked with one ``itemgetter`` per frame and the groups built with one pass of
    ``dict.setdefault`` and ``list.append`` (all at C speed), whatever the number of distinct keys.
    """
    if not idx:
        return {}
    lens = ctx.lens
    need = off + h.size if h.size else 0  # a header of its name only needs nothing
    if min(map(lens.__getitem__, idx)) < need:
        idx = list(compress(idx, map(le, repeat(need), map(lens.__getitem__, idx))))
        if not idx:
            return {}
    if not h.keys:
        return {(): idx}
    positions = [p for o, size in h.keys for p in range(off + o, off + o + size)]
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
        for _, size in h.keys:
            v = 0
            for _ in range(size):
                v = v << 8 | raw[j]
                j += 1
            vals.append(v)
        out[tuple(vals)] = g
    return out


def _j_frames(ctx: _JsonCtx, l2: bool, protocols: Sequence[Optional[int]]) -> None:
    n = len(ctx.datas)
    if l2:
        for keys, g in _keyed(ctx, list(range(n)), ETHERNET, 0).items():
            _j_link(ctx, g, keys[0], ETHERNET.size, ((ETHERNET, 0, keys),))
    else:
        for proto, idx in _group([p or 0 for p in protocols]).items():
            _j_l3(ctx, idx, proto, 0, ())


def _j_link(ctx: _JsonCtx, idx: List[int], ethertype: int, off: int, layers: Tuple[_Layer, ...]) -> None:
    """Stacked 802.1Q/802.1ad tags (as :func:`decode_ethernet`), then the L3 header."""
    tag = _link_next(ethertype, len(layers) - 1)
    if tag is None:
        _j_l3(ctx, idx, ethertype, off, layers)
        return
    for keys, g in _keyed(ctx, idx, tag, off).items():
        _j_link(ctx, g, keys[0], off + tag.size, layers + ((tag, off, keys),))


def _j_l3(ctx: _JsonCtx, idx: List[int], ethertype: int, off: int, layers: Tuple[_Layer, ...]) -> None:
    h = L3_HEADERS.get(ethertype)
    if h is None:
        _j_emit(ctx, idx, layers + ((_ethertype_header(ethertype), off, ()),))
        return
    for keys, g in _keyed(ctx, idx, h, off).items():
        note, layer, nxt = _l3_next(h, keys, off)
        if note is not None:
            continue  # left to the per-frame decoder, which notes it
        here = layers + ((layer, off, keys),)
        if nxt is None:
            _j_emit(ctx, g, here)
        elif h is IPV6 and nxt[0] in IPV6_EXTENSIONS:
            continue  # extension headers: left to the per-frame decoder
        else:
            l4 = _ipproto_header(nxt[0])
            for keys4, g4 in _keyed(ctx, g, l4, nxt[1]).items():
                _j_emit(ctx, g4, here + ((l4, nxt[1], keys4),))


#: compiled layer lists: ([(offset, struct code, converter)], constant texts around them, bytes needed)
_SPECS: Dict[Tuple[_Layer, ...], Any] = {}
_SIZES = {"B": 1, "H": 2, "I": 4, "6s": 6, "16s": 16}


def _field_items(f: Field, off: int) -> List[Any]:
    """The pieces of the JSON value of field ``f`` of a header at ``off``, read from each frame: texts and
    ``(struct code, offset, converter)`` columns (an IPv4 address is four byte columns)."""
    at = off + f.offset
    if f.conv == "ip4":
        return ['"', ("B", at, "int"), ".", ("B", at + 1, "int"), ".", ("B", at + 2, "int"), ".", ("B", at + 3, "int"), '"']  # fmt: skip
    if f.conv in ("mac", "ip6"):
        return ['"', (f.code, at, f.conv), '"']
    return [(f.code, at, f.conv)]


def _compile(layers: Tuple[_Layer, ...]) -> Any:
    spec = _SPECS.get(layers)
    if spec is not None:
        return spec
    dumps = json.dumps
    items: List[Any] = []
    for k, (h, off, keys) in enumerate(layers):
        items.append(("[" if k == 0 else ",") + '{"proto":' + dumps(h.proto))
        for f in h.fields:
            items.append(f",{dumps(f.key)}:")
            i = h.key_of(f)
            if not f.code:
                items.append(dumps(f.fixed))
            elif i is not None:  # one value in the group
                items.append(dumps(CONVERTERS[f.conv](keys[i])))
            else:
                items.extend(_field_items(f, off))
        items.append("}")
    items.append("]" if items else "[]")
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


def _j_emit(ctx: _JsonCtx, idx: List[int], layers: Tuple[_Layer, ...]) -> None:
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
    rows = b"".join(map(_slice, map(ctx.datas.__getitem__, idx), repeat(slice(0, need)))) if need else b""
    parts: List[Any] = []
    pending = consts[0]
    for (off, code, how), after in zip(fields, consts[1:]):
        size = _SIZES[code]
        text: Optional[str] = None
        it: Any = None
        if code.endswith("s"):
            arr = bytearray(size * n)
            end = off + need * (n - 1) + 1
            for k in range(size):
                arr[k::size] = rows[off + k : end + k : need]
            if arr == arr[:size] * n:
                v = CONVERTERS[how](bytes(arr[:size]))
                text = v if how in ("mac", "ip6") else json.dumps(v)
            elif how == "mac":
                hx = arr.hex(":")
                it = map(getitem, repeat(hx), map(slice, range(0, 18 * n, 18), range(17, 18 * n, 18)))
            else:
                raw = bytes(arr)
                values = map(_slice, repeat(raw), map(slice, range(0, size * n, size), range(size, size * n + 1, size)))  # fmt: skip
                it = map(ctx.ip6.__getitem__, values) if how == "ip6" else _json_of(how, values)
        else:
            col = column(rows, need, n, off, size, big_endian=True)
            if how == "vid":
                col = list(map(and_, col, repeat(0xFFF)))
            elif how == "pcp":
                col = list(map(rshift, col, repeat(13)))
            elif how != "int":
                strs = list(_json_of(how, col))
                text = strs[0] if strs.count(strs[0]) == n else None
                it = None if text is not None else strs
            if it is None and text is None:
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


def _json_of(how: str, values: Any) -> Any:
    """JSON texts of raw values converted by ``CONVERTERS[how]`` (converters without a column form)."""
    return map(json.dumps, map(CONVERTERS[how], values))


# ---- contents summary ----------------------------------------------------------------------------------


def flow_text(layers: Sequence[Dict[str, Any]]) -> Optional[str]:
    """The flow of decoded ``layers`` as ``skbinspect ring`` summarises it (innermost IP header and the last
    layer): ``"UDP 10.0.0.1:53 > 10.0.0.2:5000"``, ``"ICMP 10.0.0.1 > 10.0.0.2"``; None without IP."""
    key = flow_key(layers)
    return None if key is None else flow_key_text(key)


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


def flow_key(layers: Sequence[Dict[str, Any]]) -> Optional[FlowKey]:
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
    _j_frames(ctx, l2, protocols)
    covered = bytearray(n)
    for idx, layers in ctx.groups:
        for i in idx:
            covered[i] = 1
        names = [h.proto for h, _, _ in layers]
        pos = list(map(positions.__getitem__, idx))
        _tally(protos, names[-1], len(idx), min(pos))
        ip_k = next((k for k in range(len(names) - 1, -1, -1) if names[k] in ("IPv4", "IPv6")), None)
        if ip_k is None:
            continue
        alen = 4 if names[ip_k] == "IPv4" else 16
        ip, ip_off, _ = layers[ip_k]
        s = ip_off + (ip.field_offset("src") or 0)  # the destination address follows the source
        frames = list(map(datas.__getitem__, idx))
        addrs = map(_slice, frames, repeat(slice(s, s + 2 * alen)))
        l4, l4_off, _ = layers[-1]
        sport = l4.field_offset("sport")
        if sport is not None and ip_k != len(layers) - 1:
            p = l4_off + sport  # sport, then dport
            ports: Any = map(_slice, frames, repeat(slice(p, p + 4)))
        else:
            ports = repeat(None)
        fkeys.extend(zip(repeat(names[-1]), repeat(alen), addrs, ports))
        fpos.extend(pos)
    for k in compress(range(n), map(eq, covered, repeat(0))):
        d = datas[k]
        layers_ = (decode_ethernet(d) if l2 else decode_l3(protocols[k] or 0, d)).layers
        _tally(protos, layers_[-1]["proto"] if layers_ else "?", 1, positions[k])
        fk = flow_key(layers_)
        if fk is not None:
            fpos.append(positions[k])
            fkeys.append(fk)
    return protos, fpos, fkeys
