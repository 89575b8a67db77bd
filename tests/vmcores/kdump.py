"""A kdump-compressed copy of a lab vmcore, made with Debian's makedumpfile (``apt-get install
makedumpfile``), for the tests that must read that format too.

QEMU's ELF dump puts its section headers before its program headers; makedumpfile 1.7 reads the program
headers right after the ELF header, finds no PT_LOAD and gives up ("Can't get the number of PT_LOAD").
So a temporary copy gets its program headers moved there (the section headers dropped), and
``makedumpfile -c -d 0`` (zlib, nothing filtered out: no vmlinux needed) writes the compressed dump
next to the vmcore, once.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from tests.vmcores.kernels import LabError
from tests.vmcores.lab import LabVmcore

__all__ = ["kdump_compressed"]


def _makedumpfile_ready_copy(src: str, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        hdr = bytearray(f.read(4096))
        (phoff,) = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        if phoff == 64:
            return
        phdrs = bytes(hdr[phoff : phoff + phentsize * phnum])
        first_data = min(struct.unpack_from("<Q", phdrs, i * phentsize + 8)[0] for i in range(phnum))
        if phoff + len(phdrs) > len(hdr) or 64 + len(phdrs) > first_data:
            raise LabError(f"{src}: unexpected ELF layout (program headers at {phoff})")
        hdr[64 : 64 + len(phdrs)] = phdrs
        struct.pack_into("<Q", hdr, 32, 64)  # e_phoff
        struct.pack_into("<Q", hdr, 40, 0)  # e_shoff
        struct.pack_into("<HHH", hdr, 58, 64, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
        f.seek(0)
        f.write(hdr)


def kdump_compressed(lab: LabVmcore) -> str:
    """The lab vmcore as makedumpfile's kdump-compressed format (``KDUMP   `` signature), built once."""
    out = Path(lab.dir) / "vmcore.kdump"
    if out.exists():
        return str(out)
    exe = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"
    if not Path(exe).exists():
        raise LabError("makedumpfile is not installed (apt-get install makedumpfile)")
    with tempfile.TemporaryDirectory(dir=lab.dir) as tmp:
        elf = Path(tmp) / "vmcore.elf"
        _makedumpfile_ready_copy(lab.vmcore, elf)
        part = Path(tmp) / "vmcore.kdump"
        p = subprocess.run([exe, "-c", "-d", "0", str(elf), str(part)], capture_output=True, text=True)
        if p.returncode != 0 or not part.exists():
            raise LabError(f"makedumpfile failed: {(p.stdout + p.stderr).strip()[-500:]}")
        with open(part, "rb") as f:
            if f.read(8) != b"KDUMP   ":
                raise LabError("makedumpfile did not write a kdump-compressed file")
        part.rename(out)
    return str(out)
