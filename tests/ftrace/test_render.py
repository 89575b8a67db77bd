"""skbinspect.ftrace.render: ``trace --json`` lines.  One description of a line (TRACE_JSON_LINE) drives the
dict of event_json(), the compiled templates of JsonLines.line_key() and the inlined loop of
JsonLines.write_all(): here all three are built for hand-made events of every kind (fixed-size fields,
variable fields, stacks, unknown types, cut-short payloads) and must agree."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import pytest

from skbinspect.ftrace.formats import EventField, EventFormat, IrqFlagBits, SavedCmdlines
from skbinspect.ftrace.reader import TraceEvent
from skbinspect.ftrace.render import (
    _UNTEMPLATED_LINE,
    CONST,
    EXTRA,
    KEY,
    TASK,
    TRACE_JSON_LINE,
    JsonLines,
    JsonMember,
    TraceTextFormatter,
    _check_line,
    event_json,
)
from skbinspect.ftrace.ringbuf import KeyCodec, decode_subbuf
from tests.ftrace.pages import PAGE, data, entry, page

STACK, KFREE, CONSUME, XMIT, NAMES_ONLY, UNKNOWN = 4, 20, 21, 22, 23, 99
PTR = "void *"


def _formats() -> Dict[int, EventFormat]:
    def fmt(i: int, system: str, name: str, fields: List[EventField]) -> EventFormat:
        return EventFormat(i, system, name, fields)

    return {
        STACK: fmt(
            STACK,
            "ftrace",
            "kernel_stack",
            [EventField("size", "int", 8, 4, True), EventField("caller", "unsigned long[8]", 16, 64, False)],
        ),
        KFREE: fmt(
            KFREE,
            "skb",
            "kfree_skb",
            [
                EventField("skbaddr", PTR, 8, 8, False),
                EventField("location", PTR, 16, 8, False),
                EventField("protocol", "unsigned short", 24, 2, False),
                EventField("reason", "enum skb_drop_reason", 28, 4, False),
            ],
        ),
        CONSUME: fmt(
            CONSUME,
            "skb",
            "consume_skb",
            [EventField("skbaddr", PTR, 8, 8, False), EventField("location", PTR, 16, 8, False)],
        ),
        XMIT: fmt(
            XMIT,
            "net",
            "net_dev_start_xmit",
            [
                EventField("name", "__data_loc char[]", 8, 4, True),
                EventField("skbaddr", PTR, 16, 8, False),
                EventField("len", "unsigned int", 24, 4, False),
            ],
        ),
        NAMES_ONLY: fmt(
            NAMES_ONLY, "test", "names_only", [EventField("name", "__data_loc char[]", 8, 4, True)]
        ),
    }


class _Formats:
    def __init__(self) -> None:
        self.by_id = _formats()

    def get(self, i: int) -> Optional[EventFormat]:
        return self.by_id.get(i)


class _Syms:
    def format(self, addr: int, offset: bool = True, size: bool = False) -> str:
        return "fn_%x%s" % (addr & 0xFFFF, "+0x10" if offset else "")


def _reader(codec: KeyCodec) -> Any:
    pid_map = [0xFFFFFFFF] * (32768 + 1)
    pid_map[42] = 0
    prog = SimpleNamespace(cache={})
    prog.cache["skbinspect.skb_events.reasons"] = SimpleNamespace(
        has_reasons=True, name=lambda v: {67: "FULL_RING", 2: "NOT_SPECIFIED"}.get(v)
    )
    return SimpleNamespace(
        codec=codec,
        formats=_Formats(),
        cmdlines=SavedCmdlines(pid_map, [42], b'sk"blab%d\0'.ljust(16, b"\0")),
        stack_type=STACK,
        _decoders={},
        prog=prog,
        tr=SimpleNamespace(options={}, in_ns=True, text_delta=0x1000),
        flag_bits=IrqFlagBits(bh_off=0x80),
    )


def _kfree(skb: int, loc: int, reason: int, pid: int = 42, flags: int = 0x01, pc: int = 0x12) -> bytes:
    return entry(KFREE, pid, flags, pc, struct.pack("<QQH2xI", skb, loc, 0x86DD, reason))


def _stack(*ips: int) -> bytes:
    return entry(STACK, 42, 0, 0, struct.pack("<i4x", len(ips)) + struct.pack("<%dQ" % len(ips), *ips))


def _xmit(name: bytes, skb: int) -> bytes:
    loc = (len(name) << 16) | 32
    return entry(XMIT, 7, 0x10, 0, struct.pack("<I4xQI4x", loc, skb, 1500) + name)


def _names_only(name: bytes) -> bytes:
    return entry(NAMES_ONLY, 7, 0, 0, struct.pack("<I4x", (len(name) << 16) | 16) + name)


def _events() -> Tuple[bytes, List[int], KeyCodec]:
    payloads = [
        _kfree(0xFFFF888000001000, 0xFFFFFFFFC0001234, 67),
        _stack(0xFFFFFFFF81000010, 0xFFFFFFFF81000020, 0x7FFFFFFF),
        _stack(0xFFFFFFFF81000030),
        _kfree(0xFFFF888000002000, 0xFFFFFFFFC0001234, 2, pid=9, flags=0x80, pc=0),
        entry(CONSUME, 0, 0, 0, struct.pack("<QQ", 0xFFFF888000003000, 0xFFFFFFFF81005555)),
        _xmit(b"tap0\0", 0xFFFF888000001000),
        _names_only(b"x\0"),
        entry(UNKNOWN, 3, 0, 0, b"\x01\x02\x03\x04"),
        entry(KFREE, 42, 0, 0, struct.pack("<Q", 0xFFFF888000004000)),  # cut short: 16 of 32 bytes
        _stack(),  # a stack record with no frames
    ]
    body = b"".join(data(p, 1000 * i) for i, p in enumerate(payloads))
    pg = page(5_000_000_123, body)
    codec = KeyCodec(PAGE)
    keys: List[int] = []
    decode_subbuf(pg, 1, keys, codec)
    assert len(keys) == len(payloads)
    return pg, keys, codec


def _names_in_order(line: str) -> List[str]:
    return list(json.loads(line))


@pytest.mark.parametrize("stacks", [False, True])
def test_json_lines_agree_with_event_json(stacks: bool) -> None:
    pg, keys, codec = _events()
    reader = _reader(codec)
    fmt = TraceTextFormatter(reader, _Syms())
    lines = JsonLines(fmt, 'inst"%', stacks)
    # the first kfree_skb carries the two stack records that follow it (options/stacktrace + a trigger)
    srecs: Dict[int, Optional[List[Tuple[bytes, int]]]] = {keys[0]: [(pg, keys[1]), (pg, keys[2])]}
    templated = []
    for k in keys:
        ev = TraceEvent(reader, k, pg)
        ev.stack_records = srecs.get(k)
        line = lines.line_key(k, pg, ev.stack_records)
        want = event_json(ev, fmt, 'inst"%', stacks)
        assert json.loads(line) == json.loads(json.dumps(want))
        has_template = lines._tpl.get(ev.type) is not None and ev.length >= lines._tpl[ev.type].min_len
        order = [m.name for m in (TRACE_JSON_LINE if has_template else _UNTEMPLATED_LINE) if m.name in want]
        assert _names_in_order(line) == order
        if not has_template:
            assert line == json.dumps(want)  # the untemplated line is event_json()'s, byte for byte
        templated.append(has_template)
    assert templated == [True, False, False, True, True, True, False, False, False, False]
    first = json.loads(lines.line_key(keys[0], pg, srecs[keys[0]]))
    assert first["reason"] == "FULL_RING" and first["location_symbol"] == "fn_1234+0x10"
    assert first["flags"] == "d..21" and first["comm"] == 'sk"blab%d' and first["time"] == "5.000000"
    if stacks:
        assert first["stack"][2] == {
            "address": "0x%x" % (0x7FFFFFFF + 0x1000),
            "symbol": "[FTRACE TRAMPOLINE]",
        }
        assert len(first["stacks"]) == 2
    else:
        assert "stack" not in first


def test_write_all_is_line_key() -> None:
    pg, keys, codec = _events()
    reader = _reader(codec)
    lines = JsonLines(TraceTextFormatter(reader, _Syms()), "top")
    expected = "".join(lines.line_key(k, pg, None) + "\n" for k in keys)
    for _ in range(2):  # the first pass compiles the templates, the second one uses them inline
        out: List[str] = []
        n = lines.write_all([(keys, {1: pg})], SimpleNamespace(write=out.append), {})
        assert n == len(keys) and "".join(out) == expected
    # skip a type, and events before a time stamp
    out = []
    lines.write_all([(keys, {1: pg})], SimpleNamespace(write=out.append), {}, STACK, 5_000_000_123 + 3000)
    assert "".join(out) == "".join(
        lines.line_key(k, pg, None) + "\n" for k in keys[3:] if codec.type(k) != STACK
    )


def test_member_list_is_checked() -> None:
    _check_line(TRACE_JSON_LINE)
    moved = list(TRACE_JSON_LINE)
    moved.insert(0, moved.pop(next(i for i, m in enumerate(moved) if m.source == EXTRA)))
    with pytest.raises(AssertionError):
        _check_line(moved)
    split = list(TRACE_JSON_LINE)
    split.insert(next(i for i, m in enumerate(split) if m.source == TASK) + 1, JsonMember("x", CONST, str))
    with pytest.raises(AssertionError):
        _check_line(split)
    assert [m.name for m in TRACE_JSON_LINE if m.source == KEY] == ["ts", "time", "cpu"]


@pytest.mark.parametrize("terminal", [False, True])
def test_drops_print_target_text_as_is(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    """``drops``: an instance name, reason and symbol names, devices and tasks read from the target are
    printed as they are (the table's cells are literal, the other lines escape them)."""
    from collections import Counter

    from skbinspect.ftrace.drops import DropGroup, DropsReport
    from skbinspect.ftrace.render import render_drops
    from tests.target_text import HOSTILE, rendered

    g = DropGroup(
        HOSTILE, 2, 0x10, HOSTILE, count=3, first_ts=1, last_ts=2, stacks=Counter({(0x10, 0x20): 3})
    )
    g.devices[HOSTILE] = 3
    g.tasks[HOSTILE] = 3
    tr = SimpleNamespace(is_top=False, name=HOSTILE)
    report = DropsReport(tr, [g], 3, 3, 0, 1, 2, True, True, notes=[HOSTILE])  # type: ignore[arg-type]
    text = rendered(monkeypatch, render_drops, report, terminal=terminal, timeline=False)
    # the instance, the note; the row's reason, location, device and task; the stacks' reason and location
    assert text.count(HOSTILE) == 8, text
