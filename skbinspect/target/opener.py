"""Opening a target: the live kernel (``/proc/kcore``), a vmcore, or a running QEMU guest over QMP.

Everything that can go wrong before drgn has a program is checked here and reported as a
:class:`~skbinspect.errors.TargetError` or :class:`~skbinspect.errors.DebugInfoError` with a message
that says what to do.  Readers never see a half-opened target.  The vmcore formats recognised, and
what each check relies on, are in docs/kernel/target.md.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, List, Optional, Sequence, Tuple

import drgn

from skbinspect.errors import DebugInfoError, SkbinspectError, TargetError
from skbinspect.target.btfsource import TYPE_MODES, BtfUnavailable, no_types_message, use_btf
from skbinspect.target.debuginfo import (
    DebugInfoReport,
    debug_package_hint,
    elf_build_id,
    kernel_main_module,
    load_debug_info,
)
from skbinspect.target.dumpfile import check_kdump

__all__ = [
    "Target",
    "VmcoreFile",
    "check_vmcore_file",
    "kernel_version",
    "open_target",
    "target_from_program",
]

KDUMP_SIGNATURE = b"KDUMP   "
FLATTENED_SIGNATURE = b"makedumpfile"
CAP_SYS_RAWIO = 17


@dataclass
class VmcoreFile:
    """What the first bytes and size of a vmcore file say about it."""

    path: str
    format: str  # "elf" or "kdump"
    size: int
    expected_size: Optional[int] = None  # ELF: end of the last PT_LOAD's file data
    warnings: List[str] = field(default_factory=list)


def _explain_open_error(path: str, e: OSError) -> TargetError:
    return TargetError(f"cannot read vmcore {path}: {e.strerror or e}.")


def check_vmcore_file(path: str) -> VmcoreFile:
    """Check that ``path`` is a vmcore drgn can open; raise :class:`TargetError` saying why not.

    Recognises ELF cores (kdump's ``/proc/vmcore``, ``makedumpfile -E``, QEMU ``dump-guest-memory``),
    kdump-compressed files (``makedumpfile -c/-l/-p/-z``) and makedumpfile's flattened format (refused
    with how to reassemble it).  A truncated ELF core is accepted with a warning: what is present can
    still be read.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TargetError(f"vmcore {path} does not exist.")
    except OSError as e:
        raise _explain_open_error(path, e)
    if stat.S_ISDIR(st.st_mode):
        raise TargetError(f"{path} is a directory, not a vmcore.")
    if not stat.S_ISREG(st.st_mode):
        # a FIFO would block open() and read() for ever; a device has no size to check offsets against
        raise TargetError(
            f"{path} is not a regular file (a FIFO, socket or device): give the vmcore file itself."
        )
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            if head[:4] == b"\x7fELF":
                return _check_elf(path, f, head, st.st_size)
            if head.startswith(KDUMP_SIGNATURE):
                return VmcoreFile(path, "kdump", st.st_size, warnings=check_kdump(path, f, st.st_size))
    except OSError as e:
        raise _explain_open_error(path, e)
    if head.startswith(FLATTENED_SIGNATURE):
        raise TargetError(
            f"{path} is in makedumpfile's flattened format (as written with makedumpfile -F or to a pipe), "
            "which cannot be read directly. Reassemble it first:\n"
            f"    makedumpfile -R {path}.reassembled < {path}\n"
            f"and open {path}.reassembled."
        )
    if not head:
        raise TargetError(f"{path} is empty: the dump was not written (or the copy failed).")
    raise TargetError(
        f"{path} is not a vmcore: it is neither an ELF core file nor a kdump-compressed dump "
        f"(it starts with {head[:8]!r})."
    )


