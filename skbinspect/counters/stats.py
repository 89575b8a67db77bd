"""Per-CPU drop statistics: ``softnet_data``, per-device drop counters, and drop_monitor's per-CPU state.

Everything is read in the form of the target's version (the structs, members and version differences
are in docs/kernel/counters.md); struct layouts come from the target's DWARF
(:func:`~skbinspect.memory.layout.struct_layout`) and each per-CPU structure is read with one
``prog.read()`` per CPU.

* :func:`softnet_stats`: ``struct softnet_data`` per CPU, as ``/proc/net/softnet_stat`` prints it.
  The dropped counter changed type twice: ``unsigned int dropped`` (to 6.9), ``atomic_t dropped``
  (6.10), ``struct numa_drop_counters drop_counters`` summed (6.18).
* :func:`device_stats`: per device, per CPU, the counters ``dev_get_stats()`` adds up for the drop
  fields: ``core_stats`` (5.18+; allocated lazily, NULL means zero) or the ``net_device`` atomics (to
  5.17), plus the driver's own counters for the drivers whose ``ndo_get_stats64`` is understood (tun,
  macvlan/macvtap, ipvlan/ipvtap, veth, loopback, and the core's ``dev->stats`` / tstats / dstats
  paths).  Totals equal what ``ip -s -s link`` shows.
* :func:`drop_monitor_state`: the drop_monitor module's mode and per-CPU state, if it is loaded.

Every counter read is of an unsigned type on 5.10 to 7.x, and read as declared.  Bad pointers give a
per-row note and zeros, never an exception.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Literal, Optional, Sequence, Tuple

import drgn

from skbinspect.memory import walk
from skbinspect.memory.cache import forget, per_program
from skbinspect.memory.faults import READ_FAULTS
from skbinspect.memory.layout import StructLayout, struct_layout
from skbinspect.memory.percpu import online_cpus, percpu_offset_problems, possible_cpus
from skbinspect.memory.problems import note_bug
from skbinspect.target.opener import kernel_version

__all__ = [
    "TOTAL_FIELDS",
    "SoftnetCpu",
    "SoftnetStats",
    "CounterRow",
    "DeviceStats",
    "DropMonitorCpu",
    "DropMonitorState",
    "DropStats",
    "softnet_stats",
    "device_stats",
    "device_stats_one",
    "drop_monitor_state",
    "drop_stats",
    "read_percpu_counters",
    "decode_alert_msg",
    "cpu_lists",
    "percpu_ranges",
    "percpu_pointer_ok",
]

#: The drop-related fields of ``struct rtnl_link_stats64`` that device totals cover.
TOTAL_FIELDS = ("rx_dropped", "tx_dropped", "rx_nohandler", "rx_otherhost_dropped", "rx_errors")
#: Bounds on loops over kernel lists and arrays (a corrupt target must not make us loop forever).
MAX_DEVICES = 1_000_000
MAX_NETNS = 100_000
MAX_QUEUES = 4096
MAX_ALERT_ENTRIES = 4096
# drop_monitor's trace_state values are #defines (TRACE_OFF 0, TRACE_ON 1 in net/core/drop_monitor.c,
# 5.10 to 7.x): not in DWARF.
_DM_TRACE_ON = 1


# --- pure decoders ------------------------------------------------------------------------------------


def decode_alert_msg(
    data: bytes, little_endian: bool = True, max_entries: int = MAX_ALERT_ENTRIES
) -> Tuple[List[Tuple[int, int]], Optional[str]]:
    """Decode ``struct net_dm_alert_msg { u32 entries; struct net_dm_drop_point { u8 pc[8]; u32 count; }
    points[]; }`` (include/uapi/linux/net_dropmon.h, unchanged 5.10-7.x).

    :returns: ([(pc, count)], a note if the message is implausible or cut short).
    """
    order: Literal["little", "big"] = "little" if little_endian else "big"
    if len(data) < 4:
        return [], "alert message cut short"
    n = int.from_bytes(data[:4], order)
    note = None
    if n > max_entries:
        return [], f"alert message claims {n} entries (more than {max_entries}): corrupt"
    avail = (len(data) - 4) // 12
    if n > avail:
        note = f"alert message claims {n} entries, {avail} readable"
        n = avail
    points = []
    for i in range(n):
        off = 4 + 12 * i
        pc = int.from_bytes(data[off : off + 8], order)
        count = int.from_bytes(data[off + 8 : off + 12], order)
        points.append((pc, count))
    return points, note


# --- CPUs ---------------------------------------------------------------------------------------------


#: ``prog.cache`` keys (see :func:`~skbinspect.memory.cache.per_program`).
_CPUS_KEY = "skbinspect.stats.cpus"
_PERCPU_RANGES_KEY = "skbinspect.stats.percpu_ranges"
_SYMBOLS_KEY = "skbinspect.stats.symbols"

CpuLists = Tuple[List[int], List[int], Dict[int, int]]


def cpu_lists(prog: drgn.Program) -> CpuLists:
    """(possible CPUs, online CPUs, cpu -> ``__per_cpu_offset[cpu]``), cached per program."""
    return per_program(prog, _CPUS_KEY, _read_cpu_lists)


def _read_cpu_lists(prog: drgn.Program) -> CpuLists:
    possible = possible_cpus(prog)  # bounded: a damaged nr_cpu_ids does not make it read for hours
    online = online_cpus(prog)
    offsets: Dict[int, int] = {}
    try:
        pco = prog["__per_cpu_offset"]
        n = max(possible) + 1 if possible else 0
        data = prog.read(pco.address_, 8 * n)
        for cpu in possible:
            offsets[cpu] = int.from_bytes(data[8 * cpu : 8 * cpu + 8], "little")
    except (LookupError, drgn.FaultError):
        # !SMP kernels have no __per_cpu_offset: per-CPU pointers are plain pointers.
        offsets = {cpu: 0 for cpu in possible}
    return possible, online, offsets


MAX_PCPU_CHUNKS = 100_000


def percpu_ranges(prog: drgn.Program) -> Optional[List[Tuple[int, int]]]:
    """The ranges ``[lo, hi)`` that valid ``__percpu`` pointer values fall in: one per percpu chunk
    (mm/percpu.c: ``per_cpu_ptr(p, cpu) = p + __per_cpu_offset[cpu]`` lies in the chunk's unit for
    that CPU, so ``p + pcpu_base_addr - __per_cpu_start`` lies in ``[chunk->base_addr, +pcpu_unit_size)``).
    None if the allocator's state cannot be read (then pointers are not checked).  Cached per program."""
    return per_program(prog, _PERCPU_RANGES_KEY, _read_percpu_ranges)


