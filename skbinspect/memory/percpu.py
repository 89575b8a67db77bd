"""Whether the per-CPU offsets of a target can be trusted.

``per_cpu_ptr(p, cpu)`` is ``p + __per_cpu_offset[cpu]``.  A damaged ``__per_cpu_offset`` (zeroed,
overwritten) does not fault: it points every per-CPU read somewhere else, often at memory that reads as
zeros, and a counter would be shown as 0 as if it had been read.  The percpu allocator keeps what the
offsets must be: ``setup_per_cpu_areas()`` (arch/x86/kernel/setup_percpu.c, and mm/percpu.c for the
generic version) sets ``__per_cpu_offset[cpu] = pcpu_base_addr - __per_cpu_start +
pcpu_unit_offsets[cpu]``, unchanged from 5.10 to 7.x.  An offset that disagrees, or cannot be read, is
not used: the CPU's per-CPU values are marked unread with the reason.
"""

from __future__ import annotations

from typing import Dict, List

import drgn

from skbinspect.memory.cache import per_program
from skbinspect.memory.faults import READ_FAULTS
from skbinspect.memory.problems import note_problem

__all__ = ["cpus_in_mask", "online_cpus", "percpu_offset_problems", "possible_cpus"]

_MASK = 0xFFFFFFFFFFFFFFFF


def percpu_offset_problems(prog: drgn.Program, cpus: List[int]) -> Dict[int, str]:
    """CPU -> why its ``__per_cpu_offset`` entry cannot be trusted, for the CPUs of ``cpus`` whose
    entry is wrong or unreadable (empty when all are fine, or when nothing can be checked: a !SMP
    kernel has no offsets).  Cached per program."""
    cached = per_program(prog, "skbinspect.percpu.offset_problems", lambda p: _check(p, cpus))
    return {cpu: why for cpu, why in cached.items() if cpu in cpus}


def _check(prog: drgn.Program, cpus: List[int]) -> Dict[int, str]:
    if not cpus:
        return {}
    try:
        pco = prog["__per_cpu_offset"]
    except LookupError:
        return {}  # !SMP: per-CPU pointers are plain pointers
    n = max(cpus) + 1
    try:
        raw = prog.read(pco.address_, 8 * n)
    except READ_FAULTS as e:
        return {cpu: f"__per_cpu_offset unreadable ({e})" for cpu in cpus}
    offsets = {cpu: int.from_bytes(raw[8 * cpu : 8 * cpu + 8], "little") for cpu in cpus}
    try:
        base = prog["pcpu_base_addr"].value_()
        try:
            start = prog.symbol("__per_cpu_start").address
        except LookupError:
            start = 0
        units = prog.read(prog["pcpu_unit_offsets"].value_(), 8 * n)
    except (*READ_FAULTS, LookupError):
        units = None
    out: Dict[int, str] = {}
    if units is not None:
        for cpu in cpus:
            want = (base - start + int.from_bytes(units[8 * cpu : 8 * cpu + 8], "little")) & _MASK
            if offsets[cpu] != want:
                out[cpu] = (
                    f"__per_cpu_offset[{cpu}] is {offsets[cpu]:#x} but the percpu allocator placed CPU {cpu} "
                    f"at offset {want:#x}: damaged, its per-CPU values not read"
                )
        return out
    # Without the allocator's state: each CPU has its own unit, so the offsets of two CPUs never match.
    if len(cpus) > 1:
        seen: Dict[int, int] = {}
        for cpu in cpus:
            other = seen.setdefault(offsets[cpu], cpu)
            if other != cpu:
                for c in (other, cpu):
                    out[c] = (
                        f"__per_cpu_offset[{c}] is {offsets[c]:#x}, the same as another CPU's: damaged, "
                        "its per-CPU values not read"
                    )
    return out


def cpus_in_mask(prog: drgn.Program, name: str) -> List[int]:
    """The CPUs set in the cpumask ``name`` (``__cpu_possible_mask``, ``__cpu_online_mask``), as drgn's
    ``for_each_cpu()``, bounded: drgn reads ``nr_cpu_ids`` bits, and a damaged ``nr_cpu_ids`` (4 billion)
    would make it read and test bits for hours.  Here the mask is read once, at most its own size
    (NR_CPUS bits); an absurd ``nr_cpu_ids`` is said and the whole mask used.  Cached per program."""
    return list(per_program(prog, ("skbinspect.percpu.mask", name), lambda p: _read_mask(p, name)))


def _read_mask(prog: drgn.Program, name: str) -> List[int]:
    mask = prog[name]
    size = drgn.sizeof(mask.type_)
    nr_cpus = 8 * size
    try:
        nr = int(prog["nr_cpu_ids"].value_())
    except KeyError:
        nr = 1
    if not 0 < nr <= nr_cpus:
        note_problem(
            prog, f"nr_cpu_ids is {nr}, impossible with NR_CPUS {nr_cpus}: damaged; every CPU of {name} used"
        )
        nr = nr_cpus
    try:
        bits = int.from_bytes(prog.read(mask.address_, size), "little") & ((1 << nr) - 1)
    except READ_FAULTS as e:
        note_problem(prog, f"{name} unreadable ({e}): no per-CPU value read")
        bits = 0
    return [i for i in range(nr) if bits >> i & 1] if bits else []


def possible_cpus(prog: drgn.Program) -> List[int]:
    """``for_each_possible_cpu()``, bounded (see :func:`cpus_in_mask`)."""
    try:
        return cpus_in_mask(prog, "__cpu_possible_mask")
    except KeyError:  # before 4.5: a pointer, cpu_possible_mask
        from drgn.helpers.linux.cpumask import for_each_possible_cpu

        return list(for_each_possible_cpu(prog))


def online_cpus(prog: drgn.Program) -> List[int]:
    """``for_each_online_cpu()``, bounded (see :func:`cpus_in_mask`)."""
    try:
        return cpus_in_mask(prog, "__cpu_online_mask")
    except KeyError:
        from drgn.helpers.linux.cpumask import for_each_online_cpu

        return list(for_each_online_cpu(prog))
