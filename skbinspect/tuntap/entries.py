"""Reading ``struct sk_buff`` and ``struct xdp_frame`` entries in bulk, with their packet headers.

The structs and then the packet bytes are read in coalesced windows (:mod:`skbinspect.memory.bulk`) and
decoded column by column with one precompiled ``struct`` (offsets from the target's DWARF,
:mod:`skbinspect.memory.layout`), not one drgn Object each; per-entry work runs in C (``map``, ``zip``) on
the common path, and a Python loop handles only the unusual entries (VLAN-accelerated, link header before
``data``, corrupt).  A ring's entries come back as an :class:`EntryTable`, which builds :class:`RingEntry`
objects on first use and renders JSON straight from its columns (:func:`entries_json`).

An entry's JSON is described once, by :data:`ENTRY_JSON`: :meth:`RingEntry.to_json` and the columnar
renderer both follow it.  The ``sk_buff`` and ``xdp_frame`` members read, and how the frame a reader gets
is rebuilt from them (link header, accelerated VLAN tag), are in docs/kernel/tuntap.md.
"""

from __future__ import annotations

import collections
import gc
import hashlib
import json
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import chain, compress, repeat
from operator import add, attrgetter, eq, getitem, is_, lt, sub
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
    overload,
)

import drgn

from skbinspect.memory.bulk import read_spans
from skbinspect.memory.layout import struct_layout
from skbinspect.tuntap.packet import (
    DecodedPacket,
    FlowKey,
    decode_ethernet,
    decode_l3,
    flow_key,
    flow_key_text,
    layers_json_many,
    summarize_many,
)

__all__ = [
    "ENTRY_JSON",
    "EntryTable",
    "JsonField",
    "RingEntry",
    "entries_json",
    "entries_json_chunks",
    "entries_summary",
    "entries_summary_slow",
    "read_entries",
    "TUN_XDP_FLAG",
    "HEADER_BYTES",
    "whole_linear",
]

#: include/linux/if_tun.h: tun rings tag xdp_frame pointers with bit 0 (the same in 5.10 .. 7.1).
TUN_XDP_FLAG = 0x1

#: Packet bytes read per entry for header decoding and the digest (the whole linear part up to this).
HEADER_BYTES = 256
#: Bytes read per entry now: HEADER_BYTES, or the whole linear part inside :func:`whole_linear`.
_data_limit = HEADER_BYTES
#: Larger than any plausible linear part (longer lengths are reported as implausible).
WHOLE_LINEAR = 1 << 20


@contextmanager
def whole_linear() -> Iterator[None]:
    """Entries read inside this block carry the whole linear part of their frame in ``data`` (for
    ``ring --pcap``), not only its first :data:`HEADER_BYTES`."""
    global _data_limit
    saved, _data_limit = _data_limit, WHOLE_LINEAR
    try:
        yield
    finally:
        _data_limit = saved


#: (u16)~0U: the header offset is not set (skb_mac_header_was_set() is false).
UNSET_HEADER = 0xFFFF

#: The ``struct sk_buff`` members read for each entry (offsets from the target's DWARF).
SKB_FIELDS = (
    "len",
    "data_len",
    "protocol",
    "head",
    "data",
    "mac_header",
    "tstamp",
    "dev",
    "queue_mapping",
    "vlan_tci",
    "vlan_proto",
    "vlan_present",
)
XDP_FIELDS = ("data", "len", "headroom", "metasize", "frame_sz", "dev_rx")


def _sha256(data: bytes, error: Optional[str]) -> Optional[str]:
    return hashlib.sha256(data).hexdigest() if error is None else None


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
    _decoded: Optional[DecodedPacket] = field(default=None, init=False, repr=False, compare=False)

    @property
    def digest_complete(self) -> bool:
        return len(self.data) == self.length

    @property
    def sha256(self) -> Optional[str]:
        return _sha256(self.data, self.error)

    def decoded(self) -> DecodedPacket:
        if self._decoded is None:
            self._decoded = (
                decode_ethernet(self.data) if self.l2 else decode_l3(self.protocol or 0, self.data)
            )
        return self._decoded

    @property
    def headers(self) -> List[Dict[str, Any]]:
        return self.decoded().layers if self.error is None else []

    @property
    def summary(self) -> str:
        return self.decoded().summary() if self.error is None else ""

    def to_json(self) -> Dict[str, Any]:
        """The entry as :data:`ENTRY_JSON` describes it."""
        return {f.key: _JSON_VALUE[f.form](getattr(self, f.key)) for f in ENTRY_JSON}


