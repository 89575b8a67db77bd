"""Build a lab guest's initramfs: busybox, a full iproute2 ``ip``, the skblab helper, modules, a scenario."""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .kernels import KernelFiles, LabError

__all__ = ["GUEST_DIR", "GUEST_MODULES", "build_initramfs", "build_skblab", "guest_sources_digest"]

GUEST_DIR = Path(__file__).resolve().parent / "guest"

#: Modules every lab guest loads, in this order (dependencies are loaded first automatically).
GUEST_MODULES = [
    "qemu_fw_cfg",  # with -device vmcoreinfo: QEMU's dump carries VMCOREINFO
    "virtio_pci",  # a module on 5.10 and 6.1 cloud kernels, built in later
    "virtio_blk",  # the output and control disks
    "tun",
    "tap",
    "veth",
    "macvlan",
    "macvtap",
    "ipvlan",
    "ipvtap",
    "vhost_net",
    "drop_monitor",
]


def guest_sources_digest(boot: str, scenario: Optional[bytes] = None) -> str:
    """Digest of what a boot's guest runs: init.sh, skblab.c and the boot's own scenario (part of its
    cache key; other scenarios do not affect it).  ``scenario``: the script's text when it is generated
    (the random boots) rather than guest/scenarios/BOOT.sh."""
    h = hashlib.sha256()
    for p in (GUEST_DIR / "init.sh", GUEST_DIR / "skblab.c", GUEST_DIR / "scenarios" / f"{boot}.sh"):
        data = scenario if scenario is not None and p.parent.name == "scenarios" else p.read_bytes()
        h.update(str(p.relative_to(GUEST_DIR)).encode() + b"\0" + data)
    return h.hexdigest()


def build_skblab(out_dir: Path) -> Path:
    """Compile guest/skblab.c statically (cached by source digest)."""
    src = GUEST_DIR / "skblab.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    out = out_dir / f"skblab-{digest}"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    p = subprocess.run(
        ["gcc", "-static", "-O2", "-Wall", "-o", str(tmp), str(src)], capture_output=True, text=True
    )
    if p.returncode != 0:
        raise LabError(f"compiling skblab.c failed (is libc6-dev installed?):\n{p.stderr[-2000:]}")
    tmp.rename(out)
    return out


# ---- cpio (newc) ---------------------------------------------------------------------------------


class Cpio:
    """A minimal writer of the ``newc`` cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self.chunks: List[bytes] = []
        self.ino = 1
        self.seen: Set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name = name.lstrip("/")
        if name in self.seen:
            return
        self.seen.add(name)
        hdr = "070701" + "".join(
            f"{v:08x}" for v in (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        )
        self.ino += 1
        blob = hdr.encode() + name.encode() + b"\0"
        blob += b"\0" * (-len(blob) % 4)
        blob += data + b"\0" * (-len(data) % 4)
        self.chunks.append(blob)

    def dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o755) -> None:
        self.dir(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self.dir(os.path.dirname(name.strip("/")) or ".")
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def bytes(self) -> bytes:
        trailer = Cpio()
        trailer.ino = 0
        trailer._entry("TRAILER!!!", 0)
        return b"".join(self.chunks + trailer.chunks)


# ---- modules ---------------------------------------------------------------------------------------


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def _modinfo_depends(ko: bytes) -> List[str]:
    m = re.search(rb"(?:^|\0)depends=([^\0]*)", ko)
    if not m or not m.group(1):
        return []
    return [d.decode() for d in m.group(1).split(b",") if d]


def _module_index(modules_dir: Path) -> Dict[str, Path]:
    index: Dict[str, Path] = {}
    for p in modules_dir.rglob("*.ko*"):
        name = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", p.name)
        index.setdefault(name.replace("-", "_"), p)
    return index


def resolve_modules(modules_dir: Path, wanted: Iterable[str]) -> List[Tuple[str, bytes]]:
    """Modules to load, dependencies first; modules not shipped as files are taken to be built in."""
    index = _module_index(modules_dir)
    order: List[Tuple[str, bytes]] = []
    done: Set[str] = set()

    def visit(name: str, stack: Tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in done or name in stack:
            return
        path = index.get(name)
        if path is None:
            done.add(name)  # built in (or not needed by this kernel)
            return
        ko = _read_module(path)
        for dep in _modinfo_depends(ko):
            visit(dep, stack + (name,))
        done.add(name)
        order.append((name, ko))

    for w in wanted:
        visit(w, ())
    return order


def _shared_libs(binary: str) -> List[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def build_initramfs(
    kernel: KernelFiles,
    scenario: Path,
    out: Path,
    skblab: Path,
    extra_modules: Optional[List[str]] = None,
    extra_files: Optional[Dict[str, bytes]] = None,
) -> Path:
    """Write the initramfs for ``kernel`` running ``scenario`` (a guest/scenarios/*.sh file) to ``out``;
    ``extra_files`` maps more paths in the guest to their content."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    ip = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not os.path.exists(busybox):
        raise LabError("busybox is missing: apt-get install busybox-static")
    if not ip:
        raise LabError("iproute2's ip is missing: apt-get install iproute2")
    ldd = subprocess.run(["ldd", busybox], capture_output=True, text=True)
    if "not a dynamic executable" not in ldd.stdout + ldd.stderr:
        raise LabError(f"{busybox} is not statically linked: apt-get install busybox-static")
    c = Cpio()
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "run", "out", "etc", "usr/sbin", "lib/modules"):
        c.dir(d)
    c.file("bin/busybox", Path(busybox).read_bytes())
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a not in ("busybox", "ip"):  # the full iproute2 ip is used by absolute path
            c.symlink(f"bin/{a}", "busybox")
    c.file("usr/sbin/ip", Path(ip).read_bytes())
    for lib in _shared_libs(ip):
        real = os.path.realpath(lib)
        c.file(lib, Path(real).read_bytes())
    c.file("bin/skblab", skblab.read_bytes())
    c.file("init", (GUEST_DIR / "init.sh").read_bytes())
    c.file("scenario.sh", scenario.read_bytes(), 0o644)
    c.file("scenario.name", scenario.stem.encode() + b"\n", 0o644)
    for path, data in (extra_files or {}).items():
        c.file(path, data, 0o644)
    mods = resolve_modules(Path(kernel.modules_dir), GUEST_MODULES + (extra_modules or []))
    for name, ko in mods:
        c.file(f"lib/modules/{name}.ko", ko, 0o644)
    c.file("lib/modules/load.order", "".join(f"{n}\n" for n, _ in mods).encode(), 0o644)
    out.write_bytes(c.bytes())
    return out
