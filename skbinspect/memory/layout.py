"""Struct layouts read from the target's DWARF, for decoding bulk-read bytes without drgn Objects."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import drgn

from skbinspect.memory.columns import column

__all__ = ["StructLayout", "struct_layout"]

_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SFMT = {1: "b", 2: "h", 4: "i", 8: "q"}


@dataclass
class StructLayout:
    """Offsets and sizes of chosen members of one struct type (members missing in this kernel are absent).

    ``decode(raw)`` returns ``{member: int}`` for the members present; bit fields are extracted.
    """

    type_name: str
    size: int
    fields: Dict[str, Tuple[int, int, Optional[int], bool]]  # name -> (byte offset, size, bit spec, signed)

    def has(self, name: str) -> bool:
        return name in self.fields

    def unpacker(
        self, names: Iterable[str]
    ) -> "Tuple[Callable[[bytes], Tuple[int, ...]], Dict[str, int], Dict[str, Tuple[int, int]]]":
        """For hot loops: ``(unpack, positions, bitfields)``.

        ``unpack(raw)`` is one ``struct`` unpack returning a tuple; ``positions[name]`` is each present
        member's index in it (members this kernel lacks, or that overlap an earlier one, are absent);
        for a bit field the tuple holds its containing bytes and ``bitfields[name] = (shift, mask)``.
        """
        plain = sorted((self.fields[n][0], n) for n in names if n in self.fields)
        fmt = "<"
        pos = 0
        positions: Dict[str, int] = {}
        bitfields: Dict[str, Tuple[int, int]] = {}
        for off, n in plain:
            _, size, bits, signed = self.fields[n]
            if off < pos:
                continue  # overlaps the previous member (a union)
            fmt += f"{off - pos}x" if off > pos else ""
            fmt += (_SFMT if signed and bits is None else _FMT)[size]
            pos = off + size
            positions[n] = len(positions)
            if bits is not None:
                shift, nbits = divmod(bits, 1 << 16)
                bitfields[n] = (shift, (1 << nbits) - 1)
        return struct.Struct(fmt).unpack_from, positions, bitfields

    def columns(self, rows: bytes, n: int, names: Iterable[str]) -> Dict[str, List[int]]:
        """Members of ``n`` structs packed back to back in ``rows`` (``n * size`` bytes), as one list per
        member (little-endian target), bit fields extracted; members this kernel lacks are absent.
        Runs in C: one strided slice per byte of each member (see :func:`column`)."""
        out: Dict[str, List[int]] = {}
        for name in names:
            f = self.fields.get(name)
            if f is None:
                continue
            off, size, bits, signed = f
            col = column(rows, self.size, n, off, size, signed and bits is None)
            if bits is not None:
                shift, nbits = divmod(bits, 1 << 16)
                mask = (1 << nbits) - 1
                col = [(v >> shift) & mask for v in col] if any(col) else col
            out[name] = col
        return out

    def decode(self, raw: bytes, base: int = 0) -> Dict[str, int]:
        out = {}
        for name, (off, size, bits, signed) in self.fields.items():
            if bits is None:
                fmt = (_SFMT if signed else _FMT)[size]
                out[name] = struct.unpack_from("<" + fmt, raw, base + off)[0]
            else:
                bit_off, nbits = divmod(bits, 1 << 16)
                word = int.from_bytes(raw[base + off : base + off + size], "little")
                out[name] = (word >> bit_off) & ((1 << nbits) - 1)
        return out

    def offset(self, name: str) -> Optional[int]:
        """The byte offset of member ``name`` (of the bytes holding it, for a bit field), or None if this
        kernel's struct has no such member."""
        f = self.fields.get(name)
        return f[0] if f is not None else None


def _int_like(t: drgn.Type) -> Tuple[int, bool]:
    u = t
    while u.kind == drgn.TypeKind.TYPEDEF:
        u = u.type
    if u.kind == drgn.TypeKind.ENUM:
        u = u.type
    size = drgn.sizeof(u)
    signed = u.kind == drgn.TypeKind.INT and bool(u.is_signed)
    return size, signed


def struct_layout(prog: drgn.Program, type_name: str, members: Iterable[str]) -> StructLayout:
    """Layout of ``members`` of ``type_name`` (a member path like ``"ring.producer"`` is allowed),
    cached per program.  Members this kernel does not have are left out; check with ``has()``."""
    members = tuple(members)
    key = ("skbinspect.layout", type_name, members)
    cached = prog.cache.get(key)
    if cached is not None:
        return cached
    t = prog.type(type_name)
    fields = {}
    for m in members:
        try:
            bit_offset = _member_bit_offset(t, m)
            mt = _member_type(t, m)
        except LookupError:
            continue
        if mt.kind == drgn.TypeKind.POINTER:
            size, signed = 8, False
        else:
            size, signed = _int_like(mt)
        bfs = _member_bit_field_size(t, m)
        if bfs:
            start = bit_offset // 8
            # read enough whole bytes to cover the field
            nbytes = (bit_offset % 8 + bfs + 7) // 8
            word = 1 if nbytes <= 1 else 2 if nbytes <= 2 else 4 if nbytes <= 4 else 8
            fields[m] = (start, word, (bit_offset % 8) * (1 << 16) + bfs, False)
        else:
            fields[m] = (bit_offset // 8, size, None, signed)
    lay = StructLayout(type_name, drgn.sizeof(t), fields)
    prog.cache[key] = lay
    return lay


def _walk(t: drgn.Type, path: str) -> Tuple[int, drgn.TypeMember]:
    off = 0
    cur = t
    member = None
    for part in path.split("."):
        while cur.kind == drgn.TypeKind.TYPEDEF:
            cur = cur.type
        member = cur.member(part)
        off += member.bit_offset
        cur = member.type
    assert member is not None
    return off, member


def _member_bit_offset(t: drgn.Type, path: str) -> int:
    return _walk(t, path)[0]


def _member_type(t: drgn.Type, path: str) -> drgn.Type:
    return _walk(t, path)[1].type


def _member_bit_field_size(t: drgn.Type, path: str) -> Optional[int]:
    return _walk(t, path)[1].bit_field_size
