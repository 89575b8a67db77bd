"""The events' ``print_fmt`` parsed and evaluated as the kernel's trace output does (pure, no drgn here).

Format strings are data read from the target: they are parsed into closures, never ``eval``-ed."""

from __future__ import annotations

import re
import struct
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from skbinspect.ftrace.formats import _INT_FMT, EventField
from skbinspect.ftrace.ringbuf import _U64

__all__ = ["PrintFmt", "PrintFmtError"]

# ---- print_fmt ----------------------------------------------------------------------------------------


class PrintFmtError(Exception):
    """The print_fmt uses something :class:`PrintFmt` does not implement (the caller falls back)."""


_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<num>0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*)
      | (?P<char>'(?:[^'\\]|\\.)')
      | (?P<id>[A-Za-z_][A-Za-z_0-9]*)
      | (?P<op>->|<<|>>|<=|>=|==|!=|&&|\|\||[-+*/%&|^~!<>?:(),{}\[\].])
    )""",
    re.VERBOSE,
)

_C_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "r": "\r", "0": "\0", "a": "\a"}


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: _C_ESCAPES.get(m.group(1), m.group(1)), s)


def _tokenize(text: str) -> List[Tuple[str, str]]:
    toks = []
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise PrintFmtError(f"cannot tokenize print_fmt at {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        if kind is None:  # only whitespace left: excluded above
            break
        toks.append((kind, m.group(kind)))
        pos = m.end()
    return toks


_TYPE_WORDS = {
    "unsigned",
    "signed",
    "int",
    "long",
    "short",
    "char",
    "u8",
    "u16",
    "u32",
    "u64",
    "s8",
    "s16",
    "s32",
    "s64",
    "void",
    "const",
    "struct",
    "bool",
    "size_t",
    "ssize_t",
    "__u8",
    "__u16",
    "__u32",
    "__u64",
    "__s8",
    "__s16",
    "__s32",
    "__s64",
    "uintptr_t",
    "__le16",
    "__le32",
    "__be16",
    "__be32",
}


class _Parser:
    """Recursive-descent parser for the C expressions of a print_fmt's arguments (a safe subset: fields,
    numbers, strings, casts, arithmetic, comparisons, ternaries and the trace helper macros).  Produces
    closures ``f(rec) -> value``; nothing from the target is ever evaluated as code."""

    def __init__(
        self,
        toks: List[Tuple[str, str]],
        fields: Dict[str, EventField],
        constant: Optional[Callable[[str], Optional[int]]] = None,
    ) -> None:
        self.toks = toks
        self.i = 0
        self.fields = fields
        self.constant = constant

    def peek(self, k: int = 0) -> Tuple[str, str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def take(self, val: Optional[str] = None) -> Tuple[str, str]:
        t = self.peek()
        if val is not None and t[1] != val:
            raise PrintFmtError(f"expected {val!r}, got {t[1]!r}")
        self.i += 1
        return t

    def expr(self) -> Callable:
        cond = self.binary(0)
        if self.peek()[1] == "?":
            self.take("?")
            a = self.expr()
            self.take(":")
            b = self.expr()
            return lambda r, c=cond, a=a, b=b: a(r) if c(r) else b(r)
        return cond

    _PREC = [
        ["||"],
        ["&&"],
        ["|"],
        ["^"],
        ["&"],
        ["==", "!="],
        ["<", ">", "<=", ">="],
        ["<<", ">>"],
        ["+", "-"],
        ["*", "/", "%"],
    ]

    def binary(self, level: int) -> Callable:
        if level >= len(self._PREC):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in self._PREC[level]:
            op = self.take()[1]
            right = self.binary(level + 1)
            left = _binop(op, left, right)
        return left

    def unary(self) -> Callable:
        kind, val = self.peek()
        if kind == "op" and val in ("-", "!", "~", "+"):
            self.take()
            inner = self.unary()
            if val == "-":
                return lambda r, f=inner: -f(r)
            if val == "!":
                return lambda r, f=inner: int(not f(r))
            if val == "~":
                return lambda r, f=inner: ~f(r)
            return inner
        if kind == "op" and val == "(":
            # a cast?
            j = 1
            words = []
            while self.peek(j)[0] == "id" or self.peek(j)[1] == "*":
                words.append(self.peek(j)[1])
                j += 1
            if (
                words
                and self.peek(j)[1] == ")"
                and (words[0] in _TYPE_WORDS or words[-1] == "*" or words[-1].endswith("_t"))
            ):
                self.i += j + 1
                inner = self.unary()
                return _cast(words, inner)
            self.take("(")
            e = self.expr()
            self.take(")")
            return e
        return self.postfix()

    def postfix(self) -> Callable:
        kind, val = self.take()
        if kind == "num":
            digits = val.rstrip("uUlL")
            if digits.lower().startswith("0x"):
                v = int(digits, 16)
            elif len(digits) > 1 and digits.startswith("0"):
                v = int(digits, 8)
            else:
                v = int(digits)
            return lambda r, v=v: v
        if kind == "str":
            s = _unescape(val[1:-1])
            while self.peek()[0] == "str":  # adjacent literals
                s += _unescape(self.take()[1][1:-1])
            return lambda r, s=s: s
        if kind == "char":
            c = ord(_unescape(val[1:-1])[0])
            return lambda r, c=c: c
        if kind == "id":
            if val == "REC":
                self.take("->")
                name = self.take()[1]
                if name not in self.fields:
                    raise PrintFmtError(f"unknown field {name}")
                return lambda r, n=name: r.field(n)
            if self.peek()[1] == "(":
                return self.call(val)
            if self.constant is not None:
                const = self.constant(val)
                if const is not None:
                    return lambda r, c=const: c
            raise PrintFmtError(f"unknown identifier {val}")
        raise PrintFmtError(f"unexpected {val!r}")

    def args(self) -> List[Any]:
        self.take("(")
        out: List[Any] = []
        if self.peek()[1] == ")":
            self.take(")")
            return out
        while True:
            if self.peek()[1] == "{":
                out.append(self.brace_list())
            else:
                out.append(self.expr())
            if self.peek()[1] == ",":
                self.take(",")
                continue
            self.take(")")
            return out

    def brace_list(self) -> List[Any]:
        self.take("{")
        items = []
        while self.peek()[1] != "}":
            items.append(self.expr())
            if self.peek()[1] == ",":
                self.take(",")
        self.take("}")
        return items

    def call(self, name: str) -> Callable:
        args = self.args()
        if name in ("__get_str", "__get_rel_str"):
            if len(args) != 1:
                raise PrintFmtError(name)
            fname = self._field_name(args[0])
            return lambda r, n=fname: r.field(n) or ""
        if name in ("__get_dynamic_array", "__get_rel_dynamic_array"):
            fname = self._field_name(args[0])
            return lambda r, n=fname: r.field(n)
        if name in ("__get_dynamic_array_len", "__get_rel_dynamic_array_len"):
            fname = self._field_name(args[0])
            return lambda r, n=fname: len(r.field(n) or b"")
        if name == "__print_symbolic" or name == "__print_symbolic_u64":
            val = args[0]
            table = [(p[0](None), p[1](None)) for p in args[1:]]
            mapping = dict(reversed(table))  # the first match wins

            def sym(r: Any, val: Callable = val, mapping: Dict[int, str] = mapping) -> str:
                v = val(r)
                s = mapping.get(v)
                return s if s is not None else "0x%x" % v

            return sym
        if name == "__print_flags" or name == "__print_flags_u64":
            val, delim = args[0], args[1](None)
            table = [(p[0](None), p[1](None)) for p in args[2:]]

            def flg(r: Any, val: Callable = val, delim: str = delim, table: List = table) -> str:
                v = val(r)
                parts = []
                for mask, s in table:
                    if not v:
                        break
                    if (v & mask) == mask:
                        parts.append(s)
                        v &= ~mask
                if v:
                    parts.append("0x%x" % v)
                return delim.join(parts)

            return flg
        if name in ("__print_hex", "__print_hex_str"):
            buf, ln = args[0], args[1]
            sep = " " if name == "__print_hex" else ""

            def hx(r: Any, buf: Callable = buf, ln: Callable = ln, sep: str = sep) -> str:
                b = buf(r) or b""
                if isinstance(b, list):
                    b = bytes(x & 0xFF for x in b)
                return sep.join("%02x" % x for x in bytes(b)[: ln(r)])

            return hx
        if name == "__print_array":
            arr, cnt, esz = args

            def pa(r: Any, arr: Callable = arr, cnt: Callable = cnt, esz: Callable = esz) -> str:
                a = arr(r)
                n = cnt(r)
                s = esz(r)
                if isinstance(a, (bytes, bytearray)):
                    fmt = _INT_FMT.get(s)
                    if not fmt:
                        return "{}"
                    a = struct.unpack_from("<%d%s" % (min(n, len(a) // s), fmt), a)
                return "{" + ",".join("0x%x" % x for x in list(a)[:n]) + "}"

            return pa
        if name in ("is_signed_type",):
            return lambda r: 0
        raise PrintFmtError(f"unsupported helper {name}()")

    @staticmethod
    def _field_name(arg: Callable) -> str:
        """The field named by ``__get_str(name)`` (its argument was turned into a string literal)."""
        try:
            v = arg(None)
        except Exception:  # noqa: BLE001 - not a literal
            v = None
        if not isinstance(v, str):
            raise PrintFmtError("a field name was expected")
        return v


def _binop(op: str, a: Callable, b: Callable) -> Callable:
    ops: Dict[str, Callable[[Any, Any], Any]] = {
        "+": lambda x, y: x + y,
        "-": lambda x, y: x - y,
        "*": lambda x, y: x * y,
        "/": lambda x, y: int(x / y) if y else 0,
        "%": lambda x, y: x % y if y else 0,
        "<<": lambda x, y: x << y,
        ">>": lambda x, y: x >> y,
        "&": lambda x, y: x & y,
        "|": lambda x, y: x | y,
        "^": lambda x, y: x ^ y,
        "==": lambda x, y: int(x == y),
        "!=": lambda x, y: int(x != y),
        "<": lambda x, y: int(x < y),
        ">": lambda x, y: int(x > y),
        "<=": lambda x, y: int(x <= y),
        ">=": lambda x, y: int(x >= y),
        "&&": lambda x, y: int(bool(x) and bool(y)),
        "||": lambda x, y: int(bool(x) or bool(y)),
    }
    fn = ops[op]
    return lambda r, fn=fn, a=a, b=b: fn(a(r), b(r))


_CAST_BITS = {
    "char": 8,
    "short": 16,
    "int": 32,
    "long": 64,
    "u8": 8,
    "u16": 16,
    "u32": 32,
    "u64": 64,
    "s8": 8,
    "s16": 16,
    "s32": 32,
    "s64": 64,
    "__u8": 8,
    "__u16": 16,
    "__u32": 32,
    "__u64": 64,
    "bool": 0,
}


def _cast(words: List[str], inner: Callable) -> Callable:
    if words[-1] == "*":
        return inner
    signed = "unsigned" not in words and not any(w.startswith(("u", "__u")) for w in words)
    bits = 32
    for w in words:
        if w in _CAST_BITS:
            bits = _CAST_BITS[w]
    if words.count("long") == 2:
        bits = 64
    if bits == 0:
        return lambda r, f=inner: int(bool(f(r)))
    mask = (1 << bits) - 1

    def c(r: Any, f: Callable = inner) -> Any:
        v = f(r)
        if not isinstance(v, int):
            return v
        v &= mask
        if signed and v >> (bits - 1):
            v -= 1 << bits
        return v

    return c


_CONV_RE = re.compile(r"%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d+))?(hh|h|ll|l|z|L|j|t)?([diouxXcsp%])")


class _FmtRecord:
    """What a compiled print_fmt reads: the event's decoded fields."""

    __slots__ = ("values",)

    def __init__(self, values: Dict[str, Any]) -> None:
        self.values = values

    def field(self, name: str) -> Any:
        return self.values.get(name)


