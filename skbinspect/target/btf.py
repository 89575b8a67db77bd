"""The kernel's BTF (BPF Type Format) as a source of drgn types: vmlinux's and modules' types when their
DWARF is not installed.  The format and where the kernel keeps it are in docs/kernel/btf.md.

The interface is small, so that drgn's own BTF support can take its place:

* :class:`Btf` parses and checks one blob: vmlinux's, or a module's split BTF on top of vmlinux's.
  Bad input (truncated, an unknown kind, an out-of-range reference, a loop) raises :class:`BtfError`
  saying what is wrong; nothing here can hang.
* :class:`BtfTypes` turns the type ids of a set of blobs into drgn types for one program, built lazily
  (a structure's members are made when first used), and answers drgn's type and object finder
  callbacks: named types, enumerators (constants), functions, and the variables BTF describes (the
  per-CPU ones; BTF has no other global variables, see :mod:`skbinspect.target.declarations`).
* :func:`register_btf` installs a :class:`BtfTypes` on a program as its ``btf`` type and object finder.

Addresses of functions and variables come from the program's symbol finders (kallsyms).
"""

from __future__ import annotations

import bisect
import struct
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

import drgn

from skbinspect.errors import DebugInfoError

__all__ = ["BTF_MAGIC", "Btf", "BtfError", "BtfTypes", "register_btf"]

BTF_MAGIC = 0xEB9F

# BTF kinds (include/uapi/linux/btf.h)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19

KIND_NAMES = {
    INT: "INT",
    PTR: "PTR",
    ARRAY: "ARRAY",
    STRUCT: "STRUCT",
    UNION: "UNION",
    ENUM: "ENUM",
    FWD: "FWD",
    TYPEDEF: "TYPEDEF",
    VOLATILE: "VOLATILE",
    CONST: "CONST",
    RESTRICT: "RESTRICT",
    FUNC: "FUNC",
    FUNC_PROTO: "FUNC_PROTO",
    VAR: "VAR",
    DATASEC: "DATASEC",
    FLOAT: "FLOAT",
    DECL_TAG: "DECL_TAG",
    TYPE_TAG: "TYPE_TAG",
    ENUM64: "ENUM64",
}

