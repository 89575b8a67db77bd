"""Fetch Debian cloud-amd64 kernels and their debug files through a private apt configuration.

The host's own package state is never touched: each suite gets its own sources list, package lists
and download cache under the lab cache.  The current version of each suite is resolved at build time
from the ``linux-image-cloud-amd64`` meta package, because old versions vanish from the archive.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .config import KernelSpec, cache_dir

__all__ = ["KernelFiles", "LabError", "debian_mirror", "fetch_kernel", "load_cached_kernel"]

log = logging.getLogger("lab.kernels")

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

#: Module trees extracted from the kernel package (the guest loads some of them).
MODULE_DIRS = [
    "kernel/drivers/net",
    "kernel/drivers/vhost",
    "kernel/drivers/firmware",
    "kernel/drivers/block",
    "kernel/drivers/virtio",
    "kernel/net/core",
    "kernel/net/ipv4",
    "kernel/net/ipv6",
    "kernel/net/sched",
    "kernel/lib",
]

#: Module debug files extracted from the -dbg package: the ones skbinspect reads.
DEBUG_MODULE_PATTERNS = [
    "kernel/drivers/net/tun.ko*",
    "kernel/drivers/net/tap.ko*",
    "kernel/drivers/net/veth.ko*",
    "kernel/drivers/net/macvlan.ko*",
    "kernel/drivers/net/macvtap.ko*",
    "kernel/drivers/net/ipvlan/*",
    "kernel/drivers/vhost/vhost.ko*",
    "kernel/drivers/vhost/vhost_net.ko*",
    "kernel/drivers/vhost/vhost_iotlb.ko*",
    "kernel/net/core/drop_monitor.ko*",
]


class LabError(Exception):
    """The lab cannot be built; the message says why and what to do."""


@dataclass
class KernelFiles:
    """One extracted kernel: what the guest boots and what skbinspect needs to read it."""

    name: str  # lab kernel name (suite)
    suite: str
    release: str  # uname -r
    version: str  # Debian package version
    root: str  # directory holding everything below
    vmlinuz: str
    modules_dir: str  # .../lib/modules/<release> with the extracted module trees
    debug_vmlinux: str  # vmlinux with DWARF
    debug_root: str  # a tree shaped like / : usr/lib/debug/...

    @property
    def debug_modules_dir(self) -> str:
        return os.path.join(self.debug_root, "usr/lib/debug/lib/modules", self.release)

    def to_json(self) -> Dict[str, str]:
        return asdict(self)


def debian_mirror() -> str:
    """The Debian archive the host's apt is configured with (``$SKBINSPECT_LAB_MIRROR`` overrides)."""
    env = os.environ.get("SKBINSPECT_LAB_MIRROR")
    if env:
        return env.rstrip("/")
    candidates: List[str] = []
    src_dir = Path("/etc/apt/sources.list.d")
    files = [Path("/etc/apt/sources.list")] + (sorted(src_dir.glob("*")) if src_dir.is_dir() else [])
    for f in files:
        if f.suffix not in ("", ".list", ".sources") or not f.is_file():
            continue
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                candidates += line.split()[1:]
            elif line.startswith("deb ") or line.startswith("deb\t"):
                parts = [p for p in re.sub(r"\[[^\]]*\]", "", line).split()[1:]]
                if parts:
                    candidates.append(parts[0])
    for uri in candidates:
        uri = uri.rstrip("/")
        if uri.endswith("/debian") and uri.startswith(("http://", "https://")):
            return uri
    raise LabError(
        "cannot find a Debian archive in the host's apt configuration (/etc/apt/sources.list*); "
        "set SKBINSPECT_LAB_MIRROR to the archive's base URI (the one ending in /debian)"
    )


