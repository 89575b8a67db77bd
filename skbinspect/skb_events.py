"""The skb events of the trace buffer: ``skb:kfree_skb`` and ``skb:consume_skb``, decoded for people.

Field layouts come from the target's own event formats (``struct ftrace_event_field``), so every kernel
shape is handled without version checks (kernel reference section 6):

* kfree_skb: ``skbaddr, location, protocol`` (<= 5.16), ``+ reason`` (5.17+), ``+ rx_sk`` (6.11+);
* consume_skb: ``skbaddr`` (<= 6.2), ``+ location`` (6.3+).

Reason names come from the target's drop-reason table (:func:`skbinspect.reasons.drop_reason_table`),
falling back to ``enum skb_drop_reason`` from DWARF.  ``location`` is symbolised the way the kernel's
``%pS`` does (``function+0xoff/0xsize [module]``, the size being the distance to the next symbol, as
kallsyms computes it).
"""

from __future__ import annotations

import bisect
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import drgn

from .ftrace import TraceEvent, TraceReader, trace_reader
from .progcache import per_program

__all__ = [
    "Symbolizer",
    "symbolizer",
    "ReasonNames",
    "reason_names",
    "KfreeSkb",
    "ConsumeSkb",
    "SkbEvent",
    "skb_event",
    "iter_skb_events",
    "SKB_EVENTS",
]

SKB_EVENTS = ("skb:kfree_skb", "skb:consume_skb")


# ---- symbols -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolInfo:
    """Where an address is: ``name+offset/size [module]`` (module None for the kernel image).

    ``size`` is the kallsyms extent (to the next symbol), None until asked for (it needs the sorted
    symbol table, built once on first use)."""

    name: str
    start: int
    module: Optional[str]
    size: Optional[int] = None

    def format(self, address: int, offset: bool = True, size: bool = False) -> str:
        s = self.name
        if offset:
            s += "+%#x" % (address - self.start)
            if size and self.size is not None:
                s += "/%#x" % self.size
        if self.module:
            s += f" [{self.module}]"
        return s


def _rank(name: str, weak: bool) -> Tuple[int, int, int, str]:
    """kallsyms' preference among aliases (scripts/kallsyms.c compare_symbols()): not weak, not a
    linker-script symbol, fewest leading underscores, then by name as ``nm -n`` lists them."""
    return (int(weak), int(_linker_provided(name)), len(name) - len(name.lstrip("_")), name)