# Bytes that follow the 12-byte common header of each kind: (fixed, per vlen item).
_TRAILER: Dict[int, Tuple[int, int]] = {
    INT: (4, 0),
    PTR: (0, 0),
    ARRAY: (12, 0),
    STRUCT: (0, 12),
    UNION: (0, 12),
    ENUM: (0, 8),
    FWD: (0, 0),
    TYPEDEF: (0, 0),
    VOLATILE: (0, 0),
    CONST: (0, 0),
    RESTRICT: (0, 0),
    FUNC: (0, 0),
    FUNC_PROTO: (0, 8),
    VAR: (4, 0),
    DATASEC: (0, 12),
    FLOAT: (0, 0),
    DECL_TAG: (4, 0),
    TYPE_TAG: (0, 0),
    ENUM64: (0, 12),
}
# The same in 32-bit words, header included, indexed by kind (0: unknown kind).
_WORDS_FIXED = tuple(3 + _TRAILER[k][0] // 4 if k in _TRAILER else 0 for k in range(32))
_WORDS_PER = tuple(_TRAILER[k][1] // 4 if k in _TRAILER else 0 for k in range(32))


_HEADER = struct.Struct("<HBBIIIII")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_III = struct.Struct("<III")
_II = struct.Struct("<II")
_Ii = struct.Struct("<Ii")

#: Bound on the length of a chain of eagerly resolved references (valid BTF stays far below it).
MAX_CHAIN = 256


class BtfError(DebugInfoError):
    """The BTF is malformed or cannot be used; the message says which blob and what is wrong."""


class Btf:
    """One BTF blob, checked and indexed (offsets of each type, types by name), not yet converted.

    :param data: the raw blob (``/sys/kernel/btf/NAME``, or ``__start_BTF..__stop_BTF`` in memory).
    :param name: what the blob belongs to (``vmlinux``, a module name), for messages.
    :param base: vmlinux's :class:`Btf` for a module's split BTF, whose type ids and string offsets
        continue vmlinux's.
    :raises BtfError: the blob is truncated or malformed.
    """

    start_id: int
    end_id: int
    str_base: int
    str_end: int

    def __init__(self, data: bytes, name: str = "vmlinux", base: Optional["Btf"] = None) -> None:
        self.name = name
        self.base = base
        self.size = len(data)
        if len(data) < _HEADER.size:
            raise BtfError(f"BTF of {name} is truncated: {len(data)} bytes, less than its header.")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
        if magic != BTF_MAGIC:
            raise BtfError(f"BTF of {name} is not BTF: magic {magic:#06x}, expected {BTF_MAGIC:#06x}.")
        if version != 1:
            raise BtfError(f"BTF of {name} has version {version}; only version 1 is known.")
        if hdr_len < _HEADER.size or hdr_len > len(data):
            raise BtfError(f"BTF of {name} has an invalid header length {hdr_len}.")
        end = max(type_off + type_len, str_off + str_len)
        if hdr_len + end > len(data):
            raise BtfError(
                f"BTF of {name} is truncated: its header describes {hdr_len + end} bytes, {len(data)} present."
            )
        if type_off % 4 or type_len % 4:
            raise BtfError(f"BTF of {name}: its type section is not 4-byte aligned.")
        if not type_len:
            raise BtfError(f"BTF of {name} has no types.")
        self._types = bytes(data[hdr_len + type_off : hdr_len + type_off + type_len])
        self._strs = bytes(data[hdr_len + str_off : hdr_len + str_off + str_len])
        if base is None and (not self._strs or self._strs[0] != 0):
            raise BtfError(f"BTF of {name}: its string section does not start with an empty string.")
        if self._strs and self._strs[-1] != 0:
            raise BtfError(f"BTF of {name}: its string section is not NUL-terminated (truncated?).")
        self.start_id = base.end_id if base is not None else 1
        self.str_base = base.str_end if base is not None else 0
        self.str_end = self.str_base + len(self._strs)
        self._words = memoryview(self._types).cast("I")
        self._offs = self._index()  # word index of each type's header
        self._strindex: Optional[Dict[bytes, int]] = None  # string -> offset, built on first lookup
        self._strdups: Dict[bytes, List[int]] = {}
        self._found: Dict[str, List[int]] = {}
        self._enum_found: Dict[str, List[Tuple[int, int]]] = {}
        self.end_id = self.start_id + len(self._offs)

    def _index(self) -> List[int]:
        """One pass over the type section: where each type starts (its kind and item count give its
        length).  Nothing else is decoded until a lookup needs it."""
        words = self._words
        n = len(words)
        offs: List[int] = []
        app = offs.append
        fixed, per = _WORDS_FIXED, _WORDS_PER
        w = 0
        try:
            while w < n:
                info = words[w + 1]
                k = info >> 24 & 0x1F
                app(w)
                step = fixed[k]
                if not step:
                    raise BtfError(
                        f"BTF of {self.name}: type {self.start_id + len(offs) - 1} has unknown kind {k}; "
                        "this BTF is newer than skbinspect knows, or corrupt."
                    )
                w += step + per[k] * (info & 0xFFFF)
        except IndexError:
            raise BtfError(f"BTF of {self.name} is truncated inside type {self.start_id + len(offs) - 1}.")
        if w != n:
            raise BtfError(
                f"BTF of {self.name} is truncated: its last type {self.start_id + len(offs) - 1} runs past "
                "the type section."
            )
        return offs

    # -- access ----------------------------------------------------------------------------------

    @property
    def nr_types(self) -> int:
        """Types in this blob (not counting a base's)."""
        return len(self._offs)

    def owner(self, tid: int) -> "Btf":
        """The blob that holds type ``tid`` (this one or its base)."""
        if tid >= self.start_id:
            if tid >= self.end_id:
                raise BtfError(f"BTF of {self.name}: type {tid} does not exist.")
            return self
        if self.base is None:
            raise BtfError(f"BTF of {self.name}: type {tid} does not exist.")
        return self.base.owner(tid)

    def entry(self, tid: int) -> Tuple[int, int, int, int, int]:
        """``(kind, vlen, kind_flag, name_off, size_or_type)`` of type ``tid`` (of this blob)."""
        w = self._offs[tid - self.start_id]
        words = self._words
        info = words[w + 1]
        return info >> 24 & 0x1F, info & 0xFFFF, info >> 31, words[w], words[w + 2]

    def trailer(self, tid: int) -> Tuple[bytes, int]:
        """The bytes and offset of what follows type ``tid``'s common header."""
        return self._types, 4 * self._offs[tid - self.start_id] + 12

    def string(self, off: int) -> str:
        if off < self.str_base:
            assert self.base is not None
            return self.base.string(off)
        local = off - self.str_base
        end = self._strs.find(b"\0", local)
        if local >= len(self._strs) or end < 0:
            raise BtfError(f"BTF of {self.name}: string offset {off} is out of range; the BTF is corrupt.")
        return self._strs[local:end].decode("utf-8", errors="replace")

    def _name_offsets(self, name: str) -> List[int]:
        """Offsets (in this blob's string numbering) at which ``name`` is a whole string.  The string
        table is indexed on first use (one split: much cheaper than searching it per lookup)."""
        if self._strindex is None:
            index: Dict[bytes, int] = {}
            dups: Dict[bytes, List[int]] = {}  # pahole writes each string once; be right if not
            off = self.str_base
            for part in self._strs.split(b"\0"):
                prev = index.setdefault(part, off)
                if prev != off:
                    dups.setdefault(part, [prev]).append(off)
                off += len(part) + 1
            self._strindex, self._strdups = index, dups
        key = name.encode()
        if not key:
            return []
        if key in self._strdups:
            return self._strdups[key]
        found = self._strindex.get(key)
        return [] if found is None else [found]

    def _all_name_offsets(self, name: str) -> List[int]:
        out: List[int] = []
        blob: Optional[Btf] = self
        while blob is not None:  # a module's types may use names from vmlinux's string table
            out += blob._name_offsets(name)
            blob = blob.base
        return out

    def hits(self, value: int) -> Iterator[Tuple[int, int]]:
        """``(type id, word)`` of every aligned 32-bit ``value`` in the type section: the type whose entry
        holds it, and which word of that entry (0: name, 1: info, 2: size or type, 3...: what follows).
        The search runs at C speed: no index of the whole section is needed for a lookup."""
        types, offs = self._types, self._offs
        pat = _U32.pack(value)
        i = types.find(pat)
        while i >= 0:
            if not i & 3:
                w = i >> 2
                k = bisect.bisect_right(offs, w) - 1
                yield self.start_id + k, w - offs[k]
            i = types.find(pat, i + 1)

    def find(self, name: str) -> List[int]:
        """Ids of this blob's types (including functions and variables) called ``name``."""
        found = self._found.get(name)
        if found is None:
            found = sorted(
                t for off in self._all_name_offsets(name) for t, word in self.hits(off) if word == 0
            )
            self._found[name] = found
        return found

    def enumerator(self, name: str) -> List[Tuple[int, int]]:
        """``(enum type id, index)`` of every enumerator called ``name`` in this blob."""
        found = self._enum_found.get(name)
        if found is not None:
            return found
        found = []
        for off in self._all_name_offsets(name):
            for tid, word in self.hits(off):
                kind, vlen = self.entry(tid)[:2]
                if kind == ENUM or kind == ENUM64:
                    step = 2 if kind == ENUM else 3
                    if word >= 3 and (word - 3) % step == 0 and (word - 3) // step < vlen:
                        found.append((tid, (word - 3) // step))
        self._enum_found[name] = found
        return found

    def ids(self) -> range:
        return range(self.start_id, self.end_id)


_DrgnKinds = {
    STRUCT: (drgn.TypeKind.STRUCT,),
    UNION: (drgn.TypeKind.UNION,),
    ENUM: (drgn.TypeKind.ENUM,),
    ENUM64: (drgn.TypeKind.ENUM,),
    TYPEDEF: (drgn.TypeKind.TYPEDEF,),
    INT: (drgn.TypeKind.INT, drgn.TypeKind.BOOL),
    FLOAT: (drgn.TypeKind.FLOAT,),
}

_INT_NAMES = {
    (1, True): "signed char",
    (1, False): "unsigned char",
    (2, True): "short int",
    (2, False): "short unsigned int",
    (4, True): "int",
    (4, False): "unsigned int",
    (8, True): "long int",
    (8, False): "long unsigned int",
}

TypeOrObject = Union[drgn.Type, drgn.Object]


class BtfTypes:
    """drgn types of the types in vmlinux's BTF and in modules' split BTF, for one program.

    :param vmlinux: vmlinux's blob (the base of the modules').
    :param modules: modules' blobs, by module name.
    :param search_vmlinux: answer lookups of vmlinux's own types (False when vmlinux's DWARF is loaded and
        only modules need BTF: their types still refer to vmlinux's BTF types).
    """

    def __init__(
        self, prog: drgn.Program, vmlinux: Btf, modules: Sequence[Btf] = (), search_vmlinux: bool = True
    ) -> None:
        self.prog = prog
        self.vmlinux = vmlinux
        self.modules: List[Btf] = list(modules)
        self.search_vmlinux = search_vmlinux
        self._cache: Dict[Tuple[int, int], drgn.Type] = {}
        self._resolving: Set[Tuple[int, int]] = set()

    def add_module(self, blob: Btf) -> None:
        self.modules.append(blob)

    def _blobs(self) -> Iterator[Btf]:
        if self.search_vmlinux:
            yield self.vmlinux
        yield from self.modules

    # -- conversion ------------------------------------------------------------------------------

    def type(self, blob: Btf, tid: int) -> drgn.Type:
        """The drgn type of type ``tid`` as seen from ``blob`` (a module blob sees vmlinux's ids too)."""
        if tid == 0:
            return self.prog.void_type()
        owner = blob.owner(tid)
        key = (id(owner), tid)
        t = self._cache.get(key)
        if t is not None:
            return t
        if key in self._resolving or len(self._resolving) > MAX_CHAIN:
            raise BtfError(
                f"BTF of {owner.name}: type {tid} refers back to itself (a loop); the BTF is corrupt."
            )
        self._resolving.add(key)
        try:
            t = self._convert(owner, tid)
        except (ValueError, OverflowError, TypeError) as e:  # drgn refusing a nonsensical type
            raise BtfError(f"BTF of {owner.name}: type {tid} is malformed ({e}); the BTF is corrupt.")
        finally:
            self._resolving.discard(key)
        self._cache[key] = t
        return t

    def _lazy(self, blob: Btf, tid: int) -> Callable[[], drgn.Type]:
        return lambda: self.type(blob, tid)

    def _convert(self, b: Btf, tid: int) -> drgn.Type:
        prog = self.prog
        kind, vlen, kflag, name_off, st = b.entry(tid)
        name = b.string(name_off) if name_off else None
        data, pos = b.trailer(tid)
        if kind == INT:
            (enc,) = _U32.unpack_from(data, pos)
            if st not in (1, 2, 4, 8, 16):
                raise BtfError(f"BTF of {b.name}: integer type {tid} has an impossible size {st}.")
            if enc >> 24 & 4:
                return prog.bool_type(name or "_Bool", st)
            return prog.int_type(
                name or _INT_NAMES.get((st, bool(enc >> 24 & 1)), "int"), st, bool(enc >> 24 & 1)
            )
        if kind == PTR:
            return prog.pointer_type(self.type(b, st), 8)
        if kind == ARRAY:
            elem, _index, n = _III.unpack_from(data, pos)
            return prog.array_type(self.type(b, elem), n if n else None)
        if kind in (STRUCT, UNION):
            members = []
            for i in range(vlen):
                m_name, m_type, m_off = _III.unpack_from(data, pos + 12 * i)
                bits = 0
                if kflag:
                    bits, m_off = m_off >> 24, m_off & 0xFFFFFF
                members.append(
                    drgn.TypeMember(
                        self._member(b, m_type, bits), b.string(m_name) if m_name else None, m_off
                    )
                )
            make = prog.struct_type if kind == STRUCT else prog.union_type
            return make(name, st, members)
        if kind in (ENUM, ENUM64):
            return self._enum(b, tid, name, vlen, kflag, st, data, pos)
        if kind == FWD:
            full = self._complete(name, UNION if kflag else STRUCT)
            if full is not None:
                return full
            return prog.union_type(name) if kflag else prog.struct_type(name)
        if kind == TYPEDEF:
            return prog.typedef_type(name or "", self.type(b, st))
        if kind in (VOLATILE, CONST, RESTRICT):
            inner = self.type(b, st)
            q = {
                VOLATILE: drgn.Qualifiers.VOLATILE,
                CONST: drgn.Qualifiers.CONST,
                RESTRICT: drgn.Qualifiers.RESTRICT,
            }
            return inner.qualified(inner.qualifiers | q[kind])
        if kind == TYPE_TAG:
            return self.type(b, st)
        if kind == FUNC:
            return self.type(b, st)
        if kind == FUNC_PROTO:
            params = []
            variadic = False
            for i in range(vlen):
                p_name, p_type = _II.unpack_from(data, pos + 8 * i)
                if p_type == 0 and i == vlen - 1:
                    variadic = True
                    break
                params.append(drgn.TypeParameter(self._lazy(b, p_type), b.string(p_name) if p_name else None))
            return prog.function_type(self.type(b, st), params, variadic)
        if kind == FLOAT:
            if st not in (2, 4, 8, 10, 12, 16):
                raise BtfError(f"BTF of {b.name}: floating-point type {tid} has an impossible size {st}.")
            return prog.float_type(name or "double", st)
        raise BtfError(
            f"BTF of {b.name}: type {tid} is a {KIND_NAMES.get(kind, kind)}, which is not a type of data."
        )

    def _member(self, b: Btf, tid: int, bits: int) -> Callable[[], TypeOrObject]:
        """A structure member's type (an absent object: with its bit-field size, if any), made when first
        used; drgn's refusal of a nonsensical one becomes a :class:`BtfError`."""

        def member() -> drgn.Object:
            t = self.type(b, tid)
            try:
                return drgn.Object(self.prog, t, bit_field_size=bits or None)
            except (ValueError, OverflowError, TypeError) as e:
                raise BtfError(
                    f"BTF of {b.name}: a member of type {tid} is malformed ({e}); the BTF is corrupt."
                )

        return member

    def _enum(
        self, b: Btf, tid: int, name: Optional[str], vlen: int, signed: int, size: int, data: bytes, pos: int
    ) -> drgn.Type:
        kind = b.entry(tid)[0]
        values = []
        if kind == ENUM:
            for i in range(vlen):
                n_off, v = _Ii.unpack_from(data, pos + 8 * i)
                values.append((n_off, v if signed else v & 0xFFFFFFFF))
        else:
            for i in range(vlen):
                n_off, lo, hi = _III.unpack_from(data, pos + 12 * i)
                v = hi << 32 | lo
                if signed and v >> 63:
                    v -= 1 << 64
                values.append((n_off, v))
        is_signed = bool(signed) or any(v < 0 for _, v in values)
        compat = self.prog.int_type(_INT_NAMES.get((size, is_signed), "int"), size, is_signed)
        if not vlen:
            return self.prog.enum_type(name, None, None)  # incomplete enum
        return self.prog.enum_type(name, compat, [drgn.TypeEnumerator(b.string(n), v) for n, v in values])

    def _complete(self, name: Optional[str], kind: int) -> Optional[drgn.Type]:
        """The full definition of a forward-declared structure or union, if some blob has one."""
        if not name:
            return None
        for blob in [self.vmlinux] + self.modules:
            for tid in blob.find(name):
                if blob.owner(tid).entry(tid)[0] == kind:
                    return self.type(blob, tid)
        return None

    # -- types without a name ---------------------------------------------------------------------

    def find_anonymous_struct(self, members: Sequence[str]) -> List[Tuple[Btf, int]]:
        """Unnamed structures whose members are exactly ``members`` (in order), in every blob searched:
        how a variable declared ``static struct { ... } x;`` finds its type."""
        out = []
        want = list(members)
        for blob in self._blobs():
            for off in blob._all_name_offsets(want[0]) if want else ():
                for tid, word in blob.hits(off):
                    if word != 3 or blob.owner(tid) is not blob:
                        continue
                    kind, vlen, _kflag, name_off, _st = blob.entry(tid)
                    if kind != STRUCT or name_off or vlen != len(want):
                        continue
                    data, pos = blob.trailer(tid)
                    names = [blob.string(_U32.unpack_from(data, pos + 12 * i)[0]) for i in range(vlen)]
                    if names == want:
                        out.append((blob, tid))
        return out

    def find_arrays_of(self, blob: Btf, elem: int) -> List[Tuple[Btf, int]]:
        """Array types (of any length) whose element type is ``elem`` (a type of ``blob``)."""
        out = []
        for b in [blob] + [m for m in self.modules if m.base is blob]:
            for tid, word in b.hits(elem):
                if word == 3 and b.entry(tid)[0] == ARRAY:
                    out.append((b, tid))
        return out

    # -- drgn finder callbacks -------------------------------------------------------------------

    def find_type(
        self, prog: drgn.Program, kinds: drgn.TypeKindSet, name: str, filename: Optional[str]
    ) -> Optional[drgn.Type]:
        """drgn type finder: the named type of one of ``kinds`` (complete definitions first)."""
        fwd = None
        for blob in self._blobs():
            for tid in blob.find(name):
                owner = blob.owner(tid)
                kind, _vlen, kflag, _n, st = owner.entry(tid)
                if kind == FWD:
                    if (drgn.TypeKind.UNION if kflag else drgn.TypeKind.STRUCT) in kinds and fwd is None:
                        fwd = (blob, tid)
                    continue
                want = _DrgnKinds.get(kind)
                if want is None:
                    continue
                if kind == INT:
                    data, pos = owner.trailer(tid)
                    is_bool = bool(_U32.unpack_from(data, pos)[0] >> 24 & 4)
                    want = (drgn.TypeKind.BOOL,) if is_bool else (drgn.TypeKind.INT,)
                if any(k in kinds for k in want):
                    return self.type(blob, tid)
        if fwd is not None:
            return self.type(*fwd)
        return None

    def find_object(
        self, prog: drgn.Program, name: str, flags: drgn.FindObjectFlags, filename: Optional[str]
    ) -> Optional[drgn.Object]:
        """drgn object finder: enumerators, functions, and the variables BTF describes."""
        if flags & drgn.FindObjectFlags.CONSTANT:
            for blob in self._blobs():
                for tid, i in blob.enumerator(name):
                    t = self.type(blob, tid)
                    enumerators = t.enumerators or ()
                    return drgn.Object(prog, t, enumerators[i].value)
        want = []
        if flags & drgn.FindObjectFlags.FUNCTION:
            want.append(FUNC)
        if flags & drgn.FindObjectFlags.VARIABLE:
            want.append(VAR)
        if not want:
            return None
        for blob in self._blobs():
            for tid in blob.find(name):
                kind, _vlen, _kflag, _n, st = blob.owner(tid).entry(tid)
                if kind not in want:
                    continue
                try:
                    address = prog.symbol(name).address
                except LookupError:
                    continue
                return drgn.Object(prog, self.type(blob, st), address=address)
        return None


def register_btf(prog: drgn.Program, types: BtfTypes, first: bool = True) -> None:
    """Install ``types`` as ``prog``'s ``btf`` type and object finder: before the others when ``first``
    (no DWARF), after them otherwise (DWARF for vmlinux, BTF only for modules without it)."""
    prog.register_type_finder("btf", types.find_type, enable_index=0 if first else -1)
    # after drgn's "linux" finder (UTS_RELEASE, PAGE_SIZE, jiffies...) and any DWARF
    prog.register_object_finder("btf", types.find_object, enable_index=-1)
