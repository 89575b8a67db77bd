"""skbinspect.ftrace.printfmt: events' print_fmt strings compiled and rendered as the kernel prints them."""

from __future__ import annotations

import pytest

from skbinspect.ftrace.formats import EventField
from skbinspect.ftrace.printfmt import PrintFmt, PrintFmtError

KFREE_612 = [
    EventField("skbaddr", "void *", 8, 8, False),
    EventField("location", "void *", 16, 8, False),
    EventField("rx_sk", "void *", 24, 8, False),
    EventField("protocol", "unsigned short", 32, 2, False),
    EventField("reason", "enum skb_drop_reason", 36, 4, False),
]


def _sym(addr: int, offset: bool) -> str:
    return "tun_net_xmit+0x2c1/0x4f0 [tun]" if offset else "tun_net_xmit [tun]"


def test_print_fmt_kfree_skb_shapes() -> None:
    vals = {
        "skbaddr": 0xFF3BE63602EA7C00,
        "location": 0xFFFFFFFFC0541DE1,
        "rx_sk": 0,
        "protocol": 34525,
        "reason": 67,
    }
    f612 = (
        '"skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, '
        'REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, '
        '{ 67, "FULL_RING" }, { 100, "MAX" })'
    )
    assert PrintFmt(f612, KFREE_612).render(vals, _sym) == (
        "skbaddr=ff3be63602ea7c00 rx_sk=0000000000000000 protocol=34525 "
        "location=tun_net_xmit+0x2c1/0x4f0 [tun] reason: FULL_RING"
    )
    vals["reason"] = 1  # not in the map: printed as a number, as trace_print_symbols_seq() does
    assert PrintFmt(f612, KFREE_612).render(vals, _sym).endswith("reason: 0x1")
    f510 = '"skbaddr=%p protocol=%u location=%p", REC->skbaddr, REC->protocol, REC->location'
    assert PrintFmt(f510, KFREE_612).render(vals) == (
        "skbaddr=ff3be63602ea7c00 protocol=34525 location=ffffffffc0541de1"
    )


def test_print_fmt_expressions_and_helpers() -> None:
    fields = [
        EventField("name", "__data_loc char[]", 8, 4, True),
        EventField("len", "unsigned int", 12, 4, False),
        EventField("state", "int", 16, 4, True),
        EventField("flags", "unsigned long", 24, 8, False),
        EventField("saddr", "__u8[4]", 32, 4, False),
    ]
    fmt = (
        '"dev=%s len=%u kb=%d st=%s fl=%s ip=%pI4 neg=%d hex=%#x", __get_str(name), REC->len, '
        '(int)(REC->len >> 10), __print_symbolic(REC->state, { 1, "UP" }, { TCP_X, "X" }), '
        '__print_flags(REC->flags, "|", { 1, "A" }, { 4, "C" }), REC->saddr, REC->state - 10, '
        "REC->len ? REC->len : 1"
    )
    p = PrintFmt(fmt, fields, {"TCP_X": 9}.get)
    vals = {"name": "tap0", "len": 4096, "state": 9, "flags": 5 | 16, "saddr": [10, 0, 0, 1]}
    assert p.render(vals) == "dev=tap0 len=4096 kb=4 st=X fl=A|C|0x10 ip=10.0.0.1 neg=-1 hex=0x1000"
    with pytest.raises(PrintFmtError):
        PrintFmt('"%s", REC->nosuchfield', fields)
    with pytest.raises(PrintFmtError):
        PrintFmt('"%s", some_function(REC->len)', fields)
