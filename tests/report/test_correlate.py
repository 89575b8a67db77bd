"""Pure parts of :mod:`skbinspect.report.correlate`: symbol parsing, counter verdicts, verdict sentences."""

from __future__ import annotations

from typing import Any

from skbinspect.report.correlate import (
    CAUSE_CODES,
    DropRef,
    Holder,
    QueueVerdict,
    TraceLimits,
    _cause,
    _cause_and_code,
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


def test_unattributed_drops_are_not_called_earlier_than_the_trace() -> None:
    """Issue 14: a higher counter is not "earlier than its oldest event" while drops at the driver's drop
    site in the trace are tied to no device."""
    tl = TraceLimits("top", 5, 9, 0, 1.0, 2.0, 3, 0, True)
    c = _counter_check("mt0", "rx_dropped", 200, 0, tl, 0, 270, "tap_handle_frame")
    assert c.verdict == "unattributed" and "270 ring-full drops at tap_handle_frame" in c.explanation
    assert "earlier" not in c.explanation
    c = _counter_check("mt0", "rx_dropped", 300, 0, tl, 0, 270, "tap_handle_frame")
    assert c.verdict == "unattributed" and "at least 30 are earlier" in c.explanation


def test_shared_drops_are_counted_once_in_the_summary() -> None:
    amb = DropRef(
        "FULL_RING", "0x1", "tap_handle_frame+0x319 [tap]", 19, 1.0, 2.0, None, "driver (ambiguous)"
    )
    amb.candidates = ["ipvtap0"]
    sure = DropRef("FULL_RING", "0x1", "tap_handle_frame+0x319 [tap]", 181, 1.0, 2.0, None, "stack")
    v = QueueVerdict(
        "macvtap0", 3, "macvtap", 0, True, 500, 500, [], [amb, sure], 181, 1.0, 2.0, 1.0, None, 0.0,
        "rx_dropped", 200, "x", "",
    )  # fmt: skip
    assert v.ambiguous_count == 19
    assert "181 FULL_RING in tap_handle_frame (and 19 more that may be ipvtap0's)" in _summary(v)


def test_cause_codes() -> None:
    h = Holder(5, "qemu", 3, "S")
    w = Holder(6, "vhost-5", 4, "S", "vhost")
    assert _cause_and_code(True, [h], 1.0, 3, True, 0)[1] == "reader-stalled"
    assert _cause_and_code(True, [], 1.0, 3, True, 0)[1] == "no-reader"
    text, code = _cause_and_code(False, [h, w], None, 0, True, 64)
    assert code == "vhost-no-guest-buffers" and "64 skbs" in text and "no RX buffers" in text
    assert _cause_and_code(True, [h, w], 1.0, 3, True, 0)[1] == "vhost-stalled"
    assert _cause_and_code(False, [h], 1.0, 3, True, 0)[1] == "reader-caught-up"
    assert _cause_and_code(False, [], None, 3, False, 0)[1] == "queues-unreadable"
    assert {c for c in CAUSE_CODES} >= {"reader-stalled", "vhost-no-guest-buffers"}


def _report(verdicts: list, dump_s: float = 15.8) -> Any:
    from skbinspect.report.correlate import Report

    return Report("6.1", verdicts, [], [], [], [], None, [], [], [], dump_s=dump_s)


def test_headlines_fit_and_keep_what_matters_most() -> None:
    """Issue 14: one line per device within 78 columns (80 with its indent); parts left out least
    important first, the count, the time before the dump and the reader kept."""
    from skbinspect.report.correlate import headlines

    h = Holder(102, "a-long-command-name", 3, "S")
    ref = DropRef("FULL_RING", "0x1", "tun_net_xmit+0x2c5 [tun]", 208, 12.6, 12.619, 10600.0, "driver")
    qs = []
    for q in (0, 2):
        qs.append(
            QueueVerdict(
                "mq0",
                2,
                "tun",
                q,
                True,
                64,
                64,
                [h],
                [ref] if q == 0 else [],
                208 if q == 0 else 0,
                12.6,
                12.619,
                0.019,
                10600.0,
                0.0,
                "tx_dropped",
                208,
                "x",
                "",
                cause_code="reader-stalled",
                last_before_dump_s=3.181 if q == 0 else None,
            )  # fmt: skip
        )
    (line,) = headlines(_report(qs))
    assert line["device"] == "mq0" and line["queues"] == [0, 2] and line["cause_code"] == "reader-stalled"
    t = line["text"]
    assert len(t) <= 78, t
    assert t.startswith("mq0 q0,q2 FULL 64/64 · 208 FULL_RING") and "≥3.2 s" in t and "pid 102" in t
    # wide enough: everything, in the order
    (wide,) = headlines(_report(qs), width=200)
    assert wide["text"] == (
        "mq0 q0,q2 FULL 64/64 · 208 FULL_RING @ tun_net_xmit over 19 ms (10.6k/s), ≥3.2 s before the dump"
        " · reader pid 102 (a-long-command-name) asleep (S)"
    )


def test_vhost_headline_names_the_batch() -> None:
    from skbinspect.report.correlate import headlines

    w = Holder(119, "vhost-115", 5, "S", "vhost")
    v = QueueVerdict(
        "tapvh", 4, "tun", 0, False, 0, 256, [Holder(115, "qemu", 3, "S"), w], [], 0, None, None, None,
        None, None, "tx_dropped", 0, "x", "", cause_code="vhost-no-guest-buffers", vhost_batch=64,
    )  # fmt: skip
    (line,) = headlines(_report([v]))
    assert len(line["text"]) <= 78 and "holds 64 skbs" in line["text"]
    assert line["text"].startswith("tapvh q0 0/256 · no drops tied · ")
