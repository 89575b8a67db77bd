"""The kernel's ftrace ring buffers, read from memory with drgn (the byte decoding is in
:mod:`skbinspect.ftrace.ringbuf`, the payloads in :mod:`skbinspect.ftrace.formats`).

What is read, and from where (docs/kernel/ftrace.md):

* trace arrays: ``LIST_HEAD(ftrace_trace_arrays)`` of ``struct trace_array`` (the top level, whose
  ``name`` is NULL, and every instance); each one's ``array_buffer.buffer`` (``struct trace_buffer``) and
  its per-CPU ``struct ring_buffer_per_cpu``;
* per CPU, the sub-buffers in the kernel's reading order: the reader page (outside the ring) from its
  ``read`` offset, then from the head page (the one the ring link flagged ``RB_PAGE_HEAD`` points to,
  ``cpu_buffer->head_page`` can lag) to the commit page, stopping at its ``commit``.  Sub-buffers are
  ``PAGE_SIZE << order`` bytes (``trace_buffer.subbuf_order`` / ``buffer_page.order``, v6.8);
* event formats: ``LIST_HEAD(ftrace_events)`` of ``struct trace_event_call`` with each class's fields
  and ``ftrace_common_fields``; ``print_fmt`` as the tracefs ``format`` file shows it;
* task names: ``savedcmd`` (``struct saved_cmdlines_buffer``); clocks: ``trace_clocks[tr->clock_id]``;
  option bits: ``enum trace_iterator_bits``; the line flags: ``enum trace_flag_type``.

Memory is read in bulk (one ``prog.read`` per sub-buffer); no drgn Object is built per event.  Every walk
is bounded, and unreadable or inconsistent memory is reported as :class:`~skbinspect.ftrace.ringbuf.Damage`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

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
from skbinspect.memory.faults import READ_FAULTS
from skbinspect.memory.layout import StructLayout, struct_layout
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


def _const(prog: drgn.Program, name: str) -> Optional[int]:
    try:
        return prog[name].value_()
    except (LookupError, TypeError, *READ_FAULTS):
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
        except READ_FAULTS:
            return out.decode("utf-8", "replace") if out else None
        i = b.find(b"\0")
        if i >= 0:
            return (out + b[:i]).decode("utf-8", "replace")
        out += b
    return out.decode("utf-8", "replace")


# ---- layouts -----------------------------------------------------------------------------------------

#: The members of ``struct buffer_page`` read for the page walk (``order`` only on v6.8 and later).
_BPAGE_MEMBERS = ("list.next", "list.prev", "read", "page", "order")


class _PageLayout(NamedTuple):
    """How this kernel's ring buffer pages are laid out: ``struct buffer_page`` and the encoding of the
    sub-buffers (from DWARF where it says, else the defaults of :class:`RingBufferLayout`)."""

    bpage: StructLayout
    rb: RingBufferLayout


def _page_layout(prog: drgn.Program) -> _PageLayout:
    return per_program(prog, "skbinspect.ftrace.page_layout", _read_page_layout)


def _read_page_layout(prog: drgn.Program) -> _PageLayout:
    try:
        bpage = struct_layout(prog, "struct buffer_page", _BPAGE_MEMBERS)
        if not all(bpage.has(m) for m in _BPAGE_MEMBERS[:4]):
            raise LookupError("struct buffer_page without list, read or page")
    except LookupError:
        raise TraceError(
            "this kernel's debug info has no struct buffer_page (kernel/trace/ring_buffer.c): cannot read "
            "the ftrace ring buffer (is CONFIG_RING_BUFFER off, or the vmlinux debug info incomplete?)."
        )
    rb_kw: Dict[str, int] = {}
    try:
        data_page = struct_layout(prog, "struct buffer_data_page", ("commit",))
    except LookupError:
        pass
    else:
        # BUF_PAGE_HDR_SIZE is offsetof(struct buffer_data_page, data); data[] is the struct's last member
        # (a flexible array, aligned), so that is the struct's size
        rb_kw["header_size"] = data_page.size
        if data_page.has("commit"):
            rb_kw["commit_offset"], rb_kw["commit_size"] = data_page.fields["commit"][:2]
    for attr, name in (
        ("type_len_max", "RINGBUF_TYPE_DATA_TYPE_LEN_MAX"),
        ("type_padding", "RINGBUF_TYPE_PADDING"),
        ("type_time_extend", "RINGBUF_TYPE_TIME_EXTEND"),
        ("type_time_stamp", "RINGBUF_TYPE_TIME_STAMP"),
    ):
        v = _const(prog, name)
        if v is not None:
            rb_kw[attr] = v
    return _PageLayout(bpage, RingBufferLayout(**rb_kw))


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
    except (LookupError, *READ_FAULTS):
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
            # Linux kernel commit 2808e31ec12e ("ring-buffer: Add interface for configuring trace sub
            # buffer size") (in v6.8)
            order = int(buf.subbuf_order.value_())
        except AttributeError:
            order = 0
        except READ_FAULTS as e:  # the trace_buffer pointer is damaged: its per-CPU buffers fail below too
            warnings.append(f"trace_buffer at {buf_addr:#x} unreadable ({e})")
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
    except (LookupError, AttributeError, TypeError, *READ_FAULTS):
        warnings.append("trace clock unknown; assuming nanoseconds")
    flags = int(tr.trace_flags.value_())
    text_delta = 0
    try:
        # persistent (boot-mapped) buffers: addresses of the previous boot are shifted by text_delta.
        # Linux kernel commit 07714b4bb3f9 ("tracing: Handle old buffer mappings for event strings and
        # functions") (in v6.11)
        text_delta = int(tr.text_delta.value_())
    except AttributeError:
        pass
    cpus: List[CpuBuffer] = []
    if buf_addr:
        n = min(_nr_cpu_ids(prog), MAX_CPUS)
        try:
            bufs_ptr = buf.buffers.value_()
            raw = prog.read(bufs_ptr, 8 * n) if bufs_ptr else b""
            ptrs = struct.unpack_from("<%dQ" % (len(raw) // 8), raw)
        except READ_FAULTS as e:
            warnings.append(f"per-CPU buffer array unreadable ({e})")
            ptrs = ()
        for cpu, p in enumerate(ptrs):
            if not p:
                continue
            try:
                cpus.append(_cpu_buffer(prog, p, cpu))
            except READ_FAULTS as e:
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
        off = struct_layout(prog, "struct trace_array", ("list",)).offset("list") or 0
        while pos != head.value_() and len(out) < MAX_TRACE_ARRAYS:
            if pos in seen or not pos:
                break
            seen.add(pos)
            tr = drgn.Object(prog, "struct trace_array *", pos - off)
            try:
                out.append(_trace_array(prog, tr))
            except READ_FAULTS as e:
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
    except READ_FAULTS as e:
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
        except LookupError:
            pass
        except READ_FAULTS as e:
            raise TraceError(f"the top-level trace buffer (global_trace) is unreadable: {e}.")
        else:
            top.warnings.append(
                "the list of trace arrays is damaged: the top-level buffer was found as global_trace"
            )
            return top
    names = ", ".join(t.name for t in arrays if not t.is_top) or "none"
    raise TraceError(f"no trace instance named {want!r} in this kernel (instances: {names}).")


# ---- event formats ------------------------------------------------------------------------------------

#: The members of ``struct trace_event_call`` read (``name`` is in a union with ``tp``).
_CALL_MEMBERS = ("list.next", "class", "name", "event.type", "print_fmt", "flags")


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
        try:
            calls = struct_layout(prog, "struct trace_event_call", _CALL_MEMBERS)
            o_system = struct_layout(prog, "struct trace_event_class", ("system",)).offset("system") or 0
        except LookupError:
            calls = None
        if calls is None or not all(calls.has(m) for m in _CALL_MEMBERS):
            self.warnings.append("struct trace_event_call not in the debug info: events cannot be named")
            return
        o_list = calls.offset("list.next") or 0
        fl_tp = _const(prog, "TRACE_EVENT_FL_TRACEPOINT")
        systems: Dict[int, str] = {}
        seen = set()
        pos = head
        try:
            pos = struct.unpack("<Q", prog.read(head, 8))[0]
        except READ_FAULTS as e:
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
                c = calls.decode(prog.read(call, calls.size))
            except READ_FAULTS:
                self.warnings.append(f"trace_event_call at {call:#x} unreadable; the list walk stopped")
                break
            nxt, cls, name_ptr, ev_id, fmt_ptr, flags = (c[m] for m in _CALL_MEMBERS)
            if fl_tp is not None and flags & fl_tp:
                # trace_event_name(): a TRACE_EVENT's name is its tracepoint's (struct tracepoint .name first)
                try:
                    name_ptr = struct.unpack("<Q", prog.read(name_ptr, 8))[0]
                except READ_FAULTS:
                    name_ptr = 0
            name = read_cstr(prog, name_ptr, 128) or f"event{ev_id}"
            system = "?"
            if cls:
                if cls not in systems:
                    try:
                        sp = struct.unpack("<Q", prog.read(cls + o_system, 8))[0]
                    except READ_FAULTS:
                        sp = 0
                    systems[cls] = read_cstr(prog, sp, 128) or "?"
                system = systems[cls]
            ef = EventFormat(ev_id, system, name, [], print_fmt=None, _lazy=(call, cls, fmt_ptr))
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
        except (LookupError, TypeError, *READ_FAULTS):
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
        lazy = ef._lazy
        if lazy is None:
            return ef
        ef._lazy = None
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
    cls_layout = struct_layout(prog, "struct trace_event_class", ("get_fields", "fields"))
    o_get = cls_layout.offset("get_fields")
    o_fields = cls_layout.offset("fields")
    if o_fields is None:
        return None
    if o_get is not None:
        try:
            fn = struct.unpack("<Q", prog.read(cls + o_get, 8))[0]
        except READ_FAULTS:
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
                except (LookupError, AttributeError, *READ_FAULTS):
                    return None
    return cls + o_fields


#: The members of ``struct ftrace_event_field`` read (decoded by StructLayout whatever their shape):
#: ``len`` (an array's length; absent: read it from the type) came with Linux kernel commit b6c7abd1c28a
#: ("tracing: Fix TASK_COMM_LEN in trace event format file") (in v6.2, and 6.1 stable); ``is_signed``, an
#: int before, is a 1-bit field since Linux kernel commit afd2627f727b ("tracing: Check "%s" dereference
#: via the field and not the TP_printk format") (in v6.13, and 6.12 stable).
_FIELD_MEMBERS = (
    "link.next",
    "link.prev",
    "name",
    "type",
    "offset",
    "size",
    "is_signed",
    "len",
    "filter_type",
)


def _read_fields(prog: drgn.Program, head: int, warnings: List[str]) -> List[EventField]:
    """Fields of a ``list_head`` of ``struct ftrace_event_field``, in declaration order (the list is built
    with ``list_add()``, newest first, so it is walked through ``prev`` as the format file does)."""
    lay = struct_layout(prog, "struct ftrace_event_field", _FIELD_MEMBERS)
    o_link = lay.offset("link.next") or 0
    out: List[EventField] = []
    seen = set()
    try:
        pos = struct.unpack("<Q", prog.read(head + 8, 8))[0]  # head->prev
    except READ_FAULTS:
        warnings.append(f"event field list at {head:#x} unreadable")
        return out
    while pos != head and len(out) < MAX_FIELDS:
        if pos in seen or not pos:
            warnings.append(f"event field list at {head:#x} is corrupt")
            break
        seen.add(pos)
        base = pos - o_link
        try:
            f = lay.decode(prog.read(base, lay.size))
        except READ_FAULTS:
            warnings.append(f"event field at {base:#x} unreadable")
            break
        out.append(
            EventField(
                read_cstr(prog, f.get("name", 0), 128) or "?",
                read_cstr(prog, f.get("type", 0), 256) or "?",
                f.get("offset", 0),
                f.get("size", 0),
                bool(f.get("is_signed", 0)),
                f.get("len", 0),
                f.get("filter_type", 0),
            )
        )
        pos = f.get("link.prev", 0)
    return out


def event_formats(prog: drgn.Program) -> EventFormats:
    """The target's event formats (cached per program)."""
    return per_program(prog, "skbinspect.ftrace.formats", EventFormats)


