"""Finding the kernel's and the needed modules' debugging information.

Search order, for vmlinux and for each module skbinspect reads (:data:`NEEDED_MODULES`):

1. the paths given with ``-s/--symbols`` (files, or directories searched like a root or a module tree);
2. the standard places: Debian/Ubuntu ``/usr/lib/debug/boot/vmlinux-<release>``, the 7.x Debian
   ``/usr/lib/debug/lib/modules/<release>/vmlinux`` (the boot path is only a symlink to it there),
   ``/usr/lib/debug/lib/modules/<release>/`` for modules, Fedora's ``*.ko.debug`` and
   ``vmlinux`` under the same tree, ``/boot/vmlinux-<release>`` and ``/lib/modules/<release>/``;
3. drgn's own standard search (build-id links under ``/usr/lib/debug/.build-id``, debuginfod on Fedora).

Files are matched to the target by build ID (drgn's ``Module.try_file``), so a wrong file is ignored and
reported as not matching instead of being used.  The search paths per distribution are in
docs/kernel/target.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import drgn

from skbinspect.symbols import elf_build_id

__all__ = [
    "NEEDED_MODULES",
    "DebugInfoReport",
    "ModuleDebugInfo",
    "elf_build_id",
    "load_debug_info",
    "kernel_main_module",
    "debug_package_hint",
]

#: Loaded modules whose DWARF skbinspect uses (when they are loaded).
NEEDED_MODULES = (
    "tun",
    "tap",
    "macvlan",
    "macvtap",
    "ipvlan",
    "ipvtap",
    "veth",
    "vhost",
    "vhost_net",
    "drop_monitor",
)

#: Bound on files visited when indexing one directory for module debug files.
MAX_INDEXED_FILES = 200_000


@dataclass
class ModuleDebugInfo:
    """Debug-info state of one loaded kernel module that skbinspect needs."""

    name: str
    path: Optional[str]  # debug file used, None if missing
    tried: List[str] = field(default_factory=list)  # candidate files that did not match (build ID)
    btf: Optional[str] = None  # where its BTF came from, when that stands in for missing DWARF


@dataclass
class DebugInfoReport:
    """What debug info was found for the kernel and the needed modules."""

    release: str
    vmlinux: Optional[str]
    vmlinux_tried: List[str] = field(default_factory=list)
    modules: Dict[str, ModuleDebugInfo] = field(default_factory=dict)  # loaded needed modules only
    # where types and symbols came from, per module ("vmlinux" too), when BTF or kallsyms were used
    sources: Dict[str, Dict[str, str]] = field(default_factory=dict)

    @property
    def missing_modules(self) -> List[str]:
        return [m.name for m in self.modules.values() if m.path is None and m.btf is None]

    def module_ok(self, name: str) -> bool:
        """True if ``name`` is not loaded (nothing to read) or its debug info (or BTF) was loaded."""
        m = self.modules.get(name)
        return m is None or m.path is not None or m.btf is not None


def debug_package_hint(release: str, version: Optional[str] = None) -> str:
    """How to install the kernel's debug info.

    :param release: ``UTS_RELEASE`` (``uname -r``).
    :param version: ``UTS_VERSION`` (``uname -v``) when known, e.g. ``#1 SMP PREEMPT_DYNAMIC Debian
        6.1.176-1 (...)``: Debian and Ubuntu kernels name their distribution there, and then only that
        distribution's package is named.  Otherwise the likeliest distribution comes first.
    """
    deb = f"apt-get install linux-image-{release}-dbg"
    ubuntu = f"apt-get install linux-image-{release}-dbgsym (from the ddebs.ubuntu.com archive)"
    fedora = f"dnf debuginfo-install kernel-{release}"
    if version and re.search(r"\bDebian\b", version):
        return f"This is a Debian kernel: install its debug package with `{deb}`."
    if version and re.search(r"\bUbuntu\b", version):
        return f"This is an Ubuntu kernel: install its debug package with `{ubuntu}`."
    if re.search(r"\.fc\d+|\.el\d+", release):
        order = [("Fedora/RHEL", fedora), ("Debian", deb), ("Ubuntu", ubuntu)]
    elif re.search(r"-generic|-aws|-azure|-gcp|-lowlatency", release):
        order = [("Ubuntu", ubuntu), ("Debian", deb), ("Fedora", fedora)]
    else:
        order = [("Debian", deb), ("Ubuntu", ubuntu), ("Fedora", fedora)]
    return "Install the kernel's debug info: " + "; ".join(f"on {d}: {c}" for d, c in order) + "."


def _vmlinux_candidates(release: str, roots: Iterable[str]) -> List[str]:
    rel = [
        f"usr/lib/debug/boot/vmlinux-{release}",
        f"usr/lib/debug/lib/modules/{release}/vmlinux",  # Debian 7.x, Fedora
        f"boot/vmlinux-{release}",
        f"lib/modules/{release}/build/vmlinux",
        f"vmlinux-{release}",
        "vmlinux",
    ]
    out = []
    for root in roots:
        for r in rel:
            p = os.path.join(root, r)
            if os.path.isfile(p):  # follows symlinks: a dangling 7.x link is skipped
                out.append(p)
    return out


def _module_dirs(release: str, user_dirs: Sequence[str], default: bool) -> List[str]:
    """Directories to search for module debug files: the standard trees under each root, and the
    user's directories themselves (a module tree given directly)."""
    roots = list(user_dirs) + (["/"] if default else [])
    out = []
    for root in roots:
        for r in (f"usr/lib/debug/lib/modules/{release}", f"lib/modules/{release}"):
            p = os.path.join(root, r)
            if os.path.isdir(p) and p not in out:
                out.append(p)
    for d in user_dirs:
        if not any(p.startswith(d.rstrip("/") + "/") for p in out) and d not in out:
            out.append(d)
    return out


