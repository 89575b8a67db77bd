"""The target's own drop-reason table: value, name and subsystem of every ``enum skb_drop_reason``.

Drop-reason numbers change between kernels (``FULL_RING`` is 55 on 6.1.176, 71 on 6.12.117, 78 on 7.2.13), so
nothing here assumes a table: every name and number is read from the target, from these sources in
order of preference (the kernel side, with the commits that changed it, is in docs/kernel/counters.md):

1. ``subsys_table``: ``drop_reasons_by_subsys[value >> 16]->reasons[value & 0xffff]`` (6.4+);
2. ``string_table``: the ``const char * const drop_reasons[]`` array of net/core/skbuff.c (6.0-6.3
   exported; static but still in DWARF from 6.4);
3. ``enum``: the enumerators of ``enum skb_drop_reason`` (5.17+) and of the subsystems' own enums
   (``enum ovs_drop_reason``, ``enum mac80211_drop_reason``, ``enum qdisc_drop_reason``) from DWARF;
4. ``print_fmt``: the ``__print_symbolic(REC->reason, ...)`` map of the ``skb:kfree_skb`` event's
   ``print_fmt`` in memory (numbers substituted by ``TRACE_DEFINE_ENUM`` at boot).

Each reason records which source named it; values on which sources disagree (a different name, or a
value one source has and another lacks) are listed in :attr:`DropReasonTable.notes`.  Kernels without
drop reasons (before 5.17, e.g. 5.10) give a table with ``has_reasons == False`` and a note saying so.

Other modules print reason names through :func:`drop_reason_table` (cached per program) or
:func:`reason_label`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import drgn

from skbinspect.memory.cache import per_program

__all__ = [
    "SOURCES",
    "DropReason",
    "DropReasonTable",
    "drop_reason_table",
    "reason_label",
    "parse_print_symbolic",
    "TUNTAP_REASONS",
]

#: Name sources, in order of preference.
SOURCES = ("subsys_table", "string_table", "enum", "print_fmt")

#: The reasons tun and tap drop with, by name (their numbers are read from the target): Linux kernel
#: commits 4b4f052e2d89 ("net: tun: track dropped skb via kfree_skb_reason()") and 736f16de75f9 ("net:
#: tap: track dropped skb via kfree_skb_reason()") (in v5.18).
TUNTAP_REASONS = frozenset(
    {
        "SKB_CSUM",
        "SKB_GSO_SEG",
        "SKB_UCOPY_FAULT",
        "DEV_HDR",
        "FULL_RING",
        "DEV_READY",
        "NOMEM",
        "HDR_TRUNC",
        "TAP_FILTER",
        "TAP_TXFILTER",
    }
)
_QUEUE_RE = re.compile(r"RING|BACKLOG|QUEUE|QDISC")

_CORE_PREFIX = "SKB_DROP_REASON_"
_CACHE_KEY = "skbinspect.reasons.table"
#: Bounds on what a corrupt target can make us read.
MAX_SUBSYS = 64
MAX_REASONS_PER_SUBSYS = 4096
MAX_NAME = 128
#: Candidate per-subsystem enums, by subsystem name (the subsystem's own name is tried first).
_SUBSYS_ENUMS = {
    "mac80211_unusable": ("mac80211_drop_reason",),
    "mac80211_monitor": ("mac80211_drop_reason",),
    "openvswitch": ("ovs_drop_reason",),
    "qdisc": ("qdisc_drop_reason",),
}


@dataclass
class DropReason:
    """One drop reason of the target.

    :ivar value: full value (``subsystem << 16 | code``).
    :ivar name: without the ``SKB_DROP_REASON_`` prefix, e.g. ``"FULL_RING"``.
    :ivar subsystem: ``"core"``, ``"mac80211_unusable"``, ``"openvswitch"``, ``"qdisc"``, ... (lower case).
    :ivar source: where the name came from: one of :data:`SOURCES`.
    :ivar enum_name: the enumerator's full name, e.g. ``"SKB_DROP_REASON_FULL_RING"`` or
        ``"SKB_CONSUMED"`` (None if the enum does not name this value).
    :ivar sources: every source that has this value, in order of preference.
    :ivar conflicts: source -> the different name that source gives (empty when all agree).
    """

    value: int
    name: str
    subsystem: str
    source: str
    enum_name: Optional[str] = None
    sources: List[str] = field(default_factory=list)
    conflicts: Dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> int:
        return self.value & 0xFFFF

    @property
    def is_drop(self) -> bool:
        """False for the two core values that are not drops: ``SKB_NOT_DROPPED_YET`` and ``SKB_CONSUMED``
        (enumerators without the ``SKB_DROP_REASON_`` prefix; the tracepoint's map leaves them out)."""
        if self.subsystem != "core":
            return True
        if self.enum_name is not None:
            return self.enum_name.startswith(_CORE_PREFIX)
        return self.name not in ("NOT_DROPPED_YET", "CONSUMED")

    @property
    def tags(self) -> List[str]:
        """``"tun/tap"`` for the reasons tun/tap drop with, ``"queue"`` for ring/queue/backlog reasons."""
        t = []
        if self.subsystem == "core" and self.name in TUNTAP_REASONS:
            t.append("tun/tap")
        if _QUEUE_RE.search(self.name):
            t.append("queue")
        return t

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["code"] = self.code
        d["is_drop"] = self.is_drop
        d["tags"] = self.tags
        return d


@dataclass
class DropReasonTable:
    """The target's complete drop-reason table (see :func:`drop_reason_table`).

    :ivar reasons: every reason, sorted by value.
    :ivar has_reasons: False on kernels without drop reasons (before 5.17, e.g. 5.10).
    :ivar notes: disagreements between sources, and why something is missing.
    :ivar subsystems: subsystem id -> name, from ``enum skb_drop_reason_subsys`` (``{0: "core"}`` before 6.4).
    :ivar registered: names of the subsystems registered in ``drop_reasons_by_subsys`` (6.4+).
    :ivar sources_found: the sources that were available on this target.
    """

    reasons: List[DropReason]
    has_reasons: bool
    notes: List[str] = field(default_factory=list)
    subsystems: Dict[int, str] = field(default_factory=dict)
    registered: List[str] = field(default_factory=list)
    sources_found: List[str] = field(default_factory=list)
    subsys_shift: int = 16
    _by_value: Dict[int, DropReason] = field(default_factory=dict, repr=False, compare=False)
    _by_name: Dict[str, DropReason] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index()

    def _index(self) -> None:
        self._by_value = {r.value: r for r in self.reasons}
        self._by_name = {}
        for r in self.reasons:
            for key in (r.name, r.enum_name):
                if key:
                    self._by_name.setdefault(key.upper(), r)

    def name(self, value: int) -> Optional[str]:
        """The name of ``value`` (without prefix), or None if the target does not name it."""
        r = self._by_value.get(int(value))
        return r.name if r else None

    def lookup(self, key: Union[int, str]) -> Optional[DropReason]:
        """A reason by value (int, or a decimal / ``0x`` hex string) or by name (``FULL_RING``,
        ``SKB_DROP_REASON_FULL_RING``, ``full_ring``, ``SKB_CONSUMED``)."""
        if isinstance(key, int):
            return self._by_value.get(key)
        s = str(key).strip()
        if re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]+", s):
            return self._by_value.get(int(s, 0))
        u = s.upper()
        r = self._by_name.get(u)
        if r is None and u.startswith(_CORE_PREFIX):
            r = self._by_name.get(u[len(_CORE_PREFIX) :])
        return r

    def label(self, value: int) -> str:
        """A printable name for any value: the name, or ``subsystem:code`` / ``unknown(N)`` if unnamed."""
        n = self.name(value)
        if n is not None:
            return n
        if not self.has_reasons:
            return f"unknown({value})"
        sub = self.subsystems.get(value >> self.subsys_shift)
        if sub is not None and sub != "core":
            return f"{sub}:{value & ((1 << self.subsys_shift) - 1)}"
        return f"unknown({value})"

    def by_subsystem(self, subsystem: str) -> List[DropReason]:
        return [r for r in self.reasons if r.subsystem == subsystem]

    def to_json(self) -> Dict[str, Any]:
        return {
            "has_reasons": self.has_reasons,
            "subsystems": {str(k): v for k, v in sorted(self.subsystems.items())},
            "registered": self.registered,
            "sources_found": self.sources_found,
            "notes": self.notes,
            "reasons": [r.to_json() for r in self.reasons],
        }


