"""Reading many small objects from the target with few reads.

Slab objects (``sk_buff``, packet buffers) that are close in memory are read together: addresses are
sorted and coalesced into windows, each read once, and sliced.  A window that cannot be read (a hole, a
page missing from a filtered dump) falls back to one read per object, so one bad object never hides
its neighbours.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import compress, islice, repeat
from operator import lt, sub
from typing import List, Optional, Sequence, Tuple, Union

import drgn

__all__ = ["read_many", "read_spans"]

#: Largest window read at once, and the largest gap between two objects bridged by one window.
MAX_WINDOW = 1024 * 1024
MAX_GAP = 4096

#: What a read of unreadable memory raises: a fault, or an address drgn cannot represent.
_FAULTS = (drgn.FaultError, ValueError, OverflowError)


def read_spans(prog: drgn.Program, addresses: Sequence[int], sizes: Union[int, Sequence[int]]
               ) -> Tuple[List[Optional[bytes]], List[int]]:
    """Read ``sizes[i]`` bytes (or ``sizes`` bytes for all) at ``addresses[i]``, in coalesced windows.

    Returns ``(buffers, offsets)``: object ``i`` is ``buffers[i][offsets[i]:offsets[i] + size]``
    (``buffers[i]`` is shared by the objects of one window, so decode with ``unpack_from(buf, off)``
    instead of slicing); ``buffers[i]`` is ``None`` where the memory cannot be read.

    Built for tens of thousands of objects: everything per object runs in C (sorting, dict and list
    look-ups through ``map``); Python loops only over windows.
    """
    n = len(addresses)
    if not n:
        return [], []
    fixed = isinstance(sizes, int)
    maxsize = sizes if fixed else max(sizes)  # type: ignore[arg-type]
    if maxsize <= 0:
        maxsize = 1
    sa = sorted(set(addresses))
    m = len(sa)
    # windows break where two objects are further apart than MAX_GAP, and before MAX_WINDOW bytes
    breaks = list(compress(range(1, m), map(lt, repeat(maxsize + MAX_GAP), map(sub, islice(sa, 1, None), sa))))
    breaks.append(m)
    starts: List[int] = []
    window_of_sorted: List[int] = []  # window index of each sa[i]
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
    read = prog.read
    windows: List[Optional[bytes]] = []
    failed = set()
    for w, (start, end) in enumerate(zip(starts, ends)):
        try:
            windows.append(read(start, end - start))
        except _FAULTS:
            windows.append(None)
            failed.add(w)
    if len(starts) == 1:
        widx = [0] * n
        bufs = [windows[0]] * n
        offs = list(map(sub, addresses, repeat(starts[0])))
    else:
        where = dict(zip(sa, window_of_sorted))
        widx = list(map(where.__getitem__, addresses))
        bufs = list(map(windows.__getitem__, widx))
        offs = list(map(sub, addresses, map(starts.__getitem__, widx)))
    if failed:
        # a hole somewhere in those windows (or past the end of a short last object): each object on its own
        for k in compress(range(n), map(failed.__contains__, widx)):
            offs[k] = 0
            try:
                bufs[k] = read(addresses[k], sizes if fixed else sizes[k])  # type: ignore[arg-type,index]
            except _FAULTS:
                pass
    return bufs, offs


def read_many(prog: drgn.Program, requests: Sequence[Tuple[int, int]]) -> List[Optional[bytes]]:
    """Read ``(address, size)`` for every request; ``None`` where the memory cannot be read.

    Results are in the order of ``requests``.
    """
    addrs = [a for a, _ in requests]
    sizes = [s for _, s in requests]
    bufs, offs = read_spans(prog, addrs, sizes)
    return [None if b is None else b[o:o + s] for b, o, s in zip(bufs, offs, sizes)]
