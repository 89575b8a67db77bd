"""Struct layouts read from the target's DWARF, for decoding bulk-read bytes without drgn Objects.

This is the one way skbinspect describes the kernel structs it reads in bulk: :func:`struct_layout`
looks the chosen members up once per program (offset, size, bit field, signedness), members this
kernel lacks are left out, and :class:`StructLayout` decodes one struct (:meth:`~StructLayout.decode`),
a hot loop's worth (:meth:`~StructLayout.unpacker`) or columns of many (:meth:`~StructLayout.columns`).
Targets are little-endian (x86-64).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import drgn

from skbinspect.memory.cache import per_program
from skbinspect.memory.columns import column

__all__ = ["StructLayout", "struct_layout"]

_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SFMT = {1: "b", 2: "h", 4: "i", 8: "q"}


@dataclass
class StructLayout:
    """Offsets and sizes of chosen members of one struct type (members missing in this kernel are absent).

    ``decode(raw)`` returns ``{member: int}`` for the members present; bit fields are extracted.

    :ivar size: ``sizeof`` the whole struct (the stride of an array of them).
    :ivar fields: member name -> (byte offset, size in bytes, bit spec or None, signed), in the order the
        members were asked for.  A bit field's entry covers the whole bytes holding it; its bit spec is
        ``bit offset in those bytes << 16 | bit width``.
    """

    type_name: str
    size: int
    fields: Dict[str, Tuple[int, int, Optional[int], bool]]  # name -> (byte offset, size, bit spec, signed)

    def has(self, name: str) -> bool:
        return name in self.fields

    @property
    def end(self) -> int:
        """Bytes from the start of the struct to the end of the last member present (0 if none): what a
        reader of only these members needs to read."""
        return max((off + size for off, size, _, _ in self.fields.values()), default=0)

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
        """``{member: value}`` of the struct at ``raw[base:]``, in the order of :attr:`fields`; integers
        are read as the member's type is declared (signed or not), bit fields extracted."""
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


def struct_layout(
    prog: drgn.Program, type_name: str, members: Union[Iterable[str], Mapping[str, str]]
) -> StructLayout:
    """Layout of ``members`` of ``type_name``, cached per program.

    :param members: member paths (``"ring.producer"``, ``"stats.vs.rx_drops"``; members of anonymous
        structs and unions are found by their own name), or a mapping ``{name: member path}`` to know
        them by other names (e.g. ``{"input_qlen": "input_pkt_queue.qlen"}``).  Members this kernel does
        not have are left out; check with :meth:`StructLayout.has`.
    :raises LookupError: the target has no type ``type_name``.
    """
    paths: Tuple[Tuple[str, str], ...]
    if isinstance(members, Mapping):
        paths = tuple(members.items())
        key: Tuple[object, ...] = ("skbinspect.layout", type_name, paths)
    else:
        names = tuple(members)
        paths = tuple((m, m) for m in names)
        key = ("skbinspect.layout", type_name, names)
    return per_program(prog, key, lambda p: _build_layout(p, type_name, paths))


def _build_layout(prog: drgn.Program, type_name: str, paths: Iterable[Tuple[str, str]]) -> StructLayout:
    t = prog.type(type_name)
    fields: Dict[str, Tuple[int, int, Optional[int], bool]] = {}
    for name, path in paths:
        try:
            bit_offset, member = _walk(t, path)
            mt = member.type
            if mt.kind == drgn.TypeKind.POINTER:
                size, signed = 8, False
            else:
                size, signed = _int_like(mt)
        except (LookupError, TypeError):
            continue  # not in this kernel (or no longer a struct to look into)
        bfs = member.bit_field_size
        if bfs:
            start = bit_offset // 8
            # read enough whole bytes to cover the field
            nbytes = (bit_offset % 8 + bfs + 7) // 8
            word = 1 if nbytes <= 1 else 2 if nbytes <= 2 else 4 if nbytes <= 4 else 8
            fields[name] = (start, word, (bit_offset % 8) * (1 << 16) + bfs, False)
        else:
            fields[name] = (bit_offset // 8, size, None, signed)
    return StructLayout(type_name, drgn.sizeof(t), fields)


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
