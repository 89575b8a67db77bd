"""analyze_ring (pure): the list-operation implementation against a slot-by-slot reference of the kernel's rules."""

import random
from typing import List, Sequence

from skbinspect.tuntap.ptr_ring import analyze_ring


def _reference_live(size: int, producer: int, head: int, slots: Sequence[int]) -> List[int]:
    """The kernel's consumer walk, one slot at a time: from consumer_head while non-NULL, stopping at
    producer after the first step (__ptr_ring_peek / __ptr_ring_discard_one)."""
    live: List[int] = []
    i = head
    while slots[i] != 0 and (not live or i != producer) and len(live) < size:
        live.append(i)
        i = i + 1 if i + 1 < size else 0
    return live


def _ring(size: int, producer: int, head: int, tail: int, fill: float, rng: random.Random) -> List[int]:
    return [rng.randrange(1, 1 << 48) * 8 if rng.random() < fill else 0 for _ in range(size)]


def test_analyze_ring_matches_reference_walk() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        size = rng.choice([1, 2, 3, 5, 8, 16, 64])
        producer, head = rng.randrange(size), rng.randrange(size)
        tail = rng.randrange(head + 1)
        slots = _ring(size, producer, head, tail, rng.choice([0.0, 0.3, 0.9, 1.0]), rng)
        a = analyze_ring(size, producer, head, tail, slots)
        assert a.live == _reference_live(size, producer, head, slots)
        assert a.stale == [j for j in range(tail, head) if slots[j]]
        assert a.full == (slots[producer] != 0)
        assert a.free == slots.count(0)


def test_full_ring_wrapped() -> None:
    size = 8
    # a full ring whose live window wraps: head 5, producer 5 (queue[producer] != NULL), no stale window
    slots = [0x1000 + 8 * i for i in range(size)]
    a = analyze_ring(size, 5, 5, 5, slots)
    assert a.full and a.live == [5, 6, 7, 0, 1, 2, 3, 4] and a.stale == [] and a.free == 0 and not a.problems


def test_stale_window_and_problems() -> None:
    # consumed [2, 4) but not zeroed yet; live [4, 6); producer at 6 (NULL): not full
    slots = [0, 0, 0x10, 0x18, 0x20, 0x28, 0, 0]
    a = analyze_ring(8, 6, 4, 2, slots)
    assert a.live == [4, 5] and a.stale == [2, 3] and not a.full and a.free == 4 and not a.problems
    # a slot outside both windows is reported
    slots[7] = 0x40
    assert any("outside the live and stale windows" in p for p in analyze_ring(8, 6, 4, 2, slots).problems)
    # indices outside the ring: nothing live, every NULL slot counted free
    a = analyze_ring(8, 9, 4, 2, slots)
    assert a.live == [] and a.free == slots.count(0) and a.problems
    # fewer slots read than the size
    a = analyze_ring(8, 1, 0, 0, [0x10, 0x18])
    assert a.live == [] and any("only 2 of 8" in p for p in a.problems)
