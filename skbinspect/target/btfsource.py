"""Types and symbols without a debug package: the kernel's own BTF and kallsyms (docs/kernel/btf.md).

:func:`use_btf` runs after the DWARF search (:func:`skbinspect.target.debuginfo.load_debug_info`):

* no vmlinux DWARF (or ``--types btf``): vmlinux's BTF, kallsyms, the declared globals, and each needed
  module's BTF;
* vmlinux DWARF found but a needed module's missing: that module's BTF fills in (on top of vmlinux's
  BTF, which split module BTF refers to).

Where the BTF comes from: on the live machine ``/sys/kernel/btf/vmlinux`` and
``/sys/kernel/btf/MODULE``; in a vmcore or a QEMU guest, kernel memory: vmlinux's between the symbols
``__start_BTF`` and ``__stop_BTF``, modules' through the kernel's ``btf_modules`` list.  What was used
is recorded in :attr:`DebugInfoReport.sources` for ``info``.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Tuple

import drgn

from skbinspect.errors import DebugInfoError
from skbinspect.target.btf import Btf, BtfError, BtfTypes, register_btf
from skbinspect.target.debuginfo import (
    NEEDED_MODULES,
    DebugInfoReport,
    ModuleDebugInfo,
    debug_package_hint,
)
from skbinspect.target.declarations import DeclaredGlobals, register_declarations
from skbinspect.target.kallsyms import KallsymsError, load_module_symbols, load_vmlinux_symbols

__all__ = ["TYPE_MODES", "BtfUnavailable", "use_btf"]

#: ``--types``: ``auto`` (DWARF where found, BTF for the rest), ``dwarf`` only, ``btf`` only.
TYPE_MODES = ("auto", "dwarf", "btf")

SYSFS_BTF = "/sys/kernel/btf"
#: Bound on a BTF blob read from memory (vmlinux's is 4-6 MiB).
MAX_BTF_SIZE = 64 << 20


class BtfUnavailable(DebugInfoError):
    """Neither DWARF nor usable BTF + kallsyms for vmlinux; the message says what is missing."""


def _where(kind: str) -> str:
    return {"vmcore": "the dump", "qemu": "the guest's memory"}.get(kind, "kernel memory")


def _version(release: str) -> Tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _read_file(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_BTF_SIZE + 1)
    except OSError:
        return None


def _vmlinux_btf(prog: drgn.Program, kind: str) -> Tuple[Btf, str]:
    """vmlinux's BTF and where it came from; :class:`BtfUnavailable` if there is none."""
    if kind == "live":
        data = _read_file(os.path.join(SYSFS_BTF, "vmlinux"))
        if data is not None:
            return Btf(data, "vmlinux"), f"BTF from {SYSFS_BTF}/vmlinux"
    try:
        start = prog.symbol("__start_BTF").address
        stop = prog.symbol("__stop_BTF").address
    except LookupError:
        raise BtfUnavailable(
            "the kernel has no BTF (no __start_BTF symbol: built without CONFIG_DEBUG_INFO_BTF)"
        )
    if not 0 < stop - start <= MAX_BTF_SIZE:
        raise BtfUnavailable(f"the kernel's BTF bounds are implausible ({start:#x}..{stop:#x})")
    try:
        data = prog.read(start, stop - start)
    except drgn.FaultError as e:
        raise BtfUnavailable(f"the kernel's BTF cannot be read from {_where(kind)} ({e})")
    return Btf(data, "vmlinux"), f"BTF from {_where(kind)}"


def _module_btf_memory(prog: drgn.Program, names: List[str]) -> Dict[str, bytes]:
    """Module name -> raw BTF, from the kernel's ``btf_modules`` list (modules' own ``btf_data`` is
    freed once loaded)."""
    from drgn.helpers.linux.list import list_for_each_entry

    out: Dict[str, bytes] = {}
    try:
        head = prog["btf_modules"].address_of_()
        for bm in list_for_each_entry("struct btf_module", head, "list"):
            name = bm.module.name.string_().decode(errors="replace")
            if name not in names:
                continue
            size = int(bm.btf.data_size.value_())
            if 0 < size <= MAX_BTF_SIZE:
                out[name] = prog.read(bm.btf.data.value_(), size)
    except (LookupError, drgn.FaultError, AttributeError):
        pass  # no module BTF in this kernel (before 5.11, or CONFIG_DEBUG_INFO_BTF_MODULES off)
    return out