def _read_percpu_ranges(prog: drgn.Program) -> Optional[List[Tuple[int, int]]]:
    ranges: Optional[List[Tuple[int, int]]] = None
    try:
        base = prog["pcpu_base_addr"].value_()
        unit = prog["pcpu_unit_size"].value_()
        try:
            start = prog.symbol("__per_cpu_start").address
        except LookupError:
            start = 0
        # Linux kernel commit 9d7de2aa8b41 ("x86/percpu/64: Use relative percpu offsets") (in v6.15):
        # before it, x86-64's percpu section is 0-based (__per_cpu_start == 0, delta == pcpu_base_addr).
        delta = base - start
        ct = prog.type("struct pcpu_chunk")
        off_list = drgn.offsetof(ct, "list")
        off_base = drgn.offsetof(ct, "base_addr")
        nslots = prog["pcpu_nr_slots"].value_()
        # Linux kernel commit 3c7be18ac9a0 ("mm: memcg/percpu: account percpu memory to memory cgroups")
        # (in v5.9) keeps one list array per enum pcpu_chunk_type, until Linux kernel commit faf65dde844a
        # ("percpu: rework memcg accounting") (in v5.14).
        ntypes = 1
        for e in (
            prog.type("enum pcpu_chunk_type").enumerators if _has_type(prog, "enum pcpu_chunk_type") else ()
        ):
            if e.name == "PCPU_NR_CHUNK_TYPES":
                ntypes = e.value
        lists = prog["pcpu_chunk_lists"].value_()
        chunks = set()
        for name in ("pcpu_first_chunk", "pcpu_reserved_chunk"):
            try:
                c = prog[name].value_()
                if c:
                    chunks.add(c)
            except LookupError:
                pass
        seen = 0
        for i in range(min(nslots * ntypes, 1024)):
            head = lists + 16 * i
            pos = prog.read_u64(head)
            while pos != head and seen < MAX_PCPU_CHUNKS:
                chunks.add(pos - off_list)
                pos = prog.read_u64(pos)
                seen += 1
        # The first unit, [pcpu_base_addr, +pcpu_unit_size), holds the static per-CPU variables (kernel
        # and modules' reserved area) before the first chunk's dynamic part.
        ranges = [(start, start + unit)]
        for c in chunks:
            b = prog.read_u64(c + off_base)
            ranges.append(((b - delta) & 0xFFFFFFFFFFFFFFFF, (b - delta + unit) & 0xFFFFFFFFFFFFFFFF))
        ranges.sort()
    except (LookupError, *READ_FAULTS):
        ranges = None
    return ranges


def _has_type(prog: drgn.Program, name: str) -> bool:
    try:
        prog.type(name)
        return True
    except LookupError:
        return False


def percpu_pointer_ok(prog: drgn.Program, ptr: int, size: int) -> Optional[bool]:
    """Whether ``ptr .. ptr+size`` is inside a percpu chunk (None: cannot tell on this target)."""
    ranges = percpu_ranges(prog)
    if ranges is None:
        return None
    if any(lo <= ptr and ptr + size <= hi for lo, hi in ranges):
        return True
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        # A running kernel may have allocated a new chunk since the ranges were cached: look again.
        forget(prog, _PERCPU_RANGES_KEY)
        ranges = percpu_ranges(prog)
        return None if ranges is None else any(lo <= ptr and ptr + size <= hi for lo, hi in ranges)
    return False


def _little(prog: drgn.Program) -> bool:
    return bool(prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN)


@dataclass
class CounterRow:
    """One set of counters: per CPU (``cpu``), per queue (``queue``), or per device (both None).

    :ivar source: where they live, e.g. ``core_stats``, ``tun_pcpu_stats``, ``vlan_pcpu_stats``.
    :ivar counters: raw counter name -> value (zeros when unreadable; see ``note``).
    :ivar counts_as: raw counter name -> the total field(s) it is added to (empty: shown only).
    """

    source: str
    counters: Dict[str, int]
    cpu: Optional[int] = None
    queue: Optional[int] = None
    counts_as: Dict[str, List[str]] = field(default_factory=dict)
    note: Optional[str] = None

    @property
    def idle(self) -> bool:
        return not any(self.counters.values())