def _check_elf(path: str, f: BinaryIO, head: bytes, size: int) -> VmcoreFile:
    """An ELF file: a 64-bit little-endian core (``ET_CORE``) with memory segments, its program headers
    within the file; a file shorter than its last segment's end is accepted with a warning."""
    if len(head) < 64 or head[4] != 2 or head[5] != 1:
        raise TargetError(f"{path} is an ELF file but not a 64-bit little-endian one: not an x86-64 vmcore.")
    (e_type, e_machine) = struct.unpack_from("<HH", head, 16)
    if e_type != 4:  # ET_CORE
        kind = {1: "a relocatable object", 2: "an executable (is it a vmlinux?)", 3: "a shared object"}
        raise TargetError(f"{path} is {kind.get(e_type, 'an ELF file')}, not a core dump (vmcore).")
    if e_machine != 62:  # EM_X86_64
        raise TargetError(
            f"{path} is a core dump of another architecture (ELF machine {e_machine}): skbinspect reads "
            "x86-64 kernels only."
        )
    (phoff,) = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    if phnum == 0xFFFF or phentsize < 56 or phoff + phentsize * phnum > size:
        raise TargetError(f"{path} is truncated: its ELF program headers are cut off ({size} bytes).")
    f.seek(phoff)
    phdrs = f.read(phentsize * phnum)
    end = 0
    loads = 0
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * phentsize)
        if p_type in (1, 4):  # PT_LOAD, PT_NOTE
            end = max(end, p_offset + p_filesz)
            loads += p_type == 1
        if p_type == 4 and p_offset + p_filesz > size:
            raise TargetError(
                f"{path} is truncated: its ELF notes (bytes {p_offset} to {p_offset + p_filesz}, with the "
                f"VMCOREINFO that identifies the kernel) are cut off at {size} bytes."
            )
    vf = VmcoreFile(path, "elf", size, expected_size=end)
    if loads == 0:
        raise TargetError(
            f"{path} is an ELF core file without memory segments (PT_LOAD): not a kernel vmcore."
        )
    if end > size:
        vf.warnings.append(
            f"vmcore {path} is truncated: {size} of {end} bytes present ({100 * size // end}%); "
            "memory beyond the cut cannot be read and some results may be missing."
        )
    return vf


def _has_cap_sys_rawio() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RAWIO & 1)
    except OSError:
        pass
    return False


def _check_live() -> None:
    if not os.path.exists("/proc/kcore"):
        raise TargetError(
            "/proc/kcore does not exist, so the live kernel cannot be read: the kernel was built without "
            "CONFIG_PROC_KCORE or /proc is not mounted. Inspect a vmcore instead (skbinspect -c VMCORE ...)."
        )
    if os.geteuid() != 0 and not _has_cap_sys_rawio():
        raise TargetError(
            "live inspection reads /proc/kcore, which needs root (or CAP_SYS_RAWIO). "
            "Run it as root, e.g. `sudo skbinspect ...`, or inspect a vmcore with `skbinspect -c VMCORE ...`."
        )


def _check_qmp(address: str) -> None:
    if ":" in address and not address.startswith(("/", ".")):
        host, _, port = address.rpartition(":")
        try:
            socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except (OSError, ValueError, UnicodeError) as e:
            raise TargetError(
                f"--qemu {address}: cannot resolve {host!r} ({getattr(e, 'strerror', None) or e}); give "
                "HOST:PORT of QEMU's QMP TCP server (-qmp tcp:HOST:PORT,server=on,wait=off) or its Unix socket path."
            )
        return  # connected to by drgn
    try:
        st = os.stat(address)
    except FileNotFoundError:
        raise TargetError(
            f"QMP socket {address} does not exist. Start QEMU with `-qmp unix:{address},server=on,wait=off`."
        )
    except OSError as e:
        raise TargetError(f"cannot use QMP socket {address}: {e.strerror}.")
    if not stat.S_ISSOCK(st.st_mode):
        raise TargetError(f"{address} is not a socket; --qemu wants the path of QEMU's QMP Unix socket.")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(address)
    except OSError as e:
        raise TargetError(
            f"cannot connect to QMP socket {address}: {e.strerror or e}. Is that QEMU still running, and is "
            "no other client connected to it (QMP serves one client at a time)?"
        )
    finally:
        s.close()


@dataclass
class Target:
    """An opened target: a drgn program with its debug info, and what is known about where it came from.

    :ivar prog: the drgn program, with vmlinux debug info loaded.
    :ivar kind: ``"live"``, ``"vmcore"`` or ``"qemu"``.
    :ivar source: ``/proc/kcore``, the vmcore path, or the QMP socket.
    """

    prog: drgn.Program
    kind: str
    source: str
    release: str
    debug: DebugInfoReport
    vmcore: Optional[VmcoreFile] = None
    warnings: List[str] = field(default_factory=list)

    @property
    def is_live(self) -> bool:
        return self.kind in ("live", "qemu")

    def require_module(self, name: str) -> None:
        """Raise :class:`DebugInfoError` if loaded module ``name`` has no debug info."""
        if not self.debug.module_ok(name):
            raise DebugInfoError(
                f"module {name} is loaded but its debug info was not found, so its devices cannot be read. "
                + (
                    "Nor does the kernel have BTF for it (module BTF needs Linux 5.11+ with CONFIG_DEBUG_INFO_BTF_MODULES). "
                    if self.debug.sources
                    else ""
                )
                + debug_package_hint(self.release, local_kernel_version(self.kind))
                + (
                    " Tried: " + ", ".join(self.debug.modules[name].tried)
                    if self.debug.modules[name].tried
                    else ""
                )
            )


