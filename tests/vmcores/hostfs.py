"""The live-host lab's filesystem: an ext4 image that makes a lab guest look like a Debian host.

The ``host`` boot (guest/scenarios/host.sh) runs skbinspect *inside* the guest, with no options, as an
engineer would on a real machine.  For that the guest needs, at the paths a Debian host has them:

* the kernel's debug files, as ``apt-get install linux-image-$(uname -r)-dbg`` leaves them:
  ``/usr/lib/debug/boot/vmlinux-<release>`` (on 7.x a symlink to ``/usr/lib/debug/lib/modules/<release>/vmlinux``)
  and the module debug files under ``/usr/lib/debug/lib/modules/<release>/kernel/`` (the lab extracts the
  modules skbinspect reads, see kernels.DEBUG_MODULE_PATTERNS, not all 4,000 of them);
* a Python interpreter with drgn, click and rich: the host's own interpreter (same prefix, same version),
  its standard library, and the distributions skbinspect depends on, copied from the host's installation;
* skbinspect itself, installed by ``pip install --no-deps --target`` from the checkout under test (a real,
  non-editable install with its console script and entry points), the script in ``/usr/local/bin``.

Everything goes into one ext4 image (``mke2fs -d``, no root privileges or loop devices needed) that the
guest mounts read-only and bind-mounts onto the standard paths listed in ``/.skblab-binds`` of the image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Iterable, List, Set

from .initramfs import _shared_libs
from .kernels import KernelFiles, LabError

__all__ = ["PROJECT_DIR", "build_host_image", "host_image_digest", "python_prefix"]

PROJECT_DIR = Path(__file__).resolve().parents[2]

#: Standard-library parts a command-line tool never imports (left out to keep the image small).
STDLIB_SKIP = {
    "site-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "__phello__",
}

#: Bound on the distributions followed from skbinspect's requirements.
MAX_DISTRIBUTIONS = 50


def python_prefix() -> Path:
    """The prefix of the interpreter running the lab (the base interpreter when inside a venv)."""
    return Path(sys.base_prefix)


def _project_sources() -> List[Path]:
    files = [PROJECT_DIR / "pyproject.toml"]
    files += sorted((PROJECT_DIR / "skbinspect").rglob("*.py"))
    return files


def _requirement_closure(root_requires: Iterable[str]) -> List[metadata.Distribution]:
    """Installed distributions needed by ``root_requires`` (extras and non-matching markers ignored)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - pip vendors it
        from pip._vendor.packaging.requirements import Requirement  # type: ignore
    out: List[metadata.Distribution] = []
    seen: Set[str] = set()
    todo = list(root_requires)
    while todo and len(seen) < MAX_DISTRIBUTIONS:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise LabError(f"{req.name} is not installed on the host; run scripts/install-deps.sh") from None
        out.append(dist)
        todo += dist.requires or []
    return out


def _skbinspect_requires() -> List[str]:
    text = (PROJECT_DIR / "pyproject.toml").read_text()
    m = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.M | re.S)
    if not m:
        raise LabError("pyproject.toml has no dependencies list")
    return re.findall(r"\"([^\"]+)\"", m.group(1))


def host_image_digest() -> str:
    """What decides the image's content besides the kernel: the project's sources, the interpreter and the
    versions of the distributions copied (part of the ``host`` boot's cache key)."""
    h = hashlib.sha256()
    h.update(f"{sys.version}\0{python_prefix()}\0".encode())
    for d in _requirement_closure(_skbinspect_requires()):
        h.update(f"{d.metadata['Name']}=={d.version}\0".encode())
    for p in _project_sources():
        h.update(str(p.relative_to(PROJECT_DIR)).encode() + b"\0" + p.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def _copy(src: Path, dest_root: Path, at: str) -> Path:
    dest = dest_root / at.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        os.symlink(os.readlink(src), dest)
    elif not dest.exists():
        shutil.copy2(src, dest)
    return dest


def _stage_python(stage: Path) -> List[Path]:
    """Copy the interpreter, its standard library and skbinspect's dependencies; install skbinspect.
    Returns the ELF files whose shared libraries the guest needs."""
    prefix = python_prefix()
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not str(stdlib).startswith(str(prefix)):
        raise LabError(f"the standard library {stdlib} is not under the interpreter prefix {prefix}")
    elves: List[Path] = []
    exe = Path(sys.executable).resolve()
    _copy(exe, stage, str(prefix / "bin" / ver))
    elves.append(exe)
    for alias in ("python3", "python"):
        link = stage / str(prefix / "bin" / alias).lstrip("/")
        if not link.exists():
            link.symlink_to(ver)
    libdir = Path(sysconfig.get_config_var("LIBDIR") or prefix / "lib")
    for lib in libdir.glob(f"lib{ver}*.so*"):
        _copy(lib, stage, str(lib))
        if not lib.is_symlink():
            elves.append(lib)
    # the standard library, without tests and GUI parts; only the plain .pyc caches
    for root, dirs, files in os.walk(stdlib):
        rel = Path(root).relative_to(stdlib)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in STDLIB_SKIP and not d.startswith("config-")]
        for f in files:
            if ".opt-" in f:
                continue
            src = Path(root) / f
            _copy(src, stage, str(src))
            if f.endswith(".so"):
                elves.append(src)
    # skbinspect's dependencies, file by file from their RECORDs, as installed on the host
    site = Path(sysconfig.get_paths()["purelib"])
    target_site = stage / str(stdlib / "site-packages").lstrip("/")
    for dist in _requirement_closure(_skbinspect_requires()):
        base = Path(str(dist.locate_file("")))
        for f in dist.files or []:
            src = (base / f).resolve()
            try:
                rel = src.relative_to(site)
            except ValueError:
                continue  # scripts in bin/ and the like
            if "__pycache__" in rel.parts and ".opt-" in rel.name:
                continue
            if src.is_file():
                dest = target_site / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
                if ".so" in src.name:
                    elves.append(src)
    # skbinspect from the checkout under test: a real install, with its console script
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
             "--no-compile", "--target", tmp, str(PROJECT_DIR)],
            capture_output=True, text=True,
        )  # fmt: skip
        if p.returncode != 0:
            raise LabError(f"pip install of the checkout failed:\n{p.stderr[-3000:]}")
        script = Path(tmp) / "bin" / "skbinspect"
        if not script.exists():
            raise LabError("pip install of the checkout made no skbinspect script")
        text = script.read_text()
        # pip writes the host interpreter's path; on the guest it is the same prefix
        text = re.sub(r"^#!.*", f"#!{prefix / 'bin' / ver}", text, count=1)
        dest = stage / "usr/local/bin/skbinspect"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        dest.chmod(0o755)
        shutil.rmtree(Path(tmp) / "bin")
        shutil.copytree(tmp, target_site, dirs_exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", str(target_site / "skbinspect")],
        capture_output=True,
    )  # plain .pyc caches: Python starts faster under TCG
    return elves


