"""Pure byte-level decoding of the kernel's ftrace ring buffer (no drgn here).

Everything in this module works on ``bytes`` handed to it: sub-buffers ("pages") of a ring buffer, event
payloads, and the facts read elsewhere from the target's DWARF (:class:`RingBufferLayout`).
:mod:`skbinspect.ftrace.reader` does the drgn side (finding the trace arrays, reading the
pages in the kernel's order, reading the event formats); this module can be unit-tested on bytes and
reused on a live target or on raw ``trace_pipe_raw`` pages.

Encoding (kernel/trace/ring_buffer.c, the same 5.10 .. 7.x; see docs/kernel/ftrace.md)::

    struct buffer_data_page { u64 time_stamp; local_t commit; unsigned char data[]; };
    struct ring_buffer_event { u32 type_len:5, time_delta:27; u32 array[]; };

``type_len`` 1..28: a data event of ``type_len * 4`` payload bytes at ``array[0]``; 0: a data event whose
length is ``array[0]`` (counting itself) with the payload at ``array[1]``; 29 (``RINGBUF_TYPE_PADDING``):
the rest of the page is unused when ``time_delta == 0``, else a discarded event of ``array[0] + 4`` bytes;
30 (``TIME_EXTEND``): add ``array[0] << 27 | time_delta`` to the running time; 31 (``TIME_STAMP``): an
absolute time (59 bits stored, the top bits restored from the page's time stamp as ``rb_fix_abs_ts()``
does).

Decoding never raises on bad bytes: what cannot be decoded is skipped and reported as a :class:`Damage`.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "RingBufferLayout",
    "DEFAULT_LAYOUT",
    "Damage",
    "Record",
    "KeyCodec",
    "Batch",
    "decode_subbuf",
    "payload_span",
    "merge_windows",
    "iter_records",
    "walk_ring",
    "RB_PAGE_HEAD",
]

# ---- ring buffer layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RingBufferLayout:
    """Facts about one target's ring buffer encoding.

    The defaults are the x86-64 values of every kernel from 5.10 to 7.x; :mod:`skbinspect.ftrace.reader`
    fills in what the target's DWARF tells (``enum ring_buffer_type``, ``struct buffer_data_page``).
    ``TS_SHIFT`` (27) and the ``RB_MISSED_*`` bits are ``#define``s of ring_buffer.c, not in DWARF.

    :ivar header_size: ``offsetof(struct buffer_data_page, data)`` (``BUF_PAGE_HDR_SIZE``).
    :ivar commit_offset: ``offsetof(struct buffer_data_page, commit)``; ``commit_size`` its size.
    :ivar type_len_max: ``RINGBUF_TYPE_DATA_TYPE_LEN_MAX``; padding / time extend / time stamp follow.
    """

    header_size: int = 16
    commit_offset: int = 8
    commit_size: int = 8
    type_len_max: int = 28
    type_padding: int = 29
    type_time_extend: int = 30
    type_time_stamp: int = 31
    ts_shift: int = 27
    missed_events: int = 1 << 31  # RB_MISSED_EVENTS: events were lost before this page
    missed_stored: int = 1 << 30  # RB_MISSED_STORED: the count is stored after the data

    @property
    def missed_mask(self) -> int:
        return self.missed_events | self.missed_stored


DEFAULT_LAYOUT = RingBufferLayout()

#: TS_MSB of ring_buffer.c: the top 5 bits a TIME_STAMP event does not store.  Linux kernel commit
#: 6695da58f944 ("ring-buffer: Have absolute time stamps handle large numbers") (in v5.19); restoring them
#: is a no-op on older kernels, whose time stamps never use those bits.
_TS_MSB = 0xF8 << 56
_U64 = (1 << 64) - 1


def fix_abs_ts(abs_ts: int, save_ts: int) -> int:
    """``rb_fix_abs_ts()``: restore the top bits of a 59-bit absolute time stamp from ``save_ts``."""
    if save_ts & _TS_MSB:
        abs_ts |= save_ts & _TS_MSB
        if abs_ts < save_ts:
            abs_ts = (abs_ts + (1 << 59)) & _U64
    return abs_ts


@dataclass
class Damage:
    """Something in the buffer that could not be decoded and was skipped.

    :ivar cpu: the CPU buffer (-1 if not per CPU).
    :ivar where: what was being read, e.g. ``"page 0xffff... (sub-buffer 12)"``.
    :ivar offset: byte offset in the sub-buffer's data, when it applies.
    :ivar message: what was wrong.
    """

    cpu: int
    where: str
    message: str
    offset: Optional[int] = None

    def __str__(self) -> str:
        at = f" at data offset {self.offset}" if self.offset is not None else ""
        return f"CPU {self.cpu}: {self.where}{at}: {self.message}"

    def to_json(self) -> Dict[str, Any]:
        return {"cpu": self.cpu, "where": self.where, "offset": self.offset, "message": self.message}


class KeyCodec:
    """The one place that knows the layout of an event key: a decoded event packed into one int.

    From the low bits up::

        bits 0 .. 15                      type  the event's ``trace_entry.type`` (its event id)
        POS_SHIFT .. + pos_bits           word  the index of the event's header word in its sub-buffer
        cpu_shift .. + cpu_bits           cpu   the CPU buffer
        ts_shift ..                       ts    the time stamp (as many bits as it needs)

    Keys of one CPU grow with time and buffer position, and keys of different CPUs compare on
    ``(ts, cpu)``: sorting keys orders events exactly as the kernel's trace iterator merges CPUs (the
    smallest time stamp first, ties to the lower CPU, each CPU's own order kept).  One int per event keeps
    the hot path (decoding) and the merge (a C sort of ints) fast, and filtering by event type needs no
    access to the page.

    Use the accessors; a hot loop may instead read the shifts and masks once (``ts_shift``, ``cpu_shift``,
    ``cpu_mask``, ``POS_SHIFT``, ``pos_mask``, ``TYPE_MASK``) and apply them inline.
    """

    __slots__ = ("pos_bits", "cpu_bits", "ts_shift", "pos_mask", "cpu_mask", "cpu_shift")

    TYPE_BITS = 16
    TYPE_MASK = (1 << TYPE_BITS) - 1
    POS_SHIFT = TYPE_BITS

    def __init__(self, subbuf_size: int = 4096, cpu_bits: int = 13) -> None:
        self.pos_bits = max(1, (max(subbuf_size, 4) // 4).bit_length())
        self.cpu_bits = cpu_bits
        self.cpu_shift = self.POS_SHIFT + self.pos_bits
        self.ts_shift = self.cpu_shift + cpu_bits
        self.pos_mask = (1 << self.pos_bits) - 1
        self.cpu_mask = (1 << cpu_bits) - 1

    def pack(self, ts: int, cpu: int, word: int, type: int) -> int:
        return ts << self.ts_shift | cpu << self.cpu_shift | word << self.POS_SHIFT | type

    def ts(self, key: int) -> int:
        return key >> self.ts_shift

    def cpu(self, key: int) -> int:
        return (key >> self.cpu_shift) & self.cpu_mask

    def word(self, key: int) -> int:
        return (key >> self.POS_SHIFT) & self.pos_mask

    @classmethod
    def type(cls, key: int) -> int:
        return key & cls.TYPE_MASK

    def unpack(self, key: int) -> Tuple[int, int, int]:
        """``(ts, cpu, word)``."""
        return (
            key >> self.ts_shift,
            (key >> self.cpu_shift) & self.cpu_mask,
            (key >> self.POS_SHIFT) & self.pos_mask,
        )

    def payload(self, page: bytes, key: int) -> Tuple[int, int]:
        """``(offset, length)`` of the payload of the event of ``key`` in its sub-buffer ``page``."""
        return payload_span(page, (key >> self.POS_SHIFT) & self.pos_mask)


#: One decoded data event for callers that want tuples: ``(ts, cpu, type, page, offset, length)``:
#: ``page`` is the sub-buffer's bytes, ``offset``/``length`` the payload (``struct trace_entry`` first)
#: inside it, ``type`` the payload's ``trace_entry.type`` (the event id).
Record = Tuple[int, int, int, bytes, int, int]

_LITTLE = sys.byteorder == "little"
_PAGE_HDR = struct.Struct("<QQ")  # buffer_data_page: time_stamp, commit


def _words(page: bytes) -> Sequence[int]:
    """The page as little-endian u32 words (a zero-copy view on little-endian hosts)."""
    n = len(page) // 4
    if _LITTLE:
        if len(page) & 3:
            return memoryview(page)[: n * 4].cast("I")
        return memoryview(page).cast("I")
    return struct.unpack_from(f"<{n}I", page)


_U32 = struct.Struct("<I").unpack_from


def payload_span(page: bytes, word: int) -> Tuple[int, int]:
    """``(offset, length)`` of the payload of the data event whose header is at u32 index ``word``:
    ``type_len * 4`` bytes after the header word, or (``type_len`` 0) ``array[0] - 4`` bytes after the
    length word."""
    (h,) = _U32(page, word * 4)
    tl = h & 31
    if tl:
        return (word + 1) * 4, tl * 4
    (ln,) = _U32(page, word * 4 + 4)
    return (word + 2) * 4, ln - 4


def decode_subbuf(
    page: bytes,
    cpu: int,
    keys: List[int],
    codec: KeyCodec,
    *,
    layout: RingBufferLayout = DEFAULT_LAYOUT,
    emit_from: int = 0,
    commit: Optional[int] = None,
    damage: Optional[List[Damage]] = None,
    where: Any = "sub-buffer",
) -> Tuple[int, bool]:
    """Decode one sub-buffer (``struct buffer_data_page`` with its data) and append a key
    (:class:`KeyCodec`) per data event to ``keys``, oldest first.

    :param page: the sub-buffer's bytes, header included (``PAGE_SIZE << order`` long, or shorter if
        only part could be read).
    :param emit_from: data offset of the first event to keep (a reader page's ``read``): events before
        it were consumed by a ``trace_pipe`` reader; they are decoded for the time stamps only.
    :param commit: the number of committed data bytes; default: the page's own ``commit`` word (its
        ``RB_MISSED_*`` flag bits masked).
    :param damage: list to append :class:`Damage` to (bad lengths, bad types, truncation).
    :param where: what to call the sub-buffer in damage reports (an int is its address).
    :returns: ``(flags, monotonic)``: the page's ``RB_MISSED_*`` bits, and False if an absolute time
        stamp went backwards (the keys appended are then not sorted).
    """
    hs = layout.header_size
    if isinstance(where, int):
        where = f"sub-buffer {where:#x}"
    if len(page) < hs:
        if damage is not None:
            damage.append(Damage(cpu, where, f"only {len(page)} bytes, shorter than the sub-buffer header"))
        return 0, True
    if layout.commit_offset == 8 and layout.commit_size == 8:
        ts, raw_commit = _PAGE_HDR.unpack_from(page, 0)
    else:
        ts = int.from_bytes(page[0:8], "little")
        raw_commit = int.from_bytes(
            page[layout.commit_offset : layout.commit_offset + layout.commit_size], "little"
        )
    flags = raw_commit & layout.missed_mask
    size = (raw_commit & ~layout.missed_mask & 0xFFFFFFFF) if commit is None else commit
    cap = len(page) - hs
    if size > cap:
        if damage is not None:
            damage.append(
                Damage(
                    cpu,
                    where,
                    f"commit {size} is beyond the sub-buffer's {cap} data bytes; decoding the bytes present",
                )
            )
        size = cap
    if size & 3:
        if damage is not None:
            damage.append(Damage(cpu, where, f"commit {size} is not a multiple of 4; rounded down"))
        size &= ~3
    words = _words(page)
    base = hs // 4
    i = base
    end = base + size // 4
    if end - base > codec.pos_mask + 1 - base or not 0 <= cpu <= codec.cpu_mask:
        if damage is not None:
            damage.append(Damage(cpu, where, "sub-buffer larger than the key codec allows; truncated"))
        end = min(end, codec.pos_mask)
    tl_max = layout.type_len_max
    t_pad = layout.type_padding
    t_ext = layout.type_time_extend
    t_abs = layout.type_time_stamp
    tshift = layout.ts_shift
    kshift = codec.ts_shift
    pshift = codec.POS_SHIFT
    tmask = codec.TYPE_MASK
    pmask = codec.pos_mask
    cbase = cpu << codec.cpu_shift
    page_ts = ts
    add = keys.append
    n0 = len(keys)
    bad = None
    monotonic = True
    # The running key carries the time stamp (ts << kshift) and the CPU; an event's key adds its word and
    # its type (the first u16 of its payload, trace_entry.type).
    key = (ts << kshift) | cbase
    try:
        # The hot loop: one u32 read, a shift and an add, and one append per data event.
        while i < end:
            h = words[i]
            tl = h & 31
            if 0 < tl <= tl_max:
                key += (h >> 5) << kshift
                add(key | (i << pshift | words[i + 1] & tmask))
                i += 1 + tl
            elif tl == 0:
                ln = words[i + 1]
                if ln < 8 or ln & 3:
                    bad = f"impossible event length {ln}"
                    break
                key += (h >> 5) << kshift
                add(key | (i << pshift | words[i + 2] & tmask))
                i += 1 + (ln >> 2)
            elif tl == t_ext:
                key += ((words[i + 1] << tshift) + (h >> 5)) << kshift
                i += 2
            elif tl == t_abs:
                new = fix_abs_ts((words[i + 1] << tshift) + (h >> 5), page_ts)
                if new < key >> kshift:
                    monotonic = False
                key = (new << kshift) | cbase
                i += 2
            elif tl == t_pad:
                if not h >> 5:
                    break  # null event: the rest of the page is unused
                ln = words[i + 1]
                if ln & 3:
                    bad = f"padding of impossible length {ln}"
                    break
                i += 1 + (ln >> 2)
            else:
                bad = f"unknown event type_len {tl}"
                break
    except IndexError:
        bad = "an event runs past the end of the sub-buffer"
    if i > end and bad is None:
        # the last item ran past the commit: drop it if it was a data event
        if len(keys) > n0:
            off, ln = codec.payload(page, keys[-1])
            if off + ln > hs + size:
                keys.pop()
        bad = f"the last event runs past the commit ({size})"
    if bad is not None and damage is not None:
        damage.append(Damage(cpu, where, bad + "; rest of the sub-buffer skipped", (min(i, end) - base) * 4))
    if emit_from > 0 and len(keys) > n0:
        # drop the events a trace_pipe reader consumed (header words below base + emit_from / 4)
        first = base + emit_from // 4
        j = n0
        while j < len(keys) and (keys[j] >> pshift) & pmask < first:
            j += 1
        del keys[n0:j]
    return flags, monotonic


#: A decoded sub-buffer in a per-CPU stream: ``(page, keys, monotonic)``.
Batch = Tuple[bytes, List[int], bool]


def merge_windows(
    streams: Sequence[Iterator[Batch]], codec: KeyCodec
) -> Iterator[Tuple[List[int], Dict[int, bytes]]]:
    """Merge per-CPU streams of decoded sub-buffers into time order, window by window.

    Yields ``(keys, pages)``: keys (:class:`KeyCodec`) in order, and ``{cpu: page}``, the sub-buffer each
    CPU's keys in this window come from.  A window ends at the earliest last-key of the CPUs' current
    sub-buffers, so at most one sub-buffer per CPU is held: memory does not grow with the number of
    events.  The order is the kernel's (smallest ``(ts, cpu)`` first, each CPU's order kept) as long
    as each CPU's time stamps do not go backwards; a sub-buffer whose absolute time stamps do is
    emitted on its own, in its own order.
    """
    import bisect

    def pull(it: Iterator[Batch]) -> Optional[Batch]:
        for b in it:
            if b[1]:
                return b
        return None

    active: List[List[Any]] = []
    for it in streams:
        b = pull(it)
        if b is not None:
            active.append([it, b[0], b[1], 0, b[2], codec.cpu(b[1][0])])
    while active:
        if len(active) == 1:
            it, page, keys, p, _, cpu = active[0]
            while True:
                yield (keys[p:] if p else keys), {cpu: page}
                b = pull(it)
                if b is None:
                    return
                page, keys, p = b[0], b[1], 0
        odd = [s for s in active if not s[4]]
        if odd:
            s = odd[0]
            yield s[2][s[3] :], {s[5]: s[1]}
            s[3] = len(s[2])
        else:
            hs = min(active, key=lambda s: s[2][-1])
            horizon = hs[2][-1]
            window: List[int] = []
            pages: Dict[int, bytes] = {}
            for s in active:
                keys, p = s[2], s[3]
                k = len(keys) if s is hs else bisect.bisect_right(keys, horizon, p)
                if k > p:
                    window += keys[p:k] if (p or k < len(keys)) else keys
                    pages[s[5]] = s[1]
                s[3] = k
            window.sort()
            yield window, pages
        for s in list(active):
            if s[3] >= len(s[2]):
                b = pull(s[0])
                if b is None:
                    active.remove(s)
                else:
                    s[1], s[2], s[3], s[4] = b[0], b[1], 0, b[2]


def iter_records(windows: Iterable[Tuple[List[int], Dict[int, bytes]]], codec: KeyCodec) -> Iterator[Record]:
    """Flatten merged windows into :data:`Record` tuples (convenient, slower than using keys)."""
    ts_of, cpu_of, type_of, payload = codec.ts, codec.cpu, codec.type, codec.payload
    for keys, pages in windows:
        for k in keys:
            cpu = cpu_of(k)
            page = pages[cpu]
            off, ln = payload(page, k)
            yield (ts_of(k), cpu, type_of(k), page, off, ln)


# ---- the page ring --------------------------------------------------------------------------------

#: RB_PAGE_HEAD / RB_FLAG_MASK of ring_buffer.c (#defines, not in DWARF; the same 5.10 .. 7.x): the low
#: bits of the ``list.next`` link that points to the head page.
RB_PAGE_HEAD = 1
RB_FLAG_MASK = 3

#: What :func:`walk_ring` needs of a ``struct buffer_page``: ``(list.next as stored, read, page, order
#: [, list.prev])``.
BufferPage = Tuple[int, ...]
#: One sub-buffer to read: ``(buffer_page address, data page address, order, emit_from)``.
PageRef = Tuple[int, int, int, int]


def walk_ring(
    read_bpage: Callable[[int], BufferPage],
    *,
    cpu: int,
    reader_page: int,
    commit_page: int,
    pages: int,
    head_page: int,
    nr_pages: int,
    list_offset: int = 0,
    max_pages: int = 1 << 24,
) -> Tuple[List[PageRef], List[Damage]]:
    """The sub-buffers of one CPU in the kernel's reading order (``rb_iter_reset()``, ``rb_inc_iter()``):
    the reader page (outside the ring) from its ``read`` offset, then from the head page (the one the
    ring link flagged ``RB_PAGE_HEAD`` points to; ``cpu_buffer->head_page`` can lag) through the commit
    page.  Every walk is bounded by ``nr_pages`` and stops at a loop; ``read_bpage`` may raise for
    unreadable memory (reported as :class:`Damage`).

    :param read_bpage: ``struct buffer_page`` address -> :data:`BufferPage`.
    :param pages: ``cpu_buffer->pages`` (a ``list_head *`` into the ring).
    :param list_offset: ``offsetof(struct buffer_page, list)``.
    """
    dmg: List[Damage] = []
    out: List[PageRef] = []
    bound = min(max(nr_pages, 0) + 2, max_pages)

    cache: Dict[int, Optional[BufferPage]] = {}

    def bpage(addr: int) -> Optional[BufferPage]:
        if addr in cache:
            return cache[addr]
        try:
            r: Optional[BufferPage] = read_bpage(addr)
        except Exception as e:  # noqa: BLE001 - any unreadable or impossible page is damage, not a crash
            dmg.append(Damage(cpu, f"buffer_page {addr:#x}", f"unreadable ({e})"))
            r = None
        cache[addr] = r
        return r

    # 1. the reader page: its unread events are in [read, commit)
    if reader_page:
        r = bpage(reader_page)
        if r is not None:
            out.append((reader_page, r[2], r[3], r[1]))
            if reader_page == commit_page:
                return out, dmg
    # 2. the head page: usually cpu_buffer->head_page, if the link before it (list.prev's next) is the
    # flagged one; else search the ring for the flagged link
    head = 0
    if head_page:
        r = bpage(head_page)
        if r is not None and len(r) > 4 and r[4]:
            rp = bpage((r[4] & ~RB_FLAG_MASK) - list_offset)
            if rp is not None and rp[0] == (head_page + list_offset) | RB_PAGE_HEAD:
                head = head_page + list_offset
    pos = 0 if head else (pages or (head_page + list_offset if head_page else 0)) & ~RB_FLAG_MASK
    seen = set()
    for _ in range(bound):
        if not pos or pos in seen:
            break
        seen.add(pos)
        r = bpage(pos - list_offset)
        if r is None:
            break
        if r[0] & RB_FLAG_MASK == RB_PAGE_HEAD:
            head = r[0] & ~RB_FLAG_MASK
            break
        pos = r[0] & ~RB_FLAG_MASK
    if not head:
        if head_page:
            dmg.append(
                Damage(
                    cpu,
                    "page ring",
                    "no link is flagged as pointing to the head page; starting at cpu_buffer->head_page",
                )
            )
            head = head_page + list_offset
        else:
            dmg.append(Damage(cpu, "page ring", "no head page: only the reader page was read"))
            return out, dmg
    # 3. from the head page through the commit page
    pos = head
    seen = set()
    for _ in range(bound):
        bp = pos - list_offset
        if bp in seen:
            dmg.append(
                Damage(
                    cpu,
                    f"buffer_page {bp:#x}",
                    "the page ring loops without reaching the commit page; later events may be missing",
                )
            )
            return out, dmg
        seen.add(bp)
        r = bpage(bp)
        if r is None:
            dmg.append(
                Damage(
                    cpu,
                    "page ring",
                    "the walk to the commit page stopped at an unreadable page; later events may be missing",
                )
            )
            return out, dmg
        out.append((bp, r[2], r[3], 0))
        if bp == commit_page:
            return out, dmg
        pos = r[0] & ~RB_FLAG_MASK
        if not pos:
            dmg.append(
                Damage(cpu, f"buffer_page {bp:#x}", "NULL link in the page ring; later events may be missing")
            )
            return out, dmg
    dmg.append(
        Damage(
            cpu,
            "page ring",
            f"the commit page was not reached after {bound} pages "
            f"(nr_pages {nr_pages}); later events may be missing",
        )
    )
    return out, dmg