def read_percpu_counters(
    prog: drgn.Program,
    percpu_ptr: int,
    layout: StructLayout,
    source: str,
    counts_as: Optional[Dict[str, List[str]]] = None,
) -> List[CounterRow]:
    """The counters of ``layout`` for every possible CPU, from a ``__percpu`` pointer value.

    One ``prog.read()`` per CPU.  A NULL pointer gives one row of zeros noting that nothing was
    allocated (``core_stats`` is allocated on the first drop); an unreadable CPU gives a row of zeros
    with a note.  Never raises for bad memory.

    :param percpu_ptr: the ``__percpu`` pointer's value (e.g. ``dev->core_stats``).
    :param layout: the per-CPU struct's counters (e.g. ``struct net_device_core_stats``'s members).
    """
    counts_as = counts_as or {}
    zeros = {name: 0 for name in layout.fields}
    if not percpu_ptr:
        return [
            CounterRow(
                source,
                dict(zeros),
                counts_as=counts_as,
                note="not allocated (NULL): nothing counted yet, all zero",
            )
        ]
    possible, _, offsets = cpu_lists(prog)
    size = layout.end
    if percpu_pointer_ok(prog, percpu_ptr, size) is False:
        return [
            CounterRow(
                source,
                dict(zeros),
                cpu=cpu,
                counts_as=counts_as,
                note=f"bad per-CPU pointer {percpu_ptr:#x} (outside every percpu chunk): not read",
            )
            for cpu in possible
        ]
    rows = []
    bad = percpu_offset_problems(prog, possible)
    for cpu in possible:
        if cpu in bad:
            rows.append(CounterRow(source, dict(zeros), cpu=cpu, counts_as=counts_as, note=bad[cpu]))
            continue
        addr = (percpu_ptr + offsets.get(cpu, 0)) & 0xFFFFFFFFFFFFFFFF
        try:
            data = prog.read(addr, size)
        except READ_FAULTS as e:
            rows.append(
                CounterRow(
                    source,
                    dict(zeros),
                    cpu=cpu,
                    counts_as=counts_as,
                    note=f"unreadable at {addr:#x} (bad per-CPU pointer {percpu_ptr:#x}?): {e}",
                )
            )
            continue
        rows.append(CounterRow(source, layout.decode(data), cpu=cpu, counts_as=counts_as))
    return rows


def _read_struct(
    prog: drgn.Program,
    addr: int,
    layout: StructLayout,
    source: str,
    counts_as: Optional[Dict[str, List[str]]] = None,
    queue: Optional[int] = None,
) -> CounterRow:
    """The counters of ``layout`` in the one struct at ``addr`` (zeros and a note if unreadable)."""
    counts_as = counts_as or {}
    try:
        data = prog.read(addr, layout.end)
    except READ_FAULTS as e:
        return CounterRow(
            source,
            {name: 0 for name in layout.fields},
            queue=queue,
            counts_as=counts_as,
            note=f"unreadable at {addr:#x}: {e}",
        )
    return CounterRow(source, layout.decode(data), queue=queue, counts_as=counts_as)


# --- softnet_data -------------------------------------------------------------------------------------


@dataclass
class SoftnetCpu:
    """``struct softnet_data`` of one CPU: the columns of ``/proc/net/softnet_stat``."""

    cpu: int
    online: bool
    processed: int = 0
    dropped: int = 0
    time_squeeze: int = 0
    received_rps: int = 0
    flow_limit_count: int = 0
    input_qlen: int = 0
    process_qlen: int = 0
    dropped_parts: Optional[List[int]] = None  # 7.x: drop_counters.drops0, drops1
    note: Optional[str] = None

    @property
    def backlog_len(self) -> int:
        return self.input_qlen + self.process_qlen

    @property
    def idle(self) -> bool:
        return not (
            self.processed
            or self.dropped
            or self.time_squeeze
            or self.received_rps
            or self.flow_limit_count
            or self.backlog_len
        )

    def proc_row(self, index: int, columns: int) -> List[int]:
        """This CPU as a ``/proc/net/softnet_stat`` row of ``columns`` (13 to 6.3, 15 from 6.4);
        ``index`` is the row's position (the kernel prints ``seq->index``)."""
        row = [
            self.processed,
            self.dropped,
            self.time_squeeze,
            0,
            0,
            0,
            0,
            0,
            0,
            self.received_rps,
            self.flow_limit_count,
            self.backlog_len,
            index,
        ]
        if columns >= 15:
            row += [self.input_qlen, self.process_qlen]
        return row

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["backlog_len"] = self.backlog_len
        return d


@dataclass
class SoftnetStats:
    """Per-CPU ``softnet_data`` (see :func:`softnet_stats`).

    :ivar dropped_form: how the target keeps the dropped counter.
    :ivar proc_columns: how many columns this kernel's ``/proc/net/softnet_stat`` prints.
    """

    cpus: List[SoftnetCpu]
    dropped_form: str
    proc_columns: int
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {
            "dropped_form": self.dropped_form,
            "proc_columns": self.proc_columns,
            "notes": self.notes,
            "cpus": [c.to_json() for c in self.cpus],
        }


