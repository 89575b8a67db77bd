"""Rendering for ``skbinspect trace`` and ``skbinspect drops``: the tracefs ``trace`` line format, JSON
objects, and the drops tables and timelines.  No kernel access here beyond the decoded events."""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

from skbinspect.ftrace.formats import decode_stack, format_irq_flags, format_timestamp
from skbinspect.ftrace.reader import TraceArray, TraceEvent, TraceReader
from skbinspect.ftrace.ringbuf import KeyCodec
from skbinspect.ftrace.skb_events import Symbolizer, reason_names

__all__ = [
    "TraceTextFormatter",
    "trace_header",
    "event_json",
    "JsonLines",
    "loss_lines",
    "render_drops",
    "drops_json",
    "histogram_line",
]

#: FTRACE_TRAMPOLINE_MARKER (kernel/trace/trace.h, 6.13+: (unsigned long)INT_MAX) in a stack.
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
            flags = self._flags.get(fk)
            if flags is None:
                flags = self._flags[fk] = format_irq_flags(fl, pc, self.bits)
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


def event_json(
    ev: TraceEvent, fmt: TraceTextFormatter, instance: str, stacks: bool = False
) -> Dict[str, Any]:
    """One event as a JSON object: time (ns and as the trace file prints it), cpu, pid, comm, event name,
    flags, fields (pointers as hex strings), and for skb events the symbolised location and reason name."""
    f = ev.format
    d: Dict[str, Any] = {
        "instance": instance,
        "ts": ev.ts,
        "time": format_timestamp(ev.ts, fmt.in_ns).strip(),
        "cpu": ev.cpu,
        "pid": ev.pid,
        "comm": ev.comm,
        "event": ev.full_name
        if f
        else ("ftrace:kernel_stack" if ev.type == fmt.stack_type else f"event{ev.type}"),
        "flags": format_irq_flags(ev.flags, ev.preempt_count, fmt.bits),
    }
    if ev.type == fmt.stack_type:
        d["stack"] = _frames(ev.stack or [], fmt)
        return d
    fields: Dict[str, Any] = {}
    for k, v in ev.fields.items():
        fd = f.field(k) if f else None
        if isinstance(v, int) and fd is not None and fd.is_pointer:
            fields[k] = "0x%x" % v
        elif isinstance(v, (bytes, bytearray)):
            fields[k] = bytes(v).hex()
        else:
            fields[k] = v
    d["fields"] = fields
    if f is not None and f.system == "skb" and f.name in ("kfree_skb", "consume_skb"):
        loc = ev.fields.get("location")
        if loc is not None:
            d["location_symbol"] = fmt.syms.format(loc)
        if "reason" in ev.fields:
            d["reason"] = reason_names(ev.reader.prog).name(ev.fields["reason"])
    if stacks and ev.stack_records:
        all_frames = ev.stacks
        d["stack"] = _frames(all_frames[0], fmt)
        if any(x != all_frames[0] for x in all_frames[1:]):  # e.g. options/stacktrace and a trigger
            d["stacks"] = [_frames(x, fmt) for x in all_frames]
    return d


def _frames(frames: Sequence[int], fmt: TraceTextFormatter) -> List[Dict[str, Any]]:
    out = []
    for ip in frames:
        a = ip + fmt.delta
        out.append(
            {
                "address": "0x%x" % a,
                "symbol": "[FTRACE TRAMPOLINE]" if ip == FTRACE_TRAMPOLINE_MARKER else fmt.syms.format(a),
            }
        )
    return out


_HDR = struct.Struct("<HBBi")  # struct trace_entry: type, flags, preempt_count, pid
_U32 = struct.Struct("<I")
_MISSING = object()


def _stack_frames(page: bytes, k: int, codec: KeyCodec) -> List[int]:
    return decode_stack(page, *codec.payload(page, k))


