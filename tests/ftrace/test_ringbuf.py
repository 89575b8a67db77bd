"""skbinspect.ftrace.ringbuf on hand-built sub-buffers: event decoding, the key codec, the merge of CPUs
in the kernel's order, the page-ring walk, and robustness against corrupted pages.  The lab tests
(tests/vmcores/test_trace.py) check the same decoder against real kernels' own trace files."""

from __future__ import annotations

import random
import struct
from typing import Dict, List, Optional, Tuple

import pytest

from skbinspect.ftrace.ringbuf import (
    DEFAULT_LAYOUT,
    RB_PAGE_HEAD,
    Damage,
    KeyCodec,
    decode_subbuf,
    fix_abs_ts,
    iter_records,
    merge_windows,
    payload_span,
    walk_ring,
)
from tests.ftrace.pages import HDR, PAGE, abs_stamp, data, discarded, entry, extend, null_padding, page


def decode(
    pg: bytes, cpu: int = 0, **kw
) -> Tuple[List[Tuple[int, int, int, int, int]], List[Damage], bool, int]:
    codec = KeyCodec(len(pg))
    keys: List[int] = []
    dmg: List[Damage] = []
    flags, mono = decode_subbuf(pg, cpu, keys, codec, damage=dmg, **kw)
    recs = [(ts, c, t, off, ln) for ts, c, t, _, off, ln in iter_records([(keys, {cpu: pg})], codec)]
    return recs, dmg, mono, flags


# ---- decoding one sub-buffer ----------------------------------------------------------------------------


def test_small_and_large_events_and_deltas() -> None:
    big = entry(7, extra=b"\x01" * 200)  # > 112 bytes: type_len 0, length in array[0]
    body = data(entry(5, pid=10), 0) + data(big, 100) + data(entry(6, pid=11), 5)
    recs, dmg, mono, _ = decode(page(1000, body))
    assert dmg == [] and mono
    assert [(r[0], r[2]) for r in recs] == [(1000, 5), (1100, 7), (1105, 6)]
    # payload offsets and lengths
    assert recs[0][3:] == (HDR + 4, 8)
    assert recs[1][3:] == (HDR + 4 + 8 + 8, len(big))
    pg = page(1000, body)
    assert struct.unpack_from("<i", pg, recs[2][3] + 4)[0] == 11


def test_time_extend_and_absolute_stamp() -> None:
    body = (
        data(entry(1), 3) + extend(5 << 27 | 7) + data(entry(2), 0) + abs_stamp(123456789) + data(entry(3), 4)
    )
    recs, dmg, mono, _ = decode(page(10, body))
    assert dmg == []
    assert [r[0] for r in recs] == [13, 13 + (5 << 27 | 7), 123456789 + 4]


def test_absolute_stamp_top_bits_restored() -> None:
    # 6.x stores 59 bits; rb_fix_abs_ts() takes the top 5 from the page's stamp
    top = 0xF8 << 56
    ts0 = top | 1000
    body = abs_stamp(2000) + data(entry(1), 0)
    recs, _, _, _ = decode(page(ts0, body))
    assert recs[0][0] == top | 2000
    assert fix_abs_ts(5, (1 << 59) | 10) == (1 << 60) | 5  # wrapped past the saved stamp


def test_absolute_stamp_going_back_is_flagged() -> None:
    body = data(entry(1), 0) + abs_stamp(5) + data(entry(2), 0)
    recs, dmg, mono, _ = decode(page(100, body))
    assert not mono and [r[0] for r in recs] == [100, 5]


def test_discarded_events_are_skipped_and_null_padding_ends_the_page() -> None:
    body = data(entry(1), 1) + discarded(40) + data(entry(2), 2) + null_padding() + data(entry(3), 3)
    recs, dmg, _, _ = decode(page(0, body))
    assert dmg == []
    # the discarded event's delta is not added (rb_update_read_stamp() ignores padding)
    assert [(r[0], r[2]) for r in recs] == [(1, 1), (3, 2)]


def test_commit_limits_and_flags() -> None:
    body = data(entry(1), 0) + data(entry(2), 1)
    first = len(data(entry(1), 0))
    recs, dmg, _, flags = decode(page(0, body, commit=first, flags=DEFAULT_LAYOUT.missed_events))
    assert [r[2] for r in recs] == [1] and dmg == []
    assert flags == DEFAULT_LAYOUT.missed_events


def test_consumed_events_before_read_are_not_emitted() -> None:
    e1, e2, e3 = data(entry(1), 1), data(entry(2), 2), data(entry(3), 3)
    recs, _, _, _ = decode(page(0, e1 + e2 + e3), emit_from=len(e1) + len(e2))
    assert [(r[0], r[2]) for r in recs] == [(6, 3)]  # time stamps still accumulate over consumed events


