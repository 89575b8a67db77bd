"""The bounded walks of :mod:`skbinspect.memory.walk` on synthetic memory: lists that end, loop, hold
NULL, LIST_POISON, non-kernel or misaligned links, or nodes that cannot be read."""

from __future__ import annotations

import struct
from typing import Dict, List

import drgn
import pytest

from skbinspect.memory.problems import take_problems
from skbinspect.memory.walk import LIST_POISON1, list_is_sound, list_nodes, pointer_problem

BASE = 0xFFFF888000100000
SIZE = 0x10000


def _prog(words: Dict[int, int]) -> drgn.Program:
    """A program whose memory is SIZE bytes at BASE, zero but for ``words`` (address -> u64)."""
    mem = bytearray(SIZE)
    for a, v in words.items():
        struct.pack_into("<Q", mem, a - BASE, v)
    prog = drgn.Program(drgn.host_platform)
    prog.add_memory_segment(
        BASE, SIZE, lambda address, count, offset, physical: bytes(mem[offset : offset + count])
    )
    return prog


def _node(i: int) -> int:
    return BASE + 0x100 * (i + 1)


def _circular(n: int) -> Dict[int, int]:
    """head at BASE, then nodes 0..n-1, back to head."""
    chain = [BASE] + [_node(i) for i in range(n)] + [BASE]
    return {a: b for a, b in zip(chain, chain[1:])}


def test_a_sound_list_is_walked_in_order() -> None:
    prog = _prog(_circular(5))
    assert list(list_nodes(prog, BASE, "test list")) == [_node(i) for i in range(5)]
    assert list(list_nodes(prog, BASE, "test list", offset=0x10)) == [_node(i) - 0x10 for i in range(5)]
    assert take_problems(prog) == [] and list_is_sound(prog, BASE, "test list")


@pytest.mark.parametrize(
    "link,expect",
    [
        ("self", "loops back to"),
        ("earlier", "loops back to"),
        (0, "a NULL link"),
        (LIST_POISON1, "LIST_POISON"),
        (0x00007F0000001000, "not a kernel address"),
        (_node(1) + 4, "misaligned"),
        (BASE + 2 * SIZE, "unreadable node"),
    ],
)
def test_a_damaged_list_stops_and_says_where(link: object, expect: str) -> None:
    words = _circular(6)
    bad = {"self": _node(3), "earlier": _node(1)}.get(link, link)  # type: ignore[call-overload]
    words[_node(3)] = bad
    prog = _prog(words)
    got = list(list_nodes(prog, BASE, "test list", name=lambda a: f"node{(a - BASE) // 0x100 - 1}"))
    assert got == [_node(i) for i in range(4)]
    (problem,) = take_problems(prog)
    assert expect in problem and "after node3" in problem and "walk stopped, 4 read" in problem
    assert not list_is_sound(prog, BASE, "test list")


def test_a_limit_stops_a_long_list() -> None:
    prog = _prog(_circular(50))
    notes: List[str] = []
    assert len(list(list_nodes(prog, BASE, "test list", limit=10, notes=notes))) == 10
    assert notes and "longer than 10" in notes[0] and take_problems(prog) == []


def test_an_unreadable_head() -> None:
    prog = _prog({})
    assert list(list_nodes(prog, BASE - 0x1000, "test list")) == []
    assert "unreadable" in take_problems(prog)[0]


def test_pointer_problem() -> None:
    assert pointer_problem(0xFFFF888000001000) is None
    assert pointer_problem(0xFF11000000001000) is None  # 5-level paging direct map
    assert "NULL" in pointer_problem(0)  # type: ignore[operator]
    assert "misaligned" in pointer_problem(0xFFFF888000001004)  # type: ignore[operator]
