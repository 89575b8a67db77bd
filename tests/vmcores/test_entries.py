"""Ring entries of the lab vmcores of the four kernels: rendered from columns (entries_json,
entries_summary) they give exactly what the per-entry path gives, whole and read a chunk at a time."""

from __future__ import annotations

import json

import pytest

import skbinspect.tuntap.entries as entries_mod
from skbinspect.target.opener import open_target
from skbinspect.tuntap.devices import read_tap_devices
from skbinspect.tuntap.entries import EntryTable, entries_json, entries_summary, entries_summary_slow
from tests.tuntap.test_entries import check_columns_equal_per_entry
from tests.vmcores.lab import LabVmcore


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def test_columns_equal_per_entry_lab(lab_vmcore: LabVmcore, monkeypatch: pytest.MonkeyPatch) -> None:
    target = open_target(core=lab_vmcore.vmcore, symbols=lab_vmcore.symbols)
    devs = read_tap_devices(target.prog, entries=True, stale=True, holders=True)
    seen = 0
    for d in devs:
        for q in d.queues:
            for entries in [q.entries, q.stale_entries] + [v.entries for v in q.vhost]:
                if not isinstance(entries, EntryTable) or entries.columns() is None:
                    continue
                seen += len(entries)
                check_columns_equal_per_entry(entries)
    assert seen > 0
    # small chunks, so that the lab's rings are read on first use, a chunk at a time, like a big ring
    monkeypatch.setattr(entries_mod, "READ_CHUNK", 50)
    chunked = read_tap_devices(target.prog, entries=True, stale=True, holders=False)
    assert any(
        isinstance(q.entries, EntryTable) and q.entries.chunks() is not None
        for d in chunked
        for q in d.queues
    )
    for d, c in zip(devs, chunked):
        for q, qc in zip(d.queues, c.queues):
            for e, ec in ((q.entries, qc.entries), (q.stale_entries, qc.stale_entries)):
                want = _dumps([x.to_json() for x in EntryTable.of(list(e))])
                assert entries_json(ec) == want
                assert entries_summary(ec) == entries_summary_slow(EntryTable.of(list(e)))
                assert [x.to_json() for x in ec] == [x.to_json() for x in e]