class JsonLines:
    """``trace --json`` lines, fast: the same objects as :func:`event_json`, written through one
    precompiled %-template per event type (fields unpacked with one ``struct`` call; comms, flags,
    symbols, reasons and stack frames cached)."""

    def __init__(self, fmt: TraceTextFormatter, instance: str, stacks: bool = False) -> None:
        self.fmt = fmt
        self.reader = fmt.reader
        self.instance = instance
        self.stacks = stacks
        self.in_ns = fmt.in_ns
        self._inst = json.dumps(instance).replace("%", "%%")
        self._tpl: Dict[int, Any] = {}
        self._ctx: Dict[int, str] = {}  # pid, flags, preempt count -> '"pid": .., "comm": .., "flags": ..'
        self._extra: Dict[
            Any, str
        ] = {}  # (type, location, reason) -> ', "location_symbol": .., "reason": ..'
        self._frame: Dict[int, str] = {}
        self._sym: Dict[int, str] = {}
        self._reason: Dict[Any, str] = {}
        self._names = reason_names(self.reader.prog)
        self.codec = self.reader.codec

    def _compile(self, t: int) -> Any:
        if t == self.fmt.stack_type:
            return None
        f = self.reader.formats.get(t)
        if f is None:
            return None
        dec = f.decoder
        if not dec.scalar_names:
            return None
        parts = []
        for name in dec.scalar_names:
            fd = f.field(name)
            v = '"0x%x"' if fd is not None and fd.is_pointer else "%d"
            parts.append(json.dumps(name).replace("%", "%%") + ": " + v)
        tpl = (
            '{"instance": ' + self._inst + ', "ts": %d, "time": "%s", "cpu": %d, %s, '
            '"event": '
            + json.dumps(f.full_name).replace("%", "%%")
            + ', "fields": {'
            + ", ".join(parts)
            + "%s}%s}"
        )
        skb = f.system == "skb" and f.name in ("kfree_skb", "consume_skb")
        names = list(dec.scalar_names)
        iloc = names.index("location") if skb and "location" in names else None
        irea = names.index("reason") if skb and "reason" in names else None
        others = [(fd, json.dumps(fd.name)) for fd in dec.others]
        return tpl, dec.scalar_struct, dec.min_len, iloc, irea, others, f

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
        codec = self.codec
        t = codec.type(k)
        try:
            c = self._tpl[t]
        except KeyError:
            c = self._tpl[t] = self._compile(t)
        off, length = codec.payload(page, k)
        if c is None or length < c[2]:
            if ev is None:
                ev = TraceEvent(self.reader, k, page)
                ev.stack_records = stack_records
            return json.dumps(event_json(ev, self.fmt, self.instance, self.stacks))
        tpl, st, _, iloc, irea, others, f = c
        _, fl, pc, pid = _HDR.unpack_from(page, off)
        vals = st.unpack_from(page, off)
        ts = codec.ts(k)
        if self.in_ns:
            us = (ts + 500) // 1000
            tm = "%d.%06d" % (us // 1000000, us % 1000000)
        else:
            tm = "%d" % ts
        ck = pid << 16 | fl << 8 | pc
        ctx = self._ctx.get(ck)
        if ctx is None:
            ctx = self._context_json(ck, pid, fl, pc)
        more = ""
        if others:
            from skbinspect.ftrace.formats import decode_value

            for fd, jn in others:
                v = decode_value(page, off, length, fd)
                if v is None:
                    continue
                if isinstance(v, int) and fd.is_pointer:
                    v = "0x%x" % v
                elif isinstance(v, (bytes, bytearray)):
                    v = bytes(v).hex()
                more += ", " + jn + ": " + json.dumps(v)
        extra = ""
        if iloc is not None:
            loc = vals[iloc]
            s = self._sym.get(loc)
            if s is None:
                s = self._sym[loc] = json.dumps(self.fmt.syms.format(loc))
            extra += ', "location_symbol": ' + s
        if irea is not None:
            rv = vals[irea]
            s = self._reason.get(rv)
            if s is None:
                s = self._reason[rv] = json.dumps(self._names.name(rv))
            extra += ', "reason": ' + s
        if self.stacks and stack_records:
            frames = [_stack_frames(sp, sk, codec) for sp, sk in stack_records]
            extra += ', "stack": ' + self._frames(frames[0])
            if any(x != frames[0] for x in frames[1:]):
                extra += ', "stacks": [' + ", ".join(self._frames(x) for x in frames) + "]"
        return tpl % ((ts, tm, codec.cpu(k), ctx) + vals + (more, extra))

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
        ctxs, extras = self._ctx, self._extra
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
                c = tpls.get(t, _MISSING)
                w = (k >> pshift) & pmask
                h = u32(page, w * 4)[0]
                if (
                    c is _MISSING
                    or c is None
                    or srec is not None
                    or not h & 31
                    or (h & 31) * 4 < c[2]
                    or c[5]
                ):
                    buf.append(line_key(k, page, srec))
                else:
                    off = w * 4 + 4
                    _, fl, pc, pid = hdr(page, off)
                    vals = c[1].unpack_from(page, off)
                    ck = pid << 16 | fl << 8 | pc
                    ctx = ctxs.get(ck)
                    if ctx is None:
                        ctx = self._context_json(ck, pid, fl, pc)
                    iloc, irea = c[3], c[4]
                    if iloc is not None or irea is not None:
                        ek = (
                            t,
                            vals[iloc] if iloc is not None else None,
                            vals[irea] if irea is not None else None,
                        )
                        extra = extras.get(ek)
                        if extra is None:
                            extra = self._extra_json(ek)
                    else:
                        extra = ""
                    if in_ns:
                        us = (ts + 500) // 1000
                        tm = "%d.%06d" % (us // 1000000, us % 1000000)
                    else:
                        tm = "%d" % ts
                    buf.append(c[0] % ((ts, tm, (k >> cshift) & cmask, ctx) + vals + ("", extra)))
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

    def _context_json(self, ck: int, pid: int, fl: int, pc: int) -> str:
        s = self._ctx[ck] = '"pid": %d, "comm": %s, "flags": "%s"' % (
            pid,
            json.dumps(self.reader.cmdlines.find(pid)),
            format_irq_flags(fl, pc, self.fmt.bits),
        )
        return s

    def _extra_json(self, ek: Tuple[int, Optional[int], Optional[int]]) -> str:
        _, loc, rv = ek
        s = ""
        if loc is not None:
            s += ', "location_symbol": ' + json.dumps(self.fmt.syms.format(loc))
        if rv is not None:
            s += ', "reason": ' + json.dumps(self._names.name(rv))
        self._extra[ek] = s
        return s

    def _frames(self, frames: Sequence[int]) -> str:
        out = []
        cache = self._frame
        for ip in frames:
            s = cache.get(ip)
            if s is None:
                a = ip + self.fmt.delta
                sym = "[FTRACE TRAMPOLINE]" if ip == FTRACE_TRAMPOLINE_MARKER else self.fmt.syms.format(a)
                s = cache[ip] = json.dumps({"address": "0x%x" % a, "symbol": sym})
            out.append(s)
        return "[" + ", ".join(out) + "]"


# ---- drops ----------------------------------------------------------------------------------------------

_BLOCKS = " ▁▂▃▄▅▆▇█"


def histogram_line(counts: Sequence[int], ascii_only: bool = False) -> str:
    """A one-line terminal histogram (block characters, or digits-like ASCII when piped)."""
    peak = max(counts) if counts else 0
    if not peak:
        return " " * len(counts)
    chars = " .:-=+*#%@" if ascii_only else _BLOCKS
    top = len(chars) - 1
    out = []
    for c in counts:
        if c == 0:
            out.append(chars[0])
        else:
            out.append(chars[max(1, min(top, (c * top + peak - 1) // peak))])
    return "".join(out)


def _secs(ns: Optional[int], in_ns: bool = True) -> str:
    if ns is None:
        return "-"
    return format_timestamp(ns, in_ns).strip()


def render_drops(report: Any, out: Any = None, stacks: int = 3, timeline: bool = True) -> None:
    """The drops report (:class:`skbinspect.drops.DropsReport`) as rich tables on a terminal, plain text
    when piped."""
    from rich.markup import escape
    from rich.table import Table

    from skbinspect.output import console

    con = out or console()
    tty = con.is_terminal
    tr = report.trace_array
    title = "top-level buffer" if tr.is_top else f"instance {tr.name}"
    con.print(
        f"[bold]kfree_skb drops[/bold] in the {title}: {report.total} drops"
        + (f" of {report.kfree_total} kfree_skb events" if report.kfree_total != report.total else "")
        + (f", {report.consumed} consume_skb" if report.consumed else "")
        + (f" over {report.span_s:.6f} s" if report.span_s else "")
    )
    if not report.has_reasons:
        con.print("This kernel records no drop reasons in kfree_skb (before 5.17): grouped by location only.")
    for line in report.notes:
        con.print(f"[yellow]note:[/yellow] {line}")
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
        t.add_row(
            escape(g.reason_label),
            escape(g.location_symbol or "-"),
            str(g.count),
            _secs(g.first_ts, report.in_ns),
            _secs(g.last_ts, report.in_ns),
            "%.1f" % g.rate if g.rate is not None else "-",
            escape(g.device_label or "-"),
            escape(", ".join(f"{c} ({n})" if len(g.tasks) > 1 else c for c, n in g.tasks.most_common(2))),
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
    if timeline and report.timelines:
        first, last = report.first_ts, report.last_ts
        width = len(next(iter(report.timelines.values())))
        con.print(
            f"[bold]timeline[/bold] {_secs(first, report.in_ns)} s .. {_secs(last, report.in_ns)} s, "
            f"{width} buckets of {report.bucket_s:.6f} s"
        )
        name_w = max(len(k) for k in report.timelines)
        for name, counts in report.timelines.items():
            con.print(
                f"  {name.ljust(name_w)} |{histogram_line(counts, not tty)}| {sum(counts)}", markup=False
            )


def drops_json(report: Any) -> Dict[str, Any]:
    return report.to_json()
