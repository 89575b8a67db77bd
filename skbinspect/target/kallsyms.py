"""Symbols without DWARF: the kernel's own kallsyms, as drgn symbol finders (docs/kernel/btf.md).

* vmlinux: ``/proc/kallsyms`` on the live machine; otherwise (a vmcore, a QEMU guest, or a live kernel
  whose ``/proc/kallsyms`` hides addresses) the compressed tables in kernel memory, which drgn finds
  through the ``kallsyms_*`` entries of VMCOREINFO (Linux 6.0+).
* modules: each module's symbol table in memory (``struct module``'s ``kallsyms``), which needs
  vmlinux's types (from DWARF or BTF).

:func:`symbol_extent` gives the room a symbol has before the next one, which the declared globals
(:mod:`skbinspect.target.declarations`) are checked against.
"""

from __future__ import annotations

import bisect
import os
from typing import List, Optional, Tuple

import drgn

__all__ = [
    "KallsymsError",
    "load_module_symbols",
    "load_vmlinux_symbols",
    "symbol_extent",
]

_SYMBOL_EXTENTS_KEY = "skbinspect.kallsyms.starts"


class KallsymsError(Exception):
    """kallsyms cannot be read; the message says why (for the user)."""


def _proc_kallsyms_usable() -> Tuple[bool, str]:
    """Whether /proc/kallsyms shows real addresses to us (kernel.kptr_restrict and root decide)."""
    try:
        with open("/proc/kallsyms") as f:
            for _ in range(4):
                line = f.readline()
                if line and int(line.split()[0], 16) != 0:
                    return True, ""
    except (OSError, ValueError, IndexError) as e:
        return False, f"/proc/kallsyms cannot be read ({e})"
    restrict = "?"
    try:
        with open("/proc/sys/kernel/kptr_restrict") as f:
            restrict = f.read().strip()
    except OSError:
        pass
    return False, f"/proc/kallsyms hides its addresses (kernel.kptr_restrict = {restrict})"


def load_vmlinux_symbols(prog: drgn.Program, kind: str) -> str:
    """Register the kernel image's kallsyms as ``prog``'s first symbol finder; return where they came
    from (for ``info``).

    :param kind: ``live``, ``vmcore`` or ``qemu``.
    :raises KallsymsError: neither /proc/kallsyms nor VMCOREINFO leads to them.
    """
    from drgn.helpers.linux import kallsyms as dk

    why = ""
    index = None
    source = ""
    if kind == "live" and os.geteuid() == 0:
        ok, why = _proc_kallsyms_usable()
        if ok:
            index = dk.load_vmlinux_kallsyms(prog)  # root on the live machine: /proc/kallsyms
            source = "/proc/kallsyms"
    if index is None:
        try:
            # the tables in memory, located through VMCOREINFO (drgn's helper would pick /proc/kallsyms
            # for root on a live kernel even when it hides addresses)
            index = dk._load_builtin_kallsyms(prog)
        except (drgn.MissingDebugInfoError, LookupError, ValueError, drgn.FaultError) as e:
            where = {"vmcore": "the dump", "qemu": "the guest"}.get(kind, "the kernel's memory")
            raise KallsymsError(
                (why + "; and " if why else "")
                + f"kallsyms cannot be located in {where}: its VMCOREINFO has no kallsyms_* entries "
                "(they exist from Linux 6.0)"
                + ("" if isinstance(e, drgn.MissingDebugInfoError) else f" ({e})")
            )
        source = {"vmcore": "kallsyms from the dump", "qemu": "kallsyms from the guest's memory"}.get(
            kind, "kallsyms from kernel memory"
        )
    prog.register_symbol_finder("kallsyms-vmlinux", index, enable_index=0)
    try:
        if prog.symbol("_stext").address == 0:
            raise KallsymsError("kallsyms gives no addresses (all zero)")
    except LookupError:
        raise KallsymsError("kallsyms has no _stext: it is not the kernel's symbol table")
    return source


def load_module_symbols(prog: drgn.Program) -> None:
    """Register every loaded module's kallsyms as a symbol finder (after the others). Needs the types of
    ``struct module`` and the ``modules`` list.  Unreadable module symbol tables are skipped."""
    from drgn.helpers.linux.kallsyms import module_kallsyms
    from drgn.helpers.linux.module import for_each_module

    syms: List[drgn.Symbol] = []
    try:
        mods = list(for_each_module(prog))
    except (LookupError, drgn.FaultError):
        return
    for mod in mods:
        try:
            syms += module_kallsyms(mod)
        except (LookupError, drgn.FaultError, ValueError, IndexError, UnicodeDecodeError):
            continue
    prog.register_symbol_finder("kallsyms-modules", drgn.SymbolIndex(syms), enable_index=-1)


def symbol_extent(prog: drgn.Program, address: int) -> Optional[int]:
    """Bytes from ``address`` to the next symbol at a higher address (the room a variable there has,
    padding included); None if no symbol follows.  kallsyms' own sizes are this distance, except that
    drgn reports 0 at some boundaries, so it is computed here from all symbol addresses (once)."""
    starts = prog.cache.get(_SYMBOL_EXTENTS_KEY)
    if starts is None:
        try:
            starts = sorted({s.address for s in prog.symbols()})
        except (LookupError, ValueError):
            starts = []
        prog.cache[_SYMBOL_EXTENTS_KEY] = starts
    i = bisect.bisect_right(starts, address)
    return starts[i] - address if i < len(starts) else None