#: One compiled piece of a print_fmt: ``(literal, argument, fast formatter, conversion spec)``.
_Piece = Tuple[str, Optional[Callable[[Any], Any]], Optional[Callable[[Any], str]], Tuple[str, ...]]


class PrintFmt:
    """A compiled ``print_fmt``: ``render(fields, symbolize)`` gives the text after ``name: `` in the trace
    file.  Raises :class:`PrintFmtError` at compile time for constructs it does not implement.

    ``%p`` prints the raw address in 16 hex digits (what the kernel prints with ``no_hash_pointers``);
    ``%pS``/``%pB``/``%ps`` go through ``symbolize(address, with_offset)``.  Identifiers that are not
    fields (enum constants such as ``TCP_ESTABLISHED``) are resolved with ``constant(name)``.
    """

    def __init__(
        self,
        print_fmt: str,
        fields: Sequence[EventField],
        constant: Optional[Callable[[str], Optional[int]]] = None,
    ) -> None:
        toks = _tokenize(print_fmt)
        if not toks or toks[0][0] != "str":
            raise PrintFmtError("print_fmt does not start with a string")
        fmt = ""
        i = 0
        while i < len(toks) and toks[i][0] == "str":
            fmt += _unescape(toks[i][1][1:-1])
            i += 1
        self.fmt = fmt
        fmap = {f.name: f for f in fields}
        # Replace __get_str(name) style arguments: their argument is a bare field name.
        fixed = []
        j = i
        while j < len(toks):
            k, v = toks[j]
            if (
                k == "id"
                and v.startswith("__get_")
                and j + 3 < len(toks)
                and toks[j + 1][1] == "("
                and toks[j + 2][0] == "id"
                and toks[j + 3][1] == ")"
            ):
                fixed += [("id", v), ("op", "("), ("str", '"%s"' % toks[j + 2][1]), ("op", ")")]
                j += 4
                continue
            fixed.append((k, v))
            j += 1
        p = _Parser(fixed, fmap, constant)
        self.args: List[Callable] = []
        while p.peek()[0] != "eof":
            p.take(",")
            self.args.append(p.expr())
        self.pieces: List[Tuple[str, Optional[Tuple[str, ...]]]] = []
        pos = 0
        nargs = 0
        for m in _CONV_RE.finditer(fmt):
            lit = fmt[pos : m.start()]
            conv = m.group(5)
            if conv == "%":
                self.pieces.append((lit + "%", None))
                pos = m.end()
                continue
            if m.group(2) == "*" or m.group(3) == "*":
                raise PrintFmtError("'*' widths are not supported")
            ext = ""
            end = m.end()
            if conv == "p":
                e = re.match(r"[A-Za-z]\w*", fmt[end:])
                if e:
                    ext = e.group(0)
                    end += len(ext)
                if ext and ext[0] not in "SsBfFxK" and not ext.startswith(("I4", "i4", "I6", "i6", "M", "m")):
                    raise PrintFmtError(f"%p{ext} is not supported")
            self.pieces.append(
                (lit, (m.group(1) or "", m.group(2) or "", m.group(3) or "", conv, ext, m.group(4) or ""))
            )
            nargs += 1
            pos = end
        self.tail = fmt[pos:]
        if nargs != len(self.args):
            raise PrintFmtError(f"{nargs} conversions for {len(self.args)} arguments")

    def _compiled(self) -> List[_Piece]:
        """``(literal, argument, fast formatter or None, spec)`` per conversion (argument None: the
        literal alone): the common conversions of a plain field (``%p``, ``%u``, ``%d``, ``%x``, ``%s``)
        get a specialised formatter."""
        out: List[_Piece] = []
        ai = 0
        for lit, spec in self.pieces:
            if spec is None:
                out.append((lit, None, None, ()))
                continue
            flags, width, prec, conv, ext, length = spec
            fast: Optional[Callable] = None
            if not flags and not width and not prec:
                if conv == "p" and not ext:
                    fast = _fmt_p
                elif conv in "ud" and length in ("", "h", "hh", "l", "ll", "z"):
                    bits = _LEN_BITS[length]
                    fast = _fmt_int(bits, conv == "d")
                elif conv == "s":
                    fast = _fmt_s
            out.append((lit, self.args[ai], fast, spec))
            ai += 1
        return out

    def render(self, values: Dict[str, Any], symbolize: Optional[Callable[[int, bool], str]] = None) -> str:
        rec = _FmtRecord(values)
        comp = self.__dict__.get("_comp")
        if comp is None:
            comp = self._comp = self._compiled()
        out = []
        for lit, arg, fast, spec in comp:
            out.append(lit)
            if arg is None:
                continue
            v = arg(rec)
            if fast is not None:
                try:
                    out.append(fast(v))
                    continue
                except (TypeError, ValueError):
                    pass
            out.append(_format_one(spec, v, symbolize))
        out.append(self.tail)
        return "".join(out)