# ---- saved cmdlines -----------------------------------------------------------------------------------


def saved_cmdlines(prog: drgn.Program, warnings: Optional[List[str]] = None) -> SavedCmdlines:
    """The kernel's saved comms (``savedcmd``), bulk-read once per program; what makes them unreadable is
    added to ``warnings`` (on the first call)."""
    return per_program(prog, "skbinspect.ftrace.cmdlines", lambda p: _read_saved_cmdlines(p, warnings))


def _read_saved_cmdlines(prog: drgn.Program, warnings: Optional[List[str]]) -> SavedCmdlines:
    try:
        sc = prog["savedcmd"]
        if not sc.value_():
            return SavedCmdlines.empty()
        pid_map_obj = sc.map_pid_to_cmdline
        n_map = pid_map_obj.type_.length or 0
        pid_map = prog.read(pid_map_obj.address_, 4 * n_map)
        num = int(sc.cmdline_num.value_())
        num = max(0, min(num, 1 << 20))
        to_pid = prog.read(sc.map_cmdline_to_pid.value_(), 4 * num) if num else b""
        try:
            comm_len = struct_layout(prog, "struct task_struct", ("comm",)).fields["comm"][1]
        except (LookupError, KeyError):
            comm_len = 16  # TASK_COMM_LEN
        names_obj = sc.saved_cmdlines
        # Linux kernel commit 44dc5c41b5b1 ("tracing: Fix wasted memory in saved_cmdlines logic") (in
        # v6.8, and stable kernels) made char *saved_cmdlines an array at the end of the struct
        if names_obj.type_.kind == drgn.TypeKind.POINTER:
            names_addr = names_obj.value_()
        else:
            names_addr = names_obj.address_
        names = prog.read(names_addr, num * comm_len) if num else b""
        return SavedCmdlines(
            struct.unpack("<%dI" % n_map, pid_map), struct.unpack("<%dI" % num, to_pid), names, comm_len
        )
    except (LookupError, AttributeError, struct.error, *READ_FAULTS) as e:
        if warnings is not None:
            warnings.append(f"saved task names (savedcmd) unreadable ({e}); tasks show as <...>")
        return SavedCmdlines.empty()