def _set_target(prog: drgn.Program, kind: str, source: str) -> None:
    try:
        if kind == "vmcore":
            prog.set_core_dump(source)
        elif kind == "qemu":
            prog.set_qemu_qmp(source)
        else:
            prog.set_kernel()
    except PermissionError as e:
        raise TargetError(f"cannot open {source}: {e.strerror or e}.")
    except Exception as e:  # noqa: BLE001 - drgn reports a bad dump with its generic Exception too
        what = {"vmcore": "vmcore", "qemu": "QEMU guest over QMP", "live": "live kernel"}[kind]
        msg = str(e)
        hint = ""
        if "unrecognized QEMU memory dump" in msg:
            hint = "The dump has no VMCOREINFO: start QEMU with `-device vmcoreinfo` and load qemu_fw_cfg in the guest."
        elif kind == "vmcore":
            hint = "Is the file complete and really a Linux kernel dump?"
        # one line: what drgn said and what to check (a damaged dump's whole message)
        raise TargetError(f"cannot open {what} {source}: {msg}." + (f" {hint}" if hint else ""))


def _probe_memory(prog: drgn.Program, source: str) -> None:
    """Read the first bytes of ``init_task``: if even those cannot be read (the kernel's page tables or
    its data are missing), nothing can, and every command would only print faults."""
    try:
        prog.read(prog["init_task"].address_, 8)
    except LookupError:
        return
    except (drgn.FaultError, ValueError, OverflowError) as e:
        raise TargetError(
            f"the kernel's memory in {source} cannot be read ({e}): the dump is truncated or damaged where "
            "the kernel keeps its own data and page tables, or it was filtered too much."
        )


def kernel_version(prog: drgn.Program) -> Tuple[int, int]:
    """(major, minor) of the target's kernel from ``UTS_RELEASE``; (0, 0) if unknown.  For the few
    formats that the debug info cannot tell apart (text layouts such as /proc/net/softnet_stat)."""
    try:
        m = re.match(r"(\d+)\.(\d+)", _release(prog))
    except TargetError:
        return (0, 0)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _release(prog: drgn.Program) -> str:
    try:
        return prog["UTS_RELEASE"].string_().decode()
    except (KeyError, LookupError, drgn.FaultError) as e:
        raise TargetError(f"cannot read the kernel release from the target ({e}): is it a Linux kernel?")


def target_from_program(
    prog: drgn.Program,
    symbols: Sequence[str] = (),
    default_symbols: bool = True,
    kind: Optional[str] = None,
    types: str = "auto",
) -> Target:
    """Wrap an already-set drgn program (e.g. inside a drgn session), loading what debug info is missing.

    :param types: ``auto``, ``dwarf`` or ``btf``, as for :func:`open_target`."""
    if kind is None:
        if prog.flags & drgn.ProgramFlags.IS_LIVE:
            kind = (
                "live" if os.path.exists("/proc/kcore") and prog.core_dump_path == "/proc/kcore" else "qemu"
            )
        else:
            kind = "vmcore"
    source = getattr(prog, "core_dump_path", None) or kind
    release = _release(prog)
    warnings: List[str] = []
    report = _load_types(prog, kind, release, symbols, default_symbols, types, warnings)
    return Target(prog, kind, str(source), release, report, warnings=warnings)


def local_kernel_version(kind: str) -> Optional[str]:
    """``uname -v`` of the running kernel when the target is that kernel (live), else None: without debug
    info, the only way to tell a Debian kernel from another with the same kind of release string."""
    if kind != "live":
        return None
    try:
        with open("/proc/sys/kernel/version") as f:
            return f.read().strip()
    except OSError:
        return None


