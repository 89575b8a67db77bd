"""Unit tests of the pure parts behind ``skbinspect stats`` (decoders, and the per-CPU reader on a
fake program); the readers are checked against every lab kernel in tests/vmcores/test_stats.py."""

from __future__ import annotations

import struct
from typing import Any, Dict

import drgn

from skbinspect.counters.stats import CounterRow, SoftnetCpu, decode_alert_msg, read_percpu_counters
from skbinspect.memory.layout import StructLayout

#: struct net_device_core_stats { unsigned long rx_dropped, tx_dropped, ...; } as struct_layout gives it
_CORE = StructLayout(
    "struct net_device_core_stats", 32, {"rx_dropped": (0, 8, None, False), "tx_dropped": (8, 8, None, False)}
)


class _FakeProgram:
    """What read_percpu_counters uses of a program: its cache (the CPU lists and percpu ranges put there
    beforehand, as cpu_lists()/percpu_ranges() would), reads, and flags."""

    flags = drgn.ProgramFlags(0)

    def __init__(self, memory: Dict[int, bytes], ranges: Any = None) -> None:
        self.memory = memory
        self.cache: Dict[Any, Any] = {
            "skbinspect.stats.cpus": ([0, 1, 2], [0, 1], {0: 0x1000, 1: 0x2000, 2: 0x3000}),
            "skbinspect.stats.percpu_ranges": ranges,  # None: cannot tell, pointers not checked
            "skbinspect.percpu.offset_problems": {},  # every CPU's offset checked and sound
        }

    def read(self, address: int, size: int, physical: bool = False) -> bytes:
        data = self.memory.get(address)
        if data is None or len(data) < size:
            raise drgn.FaultError("not mapped", address)
        return data[:size]


def test_read_percpu_counters_per_cpu_null_unreadable_and_bad_pointer() -> None:
    ptr = 0x40000
    prog = _FakeProgram(
        {ptr + 0x1000: struct.pack("<QQ", 3, 0) + b"\xff" * 16, ptr + 0x2000: struct.pack("<QQ", 0, 5)}
    )
    rows = read_percpu_counters(prog, ptr, _CORE, "core_stats", {"tx_dropped": ["tx_dropped"]})  # type: ignore[arg-type]
    assert [(r.cpu, r.counters, r.note) for r in rows[:2]] == [
        (0, {"rx_dropped": 3, "tx_dropped": 0}, None),
        (1, {"rx_dropped": 0, "tx_dropped": 5}, None),
    ]
    assert rows[2].cpu == 2 and rows[2].idle and rows[2].note.startswith(f"unreadable at {ptr + 0x3000:#x}")
    assert all(r.source == "core_stats" and r.counts_as == {"tx_dropped": ["tx_dropped"]} for r in rows)
    # NULL: allocated on the first drop, so nothing counted yet
    (row,) = read_percpu_counters(prog, 0, _CORE, "core_stats")  # type: ignore[arg-type]
    assert row.cpu is None and row.idle and row.note == "not allocated (NULL): nothing counted yet, all zero"
    # a pointer outside every percpu chunk is not read at all
    prog = _FakeProgram(prog.memory, ranges=[(0x10000, 0x20000)])
    rows = read_percpu_counters(prog, ptr, _CORE, "core_stats")  # type: ignore[arg-type]
    assert [r.cpu for r in rows] == [0, 1, 2]
    assert all(
        r.idle and r.note == f"bad per-CPU pointer {ptr:#x} (outside every percpu chunk): not read"
        for r in rows
    )


def test_decode_alert_msg() -> None:
    msg = (
        struct.pack("<I", 2)
        + struct.pack("<QI", 0xFFFFFFFF81000010, 3)
        + struct.pack("<QI", 0xFFFFFFFFC0001234, 40)
    )
    points, note = decode_alert_msg(msg)
    assert points == [(0xFFFFFFFF81000010, 3), (0xFFFFFFFFC0001234, 40)] and note is None


def test_decode_alert_msg_corrupt() -> None:
    assert decode_alert_msg(b"\x01") == ([], "alert message cut short")
    points, note = decode_alert_msg(struct.pack("<I", 10**6))
    assert points == [] and "corrupt" in note
    # claims 5 entries, only 1 present
    points, note = decode_alert_msg(struct.pack("<I", 5) + struct.pack("<QI", 1, 2))
    assert points == [(1, 2)] and "5 entries, 1 readable" in note


def test_softnet_proc_row_forms() -> None:
    c = SoftnetCpu(
        cpu=3,
        online=True,
        processed=10,
        dropped=2,
        time_squeeze=1,
        received_rps=4,
        flow_limit_count=5,
        input_qlen=6,
        process_qlen=7,
    )
    assert c.proc_row(1, 13) == [10, 2, 1, 0, 0, 0, 0, 0, 0, 4, 5, 13, 1]
    assert c.proc_row(1, 15) == [10, 2, 1, 0, 0, 0, 0, 0, 0, 4, 5, 13, 1, 6, 7]
    assert not c.idle and SoftnetCpu(cpu=0, online=True).idle


def test_counter_row_idle() -> None:
    assert CounterRow("core_stats", {"rx_dropped": 0, "tx_dropped": 0}).idle
    assert not CounterRow("core_stats", {"rx_dropped": 0, "tx_dropped": 1}).idle
