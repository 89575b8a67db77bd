"""``skbinspect info``: what the target is, and what skbinspect can read in it (the kernel facts used,
VMCOREINFO among them, are in docs/kernel/target.md)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import drgn

from skbinspect.target.debuginfo import NEEDED_MODULES
from skbinspect.target.opener import Target

__all__ = ["TargetInfo", "ModuleInfo", "target_info"]


@dataclass
class ModuleInfo:
    """A module skbinspect reads: loaded or not, and its debug file."""

    name: str
    loaded: bool
    debug_file: Optional[str]


@dataclass
class TargetInfo:
    """Facts about an opened target (see :func:`target_info`)."""

    kind: str  # live, vmcore, qemu
    source: str
    release: str
    version: Optional[str]  # the kernel's banner (uname -v)
    cpus_possible: Optional[int]
    cpus_online: Optional[int]
    vmlinux_debug_file: Optional[str]
    modules: List[ModuleInfo] = field(default_factory=list)
    crash_time: Optional[int] = None  # seconds since the epoch (VMCOREINFO CRASHTIME, kdump only)
    kernel_time: Optional[int] = None  # the kernel's wall clock (tk_core xtime_sec) when read / dumped
    panic_message: Optional[str] = None
    vmcore_format: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    # only when BTF or kallsyms were used: module ("vmlinux" too) -> {"types": where, "symbols": where}
    debug_sources: Optional[Dict[str, Dict[str, str]]] = None

    @property
    def missing_debug_info(self) -> List[str]:
        sources = self.debug_sources or {}
        return [m.name for m in self.modules if m.loaded and not m.debug_file and m.name not in sources]

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        if d["debug_sources"] is None:
            del d["debug_sources"]  # DWARF only: the output stays as it always was
        d["missing_debug_info"] = self.missing_debug_info
        return d


def _vmcoreinfo(prog: drgn.Program) -> Dict[str, str]:
    try:
        raw = prog["VMCOREINFO"].string_().decode(errors="replace")
    except (KeyError, LookupError, drgn.FaultError):
        return {}
    return dict(line.split("=", 1) for line in raw.splitlines() if "=" in line)


def _count_cpus(prog: drgn.Program, mask: str) -> Optional[int]:
    from skbinspect.memory.percpu import online_cpus, possible_cpus

    fn = possible_cpus if mask == "possible" else online_cpus
    try:
        return len(fn(prog))
    except (LookupError, drgn.FaultError, ValueError, OverflowError):
        return None


def target_info(target: Target, panic: bool = True) -> TargetInfo:
    """Collect :class:`TargetInfo` for ``target``; each missing piece is left ``None`` with a warning."""
    prog = target.prog
    warnings = list(target.warnings)
    version = None
    try:
        banner = prog["linux_banner"].string_().decode(errors="replace")
        m = re.search(r"\) (#.*)$", banner.strip())
        version = m.group(1) if m else banner.strip()
    except (LookupError, drgn.FaultError):
        pass
    loaded = {name: m for name, m in target.debug.modules.items()}
    modules = [
        ModuleInfo(name, name in loaded, loaded[name].path if name in loaded else None)
        for name in NEEDED_MODULES
    ]
    info = TargetInfo(
        kind=target.kind,
        source=target.source,
        release=target.release,
        version=version,
        cpus_possible=_count_cpus(prog, "possible"),
        cpus_online=_count_cpus(prog, "online"),
        vmlinux_debug_file=target.debug.vmlinux,
        modules=modules,
        vmcore_format=target.vmcore.format if target.vmcore else None,
        warnings=warnings,
        debug_sources=dict(target.debug.sources) or None,
    )
    if "CRASHTIME" in (vmci := _vmcoreinfo(prog)):
        try:
            info.crash_time = int(vmci["CRASHTIME"])
        except ValueError:
            warnings.append(f"VMCOREINFO CRASHTIME is not a number: {vmci['CRASHTIME']!r}")
    try:
        # drgn's helper reads tk_core, and timekeeper_data[TIMEKEEPER_CORE] where that replaced it (in
        # v6.17).
        from drgn.helpers.linux.timekeeping import ktime_get_real_seconds

        info.kernel_time = int(ktime_get_real_seconds(prog))
    except (LookupError, drgn.FaultError, AttributeError) as e:
        warnings.append(f"cannot read the kernel's wall clock: {e}")
    if panic and target.kind == "vmcore":
        try:
            from drgn.helpers.linux.panic import panic_message

            msg = panic_message(prog)
            info.panic_message = msg.decode(errors="replace") if msg else None
        except (LookupError, drgn.FaultError, ValueError) as e:
            warnings.append(f"cannot read the kernel log for a panic message: {e}")
    return info