def _stage_libs(stage: Path, elves: List[Path]) -> None:
    """The shared libraries the interpreter and the extension modules need, at their host paths (outside
    the Python prefix, which is copied whole)."""
    prefix = str(python_prefix())
    extra = [shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/ip"]
    done: Set[str] = set()
    for elf in [str(e) for e in elves] + extra:
        for lib in _shared_libs(elf):
            if lib in done or lib.startswith(prefix) or "site-packages" in lib:
                continue
            done.add(lib)
            dest = stage / lib.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(lib), dest)


def _stage_debug(stage: Path, kernel: KernelFiles) -> None:
    """The -dbg package's files, at their Debian paths (hard links into the lab's kernel cache)."""
    src = Path(kernel.debug_root) / "usr/lib/debug"
    if not src.is_dir():
        raise LabError(f"{kernel.name}: no debug tree at {src}")
    dest = stage / "usr/lib/debug"
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            s = Path(root) / name
            d = dest / rel / name
            if s.is_symlink():
                os.symlink(os.readlink(s), d)
            else:
                try:
                    os.link(s, d)
                except OSError:
                    shutil.copy2(s, d)


def _world_readable(stage: Path) -> None:
    """Directories 0755, files readable by all (executables executable by all): as a package manager
    installs them, so that an unprivileged user in the guest can run Python (copies from the host's
    prefix and pip's temporary directories can be 0700)."""
    stage.chmod(0o755)
    for root, dirs, files in os.walk(stage):
        for d in dirs:
            p = Path(root) / d
            if not p.is_symlink():
                p.chmod(0o755)
        for f in files:
            p = Path(root) / f
            if p.is_symlink():
                continue
            mode = p.stat().st_mode & 0o777
            if p.stat().st_nlink > 1:
                continue  # a hard link into the lab's kernel cache (debug files): leave the cache alone
            p.chmod(mode | 0o444 | (0o111 if mode & 0o111 else 0))


def _binds(stage: Path) -> List[str]:
    """Directories of the image the guest bind-mounts onto its own root."""
    prefix = str(python_prefix()).lstrip("/")
    out = ["usr/lib/debug", prefix, "usr/local/bin"]
    for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"):
        if (stage / d).is_dir() and not any(b.startswith(d + "/") or b == d for b in out):
            if any(p.is_file() for p in (stage / d).iterdir()):
                out.append(d)
    return out


def build_host_image(kernel: KernelFiles, out: Path) -> Path:
    """Write the live-host ext4 image for ``kernel`` to ``out``."""
    if not shutil.which("mke2fs"):
        raise LabError("mke2fs is missing: apt-get install e2fsprogs")
    with tempfile.TemporaryDirectory(prefix="hostfs-", dir=out.parent) as tmp:
        stage = Path(tmp)
        elves = _stage_python(stage)
        _stage_libs(stage, elves)
        _stage_debug(stage, kernel)
        _world_readable(stage)
        (stage / ".skblab-binds").write_text("".join(f"{b}\n" for b in _binds(stage)))
        size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file() and not p.is_symlink())
        size_mb = size * 5 // 4 // (1 << 20) + 64
        if out.exists():
            out.unlink()
        p = subprocess.run(
            ["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "skbhost", "-d", str(stage), str(out),
             f"{size_mb}M"],
            capture_output=True, text=True,
        )  # fmt: skip
        if p.returncode != 0:
            raise LabError(f"mke2fs -d failed:\n{p.stderr[-2000:]}")
    return out
