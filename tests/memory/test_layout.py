"""struct_layout and StructLayout on types built in a drgn program without a target: member paths,
anonymous unions, members a kernel lacks, names given to members, bit fields; no kernel needed."""

from __future__ import annotations

import struct
from typing import Dict, Optional

import drgn
import pytest

from skbinspect.memory.layout import StructLayout, struct_layout


def _program() -> drgn.Program:
    """A program whose only types are ``struct counters`` and ``struct outer``:

    struct counters { u32 a; union { unsigned long b; long __b; }; int s; u8 flag:1, mode:3; };
    struct outer { u64 x; struct counters c; struct counters *p; };
    """
    prog = drgn.Program(drgn.host_platform)
    u8 = prog.int_type("unsigned char", 1, False)
    u32 = prog.int_type("unsigned int", 4, False)
    i32 = prog.int_type("int", 4, True)
    ul = prog.int_type("unsigned long", 8, False)
    sl = prog.int_type("long", 8, True)
    u64 = prog.typedef_type("u64", ul)
    anon = prog.union_type(None, 8, (drgn.TypeMember(ul, "b"), drgn.TypeMember(sl, "__b")))
    counters = prog.struct_type(
        "counters",
        24,
        (
            drgn.TypeMember(u32, "a", 0),
            drgn.TypeMember(anon, None, 64),
            drgn.TypeMember(i32, "s", 128),
            drgn.TypeMember(drgn.Object(prog, u8, bit_field_size=1), "flag", 160),
            drgn.TypeMember(drgn.Object(prog, u8, bit_field_size=3), "mode", 161),
        ),
    )
    outer = prog.struct_type(
        "outer",
        40,
        (
            drgn.TypeMember(u64, "x", 0),
            drgn.TypeMember(counters, "c", 64),
            drgn.TypeMember(prog.pointer_type(counters), "p", 256),
        ),
    )
    types: Dict[str, drgn.Type] = {"counters": counters, "outer": outer}

    def find(
        prog: drgn.Program, kinds: drgn.TypeKindSet, name: str, filename: Optional[str]
    ) -> Optional[drgn.Type]:
        t = types.get(name)
        return t if t is not None and t.kind in kinds else None

    prog.register_type_finder("test", find, enable_index=0)
    return prog


def test_members_paths_anonymous_union_and_missing() -> None:
    prog = _program()
    lay = struct_layout(prog, "struct outer", ["x", "c.a", "c.b", "c.s", "c.gone", "p", "x.y"])
    assert lay.size == 40
    assert lay.fields == {
        "x": (0, 8, None, False),
        "c.a": (8, 4, None, False),
        "c.b": (16, 8, None, False),  # found in the anonymous union
        "c.s": (24, 4, None, True),
        "p": (32, 8, None, False),
    }
    assert not lay.has("c.gone") and not lay.has("x.y")  # missing, and not a struct to look into
    assert lay.end == 40
    raw = struct.pack("<QIIQiIQ", 7, 1, 0, 2**64 - 1, -3, 0, 0xFFFF888000001000)
    assert lay.decode(raw) == {"x": 7, "c.a": 1, "c.b": 2**64 - 1, "c.s": -3, "p": 0xFFFF888000001000}
    # the same struct at an offset in a larger buffer
    assert lay.decode(b"\xee" * 5 + raw, 5)["x"] == 7


def test_members_by_other_names() -> None:
    prog = _program()
    lay = struct_layout(prog, "struct outer", {"first": "c.a", "second": "c.b", "absent": "c.nothing"})
    assert list(lay.fields) == ["first", "second"]
    assert lay.end == 24  # only the bytes up to the last member asked for
    raw = struct.pack("<QIIQ", 0, 9, 0, 10)
    assert lay.decode(raw) == {"first": 9, "second": 10}
    # cached per program, by type and members
    assert (
        struct_layout(prog, "struct outer", {"first": "c.a", "second": "c.b", "absent": "c.nothing"}) is lay
    )
    assert struct_layout(prog, "struct outer", ["c.a", "c.b"]) is not lay


def test_bit_fields_columns_and_unpacker() -> None:
    prog = _program()
    lay = struct_layout(prog, "struct counters", ["a", "flag", "mode"])
    assert lay.fields["flag"] == (20, 1, 1, False) and lay.fields["mode"] == (20, 1, (1 << 16) + 3, False)
    rows = b"".join(struct.pack("<I16xB3x", a, bits) for a, bits in ((1, 0b1011), (2, 0b0100), (3, 0b1111)))
    assert [lay.decode(rows, 24 * i) for i in range(3)] == [
        {"a": 1, "flag": 1, "mode": 0b101},
        {"a": 2, "flag": 0, "mode": 0b010},
        {"a": 3, "flag": 1, "mode": 0b111},
    ]
    assert lay.columns(rows, 3, ["a", "mode", "nothing"]) == {"a": [1, 2, 3], "mode": [0b101, 0b010, 0b111]}
    unpack, pos, bits = lay.unpacker(["a", "mode"])
    t = unpack(rows, 24)
    shift, mask = bits["mode"]
    assert t[pos["a"]] == 2 and (t[pos["mode"]] >> shift) & mask == 0b010


def test_missing_type_raises_lookup_error() -> None:
    with pytest.raises(LookupError):
        struct_layout(_program(), "struct nothing_like_it", ["a"])


def test_empty_layout() -> None:
    assert StructLayout("struct x", 16, {}).end == 0
