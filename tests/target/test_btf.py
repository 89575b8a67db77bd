"""The BTF parser, its drgn finders and the declared globals, on BTF built here byte by byte: good input
becomes the right drgn types, bad input (truncated, garbage, unknown kinds, loops, wrong declarations)
a clear error and never a hang."""

from __future__ import annotations

import random
import re
import struct
import time
from typing import List, Optional, Tuple

import drgn
import pytest

from skbinspect.errors import DebugInfoError
from skbinspect.target import btf as B
from skbinspect.target.btf import Btf, BtfError, BtfTypes, register_btf
from skbinspect.target.declarations import (
    DECLARATIONS,
    Declaration,
    DeclarationError,
    DeclaredGlobals,
    register_declarations,
)


class Builder:
    """Writes a BTF blob: types in order (ids from ``first_id``), names into the string table."""

    def __init__(self, first_id: int = 1, str_base: int = 0) -> None:
        self.types: List[bytes] = []
        self.strs = b"" if str_base else b"\0"
        self.first_id = first_id
        self.str_base = str_base

    def name(self, s: Optional[str]) -> int:
        if not s:
            return 0
        off = self.str_base + len(self.strs)
        self.strs += s.encode() + b"\0"
        return off

    def add(
        self,
        kind: int,
        name: Optional[str] = None,
        vlen: int = 0,
        kflag: int = 0,
        st: int = 0,
        tail: bytes = b"",
    ) -> int:
        self.types.append(struct.pack("<III", self.name(name), kind << 24 | vlen | kflag << 31, st) + tail)
        return self.first_id + len(self.types) - 1

    def int_(self, name: str, size: int, signed: bool = False, bits: Optional[int] = None) -> int:
        enc = (1 if signed else 0) << 24 | (bits if bits is not None else size * 8)
        return self.add(B.INT, name, st=size, tail=struct.pack("<I", enc))

    def struct_(
        self, name: Optional[str], size: int, members: List[Tuple[str, int, int, int]], union: bool = False
    ) -> int:
        """members: (name, type id, bit offset, bit-field size)."""
        kflag = int(any(m[3] for m in members))
        tail = b"".join(
            struct.pack("<III", self.name(n), t, (bits << 24 | off) if kflag else off)
            for n, t, off, bits in members
        )
        return self.add(B.UNION if union else B.STRUCT, name, len(members), kflag, size, tail)

    def enum(self, name: str, values: List[Tuple[str, int]], signed: bool = False, size: int = 4) -> int:
        tail = b"".join(struct.pack("<Ii", self.name(n), v) for n, v in values)
        return self.add(B.ENUM, name, len(values), int(signed), size, tail)

    def blob(self) -> bytes:
        types = b"".join(self.types)
        hdr = struct.pack("<HBBIIIII", B.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(self.strs))
        return hdr + types + self.strs


def sample() -> Tuple[bytes, dict]:
    b = Builder()
    ids = {}
    ids["int"] = b.int_("int", 4, signed=True)
    ids["uchar"] = b.int_("unsigned char", 1)
    ids["ulong"] = b.int_("long unsigned int", 8)
    ids["bool"] = b.add(B.INT, "_Bool", st=1, tail=struct.pack("<I", 4 << 24 | 8))
    ids["fwd"] = b.add(B.FWD, "foo")
    ids["ptr"] = b.add(B.PTR, st=ids["fwd"])
    ids["arr"] = b.add(B.ARRAY, tail=struct.pack("<III", ids["uchar"], ids["int"], 6))
    ids["foo"] = b.struct_(
        "foo",
        24,
        [
            ("a", ids["int"], 0, 0),
            ("flag", ids["uchar"], 32, 3),
            ("mac", ids["arr"], 40, 0),
            ("next", ids["ptr"], 128, 0),
        ],
    )
    ids["u8"] = b.add(B.TYPEDEF, "u8", st=ids["uchar"])
    ids["const_u8"] = b.add(B.CONST, st=ids["u8"])
    ids["color"] = b.enum("color", [("RED", 0), ("GREEN", 1), ("COLOR_MAX", 2)])
    ids["sgn"] = b.enum("sgn", [("NEG", -1), ("POS", 1)], signed=True)
    ids["proto"] = b.add(
        B.FUNC_PROTO, vlen=2, st=ids["int"], tail=struct.pack("<IIII", b.name("x"), ids["int"], 0, 0)
    )
    ids["func"] = b.add(B.FUNC, "do_it", st=ids["proto"])
    ids["var"] = b.add(B.VAR, "percpu_counter", st=ids["ulong"], tail=struct.pack("<I", 1))
    ids["anon"] = b.struct_(None, 16, [("seq", ids["int"], 0, 0), ("when", ids["ulong"], 64, 0)])
    ids["anon_arr"] = b.add(B.ARRAY, tail=struct.pack("<III", ids["anon"], ids["int"], 3))
    ids["float"] = b.add(B.FLOAT, "double", st=8)
    ids["tag"] = b.add(B.TYPE_TAG, "rcu", st=ids["ptr"])
    ids["e64"] = b.add(B.ENUM64, "big", vlen=1, st=8, tail=struct.pack("<III", b.name("HUGE"), 0, 1))
    return b.blob(), ids