def softnet_stats(prog: drgn.Program) -> SoftnetStats:
    """``struct softnet_data`` of every possible CPU (``DEFINE_PER_CPU_ALIGNED softnet_data``)."""
    notes: List[str] = []
    possible, online, offsets = cpu_lists(prog)
    # Linux kernel commit 59da2d7b0e99 ("net-sysfs: display two backlog queue len separately") (in
    # v6.4) prints the input and process queue lengths apart, in 15 columns; /proc's layout is not in
    # DWARF, so go by version.
    columns = 15 if kernel_version(prog) >= (6, 4) else 13
    try:
        sd = prog["softnet_data"]
    except LookupError:
        return SoftnetStats([], "unknown", columns, ["softnet_data not found in the debug info."])
    t = sd.type_
    names = {
        "processed": "processed",
        "time_squeeze": "time_squeeze",
        "received_rps": "received_rps",
        "input_qlen": "input_pkt_queue.qlen",
        "process_qlen": "process_queue.qlen",
    }
    if t.has_member("drop_counters"):
        # Linux kernel commit fdae0ab67d57 ("net: use NUMA drop counters for softnet_data.dropped") (in
        # v6.18): struct numa_drop_counters { atomic_t drops0, drops1; }, summed.
        parts = [m.name for m in t.member("drop_counters").type.members or () if m.name]
        names.update({f"dropped.{p}": f"drop_counters.{p}" for p in parts})
        form = "struct numa_drop_counters drop_counters (" + " + ".join(parts) + ")"
    else:
        # unsigned int; atomic_t since Linux kernel commit a7ae7b0b2ea0 ("net: make
        # softnet_data.dropped an atomic_t") (in v6.10).
        names["dropped"] = "dropped"
        form = f"{t.member('dropped').type.type_name()} dropped"
    names["flow_limit"] = "flow_limit"  # struct sd_flow_limit __rcu *
    lay = struct_layout(prog, t.type_name(), names)
    fl_lay = None
    if lay.has("flow_limit"):
        try:
            # count: u64 in 5.10, unsigned int in 7.x
            fl_lay = struct_layout(prog, "struct sd_flow_limit", ["count"])
        except LookupError:
            pass
    if fl_lay is None:
        notes.append("no flow_limit in softnet_data (CONFIG_NET_FLOW_LIMIT off): flow-limit counts are 0.")
    if not t.has_member("received_rps"):
        notes.append("no received_rps in softnet_data (CONFIG_RPS off): 0.")
    size = lay.end
    onl = set(online)
    cpus = []
    bad = percpu_offset_problems(prog, possible)
    for cpu in possible:
        c = SoftnetCpu(cpu, cpu in onl)
        if cpu in bad:
            c.note = bad[cpu]
            cpus.append(c)
            continue
        addr = (sd.address_ + offsets.get(cpu, 0)) & 0xFFFFFFFFFFFFFFFF
        try:
            data = prog.read(addr, size)
        except READ_FAULTS as e:
            c.note = f"softnet_data unreadable at {addr:#x}: {e}"
            cpus.append(c)
            continue
        v = lay.decode(data)
        c.processed = v.get("processed", 0)
        c.time_squeeze = v.get("time_squeeze", 0)
        c.received_rps = v.get("received_rps", 0)
        c.input_qlen = v.get("input_qlen", 0)
        c.process_qlen = v.get("process_qlen", 0)
        parts = [v[k] for k in v if k.startswith("dropped.")]
        if parts:
            c.dropped_parts = parts
            c.dropped = sum(parts) & 0xFFFFFFFF  # numa_drop_read() returns an int sum
        else:
            c.dropped = v.get("dropped", 0)
        if fl_lay is not None and fl_lay.has("count"):
            flp = v["flow_limit"]
            if flp:
                try:
                    c.flow_limit_count = fl_lay.decode(prog.read(flp, fl_lay.end))["count"]
                except READ_FAULTS as e:
                    c.note = f"flow_limit at {flp:#x} unreadable: {e}"
        cpus.append(c)
    return SoftnetStats(cpus, form, columns, notes)


# --- devices ------------------------------------------------------------------------------------------


@dataclass
class DeviceStats:
    """Drop counters of one net_device, per CPU where the kernel keeps them so.

    :ivar driver: the driver's stats function (``ndo_get_stats64`` symbol) or the core path used.
    :ivar totals: the drop fields as ``dev_get_stats()`` computes them (``ip -s -s link``); a field
        is absent when neither the kernel nor the driver has it.
    :ivar complete: False if the driver keeps counters skbinspect does not read (totals are then the
        core part only) or something was unreadable.
    """

    name: str
    ifindex: int
    kind: Optional[str]
    driver: str
    netns: Optional[int]
    rows: List[CounterRow] = field(default_factory=list)
    totals: Dict[str, int] = field(default_factory=dict)
    complete: bool = True
    notes: List[str] = field(default_factory=list)
    address: int = 0

    @property
    def idle(self) -> bool:
        return not any(self.totals.values()) and all(r.idle for r in self.rows)

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        return d


#: Stats functions of the drivers understood here, by rtnl_link_ops kind (when symbols are missing).
_KIND_STATS_FN = {
    "tun": "tun_net_get_stats64",
    "macvlan": "macvlan_dev_get_stats64",
    "macvtap": "macvlan_dev_get_stats64",
    "ipvlan": "ipvlan_get_stats64",
    "ipvtap": "ipvlan_get_stats64",
    "veth": "veth_get_stats64",
}


#: The ndo_get_stats64 functions whose counters are understood here (see _driver_rows).
_KNOWN_STATS_FNS = (
    "tun_net_get_stats64",
    "dev_get_tstats64",
    "macvlan_dev_get_stats64",
    "ipvlan_get_stats64",
    "veth_get_stats64",
    "loopback_get_stats64",
)


def _sym(prog: drgn.Program, addr: int) -> Optional[str]:
    """Name of the function at ``addr``, cached.  The known stats functions are found by name in the
    DWARF index (fast); any other address goes through the symbol table (slow for vmlinux addresses,
    so once per distinct address)."""
    if not addr:
        return None
    cache = per_program(prog, _SYMBOLS_KEY, _known_stats_functions)
    if addr not in cache:
        try:
            cache[addr] = prog.symbol(addr).name
        except LookupError:
            cache[addr] = None
    return cache[addr]


def _known_stats_functions(prog: drgn.Program) -> Dict[int, Optional[str]]:
    """Address -> name of the known stats functions present in this kernel (the start of the cache of
    :func:`_sym`)."""
    known: Dict[int, Optional[str]] = {}
    for name in _KNOWN_STATS_FNS:
        try:
            address = prog.function(name).address_
        except (LookupError, ValueError):
            continue
        if address is not None:
            known[address] = name
    return known


def _enum_value(prog: drgn.Program, enum: str, name: str) -> Optional[int]:
    try:
        for e in prog.type(f"enum {enum}").enumerators or ():
            if e.name == name:
                return e.value
    except LookupError:
        pass
    return None