def irq_flag_bits(prog: drgn.Program) -> IrqFlagBits:
    """``enum trace_flag_type`` of the target, and whether its lines have the migrate-disable column."""

    def v(name: str) -> int:
        x = _const(prog, name)
        return x if x is not None else 0

    # The fifth column (migrate-disable depth): Linux kernel commit 54357f0c9149 ("tracing: Add
    # migrate-disabled counter to tracing output.") (in v5.15).  It is assumed where
    # tracing_gen_ctx_irq_test() exists, which is older (v5.12): 5.12 .. 5.14 kernels get a column their
    # trace file does not have (see docs/kernel/ftrace.md).
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


@dataclass
class CpuPages:
    """The sub-buffers of one CPU in reading order: ``(buffer_page address, data page address, order,
    emit_from)``."""

    cpu: int
    pages: List[Tuple[int, int, int, int]]
    damage: List[Damage]


def cpu_pages(prog: drgn.Program, tr: TraceArray, cb: CpuBuffer) -> CpuPages:
    """The sub-buffers of ``cb`` in the kernel's reading order (see :func:`.ringbuf.walk_ring`)."""
    bpage = _page_layout(prog).bpage
    order_default = tr.subbuf_order
    read, size = prog.read, bpage.size
    unpack, pos, _ = bpage.unpacker(_BPAGE_MEMBERS)  # one struct call per buffer_page
    i_next, i_prev, i_read, i_page = (pos[m] for m in _BPAGE_MEMBERS[:4])
    # Linux kernel commit f9b94daa542a ("ring-buffer: Set new size of the ring buffer sub page") (in
    # v6.8): each page's own order; before, every sub-buffer is one page
    i_order = pos.get("order")

    def read_bpage(addr: int) -> Tuple[int, int, int, int, int]:
        v = unpack(read(addr, size))
        order = v[i_order] if i_order is not None else order_default
        return v[i_next], v[i_read], v[i_page], order, v[i_prev]

    pages, dmg = walk_ring(
        read_bpage,
        cpu=cb.cpu,
        reader_page=cb.reader_page,
        commit_page=cb.commit_page,
        pages=cb.pages,
        head_page=cb.head_page,
        nr_pages=cb.nr_pages,
        list_offset=bpage.offset("list.next") or 0,
        max_pages=MAX_PAGES,
    )
    return CpuPages(cb.cpu, pages, dmg)


