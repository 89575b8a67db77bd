"""The kernel's ftrace ring buffers, read from memory with drgn (decoding lives in :mod:`.ftrace_decode`).

What is read, and from where (kernel reference sections 6 and 7):

* trace arrays: ``LIST_HEAD(ftrace_trace_arrays)`` of ``struct trace_array`` (the top level, whose
  ``name`` is NULL, and every instance); each one's ``array_buffer.buffer`` (``struct trace_buffer``) and
  its per-CPU ``struct ring_buffer_per_cpu``;
* per CPU, the sub-buffers in the kernel's reading order: the reader page (outside the ring) from its
  ``read`` offset, then from the head page (the one the ring link flagged ``RB_PAGE_HEAD`` points to,
  ``cpu_buffer->head_page`` can lag) to the commit page, stopping at its ``commit``.  Sub-buffers are
  ``PAGE_SIZE << order`` bytes (``trace_buffer.subbuf_order`` / ``buffer_page.order``, 6.8+);
* event formats: ``LIST_HEAD(ftrace_events)`` of ``struct trace_event_call`` with each class's fields
  and ``ftrace_common_fields``; ``print_fmt`` as the tracefs ``format`` file shows it;
* task names: ``savedcmd`` (``struct saved_cmdlines_buffer``); clocks: ``trace_clocks[tr->clock_id]``;
  option bits: ``enum trace_iterator_bits``; the line flags: ``enum trace_flag_type``.

Memory is read in bulk (one ``prog.read`` per sub-buffer); no drgn Object is built per event.  Every walk
is bounded, and unreadable or inconsistent memory is reported as :class:`~.ftrace_decode.Damage`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import drgn

from skbinspect.errors import SkbinspectError
from skbinspect.ftrace.formats import EventField, EventFormat, IrqFlagBits, SavedCmdlines, decode_stack
from skbinspect.ftrace.ringbuf import (
    Batch,
    Damage,
    KeyCodec,
    Record,
    RingBufferLayout,
    decode_subbuf,
    iter_records,
    merge_windows,
    walk_ring,
)
from skbinspect.memory.cache import per_program
from skbinspect.target.opener import kernel_version

__all__ = [
    "TraceError",
    "CpuBuffer",
    "TraceArray",
    "EventFormats",
    "TraceEvent",
    "TraceReader",
    "trace_arrays",
    "find_trace_array",
    "event_formats",
    "saved_cmdlines",
    "trace_reader",
    "iter_trace_events",
    "MAX_TRACE_ARRAYS",
    "MAX_EVENT_CALLS",
]

#: Bounds on what a corrupt target can make us walk.
MAX_TRACE_ARRAYS = 4096
MAX_EVENT_CALLS = 100_000
MAX_FIELDS = 1024
MAX_PAGES = 1 << 24
MAX_CPUS = 8192

TOP = "top"


class TraceError(SkbinspectError):
    """The trace buffers cannot be read (no tracing in this kernel, instance not found, ...)."""


def _offsetof(prog: drgn.Program, type_name: str, member: str) -> Optional[int]:
    try:
        return drgn.offsetof(prog.type(type_name), member)
    except (LookupError, ValueError):
        return None


def _sizeof(prog: drgn.Program, type_name: str) -> Optional[int]:
    try:
        return drgn.sizeof(prog.type(type_name))
    except (LookupError, ValueError):
        return None


def _const(prog: drgn.Program, name: str) -> Optional[int]:
    try:
        return prog[name].value_()
    except (LookupError, drgn.FaultError, ValueError, TypeError):
        return None


def read_cstr(prog: drgn.Program, addr: int, maxlen: int = 256) -> Optional[str]:
    """A NUL-terminated string at ``addr`` (at most ``maxlen`` bytes), or None if unreadable."""
    if not addr:
        return None
    out = b""
    while len(out) < maxlen:
        chunk = min(64, maxlen - len(out), 4096 - ((addr + len(out)) & 4095))
        try:
            b = prog.read(addr + len(out), chunk)
        except drgn.FaultError:
            return out.decode("utf-8", "replace") if out else None
        i = b.find(b"\0")
        if i >= 0:
            return (out + b[:i]).decode("utf-8", "replace")
        out += b
    return out.decode("utf-8", "replace")


# ---- layouts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PageLayout:
    """Offsets in ``struct buffer_page`` and the ring buffer encoding, from the target's DWARF."""

    size: int
    next: int
    read: int
    write: int
    entries: int
    real_end: int
    page: int
    order: Optional[int]  # 6.8+
    rb: RingBufferLayout


def _page_layout(prog: drgn.Program) -> _PageLayout:
    key = "skbinspect.ftrace.page_layout"
    cached = prog.cache.get(key)
    if cached is not None:
        return cached
    t = "struct buffer_page"
    size = _sizeof(prog, t)
    if size is None:
        raise TraceError(
            "this kernel's debug info has no struct buffer_page (kernel/trace/ring_buffer.c): cannot read "
            "the ftrace ring buffer (is CONFIG_RING_BUFFER off, or the vmlinux debug info incomplete?)."
        )
    hdr = _offsetof(prog, "struct buffer_data_page", "data")
    commit = _offsetof(prog, "struct buffer_data_page", "commit")
    commit_size = 8
    try:
        commit_size = drgn.sizeof(prog.type("struct buffer_data_page").member("commit").type)
    except (LookupError, ValueError):
        pass
    rb_kw: Dict[str, int] = {}
    if hdr is not None:
        rb_kw["header_size"] = hdr
    if commit is not None:
        rb_kw["commit_offset"] = commit
        rb_kw["commit_size"] = commit_size
    for attr, name in (
        ("type_len_max", "RINGBUF_TYPE_DATA_TYPE_LEN_MAX"),
        ("type_padding", "RINGBUF_TYPE_PADDING"),
        ("type_time_extend", "RINGBUF_TYPE_TIME_EXTEND"),
        ("type_time_stamp", "RINGBUF_TYPE_TIME_STAMP"),
    ):
        v = _const(prog, name)
        if v is not None:
            rb_kw[attr] = v
    order = None
    try:
        prog.type(t).member("order")
        order = _offsetof(prog, t, "order")
    except LookupError:
        pass
    lay = _PageLayout(
        size=size,
        next=_offsetof(prog, t, "list.next") or 0,
        read=_offsetof(prog, t, "read") or 0,
        write=_offsetof(prog, t, "write") or 0,
        entries=_offsetof(prog, t, "entries") or 0,
        real_end=_offsetof(prog, t, "real_end") or 0,
        page=_offsetof(prog, t, "page") or 0,
        order=order,
        rb=RingBufferLayout(**rb_kw),
    )
    prog.cache[key] = lay
    return lay


