"""Unit tests of the drop-reason table's pure parts: the print_fmt parser and lookups.

The real tables are checked against every lab kernel in tests/vmcores/test_reasons.py.
"""

from __future__ import annotations

from skbinspect.counters.reasons import DropReason, DropReasonTable, parse_print_symbolic


def test_parse_print_symbolic() -> None:
    fmt = (
        '"skbaddr=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->protocol, REC->location, '
        '__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 0x43, "FULL_RING" }, '
        '{ 100, "MAX" })'
    )
    m, bad = parse_print_symbolic(fmt)
    assert m == {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 0x43: "FULL_RING", 100: "MAX"} and bad == []


def test_parse_print_symbolic_stops_at_its_closing_parenthesis() -> None:
    fmt = (
        '"a=%s b=%s", __print_symbolic(REC->reason, { 1, "A(1)" }, { 2, "B" }), '
        '__print_symbolic(REC->other, { 7, "OTHER" })'
    )
    m, bad = parse_print_symbolic(fmt)
    assert m == {1: "A(1)", 2: "B"} and bad == []
    assert parse_print_symbolic(fmt, "other")[0] == {7: "OTHER"}


def test_parse_print_symbolic_unevaluated_and_missing() -> None:
    m, bad = parse_print_symbolic('__print_symbolic(REC->reason, { SKB_DROP_REASON_X, "X" }, { 5, "Y" })')
    assert m == {5: "Y"} and bad == ["SKB_DROP_REASON_X=X"]
    assert parse_print_symbolic('"skbaddr=%p protocol=%u location=%p", REC->skbaddr') == ({}, [])


def _table() -> DropReasonTable:
    rs = [
        DropReason(0, "NOT_DROPPED_YET", "core", "enum", "SKB_NOT_DROPPED_YET"),
        DropReason(1, "CONSUMED", "core", "subsys_table", "SKB_CONSUMED"),
        DropReason(67, "FULL_RING", "core", "subsys_table", "SKB_DROP_REASON_FULL_RING"),
        DropReason(58, "CPU_BACKLOG", "core", "subsys_table", "SKB_DROP_REASON_CPU_BACKLOG"),
        DropReason(3 << 16 | 1, "QDISC_DROP_GENERIC", "qdisc", "enum", "QDISC_DROP_GENERIC"),
    ]
    return DropReasonTable(
        rs, True, [], {0: "core", 2: "openvswitch", 3: "qdisc"}, ["core"], ["subsys_table"]
    )


def test_lookup_by_value_and_name() -> None:
    t = _table()
    for key in (67, "67", "0x43", "FULL_RING", "full_ring", "SKB_DROP_REASON_FULL_RING", " FULL_RING "):
        r = t.lookup(key)
        assert r is not None and r.value == 67, key
    assert t.lookup("SKB_CONSUMED").value == 1 and t.lookup("CONSUMED").value == 1
    assert t.lookup("NOPE") is None and t.lookup(999) is None
    assert t.name(67) == "FULL_RING" and t.name(68) is None


def test_labels_and_tags() -> None:
    t = _table()
    assert t.label(67) == "FULL_RING"
    assert t.label(2 << 16 | 5) == "openvswitch:5"
    assert t.label(999) == "unknown(999)"
    assert t.lookup(67).tags == ["tun/tap", "queue"]
    assert t.lookup(58).tags == ["queue"]
    assert not t.lookup(0).is_drop and not t.lookup(1).is_drop and t.lookup(67).is_drop
    assert t.lookup(3 << 16 | 1).is_drop and t.lookup(3 << 16 | 1).code == 1
    empty = DropReasonTable([], False, ["this kernel records no drop reasons"])
    assert empty.label(5) == "unknown(5)" and empty.lookup("FULL_RING") is None
    j = t.to_json()
    assert [r["value"] for r in j["reasons"]] == [0, 1, 67, 58, 196609] and j["subsystems"]["3"] == "qdisc"