class _DevReader:
    """Layouts used for every device, looked up once per program."""

    def __init__(self, prog: drgn.Program) -> None:
        self.prog = prog
        self.nd = prog.type("struct net_device")
        self.has_core_stats = self.nd.has_member("core_stats")
        # The core's own drop counters: per CPU in dev->core_stats, since Linux kernel commit
        # 625788b58445 ("net: add per-cpu storage and net->core_stats") (in v5.18), which has
        # rx_otherhost_dropped since Linux kernel commit 794c24e9921f ("net-core: rx_otherhost_dropped to
        # core_stats") (in v5.19); before, atomic_long_t rx_dropped, tx_dropped, rx_nohandler in struct
        # net_device.  Exactly one of the two layouts is used.
        self.core: Optional[StructLayout] = None
        self.atomics: Optional[StructLayout] = None
        if self.has_core_stats:
            core_t = prog.type("struct net_device_core_stats")
            self.core = struct_layout(
                prog, core_t.type_name(), [m.name for m in core_t.members or () if m.name]
            )
        else:
            self.atomics = struct_layout(
                prog, "struct net_device", ("rx_dropped", "tx_dropped", "rx_nohandler")
            )
        # dev->stats (struct net_device_stats): unsigned long, in unions with atomic_long_t since Linux
        # kernel commit 6c1c5097781f ("net: add atomic_long_t to net_device_stats fields") (in v6.6).
        self.devstats = struct_layout(
            prog, "struct net_device", {n: f"stats.{n}" for n in ("rx_dropped", "tx_dropped", "rx_errors")}
        )
        # enum netdev_stat_type and dev->pcpu_stat_type: Linux kernel commit 34d21de99cea ("net: Move
        # {l,t,d}stats allocation to core and convert veth & vrf") (in v6.7).
        self.has_stat_type = self.nd.has_member("pcpu_stat_type")
        self.tstats = _enum_value(prog, "netdev_stat_type", "NETDEV_PCPU_STAT_TSTATS")
        self.dstats = _enum_value(prog, "netdev_stat_type", "NETDEV_PCPU_STAT_DSTATS")

    def priv(self, dev: drgn.Object) -> int:
        from drgn.helpers.linux.net import netdev_priv

        return netdev_priv(dev).value_()


def _counts(pairs: Dict[str, str]) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for raw, tot in pairs.items():
        for t in tot.split(","):
            out.setdefault(raw, []).append(t)
    return out


def _driver_rows(r: _DevReader, dev: drgn.Object, ds: DeviceStats, fn: Optional[str]) -> None:
    """Append the driver's own drop counters, the way its ``ndo_get_stats64`` adds them."""
    prog = r.prog
    addr = dev.value_()

    def devstats() -> None:
        ds.rows.append(
            _read_struct(
                prog,
                addr,
                r.devstats,
                "dev->stats",
                _counts({"rx_dropped": "rx_dropped", "tx_dropped": "tx_dropped", "rx_errors": "rx_errors"}),
            )
        )

    def need(module: str, typename: str) -> Optional[drgn.Type]:
        try:
            return prog.type(typename)
        except LookupError:
            ds.complete = False
            ds.notes.append(
                f"no debug info for {typename} (module {module}): the driver's own counters are "
                "not read; totals are the core counters only."
            )
            return None

    if fn == "tun_net_get_stats64" or (fn is None and ds.kind == "tun" and not r.has_stat_type):
        tun_t = need("tun", "struct tun_struct")
        if tun_t is None:
            return
        if tun_t.has_member("pcpu_stats"):
            # struct tun_pcpu_stats per CPU, summed by tun_net_get_stats64, until Linux kernel commit
            # 497a5757ce4e ("tun: switch to net core provided statistics counters") (in v5.11).
            _pcpu_member_rows(
                r,
                dev,
                ds,
                tun_t,
                "struct tun_pcpu_stats",
                ("rx_dropped", "tx_dropped", "rx_frame_errors"),
                {"rx_dropped": "rx_dropped", "tx_dropped": "tx_dropped"},
            )
        else:
            # 5.11+: dev_get_tstats64() = dev->stats + tstats (no drops in tstats); + rx_frame_errors.
            devstats()
        return
    if fn in ("dev_get_tstats64",) or (fn is None and r.has_stat_type):
        devstats()
        if fn is None and r.dstats is not None:
            if dev.pcpu_stat_type.value_() == r.dstats:
                # dev_get_dstats64(): dev->stats + per-CPU pcpu_dstats rx_drops / tx_drops, since Linux
                # kernel commit 94b601bc4f85 ("net: core: Implement dstats-type stats collections") (in
                # v6.11).
                ds.rows += read_percpu_counters(
                    prog,
                    dev.dstats.value_(),
                    struct_layout(prog, "struct pcpu_dstats", ("rx_drops", "tx_drops")),
                    "pcpu_dstats",
                    _counts({"rx_drops": "rx_dropped", "tx_drops": "tx_dropped"}),
                )
        return
    if fn is None:
        if dev.netdev_ops.ndo_get_stats.value_():
            ds.complete = False
            ds.notes.append(
                "driver reports through ndo_get_stats (not read): totals are the core counters only."
            )
            return
        devstats()  # no stats op at all: dev_get_stats() copies dev->stats
        return
    if fn in _PRIVATE_PERCPU:
        _private_percpu_rows(r, dev, ds, need, *_PRIVATE_PERCPU[fn])
        return
    if fn == "veth_get_stats64":
        _veth_rows(r, dev, ds, need)
        return
    if fn == "loopback_get_stats64":
        return  # packets and bytes only: no drop counters of its own
    ds.complete = False
    ds.notes.append(
        f"driver stats function {fn} keeps counters skbinspect does not read: totals are the core "
        "counters only."
    )