# ---- trace arrays ------------------------------------------------------------------------------------


@dataclass
class CpuBuffer:
    """One CPU's ring buffer (``struct ring_buffer_per_cpu``) and its counters.

    :ivar entries: events written and not overwritten or consumed (``entries - overrun - read``), what the
        trace file's header calls entries-in-buffer.
    :ivar written: ``entries + overrun`` (entries-written).
    :ivar overrun: events overwritten by the writer wrapping (lost).
    :ivar dropped: events refused because the buffer was full in non-overwrite mode (lost).
    :ivar commit_overrun: events lost when a nested writer ran out of room.
    :ivar read: events consumed by ``trace_pipe`` readers (not lost, but no longer in the buffer).
    """

    cpu: int
    address: int
    nr_pages: int
    entries: int
    written: int
    overrun: int
    dropped: int
    commit_overrun: int
    read: int
    lost_events: int
    reader_page: int
    head_page: int
    commit_page: int
    tail_page: int
    pages: int

    def to_json(self) -> Dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "cpu",
                "nr_pages",
                "entries",
                "written",
                "overrun",
                "dropped",
                "commit_overrun",
                "read",
                "lost_events",
            )
        }


@dataclass
class TraceArray:
    """A trace array (``struct trace_array``): the top-level buffer or an instance.

    :ivar name: ``"top"`` for the top-level buffer, else the instance's name.
    :ivar subbuf_size: bytes per sub-buffer including its header (``PAGE_SIZE << subbuf_order``).
    :ivar clock: the trace clock's name (``trace_clocks[clock_id]``), ``in_ns`` whether it counts ns.
    :ivar options: option bits by name (``stacktrace``, ``irq-info``, ...), from ``trace_flags``.
    """

    name: str
    address: int
    buffer: int
    subbuf_size: int
    subbuf_order: int
    page_size: int
    clock: str
    in_ns: bool
    trace_flags: int
    options: Dict[str, bool]
    text_delta: int
    cpus: List[CpuBuffer]
    warnings: List[str] = field(default_factory=list)

    @property
    def is_top(self) -> bool:
        return self.name == TOP

    @property
    def entries(self) -> int:
        return sum(c.entries for c in self.cpus)

    @property
    def written(self) -> int:
        return sum(c.written for c in self.cpus)

    @property
    def lost(self) -> int:
        return sum(c.overrun + c.dropped + c.commit_overrun for c in self.cpus)

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "address": hex(self.address),
            "subbuf_size": self.subbuf_size,
            "clock": self.clock,
            "options": self.options,
            "entries": self.entries,
            "written": self.written,
            "lost": self.lost,
            "cpus": [c.to_json() for c in self.cpus],
            "warnings": self.warnings,
        }


_OPTION_BITS = (
    "stacktrace",
    "irq_info",
    "record_tgid",
    "context_info",
    "sym_offset",
    "sym_addr",
    "overwrite",
    "latency_fmt",
    "verbose",
    "raw",
    "hex",
    "bin",
)


def _options(prog: drgn.Program, flags: int) -> Dict[str, bool]:
    out = {}
    for name in _OPTION_BITS:
        bit = _const(prog, f"TRACE_ITER_{name.upper()}_BIT")
        if bit is not None:
            out[name.replace("_", "-")] = bool(flags >> bit & 1)
    return out


def _nr_cpu_ids(prog: drgn.Program) -> int:
    try:
        return int(prog["nr_cpu_ids"].value_())
    except (LookupError, drgn.FaultError):
        return 1


def _cpu_buffer(prog: drgn.Program, ptr: int, cpu: int) -> CpuBuffer:
    cb = drgn.Object(prog, "struct ring_buffer_per_cpu *", ptr)

    def val(name: str, default: int = 0) -> int:
        try:
            return int(getattr(cb, name).value_())
        except AttributeError:
            return default

    def local(name: str) -> int:
        try:
            v = getattr(cb, name)
        except AttributeError:
            return 0
        # local_t { atomic_long_t a { s64 counter } }
        while v.type_.kind == drgn.TypeKind.STRUCT or v.type_.kind == drgn.TypeKind.TYPEDEF:
            t = v.type_
            while t.kind == drgn.TypeKind.TYPEDEF:
                t = t.type
            if t.kind != drgn.TypeKind.STRUCT:
                break
            v = getattr(v, t.members[0].name)
        return int(v.value_())

    entries = local("entries")
    overrun = local("overrun")
    read = val("read")
    in_buf = entries - (overrun + read)
    return CpuBuffer(
        cpu=cpu,
        address=ptr,
        nr_pages=val("nr_pages"),
        entries=in_buf,
        written=in_buf + overrun,
        overrun=overrun,
        dropped=local("dropped_events"),
        commit_overrun=local("commit_overrun"),
        read=read,
        lost_events=val("lost_events"),
        reader_page=val("reader_page"),
        head_page=val("head_page"),
        commit_page=val("commit_page"),
        tail_page=val("tail_page"),
        pages=val("pages"),
    )


