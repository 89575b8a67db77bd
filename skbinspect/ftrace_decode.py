"""Pure byte-level decoding of the kernel's ftrace ring buffer (no drgn here).

Everything in this module works on ``bytes`` handed to it: sub-buffers ("pages") of a ring buffer, event
payloads, and the facts read elsewhere from the target's DWARF (:class:`RingBufferLayout`,
:class:`EventFormat`).  :mod:`skbinspect.ftrace` does the drgn side (finding the trace arrays, reading the
pages in the kernel's order, reading the event formats); this module can be unit-tested on bytes and
reused on a live target or on raw ``trace_pipe_raw`` pages.

Encoding (kernel/trace/ring_buffer.c, stable 5.10 .. 7.x; see the kernel reference section 7.3)::

    struct buffer_data_page { u64 time_stamp; local_t commit; unsigned char data[]; };
    struct ring_buffer_event { u32 type_len:5, time_delta:27; u32 array[]; };

``type_len`` 1..28: a data event of ``type_len * 4`` payload bytes at ``array[0]``; 0: a data event whose
length is ``array[0]`` (counting itself) with the payload at ``array[1]``; 29 (``RINGBUF_TYPE_PADDING``):
the rest of the page is unused when ``time_delta == 0``, else a discarded event of ``array[0] + 4`` bytes;
30 (``TIME_EXTEND``): add ``array[0] << 27 | time_delta`` to the running time; 31 (``TIME_STAMP``): an
absolute time (59 bits stored on 6.x, the top bits restored from the page's time stamp as
``rb_fix_abs_ts()`` does).

Decoding never raises on bad bytes: what cannot be decoded is skipped and reported as a :class:`Damage`.
"""

from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass, field
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
    "EventField",
    "EventFormat",
    "FieldDecoder",
    "decode_stack",
    "SavedCmdlines",
    "IrqFlagBits",
    "format_irq_flags",
    "format_timestamp",
    "ns2usecs",
    "PrintFmt",
    "PrintFmtError",
    "format_file_text",
]