def _raise_no_vmlinux(prog: drgn.Program, release: str, report: DebugInfoReport, kind: str) -> None:
    hint = debug_package_hint(release, local_kernel_version(kind))
    main = kernel_main_module(prog)
    want = main.build_id.hex() if main.build_id else None
    if report.vmlinux_tried:
        details = []
        for p in report.vmlinux_tried:
            got = elf_build_id(p)
            details.append(f"{p} (build ID {got.hex() if got else 'none'})")
        raise DebugInfoError(
            f"the debug info given does not match the kernel ({release}"
            + (f", build ID {want}" if want else "")
            + "): "
            + "; ".join(details)
            + ". It belongs to a different kernel build. "
            + hint
        )
    raise DebugInfoError(
        f"no debug info (vmlinux with DWARF) found for kernel {release}. "
        + hint
        + " Or point at the file with -s/--symbols PATH."
    )


def _load_types(
    prog: drgn.Program,
    kind: str,
    release: str,
    symbols: Sequence[str],
    default_symbols: bool,
    types: str,
    warnings: List[str],
) -> DebugInfoReport:
    """DWARF (unless ``types`` is ``btf``), then BTF and kallsyms for what it lacks (unless ``dwarf``)."""
    if types not in TYPE_MODES:
        raise TargetError(f"--types {types}: expected one of {', '.join(TYPE_MODES)}.")
    if types == "btf":
        report = DebugInfoReport(release=release, vmlinux=None)
    else:
        report = load_debug_info(prog, release, symbols, default_symbols)
    if types != "dwarf":
        try:
            use_btf(prog, kind, release, report, types, warnings)
        except BtfUnavailable as e:
            if report.vmlinux_tried and types == "auto":
                _raise_no_vmlinux(prog, release, report, kind)
            raise DebugInfoError(no_types_message(release, local_kernel_version(kind), types, str(e)))
        if report.vmlinux is None and report.vmlinux_tried:
            warnings.append(
                "the debug info given does not match the kernel: "
                + ", ".join(report.vmlinux_tried)
                + "; types come from the kernel's BTF instead."
            )
    if report.vmlinux is None and not report.sources:
        _raise_no_vmlinux(prog, release, report, kind)
    return report


def open_target(
    core: Optional[str] = None,
    qemu: Optional[str] = None,
    symbols: Sequence[str] = (),
    default_symbols: bool = True,
    types: str = "auto",
) -> Target:
    """Open the live kernel (default), a vmcore (``core``) or a QEMU guest (``qemu``) with debug info.

    :param symbols: ``-s`` paths: vmlinux or module debug files, or directories to search.
    :param default_symbols: also search the standard places.
    :param types: where types come from: ``auto`` (DWARF where found, the kernel's BTF and kallsyms for
        the rest), ``dwarf`` (only DWARF), ``btf`` (only BTF and kallsyms).
    :raises TargetError: the target cannot be opened (message says why and what to do).
    :raises DebugInfoError: no matching vmlinux debug info.
    """
    if core and qemu:
        raise TargetError("give either -c/--core or --qemu, not both.")
    for s in symbols:
        if not os.path.exists(s):
            raise TargetError(f"-s/--symbols {s}: no such file or directory.")
    warnings: List[str] = []
    vmcore = None
    if core:
        vmcore = check_vmcore_file(core)
        warnings += vmcore.warnings
        kind, source = "vmcore", core
    elif qemu:
        _check_qmp(qemu)
        kind, source = "qemu", qemu
    else:
        _check_live()
        kind, source = "live", "/proc/kcore"
    prog = drgn.Program()
    _set_target(prog, kind, source)
    release = _release(prog)
    try:
        report = _load_types(prog, kind, release, symbols, default_symbols, types, warnings)
    except (drgn.FaultError, ValueError, OverflowError) as e:
        raise TargetError(
            f"reading the module list of {source} failed ({e}); the dump may be truncated or corrupt."
        )
    except (SkbinspectError, OSError):
        raise
    except Exception as e:  # noqa: BLE001 - drgn's generic Exception for a damaged target
        raise TargetError(
            f"loading the debug info for {source} failed: {e}. The dump may be truncated or corrupt."
        )
    _probe_memory(prog, source)
    for name in report.missing_modules:
        warnings.append(
            f"module {name} is loaded but has no debug info: its devices cannot be read "
            f"(linux-image-{release}-dbg on Debian has it)."
        )
    return Target(prog, kind, source, release, report, vmcore, warnings)
