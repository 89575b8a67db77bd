"""Building ring-buffer sub-buffers and event payloads as kernel/trace/ring_buffer.c writes them
(``struct buffer_data_page``, ``struct ring_buffer_event``, ``struct trace_entry``; see
docs/kernel/ftrace.md), for the unit tests of skbinspect.ftrace."""

from __future__ import annotations

import struct
from typing import Optional

PAGE = 4096
HDR = 16


def entry(type_id: int, pid: int = 1, flags: int = 0, pc: int = 0, extra: bytes = b"") -> bytes:
    """A payload: struct trace_entry then the event's fields, padded to 4 bytes."""
    b = struct.pack("<HBBi", type_id, flags, pc, pid) + extra
    return b + b"\0" * (-len(b) % 4)


def data(payload: bytes, delta: int = 0) -> bytes:
    """A data event as rb_update_event() writes it (type_len = length / 4, or 0 and array[0])."""
    assert len(payload) % 4 == 0 and payload
    if len(payload) <= 112:
        return struct.pack("<I", (delta << 5) | len(payload) // 4) + payload
    return struct.pack("<II", delta << 5, len(payload) + 4) + payload


def extend(delta: int) -> bytes:
    return struct.pack("<II", ((delta & ((1 << 27) - 1)) << 5) | 30, delta >> 27)


def abs_stamp(ts: int) -> bytes:
    ts &= (1 << 59) - 1
    return struct.pack("<II", ((ts & ((1 << 27) - 1)) << 5) | 31, ts >> 27)


def discarded(nbytes: int) -> bytes:
    """A discarded event (padding with a non-zero delta) of ``nbytes`` in total."""
    return struct.pack("<II", (1 << 5) | 29, nbytes - 4) + b"\xaa" * (nbytes - 8)


def null_padding() -> bytes:
    return struct.pack("<I", 29)


def page(ts0: int, body: bytes, commit: Optional[int] = None, flags: int = 0, size: int = PAGE) -> bytes:
    c = len(body) if commit is None else commit
    return (struct.pack("<QQ", ts0, c | flags) + body).ljust(size, b"\0")[:size]