# ---- ring buffer layout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RingBufferLayout:
    """Facts about one target's ring buffer encoding.

    The defaults are the x86-64 values of every kernel from 5.10 to 7.x; :mod:`skbinspect.ftrace` fills
    in what the target's DWARF tells (``enum ring_buffer_type``, ``struct buffer_data_page``).
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

#: TS_MSB of ring_buffer.c (6.x): the top 5 bits a TIME_STAMP event does not store.
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
    """Packs a decoded event into one int,
    ``key = ts << shift | cpu << cpu_shift | word << 16 | type``, where ``word`` is the index of the
    event's header word in its sub-buffer and ``type`` its ``trace_entry.type`` (the event id).

    Keys of one CPU grow with time and buffer position, and keys of different CPUs compare on
    ``(ts, cpu)``: sorting keys orders events exactly as the kernel's trace iterator merges CPUs (the
    smallest time stamp first, ties to the lower CPU, each CPU's own order kept).  One int per event keeps
    the hot path (decoding) and the merge (a C sort of ints) fast, and filtering by event type needs no
    access to the page.
    """

    __slots__ = ("pos_bits", "cpu_bits", "shift", "pos_mask", "cpu_mask", "cpu_shift")

    TYPE_MASK = 0xFFFF
    POS_SHIFT = 16

    def __init__(self, subbuf_size: int = 4096, cpu_bits: int = 13) -> None:
        self.pos_bits = max(1, (max(subbuf_size, 4) // 4).bit_length())
        self.cpu_bits = cpu_bits
        self.cpu_shift = 16 + self.pos_bits
        self.shift = self.cpu_shift + cpu_bits
        self.pos_mask = (1 << self.pos_bits) - 1
        self.cpu_mask = (1 << cpu_bits) - 1

    def ts(self, key: int) -> int:
        return key >> self.shift

    def cpu(self, key: int) -> int:
        return (key >> self.cpu_shift) & self.cpu_mask

    def word(self, key: int) -> int:
        return (key >> 16) & self.pos_mask

    @staticmethod
    def type(key: int) -> int:
        return key & 0xFFFF

    def unpack(self, key: int) -> Tuple[int, int, int]:
        """``(ts, cpu, word)``."""
        return key >> self.shift, (key >> self.cpu_shift) & self.cpu_mask, (key >> 16) & self.pos_mask


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


def payload_span(page: bytes, word: int) -> Tuple[int, int]:
    """``(offset, length)`` of the payload of the data event whose header is at u32 index ``word``."""
    (h,) = struct.unpack_from("<I", page, word * 4)
    tl = h & 31
    if tl:
        return (word + 1) * 4, tl * 4
    (ln,) = struct.unpack_from("<I", page, word * 4 + 4)
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
        raw_commit = int.from_bytes(page[layout.commit_offset: layout.commit_offset + layout.commit_size], "little")
    flags = raw_commit & layout.missed_mask
    size = (raw_commit & ~layout.missed_mask & 0xFFFFFFFF) if commit is None else commit
    cap = len(page) - hs
    if size > cap:
        if damage is not None:
            damage.append(Damage(cpu, where, f"commit {size} is beyond the sub-buffer's {cap} data bytes; "
                                             "decoding the bytes present"))
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
    kshift = codec.shift
    cbase = cpu << codec.cpu_shift
    page_ts = ts
    add = keys.append
    n0 = len(keys)
    bad = None
    monotonic = True
    # The running key carries the time stamp (ts << kshift) and the CPU; an event's key adds its word.
    key = (ts << kshift) | cbase
    try:
        # The hot loop: one u32 read, a shift and an add, and one append per data event.
        while i < end:
            h = words[i]
            tl = h & 31
            if 0 < tl <= tl_max:
                key += (h >> 5) << kshift
                add(key | (i << 16 | words[i + 1] & 0xFFFF))
                i += 1 + tl
            elif tl == 0:
                ln = words[i + 1]
                if ln < 8 or ln & 3:
                    bad = f"impossible event length {ln}"
                    break
                key += (h >> 5) << kshift
                add(key | (i << 16 | words[i + 2] & 0xFFFF))
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
            last = (keys[-1] >> 16) & codec.pos_mask
            off, ln = payload_span(page, last)
            if off + ln > hs + size:
                keys.pop()
        bad = f"the last event runs past the commit ({size})"
    if bad is not None and damage is not None:
        damage.append(Damage(cpu, where, bad + "; rest of the sub-buffer skipped", (min(i, end) - base) * 4))
    if emit_from > 0 and len(keys) > n0:
        # drop the events a trace_pipe reader consumed (header words below base + emit_from / 4)
        first = base + emit_from // 4
        j = n0
        while j < len(keys) and (keys[j] >> 16) & codec.pos_mask < first:
            j += 1
        del keys[n0:j]
    return flags, monotonic


#: A decoded sub-buffer in a per-CPU stream: ``(page, keys, monotonic)``.
Batch = Tuple[bytes, List[int], bool]


def merge_windows(streams: Sequence[Iterator[Batch]], codec: KeyCodec
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
            yield s[2][s[3]:], {s[5]: s[1]}
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
    shift, cshift, pmask, cmask = codec.shift, codec.cpu_shift, codec.pos_mask, codec.cpu_mask
    unpack = struct.unpack_from
    for keys, pages in windows:
        for k in keys:
            cpu = (k >> cshift) & cmask
            page = pages[cpu]
            w = (k >> 16) & pmask
            (h,) = unpack("<I", page, w * 4)
            tl = h & 31
            if tl:
                off, ln = (w + 1) * 4, tl * 4
            else:
                off = (w + 2) * 4
                ln = unpack("<I", page, w * 4 + 4)[0] - 4
            yield (k >> shift, cpu, k & 0xFFFF, page, off, ln)


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
            dmg.append(Damage(cpu, "page ring", "no link is flagged as pointing to the head page; "
                                                "starting at cpu_buffer->head_page"))
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
            dmg.append(Damage(cpu, f"buffer_page {bp:#x}", "the page ring loops without reaching the commit page; "
                                                           "later events may be missing"))
            return out, dmg
        seen.add(bp)
        r = bpage(bp)
        if r is None:
            dmg.append(Damage(cpu, "page ring", "the walk to the commit page stopped at an unreadable page; "
                                                "later events may be missing"))
            return out, dmg
        out.append((bp, r[2], r[3], 0))
        if bp == commit_page:
            return out, dmg
        pos = r[0] & ~RB_FLAG_MASK
        if not pos:
            dmg.append(Damage(cpu, f"buffer_page {bp:#x}", "NULL link in the page ring; later events may be missing"))
            return out, dmg
    dmg.append(Damage(cpu, "page ring", f"the commit page was not reached after {bound} pages "
                                        f"(nr_pages {nr_pages}); later events may be missing"))
    return out, dmg


# ---- event formats -----------------------------------------------------------------------------------


@dataclass
class EventField:
    """One field of an event (``struct ftrace_event_field``)."""

    name: str
    type: str
    offset: int
    size: int
    is_signed: bool
    len: int = 0  # array length (6.1+; 0 when not an array or unknown)
    filter_type: int = 0

    @property
    def is_dynamic(self) -> bool:
        return self.type.startswith("__data_loc") or self.type.startswith("__rel_loc")

    @property
    def array_len(self) -> Optional[int]:
        m = re.search(r"\[(\d*)\]\s*$", self.type)
        if not m or self.is_dynamic:
            return None
        return int(m.group(1)) if m.group(1) else (self.len or None)

    @property
    def is_string(self) -> bool:
        t = self.type.replace("__data_loc", "").replace("__rel_loc", "").strip()
        return bool(re.match(r"^(const\s+)?(unsigned\s+)?char\s*\[", t)) or (self.is_dynamic and "char" in t)

    @property
    def is_pointer(self) -> bool:
        return "*" in self.type and not self.is_dynamic and "[" not in self.type


@dataclass
class EventFormat:
    """An event type of the target (``struct trace_event_call``): id, system, name, fields, print_fmt."""

    id: int
    system: str
    name: str
    fields: List[EventField]
    common_fields: List[EventField] = field(default_factory=list)
    print_fmt: Optional[str] = None
    _decoder: Any = field(default=None, repr=False, compare=False)
    _printer: Any = field(default=None, repr=False, compare=False)
    constant: Optional[Callable[[str], Optional[int]]] = field(default=None, repr=False, compare=False)

    @property
    def full_name(self) -> str:
        return f"{self.system}:{self.name}"

    def field(self, name: str) -> Optional[EventField]:
        for f in self.fields:
            if f.name == name:
                return f
        for f in self.common_fields:
            if f.name == name:
                return f
        return None

    @property
    def decoder(self) -> "FieldDecoder":
        if self._decoder is None:
            self._decoder = FieldDecoder(self.fields)
        return self._decoder

    def printer(self) -> Optional["PrintFmt"]:
        """The compiled ``print_fmt`` (None if it has none or uses something :class:`PrintFmt` cannot do)."""
        if self._printer is None:
            try:
                self._printer = PrintFmt(self.print_fmt, self.fields, self.constant) if self.print_fmt else False
            except PrintFmtError:
                self._printer = False
        return self._printer or None


def format_file_text(fmt: EventFormat) -> str:
    """The text of the event's tracefs ``format`` file (``f_show()`` in trace_events.c)."""
    lines = [f"name: {fmt.name}", f"ID: {fmt.id}", "format:"]

    def one(f: EventField) -> str:
        arr = f.type.find("[")
        if f.type.startswith("__data_loc") or arr < 0:
            decl = f"{f.type} {f.name}"
        elif f.len:
            decl = f"{f.type[:arr]} {f.name}[{f.len}]"
        else:
            decl = f"{f.type[:arr]} {f.name}{f.type[arr:]}"
        return f"\tfield:{decl};\toffset:{f.offset};\tsize:{f.size};\tsigned:{int(bool(f.is_signed))};"

    lines += [one(f) for f in fmt.common_fields]
    lines.append("")
    lines += [one(f) for f in fmt.fields]
    lines.append("")
    lines.append(f"print fmt: {fmt.print_fmt}")
    return "\n".join(lines) + "\n"


