"""Pure parts of :mod:`skbinspect.report.correlate`: symbol parsing, counter verdicts, verdict sentences."""

from __future__ import annotations

from skbinspect.report.correlate import (
    DropRef,
    Holder,
    QueueVerdict,
    TraceLimits,
    _cause,
    _counter_check,
    _fn,
    _module,
    _summary,
)


def test_symbol_parts() -> None:
    assert _fn("tun_net_xmit+0x2c5 [tun]") == "tun_net_xmit"
    assert _module("tun_net_xmit+0x2c5 [tun]") == "tun"
    assert _fn("ip_error+0x92") == "ip_error" and _module("ip_error+0x92") is None
    assert _fn(None) == "" and _module(None) is None


def test_counter_verdicts() -> None:
    assert _counter_check("tap0", "tx_dropped", 10, 10, None).verdict == "agree"
    tl = TraceLimits("top", 5, 9, 4, 1.0, 2.0, 3, 0, True)
    c = _counter_check("tap0", "tx_dropped", 12, 10, tl)
    assert c.verdict == "counter-higher" and "2 drops" in c.explanation and "lost 4" in c.explanation
    c = _counter_check("macvtap0", "rx_dropped", 7, 10, tl)
    assert c.verdict == "trace-higher" and "3 drops" in c.explanation


def test_summary_names_queue_drops_and_reader() -> None:
    h = Holder(412, "qemu-system-x86", 3, "S")
    cause = _cause(True, [h], 10.5, 306)
    assert "pid 412 (qemu-system-x86)" in cause and "10.500000" in cause
    v = QueueVerdict(
        "tap0",
        2,
        "tun",
        0,
        True,
        1000,
        1000,
        [h],
        [DropRef("FULL_RING", "0x1", "tun_net_xmit+0x2c5 [tun]", 306, 10.5, 12.6, 145.2, "driver")],
        306,
        10.5,
        12.6,
        2.1,
        145.2,
        0.0,
        "tx_dropped",
        306,
        cause,
        "",
    )
    s = _summary(v)
    assert s.startswith("tap0 queue 0 full (1000/1000); 306 FULL_RING in tun_net_xmit over 2.1 s (145/s)")
    assert s.endswith(cause)
    assert "could not be read" in _cause(False, [], None, 5, readable=False)
    assert "nothing will consume" in _cause(True, [], None, 0)
