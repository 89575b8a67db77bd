"""``struct ptr_ring`` (include/linux/ptr_ring.h): reading one in bulk, and the kernel's rules for it.

The layout is the same in 5.10, 6.1, 6.12 and 7.x: ``producer``, ``consumer_head``, ``consumer_tail``,
``size``, ``batch`` and ``queue`` (a ``void **`` array of ``size`` slots, NULL meaning free); offsets come
from the target's DWARF (:func:`~skbinspect.memory.layout.struct_layout`).  The ring's semantics are in
docs/kernel/tuntap.md.

The analysis (:func:`analyze_ring`) works on plain integers and a sequence of slot values, so it is
testable without drgn:

* live entries run from ``consumer_head`` forward (mod size) while the slot is non-NULL, stopping at
  ``producer`` after the first step; oldest first;
* ``queue[consumer_tail .. consumer_head-1]`` are *stale*: consumed but not yet zeroed (batched zeroing);
* the ring is full exactly when ``queue[producer] != NULL`` (``__ptr_ring_full``), which includes a
  producer that has wrapped onto the stale window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress
from typing import Dict, List, Optional, Sequence

import drgn

from skbinspect.memory.faults import READ_FAULTS
from skbinspect.memory.layout import StructLayout, struct_layout

__all__ = [
    "MAX_RING_SIZE",
    "RingAnalysis",
    "RingSnapshot",
    "analyze_ring",
    "read_ptr_ring",
    "read_ring_indices",
]

#: Rings larger than this are treated as garbage (the kernel caps tx_queue_len far lower in practice;
#: ptr_ring_init() refuses sizes whose array would exceed KMALLOC_MAX_SIZE).
MAX_RING_SIZE = 1 << 24

#: How often a live ring is re-read when it changed while being read.
LIVE_RETRIES = 5


@dataclass
class RingAnalysis:
    """What a ring holds according to the kernel's rules.

    :ivar live: slot indices of the live entries, oldest first.
    :ivar stale: slot indices of the stale window (consumed, not yet zeroed), in index order.
    :ivar full: ``queue[producer] != NULL``.
    :ivar problems: invariants that do not hold (a torn or corrupt snapshot).
    """

    live: List[int]
    stale: List[int]
    free: int
    full: bool
    problems: List[str] = field(default_factory=list)


def analyze_ring(size: int, producer: int, head: int, tail: int, slots: Sequence[int]) -> RingAnalysis:
    """Apply the kernel's ptr_ring rules to a snapshot (``slots`` = the ``size`` queue values)."""
    problems: List[str] = []
    if size <= 0:
        return RingAnalysis([], [], 0, True, [] if size == 0 else [f"size {size} is negative"])
    if len(slots) < size:
        problems.append(f"only {len(slots)} of {size} slots could be read")
        size = len(slots)
        if size == 0:
            return RingAnalysis([], [], 0, False, problems)
    for name, v in (("producer", producer), ("consumer_head", head), ("consumer_tail", tail)):
        if not 0 <= v < size:
            problems.append(f"{name} {v} is outside the ring (size {size})")
    if problems:
        return RingAnalysis([], [], list(slots[:size]).count(0), False, problems)
    if tail > head:
        problems.append(f"consumer_tail {tail} is ahead of consumer_head {head}")
    full = slots[producer] != 0
    # Live: from head forward while the slot is non-NULL, stopping at producer after the first step (at
    # most size slots).  Found with list operations (C speed) rather than a loop over the slots.
    slots = list(slots[:size])
    rotated = slots[head:] + slots[:head]
    try:
        first_null = rotated.index(0)
    except ValueError:
        first_null = size
    to_producer = (producer - head) % size or size
    count = min(first_null, to_producer)
    live = list(range(head, min(head + count, size)))
    if head + count > size:
        live += range(head + count - size)
    stale = list(compress(range(tail, head), slots[tail:head])) if tail <= head else []
    if tail <= head and len(stale) != head - tail:
        # the consumer may be zeroing the window right now (it zeroes in reverse order)
        problems.append(f"{head - tail - len(stale)} NULL slots inside the stale window [{tail}, {head})")
    occupied = size - slots.count(0)
    if occupied != len(live) + len(stale):
        problems.append(
            f"{occupied} non-NULL slots but {len(live)} live + {len(stale)} stale: "
            "entries outside the live and stale windows"
        )
    if full and len(live) + (head - tail) != size:
        problems.append(f"full, but live {len(live)} + window {head - tail} != size {size}")
    return RingAnalysis(live, stale, size - occupied, full, problems)


@dataclass
class RingSnapshot:
    """A ``struct ptr_ring`` as read from the target.

    ``slots`` holds the raw queue values (pointers, possibly tagged) of all ``size`` slots.
    """

    address: int
    size: int
    producer: int
    consumer_head: int
    consumer_tail: int
    batch: int
    queue: int
    slots: List[int]
    analysis: RingAnalysis
    producer_locked: Optional[bool] = None
    consumer_locked: Optional[bool] = None
    retries: int = 0  # live targets: re-reads because the ring changed under us
    torn: bool = False  # still changing after LIVE_RETRIES re-reads
    error: Optional[str] = None  # why the slots could not be read