def test_truncated_event_is_dropped_and_reported() -> None:
    body = data(entry(1), 0) + data(entry(2, extra=b"x" * 20), 0)
    cut = len(body) - 8
    recs, dmg, _, _ = decode(page(0, body, commit=cut))
    assert [r[2] for r in recs] == [1]
    assert dmg and "past the commit" in dmg[0].message


def test_impossible_length_is_reported() -> None:
    body = data(entry(1), 0) + struct.pack("<II", 0, 3) + data(entry(2), 0)
    recs, dmg, _, _ = decode(page(0, body))
    assert [r[2] for r in recs] == [1]
    assert dmg and "impossible event length 3" in dmg[0].message


def test_commit_beyond_the_page() -> None:
    body = data(entry(1), 0)
    recs, dmg, _, _ = decode(page(0, body, commit=1 << 20))
    assert [r[2] for r in recs] == [1]
    assert any("beyond" in d.message for d in dmg)


def test_short_page() -> None:
    recs, dmg, _, _ = decode(b"\x01\x02")
    assert recs == [] and dmg


def test_payload_span() -> None:
    pg = page(0, data(entry(9, extra=b"z" * 150), 0))
    off, ln = payload_span(pg, HDR // 4)
    assert off == HDR + 8 and ln == 8 + 152


# ---- merging CPUs ---------------------------------------------------------------------------------------


def _greedy(streams: List[List[Tuple[int, int, int]]]) -> List[Tuple[int, int, int]]:
    """The kernel's trace iterator: the next record is the smallest (ts, cpu) among the CPUs' heads."""
    heads = [0] * len(streams)
    out = []
    while True:
        best = None
        for c, s in enumerate(streams):
            if heads[c] < len(s) and (best is None or s[heads[c]][0] < streams[best][heads[best]][0]):
                best = c
        if best is None:
            return out
        out.append(streams[best][heads[best]])
        heads[best] += 1


@pytest.mark.parametrize("seed", range(30))
def test_merge_windows_is_the_kernels_order(seed: int) -> None:
    rnd = random.Random(seed)
    ncpu = rnd.randint(1, 4)
    codec = KeyCodec(PAGE)
    streams = []
    truth = []
    for cpu in range(ncpu):
        ts = rnd.randint(0, 50)
        batches = []
        recs: List[Tuple[int, int, int]] = []
        for _ in range(rnd.randint(0, 6)):
            stamps = []
            for _ in range(rnd.randint(0, 30)):
                ts += rnd.choice([0, 0, 1, 2, 5])  # many ties, within and across CPUs
                stamps.append(ts)
            if not stamps:
                continue
            body = b""
            for i, t in enumerate(stamps):
                body += data(entry(100 + cpu, pid=len(recs)), t - stamps[i - 1] if i else 0)
                recs.append((t, cpu, len(recs)))
            pg = page(stamps[0], body)
            keys: List[int] = []
            decode_subbuf(pg, cpu, keys, codec)
            batches.append((pg, keys, True))
            ts += rnd.randint(0, 3)
        streams.append(iter(batches))
        truth.append(recs)
    got = [
        (ts, cpu, struct.unpack_from("<i", pg, off + 4)[0])
        for ts, cpu, _, pg, off, _ in iter_records(merge_windows(streams, codec), codec)
    ]
    assert got == _greedy(truth)


# ---- the page ring ------------------------------------------------------------------------------------------


def _ring(
    n: int, head: int, commit: int, base: int = 0x1000, reader: Optional[int] = None
) -> Dict[int, Tuple[int, int, int, int]]:
    mem = {}
    for i in range(n):
        addr = base + i * 0x100
        nxt = base + ((i + 1) % n) * 0x100
        mem[addr] = (nxt | (RB_PAGE_HEAD if (i + 1) % n == head else 0), 0, 0x100000 + i, 0)
    if reader is not None:
        mem[reader] = (base + head * 0x100, 8, 0x200000, 0)
    return mem


def test_walk_ring_order() -> None:
    mem = _ring(6, head=4, commit=1, reader=0x9000)
    pages, dmg = walk_ring(
        mem.__getitem__,
        cpu=0,
        reader_page=0x9000,
        commit_page=0x1000 + 1 * 0x100,
        pages=0x1000 + 2 * 0x100,
        head_page=0x1000 + 3 * 0x100,
        nr_pages=6,
    )
    assert dmg == []
    assert [p[1] for p in pages] == [0x200000, 0x100004, 0x100005, 0x100000, 0x100001]
    assert pages[0][3] == 8  # the reader page starts at its read offset


def test_walk_ring_finds_the_head_from_head_page_without_searching() -> None:
    n = 50
    base = 0x1000
    mem = {}
    for i in range(n):
        a = base + i * 0x100
        nxt = base + ((i + 1) % n) * 0x100
        prev = base + ((i - 1) % n) * 0x100
        mem[a] = (nxt | (RB_PAGE_HEAD if (i + 1) % n == 10 else 0), 0, 0x100000 + i, 0, prev)
    reads: List[int] = []

    def read(addr: int) -> Tuple[int, ...]:
        reads.append(addr)
        return mem[addr]

    pages, dmg = walk_ring(
        read,
        cpu=0,
        reader_page=0,
        commit_page=base + 12 * 0x100,
        pages=base + 30 * 0x100,
        head_page=base + 10 * 0x100,
        nr_pages=n,
    )
    assert dmg == [] and [p[1] for p in pages] == [0x100000 + i for i in (10, 11, 12)]
    assert len(reads) == len(set(reads)) <= 4  # no walk around the ring, no page read twice
    # a lagging head_page: the flagged link is found by walking the ring
    pages, dmg = walk_ring(
        mem.__getitem__,
        cpu=0,
        reader_page=0,
        commit_page=base + 12 * 0x100,
        pages=base + 30 * 0x100,
        head_page=base + 5 * 0x100,
        nr_pages=n,
    )
    assert dmg == [] and [p[1] for p in pages] == [0x100000 + i for i in (10, 11, 12)]


def test_walk_ring_reader_is_commit() -> None:
    mem = _ring(3, head=0, commit=0, reader=0x9000)
    pages, dmg = walk_ring(
        mem.__getitem__,
        cpu=0,
        reader_page=0x9000,
        commit_page=0x9000,
        pages=0x1000,
        head_page=0x1000,
        nr_pages=3,
    )
    assert [p[0] for p in pages] == [0x9000] and dmg == []


def test_walk_ring_loop_and_missing_head() -> None:
    # a ring that never reaches the commit page, and no link flagged as head
    mem = {0x1000: (0x1100, 0, 1, 0), 0x1100: (0x1000, 0, 2, 0)}
    pages, dmg = walk_ring(
        mem.__getitem__, cpu=1, reader_page=0, commit_page=0x5000, pages=0x1000, head_page=0x1000, nr_pages=2
    )
    assert [p[1] for p in pages] == [1, 2]
    assert any("head" in d.message for d in dmg) and any("loops" in d.message for d in dmg)


def test_walk_ring_unreadable_pages() -> None:
    def read(addr: int) -> Tuple[int, int, int, int]:
        raise OSError(f"cannot read {addr:#x}")

    pages, dmg = walk_ring(
        read, cpu=0, reader_page=0x10, commit_page=0x20, pages=0x30, head_page=0x30, nr_pages=4
    )
    assert pages == [] and dmg


@pytest.mark.parametrize("seed", range(200))
def test_walk_ring_random_pointer_graphs_terminate(seed: int) -> None:
    rnd = random.Random(seed)
    addrs = [0x1000 + i * 0x40 for i in range(rnd.randint(1, 40))]
    mem = {}
    for a in addrs:
        nxt = rnd.choice(addrs + [0, 0xDEAD])  # loops, NULLs and dangling links
        mem[a] = (nxt | rnd.choice([0, 0, 1, 2, 3]), rnd.randint(0, 5000), rnd.randint(0, 1 << 40), 0)
    n = rnd.randint(0, 60)
    pages, dmg = walk_ring(
        mem.__getitem__,
        cpu=0,
        reader_page=rnd.choice(addrs + [0]),
        commit_page=rnd.choice(addrs + [0x7777]),
        pages=rnd.choice(addrs + [0]),
        head_page=rnd.choice(addrs + [0]),
        nr_pages=n,
    )
    assert len(pages) <= n + 3
    assert len(set(p[0] for p in pages[1:])) == len(pages[1:])  # no page twice in the ring walk


# ---- robustness: corrupted pages ----------------------------------------------------------------------------


def _valid_page(rnd: random.Random) -> bytes:
    body = b""
    while len(body) < PAGE - HDR - 300:
        k = rnd.random()
        if k < 0.6:
            body += data(
                entry(rnd.randint(1, 2000), extra=b"p" * rnd.choice([0, 8, 24, 32])), rnd.randint(0, 1000)
            )
        elif k < 0.75:
            body += data(entry(4, extra=struct.pack("<i4x", 6) + b"\xff" * 8 * 6), rnd.randint(0, 50))
        elif k < 0.85:
            body += extend(rnd.randint(1 << 27, 1 << 40))
        elif k < 0.9:
            body += abs_stamp(rnd.randint(0, 1 << 50))
        else:
            body += discarded(rnd.choice([8, 12, 40]))
    return page(rnd.randint(0, 1 << 50), body)


def _corrupt(pg: bytes, rnd: random.Random) -> bytes:
    b = bytearray(pg)
    kind = rnd.randrange(7)
    if kind == 0:  # random bytes flipped
        for _ in range(rnd.randint(1, 40)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif kind == 1:  # truncated page
        b = b[: rnd.randrange(len(b))]
    elif kind == 2:  # impossible lengths: large-event length words overwritten
        for _ in range(rnd.randint(1, 10)):
            i = rnd.randrange(HDR // 4, len(b) // 4 - 1) * 4
            struct.pack_into("<II", b, i, rnd.randrange(1 << 32) & ~31, rnd.randrange(1 << 32))
    elif kind == 3:  # zeroed headers
        for _ in range(rnd.randint(1, 20)):
            i = rnd.randrange(HDR // 4, len(b) // 4) * 4
            struct.pack_into("<I", b, i, 0)
    elif kind == 4:  # bad commit
        struct.pack_into("<Q", b, 8, rnd.choice([0, 1, 3, PAGE * 4, (1 << 64) - 1, rnd.randrange(1 << 64)]))
    elif kind == 5:  # bad type_len values everywhere
        for _ in range(rnd.randint(1, 50)):
            i = rnd.randrange(HDR // 4, len(b) // 4) * 4
            b[i] = (b[i] & ~31) | rnd.randrange(32)
    else:  # all garbage
        b = bytearray(
            rnd.randbytes(len(b)) if hasattr(rnd, "randbytes") else bytes(rnd.randrange(256) for _ in b)
        )
    return bytes(b)


def test_thousands_of_corrupted_pages_never_raise() -> None:
    rnd = random.Random(1234)
    valid = [_valid_page(rnd) for _ in range(20)]
    damaged = 0
    for n in range(4000):
        pg = _corrupt(valid[n % len(valid)], rnd)
        codec = KeyCodec(PAGE)
        keys: List[int] = []
        dmg: List[Damage] = []
        decode_subbuf(pg, n % 4, keys, codec, damage=dmg, emit_from=rnd.choice([0, 0, 16, 4000]))
        damaged += bool(dmg)
        commit = min(len(pg) - HDR, int.from_bytes(pg[8:16], "little") & 0x3FFFFFFF) if len(pg) >= HDR else 0
        recs = list(iter_records([(keys, {n % 4: pg})], codec))
        for ts, cpu, _t, _p, off, ln in recs:
            # every event emitted lies wholly inside the committed data
            assert HDR < off and off + ln <= HDR + commit, (n, off, ln, commit)
            assert cpu == n % 4 and ts >= 0
        for d in dmg:
            assert str(d)
    assert damaged > 1000  # the corruption was seen and reported, not silently decoded


# ---- the key codec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subbuf_size", [4096, 8192, 1 << 20])
def test_key_codec_round_trip_and_order(subbuf_size: int) -> None:
    codec = KeyCodec(subbuf_size)
    rnd = random.Random(subbuf_size)
    fields = [
        (rnd.randrange(1 << 62), rnd.randrange(codec.cpu_mask + 1), rnd.randrange(codec.pos_mask + 1), t)
        for t in [0, 1, codec.TYPE_MASK] + [rnd.randrange(1 << 16) for _ in range(200)]
    ]
    for ts, cpu, word, typ in fields:
        k = codec.pack(ts, cpu, word, typ)
        assert (codec.ts(k), codec.cpu(k), codec.word(k), codec.type(k)) == (ts, cpu, word, typ)
        assert codec.unpack(k) == (ts, cpu, word)
        # what hot loops do with the codec's shifts and masks
        assert k >> codec.ts_shift == ts and (k >> codec.cpu_shift) & codec.cpu_mask == cpu
        assert (k >> codec.POS_SHIFT) & codec.pos_mask == word and k & codec.TYPE_MASK == typ
    # keys sort as the kernel merges CPUs: time stamp, then CPU, then position in the CPU's buffer
    keys = [codec.pack(*f) for f in fields]
    assert [codec.unpack(k) for k in sorted(keys)] == sorted((ts, c, w) for ts, c, w, _ in fields)


def test_key_codec_payload_is_payload_span() -> None:
    small, big = entry(5, pid=10), entry(7, extra=b"\x01" * 200)
    pg = page(1000, data(small) + data(big, 3))
    codec = KeyCodec(len(pg))
    keys: List[int] = []
    decode_subbuf(pg, 2, keys, codec)
    spans = [codec.payload(pg, k) for k in keys]
    assert spans == [payload_span(pg, codec.word(k)) for k in keys]
    assert spans == [(HDR + 4, len(small)), (HDR + 4 + len(small) + 8, len(big))]
    assert [codec.type(k) for k in keys] == [5, 7] and [codec.cpu(k) for k in keys] == [2, 2]