_INT_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SINT_FMT = {1: "b", 2: "h", 4: "i", 8: "q"}


class FieldDecoder:
    """Decodes an event payload into ``{field: value}``: integers (pointers as ints), strings for char
    arrays and ``__data_loc char[]``, lists of ints for other arrays, bytes for the rest.  Fixed scalar
    fields are unpacked with one precompiled ``struct`` call."""

    def __init__(self, fields: Sequence[EventField]) -> None:
        self.fields = list(fields)
        scalars = []
        self.others: List[EventField] = []
        for f in self.fields:
            if f.array_len is None and not f.is_dynamic and f.size in _INT_FMT and f.offset >= 0:
                scalars.append(f)
            else:
                self.others.append(f)
        scalars.sort(key=lambda f: f.offset)
        fmt = "<"
        pos = 0
        names = []
        for f in scalars:
            if f.offset < pos:  # overlapping (a union): decode it on its own
                self.others.append(f)
                continue
            fmt += "x" * (f.offset - pos) + (_SINT_FMT if f.is_signed else _INT_FMT)[f.size]
            pos = f.offset + f.size
            names.append(f.name)
        self.scalar_names = tuple(names)
        self.scalar_struct = struct.Struct(fmt)
        self.min_len = pos

    def decode(self, page: bytes, off: int, length: int) -> Dict[str, Any]:
        """Fields of the payload at ``page[off:off+length]``; fields beyond ``length`` are left out."""
        if length >= self.min_len and not self.others:
            return dict(zip(self.scalar_names, self.scalar_struct.unpack_from(page, off)))
        out: Dict[str, Any] = {}
        if length >= self.min_len:
            out.update(zip(self.scalar_names, self.scalar_struct.unpack_from(page, off)))
        else:
            for f in self.fields:
                if f.name in self.scalar_names and f.offset + f.size <= length:
                    out[f.name] = decode_value(page, off, length, f)
        for f in self.others:
            v = decode_value(page, off, length, f)
            if v is not None:
                out[f.name] = v
        return out


def decode_value(page: bytes, off: int, length: int, f: EventField) -> Any:
    """One field's value, or None if it lies outside the payload."""
    if f.offset < 0 or f.offset + f.size > length:
        return None
    start = off + f.offset
    if f.is_dynamic:
        if f.size != 4:
            return None
        (v,) = struct.unpack_from("<I", page, start)
        doff, dlen = v & 0xFFFF, v >> 16
        if f.type.startswith("__rel_loc"):
            doff += f.offset + f.size
        if doff + dlen > length:
            return None
        data = bytes(page[off + doff : off + doff + dlen])
        if "char" in f.type:
            return data.split(b"\0", 1)[0].decode("utf-8", "replace")
        return data
    n = f.array_len
    if n is not None:
        data = bytes(page[start : start + f.size])
        if f.is_string:
            return data.split(b"\0", 1)[0].decode("utf-8", "replace")
        if n and f.size % n == 0 and f.size // n in _INT_FMT:
            es = f.size // n
            return list(struct.unpack_from("<%d%s" % (n, (_SINT_FMT if f.is_signed else _INT_FMT)[es]), data))
        return data
    if f.size in _INT_FMT:
        return struct.unpack_from("<" + (_SINT_FMT if f.is_signed else _INT_FMT)[f.size], page, start)[0]
    return bytes(page[start : start + f.size])


