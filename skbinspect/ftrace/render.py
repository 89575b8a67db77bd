"""Rendering for ``skbinspect trace`` and ``skbinspect drops``: the tracefs ``trace`` line format, JSON
objects, and the drops tables and chart (:mod:`skbinspect.chart`).  No kernel access here beyond the decoded events (the trace
file's columns are described in docs/kernel/ftrace.md)."""

from __future__ import annotations

import json
import struct
from operator import itemgetter
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, TextIO, Tuple

from skbinspect.ftrace.formats import (
    EventField,
    EventFormat,
    IrqFlagBits,
    SavedCmdlines,
    decode_stack,
    decode_value,
    format_irq_flags,
    format_timestamp,
)
from skbinspect.ftrace.reader import TraceArray, TraceEvent, TraceReader
from skbinspect.ftrace.ringbuf import KeyCodec
from skbinspect.ftrace.skb_events import ReasonNames, Symbolizer, reason_names

__all__ = [
    "TraceTextFormatter",
    "trace_header",
    "TRACE_JSON_LINE",
    "JsonMember",
    "event_json",
    "JsonLines",
    "loss_lines",
    "render_drops",
    "drops_json",
]

#: FTRACE_TRAMPOLINE_MARKER (kernel/trace/trace.h: (unsigned long)INT_MAX) in a stack: Linux kernel commit
#: 6ce5a6f0a07d ("tracing: Fix function name for trampoline") (in v6.13).
FTRACE_TRAMPOLINE_MARKER = 0x7FFFFFFF