def _fmt_p(v: Any) -> str:
    return "%016x" % (v & _U64)


def _fmt_int(bits: int, signed: bool) -> Callable[[Any], str]:
    mask = (1 << bits) - 1
    top = 1 << (bits - 1)

    def f(v: Any) -> str:
        v &= mask
        if signed and v & top:
            v -= 1 << bits
        return "%d" % v

    return f


def _fmt_s(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise TypeError


def _format_addr(ext: str, b: bytes) -> str:
    """``%pI4``, ``%pI6``/``%pI6c`` and ``%pM``/``%pm`` of lib/vsprintf.c."""
    import ipaddress

    if ext[1:2] == "4" and len(b) >= 4:
        return ".".join(str(x) for x in b[:4])
    if ext[1:2] == "6" and len(b) >= 16:
        if ext[2:3] == "c":
            return ipaddress.IPv6Address(b[:16]).compressed
        return ":".join("%04x" % int.from_bytes(b[i : i + 2], "big") for i in range(0, 16, 2))
    if ext[:1] in ("M", "m") and len(b) >= 6:
        return (":" if ext[:1] == "M" else "").join("%02x" % x for x in b[:6])
    return b.hex()


_LEN_BITS = {"hh": 8, "h": 16, "": 32, "l": 64, "ll": 64, "z": 64, "j": 64, "t": 64, "L": 64}


def _format_one(spec: Tuple[str, ...], v: Any, symbolize: Optional[Callable[[int, bool], str]]) -> str:
    """One conversion as the kernel's vsnprintf() prints it."""
    flags, width, prec, conv, ext, length = spec
    if conv == "p" and ext[:1] in ("I", "i", "M", "m") and isinstance(v, (bytes, bytearray, list, tuple)):
        return _format_addr(ext, bytes(x & 0xFF for x in v) if isinstance(v, (list, tuple)) else bytes(v))
    if conv == "p":
        if v is None:
            v = 0
        if isinstance(v, (bytes, bytearray)):
            v = int.from_bytes(bytes(v)[:8].ljust(8, b"\0"), "little")
        v &= _U64
        if ext and ext[0] in "SsBfF" and symbolize is not None:
            s = symbolize(v, ext[0] in "SBF")
        else:
            s = "%016x" % v  # %p with no_hash_pointers (the decoder cannot hash like the kernel)
        return ("%" + flags.replace("0", "") + width + "s") % s if width else s
    if conv == "s":
        if v is None:
            v = "(null)"
        elif isinstance(v, (bytes, bytearray)):
            v = bytes(v).split(b"\0", 1)[0].decode("utf-8", "replace")
        elif not isinstance(v, str):
            v = str(v)
        return ("%" + flags.replace("0", "") + width + ("." + prec if prec else "") + "s") % v
    if conv == "c":
        return chr(v & 0xFF) if isinstance(v, int) else str(v)[:1]
    if not isinstance(v, int):
        try:
            v = int(v)
        except (TypeError, ValueError):
            return str(v)
    bits = _LEN_BITS.get(length, 32)
    v &= (1 << bits) - 1
    if conv in "di" and v >> (bits - 1):
        v -= 1 << bits
    pyconv = "d" if conv in "iu" else conv
    pyflags = flags if conv in "xXo" else flags.replace("#", "")
    return ("%" + pyflags + width + ("." + prec if prec else "") + pyconv) % v