# --- pure decoders ------------------------------------------------------------------------------------

_SYMBOLIC_ENTRY = re.compile(r'\{\s*([^,{}]+?)\s*,\s*"((?:[^"\\]|\\.)*)"\s*\}')


def parse_print_symbolic(print_fmt: str, field_name: str = "reason") -> Tuple[Dict[int, str], List[str]]:
    """Parse ``__print_symbolic(REC-><field_name>, { 2, "NOT_SPECIFIED" }, ...)`` in an event's print_fmt.

    :returns: (value -> name, entries whose value is not a number, e.g. an enum name the kernel did
        not substitute at boot).
    """
    m = re.search(r"__print_symbolic\(\s*REC->" + re.escape(field_name) + r"\s*,", print_fmt)
    if not m:
        return {}, []
    # The argument list ends at the parenthesis that closes __print_symbolic(.
    depth = 1
    i = m.end()
    in_str = False
    while i < len(print_fmt) and depth:
        c = print_fmt[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        i += 1
    body = print_fmt[m.end() : i - 1]
    out: Dict[int, str] = {}
    bad: List[str] = []
    for vm in _SYMBOLIC_ENTRY.finditer(body):
        v, name = vm.group(1), vm.group(2)
        try:
            out[int(v, 0)] = name
        except ValueError:
            bad.append(f"{v}={name}")
    return out, bad


def _strip_core(enum_name: str) -> str:
    if enum_name.startswith(_CORE_PREFIX):
        return enum_name[len(_CORE_PREFIX) :]
    if enum_name.startswith("SKB_"):
        return enum_name[4:]
    return enum_name


# --- reading the target -------------------------------------------------------------------------------


def _enum(prog: drgn.Program, name: str) -> Optional[drgn.Type]:
    try:
        t = prog.type(f"enum {name}")
    except LookupError:
        return None
    return t if t.enumerators is not None else None


def _read_ptrs(prog: drgn.Program, addr: int, n: int) -> List[int]:
    data = prog.read(addr, 8 * n)
    return list(struct.unpack(f"<{n}Q", data))


class _PageReader:
    """Reads NUL-terminated strings through a cache of whole pages: a table's strings sit together in
    .rodata, so a hundred names cost a few reads instead of a hundred."""

    PAGE = 4096

    def __init__(self, prog: drgn.Program) -> None:
        self.prog = prog
        self.pages: Dict[int, Optional[bytes]] = {}

    def _page(self, base: int) -> Optional[bytes]:
        if base not in self.pages:
            try:
                self.pages[base] = self.prog.read(base, self.PAGE)
            except drgn.FaultError:
                self.pages[base] = None
        return self.pages[base]

    def string(self, addr: int, max_size: int = MAX_NAME) -> str:
        out = b""
        a = addr
        while len(out) < max_size:
            base = a & ~(self.PAGE - 1)
            page = self._page(base)
            if page is None:
                # Not readable as a whole page (e.g. the end of a segment): byte-exact read.
                raw = self.prog.read_c_string(a, max_size=max_size - len(out))
                out += raw
                break
            chunk = page[a - base :]
            i = chunk.find(b"\0")
            if i >= 0:
                out += chunk[:i]
                break
            out += chunk
            a = base + self.PAGE
        return out[:max_size].decode("ascii", errors="replace")


def _read_string_array(
    prog: drgn.Program, base: int, n: int, what: str, notes: List[str], pages: Optional[_PageReader] = None
) -> Dict[int, str]:
    """Index -> string of a ``const char * const []`` array at ``base`` (NULL slots skipped)."""
    out: Dict[int, str] = {}
    try:
        ptrs = _read_ptrs(prog, base, n)
    except drgn.FaultError as e:
        notes.append(
            f"{what}: cannot read its {n} pointers at {base:#x} ({e}); names taken from other sources."
        )
        return out
    bad = []
    pages = pages or _PageReader(prog)
    for i, p in enumerate(ptrs):
        if not p:
            continue
        try:
            out[i] = pages.string(p)
        except drgn.FaultError:
            bad.append(i)
    if bad:
        notes.append(
            f"{what}: {len(bad)} name(s) unreadable (indexes {', '.join(map(str, bad[:10]))}"
            f"{', ...' if len(bad) > 10 else ''}); names taken from other sources."
        )
    return out


def _subsystems(prog: drgn.Program) -> Tuple[Dict[int, str], Optional[int]]:
    """Subsystem id -> lower-case name, and the shift (from SKB_DROP_REASON_SUBSYS_MASK), 6.4+."""
    # Linux kernel commit 071c0fc6fb91 ("net: extend drop reasons for multiple subsystems") (in v6.4):
    # enum skb_drop_reason_subsys, and SKB_DROP_REASON_SUBSYS_MASK among the core enumerators.
    subs: Dict[int, str] = {0: "core"}
    e = _enum(prog, "skb_drop_reason_subsys")
    shift = None
    core = _enum(prog, "skb_drop_reason")
    if core is not None:
        for en in core.enumerators:
            if en.name == "SKB_DROP_REASON_SUBSYS_MASK" and en.value > 0:
                shift = (en.value & -en.value).bit_length() - 1
    if e is not None:
        for en in e.enumerators:
            n = en.name
            if n.startswith("SKB_DROP_REASON_SUBSYS_"):
                n = n[len("SKB_DROP_REASON_SUBSYS_") :]
            if n == "NUM" or n.startswith("__"):
                continue
            if 0 <= en.value < MAX_SUBSYS:
                subs[en.value] = n.lower()
    return subs, shift


def _from_subsys_table(
    prog: drgn.Program, subs: Dict[int, str], shift: int, notes: List[str]
) -> Tuple[Optional[Dict[int, str]], List[int]]:
    """value -> name from drop_reasons_by_subsys (6.4+), and the registered subsystem ids."""
    # Linux kernel commit 071c0fc6fb91 ("net: extend drop reasons for multiple subsystems") (in v6.4):
    # const struct drop_reason_list { const char * const *reasons; size_t n_reasons; } __rcu
    # *drop_reasons_by_subsys[SKB_DROP_REASON_SUBSYS_NUM].
    try:
        arr = prog["drop_reasons_by_subsys"]
    except LookupError:
        return None, []
    t = arr.type_
    n = t.length if t.kind == drgn.TypeKind.ARRAY and t.length else 0
    n = min(n, MAX_SUBSYS)
    try:
        lists = _read_ptrs(prog, arr.address_, n)
        lt = prog.type("struct drop_reason_list")
        off_r = drgn.offsetof(lt, "reasons")
        off_n = drgn.offsetof(lt, "n_reasons")
    except (drgn.FaultError, LookupError) as e:
        notes.append(f"drop_reasons_by_subsys: unreadable ({e}).")
        return None, []
    out: Dict[int, str] = {}
    registered = []
    for sid, lp in enumerate(lists):
        if not lp:
            continue
        sname = subs.get(sid, f"subsys{sid}")
        try:
            reasons_p = prog.read_u64(lp + off_r)
            count = prog.read_u64(lp + off_n)
        except drgn.FaultError as e:
            notes.append(f"{sname}: its drop_reason_list at {lp:#x} is unreadable ({e}).")
            continue
        if count > MAX_REASONS_PER_SUBSYS or count > (1 << shift):
            notes.append(
                f"{sname}: drop_reason_list claims {count} reasons, which is implausible; "
                "the table is corrupt and was not read."
            )
            continue
        registered.append(sid)
        for code, name in _read_string_array(
            prog, reasons_p, count, f"{sname} reason strings", notes
        ).items():
            out[sid << shift | code] = name
    return out, registered


def _from_string_table(
    prog: drgn.Program, skip_addr: Optional[int], notes: List[str]
) -> Optional[Dict[int, str]]:
    """value -> name from ``drop_reasons[]`` (6.0-6.3; the same array as the core list in 6.4+)."""
    # Linux kernel commit ec43908dd556 ("net: skb: use auto-generation to convert skb drop reason to
    # string") (in v6.0) made the strings an array in net/core/skbuff.c; exported to 6.3, static (still
    # in DWARF) since Linux kernel commit 071c0fc6fb91 ("net: extend drop reasons for multiple
    # subsystems") (in v6.4).
    try:
        arr = prog["drop_reasons"]
    except LookupError:
        return None
    t = arr.type_
    if t.kind != drgn.TypeKind.ARRAY or not t.length or arr.address_ is None:
        return None
    if skip_addr is not None and arr.address_ == skip_addr:
        return None  # 6.4+: the core subsystem list, already read
    return _read_string_array(
        prog, arr.address_, min(t.length, MAX_REASONS_PER_SUBSYS), "drop_reasons[]", notes
    )


def _from_enums(
    prog: drgn.Program, subs: Dict[int, str], shift: Optional[int]
) -> Tuple[Dict[int, str], Dict[int, str], List[str]]:
    """value -> name and value -> full enumerator name, from the core enum and the subsystems' enums."""
    names: Dict[int, str] = {}
    full: Dict[int, str] = {}
    used: List[str] = []
    # Linux kernel commit c504e5c2f964 ("net: skb: introduce kfree_skb_reason()") (in v5.17).
    core = _enum(prog, "skb_drop_reason")
    if core is not None:
        used.append("skb_drop_reason")
        for en in core.enumerators:
            if en.name.startswith("__") or en.name == "SKB_DROP_REASON_SUBSYS_MASK":
                continue
            if shift is not None and en.value >> shift:
                continue
            names.setdefault(en.value, _strip_core(en.name))
            full.setdefault(en.value, en.name)
    if shift is None:
        return names, full, used
    for sid, sname in subs.items():
        if sid == 0:
            continue
        for ename in (f"{sname}_drop_reason",) + _SUBSYS_ENUMS.get(sname, ()):
            e = _enum(prog, ename)
            if e is None:
                continue
            hit = False
            for en in e.enumerators:
                if en.name.startswith("__") or en.value >> shift != sid or not en.value & ((1 << shift) - 1):
                    continue
                hit = True
                names.setdefault(en.value, en.name)
                full.setdefault(en.value, en.name)
            if hit and ename not in used:
                used.append(ename)
    return names, full, used


def _kfree_skb_print_fmt(prog: drgn.Program) -> Optional[str]:
    """The ``print_fmt`` of the skb:kfree_skb event in memory."""
    try:
        ev = prog["event_kfree_skb"]
    except LookupError:
        return None
    try:
        p = ev.print_fmt.value_()
        if not p:
            return None
        return _PageReader(prog).string(p, max_size=1 << 16)
    except (drgn.FaultError, LookupError, AttributeError):
        return None


def _kfree_skb_has_reason(prog: drgn.Program) -> Optional[bool]:
    try:
        t = prog.type("struct trace_event_raw_kfree_skb")
    except LookupError:
        return None
    return t.has_member("reason")


def _list_names(items: Iterable[str], limit: int = 12) -> str:
    items = list(items)
    s = ", ".join(items[:limit])
    return s + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _build(prog: drgn.Program) -> DropReasonTable:
    notes: List[str] = []
    subs, shift = _subsystems(prog)
    eff_shift = shift if shift is not None else 16
    found: List[str] = []
    per_source: Dict[str, Dict[int, str]] = {}

    registered: List[int] = []
    core_list_addr = None
    if shift is not None:
        st, registered = _from_subsys_table(prog, subs, shift, notes)
        if st is not None:
            per_source["subsys_table"] = st
            found.append("subsys_table")
            try:
                lp = prog["drop_reasons_by_subsys"][0].value_()
                if lp:
                    core_list_addr = prog.read_u64(
                        lp + drgn.offsetof(prog.type("struct drop_reason_list"), "reasons")
                    )
            except (LookupError, drgn.FaultError, IndexError):
                pass
    strings = _from_string_table(prog, core_list_addr, notes)
    if strings is not None:
        per_source["string_table"] = strings
        found.append("string_table")
    enum_names, enum_full, enums_used = _from_enums(prog, subs, shift)
    if enum_names:
        per_source["enum"] = enum_names
        found.append("enum")
    fmt = _kfree_skb_print_fmt(prog)
    fmt_map: Dict[int, str] = {}
    if fmt is not None:
        fmt_map, unparsed = parse_print_symbolic(fmt)
        if fmt_map:
            per_source["print_fmt"] = fmt_map
            found.append("print_fmt")
        if unparsed:
            notes.append(
                f"print_fmt of skb:kfree_skb: {len(unparsed)} entries were not turned into numbers at "
                f"boot and are ignored ({_list_names(unparsed, 5)})."
            )

    has_reasons = bool(per_source)
    if not has_reasons:
        why = []
        if _enum(prog, "skb_drop_reason") is None:
            why.append("it has no enum skb_drop_reason")
        if _kfree_skb_has_reason(prog) is False or (fmt is not None and "reason" not in fmt):
            why.append("its skb:kfree_skb tracepoint has no reason field")
        notes.insert(
            0,
            "this kernel records no drop reasons"
            + (f": {' and '.join(why)}" if why else "")
            + " (drop reasons arrived in Linux 5.17; tun/tap reasons in 5.18).",
        )
        return DropReasonTable([], False, notes, subs, [], found, eff_shift)

    values = sorted(set().union(*[set(m) for m in per_source.values()]))
    reasons: List[DropReason] = []
    for v in values:
        srcs = [s for s in SOURCES if v in per_source.get(s, {})]
        best = srcs[0]
        name = per_source[best][v]
        conflicts = {}
        for s in srcs[1:]:
            other = per_source[s][v]
            if other != name:
                conflicts[s] = other
        sid = v >> eff_shift
        reasons.append(
            DropReason(v, name, subs.get(sid, f"subsys{sid}"), best, enum_full.get(v), srcs, conflicts)
        )

    # --- notes: disagreements and gaps -------------------------------------------------------------
    for r in reasons:
        if r.conflicts:
            notes.append(
                f"{r.subsystem} {r.value}: {r.source} says {r.name}, "
                + ", ".join(f"{s} says {n}" for s, n in r.conflicts.items())
                + f"; shown as {r.name}."
            )
    string_src = next((s for s in ("subsys_table", "string_table") if s in per_source), None)
    if string_src and "enum" in per_source:
        for sid, sname in sorted(subs.items()):
            in_strings = {v for v in per_source[string_src] if v >> eff_shift == sid}
            in_enum = {v for v in enum_names if v >> eff_shift == sid}
            if not in_strings or not in_enum:
                continue
            only_enum = sorted(in_enum - in_strings)
            only_str = sorted(in_strings - in_enum)
            if only_enum:
                notes.append(
                    f"{sname}: {len(only_enum)} enumerator(s) without a string in the {string_src}: "
                    + _list_names(f"{enum_full[v]} ({v})" for v in only_enum)
                    + "."
                )
            if only_str:
                notes.append(
                    f"{sname}: {len(only_str)} string(s) in the {string_src} without an enumerator: "
                    + _list_names(f"{per_source[string_src][v]} ({v})" for v in only_str)
                    + "."
                )
    if fmt_map:
        core_drop = {
            r.value for r in reasons if r.subsystem == "core" and r.is_drop and r.source != "print_fmt"
        }
        missing = sorted(core_drop - set(fmt_map))
        extra = sorted(
            v
            for v in fmt_map
            if v not in core_drop
            and v >> eff_shift == 0
            and not (v in enum_full and not enum_full[v].startswith(_CORE_PREFIX))
        )
        if missing:
            notes.append(
                f"core: {len(missing)} reason(s) absent from the skb:kfree_skb print_fmt (the trace "
                "prints them as numbers): "
                + _list_names(f"{_first_name(per_source, v)} ({v})" for v in missing)
                + "."
            )
        if extra and len(per_source) > 1:
            notes.append(
                f"core: {len(extra)} value(s) only in the skb:kfree_skb print_fmt: "
                + _list_names(f"{fmt_map[v]} ({v})" for v in extra)
                + "."
            )
    if shift is not None and "subsys_table" in per_source:
        for sid, sname in sorted(subs.items()):
            if sid in registered:
                continue
            from_enum = [r for r in reasons if r.subsystem == sname]
            if from_enum:
                notes.append(
                    f"{sname}: not registered in drop_reasons_by_subsys; its {len(from_enum)} names come "
                    f"from enum {', enum '.join(e for e in enums_used if e != 'skb_drop_reason')}."
                )
            else:
                notes.append(
                    f"{sname}: not registered in drop_reasons_by_subsys (its module is not loaded, or "
                    "it keeps no string table): its reasons have no names here."
                )
    return DropReasonTable(
        reasons, True, notes, subs, [subs.get(s, f"subsys{s}") for s in registered], found, eff_shift
    )


def _first_name(per_source: Dict[str, Dict[int, str]], v: int) -> str:
    for s in SOURCES:
        if v in per_source.get(s, {}):
            return per_source[s][v]
    return str(v)


def drop_reason_table(prog: drgn.Program) -> DropReasonTable:
    """The target's drop-reason table, read once per program and cached in ``prog.cache``.

    Never raises for a kernel without reasons (``has_reasons`` is False) or for unreadable pieces
    (they are skipped and named in ``notes``).
    """
    return per_program(prog, _CACHE_KEY, _build)


def reason_label(prog: drgn.Program, value: int) -> str:
    """A printable name for drop reason ``value`` of ``prog`` (``FULL_RING``, ``openvswitch:3``, ``unknown(N)``)."""
    return drop_reason_table(prog).label(value)