class TraceTextFormatter:
    """Formats events as the tracefs ``trace`` file does (``print_trace_fmt()``): the context columns
    (``trace_print_context()``: comm-pid, [tgid], [cpu], irq flags, time) then the event's own text
    (its ``print_fmt``, or the ftrace entry's printer for stacks and ``print``)."""

    def __init__(self, reader: TraceReader, syms: Symbolizer) -> None:
        self.reader = reader
        self.syms = syms
        opts = reader.tr.options
        self.irq_info = opts.get("irq-info", True)
        self.context_info = opts.get("context-info", True)
        self.record_tgid = opts.get("record-tgid", False)
        self.sym_offset = opts.get("sym-offset", False)
        self.sym_addr = opts.get("sym-addr", False)
        self.in_ns = reader.tr.in_ns
        self.bits = reader.flag_bits
        self.delta = reader.tr.text_delta
        self.stack_type = reader.stack_type
        self._who: Dict[int, str] = {}
        self._flags: Dict[int, str] = {}
        self._symfmt = lambda addr, off: syms.format(addr, off, size=off)  # %pS: func+0xoff/0xsize [mod]

    def context(self, ev: TraceEvent) -> str:
        if not self.context_info:
            return ""
        page, off = ev.page, ev.off
        _, fl, pc, pid = _HDR.unpack_from(page, off) if ev.length >= 8 else (0, 0, 0, -1)
        who = self._who.get(pid)
        if who is None:
            who = self._who[pid] = "%16s-%-7d " % (ev.reader.cmdlines.find(pid), pid) + (
                "(-------) " if self.record_tgid else ""
            )
        flags = ""
        if self.irq_info:
            fk = fl << 8 | pc
            cached = self._flags.get(fk)
            if cached is None:
                cached = self._flags[fk] = format_irq_flags(fl, pc, self.bits)
            flags = cached
        ts = ev.ts
        if self.in_ns:
            us = (ts + 500) // 1000
            tm = "%5d.%06d" % (us // 1000000, us % 1000000)
        else:
            tm = "%12d" % ts
        return "%s[%03d] %s %s: " % (who, ev.cpu, flags, tm)

    def ip_sym(self, ip: int) -> str:
        """``seq_print_ip_sym()``."""
        if not ip:
            return "0"
        info = self.syms.lookup(ip, self.sym_offset)
        if info is None:
            s = "0x%08x" % ip
        elif self.sym_offset:
            s = info.format(ip, True, True)
        else:
            s = info.name
        if self.sym_addr:
            s += " <%016x>" % ip
        return s

    def stack_lines(self, frames: Sequence[int]) -> List[str]:
        out = []
        for ip in frames:
            if ip == FTRACE_TRAMPOLINE_MARKER:
                out.append(" => [FTRACE TRAMPOLINE]")
            else:
                out.append(" => " + self.ip_sym(ip + self.delta))
        return out

    def body(self, ev: TraceEvent) -> str:
        """The event's text after the context columns (may span lines, without the final newline)."""
        if ev.type == self.stack_type:
            return "\n".join(["<stack trace>"] + self.stack_lines(ev.stack or []))
        fmt = ev.format
        if fmt is None:
            return "Unknown type %d" % ev.type
        if fmt.system == "ftrace" and fmt.name == "print":
            buf = ev.fields.get("buf", "")
            ip = ev.fields.get("ip", 0)
            return "%s: %s" % (self.ip_sym(ip), str(buf).rstrip("\n"))
        pf = fmt.printer()
        if pf is not None:
            try:
                return "%s: %s" % (fmt.name, pf.render(ev.fields, self._symfmt))
            except Exception:  # noqa: BLE001 - an odd print_fmt must not stop the listing
                pass
        return "%s: %s" % (fmt.name, " ".join(f"{k}={_plain(v, fmt.field(k))}" for k, v in ev.fields.items()))

    def text(self, ev: TraceEvent, with_stack: bool = False) -> str:
        """The event's lines; with ``with_stack`` its attached stack follows as the trace file shows it."""
        s = self.context(ev) + self.body(ev)
        if with_stack:
            for st in ev.stack_events:
                s += "\n" + self.context(st) + self.body(st)
        return s


def _plain(v: Any, f: Any) -> str:
    if isinstance(v, int) and f is not None and getattr(f, "is_pointer", False):
        return "%016x" % v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    return str(v)


def trace_header(tr: TraceArray, reader: TraceReader, ncpus: int) -> List[str]:
    """A header like the trace file's: entries in the buffer / written, CPUs, and the column legend."""
    fmtr_cols = "||||" + ("|" if reader.flag_bits.migrate_column else "")
    lines = [
        f"# skbinspect trace: {'top-level buffer' if tr.is_top else 'instance ' + tr.name}"
        f" (clock {tr.clock}, sub-buffer {tr.subbuf_size} bytes)",
        "#",
        f"# entries-in-buffer/entries-written: {tr.entries}/{tr.written}   #P:{ncpus}",
        "#",
        f"#           TASK-PID     CPU#  {fmtr_cols}  TIMESTAMP  FUNCTION",
        "#              | |         |   " + "|" * len(fmtr_cols) + "     |         |",
    ]
    return lines


def loss_lines(tr: TraceArray, reader: TraceReader) -> List[str]:
    """What was lost or skipped, for people (empty when nothing was)."""
    out = []
    for c in reader.cpu_buffers:
        parts = []
        if c.overrun:
            parts.append(f"{c.overrun} overwritten (the buffer wrapped)")
        if c.dropped:
            parts.append(f"{c.dropped} dropped (buffer full, overwrite off)")
        if c.commit_overrun:
            parts.append(f"{c.commit_overrun} lost to nested writers (commit overrun)")
        if c.read:
            parts.append(f"{c.read} consumed by trace_pipe readers")
        if parts:
            out.append(f"CPU {c.cpu}: " + ", ".join(parts))
    if reader.missed_pages:
        out.append(f"{reader.missed_pages} sub-buffers flagged RB_MISSED_EVENTS (events lost before them)")
    for d in reader.damage:
        out.append(f"skipped: {d}")
    return out


# ---- trace --json lines ---------------------------------------------------------------------------------
#
# One description of a line, TRACE_JSON_LINE, drives every way one is built: event_json() builds the dict
# member by member; JsonLines compiles the same members once per event type into a %-template, which
# line_key() and the inlined loop of write_all() fill in.  Adding a member is one entry in the list.

#: What a member's value depends on, which decides how a compiled template holds it:
CONST = "const"  # the same on every line of one event type (instance, event name): literal text
KEY = "key"  # read from the event's key (ts, time, cpu): a %-conversion, computed inline by the fast path
TASK = "task"  # struct trace_entry's pid, flags, preempt_count: one %s, cached per (pid, flags, pc)
FIELDS = "fields"  # the event's own fields: fixed-size scalars as %-conversions, the rest as one %s
EXTRA = "extra"  # optional; from the event type and the fields named in ``inputs``: one cached %s
STACK = "stack"  # optional; from the stacks attached to the event: one %s made per event

#: The template's %-arguments are ``(ts, time, cpu, task) + field values + (more fields, extra, stack)``:
#: the members that take arguments come in this order of sources (CONST members go anywhere).
_ARGUMENT_ORDER = (KEY, TASK, FIELDS, EXTRA, STACK)
#: The KEY members, in the order the fast path computes their values.
_KEY_VALUES = ("ts", "time", "cpu")

_OMIT = object()  # a member's value on a line that does not have it


class _LineFacts:
    """What the members of one line are computed from (the fast path fills in only what a source needs).

    :ivar fields: the event's fields by name (None on a stack record, which has none).
    :ivar frames: the return addresses of each stack of the line: a stack record's own, or the stacks
        attached to an event when they are shown (else None).
    """

    __slots__ = ("out", "ts", "cpu", "pid", "flags", "pc", "type", "format", "fields", "frames")

    def __init__(
        self,
        out: "_LineContext",
        type: int,
        format: Optional[EventFormat],
        ts: int = 0,
        cpu: int = 0,
        pid: int = -1,
        flags: int = 0,
        pc: int = 0,
        fields: Optional[Dict[str, Any]] = None,
        frames: Optional[List[List[int]]] = None,
    ) -> None:
        self.out = out
        self.type = type
        self.format = format
        self.ts = ts
        self.cpu = cpu
        self.pid = pid
        self.flags = flags
        self.pc = pc
        self.fields = fields
        self.frames = frames


class JsonMember(NamedTuple):
    """One member of a ``trace --json`` line.

    :ivar value: the member's value as a plain JSON-able object, or ``_OMIT`` if the line has none.
    :ivar conv: KEY members: the %-conversion of the value in a template.
    :ivar inputs: EXTRA members: the event fields ``value`` reads (a compiled template caches the
        member's text per event type and values of these fields).
    :ivar text: the value as JSON text (or ``_OMIT``), when faster than ``json.dumps(value(...))``.
    """

    name: str
    source: str
    value: Callable[[_LineFacts], Any]
    conv: str = ""
    inputs: Tuple[str, ...] = ()
    text: Optional[Callable[[_LineFacts], Any]] = None


def _event_name(x: _LineFacts) -> str:
    if x.format is not None:
        return x.format.full_name
    return "ftrace:kernel_stack" if x.type == x.out.stack_type else f"event{x.type}"


def _field_value(v: Any, fd: Optional[EventField]) -> Any:
    """A field's value in JSON: pointers as hex strings, bytes as hex digits."""
    if isinstance(v, int) and fd is not None and fd.is_pointer:
        return "0x%x" % v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    return v


def _fields(x: _LineFacts) -> Any:
    if x.fields is None:
        return _OMIT
    f = x.format
    return {k: _field_value(v, f.field(k) if f else None) for k, v in x.fields.items()}


def _is_skb_event(f: Optional[EventFormat]) -> bool:
    return f is not None and f.system == "skb" and f.name in ("kfree_skb", "consume_skb")


def _location_symbol(x: _LineFacts) -> Any:
    loc = x.fields.get("location") if x.fields is not None and _is_skb_event(x.format) else None
    return _OMIT if loc is None else x.out.syms.format(loc)


def _reason(x: _LineFacts) -> Any:
    if x.fields is None or "reason" not in x.fields or not _is_skb_event(x.format):
        return _OMIT
    return x.out.reasons.name(x.fields["reason"])


def _stack(x: _LineFacts) -> Any:
    return _OMIT if x.frames is None else x.out.frames(x.frames[0])


def _stack_text(x: _LineFacts) -> Any:
    return _OMIT if x.frames is None else x.out.frames_text(x.frames[0])


def _several_stacks(x: _LineFacts) -> Optional[List[List[int]]]:
    """The stacks, if there are several and they differ (``options/stacktrace`` and a trigger)."""
    fr = x.frames
    return fr if fr is not None and any(s != fr[0] for s in fr[1:]) else None


def _stacks(x: _LineFacts) -> Any:
    fr = _several_stacks(x)
    return _OMIT if fr is None else [x.out.frames(s) for s in fr]


def _stacks_text(x: _LineFacts) -> Any:
    fr = _several_stacks(x)
    return _OMIT if fr is None else "[" + ", ".join(x.out.frames_text(s) for s in fr) + "]"


#: The members of a ``trace --json`` line, in order.
TRACE_JSON_LINE: Tuple[JsonMember, ...] = (
    JsonMember("instance", CONST, lambda x: x.out.instance),
    JsonMember("ts", KEY, lambda x: x.ts, conv="%d"),
    JsonMember("time", KEY, lambda x: format_timestamp(x.ts, x.out.in_ns).strip(), conv='"%s"'),
    JsonMember("cpu", KEY, lambda x: x.cpu, conv="%d"),
    JsonMember("pid", TASK, lambda x: x.pid),
    JsonMember("comm", TASK, lambda x: x.out.cmdlines.find(x.pid)),
    JsonMember("flags", TASK, lambda x: format_irq_flags(x.flags, x.pc, x.out.bits)),
    JsonMember("event", CONST, _event_name),
    JsonMember("fields", FIELDS, _fields),
    JsonMember("location_symbol", EXTRA, _location_symbol, inputs=("location",)),
    JsonMember("reason", EXTRA, _reason, inputs=("reason",)),
    JsonMember("stack", STACK, _stack, text=_stack_text),
    JsonMember("stacks", STACK, _stacks, text=_stacks_text),
)


def _check_line(members: Sequence[JsonMember]) -> None:
    """What a compiled template needs of the member list (checked at import)."""
    sources = [m.source for m in members if m.source != CONST]
    runs = [s for i, s in enumerate(sources) if i == 0 or sources[i - 1] != s]
    assert runs == [s for s in _ARGUMENT_ORDER if s in runs], f"members out of template order: {runs}"
    assert tuple(m.name for m in members if m.source == KEY) == _KEY_VALUES
    for src in (TASK, EXTRA, STACK):  # each is one %s: no literal member among them
        at = [i for i, m in enumerate(members) if m.source == src]
        assert not at or at == list(range(at[0], at[-1] + 1)), f"{src} members are not contiguous"


_check_line(TRACE_JSON_LINE)


def _event_first(members: Sequence[JsonMember]) -> Tuple[JsonMember, ...]:
    out = [m for m in members if m.name != "event"]
    i = next(i for i, m in enumerate(out) if m.name == "flags")
    return tuple(out[:i] + [m for m in members if m.name == "event"] + out[i:])


#: Lines built member by member (event_json(): stack records, and events with no template: of an unknown
#: type, without fixed-size fields, or cut short) have always had "event" before "flags"; kept so that
#: the output does not change.
_UNTEMPLATED_LINE = _event_first(TRACE_JSON_LINE)

_TASK = tuple(m for m in TRACE_JSON_LINE if m.source == TASK)
_EXTRA = tuple(m for m in TRACE_JSON_LINE if m.source == EXTRA)
_STACK = tuple(m for m in TRACE_JSON_LINE if m.source == STACK)


def _json_pairs(members: Sequence[JsonMember], x: _LineFacts) -> List[str]:
    """``"name": value`` as JSON text for each member the line has."""
    out = []
    for m in members:
        v = m.text(x) if m.text is not None else m.value(x)
        if v is _OMIT:
            continue
        out.append(json.dumps(m.name) + ": " + (v if m.text is not None else json.dumps(v)))
    return out


class _LineContext:
    """What every line of one trace array's ``--json`` output shares (and caches)."""

    def __init__(self, fmt: TraceTextFormatter, instance: str) -> None:
        self.instance: str = instance
        self.in_ns: bool = fmt.in_ns
        self.bits: IrqFlagBits = fmt.bits
        self.stack_type: int = fmt.stack_type
        self.cmdlines: SavedCmdlines = fmt.reader.cmdlines
        self.syms: Symbolizer = fmt.syms
        self.reasons: ReasonNames = reason_names(fmt.reader.prog)
        self.delta: int = fmt.delta
        self._frame_text: Dict[int, str] = {}

    def frame(self, ip: int) -> Dict[str, str]:
        """One stack frame: its address (relocated by the text delta) and symbol."""
        a = ip + self.delta
        sym = "[FTRACE TRAMPOLINE]" if ip == FTRACE_TRAMPOLINE_MARKER else self.syms.format(a)
        return {"address": "0x%x" % a, "symbol": sym}

    def frames(self, ips: Sequence[int]) -> List[Dict[str, str]]:
        return [self.frame(ip) for ip in ips]

    def frames_text(self, ips: Sequence[int]) -> str:
        """``json.dumps(self.frames(ips))``, from the JSON text of each frame, cached."""
        cache = self._frame_text
        out = []
        for ip in ips:
            s = cache.get(ip)
            if s is None:
                s = cache[ip] = json.dumps(self.frame(ip))
            out.append(s)
        return "[" + ", ".join(out) + "]"

    def facts(self, ev: TraceEvent, stacks: bool) -> _LineFacts:
        is_stack = ev.type == self.stack_type
        if is_stack:
            frames: Optional[List[List[int]]] = [ev.stack or []]
        else:
            frames = ev.stacks if stacks and ev.stack_records else None
        return _LineFacts(
            self,
            ev.type,
            ev.format,
            ev.ts,
            ev.cpu,
            ev.pid,
            ev.flags,
            ev.preempt_count,
            None if is_stack else ev.fields,
            frames,
        )

    def as_dict(self, ev: TraceEvent, stacks: bool) -> Dict[str, Any]:
        x = self.facts(ev, stacks)
        out = {}
        for m in _UNTEMPLATED_LINE:
            v = m.value(x)
            if v is not _OMIT:
                out[m.name] = v
        return out


def event_json(
    ev: TraceEvent, fmt: TraceTextFormatter, instance: str, stacks: bool = False
) -> Dict[str, Any]:
    """One event as a JSON object (:data:`TRACE_JSON_LINE`): time (ns and as the trace file prints it),
    cpu, pid, comm, event name, flags, fields (pointers as hex strings), for skb events the symbolised
    location and reason name, and with ``stacks`` the stacks recorded with it."""
    return _LineContext(fmt, instance).as_dict(ev, stacks)


_HDR = struct.Struct("<HBBi")  # struct trace_entry: type, flags, preempt_count, pid
_U32 = struct.Struct("<I")
_TYPE_MASK, _POS_SHIFT = KeyCodec.TYPE_MASK, KeyCodec.POS_SHIFT  # fixed in every codec


def _stack_frames(page: bytes, k: int, codec: KeyCodec) -> List[int]:
    return decode_stack(page, *codec.payload(page, k))


def _pct(text: str) -> str:
    return text.replace("%", "%%")


class _Template:
    """The compiled line of one event type: :data:`TRACE_JSON_LINE` as a %-template (see
    ``_ARGUMENT_ORDER`` for its arguments), the ``struct`` that unpacks the event's fixed-size fields, and
    what the EXTRA members need."""

    __slots__ = ("text", "scalars", "min_len", "others", "extra", "extra_names", "extra_values", "format")

    def __init__(self, ctx: _LineContext, f: EventFormat) -> None:
        dec = f.decoder
        names = list(dec.scalar_names)
        self.format = f
        self.scalars = dec.scalar_struct
        self.min_len = dec.min_len
        #: fields that are not fixed-size scalars: ``(field, its name as JSON)``, written through ``%s``
        self.others = [(fd, json.dumps(fd.name)) for fd in dec.others]
        x = _LineFacts(ctx, f.id, f)
        pieces: List[str] = []
        done = set()
        for m in TRACE_JSON_LINE:
            name = _pct(json.dumps(m.name)) + ": "
            if m.source == CONST:
                pieces.append(name + _pct(json.dumps(m.value(x))))
            elif m.source == KEY:
                pieces.append(name + m.conv)
            elif m.source == FIELDS:
                parts = []
                for n in names:
                    fd = f.field(n)
                    parts.append(
                        _pct(json.dumps(n)) + ": " + ('"0x%x"' if fd is not None and fd.is_pointer else "%d")
                    )
                pieces.append(name + "{" + ", ".join(parts) + "%s}")
            elif m.source not in done:
                # TASK: '"pid": .., "comm": .., ...'; EXTRA and STACK: ', "name": ..' pairs, maybe none
                if m.source == TASK:
                    pieces.append("%s")
                else:
                    pieces[-1] += "%s"
            done.add(m.source)
        self.text = "{" + ", ".join(pieces) + "}"
        inputs = [n for m in _EXTRA for n in m.inputs if n in names]
        self.extra_names = tuple(dict.fromkeys(inputs))
        #: the EXTRA members' text when it depends on no field value; else None, and ``extra_values``
        #: picks the values of ``extra_names`` (one value, or a tuple of several) from the unpacked scalars
        self.extra: Optional[str] = None
        self.extra_values: Callable[[Tuple[int, ...]], Any] = tuple
        if self.extra_names:
            self.extra_values = itemgetter(*(names.index(n) for n in self.extra_names))
        else:
            self.extra = "".join(", " + p for p in _json_pairs(_EXTRA, x))


class JsonLines:
    """``trace --json`` lines, fast: the lines of :func:`event_json`, written through one template per
    event type compiled from :data:`TRACE_JSON_LINE` (fields unpacked with one ``struct`` call; the task
    columns, EXTRA members and stack frames cached)."""

    def __init__(self, fmt: TraceTextFormatter, instance: str, stacks: bool = False) -> None:
        self.fmt = fmt
        self.reader = fmt.reader
        self.instance = instance
        self.stacks = stacks
        self.in_ns = fmt.in_ns
        self.ctx = _LineContext(fmt, instance)
        self.codec = self.reader.codec
        self._tpl: Dict[int, Optional[_Template]] = {}
        self._task: Dict[int, str] = {}  # pid << 16 | flags << 8 | preempt_count -> the TASK members' text
        self._extra: Dict[Any, str] = {}  # (type, values of the EXTRA inputs) -> the EXTRA members' text

    def _compile(self, t: int) -> Optional[_Template]:
        """The template of event type ``t``, or None: stack records, events of an unknown type or without
        fixed-size fields are written through :func:`event_json`."""
        if t == self.fmt.stack_type:
            return None
        f = self.reader.formats.get(t)
        if f is None or not f.decoder.scalar_names:
            return None
        return _Template(self.ctx, f)

    def _task_text(self, ck: int, pid: int, fl: int, pc: int) -> str:
        x = _LineFacts(self.ctx, 0, None, pid=pid, flags=fl, pc=pc)
        s = self._task[ck] = ", ".join(_json_pairs(_TASK, x))
        return s

    def _extra_text(self, c: _Template, ek: Tuple[int, Any]) -> str:
        values = ek[1] if len(c.extra_names) > 1 else (ek[1],)
        x = _LineFacts(self.ctx, ek[0], c.format, fields=dict(zip(c.extra_names, values)))
        s = self._extra[ek] = "".join(", " + p for p in _json_pairs(_EXTRA, x))
        return s

    def line(self, ev: TraceEvent) -> str:
        return self.line_key(ev.key, ev.page, ev.stack_records, ev)

    def line_key(
        self,
        k: int,
        page: bytes,
        stack_records: Optional[List[Tuple[bytes, int]]],
        ev: Optional[TraceEvent] = None,
    ) -> str:
        """The line of the event of key ``k`` (see :meth:`TraceReader.grouped_keys`)."""
        # KeyCodec.unpack() and payload() inlined: this runs for every event with variable fields
        codec = self.codec
        t = k & _TYPE_MASK
        try:
            c = self._tpl[t]
        except KeyError:
            c = self._tpl[t] = self._compile(t)
        w = (k >> _POS_SHIFT) & codec.pos_mask
        h = _U32.unpack_from(page, w * 4)[0]
        if h & 31:
            off, length = (w + 1) * 4, (h & 31) * 4
        else:
            off, length = (w + 2) * 4, _U32.unpack_from(page, w * 4 + 4)[0] - 4
        if c is None or length < c.min_len:
            if ev is None:
                ev = TraceEvent(self.reader, k, page)
                ev.stack_records = stack_records
            return json.dumps(self.ctx.as_dict(ev, self.stacks))
        _, fl, pc, pid = _HDR.unpack_from(page, off)
        vals = c.scalars.unpack_from(page, off)
        ts = k >> codec.ts_shift
        if self.in_ns:  # the "time" member: format_timestamp() inlined
            us = (ts + 500) // 1000
            tm = "%d.%06d" % (us // 1000000, us % 1000000)
        else:
            tm = "%d" % ts
        ck = pid << 16 | fl << 8 | pc
        task = self._task.get(ck)
        if task is None:
            task = self._task_text(ck, pid, fl, pc)
        more = ""
        for fd, jn in c.others:
            v = decode_value(page, off, length, fd)
            if v is not None:
                more += ", " + jn + ": " + json.dumps(_field_value(v, fd))
        extra = c.extra
        if extra is None:
            ek = (t, c.extra_values(vals))
            extra = self._extra.get(ek)
            if extra is None:
                extra = self._extra_text(c, ek)
        stack = ""
        if self.stacks and stack_records:
            frames = [_stack_frames(sp, sk, codec) for sp, sk in stack_records]
            x = _LineFacts(self.ctx, t, c.format, frames=frames)
            stack = "".join(", " + p for p in _json_pairs(_STACK, x))
        return c.text % (
            (ts, tm, (k >> codec.cpu_shift) & codec.cpu_mask, task) + vals + (more, extra, stack)
        )

    def write_all(
        self,
        windows: Iterable[Tuple[List[int], Dict[int, bytes]]],
        out: TextIO,
        stacks_of: Dict[Any, Any],
        skip_type: Optional[int] = None,
        threshold: Optional[int] = None,
    ) -> int:
        """Write the lines of the events of ``windows`` (``TraceReader.grouped_windows()``) to ``out``:
        :meth:`line_key` inlined for the common case (a small fixed-size event without stacks or
        variable fields).  Returns the number of lines."""
        codec = self.codec
        # the key's fields, read inline (see KeyCodec)
        ts_shift, cshift, cmask = codec.ts_shift, codec.cpu_shift, codec.cpu_mask
        pshift, pmask, tmask = codec.POS_SHIFT, codec.pos_mask, codec.TYPE_MASK
        u32 = _U32.unpack_from
        hdr = _HDR.unpack_from
        tpls = self._tpl
        tasks, extras = self._task, self._extra
        in_ns = self.in_ns
        pop = stacks_of.pop
        line_key = self.line_key
        buf: List[str] = []
        n = 0
        for keys, pages in windows:
            single = next(iter(pages.values())) if len(pages) == 1 else None
            for k in keys:
                page = single if single is not None else pages[(k >> cshift) & cmask]
                srec = pop((k, id(page)), None) if stacks_of else None
                t = k & tmask
                if t == skip_type:
                    continue
                ts = k >> ts_shift
                if threshold is not None and ts < threshold:
                    continue
                c = tpls.get(t)  # None: not compiled yet, or written through event_json()
                w = (k >> pshift) & pmask
                h = u32(page, w * 4)[0]
                if c is None or srec is not None or not h & 31 or (h & 31) * 4 < c.min_len or c.others:
                    buf.append(line_key(k, page, srec))
                    continue
                # line_key() for a small event (type_len != 0: the payload follows the header word)
                off = w * 4 + 4
                _, fl, pc, pid = hdr(page, off)
                vals = c.scalars.unpack_from(page, off)
                ck = pid << 16 | fl << 8 | pc
                task = tasks.get(ck)
                if task is None:
                    task = self._task_text(ck, pid, fl, pc)
                extra = c.extra
                if extra is None:
                    ek = (t, c.extra_values(vals))
                    extra = extras.get(ek)
                    if extra is None:
                        extra = self._extra_text(c, ek)
                if in_ns:  # the "time" member: format_timestamp() inlined
                    us = (ts + 500) // 1000
                    tm = "%d.%06d" % (us // 1000000, us % 1000000)
                else:
                    tm = "%d" % ts
                buf.append(c.text % ((ts, tm, (k >> cshift) & cmask, task) + vals + ("", extra, "")))
            if len(buf) >= 512:
                n += len(buf)
                buf.append("")
                out.write("\n".join(buf))
                buf.clear()
        if buf:
            n += len(buf)
            buf.append("")
            out.write("\n".join(buf))
        return n


# ---- drops ----------------------------------------------------------------------------------------------


def _secs(ns: Optional[int], in_ns: bool = True) -> str:
    if ns is None:
        return "-"
    return format_timestamp(ns, in_ns).strip()


def render_drops(report: Any, out: Any = None, stacks: int = 3, timeline: bool = True) -> None:
    """The drops report (:class:`skbinspect.drops.DropsReport`) as rich tables on a terminal, plain text
    when piped."""
    from rich.markup import escape
    from rich.table import Table

    from skbinspect.output import console, fit_hints

    con = out or console()
    tr = report.trace_array
    title = "top-level buffer" if tr.is_top else f"instance {escape(tr.name)}"
    con.print(
        f"[bold]kfree_skb drops[/bold] in the {title}: {report.total} drops"
        + (f" of {report.kfree_total} kfree_skb events" if report.kfree_total != report.total else "")
        + (f", {report.consumed} consume_skb" if report.consumed else "")
        + (f" over {report.span_s:.6f} s" if report.span_s else "")
    )
    if not report.has_reasons:
        con.print("This kernel records no drop reasons in kfree_skb (before 5.17): grouped by location only.")
    for line in report.notes:
        con.print(f"[yellow]note:[/yellow] {escape(line)}")
    if not report.groups:
        con.print("No kfree_skb events in the buffer" + (" match the filter." if report.filtered else "."))
        return
    t = Table(title="by reason and location", title_justify="left", show_lines=False)
    for col, just in (
        ("reason", "left"),
        ("location", "left"),
        ("count", "right"),
        ("first", "right"),
        ("last", "right"),
        ("rate/s", "right"),
        ("device / queue", "left"),
        ("tasks", "left"),
    ):
        t.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    for g in report.groups:
        t.add_row(  # str cells are printed literally (output.literal_cells): no escape()
            g.reason_label,
            g.location_symbol or "-",
            str(g.count),
            _secs(g.first_ts, report.in_ns),
            _secs(g.last_ts, report.in_ns),
            "%.1f" % g.rate if g.rate is not None else "-",
            g.device_label or "-",
            ", ".join(f"{c} ({n})" if len(g.tasks) > 1 else c for c, n in g.tasks.most_common(2)),
        )
    fit_hints(
        t, wrap=("tasks", "device / queue"), drop=("first", "last", "tasks", "device / queue", "rate/s")
    )
    con.print(t)
    if stacks:
        for g in report.groups:
            if not g.stacks:
                continue
            nd = g.distinct_stacks
            con.print(
                f"[bold]{escape(g.reason_label)}[/bold] at {escape(g.location_symbol or '-')}: "
                f"{nd} distinct stack{'s' if nd != 1 else ''}"
                + (f", the {stacks} most common" if nd > stacks else "")
            )
            for frames, n in g.top_stacks(stacks, trim=True):
                con.print(f"  {n} x {escape(frames[0]) if frames else ''}")
                for fr in frames[1:]:
                    con.print(f"        {escape(fr)}")
    if timeline and report.times:
        from skbinspect.chart import chart_for_console

        for line in chart_for_console(con, report.times, report.in_ns, report.last_ts):
            con.print(escape(line), highlight=False)


def drops_json(report: Any) -> Dict[str, Any]:
    return report.to_json()