ULONG_MAX = (1 << 64) - 1


def decode_stack(page: bytes, off: int, length: int, caller_offset: int = 16) -> List[int]:
    """The return addresses of a ``struct stack_entry`` payload, as ``trace_stack_print()`` walks them:
    up to the end of the event or the first ``ULONG_MAX``."""
    n = (length - caller_offset) // 8
    if n <= 0:
        return []
    vals = struct.unpack_from("<%dQ" % n, page, off + caller_offset)
    out = []
    for v in vals:
        if v == ULONG_MAX:
            break
        out.append(v)
    return out


# ---- saved command lines ----------------------------------------------------------------------------


class SavedCmdlines:
    """The kernel's saved comms (``struct saved_cmdlines_buffer``), bulk-read, with the lookup of
    ``__trace_find_cmdline()``.

    :param pid_to_cmdline: ``map_pid_to_cmdline`` as u32 values (``PID_MAX_DEFAULT + 1`` of them).
    :param cmdline_to_pid: ``map_cmdline_to_pid`` (``cmdline_num`` u32 values).
    :param names: ``saved_cmdlines`` (``cmdline_num * comm_len`` bytes).
    """

    NO_CMDLINE_MAP = 0xFFFFFFFF

    def __init__(self, pid_to_cmdline: Sequence[int], cmdline_to_pid: Sequence[int], names: bytes,
                 comm_len: int = 16) -> None:
        self.pid_to_cmdline = pid_to_cmdline
        self.cmdline_to_pid = cmdline_to_pid
        self.names = names
        self.comm_len = comm_len
        # PID_MAX_DEFAULT: the map has PID_MAX_DEFAULT + 1 entries; pids are masked with it - 1.
        self.pid_mask = max(1, len(pid_to_cmdline) - 1) - 1
        self._cache: Dict[int, str] = {}

    @classmethod
    def empty(cls) -> "SavedCmdlines":
        return cls([], [], b"")

    def find(self, pid: int) -> str:
        c = self._cache.get(pid)
        if c is not None:
            return c
        c = self._find(pid)
        self._cache[pid] = c
        return c

    def _find(self, pid: int) -> str:
        if pid == 0:
            return "<idle>"
        if pid < 0:
            return "<XXX>"
        if not self.pid_to_cmdline:
            return "<...>"
        tpid = pid & self.pid_mask
        if tpid >= len(self.pid_to_cmdline):
            return "<...>"
        idx = self.pid_to_cmdline[tpid]
        if idx != self.NO_CMDLINE_MAP and idx < len(self.cmdline_to_pid) and self.cmdline_to_pid[idx] == pid:
            raw = self.names[idx * self.comm_len : (idx + 1) * self.comm_len]
            return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        return "<...>"


# ---- the trace file's line format -------------------------------------------------------------------


@dataclass(frozen=True)
class IrqFlagBits:
    """``enum trace_flag_type`` of the target (read from DWARF; 0 = this kernel has no such flag)."""

    irqs_off: int = 0x01
    irqs_nosupport: int = 0x02
    need_resched: int = 0x04
    hardirq: int = 0x08
    softirq: int = 0x10
    preempt_resched: int = 0x20
    nmi: int = 0x40
    bh_off: int = 0  # 5.17+ (0x80)
    need_resched_lazy: int = 0  # 6.13+ (0x02, replacing IRQS_NOSUPPORT)
    migrate_column: bool = True  # 5.14+: a fifth column for the migrate-disable depth


def format_irq_flags(flags: int, preempt_count: int, bits: IrqFlagBits) -> str:
    """The ``irqs-off / need-resched / hardirq-softirq / preempt-depth [/ migrate-disable]`` columns
    (``trace_print_lat_fmt()``)."""
    irqs_off = bool(flags & bits.irqs_off)
    bh_off = bool(bits.bh_off and flags & bits.bh_off)
    if irqs_off and bh_off:
        c1 = "D"
    elif irqs_off:
        c1 = "d"
    elif bh_off:
        c1 = "b"
    elif bits.irqs_nosupport and flags & bits.irqs_nosupport:
        c1 = "X"
    else:
        c1 = "."
    nr = bool(flags & bits.need_resched)
    pr = bool(flags & bits.preempt_resched)
    lz = bool(bits.need_resched_lazy and flags & bits.need_resched_lazy)
    if nr and lz and pr:
        c2 = "B"
    elif nr and pr:
        c2 = "N"
    elif lz and pr:
        c2 = "L"
    elif nr and lz:
        c2 = "b"
    elif nr:
        c2 = "n"
    elif pr:
        c2 = "p"
    elif lz:
        c2 = "l"
    else:
        c2 = "."
    nmi = bool(flags & bits.nmi)
    hard = bool(flags & bits.hardirq)
    soft = bool(flags & bits.softirq)
    c3 = "Z" if nmi and hard else "z" if nmi else "H" if hard and soft else "h" if hard else "s" if soft else "."
    if bits.migrate_column:
        c4 = "%x" % (preempt_count & 0xF) if preempt_count & 0xF else "."
        c5 = "%x" % (preempt_count >> 4) if preempt_count & 0xF0 else "."
        return c1 + c2 + c3 + c4 + c5
    c4 = "%x" % preempt_count if preempt_count else "."
    return c1 + c2 + c3 + c4