#: Drivers whose ndo_get_stats64 sums a per-CPU struct in their private data (5.10-7.x):
#: function -> (module, private struct, its per-CPU member's struct, {member: what it counts as}).
_PRIVATE_PERCPU: Dict[str, Tuple[str, str, str, Dict[str, str]]] = {
    # macvlan_dev_get_stats64 reports rx_dropped = rx_errors: one counter (ring full on macvtap).
    "macvlan_dev_get_stats64": (
        "macvlan",
        "struct macvlan_dev",
        "struct vlan_pcpu_stats",
        {"rx_errors": "rx_errors,rx_dropped", "tx_dropped": "tx_dropped"},
    ),
    # ipvlan_get_stats64: rx_errors = rx_dropped = rx_errs, tx_dropped = tx_drps.
    "ipvlan_get_stats64": (
        "ipvlan",
        "struct ipvl_dev",
        "struct ipvl_pcpu_stats",
        {"rx_errs": "rx_errors,rx_dropped", "tx_drps": "tx_dropped"},
    ),
}


#: ``need(module, "struct name")``: the type, or None (and a note on the device) without its debug info.
NeedType = Callable[[str, str], Optional[drgn.Type]]


def _private_percpu_rows(
    r: _DevReader,
    dev: drgn.Object,
    ds: DeviceStats,
    need: NeedType,
    module: str,
    priv_type: str,
    pcpu_type: str,
    counts: Dict[str, str],
) -> None:
    """Rows of a driver's per-CPU counters reached through ``priv->pcpu_stats``."""
    vt = need(module, priv_type)
    if vt is not None:
        _pcpu_member_rows(r, dev, ds, vt, pcpu_type, tuple(counts), counts)


def _pcpu_member_rows(
    r: _DevReader,
    dev: drgn.Object,
    ds: DeviceStats,
    priv_t: drgn.Type,
    pcpu_type: str,
    members: Sequence[str],
    counts: Dict[str, str],
) -> None:
    """Rows of the per-CPU ``pcpu_type`` that ``priv->pcpu_stats`` points to: ``members`` read, ``counts``
    saying what each counts as in the device's totals."""
    prog = r.prog
    lay = struct_layout(prog, pcpu_type, members)
    try:
        ptr = prog.read_u64(r.priv(dev) + drgn.offsetof(priv_t, "pcpu_stats"))
    except drgn.FaultError as e:
        ds.complete = False
        ds.notes.append(f"{priv_t.type_name()[len('struct ') :]} unreadable: {e}")
        return
    ds.rows += read_percpu_counters(prog, ptr, lay, pcpu_type[len("struct ") :], _counts(counts))


def _veth_rows(r: _DevReader, dev: drgn.Object, ds: DeviceStats, need: NeedType) -> None:
    """veth_get_stats64 (5.10-7.x): tx_dropped = priv->dropped + own rq xdp_tx_err + peer rq
    peer_tq_xdp_xmit_err; rx_dropped = own rq (rx_drops + peer_tq_xdp_xmit_err) + peer rq xdp_tx_err."""
    prog = r.prog
    vt = need("veth", "struct veth_priv")
    if vt is None:
        return
    own_lay = struct_layout(
        prog,
        "struct veth_rq",
        {n: f"stats.vs.{n}" for n in ("rx_drops", "xdp_tx_err", "peer_tq_xdp_xmit_err")},
    )
    peer_lay = struct_layout(
        prog, "struct veth_rq", {n: f"stats.vs.{n}" for n in ("xdp_tx_err", "peer_tq_xdp_xmit_err")}
    )
    priv_lay = struct_layout(prog, vt.type_name(), ["dropped"])

    def rq_rows(d: drgn.Object, source: str, counts: Dict[str, List[str]], lay: StructLayout) -> None:
        try:
            priv = r.priv(d)
            n = d.num_rx_queues.value_()
            rq = prog.read_u64(priv + drgn.offsetof(vt, "rq"))
        except drgn.FaultError as e:
            ds.complete = False
            ds.notes.append(f"{source}: unreadable ({e})")
            return
        if not rq:
            return
        if n > MAX_QUEUES:
            ds.complete = False
            ds.notes.append(f"{source}: {n} rx queues is implausible; not read.")
            return
        for i in range(n):
            ds.rows.append(_read_struct(prog, rq + i * lay.size, lay, source, counts, queue=i))

    try:
        ds.rows.append(
            _read_struct(prog, r.priv(dev), priv_lay, "veth_priv", _counts({"dropped": "tx_dropped"}))
        )
    except drgn.FaultError as e:
        ds.complete = False
        ds.notes.append(f"veth_priv unreadable: {e}")
        return
    rq_rows(
        dev,
        "veth_rq",
        _counts({"rx_drops": "rx_dropped", "peer_tq_xdp_xmit_err": "rx_dropped", "xdp_tx_err": "tx_dropped"}),
        own_lay,
    )
    try:
        peer = drgn.Object(prog, "struct veth_priv *", r.priv(dev)).peer
        if peer.value_():
            rq_rows(
                peer,
                "peer veth_rq",
                _counts({"xdp_tx_err": "rx_dropped", "peer_tq_xdp_xmit_err": "tx_dropped"}),
                peer_lay,
            )
    except drgn.FaultError as e:
        ds.complete = False
        ds.notes.append(f"veth peer unreadable: {e}")


def _totals(ds: DeviceStats, fields_present: Iterable[str]) -> None:
    tot = {f: 0 for f in fields_present}
    for row in ds.rows:
        for raw, targets in row.counts_as.items():
            for t in targets:
                tot[t] = tot.get(t, 0) + row.counters.get(raw, 0)
        if row.note and not row.note.startswith("not allocated"):
            ds.complete = False
    # rtnl_link_stats64 fields are u64.
    ds.totals = {k: v & 0xFFFFFFFFFFFFFFFF for k, v in tot.items()}


