"""Checking a kdump-compressed dump file before drgn opens it.

drgn reads kdump-compressed files (``makedumpfile -c/-l/-p/-z``) with libkdumpfile, which maps the file
into memory: a region it reads past the end of a damaged or truncated file kills the process with SIGBUS,
and header fields it trusts (offsets, sizes, the header version) give errors that say nothing about the
file.  Everything libkdumpfile reads is checked here against the file's length first:

* the ``disk_dump_header`` (block 0) and the ``kdump_sub_header`` (block 1): signature, header version
  (1 to 6), architecture (``utsname.machine``), block size, sub-header and bitmap sizes;
* the regions the sub-header points to: VMCOREINFO (version 3+), the ELF notes (4+), erase info (5+);
* the two page bitmaps, the page descriptor table (one ``page_desc`` of 24 bytes per page set in the
  second bitmap) and each descriptor's page data (``offset``, ``size`` at most one block).

A file that libkdumpfile could not read without crashing is refused with a
:class:`~skbinspect.errors.TargetError` saying what is wrong.  Page data entirely past the end of the
file (a dump cut short at a page boundary) only makes those pages unreadable: that is a warning.
The layout is makedumpfile's ``diskdump_mod.h`` (IMPLEMENTATION in its sources), unchanged since header
version 6 (makedumpfile 1.5.0, 2012).
"""

from __future__ import annotations

import struct
from array import array
from operator import add
from typing import BinaryIO, Callable, List, Tuple

from skbinspect.errors import TargetError

__all__ = ["check_kdump", "MAX_HEADER_VERSION"]

#: The newest ``header_version`` makedumpfile writes (6 since 1.5.0: 64-bit pfns in the sub-header).
MAX_HEADER_VERSION = 6
#: struct disk_dump_header on 64-bit: signature[8], header_version, utsname (6 x 65 bytes), timestamp
#: (aligned to 8: offset 408), then status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr, ...
_HDR = struct.Struct("<8si390s6x16sIiiIIIIIIi")
#: struct kdump_sub_header (64-bit): phys_base, dump_level, split, start_pfn, end_pfn,
#: offset_vmcoreinfo, size_vmcoreinfo, offset_note, size_note, offset_eraseinfo, size_eraseinfo,
#: start_pfn_64, end_pfn_64, max_mapnr_64.
_SUB = struct.Struct("<QiiQQqQqQqQQQQ")
#: struct page_desc: off_t offset, unsigned int size, unsigned int flags, unsigned long long page_flags.
PAGE_DESC_SIZE = 24
#: Regions the sub-header points to larger than this are damage, not data.
MAX_REGION = 64 << 20
_PAGE = 4096
_CHUNK = 1 << 20  # descriptors checked at a time


def _machine(uts: bytes) -> str:
    return uts[65 * 4 : 65 * 5].split(b"\0", 1)[0].decode(errors="replace")