def ns2usecs(ns: int) -> int:
    """``ns2usecs()``: nanoseconds to microseconds, rounded to nearest."""
    return (ns + 500) // 1000


def format_timestamp(ts: int, in_ns: bool = True) -> str:
    """The time column of the trace file (``trace_print_time()``): ``%5lu.%06lu`` seconds for
    nanosecond clocks, ``%12llu`` raw counts otherwise."""
    if in_ns:
        us = ns2usecs(ts)
        return "%5d.%06d" % (us // 1000000, us % 1000000)
    return "%12d" % ts


# ---- print_fmt ----------------------------------------------------------------------------------------


class PrintFmtError(Exception):
    """The print_fmt uses something :class:`PrintFmt` does not implement (the caller falls back)."""


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<num>0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*)
      | (?P<char>'(?:[^'\\]|\\.)')
      | (?P<id>[A-Za-z_][A-Za-z_0-9]*)
      | (?P<op>->|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^~!<>?:(),{}\[\].])
    )""",
    re.VERBOSE,
)

_C_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "r": "\r", "0": "\0", "a": "\a"}


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: _C_ESCAPES.get(m.group(1), m.group(1)), s)


def _tokenize(text: str) -> List[Tuple[str, str]]:
    toks = []
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise PrintFmtError(f"cannot tokenize print_fmt at {text[pos:pos + 20]!r}")
        kind = m.lastgroup
        toks.append((kind, m.group(kind)))  # type: ignore[arg-type]
        pos = m.end()
    return toks


_TYPE_WORDS = {"unsigned", "signed", "int", "long", "short", "char", "u8", "u16", "u32", "u64", "s8", "s16",
               "s32", "s64", "void", "const", "struct", "bool", "size_t", "ssize_t", "__u8", "__u16", "__u32",
               "__u64", "__s8", "__s16", "__s32", "__s64", "uintptr_t", "__le16", "__le32", "__be16", "__be32"}


class _Parser:
    """Recursive-descent parser for the C expressions of a print_fmt's arguments (a safe subset: fields,
    numbers, strings, casts, arithmetic, comparisons, ternaries and the trace helper macros).  Produces
    closures ``f(rec) -> value``; nothing from the target is ever evaluated as code."""

    def __init__(self, toks: List[Tuple[str, str]], fields: Dict[str, EventField],
                 constant: Optional[Callable[[str], Optional[int]]] = None) -> None:
        self.toks = toks
        self.i = 0
        self.fields = fields
        self.constant = constant

    def peek(self, k: int = 0) -> Tuple[str, str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def take(self, val: Optional[str] = None) -> Tuple[str, str]:
        t = self.peek()
        if val is not None and t[1] != val:
            raise PrintFmtError(f"expected {val!r}, got {t[1]!r}")
        self.i += 1
        return t

    def expr(self) -> Callable:
        cond = self.binary(0)
        if self.peek()[1] == "?":
            self.take("?")
            a = self.expr()
            self.take(":")
            b = self.expr()
            return lambda r, c=cond, a=a, b=b: a(r) if c(r) else b(r)
        return cond

    _PREC = [["||"], ["&&"], ["|"], ["^"], ["&"], ["==", "!="], ["<", ">", "<=", ">="], ["<<", ">>"],
             ["+", "-"], ["*", "/", "%"]]

    def binary(self, level: int) -> Callable:
        if level >= len(self._PREC):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in self._PREC[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = _binop(op, left, right)
        return left

    def unary(self) -> Callable:
        kind, val = self.peek()
        if kind == "op" and val in ("-", "!", "~", "+"):
            self.take()
            inner = self.unary()
            if val == "-":
                return lambda r, f=inner: -f(r)
            if val == "!":
                return lambda r, f=inner: int(not f(r))
            if val == "~":
                return lambda r, f=inner: ~f(r)
            return inner
        if kind == "op" and val == "(":
            # a cast?
            j = 1
            words = []
            while self.peek(j)[0] == "id" or self.peek(j)[1] == "*":
                words.append(self.peek(j)[1])
                j += 1
            if words and self.peek(j)[1] == ")" and (words[0] in _TYPE_WORDS or words[-1] == "*"
                                                     or words[-1].endswith("_t")):
                self.i += j + 1
                inner = self.unary()
                return _cast(words, inner)
            self.take("(")
            e = self.expr()
            self.take(")")
            return e
        return self.postfix()

    def postfix(self) -> Callable:
        kind, val = self.take()
        if kind == "num":
            digits = val.rstrip("uUlL")
            if digits.lower().startswith("0x"):
                v = int(digits, 16)
            elif len(digits) > 1 and digits.startswith("0"):
                v = int(digits, 8)
            else:
                v = int(digits)
            return lambda r, v=v: v
        if kind == "str":
            s = _unescape(val[1:-1])
            while self.peek()[0] == "str":  # adjacent literals
                s += _unescape(self.take()[1][1:-1])
            return lambda r, s=s: s
        if kind == "char":
            c = ord(_unescape(val[1:-1])[0])
            return lambda r, c=c: c
        if kind == "id":
            if val == "REC":
                self.take("->")
                name = self.take()[1]
                if name not in self.fields:
                    raise PrintFmtError(f"unknown field {name}")
                f = self.fields[name]
                return lambda r, n=name: r.field(n)
            if self.peek()[1] == "(":
                return self.call(val)
            if self.constant is not None:
                c = self.constant(val)
                if c is not None:
                    return lambda r, c=c: c
            raise PrintFmtError(f"unknown identifier {val}")
        raise PrintFmtError(f"unexpected {val!r}")

    def args(self) -> List[Any]:
        self.take("(")
        out: List[Any] = []
        if self.peek()[1] == ")":
            self.take(")")
            return out
        while True:
            if self.peek()[1] == "{":
                out.append(self.brace_list())
            else:
                out.append(self.expr())
            if self.peek()[1] == ",":
                self.take(",")
                continue
            self.take(")")
            return out

    def brace_list(self) -> List[Any]:
        self.take("{")
        items = []
        while self.peek()[1] != "}":
            items.append(self.expr())
            if self.peek()[1] == ",":
                self.take(",")
        self.take("}")
        return items

    def call(self, name: str) -> Callable:
        args = self.args()
        if name in ("__get_str", "__get_rel_str"):
            if len(args) != 1:
                raise PrintFmtError(name)
            fname = self._field_name(args[0])
            return lambda r, n=fname: r.field(n) or ""
        if name in ("__get_dynamic_array", "__get_rel_dynamic_array"):
            fname = self._field_name(args[0])
            return lambda r, n=fname: r.field(n)
        if name in ("__get_dynamic_array_len", "__get_rel_dynamic_array_len"):
            fname = self._field_name(args[0])
            return lambda r, n=fname: len(r.field(n) or b"")
        if name == "__print_symbolic" or name == "__print_symbolic_u64":
            val = args[0]
            table = [(p[0](None), p[1](None)) for p in args[1:]]
            mapping = dict(reversed(table))  # the first match wins

            def sym(r: Any, val: Callable = val, mapping: Dict[int, str] = mapping) -> str:
                v = val(r)
                s = mapping.get(v)
                return s if s is not None else "0x%x" % v

            return sym
        if name == "__print_flags" or name == "__print_flags_u64":
            val, delim = args[0], args[1](None)
            table = [(p[0](None), p[1](None)) for p in args[2:]]

            def flg(r: Any, val: Callable = val, delim: str = delim, table: List = table) -> str:
                v = val(r)
                parts = []
                for mask, s in table:
                    if not v:
                        break
                    if (v & mask) == mask:
                        parts.append(s)
                        v &= ~mask
                if v:
                    parts.append("0x%x" % v)
                return delim.join(parts)

            return flg
        if name in ("__print_hex", "__print_hex_str"):
            buf, ln = args[0], args[1]
            sep = " " if name == "__print_hex" else ""

            def hx(r: Any, buf: Callable = buf, ln: Callable = ln, sep: str = sep) -> str:
                b = buf(r) or b""
                if isinstance(b, list):
                    b = bytes(x & 0xFF for x in b)
                return sep.join("%02x" % x for x in bytes(b)[: ln(r)])

            return hx
        if name == "__print_array":
            arr, cnt, esz = args

            def pa(r: Any, arr: Callable = arr, cnt: Callable = cnt, esz: Callable = esz) -> str:
                a = arr(r)
                n = cnt(r)
                s = esz(r)
                if isinstance(a, (bytes, bytearray)):
                    fmt = _INT_FMT.get(s)
                    if not fmt:
                        return "{}"
                    a = struct.unpack_from("<%d%s" % (min(n, len(a) // s), fmt), a)
                return "{" + ",".join("0x%x" % x for x in list(a)[:n]) + "}"

            return pa
        if name in ("is_signed_type",):
            return lambda r: 0
        raise PrintFmtError(f"unsupported helper {name}()")

    @staticmethod
    def _field_name(arg: Callable) -> str:
        """The field named by ``__get_str(name)`` (its argument was turned into a string literal)."""
        try:
            v = arg(None)
        except Exception:  # noqa: BLE001 - not a literal
            v = None
        if not isinstance(v, str):
            raise PrintFmtError("a field name was expected")
        return v


def _binop(op: str, a: Callable, b: Callable) -> Callable:
    ops: Dict[str, Callable[[Any, Any], Any]] = {
        "+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y,
        "/": lambda x, y: int(x / y) if y else 0, "%": lambda x, y: x % y if y else 0,
        "<<": lambda x, y: x << y, ">>": lambda x, y: x >> y, "&": lambda x, y: x & y,
        "|": lambda x, y: x | y, "^": lambda x, y: x ^ y, "==": lambda x, y: int(x == y),
        "!=": lambda x, y: int(x != y), "<": lambda x, y: int(x < y), ">": lambda x, y: int(x > y),
        "<=": lambda x, y: int(x <= y), ">=": lambda x, y: int(x >= y),
        "&&": lambda x, y: int(bool(x) and bool(y)), "||": lambda x, y: int(bool(x) or bool(y)),
    }
    fn = ops[op]
    return lambda r, fn=fn, a=a, b=b: fn(a(r), b(r))


_CAST_BITS = {"char": 8, "short": 16, "int": 32, "long": 64, "u8": 8, "u16": 16, "u32": 32, "u64": 64, "s8": 8,
              "s16": 16, "s32": 32, "s64": 64, "__u8": 8, "__u16": 16, "__u32": 32, "__u64": 64, "bool": 0}


def _cast(words: List[str], inner: Callable) -> Callable:
    if words[-1] == "*":
        return inner
    signed = "unsigned" not in words and not any(w.startswith(("u", "__u")) for w in words)
    bits = 32
    for w in words:
        if w in _CAST_BITS:
            bits = _CAST_BITS[w]
    if words.count("long") == 2:
        bits = 64
    if bits == 0:
        return lambda r, f=inner: int(bool(f(r)))
    mask = (1 << bits) - 1

    def c(r: Any, f: Callable = inner) -> Any:
        v = f(r)
        if not isinstance(v, int):
            return v
        v &= mask
        if signed and v >> (bits - 1):
            v -= 1 << bits
        return v

    return c


_CONV_RE = re.compile(r"%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d+))?(hh|h|ll|l|z|L|j|t)?([diouxXcsp%])")


class _FmtRecord:
    """What a compiled print_fmt reads: the event's decoded fields."""

    __slots__ = ("values",)

    def __init__(self, values: Dict[str, Any]) -> None:
        self.values = values

    def field(self, name: str) -> Any:
        return self.values.get(name)