class PrivateApt:
    """apt-get / apt-cache for one suite, with its own lists and cache."""

    def __init__(self, suite: str, root: Path) -> None:
        self.suite = suite
        self.root = root
        for d in ("lists/partial", "cache/archives/partial"):
            (root / d).mkdir(parents=True, exist_ok=True)
        signed = f"[signed-by={KEYRING}] " if os.path.exists(KEYRING) else ""
        (root / "sources.list").write_text(f"deb {signed}{debian_mirror()} {suite} main\n")

    def _opts(self) -> List[str]:
        r = self.root
        return [
            "-o", f"Dir::Etc::SourceList={r / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=-",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", "APT::Architecture=amd64",
            "-o", "APT::Architectures::=amd64",
            "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Retries=3",
        ]  # fmt: skip

    def _run(self, tool: str, *args: str, cwd: Optional[Path] = None) -> str:
        cmd = [tool, *self._opts(), *args]
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if p.returncode != 0:
            raise LabError(f"{' '.join([tool, *args])} failed for {self.suite}:\n{p.stderr.strip()[-2000:]}")
        return p.stdout

    def update(self) -> None:
        self._run("apt-get", "-q", "update")

    def depends(self, pkg: str) -> List[str]:
        out = self._run("apt-cache", "depends", pkg)
        deps = []
        for line in out.splitlines():
            m = re.match(r"\s*\|?(Pre)?Depends:\s*(\S+)", line)
            if m and not m.group(2).startswith("<"):
                deps.append(m.group(2))
        return deps

    def version(self, pkg: str) -> str:
        out = self._run("apt-cache", "show", "--no-all-versions", pkg)
        m = re.search(r"^Version:\s*(\S+)", out, re.M)
        if not m:
            raise LabError(f"apt-cache show {pkg}: no version")
        return m.group(1)

    def download(self, pkgs: List[str], dest: Path) -> List[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", "-q", "download", *pkgs, cwd=dest)
        out = []
        for pkg in pkgs:
            found = sorted(dest.glob(f"{pkg}_*.deb"))
            if not found:
                raise LabError(f"apt-get download {pkg} produced no .deb")
            out.append(found[-1])
        return out


def _extract(deb: Path, dest: Path, patterns: List[str]) -> None:
    """Extract the members of ``deb`` matching shell ``patterns`` into ``dest`` (symlinks kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar = subprocess.run(
        ["tar", "-x", "-C", str(dest), "--wildcards", "--no-same-owner", *patterns],
        stdin=dpkg.stdout,
        capture_output=True,
        text=True,
    )
    assert dpkg.stdout is not None
    dpkg.stdout.close()
    dpkg.wait()
    # tar exits 2 when a pattern matched nothing; that is checked by the caller.
    if dpkg.returncode != 0 or tar.returncode not in (0, 2):
        raise LabError(f"extracting {deb.name} failed: {tar.stderr.strip()[-1000:]}")


def _manifest(root: Path) -> Path:
    return root / "kernel.json"


def load_cached_kernel(spec: KernelSpec) -> Optional[KernelFiles]:
    """The newest kernel of ``spec`` already in the cache, if any."""
    base = cache_dir() / "kernels" / spec.name
    found = sorted(base.glob("*/kernel.json"), key=lambda p: p.stat().st_mtime) if base.is_dir() else []
    if not found:
        return None
    return KernelFiles(**json.loads(found[-1].read_text()))


def fetch_kernel(spec: KernelSpec, offline_ok: bool = True) -> KernelFiles:
    """Resolve, download and extract the current cloud-amd64 kernel of ``spec.suite`` (cached)."""
    apt = PrivateApt(spec.suite, cache_dir() / "apt" / spec.suite)
    try:
        apt.update()
        image_pkg = next(
            (d for d in apt.depends("linux-image-cloud-amd64") if re.match(r"linux-image-\d", d)), None
        )
        if image_pkg is None:
            raise LabError(f"{spec.suite}: linux-image-cloud-amd64 does not depend on a versioned image")
        release = image_pkg[len("linux-image-") :]
        version = apt.version(image_pkg)
    except LabError:
        cached = load_cached_kernel(spec) if offline_ok else None
        if cached is None:
            raise
        log.warning("%s: cannot resolve the current kernel, reusing cached %s", spec.suite, cached.release)
        return cached

    root = cache_dir() / "kernels" / spec.name / f"{release}_{version}"
    if _manifest(root).exists():
        return KernelFiles(**json.loads(_manifest(root).read_text()))

    log.info("%s: fetching %s (%s)", spec.suite, release, version)
    # next to its final place: renamed there at the end, which only works within one filesystem (an empty
    # cache elsewhere than /tmp, e.g. bind-mounted into a chroot, used to get a cross-device rename)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root.parent))
    try:
        debs_dir = tmp / "debs"
        # 7.x splits the image into linux-binary-* (vmlinuz) and linux-modules-* (modules).
        image_deps = [d for d in apt.depends(image_pkg) if d.endswith(release) and d != image_pkg]
        parts = [d for d in image_deps if d.startswith(("linux-binary-", "linux-modules-"))]
        pkgs = parts or [image_pkg]
        dbg_pkg = f"linux-image-{release}-dbg"
        debs = apt.download(pkgs + [dbg_pkg], debs_dir)
        tree = tmp / "tree"
        mod_patterns = [f"*/modules/{release}/{d}/*" for d in MODULE_DIRS] + [
            f"*/modules/{release}/modules.builtin*",
            f"*/modules/{release}/modules.order",
            f"*vmlinuz-{release}",
            f"*/modules/{release}/vmlinuz",
        ]
        for deb in debs[:-1]:
            _extract(deb, tree, mod_patterns)
        dbg_patterns = [
            f"./usr/lib/debug/boot/vmlinux-{release}",
            f"./usr/lib/debug/lib/modules/{release}/vmlinux",
        ] + [f"./usr/lib/debug/lib/modules/{release}/{p}" for p in DEBUG_MODULE_PATTERNS]
        debug_root = tmp / "debug"
        _extract(debs[-1], debug_root, dbg_patterns)

        vmlinuz = next(iter(sorted(tree.rglob(f"vmlinuz-{release}")) + sorted(tree.rglob("vmlinuz"))), None)
        moddirs = [p for p in tree.rglob(release) if p.is_dir() and p.parent.name == "modules"]
        if vmlinuz is None or not moddirs:
            raise LabError(
                f"{image_pkg}: no vmlinuz or modules found in {', '.join(d.name for d in debs[:-1])}"
            )
        dbg_vmlinux = debug_root / f"usr/lib/debug/boot/vmlinux-{release}"
        if not dbg_vmlinux.exists():  # dangling 7.x symlink: the real file is under lib/modules
            alt = debug_root / f"usr/lib/debug/lib/modules/{release}/vmlinux"
            if not alt.exists():
                raise LabError(f"{dbg_pkg}: no vmlinux debug file found")
        shutil.rmtree(debs_dir)
        root.parent.mkdir(parents=True, exist_ok=True)
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    def moved(p: Path) -> str:
        return str(root / p.relative_to(tmp))

    files = KernelFiles(
        name=spec.name,
        suite=spec.suite,
        release=release,
        version=version,
        root=str(root),
        vmlinuz=moved(vmlinuz),
        modules_dir=moved(moddirs[0]),
        debug_vmlinux=str(root / f"debug/usr/lib/debug/boot/vmlinux-{release}"),
        debug_root=str(root / "debug"),
    )
    if not os.path.exists(files.debug_vmlinux):
        files.debug_vmlinux = str(root / f"debug/usr/lib/debug/lib/modules/{release}/vmlinux")
    _manifest(root).write_text(json.dumps(files.to_json(), indent=2))
    return files