#: The columns of an :class:`EntryTable`: the :class:`RingEntry` fields, in constructor order.
_COLUMNS = tuple(f.name for f in fields(RingEntry) if f.init)


class EntryTable(Sequence[RingEntry]):
    """The entries of one ring (or batch) as columns: a sequence of :class:`RingEntry`.

    Reading tens of thousands of entries builds columns (lists) at C speed; the :class:`RingEntry` objects
    are built on first access (indexing, iteration) and kept, so they behave as a list of dataclasses.
    :func:`entries_json` renders the JSON of the entries from the columns without building the objects.
    """

    __slots__ = ("_cols", "_items", "_loader", "_n")

    def __init__(self, cols: Dict[str, List[Any]]) -> None:
        self._cols: Optional[Dict[str, List[Any]]] = cols
        self._items: Optional[List[RingEntry]] = None
        self._loader: Optional[Callable[[], Iterator["EntryTable"]]] = None
        self._n = 0

    @classmethod
    def of(cls, items: List[RingEntry]) -> "EntryTable":
        t = cls({})
        t._cols = None
        t._items = list(items)
        return t

    @classmethod
    def deferred(cls, n: int, chunks: Callable[[], Iterator["EntryTable"]]) -> "EntryTable":
        """``n`` entries read on first use, from the tables ``chunks()`` yields in order; JSON rendering
        (:func:`entries_json_chunks`) reads, renders and drops one chunk at a time instead."""
        t = cls({})
        t._cols = None
        t._loader = chunks
        t._n = n
        return t

    def _load(self) -> None:
        if self._loader is not None:
            whole = _concat(list(self._loader()))
            self._cols, self._items, self._loader = whole._cols, whole._items, None

    def chunks(self) -> Optional[Iterator["EntryTable"]]:
        """For a table read on first use and not read yet: its chunks, each read now (not kept)."""
        return self._loader() if self._loader is not None else None

    def columns(self) -> Optional[Dict[str, List[Any]]]:
        """The columns, or None once the entries were built as objects (which may have been changed)."""
        self._load()
        return self._cols if self._items is None else None

    def items(self) -> List[RingEntry]:
        """The entries as a list of :class:`RingEntry` (built once)."""
        self._load()
        if self._items is None:
            c = self._cols
            assert c is not None
            self._items = list(map(RingEntry, *(c[k] for k in _COLUMNS)))
            self._cols = None
        return self._items

    def __len__(self) -> int:
        if self._loader is not None:
            return self._n
        if self._items is not None:
            return len(self._items)
        assert self._cols is not None
        return len(self._cols["index"])

    @overload
    def __getitem__(self, i: int) -> RingEntry: ...

    @overload
    def __getitem__(self, i: slice) -> "EntryTable": ...

    def __getitem__(self, i: Union[int, slice]) -> Union[RingEntry, "EntryTable"]:
        self._load()
        if isinstance(i, slice):
            if self._items is None:
                assert self._cols is not None
                return EntryTable({k: v[i] for k, v in self._cols.items()})
            return EntryTable.of(self._items[i])
        return self.items()[i]

    def __iter__(self) -> Iterator[RingEntry]:
        return iter(self.items())

    def __add__(self, other: Sequence[RingEntry]) -> List[RingEntry]:
        return self.items() + list(other)

    def __radd__(self, other: Sequence[RingEntry]) -> List[RingEntry]:
        return list(other) + self.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EntryTable):
            return self.items() == other.items()
        if isinstance(other, list):
            return self.items() == other
        return NotImplemented

    def __repr__(self) -> str:
        return f"EntryTable({self.items()!r})"