def device_stats_one(
    prog: drgn.Program, dev: drgn.Object, netns: Optional[int] = None, _reader: Optional[_DevReader] = None
) -> DeviceStats:
    """Drop counters of one device.

    :param dev: ``struct net_device *``
    """
    r = _reader or _DevReader(prog)
    try:
        name = dev.name.string_().decode(errors="replace")
        ifindex = dev.ifindex.value_()
        ops = dev.rtnl_link_ops.value_()
        kind = dev.rtnl_link_ops.kind.string_().decode(errors="replace") if ops else None
        fn_addr = dev.netdev_ops.ndo_get_stats64.value_()
    except READ_FAULTS as e:
        return DeviceStats(
            "?",
            0,
            None,
            "?",
            netns,
            complete=False,
            notes=[f"net_device at {dev.value_():#x} unreadable: {e}"],
            address=dev.value_(),
        )
    fn = _sym(prog, fn_addr)
    if fn_addr and fn is None:
        # No symbol (module without symbols): go by the link kind, else an unknown function.
        fn = _KIND_STATS_FN.get(kind or "", f"{fn_addr:#x}")
    driver = fn or (
        "dev->stats"
        if not r.has_stat_type
        else {r.tstats: "tstats", r.dstats: "dstats"}.get(dev.pcpu_stat_type.value_(), "dev->stats")
    )
    ds = DeviceStats(name, ifindex, kind, driver, netns, address=dev.value_())
    present = ["rx_dropped", "tx_dropped"]
    if r.core is not None:
        ptr = dev.core_stats.value_()
        ds.rows += read_percpu_counters(prog, ptr, r.core, "core_stats", {n: [n] for n in r.core.fields})
        present += [n for n in r.core.fields if n not in present]
    elif r.atomics is not None:
        ds.rows.append(
            _read_struct(
                prog, dev.value_(), r.atomics, "net_device atomics", {n: [n] for n in r.atomics.fields}
            )
        )
        present += [n for n in r.atomics.fields if n not in present]
    _driver_rows(r, dev, ds, fn if fn_addr else None)
    if any("rx_errors" in t for row in ds.rows for t in row.counts_as.values()):
        present.append("rx_errors")
    _totals(ds, present)
    return ds


def _iter_devices(prog: drgn.Program, notes: List[str]) -> Iterable[Tuple[drgn.Object, Optional[int]]]:
    init_net = prog["init_net"].address_
    nets = []
    try:
        for i, net in enumerate(walk.net_namespaces(prog)):
            if i >= MAX_NETNS:
                notes.append(f"more than {MAX_NETNS} network namespaces: the rest not read.")
                break
            nets.append(net)
    except READ_FAULTS as e:
        notes.append(f"network namespace list unreadable after {len(nets)} ({e}).")
    if not nets:
        nets = [prog["init_net"].address_of_()]
    count = 0
    for net in nets:
        inum = None
        try:
            if net.value_() != init_net:
                inum = net.ns.inum.value_()
        except READ_FAULTS:
            pass
        try:
            for dev in walk.netns_devices(net):
                count += 1
                if count > MAX_DEVICES:
                    notes.append(f"more than {MAX_DEVICES} devices: the rest not read.")
                    return
                yield dev, inum
        except READ_FAULTS as e:
            notes.append(
                f"device list of netns {inum or 'init_net'} unreadable ({e}); devices after that missing."
            )


def device_stats(
    prog: drgn.Program, names: Optional[Sequence[str]] = None, notes: Optional[List[str]] = None
) -> List[DeviceStats]:
    """Drop counters of every device in every network namespace (or only those in ``names``: device
    names or ifindexes)."""
    notes = notes if notes is not None else []
    r = _DevReader(prog)
    want = set(names) if names else None
    out = []
    for dev, inum in _iter_devices(prog, notes):
        if want is not None:
            try:
                if (
                    dev.name.string_().decode(errors="replace") not in want
                    and str(dev.ifindex.value_()) not in want
                ):
                    continue
            except READ_FAULTS:
                continue
        try:
            out.append(device_stats_one(prog, dev, inum, r))
        except Exception as e:  # noqa: BLE001 - a fault is a note; anything else a bug, reported after the output
            why = (
                f"unreadable: {e}"
                if isinstance(e, (*READ_FAULTS, LookupError))
                else note_bug(prog, "a device", e)
            )
            out.append(
                DeviceStats(
                    "?",
                    0,
                    None,
                    "?",
                    inum,
                    complete=False,
                    notes=[f"net_device at {dev.value_():#x} {why}"],
                    address=dev.value_(),
                )
            )
    return out


# --- drop_monitor -------------------------------------------------------------------------------------


@dataclass
class DropMonitorCpu:
    """``struct per_cpu_dm_data`` of one CPU (``dm_cpu_data``: software drops, ``dm_hw_cpu_data``: hardware).

    :ivar queued: packet mode: dropped-skb clones waiting in ``drop_queue`` to go to user space.
    :ivar lost: ``stats.dropped``: drops not reported because ``drop_queue`` was full.
    :ivar summary: summary mode: the drop sites counted in the current interval, ``(pc, symbol, count)``.
    """

    cpu: int
    kind: str  # "sw" or "hw"
    queued: int = 0
    lost: int = 0
    summary: List[Tuple[int, str, int]] = field(default_factory=list)
    note: Optional[str] = None

    @property
    def idle(self) -> bool:
        return not (self.queued or self.lost or self.summary)


@dataclass
class DropMonitorState:
    """drop_monitor's global and per-CPU state; ``loaded`` is False (and nothing else set) without it."""

    loaded: bool
    tracing: bool = False
    mode: Optional[str] = None
    monitor_hw: Optional[bool] = None
    trunc_len: Optional[int] = None
    queue_limit: Optional[int] = None
    cpus: List[DropMonitorCpu] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def _read_var(prog: drgn.Program, name: str) -> Optional[drgn.Object]:
    try:
        o = prog[name]
        o.read_()
        return o
    except (LookupError, drgn.FaultError, drgn.ObjectAbsentError):
        return None