#: The ``struct ptr_ring`` members read (the same in 5.10 .. 7.1).
RING_MEMBERS = ("producer", "consumer_head", "consumer_tail", "size", "batch", "queue")
#: The lock word of each spinlock_t: a qspinlock's ``val`` (x86-64, arm64), not 0 while the lock is held.
#: Left out (the lock state unknown) where spinlock_t is built otherwise.
LOCK_WORDS = {
    "producer_lock": "producer_lock.rlock.raw_lock.val.counter",
    "consumer_lock": "consumer_lock.rlock.raw_lock.val.counter",
}


def _layout(prog: drgn.Program) -> StructLayout:
    lay = struct_layout(prog, "struct ptr_ring", RING_MEMBERS + tuple(LOCK_WORDS.values()))
    missing = [m for m in RING_MEMBERS if not lay.has(m)]
    if missing:
        raise LookupError(f"struct ptr_ring has no member {', '.join(missing)}")
    return lay


def _header(raw: bytes, lay: StructLayout) -> Dict[str, int]:
    """The ring's header fields, and ``producer_lock`` / ``consumer_lock`` (their lock words) when known."""
    h = lay.decode(raw)
    for name, word in LOCK_WORDS.items():
        if word in h:
            h[name] = h.pop(word)
    return h


def read_ptr_ring(prog: drgn.Program, address: int, live: Optional[bool] = None) -> RingSnapshot:
    """Read the ``struct ptr_ring`` at ``address`` and its whole queue array, each in one read.

    On a live target the header is read again after the array; if it changed, everything is re-read
    (up to :data:`LIVE_RETRIES` times) and a ring that never holds still is marked ``torn``.

    :param address: address of a ``struct ptr_ring``.
    """
    lay = _layout(prog)
    if live is None:
        live = bool(prog.flags & drgn.ProgramFlags.IS_LIVE)
    retries = 0
    while True:
        try:
            raw = prog.read(address, lay.size)
        except READ_FAULTS as e:
            return RingSnapshot(
                address,
                0,
                0,
                0,
                0,
                0,
                0,
                [],
                RingAnalysis([], [], 0, False),
                error=f"ring header unreadable at {address:#x}: {e}",
            )
        h = _header(raw, lay)
        size = h["size"]
        snap = RingSnapshot(
            address,
            size,
            h["producer"],
            h["consumer_head"],
            h["consumer_tail"],
            h["batch"],
            h["queue"],
            [],
            RingAnalysis([], [], 0, False),
            retries=retries,
        )
        if "producer_lock" in h:
            snap.producer_locked = h["producer_lock"] != 0
        if "consumer_lock" in h:
            snap.consumer_locked = h["consumer_lock"] != 0
        if size < 0 or size > MAX_RING_SIZE:
            snap.error = f"implausible ring size {size} (corrupt or not a ptr_ring)"
            snap.analysis = RingAnalysis([], [], 0, False, [snap.error])
            return snap
        if size == 0:
            snap.analysis = analyze_ring(0, 0, 0, 0, [])
            return snap
        if not h["queue"]:
            snap.error = "queue pointer is NULL but size is not 0"
            snap.analysis = RingAnalysis([], [], 0, False, [snap.error])
            return snap
        try:
            arr = prog.read(h["queue"], size * 8)
        except READ_FAULTS as e:
            snap.error = f"queue array of {size} slots unreadable at {h['queue']:#x}: {e}"
            snap.analysis = RingAnalysis([], [], 0, False, [snap.error])
            return snap
        snap.slots = list(memoryview(arr).cast("Q"))
        if live:
            try:
                again = _header(prog.read(address, lay.size), lay)
            except READ_FAULTS:
                again = None
            if again != h:
                retries += 1
                if retries <= LIVE_RETRIES:
                    continue
                snap.torn = True
        snap.analysis = analyze_ring(size, snap.producer, snap.consumer_head, snap.consumer_tail, snap.slots)
        if live and snap.analysis.problems and not snap.torn and retries < LIVE_RETRIES:
            # a consumer in the middle of discard_one (zeroing in reverse) looks like this: read again
            retries += 1
            continue
        snap.retries = retries
        return snap


def read_ring_indices(prog: drgn.Program, address: int) -> Optional[Dict[str, int]]:
    """Only the ring's header fields (producer, consumer_head, consumer_tail, size, batch, queue), one read;
    ``None`` if unreadable.  Used to see what a live consumer took while entries were being read."""
    lay = _layout(prog)
    try:
        return _header(prog.read(address, lay.size), lay)
    except READ_FAULTS:
        return None