def _table(n: int, **cols: Any) -> EntryTable:
    """A table from columns; a scalar is repeated ``n`` times."""
    return EntryTable({k: (v if isinstance(v, list) else [v] * n) for k, v in cols.items()})


#: ``bytes[slice]`` for ``map``: ``operator.getitem`` (faster than ``bytes.__getitem__``), typed as it acts on
#: bytes (typeshed types it on sequences).
_slice = cast(Callable[[bytes, slice], bytes], getitem)

#: Entries read at a time: a chunk's windows, slices and columns stay in the CPU cache (65,536 entries read
#: in chunks of 4,096 take about 3/4 of the time of one pass over all of them).
READ_CHUNK = 4096


def read_entries(
    prog: drgn.Program,
    slots: Sequence[int],
    indices: Sequence[int],
    l2: bool = True,
    stale: bool = False,
    deferred: bool = False,
) -> EntryTable:
    """Decode the objects in ``slots[i]`` for each ``i`` in ``indices`` (in that order).

    :param slots: raw queue values of a ptr_ring (bit 0 set = ``xdp_frame``, tun only).
    :param l2: frames start with an Ethernet header (tap); False for IFF_TUN devices.
    :param deferred: read on first use (:meth:`EntryTable.deferred`), for memory that does not change (a
        vmcore): ``ring --entries --json`` then reads, renders and writes 4,096 entries at a time.
    """
    indices = list(indices)
    if (
        deferred
        and len(indices) > READ_CHUNK
        and not any(map(TUN_XDP_FLAG.__and__, map(slots.__getitem__, indices)))
    ):
        struct_layout(prog, "struct sk_buff", SKB_FIELDS)  # a missing type fails now, not while printing

        def chunks() -> Iterator[EntryTable]:
            for i in range(0, len(indices), READ_CHUNK):
                yield read_entries(prog, slots, indices[i : i + READ_CHUNK], l2, stale)

        return EntryTable.deferred(len(indices), chunks)
    if len(indices) > READ_CHUNK:
        with _gc_paused():
            return _concat(
                [
                    read_entries(prog, slots, indices[i : i + READ_CHUNK], l2, stale)
                    for i in range(0, len(indices), READ_CHUNK)
                ]
            )
    ptrs = list(map(slots.__getitem__, indices))
    if not any(map(TUN_XDP_FLAG.__and__, ptrs)):
        return _read_skbs(prog, indices, ptrs, l2, stale)
    # tun rings may mix skbs and XDP frames (tagged with bit 0): read each kind, keep the ring's order
    skb_pos = [k for k, p in enumerate(ptrs) if not p & TUN_XDP_FLAG]
    xdp_pos = [k for k, p in enumerate(ptrs) if p & TUN_XDP_FLAG]
    at: Dict[int, RingEntry] = {}
    at.update(
        zip(skb_pos, _read_skbs(prog, [indices[k] for k in skb_pos], [ptrs[k] for k in skb_pos], l2, stale))
    )
    xdps = _read_xdp_frames(
        prog, [indices[k] for k in xdp_pos], [ptrs[k] & ~TUN_XDP_FLAG for k in xdp_pos], l2, stale
    )
    at.update(zip(xdp_pos, xdps))
    return EntryTable.of([at[k] for k in range(len(ptrs))])


def _concat(tables: List[EntryTable]) -> EntryTable:
    """One table of the entries of ``tables``, in order (columns kept when every table has them)."""
    if not tables:
        return EntryTable.of([])
    cols = [c for c in (t.columns() for t in tables) if c is not None]
    if len(cols) == len(tables) and all(c.keys() == cols[0].keys() for c in cols):
        return EntryTable({k: list(chain.from_iterable(c[k] for c in cols)) for k in cols[0]})
    return EntryTable.of(list(chain.from_iterable(t.items() for t in tables)))