def _module_btfs(
    prog: drgn.Program, kind: str, names: List[str], vmlinux: Btf, warnings: List[str]
) -> Dict[str, Tuple[Btf, str]]:
    out: Dict[str, Tuple[Btf, str]] = {}
    rest = list(names)
    if kind == "live":
        for name in names:
            data = _read_file(os.path.join(SYSFS_BTF, name))
            if data is not None:
                try:
                    out[name] = (Btf(data, name, vmlinux), f"BTF from {SYSFS_BTF}/{name}")
                    rest.remove(name)
                except BtfError as e:
                    warnings.append(str(e))
    if rest:
        for name, data in _module_btf_memory(prog, rest).items():
            try:
                out[name] = (Btf(data, name, vmlinux), f"BTF from {_where(kind)}")
            except BtfError as e:
                warnings.append(str(e))
    return out


def _loaded_needed(prog: drgn.Program) -> List[str]:
    """Loaded modules skbinspect reads (also creates drgn's module objects, for symbolization)."""
    out = []
    try:
        for module, _ in prog.loaded_modules():
            if isinstance(module, drgn.MainModule):
                continue
            name = module.name.replace("-", "_")
            if name in NEEDED_MODULES:
                out.append(name)
    except (LookupError, drgn.FaultError, ValueError) as e:
        raise BtfUnavailable(f"the module list cannot be read ({e})")
    return [n for n in NEEDED_MODULES if n in out]


def use_btf(
    prog: drgn.Program, kind: str, release: str, report: DebugInfoReport, mode: str, warnings: List[str]
) -> None:
    """Fill in from BTF and kallsyms what DWARF did not provide (see the module docstring).

    :param mode: ``auto`` or ``btf`` (``btf``: ``report`` is empty, DWARF was not searched).
    :raises BtfUnavailable: vmlinux has neither DWARF nor usable BTF + kallsyms.
    """
    if report.vmlinux is not None:
        _modules_only(prog, kind, release, report, warnings)
        return
    try:
        _everything(prog, kind, release, report, warnings)
    except (BtfUnavailable, BtfError, KallsymsError) as e:
        raise BtfUnavailable(str(e))


def _everything(
    prog: drgn.Program, kind: str, release: str, report: DebugInfoReport, warnings: List[str]
) -> None:
    # no automatic DWARF search behind our back (drgn loads debug info to list modules if it can)
    prog.set_enabled_debug_info_finders([])
    symbols = load_vmlinux_symbols(prog, kind)
    vmlinux, types_source = _vmlinux_btf(prog, kind)
    types = BtfTypes(prog, vmlinux)
    register_btf(prog, types, first=True)
    register_declarations(prog, DeclaredGlobals(prog, types, _version(release)))
    report.sources["vmlinux"] = {"types": types_source, "symbols": symbols}
    names = _loaded_needed(prog)
    mod_symbols = symbols.replace("/proc/kallsyms", "kallsyms from kernel memory")
    blobs = _module_btfs(prog, kind, names, vmlinux, warnings)
    for name in names:
        report.modules[name] = ModuleDebugInfo(name=name, path=None)
        if name in blobs:
            blob, source = blobs[name]
            types.add_module(blob)
            report.modules[name].btf = source
            report.sources[name] = {"types": source, "symbols": mod_symbols}
    load_module_symbols(prog)


def _modules_only(
    prog: drgn.Program, kind: str, release: str, report: DebugInfoReport, warnings: List[str]
) -> None:
    missing = report.missing_modules
    if not missing:
        return
    try:
        vmlinux, _ = _vmlinux_btf(prog, kind)
    except (BtfUnavailable, BtfError):
        return  # the modules stay missing, with the usual warnings
    blobs = _module_btfs(prog, kind, missing, vmlinux, warnings)
    if not blobs:
        return
    types = BtfTypes(prog, vmlinux, [b for b, _ in blobs.values()], search_vmlinux=False)
    register_btf(prog, types, first=False)
    register_declarations(prog, DeclaredGlobals(prog, types, _version(release)))
    load_module_symbols(prog)
    report.sources["vmlinux"] = {"types": f"DWARF {report.vmlinux}", "symbols": f"DWARF {report.vmlinux}"}
    for name in NEEDED_MODULES:
        m = report.modules.get(name)
        if m is None:
            continue
        if m.path is not None:
            report.sources[name] = {"types": f"DWARF {m.path}", "symbols": f"DWARF {m.path}"}
        elif name in blobs:
            m.btf = blobs[name][1]
            report.sources[name] = {"types": m.btf, "symbols": f"kallsyms from {_where(kind)}"}


def no_types_message(release: str, version: Optional[str], mode: str, why: str) -> str:
    """The error when vmlinux has neither DWARF nor usable BTF + kallsyms."""
    hint = debug_package_hint(release, version)
    if mode == "btf":
        return f"--types btf: the kernel's own type information cannot be used: {why}. {hint}"
    return (
        f"no debug info (vmlinux with DWARF) found for kernel {release}, and the kernel's own BTF and kallsyms "
        f"cannot replace it: {why}. {hint} Or point at the file with -s/--symbols PATH."
    )
