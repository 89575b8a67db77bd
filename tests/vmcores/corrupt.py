"""Corrupting a *copy* of a lab vmcore, to test how skbinspect copes with garbage kernel memory."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import List, Tuple

import drgn
from drgn.helpers.linux.mm import virt_to_phys

__all__ = ["copy_vmcore", "patch_virt"]


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
