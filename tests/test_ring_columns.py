"""Ring entries rendered from columns (entries_json, entries_summary) must give exactly what the per-entry
path gives (RingEntry.to_json and json.dumps; headers decoded frame by frame): on random frames, and on
every ring of the lab vmcores of the four kernels."""

import json
import random
from typing import Any, Dict, List

import skbinspect.tuntap.entries as skb
from skbinspect.target.opener import open_target
from skbinspect.tuntap.devices import read_tap_devices
from skbinspect.tuntap.entries import (
    _COLUMNS,
    EntryTable,
    entries_json,
    entries_summary,
    entries_summary_slow,
)
from tests.test_packet import _frames


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _random_table(seed: int, n: int, l2_mix: bool) -> EntryTable:
    rng = random.Random(seed)
    frames = _frames(seed, n)
    # repeated flows too, so that counts and ties are exercised
    frames = [rng.choice(frames[:50]) if rng.random() < 0.4 else f for f in frames]
    cols: Dict[str, List[Any]] = {k: [] for k in _COLUMNS}
    for k, f in enumerate(frames):
        err = "skb unreadable at 0x10" if rng.random() < 0.03 else None
        l2 = rng.random() < 0.7 if l2_mix else True
        data = f if l2 else f[14:]
        row = dict(
            index=k,
            kind="skb",
            address=0xFFFF888000000000 + 256 * rng.randrange(1 << 20),
            length=None if err else len(data) + rng.choice([0, 0, 100]),
            linear_length=None if err else len(data),
            protocol=None if err else rng.choice([0x0800, 0x86DD, 0]),
            vlan_tci=rng.choice([None, None, 5]),
            queue_mapping=rng.choice([0, 1]),
            tstamp_ns=rng.choice([None, 123]),
            dev=rng.choice([None, 0xFFFF888000001000]),
            data=b"" if err else data,
            stale=False,
            error=err,
            l2=l2,
        )
        for c in _COLUMNS:
            cols[c].append(row[c])
    return EntryTable(cols)


def _deferred(table: EntryTable, size: int) -> EntryTable:
    """The same entries, read on first use in chunks of ``size`` (as read_entries(deferred=True) gives)."""
    cols = table.columns() or {}
    n = len(table)
    return EntryTable.deferred(
        n, lambda: (EntryTable({k: v[i : i + size] for k, v in cols.items()}) for i in range(0, n, size))
    )


def _check(table: EntryTable) -> None:
    slow = EntryTable.of(list(EntryTable(dict(table.columns() or {}))))
    want_json = _dumps([e.to_json() for e in slow])
    want_summary = entries_summary_slow(slow)
    assert entries_json(table) == want_json
    assert entries_summary(table) == want_summary
    assert entries_summary(slow) == want_summary
    for size in (1, 7, 4096):
        assert entries_json(_deferred(table, size)) == want_json
        assert entries_summary(_deferred(table, size)) == want_summary
        d = _deferred(table, size)
        assert len(d) == len(table) and [e.to_json() for e in d] == [e.to_json() for e in slow]


def test_columns_equal_per_entry_random() -> None:
    for seed in range(4):
        _check(_random_table(seed, 3000, l2_mix=seed % 2 == 1))
    _check(_random_table(9, 1, False))


def test_summary_ties_in_order_of_first_occurrence() -> None:
    t = _random_table(5, 400, False)
    s = entries_summary(t)
    assert sum(s["protocols"].values()) == len(t)
    assert s == entries_summary_slow(EntryTable.of(list(_random_table(5, 400, False))))


def test_columns_equal_per_entry_lab(lab_vmcore, monkeypatch) -> None:
    target = open_target(core=lab_vmcore.vmcore, symbols=lab_vmcore.symbols)
    devs = read_tap_devices(target.prog, entries=True, stale=True, holders=True)
    seen = 0
    for d in devs:
        for q in d.queues:
            for entries in [q.entries, q.stale_entries] + [v.entries for v in q.vhost]:
                if not isinstance(entries, EntryTable) or entries.columns() is None:
                    continue
                seen += len(entries)
                _check(entries)
    assert seen > 0
    # small chunks, so that the lab's rings are read on first use, a chunk at a time, like a big ring
    monkeypatch.setattr(skb, "READ_CHUNK", 50)
    chunked = read_tap_devices(target.prog, entries=True, stale=True, holders=False)
    assert any(q.entries.chunks() is not None for d in chunked for q in d.queues)
    for d, c in zip(devs, chunked):
        for q, qc in zip(d.queues, c.queues):
            for e, ec in ((q.entries, qc.entries), (q.stale_entries, qc.stale_entries)):
                want = _dumps([x.to_json() for x in EntryTable.of(list(e))])
                assert entries_json(ec) == want
                assert entries_summary(ec) == entries_summary_slow(EntryTable.of(list(e)))
                assert [x.to_json() for x in ec] == [x.to_json() for x in e]
