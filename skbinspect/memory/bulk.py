"""Reading many small objects from the target with few reads.

Slab objects (``sk_buff``, packet buffers) that are close in memory are read together: addresses are
sorted and coalesced into windows, each read once, and sliced.  A window that cannot be read (a hole, a
page missing from a filtered dump) falls back to one read per object, so one bad object never hides
its neighbours.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import compress, islice, repeat
from operator import add, lt, rshift, sub
from typing import Dict, List, Optional, Sequence, Tuple, Union

import drgn

from skbinspect.memory.faults import READ_FAULTS

__all__ = ["read_many", "read_spans"]

#: Largest window read at once, and the largest gap between two objects bridged by one window.
MAX_WINDOW = 1024 * 1024
MAX_GAP = 4096
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT


def read_spans(
    prog: drgn.Program, addresses: Sequence[int], sizes: Union[int, Sequence[int]]
) -> Tuple[List[Optional[bytes]], List[int]]:
    """Read ``sizes[i]`` bytes (or ``sizes`` bytes for all) at ``addresses[i]``, in coalesced windows.

    Returns ``(buffers, offsets)``: object ``i`` is ``buffers[i][offsets[i]:offsets[i] + size]``
    (``buffers[i]`` is shared by the objects of one window, so decode with ``unpack_from(buf, off)``
    instead of slicing); ``buffers[i]`` is ``None`` where the memory cannot be read.

    Built for tens of thousands of objects: everything per object runs in C (page numbers, dict and list
    look-ups through ``map``); Python loops only over windows.
    """
    n = len(addresses)
    if not n:
        return [], []
    maxsize = sizes if isinstance(sizes, int) else max(sizes)
    if maxsize <= 0:
        maxsize = 1
    if maxsize > PAGE_SIZE:
        starts, ends, widx = _windows_by_address(addresses, maxsize)
    else:
        starts, ends, widx = _windows_by_page(addresses, maxsize)
    read = prog.read
    windows: List[Optional[bytes]] = []
    failed = set()
    for w, (start, end) in enumerate(zip(starts, ends)):
        try:
            windows.append(read(start, end - start))
        except READ_FAULTS:
            windows.append(None)
            failed.add(w)
    if len(starts) == 1:
        bufs = [windows[0]] * n
        offs = list(map(sub, addresses, repeat(starts[0])))
    else:
        bufs = list(map(windows.__getitem__, widx))
        offs = list(map(sub, addresses, map(starts.__getitem__, widx)))
    if failed:
        # a hole somewhere in those windows (or past the end of a short last object): each object on its own
        for k in compress(range(n), map(failed.__contains__, widx)):
            offs[k] = 0
            try:
                bufs[k] = read(addresses[k], sizes if isinstance(sizes, int) else sizes[k])
            except READ_FAULTS:
                pass
    return bufs, offs


def _windows_by_page(addresses: Sequence[int], maxsize: int) -> Tuple[List[int], List[int], List[int]]:
    """Windows ``(starts, ends, window of each object)`` made of whole pages: the pages holding the first
    and the last byte of each object (``maxsize`` <= a page), in runs of pages at most MAX_GAP apart, cut
    every MAX_WINDOW bytes.  Sorting the few distinct page numbers, not the objects' addresses, keeps the
    per-object work to a few passes at C speed."""
    first = list(map(rshift, addresses, repeat(PAGE_SHIFT)))
    pages = set(first)
    pages.update(map(rshift, map(add, addresses, repeat(maxsize - 1)), repeat(PAGE_SHIFT)))
    sp = sorted(pages)
    m = len(sp)
    bridge = 1 + (MAX_GAP >> PAGE_SHIFT)
    breaks = list(compress(range(1, m), map(lt, repeat(bridge), map(sub, islice(sp, 1, None), sp))))
    breaks.append(m)
    cap = MAX_WINDOW >> PAGE_SHIFT
    starts: List[int] = []
    ends: List[int] = []
    window_of: Dict[int, int] = {}
    i = 0
    for seg_end in breaks:
        while i < seg_end:
            j = bisect_right(sp, sp[i] + cap - 1, i, seg_end)
            window_of.update(zip(sp[i:j], repeat(len(starts))))
            starts.append(sp[i] << PAGE_SHIFT)
            # a window cut inside a run also reads the run's next page: an object starting on the window's
            # last page ends there at the latest (its last page is in the set, so it is sp[j])
            ends.append((sp[j - 1 if j == seg_end else j] + 1) << PAGE_SHIFT)
            i = j
    widx = [0] * len(first) if len(starts) == 1 else list(map(window_of.__getitem__, first))
    return starts, ends, widx


def _windows_by_address(addresses: Sequence[int], maxsize: int) -> Tuple[List[int], List[int], List[int]]:
    """Windows for objects larger than a page: from the sorted addresses, bridging gaps of MAX_GAP."""
    sa = sorted(set(addresses))
    m = len(sa)
    breaks = list(
        compress(range(1, m), map(lt, repeat(maxsize + MAX_GAP), map(sub, islice(sa, 1, None), sa)))
    )
    breaks.append(m)
    starts: List[int] = []
    window_of_sorted: List[int] = []
    ends: List[int] = []
    i = 0
    for seg_end in breaks:
        while i < seg_end:
            start = sa[i]
            j = bisect_right(sa, start + MAX_WINDOW - maxsize, i, seg_end)
            if j <= i:
                j = i + 1
            window_of_sorted.extend(repeat(len(starts), j - i))
            starts.append(start)
            ends.append(sa[j - 1] + maxsize)
            i = j
    where = dict(zip(sa, window_of_sorted))
    return starts, ends, list(map(where.__getitem__, addresses))


def read_many(prog: drgn.Program, requests: Sequence[Tuple[int, int]]) -> List[Optional[bytes]]:
    """Read ``(address, size)`` for every request; ``None`` where the memory cannot be read.

    Results are in the order of ``requests``.
    """
    addrs = [a for a, _ in requests]
    sizes = [s for _, s in requests]
    bufs, offs = read_spans(prog, addrs, sizes)
    return [None if b is None else b[o : o + s] for b, o, s in zip(bufs, offs, sizes)]