def check_kdump(path: str, f: BinaryIO, size: int) -> List[str]:
    """Check the kdump-compressed file ``path`` (open as ``f``, ``size`` bytes); return warnings.

    :raises TargetError: the file is damaged or cut where libkdumpfile would crash or fail to open it.
    """

    def bad(why: str) -> TargetError:
        return TargetError(
            f"{path} is a kdump-compressed dump, but {why}. drgn cannot read it safely; "
            "the file is damaged or incomplete (was the copy or the dump interrupted?)."
        )

    f.seek(0)
    head = f.read(_HDR.size)
    if len(head) < _HDR.size:
        raise bad(f"its header is cut off ({size} bytes)")
    (_, version, uts, _, _, block_size, sub_blocks, bitmap_blocks, max_mapnr, *_rest) = _HDR.unpack(head)
    if not 1 <= version <= MAX_HEADER_VERSION:
        raise bad(f"its header version is {version} (known: 1 to {MAX_HEADER_VERSION})")
    machine = _machine(uts)
    if machine != "x86_64":
        raise TargetError(
            f"{path} is a kdump-compressed dump of another architecture ({machine or 'unknown'}): skbinspect reads "
            "x86-64 kernels only."
        )
    if block_size < 1024 or block_size > 1 << 16 or block_size & (block_size - 1):
        raise bad(f"its block size is {block_size}")
    if sub_blocks < 1 or bitmap_blocks < 1 or bitmap_blocks % 2:
        raise bad(f"its sub-header ({sub_blocks} blocks) or bitmaps ({bitmap_blocks} blocks) are implausible")
    bitmap_at = (1 + sub_blocks) * block_size
    table_at = bitmap_at + bitmap_blocks * block_size
    if table_at > size:
        raise bad(f"it is cut off before the end of its page bitmaps (byte {table_at}; the file has {size})")
    f.seek(block_size)
    sub = f.read(_SUB.size)
    if len(sub) < _SUB.size:
        raise bad("its sub-header is cut off")
    fields = _SUB.unpack(sub)
    regions: List[Tuple[str, int, int]] = []
    if version >= 3:
        regions.append(("VMCOREINFO", fields[5], fields[6]))
    if version >= 4:
        regions.append(("ELF notes", fields[7], fields[8]))
    if version >= 5:
        regions.append(("erase information", fields[9], fields[10]))
    for name, off, length in regions:
        if length == 0:
            continue
        if off < 0 or length > MAX_REGION or off + length > size:
            raise bad(
                f"its {name} (offset {off}, {length} bytes) "
                + ("lie past the end of the file" if 0 <= off and length <= MAX_REGION else "are implausible")
                + f" ({size} bytes)"
            )
    if version >= 3 and fields[6] == 0 and (version < 4 or fields[8] == 0):
        raise bad("it has neither VMCOREINFO nor ELF notes, so the kernel in it cannot be identified")
    if version >= 6 and fields[13]:
        max_mapnr = fields[13]
    # the second bitmap says which pages are in the file: one descriptor each, in pfn order
    half = bitmap_blocks * block_size // 2
    f.seek(bitmap_at + half)
    bitmap2 = f.read(half)
    if max_mapnr and max_mapnr < 8 * half:
        bitmap2 = bitmap2[: (max_mapnr + 7) // 8]
    count = bin(int.from_bytes(bitmap2, "little")).count("1")
    data_at = table_at + PAGE_DESC_SIZE * count
    if data_at > size:
        raise bad(
            f"its page descriptor table ({count} pages, up to byte {data_at}) is cut off at byte {size}"
        )
    past = _pages_past_end(f, bad, table_at, count, block_size, size)
    if past:
        return [
            f"kdump file {path} is truncated or damaged: the data of {past} of its {count} pages lie past its end "
            f"({size} bytes); those pages cannot be read and some results may be missing."
        ]
    return []


def _pages_past_end(
    f: BinaryIO, bad: Callable[[str], TargetError], table_at: int, count: int, block_size: int, size: int
) -> int:
    """How many pages have their data past the end of the file.  Each descriptor is checked (at C speed, a
    chunk at a time); a damaged one, or a page whose data straddles the end of the file (where a mapping
    of the file faults), refuses the file."""
    past = 0
    end_page = -(-size // _PAGE) * _PAGE
    f.seek(table_at)
    index = 0
    while index < count:
        n = min(count - index, _CHUNK)
        raw = f.read(PAGE_DESC_SIZE * n)
        words = array("Q")
        words.frombytes(raw)
        halves = array("I")
        halves.frombytes(raw)
        offsets = words[0::3]
        lengths = halves[2::6]
        ends = list(map(add, offsets, lengths))
        if max(lengths) > block_size or max(offsets) >> 63 or max(ends) > size:
            for k, (off, length, end) in enumerate(zip(offsets, lengths, ends)):
                if off >> 63 or length > block_size:
                    raise bad(
                        f"the descriptor of its page #{index + k} is damaged (offset {off:#x}, size {length})"
                    )
                if end > size:
                    if off - off % _PAGE < size and end > end_page:
                        raise bad(
                            f"it is cut off inside the data of a page (#{index + k}: bytes {off} to {end}; "
                            f"the file has {size})"
                        )
                    past += 1
        index += n
    return past
