"""Pure decoding of event payloads (no drgn here): event formats and their fields, stack records, saved
command lines, and the tracefs ``trace`` file's line format (irq flags, timestamps).  The kernel's
structs and encodings behind them are in docs/kernel/ftrace.md."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from skbinspect.ftrace.printfmt import PrintFmt

__all__ = [
    "EventField",
    "EventFormat",
    "FieldDecoder",
    "decode_stack",
    "SavedCmdlines",
    "IrqFlagBits",
    "format_irq_flags",
    "format_timestamp",
    "ns2usecs",
    "format_file_text",
]

# ---- event formats -----------------------------------------------------------------------------------


@dataclass
class EventField:
    """One field of an event (``struct ftrace_event_field``)."""

    name: str
    type: str
    offset: int
    size: int
    is_signed: bool
    len: int = 0  # array length (``ftrace_event_field.len``, v6.2; 0 when not an array or unknown)
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
    #: ``(trace_event_call, trace_event_class, print_fmt)`` addresses while fields and ``print_fmt`` are not
    #: read yet (see :meth:`skbinspect.ftrace.reader.EventFormats.get`)
    _lazy: Optional[Tuple[int, int, int]] = field(default=None, repr=False, compare=False)
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

    def printer(self) -> Optional[PrintFmt]:
        """The compiled ``print_fmt`` (None if it has none or uses something :class:`PrintFmt` cannot do)."""
        if self._printer is None:
            from skbinspect.ftrace.printfmt import PrintFmt, PrintFmtError  # printfmt imports this module

            try:
                self._printer = (
                    PrintFmt(self.print_fmt, self.fields, self.constant) if self.print_fmt else False
                )
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

    def __init__(
        self, pid_to_cmdline: Sequence[int], cmdline_to_pid: Sequence[int], names: bytes, comm_len: int = 16
    ) -> None:
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
    bh_off: int = 0  # TRACE_FLAG_BH_OFF (0x80, v5.17)
    need_resched_lazy: int = 0  # TRACE_FLAG_NEED_RESCHED_LAZY (0x02, v6.13, replacing IRQS_NOSUPPORT)
    migrate_column: bool = True  # a fifth column for the migrate-disable depth (v5.15)


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
    c3 = (
        "Z"
        if nmi and hard
        else "z"
        if nmi
        else "H"
        if hard and soft
        else "h"
        if hard
        else "s"
        if soft
        else "."
    )
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