def _read_xdp_frames(
    prog: drgn.Program, indices: List[int], addrs: List[int], l2: bool, stale: bool
) -> List[RingEntry]:
    """``struct xdp_frame`` entries (rare: tun with XDP redirect)."""
    lay = struct_layout(prog, "struct xdp_frame", XDP_FIELDS)
    entries = [RingEntry(i, "xdp_frame", a, stale=stale, l2=l2) for i, a in zip(indices, addrs)]
    bufs, offs = read_spans(prog, addrs, lay.size)
    want = []
    for e, buf, off in zip(entries, bufs, offs):
        if buf is None:
            e.error = f"xdp_frame unreadable at {e.address:#x}"
            continue
        x = lay.decode(buf, off)
        e.length = e.linear_length = x.get("len")
        e.dev = x.get("dev_rx") or None
        want.append((e, x["data"], min(e.length or 0, _data_limit)))
    bufs, offs = read_spans(prog, [a for _, a, _ in want], [n for _, _, n in want])
    for (e, a, n), buf, off in zip(want, bufs, offs):
        if buf is None:
            e.error = f"packet data unreadable at {a:#x}"
        else:
            e.data = buf[off : off + n]
    return entries


def _read_skbs(prog: drgn.Program, indices: List[int], addrs: List[int], l2: bool, stale: bool) -> EntryTable:
    """``struct sk_buff`` entries, column by column (see the module docstring)."""
    n = len(indices)
    lay = struct_layout(prog, "struct sk_buff", SKB_FIELDS)
    size = lay.size
    with _gc_paused():
        bufs, offs = read_spans(prog, addrs, size)
        errors: List[Optional[str]] = [None] * n
        if None in bufs:
            bad = [k for k, b in enumerate(bufs) if b is None]
            blank = bytes(size)
            for k in bad:
                errors[k] = f"skb unreadable at {addrs[k]:#x}"
                bufs[k], offs[k] = blank, 0
        else:
            bad = []
        # the structs back to back, then one column per member (see StructLayout.columns)
        rows = b"".join(map(_slice, cast(List[bytes], bufs), map(slice, offs, map(add, offs, repeat(size)))))
        cols = lay.columns(rows, n, SKB_FIELDS)
        del rows, bufs

        def col(name: str) -> Optional[List[int]]:
            return cols.get(name)

        lens, dlens, protos, starts = col("len"), col("data_len"), col("protocol"), col("data")
        assert lens is not None and dlens is not None and protos is not None and starts is not None
        linear = list(map(sub, lens, dlens))
        length = list(lens)
        swapped = {p: ((p & 0xFF) << 8) | (p >> 8) for p in set(protos)}  # skb->protocol is __be16
        tstamps, devs, qmaps = col("tstamp"), col("dev"), col("queue_mapping")
        t = _table(
            n,
            index=indices,
            kind="skb",
            address=list(addrs),
            length=length,
            linear_length=linear,
            protocol=list(map(swapped.__getitem__, protos)),
            vlan_tci=None,
            queue_mapping=None if qmaps is None else list(qmaps),
            tstamp_ns=None if tstamps is None or not any(tstamps) else [x or None for x in tstamps],
            dev=None if devs is None else (list(devs) if 0 not in devs else [x or None for x in devs]),
            data=b"",
            stale=stale,
            error=errors,
            l2=l2,
        )
        c = t._cols
        assert c is not None
        for k in bad:  # nothing of an unreadable skb is known
            for name in ("length", "linear_length", "protocol", "queue_mapping", "tstamp_ns", "dev"):
                c[name][k] = None
        # entries that need a closer look: unreadable, implausible lengths, the link header before data,
        # an accelerated VLAN tag
        odd = set(bad)
        # (``linear`` is the table's column: None for the unreadable skbs, so test ``len - data_len``)
        if max(lens, default=0) > 1 << 20 or min(map(sub, lens, dlens), default=0) < 0:
            odd.update(k for k in range(n) if lens[k] > 1 << 20 or lens[k] < dlens[k])
        heads, macs = col("head"), col("mac_header")
        if l2 and heads is not None and macs is not None:
            # mac < data only when the link header precedes data (or head/mac_header are odd): rare
            odd.update(compress(range(n), map(lt, map(add, heads, macs), starts)))
        vtci, vproto, vpres = col("vlan_tci"), col("vlan_proto"), col("vlan_present")
        if l2 and vtci is not None and vproto is not None:
            if vpres is not None:
                odd.update(compress(range(n), vpres))
            else:
                odd.update(compress(range(n), vtci))
                odd.update(compress(range(n), vproto))
        data_at = list(starts)
        tags: Dict[int, bytes] = {}
        for k in sorted(odd):
            if errors[k] is not None:
                continue
            if lens[k] > 1 << 20 or linear[k] < 0:
                errors[k] = f"implausible lengths len={lens[k]} data_len={dlens[k]} (freed or corrupt skb?)"
                continue
            if not l2:
                continue
            start = starts[k]
            mac_header = macs[k] if macs is not None else UNSET_HEADER
            head = heads[k] if heads is not None else 0
            if mac_header != UNSET_HEADER and head:
                mac = head + mac_header
                if start - 64 <= mac < start:  # the link header precedes data (rx path before a push)
                    length[k] += start - mac
                    linear[k] += start - mac
                    data_at[k] = mac
            # An accelerated VLAN tag lives in skb->vlan_tci/vlan_proto; tun_put_user() and tap_put_user()
            # insert it after the MAC addresses when a reader copies the frame out, so do the same.
            # Presence: the vlan_present bit, or vlan_all != 0 (vlan_tci or vlan_proto) without it:
            # Linux kernel commit 354259fa73e2 ("net: remove skb->vlan_present") (in v6.2)
            if vtci is not None and vproto is not None:
                if vpres is not None:
                    present = vpres[k]
                else:
                    present = vtci[k] or vproto[k]
                if present:
                    c["vlan_tci"][k] = vtci[k]
                    p = vproto[k]
                    tags[k] = struct.pack(">HH", ((p & 0xFF) << 8) | (p >> 8), vtci[k])
                    length[k] += 4
                    linear[k] += 4  # linear_length counts the tag; the bytes read below do not
        _read_data(
            prog,
            c,
            data_at,
            [x - 4 if k in tags else x for k, x in enumerate(linear)] if tags else linear,
            errors,
            tags,
        )
    return t


