"""Reading ``struct sk_buff`` and ``struct xdp_frame`` entries in bulk, with their packet headers.

The structs and then the packet bytes are read in coalesced windows (:mod:`skbinspect.bulk`) and decoded
column by column with one precompiled ``struct`` (offsets from the target's DWARF, :mod:`skbinspect.layout`),
not one drgn Object each; per-entry work runs in C (``map``, ``zip``) on the common path, and a Python loop
handles only the unusual entries (VLAN-accelerated, link header before ``data``, corrupt).  A ring's
entries come back as an :class:`EntryTable`, which builds :class:`RingEntry` objects on first use and
renders JSON straight from its columns (:func:`entries_json`).
"""

from __future__ import annotations

import collections
import gc
import hashlib
import json
import struct
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import add, attrgetter, eq, getitem, is_, lt, sub
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import drgn

from skbinspect.memory.bulk import read_spans
from skbinspect.memory.layout import struct_layout
from skbinspect.tuntap.packet import (
    DecodedPacket,
    decode_ethernet,
    decode_l3,
    flow_key_text,
    flow_text,
    layers_json_many,
    summarize_many,
)

__all__ = [
    "EntryTable",
    "RingEntry",
    "entries_json",
    "entries_json_chunks",
    "entries_summary",
    "entries_summary_slow",
    "read_entries",
    "TUN_XDP_FLAG",
    "HEADER_BYTES",
]

#: include/linux/if_tun.h (5.10 .. 7.1): tun rings tag xdp_frame pointers with bit 0.
TUN_XDP_FLAG = 0x1

#: Packet bytes read per entry for header decoding and the digest (the whole linear part up to this).
HEADER_BYTES = 256

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
        return {
            "index": self.index, "kind": self.kind, "address": f"{self.address:#x}", "stale": self.stale,
            "length": self.length, "linear_length": self.linear_length,
            "protocol": self.protocol, "vlan_tci": self.vlan_tci, "queue_mapping": self.queue_mapping,
            "tstamp_ns": self.tstamp_ns, "dev": f"{self.dev:#x}" if self.dev else None,
            "data": self.data.hex(), "sha256": self.sha256, "digest_complete": self.digest_complete,
            "headers": self.headers, "error": self.error,
        }  # fmt: skip


#: The columns of an :class:`EntryTable`, in :class:`RingEntry` constructor order.
_COLUMNS = (
    "index",
    "kind",
    "address",
    "length",
    "linear_length",
    "protocol",
    "vlan_tci",
    "queue_mapping",
    "tstamp_ns",
    "dev",
    "data",
    "stale",
    "error",
    "l2",
)


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

    def __getitem__(self, i):  # type: ignore[no-untyped-def,override]
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
    out: List[Optional[RingEntry]] = [None] * len(ptrs)
    skbs = _read_skbs(prog, [indices[k] for k in skb_pos], [ptrs[k] for k in skb_pos], l2, stale)
    for k, e in zip(skb_pos, skbs):
        out[k] = e
    xdps = _read_xdp_frames(
        prog, [indices[k] for k in xdp_pos], [ptrs[k] & ~TUN_XDP_FLAG for k in xdp_pos], l2, stale
    )
    for k, e in zip(xdp_pos, xdps):
        out[k] = e
    return EntryTable.of(out)  # type: ignore[arg-type]


def _concat(tables: List[EntryTable]) -> EntryTable:
    """One table of the entries of ``tables``, in order (columns kept when every table has them)."""
    if not tables:
        return EntryTable.of([])
    cols = [t.columns() for t in tables]
    if all(c is not None for c in cols) and all(c.keys() == cols[0].keys() for c in cols):  # type: ignore[union-attr]
        return EntryTable({k: list(chain.from_iterable(c[k] for c in cols)) for k in cols[0]})  # type: ignore[index]
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
        want.append((e, x["data"], min(e.length or 0, HEADER_BYTES)))
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
        rows = b"".join(map(getitem, bufs, map(slice, offs, map(add, offs, repeat(size)))))
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
            # Presence: the vlan_present bit up to 6.1; vlan_all != 0 since 6.2 (354259fa73e2).
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
    """Read the first :data:`HEADER_BYTES` (at most the linear part) of each packet into ``c["data"]``."""
    n = len(data_at)
    want = list(compress(range(n), map(is_, errors, repeat(None))))
    if len(want) == n:
        at = data_at
        sizes = (
            list(linear)
            if max(linear, default=0) <= HEADER_BYTES
            else list(map(min, linear, repeat(HEADER_BYTES)))
        )
    else:
        at = list(map(data_at.__getitem__, want))
        sizes = [min(linear[k], HEADER_BYTES) for k in want]
    bufs, offs = read_spans(prog, at, sizes)
    if None in bufs:
        for j, b in enumerate(bufs):
            if b is None:
                errors[want[j]] = f"packet data unreadable at {at[j]:#x}"
                bufs[j], offs[j], sizes[j] = b"", 0, 0
    datas = list(map(getitem, bufs, map(slice, offs, map(add, offs, sizes))))
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
                col[k] = (d[:12] + tag + d[12:])[:HEADER_BYTES]


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