def _trace_array(prog: drgn.Program, tr: drgn.Object) -> TraceArray:
    addr = tr.value_()
    name_ptr = tr.name.value_()
    name = read_cstr(prog, name_ptr, 256) if name_ptr else None
    name = name if name else TOP
    warnings: List[str] = []
    buf = tr.array_buffer.buffer
    buf_addr = buf.value_()
    page_size = int(prog["PAGE_SIZE"].value_()) if "PAGE_SIZE" in prog else 4096
    order = 0
    if buf_addr:
        try:
            order = int(buf.subbuf_order.value_())  # 6.8+
        except AttributeError:
            order = 0
    if order > 10:
        warnings.append(f"implausible sub-buffer order {order}; using 0")
        order = 0
    clock, in_ns = "local", True
    try:
        cid = int(tr.clock_id.value_())
        clocks = prog["trace_clocks"]
        if 0 <= cid < len(clocks):
            c = clocks[cid]
            clock = c.name.string_().decode(errors="replace")
            in_ns = bool(c.in_ns.value_())
    except (LookupError, AttributeError, drgn.FaultError, TypeError):
        warnings.append("trace clock unknown; assuming nanoseconds")
    flags = int(tr.trace_flags.value_())
    text_delta = 0
    try:
        text_delta = int(tr.text_delta.value_())  # 6.12+: persistent (boot-mapped) buffers
    except AttributeError:
        pass
    cpus: List[CpuBuffer] = []
    if buf_addr:
        n = min(_nr_cpu_ids(prog), MAX_CPUS)
        try:
            bufs_ptr = buf.buffers.value_()
            raw = prog.read(bufs_ptr, 8 * n) if bufs_ptr else b""
            ptrs = struct.unpack_from("<%dQ" % (len(raw) // 8), raw)
        except drgn.FaultError as e:
            warnings.append(f"per-CPU buffer array unreadable ({e})")
            ptrs = ()
        for cpu, p in enumerate(ptrs):
            if not p:
                continue
            try:
                cpus.append(_cpu_buffer(prog, p, cpu))
            except drgn.FaultError as e:
                warnings.append(f"CPU {cpu}: ring_buffer_per_cpu at {p:#x} unreadable ({e})")
    else:
        warnings.append("this trace array has no buffer")
    return TraceArray(
        name=name,
        address=addr,
        buffer=buf_addr,
        subbuf_size=page_size << order,
        subbuf_order=order,
        page_size=page_size,
        clock=clock,
        in_ns=in_ns,
        trace_flags=flags,
        options=_options(prog, flags),
        text_delta=text_delta,
        cpus=cpus,
        warnings=warnings,
    )


def trace_arrays(prog: drgn.Program) -> List[TraceArray]:
    """Every trace array of the target: the top-level buffer first, then the instances by name.

    :raises TraceError: the kernel has no ftrace (no ``ftrace_trace_arrays``) or its list is unreadable.
    """
    try:
        head = prog["ftrace_trace_arrays"].address_of_()
    except LookupError:
        raise TraceError(
            "this kernel has no ftrace_trace_arrays: it was built without tracing (CONFIG_TRACING), "
            "or its debug info is missing."
        )
    _page_layout(prog)
    out: List[TraceArray] = []
    seen = set()
    try:
        pos = head.next.value_()
        off = _offsetof(prog, "struct trace_array", "list") or 0
        while pos != head.value_() and len(out) < MAX_TRACE_ARRAYS:
            if pos in seen or not pos:
                break
            seen.add(pos)
            tr = drgn.Object(prog, "struct trace_array *", pos - off)
            try:
                out.append(_trace_array(prog, tr))
            except drgn.FaultError as e:
                out.append(
                    TraceArray(
                        "?",
                        pos - off,
                        0,
                        4096,
                        0,
                        4096,
                        "local",
                        True,
                        0,
                        {},
                        0,
                        [],
                        [f"trace_array at {pos - off:#x} unreadable ({e})"],
                    )
                )
            pos = drgn.Object(prog, "struct list_head *", pos).next.value_()
    except drgn.FaultError as e:
        if not out:
            raise TraceError(f"the list of trace arrays (ftrace_trace_arrays) is unreadable: {e}.")
    out.sort(key=lambda t: (not t.is_top, t.name))
    return out


def find_trace_array(prog: drgn.Program, instance: Optional[str] = None) -> TraceArray:
    """The top-level trace array (``instance`` None or ``"top"``) or the named instance.

    :raises TraceError: no such instance (the message lists those that exist).
    """
    arrays = trace_arrays(prog)
    want = instance or TOP
    for t in arrays:
        if t.name == want:
            return t
    if want == TOP:
        # the top-level buffer is the static global_trace: found even when the list of arrays is damaged
        try:
            top = _trace_array(prog, prog["global_trace"].address_of_())
        except (LookupError, drgn.FaultError, ValueError, OverflowError):
            pass
        else:
            top.warnings.append(
                "the list of trace arrays is damaged: the top-level buffer was found as global_trace"
            )
            return top
    names = ", ".join(t.name for t in arrays if not t.is_top) or "none"
    raise TraceError(f"no trace instance named {want!r} in this kernel (instances: {names}).")


# ---- event formats ------------------------------------------------------------------------------------


class EventFormats:
    """The target's event types by id, read from ``ftrace_events`` (fields are read on first use)."""

    def __init__(self, prog: drgn.Program) -> None:
        self.prog = prog
        self.by_id: Dict[int, EventFormat] = {}
        self.by_name: Dict[str, EventFormat] = {}
        self.warnings: List[str] = []
        self._calls: Dict[int, int] = {}  # id -> trace_event_call address
        self._common: Optional[List[EventField]] = None
        self._constants: Dict[str, Optional[int]] = {}
        self._load()

    def _load(self) -> None:
        prog = self.prog
        try:
            head = prog["ftrace_events"].address_of_().value_()
        except LookupError:
            self.warnings.append("no ftrace_events list in this kernel: events cannot be named")
            return
        t = "struct trace_event_call"
        o_class = _offsetof(prog, t, "class")
        o_name = _offsetof(prog, t, "name")
        o_type = _offsetof(prog, t, "event.type")
        o_fmt = _offsetof(prog, t, "print_fmt")
        o_flags = _offsetof(prog, t, "flags")
        o_list = _offsetof(prog, t, "list") or 0
        o_system = _offsetof(prog, "struct trace_event_class", "system") or 0
        size = _sizeof(prog, t) or 0
        if None in (o_class, o_name, o_type, o_fmt, o_flags) or not size:
            self.warnings.append("struct trace_event_call not in the debug info: events cannot be named")
            return
        fl_tp = _const(prog, "TRACE_EVENT_FL_TRACEPOINT")
        systems: Dict[int, str] = {}
        seen = set()
        pos = head
        try:
            pos = struct.unpack("<Q", prog.read(head, 8))[0]
        except drgn.FaultError as e:
            self.warnings.append(f"ftrace_events unreadable ({e})")
            return
        n = 0
        while pos != head and n < MAX_EVENT_CALLS:
            if pos in seen or not pos:
                self.warnings.append("the ftrace_events list is corrupt (loop or NULL link)")
                break
            seen.add(pos)
            n += 1
            call = pos - o_list
            try:
                raw = prog.read(call, size)
            except drgn.FaultError:
                self.warnings.append(f"trace_event_call at {call:#x} unreadable; the list walk stopped")
                break
            nxt = struct.unpack_from("<Q", raw, o_list)[0]
            cls = struct.unpack_from("<Q", raw, o_class)[0]
            name_ptr = struct.unpack_from("<Q", raw, o_name)[0]
            ev_id = struct.unpack_from("<i", raw, o_type)[0]
            fmt_ptr = struct.unpack_from("<Q", raw, o_fmt)[0]
            flags = struct.unpack_from("<i", raw, o_flags)[0]
            if fl_tp is not None and flags & fl_tp:
                # trace_event_name(): a TRACE_EVENT's name is its tracepoint's (struct tracepoint .name first)
                try:
                    name_ptr = struct.unpack("<Q", prog.read(name_ptr, 8))[0]
                except drgn.FaultError:
                    name_ptr = 0
            name = read_cstr(prog, name_ptr, 128) or f"event{ev_id}"
            system = "?"
            if cls:
                if cls not in systems:
                    try:
                        sp = struct.unpack("<Q", prog.read(cls + o_system, 8))[0]
                    except drgn.FaultError:
                        sp = 0
                    systems[cls] = read_cstr(prog, sp, 128) or "?"
                system = systems[cls]
            ef = EventFormat(ev_id, system, name, [], print_fmt=None)
            ef._lazy = (call, cls, fmt_ptr)  # type: ignore[attr-defined]
            if ev_id > 0 and ev_id not in self.by_id:
                self.by_id[ev_id] = ef
                self._calls[ev_id] = call
            self.by_name.setdefault(ef.full_name, ef)
            pos = nxt

    def constant(self, name: str) -> Optional[int]:
        """An enum constant of the target by name (for print_fmt expressions), or None."""
        if name in self._constants:
            return self._constants[name]
        v = None
        try:
            obj = self.prog[name]
            if obj.type_.kind in (drgn.TypeKind.ENUM, drgn.TypeKind.INT) and obj.address_ is None:
                v = int(obj.value_())
        except (LookupError, drgn.FaultError, ValueError, TypeError):
            v = None
        self._constants[name] = v
        return v

    def common_fields(self) -> List[EventField]:
        if self._common is None:
            try:
                head = self.prog["ftrace_common_fields"].address_of_().value_()
                self._common = _read_fields(self.prog, head, self.warnings)
            except LookupError:
                self._common = []
        return self._common

    def _complete(self, ef: EventFormat) -> EventFormat:
        lazy = getattr(ef, "_lazy", None)
        if lazy is None:
            return ef
        ef._lazy = None  # type: ignore[attr-defined]
        call, cls, fmt_ptr = lazy
        ef.print_fmt = read_cstr(self.prog, fmt_ptr, 1 << 16) if fmt_ptr else None
        ef.common_fields = self.common_fields()
        ef.constant = self.constant
        head = _fields_head(self.prog, call, cls)
        ef.fields = _read_fields(self.prog, head, self.warnings) if head else []
        return ef

    def get(self, ev_id: int) -> Optional[EventFormat]:
        ef = self.by_id.get(ev_id)
        return self._complete(ef) if ef is not None else None

    def lookup(self, name: str) -> Optional[EventFormat]:
        """By ``system:name`` (or a bare ``name`` if it is unique)."""
        ef = self.by_name.get(name)
        if ef is None and ":" not in name:
            hits = [e for e in self.by_name.values() if e.name == name]
            ef = hits[0] if len(hits) == 1 else None
        return self._complete(ef) if ef is not None else None

    def __iter__(self) -> Iterator[EventFormat]:
        for i in sorted(self.by_id):
            yield self.get(i)  # type: ignore[misc]


def _fields_head(prog: drgn.Program, call: int, cls: int) -> Optional[int]:
    """``trace_get_fields()``: ``class->get_fields(call)`` for syscalls, else ``&class->fields``."""
    if not cls:
        return None
    o_get = _offsetof(prog, "struct trace_event_class", "get_fields")
    o_fields = _offsetof(prog, "struct trace_event_class", "fields")
    if o_fields is None:
        return None
    if o_get is not None:
        try:
            fn = struct.unpack("<Q", prog.read(cls + o_get, 8))[0]
        except drgn.FaultError:
            fn = 0
        if fn:
            try:
                sym = prog.symbol(fn).name
            except LookupError:
                sym = ""
            if sym == "syscall_get_enter_fields":
                try:
                    data = drgn.Object(prog, "struct trace_event_call *", call).data.value_()
                    meta = drgn.Object(prog, "struct syscall_metadata *", data)
                    return meta.enter_fields.address_of_().value_()
                except (LookupError, AttributeError, drgn.FaultError):
                    return None
    return cls + o_fields


def _read_fields(prog: drgn.Program, head: int, warnings: List[str]) -> List[EventField]:
    """Fields of a ``list_head`` of ``struct ftrace_event_field``, in declaration order (the list is built
    with ``list_add()``, newest first, so it is walked through ``prev`` as the format file does)."""
    t = "struct ftrace_event_field"
    ftype = prog.type(t)
    size = drgn.sizeof(ftype)
    o_link = drgn.offsetof(ftype, "link")
    o_prev = o_link + 8
    o_name = drgn.offsetof(ftype, "name")
    o_type = drgn.offsetof(ftype, "type")
    o_off = drgn.offsetof(ftype, "offset")
    o_size = drgn.offsetof(ftype, "size")
    o_ftype = drgn.offsetof(ftype, "filter_type")
    o_len = None
    try:
        ftype.member("len")
        o_len = drgn.offsetof(ftype, "len")
    except LookupError:
        pass
    # is_signed: int (5.10, 6.1) or a 1-bit field (6.x: unsigned int is_signed:1, needs_test:1)
    sm = ftype.member("is_signed")
    s_bits = sm.bit_field_size
    s_bit_off = sm.bit_offset
    out: List[EventField] = []
    seen = set()
    try:
        pos = struct.unpack("<Q", prog.read(head + 8, 8))[0]  # head->prev
    except drgn.FaultError:
        warnings.append(f"event field list at {head:#x} unreadable")
        return out
    while pos != head and len(out) < MAX_FIELDS:
        if pos in seen or not pos:
            warnings.append(f"event field list at {head:#x} is corrupt")
            break
        seen.add(pos)
        base = pos - o_link
        try:
            raw = prog.read(base, size)
        except drgn.FaultError:
            warnings.append(f"event field at {base:#x} unreadable")
            break
        name = read_cstr(prog, struct.unpack_from("<Q", raw, o_name)[0], 128) or "?"
        typ = read_cstr(prog, struct.unpack_from("<Q", raw, o_type)[0], 256) or "?"
        off = struct.unpack_from("<i", raw, o_off)[0]
        fsz = struct.unpack_from("<i", raw, o_size)[0]
        if s_bits:
            word = int.from_bytes(raw[s_bit_off // 8 : s_bit_off // 8 + 4], "little")
            signed = bool(word >> (s_bit_off % 8) & 1)
        else:
            signed = bool(struct.unpack_from("<i", raw, s_bit_off // 8)[0])
        ln = struct.unpack_from("<i", raw, o_len)[0] if o_len is not None else 0
        out.append(EventField(name, typ, off, fsz, signed, ln, struct.unpack_from("<i", raw, o_ftype)[0]))
        pos = struct.unpack_from("<Q", raw, o_prev)[0]
    return out


def event_formats(prog: drgn.Program) -> EventFormats:
    """The target's event formats (cached per program)."""
    return per_program(prog, "skbinspect.ftrace.formats", EventFormats)


# ---- saved cmdlines -----------------------------------------------------------------------------------


def saved_cmdlines(prog: drgn.Program, warnings: Optional[List[str]] = None) -> SavedCmdlines:
    """The kernel's saved comms (``savedcmd``: trace.c up to 6.6, trace_sched_switch.c later), bulk-read."""
    key = "skbinspect.ftrace.cmdlines"
    c = prog.cache.get(key)
    if c is not None:
        return c
    c = SavedCmdlines.empty()
    try:
        sc = prog["savedcmd"]
        if sc.value_():
            t = sc.type_.type
            m_map = t.member("map_pid_to_cmdline")
            n_map = m_map.type.length or 0
            base = sc.value_()
            pid_map = prog.read(base + drgn.offsetof(t, "map_pid_to_cmdline"), 4 * n_map)
            num = int(sc.cmdline_num.value_())
            num = max(0, min(num, 1 << 20))
            to_pid = prog.read(sc.map_cmdline_to_pid.value_(), 4 * num) if num else b""
            try:
                comm_len = drgn.sizeof(prog.type("struct task_struct").member("comm").type)
            except LookupError:
                comm_len = 16
            names_obj = sc.saved_cmdlines
            if names_obj.type_.kind == drgn.TypeKind.POINTER:  # older kernels: char *saved_cmdlines
                names_addr = names_obj.value_()
            else:
                names_addr = names_obj.address_
            names = prog.read(names_addr, num * comm_len) if num else b""
            c = SavedCmdlines(
                struct.unpack("<%dI" % n_map, pid_map), struct.unpack("<%dI" % num, to_pid), names, comm_len
            )
    except (LookupError, AttributeError, drgn.FaultError, struct.error) as e:
        if warnings is not None:
            warnings.append(f"saved task names (savedcmd) unreadable ({e}); tasks show as <...>")
    prog.cache[key] = c
    return c


def irq_flag_bits(prog: drgn.Program) -> IrqFlagBits:
    """``enum trace_flag_type`` of the target, and whether its lines have the migrate-disable column."""

    def v(name: str) -> int:
        x = _const(prog, name)
        return x if x is not None else 0

    # The fifth column (migrate-disable depth) came with 54357f0c9149 "tracing: Add migrate-disabled
    # counter to tracing output" (Linux 5.13; tracing_gen_ctx_irq_test() arrived in the same series).
    migrate = True
    try:
        prog["tracing_gen_ctx_irq_test"]
    except LookupError:
        migrate = kernel_version(prog) >= (5, 13)
    return IrqFlagBits(
        irqs_off=v("TRACE_FLAG_IRQS_OFF") or 0x01,
        irqs_nosupport=v("TRACE_FLAG_IRQS_NOSUPPORT"),
        need_resched=v("TRACE_FLAG_NEED_RESCHED") or 0x04,
        hardirq=v("TRACE_FLAG_HARDIRQ") or 0x08,
        softirq=v("TRACE_FLAG_SOFTIRQ") or 0x10,
        preempt_resched=v("TRACE_FLAG_PREEMPT_RESCHED") or 0x20,
        nmi=v("TRACE_FLAG_NMI") or 0x40,
        bh_off=v("TRACE_FLAG_BH_OFF"),
        need_resched_lazy=v("TRACE_FLAG_NEED_RESCHED_LAZY"),
        migrate_column=migrate,
    )


# ---- pages and records --------------------------------------------------------------------------------


def _read_bpage(prog: drgn.Program, lay: _PageLayout, addr: int) -> Tuple[int, int, int, int, int]:
    """``(next, read, page, order, prev)`` of a ``struct buffer_page``."""
    raw = prog.read(addr, lay.size)
    nxt, prev = struct.unpack_from("<QQ", raw, lay.next)
    rd = struct.unpack_from("<I", raw, lay.read)[0]
    page = struct.unpack_from("<Q", raw, lay.page)[0]
    order = struct.unpack_from("<I", raw, lay.order)[0] if lay.order is not None else 0
    return nxt, rd, page, order, prev


@dataclass
class CpuPages:
    """The sub-buffers of one CPU in reading order: ``(buffer_page address, data page address, order,
    emit_from)``."""

    cpu: int
    pages: List[Tuple[int, int, int, int]]
    damage: List[Damage]


def cpu_pages(prog: drgn.Program, tr: TraceArray, cb: CpuBuffer) -> CpuPages:
    """The sub-buffers of ``cb`` in the kernel's reading order (see :func:`.ftrace_decode.walk_ring`)."""
    lay = _page_layout(prog)
    order_default = tr.subbuf_order

    def read_bpage(addr: int) -> Tuple[int, int, int, int, int]:
        nxt, rd, page, order, prev = _read_bpage(prog, lay, addr)
        return nxt, rd, page, order if lay.order is not None else order_default, prev

    pages, dmg = walk_ring(
        read_bpage,
        cpu=cb.cpu,
        reader_page=cb.reader_page,
        commit_page=cb.commit_page,
        pages=cb.pages,
        head_page=cb.head_page,
        nr_pages=cb.nr_pages,
        list_offset=lay.next,
        max_pages=MAX_PAGES,
    )
    return CpuPages(cb.cpu, pages, dmg)


_DROPPED = object()
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


class TraceReader:
    """Reads one trace array: its per-CPU sub-buffers, decoded lazily, merged by time stamp.

    Memory use is bounded by one sub-buffer per CPU being merged (plus the page lists), not by the number
    of events.  :meth:`windows` is the fast path (keys, see :class:`~.ftrace_decode.KeyCodec`);
    :meth:`records` gives tuples; :meth:`events` gives :class:`TraceEvent` objects with stacks attached.
    """

    def __init__(
        self,
        prog: drgn.Program,
        tr: TraceArray,
        cpus: Optional[Sequence[int]] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> None:
        self.prog = prog
        self.tr = tr
        self.layout = _page_layout(prog)
        self.warnings: List[str] = list(tr.warnings)
        self.damage: List[Damage] = []
        self.formats = event_formats(prog)
        self.warnings += self.formats.warnings
        self.cmdlines = saved_cmdlines(prog, self.warnings)
        self.flag_bits = irq_flag_bits(prog)
        self.stack_type = _const(prog, "TRACE_STACK") or 4
        self.codec = KeyCodec(tr.subbuf_size)
        self.missed_pages = 0  # sub-buffers flagged RB_MISSED_EVENTS
        want = set(cpus) if cpus is not None else None
        self.cpu_buffers = [c for c in tr.cpus if want is None or c.cpu in want]
        self.progress = progress
        self._pages: Optional[List[CpuPages]] = None
        self._pages_done = 0
        self._decoders: Dict[int, Any] = {}  # event id -> FieldDecoder (None: unknown event)
        # (key, id(page)) of an event -> [(page, stack record key)]
        self._stacks: Dict[Tuple[int, int], List[Tuple[bytes, int]]] = {}

    @property
    def pages(self) -> List[CpuPages]:
        if self._pages is None:
            self._pages = [cpu_pages(self.prog, self.tr, cb) for cb in self.cpu_buffers]
            for cp in self._pages:
                self.damage += cp.damage
        return self._pages

    @property
    def total_pages(self) -> int:
        return sum(len(cp.pages) for cp in self.pages)

    def _cpu_batches(self, cp: CpuPages) -> Iterator[Batch]:
        """One CPU's decoded sub-buffers, oldest first: ``(page, keys, monotonic)``."""
        read = self.prog.read
        lay = self.layout.rb
        codec = self.codec
        page_size = self.tr.page_size
        cap = self.tr.subbuf_size
        damage = self.damage
        progress = self.progress
        total = self.total_pages if progress is not None else 0
        for bp, page_addr, order, emit_from in cp.pages:
            size = page_size << (order if 0 <= order <= 10 else 0)
            if size > cap:
                damage.append(
                    Damage(
                        cp.cpu,
                        f"buffer_page {bp:#x}",
                        f"sub-buffer order {order} larger than the "
                        f"buffer's ({self.tr.subbuf_order}); read {cap} bytes",
                    )
                )
                size = cap
            try:
                page = read(page_addr, size)
            except drgn.FaultError as e:
                damage.append(
                    Damage(
                        cp.cpu,
                        f"sub-buffer {page_addr:#x} (buffer_page {bp:#x})",
                        f"unreadable ({e}); its events are missing",
                    )
                )
                continue
            keys: List[int] = []
            flags, mono = decode_subbuf(
                page, cp.cpu, keys, codec, layout=lay, emit_from=emit_from, damage=damage, where=page_addr
            )
            if flags & lay.missed_events:
                self.missed_pages += 1
            self._pages_done += 1
            if progress is not None:
                progress(self._pages_done, total)
            if keys:
                yield page, keys, mono

    def windows(self) -> Iterator[Tuple[List[int], Dict[int, bytes]]]:
        """The fast path: merged ``(keys, {cpu: page})`` windows in time order (stack records included)."""
        return merge_windows([self._cpu_batches(cp) for cp in self.pages], self.codec)

    def records(self) -> Iterator[Record]:
        """All records of the selected CPUs in time order, like the trace file (stack records are separate
        records here): ``(ts, cpu, type, page, offset, length)``."""
        return iter_records(self.windows(), self.codec)

    def raw_events(self) -> Iterator["TraceEvent"]:
        """:class:`TraceEvent` per record, in the trace file's order (stack records separate)."""
        for keys, pages in self.windows():
            cmask, cshift = self.codec.cpu_mask, self.codec.cpu_shift
            for k in keys:
                yield TraceEvent(self, k, pages[(k >> cshift) & cmask])

    def events(self, types: Optional[Iterable[int]] = None) -> Iterator["TraceEvent"]:
        """Decoded events, oldest first, each kernel stack record attached to the event it follows on the
        same CPU (``ev.stack``); a stack record with no such event (its event was overwritten when the
        buffer wrapped) is an event of its own.

        :param types: event ids to keep (default all); the stacks of the others are dropped with them
            (orphan stack records are kept when ``types`` includes ``TRACE_STACK``).
        """
        stacks = self._stacks
        for k, page, _ in self.grouped_keys(types):
            ev = TraceEvent(self, k, page)
            ev.stack_records = stacks.pop((k, id(page)), None)
            yield ev

    def grouped_keys(self, types: Optional[Iterable[int]] = None) -> Iterator[Tuple[int, bytes, int]]:
        """The fast path under :meth:`events`: ``(key, page, id(page))`` per event in time order, filtered
        by ``types``; an event's stack records are in ``self._stacks[(key, id(page))]`` (pop them)."""
        cmask, cshift = self.codec.cpu_mask, self.codec.cpu_shift
        for keys, pages in self.grouped_windows(types):
            if len(pages) == 1:
                (page,) = pages.values()
                pid = id(page)
                for k in keys:
                    yield k, page, pid
            else:
                for k in keys:
                    page = pages[(k >> cshift) & cmask]
                    yield k, page, id(page)

    def grouped_windows(
        self, types: Optional[Iterable[int]] = None
    ) -> Iterator[Tuple[List[int], Dict[int, bytes]]]:
        """Like :meth:`windows`, with stack records taken out and attached (``self._stacks``) and the events
        not in ``types`` left out."""
        want = frozenset(types) if types is not None else None
        return merge_windows([self._grouped(cp, want) for cp in self.pages], self.codec)

    def _grouped(self, cp: CpuPages, want: Optional[frozenset] = None) -> Iterator[Batch]:
        """One CPU's batches with the stack records that follow an event taken out (and remembered in
        ``self._stacks`` for that event: one from ``options/stacktrace``, one more per ``stacktrace``
        trigger), and the events not in ``want`` left out with their stacks.  A batch is held back until
        the next one is known, since an event's stack can start the next sub-buffer."""
        st = self.stack_type
        stacks = self._stacks
        orphans = want is None or st in want
        held: Optional[Batch] = None
        # (key, id(page)) of the last event, whose stacks follow; DROPPED after an event not wanted
        owner: Any = None
        for page, keys, mono in self._cpu_batches(cp):
            pid = id(page)
            types = {k & 0xFFFF for k in keys}
            if st not in types:  # no stack record in this sub-buffer: filter at C speed
                if want is None:
                    kept = keys
                elif types <= want:
                    kept = keys
                else:
                    kept = [k for k in keys if k & 0xFFFF in want]
                last = keys[-1]
                owner = (last, pid) if want is None or last & 0xFFFF in want else _DROPPED
                if held is not None:
                    yield held
                held = (page, kept, mono)
                continue
            kept = []
            for k in keys:
                t = k & 0xFFFF
                if t == st:
                    if owner is _DROPPED:
                        continue
                    if owner is not None:  # every stack record that follows an event belongs to it
                        stacks.setdefault(owner, []).append((page, k))
                        continue
                    if orphans:
                        kept.append(k)
                elif want is None or t in want:
                    kept.append(k)
                    owner = (k, pid)
                else:
                    owner = _DROPPED
            if held is not None:
                yield held
            held = (page, kept, mono)
        if held is not None:
            yield held

    def text_delta(self) -> int:
        return self.tr.text_delta


class TraceEvent:
    """One decoded event.  Cheap to create: fields are decoded on first access.

    :ivar ts: time stamp (trace clock units, ns for the default clocks).
    :ivar cpu: the CPU buffer it came from.
    :ivar type: the event id (``trace_entry.type``).
    :ivar page: the sub-buffer's bytes; ``off``/``length`` locate the payload in it.

    Built from a key (:class:`~.ftrace_decode.KeyCodec`) and the sub-buffer it points into.
    """

    __slots__ = ("reader", "key", "ts", "cpu", "type", "page", "off", "length", "stack_records", "_fields")

    def __init__(self, reader: TraceReader, key: int, page: bytes) -> None:
        c = reader.codec
        self.reader = reader
        self.key = key
        self.ts = key >> c.shift
        self.cpu = (key >> c.cpu_shift) & c.cpu_mask
        self.page = page
        self.type = key & 0xFFFF
        w = (key >> 16) & c.pos_mask
        h = _U32.unpack_from(page, w * 4)[0]
        tl = h & 31
        if tl:
            self.off = (w + 1) * 4
            self.length = tl * 4
        else:
            self.off = (w + 2) * 4
            self.length = _U32.unpack_from(page, w * 4 + 4)[0] - 4
        self.stack_records: Optional[List[Tuple[bytes, int]]] = None
        self._fields: Optional[Dict[str, Any]] = None

    @property
    def format(self) -> Optional[EventFormat]:
        return self.reader.formats.get(self.type)

    @property
    def system(self) -> str:
        f = self.format
        return f.system if f else "?"

    @property
    def name(self) -> str:
        f = self.format
        return f.name if f else f"event{self.type}"

    @property
    def full_name(self) -> str:
        return f"{self.system}:{self.name}"

    @property
    def flags(self) -> int:
        return self.page[self.off + 2] if self.length >= 3 else 0

    @property
    def preempt_count(self) -> int:
        return self.page[self.off + 3] if self.length >= 4 else 0

    @property
    def pid(self) -> int:
        if self.length < 8:
            return -1
        return struct.unpack_from("<i", self.page, self.off + 4)[0]

    @property
    def comm(self) -> str:
        return self.reader.cmdlines.find(self.pid)

    @property
    def is_stack(self) -> bool:
        return self.type == self.reader.stack_type

    @property
    def fields(self) -> Dict[str, Any]:
        """The event's own fields by name (common fields left out)."""
        f = self._fields
        if f is None:
            decoders = self.reader._decoders
            dec = decoders.get(self.type, _DROPPED)
            if dec is _DROPPED:
                fmt = self.format
                dec = decoders[self.type] = fmt.decoder if fmt else None
            f = self._fields = dec.decode(self.page, self.off, self.length) if dec is not None else {}
        return f

    def field(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    @property
    def stack(self) -> Optional[List[int]]:
        """Return addresses of the (first) kernel stack recorded with this event, or of this stack record."""
        if self.type == self.reader.stack_type:
            return decode_stack(self.page, self.off, self.length)
        st = self.stack_events
        return st[0].stack if st else None

    @property
    def stacks(self) -> List[List[int]]:
        """Every stack recorded with this event (``options/stacktrace`` and ``stacktrace`` triggers)."""
        return [st.stack or [] for st in self.stack_events]

    @property
    def stack_events(self) -> List["TraceEvent"]:
        """The stack records attached to this event, as events of their own (time stamp, flags, ...)."""
        if not self.stack_records:
            return []
        return [TraceEvent(self.reader, key, page) for page, key in self.stack_records]

    def payload(self) -> bytes:
        return bytes(self.page[self.off : self.off + self.length])

    def __repr__(self) -> str:
        return f"<TraceEvent {self.full_name} ts={self.ts} cpu={self.cpu} pid={self.pid}>"


def trace_reader(
    prog: drgn.Program,
    instance: Optional[str] = None,
    cpus: Optional[Sequence[int]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> TraceReader:
    """A :class:`TraceReader` for the top-level buffer (``instance`` None) or the named instance."""
    return TraceReader(prog, find_trace_array(prog, instance), cpus, progress)


def iter_trace_events(
    prog: drgn.Program,
    instance: Optional[str] = None,
    events: Optional[Sequence[str]] = None,
    cpus: Optional[Sequence[int]] = None,
) -> Iterator[TraceEvent]:
    """Decoded events of a trace array, oldest first (for drgn sessions).

    :param instance: instance name; None for the top-level buffer.
    :param events: ``system:name`` (or bare names) to keep; default all.
    :param cpus: CPUs to read; default all.

    >>> for ev in iter_trace_events(prog, events=["skb:kfree_skb"]):
    ...     print(ev.ts, ev.comm, ev.fields["location"], ev.stack)
    """
    r = trace_reader(prog, instance, cpus)
    want: Optional[set] = None
    if events:
        want = set()
        for e in events:
            f = r.formats.lookup(e)
            if f is None:
                raise TraceError(f"no event {e!r} in this kernel.")
            want.add(f.id)
    for ev in r.events():
        if want is None or ev.type in want:
            yield ev