def _symbolize(prog: drgn.Program, pc: int) -> str:
    try:
        s = prog.symbol(pc)
        return f"{s.name}+{pc - s.address:#x}"
    except LookupError:
        return f"{pc:#x}"


def drop_monitor_state(prog: drgn.Program, module_loaded: Optional[bool] = None) -> DropMonitorState:
    """drop_monitor's state (net/core/drop_monitor.c), if the module is loaded and has debug info."""
    if module_loaded is None:
        try:
            from drgn.helpers.linux.module import find_module

            # find_module() walks the module list without a bound: only a sound one
            sound = walk.list_is_sound(prog, prog["modules"].address_, "module list")
            module_loaded = sound and bool(find_module(prog, "drop_monitor"))
        except (LookupError, drgn.FaultError, ImportError):
            module_loaded = False
    if not module_loaded:
        return DropMonitorState(False)
    st = DropMonitorState(True)
    try:
        sw = prog["dm_cpu_data"]
        hw = prog["dm_hw_cpu_data"]
    except LookupError:
        st.notes.append("drop_monitor is loaded but its debug info is missing: its state is not read.")
        return st
    ts = _read_var(prog, "trace_state")
    st.tracing = bool(ts is not None and ts.value_() == _DM_TRACE_ON)
    mode = _read_var(prog, "net_dm_alert_mode")
    if mode is not None:
        v = mode.value_()
        st.mode = next((e.name for e in mode.type_.enumerators or () if e.value == v), str(v))
        st.mode = st.mode.replace("NET_DM_ALERT_MODE_", "").lower()
    hwv = _read_var(prog, "monitor_hw")
    st.monitor_hw = bool(hwv.value_()) if hwv is not None else None
    tl = _read_var(prog, "net_dm_trunc_len")
    st.trunc_len = tl.value_() if tl is not None else None
    ql = _read_var(prog, "net_dm_queue_len")
    st.queue_limit = ql.value_() if ql is not None else None
    lay = struct_layout(
        prog, sw.type_.type_name(), {"queued": "drop_queue.qlen", "lost": "stats.dropped", "skb": "skb"}
    )
    possible, _, offsets = cpu_lists(prog)
    little = _little(prog)
    try:
        hdr = sum(
            (drgn.sizeof(prog.type(n)) + 3) & ~3
            for n in ("struct nlmsghdr", "struct genlmsghdr", "struct nlattr")
        )
    except LookupError:
        hdr = None
    bad = percpu_offset_problems(prog, possible)
    for kind, var in (("sw", sw), ("hw", hw)):
        for cpu in possible:
            row = DropMonitorCpu(cpu, kind)
            if cpu in bad:
                row.note = bad[cpu]
                st.cpus.append(row)
                continue
            addr = (var.address_ + offsets.get(cpu, 0)) & 0xFFFFFFFFFFFFFFFF
            try:
                v = lay.decode(prog.read(addr, lay.end))
            except READ_FAULTS as e:
                row.note = f"per_cpu_dm_data unreadable at {addr:#x}: {e}"
                st.cpus.append(row)
                continue
            row.queued, row.lost = v.get("queued", 0), v.get("lost", 0)
            # Summary mode, software drops: data->skb is the NET_DM_CMD_ALERT message being filled in:
            # nlmsghdr, genlmsghdr, nlattr, then struct net_dm_alert_msg (reset_per_cpu_data()).
            if kind == "sw" and st.mode == "summary" and v.get("skb") and hdr is not None:
                row.summary, note = _read_summary(prog, v["skb"], hdr, little)
                if note:
                    row.note = note
                if not st.tracing and row.summary:
                    row.note = (
                        row.note + "; " if row.note else ""
                    ) + "left from the last time tracing was on"
            st.cpus.append(row)
    if not st.tracing:
        st.notes.append(
            "drop_monitor is loaded but not monitoring (no dropwatch or netlink client turned it on)."
        )
    return st


def _read_summary(
    prog: drgn.Program, skb: int, hdr: int, little: bool
) -> Tuple[List[Tuple[int, str, int]], Optional[str]]:
    try:
        skb_o = drgn.Object(prog, "struct sk_buff *", skb)
        data = skb_o.data.value_()
        length = skb_o.len.value_()
        if length > 1 << 20:
            return [], f"alert skb length {length} is implausible"
        raw = prog.read(data + hdr, max(0, min(length - hdr, 4 + 12 * MAX_ALERT_ENTRIES)))
    except (drgn.FaultError, LookupError) as e:
        return [], f"alert message unreadable: {e}"
    points, note = decode_alert_msg(raw, little)
    return [(pc, _symbolize(prog, pc), count) for pc, count in points], note


# --- everything ---------------------------------------------------------------------------------------


@dataclass
class DropStats:
    """What ``skbinspect stats`` shows."""

    softnet: SoftnetStats
    devices: List[DeviceStats]
    drop_monitor: DropMonitorState
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {
            "softnet": self.softnet.to_json(),
            "devices": [d.to_json() for d in self.devices],
            "drop_monitor": self.drop_monitor.to_json(),
            "notes": self.notes,
        }


def drop_stats(
    prog: drgn.Program, devices: Optional[Sequence[str]] = None, drop_monitor_loaded: Optional[bool] = None
) -> DropStats:
    """Softnet, per-device and drop_monitor statistics of ``prog``."""
    notes: List[str] = []
    devs = device_stats(prog, devices, notes)
    bad = percpu_offset_problems(prog, cpu_lists(prog)[0])
    if bad:
        notes.append(
            f"the per-CPU offsets of CPU {', '.join(map(str, sorted(bad)))} cannot be trusted (see their rows): "
            "their per-CPU counters were not read, and the zeros shown for them are not counts"
        )
    return DropStats(softnet_stats(prog), devs, drop_monitor_state(prog, drop_monitor_loaded), notes)