def _read_data(
    prog: drgn.Program,
    c: Dict[str, List[Any]],
    data_at: List[int],
    linear: List[int],
    errors: List[Optional[str]],
    tags: Dict[int, bytes],
) -> None:
    """Read the first :data:`HEADER_BYTES` (at most the linear part; all of it in :func:`whole_linear`)
    of each packet into ``c["data"]``."""
    n = len(data_at)
    limit = _data_limit
    want = list(compress(range(n), map(is_, errors, repeat(None))))
    if len(want) == n:
        at = data_at
        sizes = list(linear) if max(linear, default=0) <= limit else list(map(min, linear, repeat(limit)))
    else:
        at = list(map(data_at.__getitem__, want))
        sizes = [min(linear[k], limit) for k in want]
    bufs, offs = read_spans(prog, at, sizes)
    if None in bufs:
        for j, b in enumerate(bufs):
            if b is None:
                errors[want[j]] = f"packet data unreadable at {at[j]:#x}"
                bufs[j], offs[j], sizes[j] = b"", 0, 0
    datas = list(
        map(_slice, cast(List[bytes], bufs), map(slice, offs, map(add, offs, sizes)))
    )  # no None left
    if len(want) == n:
        c["data"] = datas
    else:
        col = c["data"]
        for k, d in zip(want, datas):
            col[k] = d
    if tags:
        col = c["data"]
        for k, tag in tags.items():
            d = col[k]
            if errors[k] is None and len(d) >= 12:
                col[k] = (d[:12] + tag + d[12:])[:limit]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building columns of tens of thousands of tuples triggers the cyclic GC over and over although
    nothing here forms cycles: pause it (the caller's setting is restored)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ---- JSON ---------------------------------------------------------------------------------------------


class JsonField(NamedTuple):
    """One member of an entry's JSON.

    ``key`` is also the :class:`RingEntry` attribute (a field or a property) that gives the value of one
    entry; ``form`` says how a value is written (:data:`_JSON_VALUE`, :func:`_json_column`).  The columnar
    renderer reads the :class:`EntryTable` column ``key``, or, for a property, computes the values of all
    the entries at once with ``columns(cols)`` (the same values as the property, faster; for ``form``
    ``"json"``, their JSON text).
    """

    key: str
    form: str
    columns: Optional[Callable[[Dict[str, List[Any]]], Sequence[Any]]] = None


def _sha256_column(c: Dict[str, List[Any]]) -> List[Optional[str]]:
    datas, errors = c["data"], c["error"]
    if errors.count(None) == len(errors):  # no errors: the digests alone, without a call per entry
        sha = hashlib.sha256
        return [sha(d).hexdigest() for d in datas]
    return list(map(_sha256, datas, errors))


def _digest_complete_column(c: Dict[str, List[Any]]) -> List[bool]:
    return list(map(eq, map(len, c["data"]), c["length"]))


def _headers_column(c: Dict[str, List[Any]]) -> List[str]:
    """The JSON text of each entry's ``headers``: frames decoded many at once (:func:`layers_json_many`),
    ``[]`` for an entry with an error."""
    datas, l2s, protos, errors = c["data"], c["l2"], c["protocol"], c["error"]
    n = len(datas)
    if errors.count(None) == n and l2s.count(l2s[0]) == n:  # the common case
        return layers_json_many(datas, l2s[0], protos)
    out = ["[]"] * n
    for l2 in (True, False):
        pos = [k for k in range(n) if errors[k] is None and l2s[k] == l2]
        if pos:
            texts = layers_json_many(
                list(map(datas.__getitem__, pos)), l2, list(map(protos.__getitem__, pos))
            )
            for k, t in zip(pos, texts):
                out[k] = t
    return out


#: The JSON of a ring entry, member by member, in order: the one description that both
#: :meth:`RingEntry.to_json` and the columnar renderer (:func:`entries_json`) follow.  Forms: ``int`` (an
#: int or None), ``str`` (a string or None), ``bool``, ``addr`` (an address as a hex string), ``dev`` (an
#: address as a hex string, 0 or None as null), ``hex`` (bytes as hex), ``digest`` (a string that needs no
#: escaping, or None), ``json`` (a JSON value; its text in columns).
ENTRY_JSON: Tuple[JsonField, ...] = (
    JsonField("index", "int"),
    JsonField("kind", "str"),
    JsonField("address", "addr"),
    JsonField("stale", "bool"),
    JsonField("length", "int"),
    JsonField("linear_length", "int"),
    JsonField("protocol", "int"),
    JsonField("vlan_tci", "int"),
    JsonField("queue_mapping", "int"),
    JsonField("tstamp_ns", "int"),
    JsonField("dev", "dev"),
    JsonField("data", "hex"),
    JsonField("sha256", "digest", _sha256_column),
    JsonField("digest_complete", "bool", _digest_complete_column),
    JsonField("headers", "json", _headers_column),
    JsonField("error", "str"),
)


def _same(v: Any) -> Any:
    return v


#: How one value of each form becomes its JSON value (for ``json.dumps``).
_JSON_VALUE: Dict[str, Callable[[Any], Any]] = {
    "int": _same,
    "str": _same,
    "bool": _same,
    "addr": lambda v: f"{v:#x}",
    "dev": lambda v: f"{v:#x}" if v else None,
    "hex": bytes.hex,
    "digest": _same,
    "json": _same,
}
_JBOOL = {True: "true", False: "false"}
_NULL = {None: "null"}  # _NULL.get(v, text): "null" for None, else the text (at C speed in map)


def _json_column(values: Sequence[Any], form: str) -> Tuple[str, Any]:
    """One column for a ``%`` format: ``(text, None)`` when every value renders the same (``text`` is the
    JSON, ``%`` escaped), else ``(spec, column)``: a ``%`` conversion and the values it takes, written as
    :data:`_JSON_VALUE` and ``json.dumps`` would write them."""
    n = len(values)
    first = values[0]
    if values[-1] == first and values.count(first) == n:
        text = first if form == "json" else json.dumps(_JSON_VALUE[form](first))
        return text.replace("%", "%%"), None
    if form == "int":
        if None in values:
            return "%s", map(_NULL.get, values, map(str, values))
        return "%d", values
    if form == "bool":
        return "%s", map(_JBOOL.__getitem__, values)
    if form == "addr":
        return '"%#x"', values
    if form == "dev":
        return "%s", [f'"{v:#x}"' if v else "null" for v in values]
    if form == "hex":
        return '"%s"', map(bytes.hex, values)
    if form == "digest":
        return (
            ("%s", map(_NULL.get, values, map('"{}"'.format, values))) if None in values else ('"%s"', values)
        )
    if form == "json":
        return "%s", values
    texts = {v: json.dumps(v) for v in set(values)}  # a few distinct strings (errors, kinds)
    return "%s", map(texts.__getitem__, values)


def _rows(c: Dict[str, List[Any]], whole: bool) -> Any:
    """JSON of the entries of columns ``c``: one string of the whole array's contents (``whole``) or a list
    of row strings.

    Each row is one ``%`` format built from :data:`ENTRY_JSON`: the constant text (keys, and members with
    one value in the whole chunk) is baked into the format, the other members are columns converted by
    ``%d``, ``%#x`` or ``%s``.
    """
    fmt: List[str] = []
    cols: List[Any] = []
    for f in ENTRY_JSON:
        fmt.append(f",{json.dumps(f.key)}:" if fmt else f"{{{json.dumps(f.key)}:")
        text, col = _json_column(c[f.key] if f.columns is None else f.columns(c), f.form)
        fmt.append(text)
        if col is not None:
            cols.append(col)
    fmt.append("}")
    line = "".join(fmt)
    rows: Any = map(line.__mod__, zip(*cols)) if cols else repeat(line % (), len(c["index"]))
    return ",".join(rows) if whole else list(rows)


#: Entries rendered at a time: a chunk's strings are joined and written while still in the CPU cache.
JSON_CHUNK = 4096


def entries_json(entries: Sequence[RingEntry]) -> str:
    """The compact JSON text of ``[e.to_json() for e in entries]`` (what ``json.dumps`` with
    ``separators=(",", ":")`` gives), built column by column for tens of thousands of entries."""
    return "".join(entries_json_chunks(entries))


def _columns_of(entries: Sequence[RingEntry], names: Sequence[str] = _COLUMNS) -> Dict[str, List[Any]]:
    """The columns ``names`` of ``entries``: an :class:`EntryTable`'s own, else gathered from the objects."""
    cols = entries.columns() if isinstance(entries, EntryTable) else None
    if cols is None:
        items = list(entries)
        cols = {k: list(map(attrgetter(k), items)) for k in names}
    return cols


def entries_json_chunks(entries: Sequence[RingEntry]) -> Iterator[str]:
    """:func:`entries_json` in pieces, :data:`JSON_CHUNK` entries at a time, to write as they come."""
    n = len(entries)
    if not n:
        yield "[]"
        return
    chunks = entries.chunks() if isinstance(entries, EntryTable) else None
    yield "["
    if chunks is not None:
        # read on first use: each chunk read, rendered and dropped while in the CPU cache
        for k, table in enumerate(chunks):
            if k:
                yield ","
            with _gc_paused():
                text = _rows(_columns_of(table), True) if len(table) else ""
            yield text
    else:
        cols = _columns_of(entries)
        for start in range(0, n, JSON_CHUNK):
            if start:
                yield ","
            with _gc_paused():
                text = _rows({k: v[start : start + JSON_CHUNK] for k, v in cols.items()}, True)
            yield text
    yield "]"


# ---- contents summary ---------------------------------------------------------------------------------


class _Tally:
    """Counts of a ring's entries by innermost protocol and by flow, with each one's first position, for
    :func:`entries_summary` and :func:`entries_summary_slow` alike."""

    def __init__(self) -> None:
        self.protocols: Dict[str, List[int]] = {}  # name: [count, first position]
        self.flow_positions: List[int] = []
        self.flow_keys: List[FlowKey] = []

    def count(self, part: Dict[str, List[int]]) -> None:
        """Add ``{name: [count, first position]}``."""
        for key, (n, first) in part.items():
            t = self.protocols.get(key)
            if t is None:
                self.protocols[key] = [n, first]
            else:
                t[0] += n
                t[1] = min(t[1], first)

    def result(self) -> Dict[str, Any]:
        """``{"protocols": {name: count}, "top_flows": [(flow text, count)]}``: the protocols by count and
        the 5 commonest flows; ties in order of first occurrence, as a walk in order counts them."""
        pos = self.flow_positions
        flows = collections.Counter(
            map(self.flow_keys.__getitem__, sorted(range(len(pos)), key=pos.__getitem__))
        )
        top = [(flow_key_text(k), n) for k, n in flows.most_common(5)]
        by_first = sorted(self.protocols.items(), key=lambda kv: kv[1][1])
        ordered = collections.Counter({k: v[0] for k, v in by_first})
        return {"protocols": dict(ordered.most_common()), "top_flows": top}


#: The protocol an entry with an error is counted as.
UNREADABLE = "unreadable"


def entries_summary(entries: Sequence[RingEntry]) -> Dict[str, Any]:
    """Counts by innermost protocol (``"unreadable"`` for entries with an error, ``"?"`` when nothing
    decodes) and the top 5 flows (see :meth:`_Tally.result`), from the columns: frames grouped by header
    structure, flows counted on their raw bytes (:func:`summarize_many`).  The same as
    :func:`entries_summary_slow`.  A table read on first use is summarised a chunk at a time, without
    keeping the entries."""
    tally = _Tally()
    if not len(entries):
        return tally.result()
    chunks = entries.chunks() if isinstance(entries, EntryTable) else None
    base = 0
    with _gc_paused():
        for table in chunks if chunks is not None else (entries,):
            cols = _columns_of(table, ("data", "l2", "protocol", "error"))
            _summary_part(cols, base, tally)
            base += len(cols["error"])
        return tally.result()


def _summary_part(cols: Dict[str, List[Any]], base: int, tally: _Tally) -> None:
    """Add the entries of ``cols`` (positions from ``base``) to ``tally``."""
    errors = cols["error"]
    n = len(errors)
    if not n:
        return
    ok = list(compress(range(n), map(is_, errors, repeat(None))))
    if len(ok) < n:
        bad = [k for k in range(n) if errors[k] is not None]
        tally.count({UNREADABLE: [len(bad), base + bad[0]]})
    l2s = cols["l2"]
    if l2s.count(l2s[0]) == n:
        parts = [(bool(l2s[0]), ok)]
    else:
        parts = [(True, [k for k in ok if l2s[k]]), (False, [k for k in ok if not l2s[k]])]
    for l2, pos in parts:
        if not pos:
            continue
        protocols, fpos, fkeys = summarize_many(
            list(map(cols["data"].__getitem__, pos)),
            l2,
            list(map(cols["protocol"].__getitem__, pos)),
            list(map(base.__add__, pos)),
        )
        tally.count(protocols)
        tally.flow_positions += fpos
        tally.flow_keys += fkeys


def entries_summary_slow(entries: Sequence[RingEntry]) -> Dict[str, Any]:
    """The reference of :func:`entries_summary`: each entry's headers decoded on their own
    (:attr:`RingEntry.headers`), counted with the same rules."""
    tally = _Tally()
    for k, e in enumerate(entries):
        tally.count({UNREADABLE if e.error is not None else e.decoded().protocol: [1, k]})
        key = flow_key(e.headers)
        if key is not None:
            tally.flow_positions.append(k)
            tally.flow_keys.append(key)
    return tally.result()
