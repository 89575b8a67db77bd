"""The kdump-compressed file checks (:mod:`skbinspect.target.dumpfile`) on small synthetic files: a sound
file passes, every cut and damaged field is refused before drgn (libkdumpfile) could crash on it."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import List

import pytest

from skbinspect.errors import TargetError
from skbinspect.target.dumpfile import check_kdump

BS = 4096
PAGES = 6


def kdump(version: int = 6, machine: bytes = b"x86_64") -> bytearray:
    """A minimal kdump-compressed file: header (block 0), sub-header and VMCOREINFO (block 1), two bitmap
    blocks (2, 3), the descriptor table (block 4), then PAGES pages stored raw (blocks 5 ...)."""
    uts = bytearray(390)
    uts[65 * 4 : 65 * 4 + len(machine)] = machine
    f = bytearray(5 * BS)
    hdr = struct.pack(
        "<8si390s6x16sIiiIIIIIIi", b"KDUMP   ", version, bytes(uts), bytes(16), 0, BS, 1, 2, 64, 0, 0, 0, 0, 1
    )
    f[: len(hdr)] = hdr
    info_at, info = BS + 128, b"OSRELEASE=6.1\n"
    sub = struct.pack("<QiiQQqQqQqQQQQ", 0, 31, 0, 0, 64, info_at, len(info), 0, 0, 0, 0, 0, 64, 64)
    f[BS : BS + len(sub)] = sub
    f[info_at : info_at + len(info)] = info
    f[2 * BS] = f[3 * BS] = (1 << PAGES) - 1  # pages 0 .. PAGES-1 valid and dumped
    for i in range(PAGES):
        struct.pack_into("<qIIQ", f, 4 * BS + 24 * i, (5 + i) * BS, BS, 0, 0)
    f += b"".join(bytes([i]) * BS for i in range(PAGES))
    return f


def _check(tmp_path: Path, data: bytes) -> List[str]:
    p = tmp_path / "dump"
    p.write_bytes(data)
    with open(p, "rb") as f:
        return check_kdump(str(p), f, len(data))


def test_a_sound_file_passes(tmp_path: Path) -> None:
    assert _check(tmp_path, kdump()) == []


@pytest.mark.parametrize("cut,past", [(2 * BS, 2), (100, 1), (BS + 100, 2)])
def test_cut_in_the_last_pages_is_a_warning(tmp_path: Path, cut: int, past: int) -> None:
    """Page data past the end, or ending in the file's last (partial) page, reads as zeros: no crash,
    those pages are unreadable, a warning."""
    w = _check(tmp_path, kdump()[:-cut])
    assert len(w) == 1 and f"{past} of its 6 pages" in w[0]


@pytest.mark.parametrize("cut", [10, 500, BS + 100, 2 * BS + 10, 4 * BS + 40])
def test_a_cut_elsewhere_is_refused(tmp_path: Path, cut: int) -> None:
    with pytest.raises(TargetError, match="kdump-compressed"):
        _check(tmp_path, kdump()[:cut])


def test_a_cut_inside_page_data_that_crosses_a_page_is_refused(tmp_path: Path) -> None:
    """Compressed data of page 3 crossing a file page boundary, the file cut just before that boundary:
    libkdumpfile's mapping would fault past the end (SIGBUS)."""
    data = kdump()
    struct.pack_into("<qIIQ", data, 4 * BS + 24 * 3, 8 * BS - 100, 200, 1, 0)
    with pytest.raises(TargetError, match="cut off inside the data of a page"):
        _check(tmp_path, bytes(data[: 8 * BS - 50]))


@pytest.mark.parametrize(
    "field,at,value",
    [
        ("version", 8, struct.pack("<i", 0)),
        ("version", 8, struct.pack("<i", 7)),
        ("block size", 428, struct.pack("<i", 3000)),
        ("bitmaps", 436, struct.pack("<I", 0)),
        ("vmcoreinfo offset", BS + 32, struct.pack("<q", 1 << 40)),
        ("vmcoreinfo size", BS + 40, struct.pack("<Q", 1 << 40)),
        ("vmcoreinfo offset", BS + 32, struct.pack("<q", -5)),
        ("no vmcoreinfo", BS + 40, struct.pack("<Q", 0)),
        ("descriptor size", 4 * BS + 24 + 8, struct.pack("<I", BS + 1)),
        ("descriptor offset", 4 * BS + 24, struct.pack("<q", -(1 << 40))),
    ],
)
def test_damaged_fields_are_refused(tmp_path: Path, field: str, at: int, value: bytes) -> None:
    data = kdump()
    data[at : at + len(value)] = value
    with pytest.raises(TargetError):
        _check(tmp_path, bytes(data))


def test_another_architecture(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="another architecture"):
        _check(tmp_path, kdump(machine=b"aarch64"))