def program(blob: bytes, symbols: Tuple[drgn.Symbol, ...] = ()) -> Tuple[drgn.Program, BtfTypes]:
    prog = drgn.Program(drgn.host_platform)
    types = BtfTypes(prog, Btf(blob))
    register_btf(prog, types)
    prog.register_symbol_finder("test", drgn.SymbolIndex(list(symbols)), enable_index=0)
    return prog, types


def test_types_become_drgn_types() -> None:
    blob, ids = sample()
    prog, _ = program(blob)
    foo = prog.type("struct foo")
    assert foo.size == 24 and [m.name for m in foo.members] == ["a", "flag", "mac", "next"]
    flag = foo.member("flag")
    assert flag.bit_offset == 32 and flag.bit_field_size == 3
    assert foo.member("mac").type.length == 6 and foo.member("mac").bit_offset == 40
    # the pointer was to a forward declaration: it is completed with the definition
    assert foo.member("next").type.type.members is not None
    assert prog.type("u8").kind == drgn.TypeKind.TYPEDEF and prog.type("u8").type.name == "unsigned char"
    assert prog.type("unsigned long").size == 8
    assert prog.type("_Bool").kind == drgn.TypeKind.BOOL
    assert prog.type("double").kind == drgn.TypeKind.FLOAT
    color = prog.type("enum color")
    assert [(e.name, e.value) for e in color.enumerators] == [("RED", 0), ("GREEN", 1), ("COLOR_MAX", 2)]
    assert not color.type.is_signed
    sgn = prog.type("enum sgn")
    assert sgn.type.is_signed and sgn.enumerators[0].value == -1
    assert prog.type("enum big").enumerators[0].value == 1 << 32
    assert prog.constant("COLOR_MAX").value_() == 2 and prog.constant("NEG").value_() == -1