class Symbolizer:
    """Address to symbol, with the kernel's kallsyms semantics: a symbol extends to the next symbol's
    start (so ``size`` is what ``%pS`` prints), of several names at one address the one kallsyms prefers
    is used, module addresses fall back to the module's own symbol table in memory (``module->kallsyms``,
    which covers modules without debug info), and an address no symbol covers prints as ``0x...`` like
    ``sprint_symbol()``.  Results are cached per address."""

    def __init__(self, prog: drgn.Program) -> None:
        self.prog = prog
        self._cache: Dict[int, Optional[SymbolInfo]] = {}
        self._starts: Optional[List[int]] = None
        self._names: List[str] = []
        self._modules: Optional[List[Tuple[int, int, str]]] = None  # (start, end, name) sorted
        self._kranges: List[Tuple[int, int]] = []
        self._strtab = b""

    def _module_ranges(self) -> List[Tuple[int, int, str]]:
        if self._modules is None:
            ranges = []
            try:
                for m in self.prog.modules():
                    if isinstance(m, drgn.RelocatableModule):
                        for lo, hi in (m.address_ranges or ()):
                            ranges.append((lo, hi, m.name))
                    elif isinstance(m, drgn.MainModule):
                        self._kranges = list(m.address_ranges or ())
            except (LookupError, drgn.FaultError, ValueError, AttributeError):
                pass
            ranges.sort()
            self._modules = ranges
        return self._modules

    def module_range(self, address: int) -> Optional[Tuple[int, int, str]]:
        r = self._module_ranges()
        i = bisect.bisect_right(r, (address, float("inf"), "")) - 1
        if i >= 0 and r[i][0] <= address < r[i][1]:
            return r[i]
        return None

    def module_of(self, address: int) -> Optional[str]:
        r = self.module_range(address)
        return r[2] if r else None

    def _table(self) -> None:
        """Sorted symbol starts: the kernel image's symbols from its ELF symbol table (read directly from
        the vmlinux debug file: fast, no drgn object per symbol), and every module's from its in-memory
        kallsyms.  Of aliases the one kallsyms reports is kept."""
        if self._starts is not None:
            return
        self._module_ranges()
        klo = min((lo for lo, hi in self._kranges), default=0)
        khi = max((hi for lo, hi in self._kranges), default=1 << 64)
        kern = _vmlinux_symbols(self.prog)
        if kern is None:
            starts, names = self._drgn_symbols(klo, khi)
        else:
            starts, names, self._strtab = kern
        mod: Dict[int, str] = {}
        try:
            from drgn.helpers.linux.kallsyms import load_module_kallsyms

            idx = load_module_kallsyms(self.prog)
            for s in idx(self.prog, None, None, False):
                if s.name and not s.name.startswith(("$", ".L")) and not klo <= s.address < khi:
                    mod.setdefault(s.address, s.name)  # the first in the module's table wins
        except Exception:  # noqa: BLE001 - older drgn, or unreadable module symbol tables
            pass
        if mod:
            merged = sorted(list(zip(starts, names)) + list(mod.items()))
            starts = [a for a, _ in merged]
            names = [n for _, n in merged]
        self._starts = starts
        self._names = names

    def _drgn_symbols(self, klo: int, khi: int) -> Tuple[List[int], List[Any]]:
        """The kernel image's symbols through drgn (slower: used when the vmlinux file cannot be read)."""
        try:
            syms = self.prog.symbols()
        except (LookupError, drgn.FaultError, ValueError):
            syms = []
        pairs = sorted(((s.address, s) for s in syms if s.name and klo <= s.address < khi), key=lambda p: p[0])
        starts: List[int] = []
        names: List[Any] = []
        for a, sym in pairs:
            if starts and starts[-1] == a:
                if _rank(sym.name, sym.binding == drgn.SymbolBinding.WEAK) < _rank(names[-1], False):
                    names[-1] = sym.name
                continue
            starts.append(a)
            names.append(sym.name)
        return starts, names

    def _table_lookup(self, address: int) -> Optional[Tuple[str, int, Optional[int]]]:
        """``(name, start, size)`` from the sorted table, within the address's module or the kernel."""
        self._table()
        starts = self._starts or []
        i = bisect.bisect_right(starts, address) - 1
        if i < 0:
            return None
        start, name = starts[i], self._names[i]
        if not isinstance(name, str):
            name = _cstr(self._strtab, name)
            self._names[i] = name
        end = starts[i + 1] if i + 1 < len(starts) else None
        mr = self.module_range(address)
        if mr is not None:
            if start < mr[0]:
                return None  # no symbol of this module before the address
            end = mr[1] if end is None or end > mr[1] else end
        else:
            if self._kranges and not any(lo <= address < hi for lo, hi in self._kranges):
                return None  # neither in the kernel image nor in a module
            if end is None:
                end = max((hi for lo, hi in self._kranges if lo <= address < hi), default=start)
        return name, start, end - start

    def lookup(self, address: int, size: bool = True) -> Optional[SymbolInfo]:
        """The symbol containing ``address`` (with its kallsyms extent), or None."""
        try:
            return self._cache[address]
        except KeyError:
            pass
        info = self._lookup(address, True)
        self._cache[address] = info
        return info

    def _lookup(self, address: int, size: bool) -> Optional[SymbolInfo]:
        if not address:
            return None
        t = self._table_lookup(address)
        if t is None:
            return None
        return SymbolInfo(t[0], t[1], self.module_of(address), t[2] if size else None)

    def name(self, address: int) -> Optional[str]:
        """``kallsyms_lookup()``'s name for ``address`` (no offset, no module), or None."""
        info = self.lookup(address)
        return info.name if info else None

    def format(self, address: int, offset: bool = True, size: bool = False) -> str:
        """``func+0xoff [module]``; with ``size`` ``func+0xoff/0xsize [module]`` as ``%pS`` prints it;
        ``0x<address>`` if no symbol covers it."""
        info = self.lookup(address, size)
        if info is None:
            return "0x%x" % address
        return info.format(address, offset, size)




