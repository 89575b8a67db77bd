"""Unit tests of the pure decoders behind ``skbinspect stats``; the readers are checked against every
lab kernel in tests/vmcores/test_stats.py."""

from __future__ import annotations

import struct

from skbinspect.counters.stats import CounterRow, Field, SoftnetCpu, decode_alert_msg, decode_counters


def test_decode_counters_sizes_and_offsets() -> None:
    data = struct.pack("<QIIQ", 0x1122334455667788, 7, 0xFFFFFFFF, 2**63 + 5)
    fields = [Field("a", 0, 8), Field("b", 8, 4), Field("c", 12, 4), Field("d", 16, 8)]
    assert decode_counters(data, fields) == {"a": 0x1122334455667788, "b": 7, "c": 0xFFFFFFFF, "d": 2**63 + 5}
    assert decode_counters(struct.pack(">I", 9), [Field("x", 0, 4)], little_endian=False) == {"x": 9}


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
