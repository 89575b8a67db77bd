"""skbinspect.tuntap.entries: ring entries rendered from columns (entries_json, entries_summary) must give
exactly what the per-entry path gives (RingEntry.to_json and json.dumps, headers decoded frame by frame;
entries_summary_slow): both follow the one field table ENTRY_JSON and the one tally.  On random frames here;
on every ring of the lab vmcores in tests/vmcores/test_entries.py."""

import collections
import json
import random
from typing import Any, Dict, List

from skbinspect.tuntap.entries import (
    _COLUMNS,
    ENTRY_JSON,
    EntryTable,
    RingEntry,
    entries_json,
    entries_summary,
    entries_summary_slow,
)
from skbinspect.tuntap.packet import flow_text
from tests.tuntap.test_packet import _frames


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


def check_columns_equal_per_entry(table: EntryTable) -> None:
    """The columnar JSON and summary of ``table`` (whole, and read on first use in chunks) equal the
    per-entry ones."""
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
        check_columns_equal_per_entry(_random_table(seed, 3000, l2_mix=seed % 2 == 1))
    check_columns_equal_per_entry(_random_table(9, 1, False))


def test_entry_json_follows_the_table() -> None:
    """to_json has the members of ENTRY_JSON in order, and a member computed from other columns gives,
    column-wise, what the RingEntry property gives entry by entry."""
    table = _random_table(3, 500, l2_mix=True)
    cols = table.columns()
    assert cols is not None
    entries = list(EntryTable(dict(cols)))
    assert all(list(e.to_json()) == [f.key for f in ENTRY_JSON] for e in entries)
    for f in ENTRY_JSON:
        if f.columns is None:
            assert f.key in _COLUMNS
            continue
        got = list(f.columns(cols))
        want = [getattr(e, f.key) for e in entries]
        assert got == ([_dumps(w) for w in want] if f.form == "json" else want), f.key


def test_summary_ties_in_order_of_first_occurrence() -> None:
    """Against a plain count in ring order (collections.Counter keeps first occurrences first)."""
    for seed, l2_mix in ((5, False), (6, True)):
        entries: List[RingEntry] = list(_random_table(seed, 400, l2_mix))
        protos: collections.Counter = collections.Counter()
        flows: collections.Counter = collections.Counter()
        for e in entries:
            protos[e.headers[-1]["proto"] if e.headers else ("unreadable" if e.error else "?")] += 1
            f = flow_text(e.headers)
            if f is not None:
                flows[f] += 1
        want = {"protocols": dict(protos.most_common()), "top_flows": flows.most_common(5)}
        assert entries_summary(_random_table(seed, 400, l2_mix)) == want
        assert entries_summary_slow(entries) == want
        assert sum(want["protocols"].values()) == len(entries)