def _vmlinux_symbols(prog: drgn.Program) -> Optional[Tuple[List[int], List[Any], bytes]]:
    """``(sorted starts, names)`` of the kernel image from its ELF ``.symtab`` (as kallsyms would list
    them: no undefined, section or file symbols), relocated by the KASLR offset drgn applied.  Names are
    string-table offsets (ints) until first use; the string table is returned too.  None if the file
    cannot be read."""
    try:
        path = prog.main_module().debug_file_path
    except (LookupError, AttributeError):
        path = None
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            eh = f.read(64)
            if eh[:4] != b"\x7fELF" or eh[4] != 2 or eh[5] != 1:
                return None
            shoff, = struct.unpack_from("<Q", eh, 40)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", eh, 58)
            f.seek(shoff)
            shdrs = f.read(shentsize * shnum)
            secs = [struct.unpack_from("<IIQQQQIIQQ", shdrs, i * shentsize) for i in range(shnum)]
            symtab = next((sh for sh in secs if sh[1] == 2), None)  # SHT_SYMTAB
            if symtab is None or symtab[9] != 24:
                return None
            strsec = secs[symtab[6]]
            f.seek(symtab[4])
            raw = f.read(symtab[5])
            f.seek(strsec[4])
            strtab = f.read(strsec[5])
    except (OSError, struct.error, IndexError):
        return None
    # KASLR: drgn's address of _stext minus its link-time value
    key = b"\0_stext\0"
    pos = strtab.find(key)
    if pos < 0:
        return None
    stext_name = pos + 1
    entries = [e for e in struct.iter_unpack("<IBBHQQ", raw[: len(raw) - len(raw) % 24])]
    link = next((e[4] for e in entries if e[0] == stext_name), None)
    try:
        bias = prog.symbol("_stext").address - link if link is not None else None
    except LookupError:
        bias = None
    if bias is None:
        return None

    # excluded names (scripts/kallsyms.c ignores these prefixes), found in one C-speed scan
    excl = {m.start() + 1 for m in _SKIP_RE.finditer(strtab)}
    # pack (address, weak, name offset) into one int per symbol: sorting ints is fast
    packed = [((value + bias) << 33) | ((st_info >> 4 == 2) << 32) | st_name
              for st_name, st_info, _, shndx, value, _ in entries
              if st_name and shndx and (st_info & 0xF) not in (3, 4) and st_name not in excl]
    packed.sort()
    starts: List[int] = []
    names: List[Any] = []
    mask = (1 << 32) - 1
    prev = -1
    group: List[int] = []
    for k in packed:
        a = k >> 33
        if a == prev:
            group.append(k)
            continue
        if len(group) > 1:
            names[-1] = _best_alias(strtab, group)
        starts.append(a)
        names.append(k & mask)  # a name offset, decoded on first use
        group = [k]
        prev = a
    if len(group) > 1:
        names[-1] = _best_alias(strtab, group)
    return starts, names, strtab


_SKIP_RE = re.compile(rb"\0(?:__crc_|__kstrtab_|__kstrtabns_|__efistub_|__ksymtab_|\.L|\$)")