_DROPPED = object()
_U32 = struct.Struct("<I").unpack_from
_TYPE_MASK, _POS_SHIFT = KeyCodec.TYPE_MASK, KeyCodec.POS_SHIFT  # fixed in every codec


class TraceReader:
    """Reads one trace array: its per-CPU sub-buffers, decoded lazily, merged by time stamp.

    Memory use is bounded by one sub-buffer per CPU being merged (plus the page lists), not by the number
    of events.  :meth:`windows` is the fast path (keys, see :class:`~.ringbuf.KeyCodec`);
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
        #: The kernel stack records :meth:`grouped_windows` took out of the stream, by the event they
        #: follow: ``(key, id(page))`` of the event -> ``[(page, key of a stack record)]``.  Whoever handles
        #: an event takes its stacks out (:meth:`pop_stacks`, or ``attached_stacks.pop`` in a hot loop), so
        #: the dict only holds the stacks of events not handled yet.
        self.attached_stacks: Dict[Tuple[int, int], List[Tuple[bytes, int]]] = {}

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
            except READ_FAULTS as e:
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
        cpu_of = self.codec.cpu
        for keys, pages in self.windows():
            for k in keys:
                yield TraceEvent(self, k, pages[cpu_of(k)])

    def pop_stacks(self, key: int, page: bytes) -> Optional[List[Tuple[bytes, int]]]:
        """Take the stack records attached to the event of ``key`` in ``page`` (see
        :attr:`attached_stacks`): ``[(page, key of a stack record)]``, or None."""
        return self.attached_stacks.pop((key, id(page)), None)

    def events(self, types: Optional[Iterable[int]] = None) -> Iterator["TraceEvent"]:
        """Decoded events, oldest first, each kernel stack record attached to the event it follows on the
        same CPU (``ev.stack``); a stack record with no such event (its event was overwritten when the
        buffer wrapped) is an event of its own.

        :param types: event ids to keep (default all); the stacks of the others are dropped with them
            (orphan stack records are kept when ``types`` includes ``TRACE_STACK``).
        """
        pop = self.attached_stacks.pop
        for k, page, page_id in self.grouped_keys(types):
            ev = TraceEvent(self, k, page)
            ev.stack_records = pop((k, page_id), None)
            yield ev

    def grouped_keys(self, types: Optional[Iterable[int]] = None) -> Iterator[Tuple[int, bytes, int]]:
        """The fast path under :meth:`events`: ``(key, page, id(page))`` per event in time order, filtered
        by ``types``; an event's stack records are in ``attached_stacks[(key, id(page))]`` (pop them)."""
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
        """Like :meth:`windows`, with stack records taken out and attached (:attr:`attached_stacks`) and the events
        not in ``types`` left out."""
        want = frozenset(types) if types is not None else None
        return merge_windows([self._grouped(cp, want) for cp in self.pages], self.codec)

    def _grouped(self, cp: CpuPages, want: Optional[frozenset] = None) -> Iterator[Batch]:
        """One CPU's batches with the stack records that follow an event taken out (and remembered in
        :attr:`attached_stacks` for that event: one from ``options/stacktrace``, one more per ``stacktrace``
        trigger), and the events not in ``want`` left out with their stacks.  A batch is held back until
        the next one is known, since an event's stack can start the next sub-buffer."""
        st = self.stack_type
        stacks = self.attached_stacks
        tmask = self.codec.TYPE_MASK
        orphans = want is None or st in want
        held: Optional[Batch] = None
        # (key, id(page)) of the last event, whose stacks follow; DROPPED after an event not wanted
        owner: Any = None
        for page, keys, mono in self._cpu_batches(cp):
            pid = id(page)
            types = {k & tmask for k in keys}
            if st not in types:  # no stack record in this sub-buffer: filter at C speed
                if want is None:
                    kept = keys
                elif types <= want:
                    kept = keys
                else:
                    kept = [k for k in keys if k & tmask in want]
                last = keys[-1]
                owner = (last, pid) if want is None or last & tmask in want else _DROPPED
                if held is not None:
                    yield held
                held = (page, kept, mono)
                continue
            kept = []
            for k in keys:
                t = k & tmask
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

    Built from a key (:class:`~.ringbuf.KeyCodec`) and the sub-buffer it points into.
    """

    __slots__ = ("reader", "key", "ts", "cpu", "type", "page", "off", "length", "stack_records", "_fields")

    def __init__(self, reader: TraceReader, key: int, page: bytes) -> None:
        # KeyCodec.unpack() and payload() inlined: this runs once per event
        c = reader.codec
        self.reader = reader
        self.key = key
        self.ts = key >> c.ts_shift
        self.cpu = (key >> c.cpu_shift) & c.cpu_mask
        self.page = page
        self.type = key & _TYPE_MASK
        w = (key >> _POS_SHIFT) & c.pos_mask
        h = _U32(page, w * 4)[0]
        if h & 31:
            self.off, self.length = (w + 1) * 4, (h & 31) * 4
        else:
            self.off, self.length = (w + 2) * 4, _U32(page, w * 4 + 4)[0] - 4
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