_JBOOL = {True: "true", False: "false"}


def _json_column(values: Sequence[Any], how: str) -> Tuple[str, Any]:
    """One column for a ``%`` format: ``(text, None)`` when every value renders the same (``text`` is the
    JSON, ``%`` escaped), else ``(spec, column)``: a ``%`` conversion and the values it takes.  ``how``:
    ``int`` (int or None), ``bool``, ``str`` (plain ASCII names), ``addr`` (hex with quotes), ``dev`` (hex
    with quotes, 0/None as null)."""
    n = len(values)
    first = values[0]
    if values.count(first) == n:
        if how == "addr":
            text = f'"{first:#x}"'
        elif how == "dev":
            text = f'"{first:#x}"' if first else "null"
        else:
            text = json.dumps(first)
        return text.replace("%", "%%"), None
    if how == "int":
        if None in values:
            return "%s", ["null" if v is None else str(v) for v in values]
        return "%d", values
    if how == "bool":
        return "%s", map(_JBOOL.__getitem__, values)
    if how == "addr":
        return '"%#x"', values
    if how == "dev":
        return "%s", [f'"{v:#x}"' if v else "null" for v in values]
    return "%s", map(json.dumps, values)


def _fast_rows(c: Dict[str, Sequence[Any]], whole: bool) -> Any:
    """JSON of entries without error: one string of the whole array (``whole``) or a list of row strings.

    Each row is one ``%`` format: the constant text (keys, and fields with one value in the whole chunk)
    is baked into the format, the other fields are columns converted by ``%d``, ``%#x`` or ``%s``.
    """
    datas = c["data"]
    n = len(datas)
    lengths = c["length"]
    sha = hashlib.sha256
    l2s = c["l2"]
    if l2s.count(l2s[0]) == n:
        headers = layers_json_many(datas, l2s[0], c["protocol"])
    else:
        headers = [layers_json_many([d], l2, [p])[0] for d, l2, p in zip(datas, l2s, c["protocol"])]
    fmt: List[str] = []
    cols: List[Any] = []
    for key, how in (
        ("index", "int"),
        ("kind", "str"),
        ("address", "addr"),
        ("stale", "bool"),
        ("length", "int"),
        ("linear_length", "int"),
        ("protocol", "int"),
        ("vlan_tci", "int"),
        ("queue_mapping", "int"),
        ("tstamp_ns", "int"),
        ("dev", "dev"),
    ):
        fmt.append(f',"{key}":' if fmt else f'{{"{key}":')
        text, col = _json_column(c[key], how)
        fmt.append(text)
        if col is not None:
            cols.append(col)
    fmt.append(',"data":"%s","sha256":"%s","digest_complete":')
    cols.append(map(bytes.hex, datas))
    cols.append([sha(d).hexdigest() for d in datas])
    text, col = _json_column(list(map(eq, map(len, datas), lengths)), "bool")
    fmt.append(text)
    if col is not None:
        cols.append(col)
    fmt.append(',"headers":%s,"error":null}')
    cols.append(headers)
    rows = map("".join(fmt).__mod__, zip(*cols))
    return ",".join(rows) if whole else list(rows)


#: Entries rendered at a time: a chunk's strings are joined and written while still in the CPU cache.
JSON_CHUNK = 4096


def entries_json(entries: Sequence[RingEntry]) -> str:
    """The compact JSON text of ``[e.to_json() for e in entries]`` (what ``json.dumps`` with
    ``separators=(",", ":")`` gives), built column by column for tens of thousands of entries."""
    return "".join(entries_json_chunks(entries))


def entries_json_chunks(entries: Sequence[RingEntry]) -> Iterator[str]:
    """:func:`entries_json` in pieces, :data:`JSON_CHUNK` entries at a time, to write as they come."""
    n = len(entries)
    if not n:
        yield "[]"
        return
    chunks = entries.chunks() if isinstance(entries, EntryTable) else None
    if chunks is not None:
        # read on first use: each chunk read, rendered and dropped while in the CPU cache
        yield "["
        for k, chunk in enumerate(chunks):
            if k:
                yield ","
            with _gc_paused():
                cols = chunk.columns()
                if cols is None:
                    items = chunk.items()
                    cols = {name: list(map(attrgetter(name), items)) for name in _COLUMNS}
                text = _chunk_json(cols) if len(chunk) else ""
            yield text
        yield "]"
        return
    cols = entries.columns() if isinstance(entries, EntryTable) else None
    if cols is None:
        items = list(entries)
        cols = {k: list(map(attrgetter(k), items)) for k in _COLUMNS}
    yield "["
    for start in range(0, n, JSON_CHUNK):
        if start:
            yield ","
        with _gc_paused():
            chunk = {k: v[start : start + JSON_CHUNK] for k, v in cols.items()}
            text = _chunk_json(chunk)
        yield text
    yield "]"


