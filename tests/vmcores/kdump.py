"""kdump-compressed dumps of the lab's vmcores, made by Debian's makedumpfile, and filtered copies.

QEMU writes ELF dumps; users have kdump-compressed ones (``makedumpfile -c -d 31`` in the capture
kernel).  :func:`kdump_of` converts a lab vmcore with the real makedumpfile (``apt-get install
makedumpfile``), cached next to the vmcore.  makedumpfile reads program headers right after the ELF
header (it ignores ``e_phoff``), and QEMU puts section headers there: the ELF is first rewritten in a
temporary copy with its program headers moved up and no section headers (the memory is not touched).

:func:`exclude_pages` writes a copy of a kdump file with some pages filtered out, as makedumpfile leaves
out the pages its dump level excludes: their bits cleared in the second bitmap and their descriptors
removed from the table (the page data of the others stays where it is).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

from tests.vmcores.kernels import LabError
from tests.vmcores.lab import LabVmcore

__all__ = ["kdump_compressed", "kdump_of", "exclude_pages", "kdump_layout"]

_HDR = struct.Struct("<8si390s6x16sIiiIIIIIIi")


def _makedumpfile() -> str:
    exe = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"
    if not os.path.exists(exe):
        raise LabError(
            "makedumpfile is not installed (apt-get install makedumpfile; scripts/install-deps.sh does)"
        )
    return exe


def _elf_for_makedumpfile(src: str, dst: Path) -> None:
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)
    with open(dst, "r+b") as f:
        h = bytearray(f.read(4096))
        (phoff,) = struct.unpack_from("<Q", h, 32)
        (phnum,) = struct.unpack_from("<H", h, 56)
        ph = bytes(h[phoff : phoff + 56 * phnum])
        first = min(struct.unpack_from("<Q", ph, i * 56 + 8)[0] for i in range(phnum))
        if 64 + len(ph) > first:
            raise LabError(f"{src}: no room for the program headers before the first segment")
        h[64:first] = bytes(first - 64)
        h[64 : 64 + len(ph)] = ph
        struct.pack_into("<QQ", h, 32, 64, 0)  # e_phoff, e_shoff
        struct.pack_into("<H", h, 52, 64)  # e_ehsize
        struct.pack_into("<HHH", h, 58, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
        f.seek(0)
        f.write(h[:first])


def kdump_of(vmcore: str, vmlinux: str, dump_level: int = 31) -> Path:
    """``makedumpfile -c -d LEVEL -x VMLINUX`` of the lab ``vmcore``, made once (cached beside it)."""
    out = Path(vmcore).parent / f"kdump-c-d{dump_level}"
    if out.exists():
        return out
    exe = _makedumpfile()
    with tempfile.TemporaryDirectory(prefix="skbinspect-kdump-") as tmp:
        elf = Path(tmp) / "vmcore.elf"
        _elf_for_makedumpfile(vmcore, elf)
        part = Path(tmp) / "out"
        p = subprocess.run(
            [exe, "-c", "-d", str(dump_level), "-x", vmlinux, str(elf), str(part)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if p.returncode != 0 or not part.exists():
            raise LabError(f"makedumpfile failed ({p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}")
        shutil.move(str(part), out)
    return out


def kdump_compressed(lab: "LabVmcore") -> str:
    """The lab vmcore as makedumpfile's kdump-compressed format (``KDUMP   `` signature), nothing filtered
    out (``-d 0``), made once: for the tests that read that format (BTF mode among them)."""
    out = kdump_of(lab.vmcore, lab.kernel.debug_vmlinux, dump_level=0)
    with open(out, "rb") as f:
        if f.read(8) != b"KDUMP   ":
            raise LabError(f"makedumpfile did not write a kdump-compressed file: {out}")
    return str(out)


def kdump_layout(path: Path) -> dict:
    """Block size, where the second bitmap and the descriptor table are, and the page count."""
    with open(path, "rb") as f:
        head = f.read(_HDR.size)
        (_, _, _, _, _, bs, sub, bitmap_blocks, *_r) = _HDR.unpack(head)
        half = bitmap_blocks * bs // 2
        bitmap_at = (1 + sub) * bs
        f.seek(bitmap_at + half)
        bitmap2 = f.read(half)
    return {
        "block_size": bs,
        "bitmap2_at": bitmap_at + half,
        "bitmap2": bitmap2,
        "table_at": bitmap_at + bitmap_blocks * bs,
        "pages": bin(int.from_bytes(bitmap2, "little")).count("1"),
    }


def exclude_pages(src: Path, dst: Path, pfns: Iterable[int]) -> int:
    """Copy the kdump file ``src`` to ``dst`` without the pages ``pfns``; returns how many were in it."""
    lay = kdump_layout(src)
    bits = bytearray(lay["bitmap2"])
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)
    with open(dst, "r+b") as f:
        f.seek(lay["table_at"])
        table = bytearray(f.read(24 * lay["pages"]))
        gone = 0
        for pfn in sorted(set(pfns), reverse=True):
            if not bits[pfn // 8] >> (pfn % 8) & 1:
                continue
            index = bin(int.from_bytes(bits, "little") & ((1 << pfn) - 1)).count("1")
            del table[24 * index : 24 * index + 24]
            bits[pfn // 8] &= ~(1 << (pfn % 8)) & 0xFF
            gone += 1
        f.seek(lay["bitmap2_at"])
        f.write(bits)
        f.seek(lay["table_at"])
        f.write(table + bytes(24 * gone))
    return gone
