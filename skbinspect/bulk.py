"""Reading many small objects from the target with few reads.

Slab objects (``sk_buff``, packet buffers) that are close in memory are read together: addresses are
sorted and coalesced into windows, each read once, and sliced.  A window that cannot be read (a hole, a
page missing from a filtered dump) falls back to one read per object, so one bad object never hides
its neighbours.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import drgn

__all__ = ["read_many"]

#: Largest window read at once, and the largest gap between two objects bridged by one window.
MAX_WINDOW = 256 * 1024
MAX_GAP = 4096


def read_many(prog: drgn.Program, requests: Sequence[Tuple[int, int]]) -> List[Optional[bytes]]:
    """Read ``(address, size)`` for every request; ``None`` where the memory cannot be read.

    Results are in the order of ``requests``.
    """
    order = sorted(range(len(requests)), key=lambda i: requests[i][0])
    out: List[Optional[bytes]] = [None] * len(requests)
    read = prog.read
    i = 0
    n = len(order)
    while i < n:
        start = requests[order[i]][0]
        end = start + requests[order[i]][1]
        j = i + 1
        while j < n:
            a, s = requests[order[j]]
            if a - end > MAX_GAP or max(end, a + s) - start > MAX_WINDOW:
                break
            end = max(end, a + s)
            j += 1
        try:
            window = read(start, end - start)
        except drgn.FaultError:
            window = None
        for k in range(i, j):
            idx = order[k]
            a, s = requests[idx]
            if window is not None:
                out[idx] = window[a - start : a - start + s]
            else:
                try:
                    out[idx] = read(a, s)
                except drgn.FaultError:
                    out[idx] = None
        i = j
    return out
