"""Kernel symbols for people: addresses as ``function+0xoff/0xsize [module]``, the way the kernel's
``%pS`` prints them, and the small ELF reading that needs (section headers, ``.symtab``, the GNU build-ID
note).  No kernel memory is read here beyond drgn's symbol lookups (and the modules' own kallsyms); how
skb events' locations are printed is in docs/kernel/ftrace.md.
"""

from __future__ import annotations

import bisect
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, List, NamedTuple, Optional, Tuple

import drgn

from skbinspect.memory.cache import per_program
from skbinspect.memory.faults import READ_FAULTS

__all__ = ["ElfSection", "SymbolInfo", "Symbolizer", "elf_build_id", "elf_sections", "symbolizer"]

SHT_SYMTAB = 2
SHT_NOTE = 7
NT_GNU_BUILD_ID = 3


class ElfSection(NamedTuple):
    """One ``Elf64_Shdr`` (the fields skbinspect uses)."""

    type: int
    offset: int
    size: int
    link: int
    entsize: int


def elf_sections(f: BinaryIO, max_sections: int = 1 << 16) -> Optional[List[ElfSection]]:
    """The section headers of an ELF64 little-endian file open at ``f``; None if it is not one or its
    header table is absurd."""
    f.seek(0)
    eh = f.read(64)
    if len(eh) < 64 or eh[:4] != b"\x7fELF" or eh[4] != 2 or eh[5] != 1:
        return None  # only ELF64 little-endian is relevant here
    (shoff,) = struct.unpack_from("<Q", eh, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", eh, 0x3A)
    if not shoff or shentsize < 64 or shnum > max_sections:
        return None
    f.seek(shoff)
    shdrs = f.read(shentsize * shnum)
    out = []
    for i in range(len(shdrs) // shentsize):
        _, sh_type, _, _, sh_offset, sh_size, sh_link, _, _, sh_entsize = struct.unpack_from(
            "<IIQQQQIIQQ", shdrs, i * shentsize
        )
        out.append(ElfSection(sh_type, sh_offset, sh_size, sh_link, sh_entsize))
    return out


def elf_build_id(path: str) -> Optional[bytes]:
    """The GNU build ID note of an ELF file, from its ``SHT_NOTE`` sections."""
    try:
        with open(path, "rb") as f:
            secs = elf_sections(f, 4096)
            for sec in secs or ():
                if sec.type != SHT_NOTE or sec.size > 1 << 16:
                    continue
                f.seek(sec.offset)
                notes = f.read(sec.size)
                off = 0
                while off + 12 <= len(notes):
                    namesz, descsz, ntype = struct.unpack_from("<III", notes, off)
                    name_end = off + 12 + ((namesz + 3) & ~3)
                    desc = notes[name_end : name_end + descsz]
                    if (
                        ntype == NT_GNU_BUILD_ID
                        and notes[off + 12 : off + 12 + namesz].rstrip(b"\0") == b"GNU"
                    ):
                        return bytes(desc)
                    off = name_end + ((descsz + 3) & ~3)
    except (OSError, struct.error):
        return None
    return None


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
                        for lo, hi in m.address_ranges or ():
                            ranges.append((lo, hi, m.name))
                    elif isinstance(m, drgn.MainModule):
                        self._kranges = list(m.address_ranges or ())
            except (LookupError, AttributeError, *READ_FAULTS):
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

            from skbinspect.memory.walk import list_is_sound

            # drgn walks the module list without a bound: only a sound one (else module symbols are left out)
            mt = self.prog.type("struct module")

            def module_name(a: int) -> str:
                return drgn.Object(self.prog, mt, address=a).name.string_().decode(errors="replace")

            sound = list_is_sound(
                self.prog,
                self.prog["modules"].address_,
                "module list",
                name=module_name,
                offset=drgn.offsetof(mt, "list"),
            )
            idx = load_module_kallsyms(self.prog) if sound else lambda *a: ()
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
        except (LookupError, *READ_FAULTS):
            syms = []
        pairs = sorted(
            ((s.address, s) for s in syms if s.name and klo <= s.address < khi), key=lambda p: p[0]
        )
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
            secs = elf_sections(f)
            if secs is None:
                return None
            symtab = next((sh for sh in secs if sh.type == SHT_SYMTAB), None)
            if symtab is None or symtab.entsize != 24 or symtab.link >= len(secs):
                return None
            strsec = secs[symtab.link]
            f.seek(symtab.offset)
            raw = f.read(symtab.size)
            f.seek(strsec.offset)
            strtab = f.read(strsec.size)
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
    packed = [
        ((value + bias) << 33) | ((st_info >> 4 == 2) << 32) | st_name
        for st_name, st_info, _, shndx, value, _ in entries
        if st_name and shndx and (st_info & 0xF) not in (3, 4) and st_name not in excl
    ]
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
    return strtab[off : end if end >= 0 else len(strtab)].decode("utf-8", "replace")


def _best_alias(strtab: bytes, group: List[int]) -> str:
    mask = (1 << 32) - 1
    return min(
        ((_cstr(strtab, k & mask), bool(k >> 32 & 1)) for k in group), key=lambda c: _rank(c[0], c[1])
    )[0]


def _linker_provided(name: str) -> bool:
    """``may_be_linker_script_provide_symbol()`` of scripts/kallsyms.c."""
    if len(name) < 8 or not name.startswith("__"):
        return False
    return name.startswith(("__start_", "__stop_", "__end_")) or name.endswith(("_start", "_end"))


def symbolizer(prog: drgn.Program) -> Symbolizer:
    """The program's :class:`Symbolizer` (cached)."""
    return per_program(prog, "skbinspect.symbolizer", Symbolizer)