class PrintFmt:
    """A compiled ``print_fmt``: ``render(fields, symbolize)`` gives the text after ``name: `` in the trace
    file.  Raises :class:`PrintFmtError` at compile time for constructs it does not implement.

    ``%p`` prints the raw address in 16 hex digits (what the kernel prints with ``no_hash_pointers``);
    ``%pS``/``%pB``/``%ps`` go through ``symbolize(address, with_offset)``.  Identifiers that are not
    fields (enum constants such as ``TCP_ESTABLISHED``) are resolved with ``constant(name)``.
    """

    def __init__(self, print_fmt: str, fields: Sequence[EventField],
                 constant: Optional[Callable[[str], Optional[int]]] = None) -> None:
        toks = _tokenize(print_fmt)
        if not toks or toks[0][0] != "str":
            raise PrintFmtError("print_fmt does not start with a string")
        fmt = ""
        i = 0
        while i < len(toks) and toks[i][0] == "str":
            fmt += _unescape(toks[i][1][1:-1])
            i += 1
        self.fmt = fmt
        fmap = {f.name: f for f in fields}
        # Replace __get_str(name) style arguments: their argument is a bare field name.
        fixed = []
        j = i
        while j < len(toks):
            k, v = toks[j]
            if k == "id" and v.startswith("__get_") and j + 3 < len(toks) and toks[j + 1][1] == "(" and \
                    toks[j + 2][0] == "id" and toks[j + 3][1] == ")":
                fixed += [("id", v), ("op", "("), ("str", '"%s"' % toks[j + 2][1]), ("op", ")")]
                j += 4
                continue
            fixed.append((k, v))
            j += 1
        p = _Parser(fixed, fmap, constant)
        self.args: List[Callable] = []
        while p.peek()[0] != "eof":
            p.take(",")
            self.args.append(p.expr())
        self.pieces: List[Tuple[str, Optional[Tuple[str, ...]]]] = []
        pos = 0
        nargs = 0
        for m in _CONV_RE.finditer(fmt):
            lit = fmt[pos : m.start()]
            conv = m.group(5)
            if conv == "%":
                self.pieces.append((lit + "%", None))
                pos = m.end()
                continue
            if m.group(2) == "*" or m.group(3) == "*":
                raise PrintFmtError("'*' widths are not supported")
            ext = ""
            end = m.end()
            if conv == "p":
                e = re.match(r"[A-Za-z]\w*", fmt[end:])
                if e:
                    ext = e.group(0)
                    end += len(ext)
                if ext and ext[0] not in "SsBfFxK" and not ext.startswith(("I4", "i4", "I6", "i6", "M", "m")):
                    raise PrintFmtError(f"%p{ext} is not supported")
            self.pieces.append((lit, (m.group(1) or "", m.group(2) or "", m.group(3) or "", conv, ext,
                                      m.group(4) or "")))
            nargs += 1
            pos = end
        self.tail = fmt[pos:]
        if nargs != len(self.args):
            raise PrintFmtError(f"{nargs} conversions for {len(self.args)} arguments")

    def _compiled(self) -> List[Tuple[str, Callable, Optional[Callable], Tuple[str, ...]]]:
        """``(literal, argument, fast formatter or None, spec)`` per conversion: the common conversions of a
        plain field (``%p``, ``%u``, ``%d``, ``%x``, ``%s``) get a specialised formatter."""
        out = []
        ai = 0
        for lit, spec in self.pieces:
            if spec is None:
                out.append((lit, None, None, ()))  # type: ignore[arg-type]
                continue
            flags, width, prec, conv, ext, length = spec
            fast: Optional[Callable] = None
            if not flags and not width and not prec:
                if conv == "p" and not ext:
                    fast = _fmt_p
                elif conv in "ud" and length in ("", "h", "hh", "l", "ll", "z"):
                    bits = _LEN_BITS[length]
                    fast = _fmt_int(bits, conv == "d")
                elif conv == "s":
                    fast = _fmt_s
            out.append((lit, self.args[ai], fast, spec))
            ai += 1
        return out

    def render(self, values: Dict[str, Any], symbolize: Optional[Callable[[int, bool], str]] = None) -> str:
        rec = _FmtRecord(values)
        comp = self.__dict__.get("_comp")
        if comp is None:
            comp = self._comp = self._compiled()
        out = []
        for lit, arg, fast, spec in comp:
            out.append(lit)
            if arg is None:
                continue
            v = arg(rec)
            if fast is not None:
                try:
                    out.append(fast(v))
                    continue
                except (TypeError, ValueError):
                    pass
            out.append(_format_one(spec, v, symbolize))
        out.append(self.tail)
        return "".join(out)


