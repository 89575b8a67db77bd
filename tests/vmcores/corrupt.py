"""Corrupting a *copy* of a lab vmcore, to test how skbinspect copes with garbage kernel memory."""

from __future__ import annotations

import functools
import shutil
import struct
from pathlib import Path
from typing import List, Tuple, Union

import drgn
from drgn.helpers.linux.mm import virt_to_phys

__all__ = ["copy_vmcore", "file_offsets", "patch_any", "patch_virt"]


def copy_vmcore(src: str, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _loads(path: Path) -> List[Tuple[int, int, int]]:
    """(p_paddr, p_offset, p_filesz) of each PT_LOAD of an ELF64 core."""
    with open(path, "rb") as f:
        hdr = f.read(64)
        (phoff,) = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    out = []
    for i in range(phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", ph, i * phentsize)
        if p_type == 1:
            out.append((p_paddr, p_offset, p_filesz))
    return out


def patch_virt(prog: drgn.Program, core: Path, address: int, data: bytes) -> None:
    """Overwrite ``data`` at kernel direct-map virtual ``address`` in the core file ``core`` (a copy!)."""
    phys = virt_to_phys(drgn.Object(prog, "void *", address)).value_()
    for paddr, off, size in _loads(core):
        if paddr <= phys and phys + len(data) <= paddr + size:
            with open(core, "r+b") as f:
                f.seek(off + phys - paddr)
                f.write(data)
            return
    raise ValueError(f"physical address {phys:#x} is not in the dump")


@functools.lru_cache(maxsize=16)
def _loads_cached(path: str) -> Tuple[Tuple[int, int, int], ...]:
    return tuple(_loads(Path(path)))


def file_offsets(
    prog: drgn.Program, core: Union[str, Path], address: int, data: bytes
) -> List[Tuple[int, bytes]]:
    """Where the bytes ``data`` at kernel virtual ``address`` (any mapped address: direct map, kernel
    image, vmalloc, per-CPU areas) live in the ELF core ``core``: ``[(file offset, part of data)]``, one
    part per page (contiguous virtual pages need not be contiguous in the file).

    :raises ValueError: a page is not mapped or not in the dump.
    """
    from drgn.helpers.linux.mm import follow_phys

    mm = prog["init_mm"].address_of_()
    out = []
    pos = 0
    while pos < len(data):
        va = address + pos
        n = min(len(data) - pos, 4096 - va % 4096)
        try:
            phys = follow_phys(mm, va).value_()
        except (drgn.FaultError, ValueError) as e:
            raise ValueError(f"{va:#x} is not mapped: {e}")
        for paddr, off, size in _loads_cached(str(core)):
            if paddr <= phys and phys + n <= paddr + size:
                out.append((off + phys - paddr, data[pos : pos + n]))
                break
        else:
            raise ValueError(f"physical address {phys:#x} is not in the dump")
        pos += n
    return out


def patch_any(prog: drgn.Program, core: Path, address: int, data: bytes) -> bytes:
    """Overwrite ``data`` at any mapped kernel virtual ``address`` in the copy ``core``; returns the bytes
    that were there (to restore them with another call)."""
    old = b""
    with open(core, "r+b") as f:
        for off, part in file_offsets(prog, core, address, data):
            f.seek(off)
            old += f.read(len(part))
            f.seek(off)
            f.write(part)
    return old
