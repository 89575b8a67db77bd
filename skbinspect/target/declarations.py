"""The kernel globals skbinspect (and the drgn helpers it calls) read, declared with their types.

BTF describes types, functions and per-CPU variables, but no other global variable: without DWARF,
``prog["init_net"]`` needs the variable's type from somewhere.  This table gives it, in C type-name
syntax; the address comes from kallsyms.  A type that differs between kernels has one entry per
version range, each citing the commit that changed it.  See docs/kernel/btf.md.

Type syntax, beyond what ``prog.type()`` parses:

* ``{NAME}`` or ``{NAME+N}`` in an array length: the value of enumerator ``NAME`` (plus ``N``): array
  lengths come from the types, never from kallsyms' symbol sizes, which include padding;
  ``{NR_CPUS}`` is the number of bits in ``struct cpumask``.
* ``struct {a, b}``: the anonymous structure with exactly those members (a variable declared with an
  unnamed ``struct { ... }``); ``struct {a, b} [*]``: the array of it that BTF has (its length is BTF's).

Before a declared variable is returned its size is checked against its symbol: a module symbol's exact
size, or for vmlinux (whose kallsyms have no sizes) the room to the next symbol, which the declared size
must fit without leaving more than padding explains.  A mismatch is an error naming the symbol; a
misread is never silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import drgn

from skbinspect.errors import DebugInfoError
from skbinspect.target.btf import BtfTypes
from skbinspect.target.kallsyms import symbol_extent

__all__ = [
    "DECLARATIONS",
    "Declaration",
    "DeclarationError",
    "DeclaredGlobals",
    "register_declarations",
]

Version = Tuple[int, int]


@dataclass(frozen=True)
class Declaration:
    """A global variable's type.

    :ivar since: first kernel (major, minor) this entry applies to; None: any older.
    :ivar before: first kernel it no longer applies to; None: still current.
    :ivar commit: the kernel commit at ``since``/``before``, in drgn's citation form.
    :ivar padding: room after the object that is known not to belong to it (another object kallsyms
        does not list), beyond the alignment padding always allowed.
    """

    name: str
    type: str
    module: Optional[str] = None
    since: Optional[Version] = None
    before: Optional[Version] = None
    commit: str = ""
    padding: int = 0

    def applies(self, version: Version) -> bool:
        if version == (0, 0):
            return self.before is None
        return (self.since is None or version >= self.since) and (
            self.before is None or version < self.before
        )


_DM = "drop_monitor"

#: Every global read without DWARF.  Unversioned entries have had that type in every kernel since 5.10.
DECLARATIONS: Tuple[Declaration, ...] = (
    # CPUs and per-CPU data (drgn.helpers.linux.cpumask, percpu; counters/stats.py)
    Declaration("__per_cpu_offset", "unsigned long [{NR_CPUS}]"),
    Declaration("__cpu_possible_mask", "struct cpumask"),
    Declaration("__cpu_online_mask", "struct cpumask"),
    Declaration("__cpu_present_mask", "struct cpumask"),
    Declaration("__cpu_active_mask", "struct cpumask"),
    Declaration("nr_cpu_ids", "unsigned int"),
    Declaration("pcpu_base_addr", "void *"),
    Declaration("pcpu_unit_size", "int"),
    Declaration("pcpu_nr_slots", "int"),
    Declaration("pcpu_chunk_lists", "struct list_head *"),
    Declaration("pcpu_first_chunk", "struct pcpu_chunk *"),
    Declaration("pcpu_reserved_chunk", "struct pcpu_chunk *"),
    # what drgn itself looks up (address translation, module list, CPUs, crash state)
    Declaration("saved_command_line", "char *"),
    Declaration("page_offset_base", "unsigned long"),
    Declaration("jiffies_64", "u64"),
    Declaration("mem_section", "struct mem_section **"),
    Declaration("panic_cpu", "atomic_t"),
    Declaration("crashing_cpu", "int"),
    Declaration("crash_notes", "note_buf_t *"),
    # tasks, namespaces, modules, memory (drgn.helpers.linux.pid, net, module, slab)
    Declaration("init_task", "struct task_struct"),
    Declaration("init_pid_ns", "struct pid_namespace"),
    Declaration("init_net", "struct net"),
    Declaration("net_namespace_list", "struct list_head"),
    Declaration("modules", "struct list_head"),
    Declaration("slab_caches", "struct list_head"),
    Declaration("btf_modules", "struct list_head"),
    Declaration("linux_banner", "const char []"),
    Declaration("min_low_pfn", "unsigned long"),
    Declaration("max_low_pfn", "unsigned long"),
    Declaration("prb", "struct printk_ringbuffer *"),
    Declaration(
        "task_state_array",
        "const char *const [9]",
        since=(4, 14),
        commit='Linux kernel commit 06eb61844d84 ("sched/debug: Add explicit TASK_IDLE printing") (in v4.14)',
    ),
    # the clock (drgn.helpers.linux.timekeeping)
    Declaration(
        "tk_core",
        "struct {seq, timekeeper}",
        before=(6, 17),
        commit='Linux kernel commit 22c62b9a84b8 ("timekeeping: Introduce auxiliary timekeepers") (in v6.17)',
    ),
    Declaration(
        "timekeeper_data",
        "struct tk_data [{TIMEKEEPERS_MAX}]",
        since=(6, 17),
        commit='Linux kernel commit 22c62b9a84b8 ("timekeeping: Introduce auxiliary timekeepers") (in v6.17)',
    ),
    # the scheduler clock, for the dump's time on the trace clock (report/correlate.py _dump_time):
    # kernel/sched/clock.c DEFINE_STATIC_KEY_FALSE(__sched_clock_stable), u64 __sched_clock_offset
    Declaration("__sched_clock_stable", "struct static_key_false"),
    Declaration("__sched_clock_offset", "u64"),
    # ftrace (ftrace/reader.py)
    Declaration("ftrace_trace_arrays", "struct list_head"),
    Declaration("ftrace_events", "struct list_head"),
    Declaration("ftrace_common_fields", "struct list_head"),
    Declaration("savedcmd", "struct saved_cmdlines_buffer *"),
    Declaration("trace_clocks", "struct {func, name, in_ns} [*]"),
    Declaration("event_kfree_skb", "struct trace_event_call"),
    # drop reasons (counters/reasons.py)
    # the string table has an entry for SKB_DROP_REASON_MAX too (DEFINE_DROP_REASON ends with FNe(MAX))
    Declaration("drop_reasons", "const char *const [{SKB_DROP_REASON_MAX+1}]"),
    Declaration(
        "drop_reasons_by_subsys",
        "const struct drop_reason_list *[{SKB_DROP_REASON_SUBSYS_NUM}]",
        since=(6, 4),
        commit='Linux kernel commit 071c0fc6fb91 ("net: extend drop reasons for multiple subsystems") (in v6.4)',
    ),
    # module file operations that identify queue holders (tuntap/devices.py)
    Declaration("tun_fops", "const struct file_operations", module="tun"),
    Declaration("tap_fops", "const struct file_operations", module="tap"),
    Declaration("vhost_net_fops", "const struct file_operations", module="vhost_net"),
    # drop_monitor's state (counters/stats.py); dm_cpu_data and dm_hw_cpu_data are per-CPU: in BTF
    Declaration("trace_state", "int", module=_DM),
    Declaration("net_dm_alert_mode", "enum net_dm_alert_mode", module=_DM),
    Declaration("monitor_hw", "bool", module=_DM),
    Declaration("net_dm_trunc_len", "u32", module=_DM),
    Declaration("net_dm_queue_len", "u32", module=_DM),
)

#: Room after a vmlinux object that is not taken as a sign of a wrong declaration: a page, the largest
#: alignment of kernel data.  Real kernels leave gaps of up to 2 KiB after small objects that no symbol
#: covers (7.2: 2016 bytes after the 32 of drop_reasons_by_subsys), so a declaration smaller than its
#: object by less than a page cannot be told from padding; the lab test compares every declaration
#: with DWARF (tests/vmcores/test_btf.py).
ALIGNMENT_PADDING = 4096

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\s*\+\s*([0-9]+))?\}")
_ANON = re.compile(r"^struct\s*\{([^}]*)\}\s*(\[\*\])?$")


class DeclarationError(DebugInfoError):
    """A declared global does not fit what the kernel has (its symbol), or its declaration is malformed."""


class Unresolved(LookupError):
    """A declaration names a type or constant that this target's types lack (e.g. a module without BTF):
    the variable is then not found, as when DWARF lacks it."""


class DeclaredGlobals:
    """An object finder for :data:`DECLARATIONS`: type from BTF (or DWARF), address from kallsyms."""

    def __init__(
        self,
        prog: drgn.Program,
        btf: Optional[BtfTypes],
        version: Version,
        declarations: Sequence[Declaration] = DECLARATIONS,
    ) -> None:
        self.prog = prog
        self.btf = btf
        self.version = version
        self.by_name: Dict[str, Declaration] = {}
        for d in declarations:
            if d.applies(version):
                self.by_name.setdefault(d.name, d)
        self._objects: Dict[str, drgn.Object] = {}

    # -- types -----------------------------------------------------------------------------------

    def _constant(self, name: str) -> int:
        if name == "NR_CPUS":
            return 8 * drgn.sizeof(self.prog.type("struct cpumask"))
        try:
            return int(self.prog.constant(name).value_())
        except LookupError:
            raise Unresolved(f"the constant {name} is not in the types")

    def type_of(self, decl: Declaration) -> drgn.Type:
        """The drgn type of ``decl``.

        :raises Unresolved: a type or constant it names is not in the types.
        :raises DeclarationError: the declaration is malformed, or ambiguous in this BTF.
        """
        spec = _PLACEHOLDER.sub(lambda m: str(self._constant(m.group(1)) + int(m.group(2) or 0)), decl.type)
        m = _ANON.match(spec)
        if m:
            return self._anonymous(decl, [x.strip() for x in m.group(1).split(",")], bool(m.group(2)))
        try:
            return self.prog.type(spec)
        except LookupError as e:
            raise Unresolved(str(e))
        except (SyntaxError, ValueError) as e:
            raise DeclarationError(f"the declared type of {decl.name}, {spec}, cannot be built: {e}.")

    def _anonymous(self, decl: Declaration, members: List[str], array: bool) -> drgn.Type:
        what = f"struct {{{', '.join(members)}}}"
        if self.btf is None:
            raise Unresolved(f"{what} is anonymous: only BTF can provide it")
        found = self.btf.find_anonymous_struct(members)
        if not found:
            raise Unresolved(f"{what} is not in the BTF")
        if len(found) > 1:
            raise DeclarationError(
                f"the type of {decl.name}, {what}, is ambiguous in the BTF ({len(found)} candidates)."
            )
        blob, tid = found[0]
        if not array:
            return self.btf.type(blob, tid)
        arrays = self.btf.find_arrays_of(blob, tid)
        if not arrays:
            raise Unresolved(f"no array of {what} is in the BTF")
        if len(arrays) > 1:
            raise DeclarationError(
                f"the type of {decl.name}, an array of {what}, is ambiguous in the BTF ({len(arrays)} lengths)."
            )
        return self.btf.type(*arrays[0])

    # -- checks ----------------------------------------------------------------------------------

    @staticmethod
    def _size(t: drgn.Type) -> Tuple[int, bool]:
        """Bytes of ``t``, and whether that is all of it (an array of unknown length: one element)."""
        u = t.unaliased()
        if u.kind == drgn.TypeKind.ARRAY and u.length is None:
            return drgn.sizeof(u.type), False
        return drgn.sizeof(t), True

    def check(self, decl: Declaration, t: drgn.Type, symbol: drgn.Symbol) -> None:
        """Raise :class:`DeclarationError` unless ``t`` fits ``symbol``.

        A module's kallsyms come from its ELF symbol table, whose sizes are exact: they must equal the
        declared size.  vmlinux's kallsyms have no sizes: the declared size must fit the room to the next
        symbol, and leave no more of it than padding explains."""
        size, whole = self._size(t)
        where = f"at {symbol.address:#x}"
        if decl.module is not None:
            if symbol.size and (size != symbol.size if whole else symbol.size % size):
                raise DeclarationError(
                    f"the declared type of {decl.name}, {t.type_name()}, is {size} bytes, but the symbol in "
                    f"module {decl.module} ({where}) is {symbol.size} bytes: the declaration does not match "
                    "this kernel, and reading it would be wrong."
                )
            return
        extent = symbol_extent(self.prog, symbol.address)
        if extent is None:
            return
        where += ", before the next symbol"
        if size > extent:
            raise DeclarationError(
                f"the declared type of {decl.name}, {t.type_name()}, is {size} bytes, but the kernel has only "
                f"{extent} bytes for it ({where}): the declaration does not match this kernel, and reading "
                "it would be wrong."
            )
        if whole and extent - size >= ALIGNMENT_PADDING + decl.padding:
            raise DeclarationError(
                f"the declared type of {decl.name}, {t.type_name()}, is {size} bytes, but the kernel has "
                f"{extent} bytes for it ({where}), more than padding explains: the declaration does not "
                "match this kernel, and reading it would be wrong."
            )

    def gap(self, name: str) -> Optional[Tuple[int, int]]:
        """``(declared size, room before the next symbol)`` of a declared variable, for tests."""
        obj = self.object(name)
        if obj is None or obj.address_ is None:
            return None
        extent = symbol_extent(self.prog, obj.address_)
        return self._size(obj.type_)[0], -1 if extent is None else extent

    # -- the finder ------------------------------------------------------------------------------

    def object(self, name: str) -> Optional[drgn.Object]:
        """The declared variable ``name`` (checked), or None if it is not declared for this kernel, has
        no symbol, or its types are missing.

        :raises DeclarationError: the declaration does not fit the kernel's symbol.
        """
        obj = self._objects.get(name)
        if obj is not None:
            return obj
        decl = self.by_name.get(name)
        if decl is None:
            return None
        try:
            symbol = self.prog.symbol(name)
            t = self.type_of(decl)
        except LookupError:  # no such symbol, or Unresolved
            return None
        self.check(decl, t, symbol)
        obj = drgn.Object(self.prog, t, address=symbol.address)
        self._objects[name] = obj
        return obj

    def find_object(
        self, prog: drgn.Program, name: str, flags: drgn.FindObjectFlags, filename: Optional[str]
    ) -> Optional[drgn.Object]:
        if not flags & drgn.FindObjectFlags.VARIABLE:
            return None
        return self.object(name)

    def verify(self) -> List[str]:
        """Check every declaration whose symbol and types exist; return the errors."""
        errors = []
        for name in sorted(self.by_name):
            try:
                self.object(name)
            except DeclarationError as e:
                errors.append(str(e))
        return errors


def register_declarations(prog: drgn.Program, globals_: DeclaredGlobals) -> None:
    """Install ``globals_`` as ``prog``'s ``declared`` object finder, after all others."""
    prog.register_object_finder("declared", globals_.find_object, enable_index=-1)