def test_functions_and_variables_take_kallsyms_addresses() -> None:
    blob, _ = sample()
    syms = (
        drgn.Symbol("do_it", 0xFFFF0000, 64, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.FUNC),
        drgn.Symbol("percpu_counter", 0x1D000, 8, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
    )
    prog, _ = program(blob, syms)
    f = prog.function("do_it")
    assert f.address_ == 0xFFFF0000 and f.type_.kind == drgn.TypeKind.FUNCTION
    assert [p.name for p in f.type_.parameters] == ["x"] and f.type_.is_variadic
    v = prog.variable("percpu_counter")
    assert v.address_ == 0x1D000 and v.type_.size == 8
    with pytest.raises(LookupError):
        prog.variable("no_such_thing")


def test_split_btf_of_a_module_refers_to_the_base() -> None:
    blob, ids = sample()
    base = Btf(blob)
    m = Builder(first_id=base.end_id, str_base=base.str_end)
    q = m.struct_("tun_struct", 16, [("flags", ids["int"], 0, 0), ("next", ids["ptr"], 64, 0)])
    m.add(B.PTR, st=q)
    mod = Btf(m.blob(), "tun", base)
    assert mod.start_id == base.end_id and mod.owner(ids["int"]) is base
    prog = drgn.Program(drgn.host_platform)
    register_btf(prog, BtfTypes(prog, base, [mod]))
    t = prog.type("struct tun_struct")
    assert t.member("flags").type.name == "int" and t.member("next").type.type.tag == "foo"


def test_only_module_types_when_vmlinux_has_dwarf() -> None:
    blob, ids = sample()
    base = Btf(blob)
    m = Builder(first_id=base.end_id, str_base=base.str_end)
    m.struct_("tap_queue", 4, [("x", ids["int"], 0, 0)])
    prog = drgn.Program(drgn.host_platform)
    register_btf(prog, BtfTypes(prog, base, [Btf(m.blob(), "tap", base)], search_vmlinux=False), first=False)
    assert prog.type("struct tap_queue").size == 4
    with pytest.raises(LookupError):
        prog.type("struct foo")  # vmlinux's: left to its DWARF


def test_anonymous_struct_and_its_array_are_found_by_members() -> None:
    blob, ids = sample()
    prog, types = program(blob)
    found = types.find_anonymous_struct(["seq", "when"])
    assert len(found) == 1 and found[0][1] == ids["anon"]
    arrays = types.find_arrays_of(*found[0])
    assert [t for _, t in arrays] == [ids["anon_arr"]]
    assert types.type(*arrays[0]).length == 3


# ---- bad BTF ------------------------------------------------------------------------------------------


def _header(blob: bytes, **changes: int) -> bytes:
    fields = list(struct.unpack_from("<HBBIIIII", blob))
    names = ["magic", "version", "flags", "hdr_len", "type_off", "type_len", "str_off", "str_len"]
    for k, v in changes.items():
        fields[names.index(k)] = v
    return struct.pack("<HBBIIIII", *fields) + blob[24:]


@pytest.mark.parametrize(
    "mangle, words",
    [
        (lambda b: b"", "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b"\x00" * 64, "not BTF"),
        (lambda b: _header(b, version=2), "version 2"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: _header(b, type_len=struct.unpack_from("<I", b, 12)[0] + 4000), "truncated"),
        (lambda b: _header(b, hdr_len=3), "header length"),
        (lambda b: _header(b, type_len=struct.unpack_from("<I", b, 12)[0] - 4), "truncated"),
        (lambda b: _header(b, type_len=0), "no types"),
    ],
)
def test_bad_blobs_are_refused_clearly(mangle, words: str) -> None:  # type: ignore[no-untyped-def]
    blob, _ = sample()
    with pytest.raises(BtfError) as e:
        Btf(mangle(blob))
    assert words in str(e.value) and "BTF of vmlinux" in str(e.value)
    assert isinstance(e.value, DebugInfoError)  # the CLI prints it as a message, exit 3


def test_unknown_kind_is_named() -> None:
    b = Builder()
    b.int_("int", 4, True)
    b.add(25, "future")
    with pytest.raises(BtfError, match="type 2 has unknown kind 25"):
        Btf(b.blob())


def test_reference_out_of_range_is_an_error_when_used() -> None:
    b = Builder()
    b.add(B.PTR, st=999)
    b.struct_("s", 8, [("p", 1, 0, 0), ("q", 777, 0, 0)])
    prog, _ = program(b.blob())
    with pytest.raises(BtfError, match="type 999 does not exist"):
        _ = prog.type("struct s").member("p").type
    with pytest.raises(BtfError, match="type 777 does not exist"):
        _ = prog.type("struct s").member("q").type


@pytest.mark.parametrize(
    "kinds", [(B.PTR,), (B.TYPEDEF, B.CONST), (B.CONST, B.VOLATILE, B.TYPEDEF, B.RESTRICT)]
)
def test_reference_loops_are_errors_not_hangs(kinds: Tuple[int, ...]) -> None:
    b = Builder()
    n = len(kinds)
    for i, k in enumerate(kinds):  # each refers to the next, the last to the first
        b.add(k, "loop" if k == B.TYPEDEF else None, st=1 + (i + 1) % n)
    b.struct_("holder", 8, [("x", 1, 0, 0)])
    prog, _ = program(b.blob())
    start = time.monotonic()
    with pytest.raises(BtfError, match="loop"):
        _ = prog.type("struct holder").member("x").type
    assert time.monotonic() - start < 5


def test_struct_containing_itself_through_a_pointer_is_fine() -> None:
    b = Builder()
    i = b.int_("int", 4, True)
    b.struct_("node", 16, [("v", i, 0, 0), ("next", 3, 64, 0)])
    b.add(B.PTR, st=2)
    prog, _ = program(b.blob())
    t = prog.type("struct node")
    assert t.member("next").type.type.member("next").type.type.member("v").type.name == "int"


def test_bad_string_offsets_are_errors() -> None:
    b = Builder()
    b.types.append(struct.pack("<III", 5000, B.STRUCT << 24, 4))
    with pytest.raises(BtfError, match="string offset 5000"):
        prog, types = program(b.blob())
        types.type(types.vmlinux, 1)


def test_random_garbage_never_hangs_or_crashes() -> None:
    """Mutated blobs: each either parses or is refused with BtfError; every type then converts or raises
    BtfError (never IndexError, struct.error, RecursionError...), quickly."""
    blob, _ = sample()
    rng = random.Random(15)
    start = time.monotonic()
    for _ in range(1000):
        data = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(24, len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data))]
        try:
            btf = Btf(bytes(data))
        except BtfError:
            continue
        prog = drgn.Program(drgn.host_platform)
        types = BtfTypes(prog, btf)
        for tid in range(1, btf.end_id):
            try:
                t = types.type(btf, tid)
                for m in getattr(t, "members", None) or ():
                    _ = m.type
            except BtfError:
                pass
    assert time.monotonic() - start < 60


