"""read_spans (coalesced windows) gives what one read per object gives, holes included; no kernel needed."""

import random
from typing import List, Union

import drgn

from skbinspect.memory.bulk import read_many, read_spans


class _Memory:
    """prog.read over a few mapped ranges; anything else faults."""

    def __init__(self, rng: random.Random) -> None:
        self.ranges = []
        base = 0xFFFF888000000000
        for _ in range(6):
            size = rng.choice([4096, 65536, 3 << 20])
            self.ranges.append((base, bytes(rng.getrandbits(8) for _ in range(256)) * (size // 256)))
            base += size + rng.choice([4096, 1 << 20])
        self.reads = 0

    def read(self, addr: int, size: int) -> bytes:
        self.reads += 1
        for start, data in self.ranges:
            if start <= addr and addr + size <= start + len(data):
                return data[addr - start : addr - start + size]
        raise drgn.FaultError("unmapped", addr)

    def one(self, addr: int, size: int):
        try:
            return self.read(addr, size)
        except drgn.FaultError:
            return None


def _check_spans(mem: _Memory, addrs: List[int], sizes: Union[int, List[int]], trial: int) -> None:
    """read_spans gives, for every object, what one read of that object gives (None where it faults)."""
    bufs, offs = read_spans(mem, addrs, sizes)
    for k, a in enumerate(addrs):
        size = sizes if isinstance(sizes, int) else sizes[k]
        want = mem.one(a, size)
        got = None if bufs[k] is None else bufs[k][offs[k] : offs[k] + size]
        assert got == want, (trial, k, hex(a), size)


def test_read_spans_equals_one_read_per_object() -> None:
    rng = random.Random(3)
    for trial in range(30):
        mem = _Memory(rng)
        lo = mem.ranges[0][0]
        hi = mem.ranges[-1][0] + len(mem.ranges[-1][1])
        n = rng.choice([1, 5, 300, 4096])
        if trial % 3 == 0:  # packed like a slab: one window
            start = lo + rng.randrange(0, 2048)
            addrs = [start + 256 * k for k in range(min(n, 200))]
            rng.shuffle(addrs)
        else:
            addrs = [rng.randrange(lo - 8192, hi + 8192) for _ in range(n)]
            addrs += addrs[: n // 10]  # duplicates
        sizes = 232 if trial % 2 else [rng.randrange(1, 300) for _ in addrs]
        _check_spans(mem, addrs, sizes, trial)
        assert read_many(mem, [(a, 16) for a in addrs]) == [mem.one(a, 16) for a in addrs]


def test_read_spans_windows_cut_inside_a_run_and_large_objects() -> None:
    """Dense objects over a 3 MiB mapping (runs of pages longer than a window, objects crossing the cut
    between two windows), and objects larger than a page (windows from sorted addresses)."""
    rng = random.Random(5)
    for trial in range(12):
        mem = _Memory(rng)
        start, data = max(mem.ranges, key=lambda r: len(r[1]))
        step = rng.choice([232, 256, 4000, 4096])
        addrs = list(range(start + rng.randrange(0, 64), start + len(data) - 300, step))
        rng.shuffle(addrs)
        sizes = rng.choice([232, 256, 6000]) if trial % 2 else [rng.randrange(1, 4097) for _ in addrs]
        _check_spans(mem, addrs, sizes, trial)