def _index_modules(directory: str, wanted: Sequence[str]) -> Dict[str, List[str]]:
    """Module name -> candidate debug files under ``directory`` (bounded walk)."""
    want = set(wanted)
    found: Dict[str, List[str]] = {}
    seen = 0
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if d not in (".build-id", "source", "build")]
        for fn in filenames:
            seen += 1
            m = re.match(r"(.+?)\.ko(\.debug)?$", fn)
            if m:
                name = m.group(1).replace("-", "_")
                if name in want:
                    found.setdefault(name, []).append(os.path.join(dirpath, fn))
        if seen > MAX_INDEXED_FILES:
            break
    return found


def kernel_main_module(prog: drgn.Program) -> drgn.Module:
    """The kernel's main module as drgn creates it for the target, with its build ID (from VMCOREINFO
    ``BUILD-ID``: Linux kernel commit 0935288c6e00 ("kdump: append kernel build-id string to
    VMCOREINFO") (in v5.9)), so that ``try_file`` checks files against it."""
    for module, _ in prog.loaded_modules():
        if isinstance(module, drgn.MainModule):
            return module
    return prog.main_module(name="kernel", create=True)


def load_debug_info(
    prog: drgn.Program, release: str, symbols: Sequence[str] = (), default: bool = True
) -> DebugInfoReport:
    """Find and load debug info for vmlinux and the needed loaded modules of ``prog``.

    :param symbols: ``-s`` paths: debug files or directories.
    :param default: also search the standard places and use drgn's standard finders.
    """
    files = [os.path.abspath(s) for s in symbols if os.path.isfile(s)]
    dirs = [os.path.abspath(s) for s in symbols if os.path.isdir(s)]
    roots = dirs + (["/"] if default else [])
    report = DebugInfoReport(release=release, vmlinux=None)

    main = kernel_main_module(prog)
    for cand in files + _vmlinux_candidates(release, roots):
        if not main.wants_debug_file():
            break
        if os.path.basename(cand).endswith((".ko", ".ko.debug")):
            continue
        main.try_file(cand)
        if main.wants_debug_file():
            report.vmlinux_tried.append(cand)
    if main.wants_debug_file() and default:
        prog.find_standard_debug_info([main])
    report.vmlinux = None if main.wants_debug_file() else main.debug_file_path
    if report.vmlinux is None:
        return report  # modules cannot be enumerated without vmlinux types

    needed: Dict[str, drgn.Module] = {}
    for module, _ in prog.loaded_modules():
        if module is main:
            continue
        name = module.name.replace("-", "_")
        if name in NEEDED_MODULES:
            needed[name] = module
    if not needed:
        return report
    index: Dict[str, List[str]] = {}
    for f in files:
        m = re.match(r"(.+?)\.ko(\.debug)?$", os.path.basename(f))
        if m:
            index.setdefault(m.group(1).replace("-", "_"), []).append(f)
    for d in _module_dirs(release, dirs, default):
        for name, paths in _index_modules(d, list(needed)).items():
            index.setdefault(name, []).extend(paths)
    for name, module in sorted(needed.items()):
        info = ModuleDebugInfo(name=name, path=None)
        for cand in index.get(name, []):
            if not module.wants_debug_file():
                break
            module.try_file(cand)
            if module.wants_debug_file():
                info.tried.append(cand)
        if module.wants_debug_file() and default:
            prog.find_standard_debug_info([module])
        if not module.wants_debug_file():
            info.path = module.debug_file_path
        report.modules[name] = info
    return report