def _fmt_p(v: Any) -> str:
    return "%016x" % (v & _U64)


def _fmt_int(bits: int, signed: bool) -> Callable[[Any], str]:
    mask = (1 << bits) - 1
    top = 1 << (bits - 1)

    def f(v: Any) -> str:
        v &= mask
        if signed and v & top:
            v -= 1 << bits
        return "%d" % v

    return f


def _fmt_s(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise TypeError


def _format_addr(ext: str, b: bytes) -> str:
    """``%pI4``, ``%pI6``/``%pI6c`` and ``%pM``/``%pm`` of lib/vsprintf.c."""
    import ipaddress

    if ext[1:2] == "4" and len(b) >= 4:
        return ".".join(str(x) for x in b[:4])
    if ext[1:2] == "6" and len(b) >= 16:
        if ext[2:3] == "c":
            return ipaddress.IPv6Address(b[:16]).compressed
        return ":".join("%04x" % int.from_bytes(b[i : i + 2], "big") for i in range(0, 16, 2))
    if ext[:1] in ("M", "m") and len(b) >= 6:
        return (":" if ext[:1] == "M" else "").join("%02x" % x for x in b[:6])
    return b.hex()


_LEN_BITS = {"hh": 8, "h": 16, "": 32, "l": 64, "ll": 64, "z": 64, "j": 64, "t": 64, "L": 64}


def _format_one(spec: Tuple[str, ...], v: Any, symbolize: Optional[Callable[[int, bool], str]]) -> str:
    """One conversion as the kernel's vsnprintf() prints it."""
    flags, width, prec, conv, ext, length = spec
    if conv == "p" and ext[:1] in ("I", "i", "M", "m") and isinstance(v, (bytes, bytearray, list, tuple)):
        return _format_addr(ext, bytes(x & 0xFF for x in v) if isinstance(v, (list, tuple)) else bytes(v))
    if conv == "p":
        if v is None:
            v = 0
        if isinstance(v, (bytes, bytearray)):
            v = int.from_bytes(bytes(v)[:8].ljust(8, b"\0"), "little")
        v &= _U64
        if ext and ext[0] in "SsBfF" and symbolize is not None:
            s = symbolize(v, ext[0] in "SBF")
        else:
            s = "%016x" % v  # %p with no_hash_pointers (the decoder cannot hash like the kernel)
        return ("%" + flags.replace("0", "") + width + "s") % s if width else s
    if conv == "s":
        if v is None:
            v = "(null)"
        elif isinstance(v, (bytes, bytearray)):
            v = bytes(v).split(b"\0", 1)[0].decode("utf-8", "replace")
        elif not isinstance(v, str):
            v = str(v)
        return ("%" + flags.replace("0", "") + width + ("." + prec if prec else "") + "s") % v
    if conv == "c":
        return chr(v & 0xFF) if isinstance(v, int) else str(v)[:1]
    if not isinstance(v, int):
        try:
            v = int(v)
        except (TypeError, ValueError):
            return str(v)
    bits = _LEN_BITS.get(length, 32)
    v &= (1 << bits) - 1
    if conv in "di" and v >> (bits - 1):
        v -= 1 << bits
    pyconv = "d" if conv in "iu" else conv
    pyflags = flags if conv in "xXo" else flags.replace("#", "")
    return ("%" + pyflags + width + ("." + prec if prec else "") + pyconv) % v
