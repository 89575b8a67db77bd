"""skbinspect.ftrace.formats: event payload fields, stack records, saved comms and the trace file's
line columns (irq flags, time stamps), on hand-built payloads."""

from __future__ import annotations

import struct

from skbinspect.ftrace.formats import (
    EventField,
    FieldDecoder,
    IrqFlagBits,
    SavedCmdlines,
    decode_stack,
    format_irq_flags,
    format_timestamp,
)
from tests.ftrace.pages import entry


def test_field_decoder() -> None:
    fields = [
        EventField("skbaddr", "void *", 8, 8, False),
        EventField("len", "int", 16, 4, True),
        EventField("name", "__data_loc char[]", 20, 4, True),
        EventField("comm", "char[16]", 24, 16, True),
        EventField("mac", "__u8[6]", 40, 6, False),
    ]
    payload = bytearray(entry(3, extra=b"\0" * 48))
    struct.pack_into("<Qi", payload, 8, 0xFFFF888012345678, -5)
    struct.pack_into("<I", payload, 20, (5 << 16) | 56)
    payload[24 : 24 + 7] = b"skblab\0"
    payload[40:46] = bytes([1, 2, 3, 4, 5, 6])
    payload += b"tap0\0\0\0\0"
    got = FieldDecoder(fields).decode(bytes(payload), 0, len(payload))
    assert got == {
        "skbaddr": 0xFFFF888012345678,
        "len": -5,
        "name": "tap0",
        "comm": "skblab",
        "mac": [1, 2, 3, 4, 5, 6],
    }
    # a payload too short for a field leaves it out instead of failing
    assert "len" not in FieldDecoder(fields).decode(bytes(payload), 0, 12)


def test_decode_stack_stops_at_ulong_max_and_end() -> None:
    callers = [0xFFFFFFFF81000000 + i for i in range(5)] + [(1 << 64) - 1, 7]
    payload = entry(4, extra=struct.pack("<i4x", 5) + struct.pack("<7Q", *callers))
    assert decode_stack(payload, 0, len(payload)) == callers[:5]
    assert decode_stack(payload, 0, 16 + 8 * 2) == callers[:2]
    assert decode_stack(payload, 0, 12) == []


def test_saved_cmdlines() -> None:
    pid_map = [0xFFFFFFFF] * (32768 + 1)
    pid_map[110] = 1
    pid_map[111] = 0
    names = b"kworker/0:1\0\0\0\0\0" + b"skblab\0" + b"\0" * 9
    c = SavedCmdlines(pid_map, [111, 110], names)
    assert c.find(110) == "skblab" and c.find(111) == "kworker/0:1"
    assert c.find(0) == "<idle>" and c.find(5) == "<...>"
    assert c.find(110 + 32768) == "<...>"  # same slot, other pid
    assert SavedCmdlines.empty().find(1) == "<...>"


def test_irq_flag_columns() -> None:
    v6 = IrqFlagBits(bh_off=0x80)
    assert format_irq_flags(0x80, 0, v6) == "b...."
    assert format_irq_flags(0x10, 0x01, v6) == "..s1."
    assert format_irq_flags(0x01 | 0x80 | 0x04 | 0x20 | 0x08, 0x21, v6) == "DNh12"
    v510 = IrqFlagBits(migrate_column=False)
    assert format_irq_flags(0x24 | 0x10, 1, v510) == ".Ns1"
    assert format_irq_flags(0x02, 0, v510) == "X..."
    lazy = IrqFlagBits(irqs_nosupport=0, need_resched_lazy=0x02, bh_off=0x80)
    assert format_irq_flags(0x02, 0, lazy)[1] == "l"
    assert format_irq_flags(0x02 | 0x04, 0, lazy)[1] == "b"


def test_timestamp_column() -> None:
    assert format_timestamp(7_840_299_499) == "    7.840299"
    assert format_timestamp(7_840_299_500) == "    7.840300"  # ns2usecs() rounds
    assert format_timestamp(123, in_ns=False) == "         123"