def _chunk_json(cols: Dict[str, List[Any]]) -> str:
    """The entries of ``cols`` as JSON objects separated by commas."""
    errors = cols["error"]
    n = len(errors)
    if errors.count(None) == n:
        return _fast_rows(cols, True)
    rows: List[str] = [""] * n
    ok = list(compress(range(n), map(is_, errors, repeat(None))))
    if ok:
        sub_cols = {k: list(map(v.__getitem__, ok)) for k, v in cols.items()}
        for k, s in zip(ok, _fast_rows(sub_cols, False)):
            rows[k] = s
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for k in compress(range(n), errors):
        rows[k] = dumps(RingEntry(*(cols[name][k] for name in _COLUMNS)).to_json())
    return ",".join(rows)


# ---- contents summary ---------------------------------------------------------------------------------


def entries_summary(entries: Sequence[RingEntry]) -> Dict[str, Any]:
    """Counts by innermost protocol (``"unreadable"`` for entries with an error) and the top 5 flows,
    exactly :func:`entries_summary_slow`, from the columns (frames grouped by header structure, flows
    counted on their raw bytes; ties ordered by first occurrence, as a walk in order counts them).
    A table read on first use is summarised a chunk at a time, without keeping the entries."""
    if not len(entries):
        return {"protocols": {}, "top_flows": []}
    chunks = entries.chunks() if isinstance(entries, EntryTable) else None
    protos: Dict[str, List[int]] = {}
    fpos: List[int] = []
    fkeys: List[Any] = []
    base = 0
    with _gc_paused():
        for table in chunks if chunks is not None else (entries,):
            cols = table.columns() if isinstance(table, EntryTable) else None
            if cols is None:
                items = list(table)
                cols = {k: list(map(attrgetter(k), items)) for k in ("data", "l2", "protocol", "error")}
            _summary_part(cols, base, protos, fpos, fkeys)
            base += len(cols["error"])
        # counted in ring order, so that ties keep the order of first occurrence
        flows = collections.Counter(map(fkeys.__getitem__, sorted(range(len(fpos)), key=fpos.__getitem__)))
        top = [(flow_key_text(k), c) for k, c in flows.most_common(5)]
    ordered = collections.Counter({k: v[0] for k, v in sorted(protos.items(), key=lambda kv: kv[1][1])})
    return {"protocols": dict(ordered.most_common()), "top_flows": top}


def _summary_part(
    cols: Dict[str, List[Any]], base: int, protos: Dict[str, List[int]], fpos: List[int], fkeys: List[Any]
) -> None:
    """Add the entries of ``cols`` (positions from ``base``) to the tallies of :func:`entries_summary`."""
    errors = cols["error"]
    n = len(errors)
    if not n:
        return
    found: List[Tuple[Dict[str, List[int]]]] = []
    ok = list(compress(range(n), map(is_, errors, repeat(None))))
    if len(ok) < n:
        bad = [k for k in range(n) if errors[k] is not None]
        found.append(({"unreadable": [len(bad), base + bad[0]]},))
    l2s = cols["l2"]
    if l2s.count(l2s[0]) == n:
        parts = [(bool(l2s[0]), ok)]
    else:
        parts = [(True, [k for k in ok if l2s[k]]), (False, [k for k in ok if not l2s[k]])]
    for l2, pos in parts:
        if not pos:
            continue
        p, fp, fk = summarize_many(
            list(map(cols["data"].__getitem__, pos)),
            l2,
            list(map(cols["protocol"].__getitem__, pos)),
            list(map(base.__add__, pos)),
        )
        found.append((p,))
        fpos += fp
        fkeys += fk
    for (part,) in found:
        for key, (count, first) in part.items():
            t = protos.get(key)
            if t is None:
                protos[key] = [count, first]
            else:
                t[0] += count
                t[1] = min(t[1], first)


def entries_summary_slow(entries: Sequence[RingEntry]) -> Dict[str, Any]:
    """The reference of :func:`entries_summary`: each entry's headers decoded on its own."""
    protos: collections.Counter = collections.Counter()
    flows: collections.Counter = collections.Counter()
    for e in entries:
        inner = e.headers[-1]["proto"] if e.headers else ("unreadable" if e.error else "?")
        protos[inner] += 1
        f = flow_text(e.headers)
        if f is not None:
            flows[f] += 1
    return {"protocols": dict(protos.most_common()), "top_flows": flows.most_common(5)}