def _cstr(strtab: bytes, off: int) -> str:
    end = strtab.find(b"\0", off)
    return strtab[off:end if end >= 0 else len(strtab)].decode("utf-8", "replace")


def _best_alias(strtab: bytes, group: List[int]) -> str:
    mask = (1 << 32) - 1
    return \
        min(((_cstr(strtab, k & mask), bool(k >> 32 & 1)) for k in group), key=lambda c: _rank(c[0], c[1]))[0]


def _linker_provided(name: str) -> bool:
    """``may_be_linker_script_provide_symbol()`` of scripts/kallsyms.c."""
    if len(name) < 8 or not name.startswith("__"):
        return False
    return name.startswith(("__start_", "__stop_", "__end_")) or name.endswith(("_start", "_end"))


def symbolizer(prog: drgn.Program) -> Symbolizer:
    """The program's :class:`Symbolizer` (cached)."""
    return per_program(prog, "skbinspect.symbolizer", Symbolizer)


# ---- reason names -------------------------------------------------------------------------------------


class ReasonNames:
    """Drop-reason names of the target: the reasons table (:mod:`skbinspect.reasons`) when it is there,
    else the enumerators of ``enum skb_drop_reason`` from DWARF (``SKB_DROP_REASON_`` stripped)."""

    def __init__(self, prog: drgn.Program) -> None:
        self.has_reasons = False
        self.source = "none"
        self._table: Any = None
        self._enum: Dict[int, str] = {}
        try:
            from .reasons import drop_reason_table  # issue 4; imported lazily

            self._table = drop_reason_table(prog)
            self.has_reasons = bool(self._table.has_reasons)
            self.source = "reasons table"
        except ImportError:
            self._table = None
        except Exception:  # noqa: BLE001 - a broken table must not stop the trace decoder
            self._table = None
        if self._table is None:
            try:
                t = prog.type("enum skb_drop_reason")
                for name, value in t.enumerators or ():
                    if name.startswith("SKB_DROP_REASON_"):
                        name = name[len("SKB_DROP_REASON_"):]
                    elif name.startswith("SKB_"):
                        name = name[len("SKB_"):]
                    self._enum.setdefault(value, name)
                self.has_reasons = True
                self.source = "enum skb_drop_reason"
            except LookupError:
                self.has_reasons = False

    def name(self, value: Optional[int]) -> Optional[str]:
        if value is None:
            return None
        if self._table is not None:
            try:
                return self._table.name(value)
            except Exception:  # noqa: BLE001
                return None
        return self._enum.get(value)


def reason_names(prog: drgn.Program) -> ReasonNames:
    return per_program(prog, "skbinspect.skb_events.reasons", ReasonNames)


# ---- skb events -----------------------------------------------------------------------------------------


@dataclass
class _SkbBase:
    ts: int
    cpu: int
    pid: int
    comm: str
    skbaddr: int
    location: Optional[int]
    location_symbol: Optional[str]
    stack: Optional[List[int]] = field(default=None, repr=False)
    event: Optional[TraceEvent] = field(default=None, repr=False, compare=False)

    @property
    def function(self) -> Optional[str]:
        """The function the location is in (``tun_net_xmit``), without offset or module."""
        if not self.location_symbol or self.location_symbol.startswith("0x"):
            return None
        return self.location_symbol.split("+", 1)[0].split(" ", 1)[0]

    @property
    def module(self) -> Optional[str]:
        s = self.location_symbol or ""
        if s.endswith("]") and "[" in s:
            return s[s.rindex("[") + 1 : -1]
        return None