# ---- declared globals ----------------------------------------------------------------------------------


def test_declaration_larger_than_its_symbol_is_an_error() -> None:
    blob, _ = sample()
    syms = (
        drgn.Symbol("small_thing", 0x1000, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
        drgn.Symbol("after", 0x1008, 8, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
    )
    prog, types = program(blob, syms)
    g = DeclaredGlobals(prog, types, (6, 1), [Declaration("small_thing", "struct foo")])
    with pytest.raises(DeclarationError, match=r"small_thing.* 24 bytes.* only 8 bytes"):
        g.object("small_thing")
    register_declarations(prog, g)
    with pytest.raises(DeclarationError, match="small_thing"):
        prog["small_thing"]


def test_declaration_far_smaller_than_its_symbol_is_an_error() -> None:
    blob, _ = sample()
    syms = (
        drgn.Symbol("big_thing", 0x10000, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
        drgn.Symbol("after", 0x20000, 8, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
    )
    prog, types = program(blob, syms)
    g = DeclaredGlobals(prog, types, (6, 1), [Declaration("big_thing", "int")])
    with pytest.raises(DeclarationError, match="big_thing.*more than padding"):
        g.object("big_thing")


def test_module_symbol_size_must_match_exactly() -> None:
    blob, _ = sample()
    syms = (drgn.Symbol("mod_var", 0xC0000000, 16, drgn.SymbolBinding.LOCAL, drgn.SymbolKind.OBJECT),)
    prog, types = program(blob, syms)
    g = DeclaredGlobals(prog, types, (6, 1), [Declaration("mod_var", "int", module="m")])
    with pytest.raises(DeclarationError, match="mod_var.*module m.*16 bytes"):
        g.object("mod_var")
    g = DeclaredGlobals(prog, types, (6, 1), [Declaration("mod_var", "struct {seq, when}", module="m")])
    assert g.object("mod_var").type_.size == 16


def test_declaration_with_fitting_size_and_array_length_from_an_enum() -> None:
    blob, _ = sample()
    syms = (
        drgn.Symbol("names", 0x2000, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
        drgn.Symbol("after", 0x2040, 8, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),  # 64: padding
        drgn.Symbol("clocks", 0x3000, 0, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
        drgn.Symbol("end", 0x3030, 8, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),
    )
    prog, types = program(blob, syms)
    decls = [
        Declaration("names", "long unsigned int [{COLOR_MAX+1}]"),
        Declaration("clocks", "struct {seq, when} [*]"),
    ]
    g = DeclaredGlobals(prog, types, (6, 1), decls)
    assert g.object("names").type_.length == 3
    assert g.object("clocks").type_.length == 3 and g.object("clocks").address_ == 0x3000
    assert g.verify() == []


def test_declaration_with_missing_types_is_not_found_not_an_error() -> None:
    blob, _ = sample()
    syms = (drgn.Symbol("x", 0x2000, 8, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT),)
    prog, types = program(blob, syms)
    g = DeclaredGlobals(prog, types, (6, 1), [Declaration("x", "struct not_here"), Declaration("y", "int")])
    assert g.object("x") is None and g.object("y") is None  # no type; no symbol
    register_declarations(prog, g)
    with pytest.raises(LookupError):
        prog["x"]


def test_versioned_declarations() -> None:
    d = Declaration("v", "int", since=(6, 4), before=(6, 17))
    assert not d.applies((6, 1)) and d.applies((6, 4)) and d.applies((6, 12)) and not d.applies((7, 0))


def test_every_versioned_declaration_cites_its_commit() -> None:
    form = re.compile(r'^Linux kernel commit [0-9a-f]{12} \("[^"]+"\) \(in v\d+\.\d+\)$')
    for d in DECLARATIONS:
        if d.since or d.before:
            assert form.match(d.commit), d
            assert f"(in v{'.'.join(map(str, d.since or d.before))})" in d.commit, d  # type: ignore[arg-type]