@dataclass
class KfreeSkb(_SkbBase):
    """One ``skb:kfree_skb`` event.

    :ivar reason: the ``enum skb_drop_reason`` value (None before 5.17, where the event has no reason).
    :ivar reason_name: its name from the target's table (``"FULL_RING"``), None if unnamed or absent.
    :ivar rx_sk: the receiving socket (``struct sock *``, 6.11+; None before).
    :ivar protocol: ``skb->protocol`` as the host-order number the trace prints (e.g. 2048 for IPv4).
    """

    protocol: int = 0
    reason: Optional[int] = None
    reason_name: Optional[str] = None
    rx_sk: Optional[int] = None
    kind: str = "kfree_skb"

    def to_json(self) -> Dict[str, Any]:
        d = _base_json(self)
        d["protocol"] = self.protocol
        if self.reason is not None:
            d["reason"] = self.reason_name
            d["reason_value"] = self.reason
        if self.rx_sk is not None:
            d["rx_sk"] = "0x%x" % self.rx_sk
        return d


@dataclass
class ConsumeSkb(_SkbBase):
    """One ``skb:consume_skb`` event (``location`` is None before 6.3)."""

    kind: str = "consume_skb"

    def to_json(self) -> Dict[str, Any]:
        return _base_json(self)


SkbEvent = Union[KfreeSkb, ConsumeSkb]


def _base_json(e: _SkbBase) -> Dict[str, Any]:
    d: Dict[str, Any] = {"event": e.kind, "ts": e.ts, "cpu": e.cpu, "pid": e.pid, "comm": e.comm,
                         "skbaddr": "0x%x" % e.skbaddr}
    if e.location is not None:
        d["location"] = "0x%x" % e.location
        d["location_symbol"] = e.location_symbol
    if e.stack is not None:
        d["stack"] = ["0x%x" % a for a in e.stack]
    return d


def skb_event(ev: TraceEvent, reasons: Optional[ReasonNames] = None, syms: Optional[Symbolizer] = None,
              stack_symbols: bool = False) -> Optional[SkbEvent]:
    """The :class:`KfreeSkb` / :class:`ConsumeSkb` view of ``ev`` (None for other events)."""
    name = ev.name
    if name not in ("kfree_skb", "consume_skb") or ev.system != "skb":
        return None
    prog = ev.reader.prog
    syms = syms or symbolizer(prog)
    f = ev.fields
    loc = f.get("location")
    loc_sym = syms.format(loc) if loc is not None else None  # function+0xoff [module]
    common = dict(ts=ev.ts, cpu=ev.cpu, pid=ev.pid, comm=ev.comm, skbaddr=f.get("skbaddr", 0) or 0, location=loc,
                  location_symbol=loc_sym, stack=ev.stack, event=ev)
    if name == "consume_skb":
        return ConsumeSkb(**common)
    reasons = reasons or reason_names(prog)
    reason = f.get("reason")
    rx_sk = f.get("rx_sk")
    return KfreeSkb(**common, protocol=f.get("protocol", 0) or 0, reason=reason,
                    reason_name=reasons.name(reason) if reason is not None else None, rx_sk=rx_sk)


def iter_skb_events(prog: drgn.Program, instance: Optional[str] = None, cpus: Optional[Sequence[int]] = None,
                    kinds: Sequence[str] = SKB_EVENTS, reader: Optional[TraceReader] = None) -> Iterator[SkbEvent]:
    """kfree_skb / consume_skb events of a trace array, oldest first, with their stacks.

    :param instance: trace instance; None for the top-level buffer.
    :param kinds: which of ``skb:kfree_skb`` and ``skb:consume_skb`` to yield.

    >>> for d in iter_skb_events(prog, kinds=["skb:kfree_skb"]):
    ...     print(d.reason_name, d.location_symbol)
    """
    r = reader or trace_reader(prog, instance, cpus)
    want = set()
    for k in kinds:
        f = r.formats.lookup(k)
        if f is not None:
            want.add(f.id)
    if not want:
        return
    reasons = reason_names(prog)
    syms = symbolizer(prog)
    for ev in r.events():
        if ev.type in want:
            e = skb_event(ev, reasons, syms)
            if e is not None:
                yield e
