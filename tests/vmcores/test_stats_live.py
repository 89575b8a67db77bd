"""``skbinspect stats`` and ``reasons`` on a running lab guest over QMP, with traffic flowing into
``taplive`` (queue 1 held unread, so its drops keep growing)."""

from __future__ import annotations

import gc
import json
import time

from skbinspect.counters.reasons import drop_reason_table
from skbinspect.counters.stats import device_stats, softnet_stats
from skbinspect.target.opener import open_target
from tests.conftest import lab_vmcore_for, run_skbinspect
from tests.vmcores.test_reasons import target_of


def test_stats_on_running_guest(live_lab_guest) -> None:  # type: ignore[no-untyped-def]
    g = live_lab_guest
    sym = sum((["-s", p] for p in g.symbols), [])
    # The CLI first: QMP serves one client at a time.
    p = run_skbinspect("--qemu", g.qmp_socket, *sym, "--json", "stats", "taplive")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [d["name"] for d in out["devices"]] == ["taplive"]
    cli_drops = out["devices"][0]["totals"]["tx_dropped"]
    assert cli_drops > 0 and out["devices"][0]["complete"]

    t = open_target(None, g.qmp_socket, g.symbols, False)
    prog = t.prog
    try:
        a = device_stats(prog, ["taplive"])[0]
        sa = softnet_stats(prog)
        time.sleep(1.0)
        b = device_stats(prog, ["taplive"])[0]
        sb = softnet_stats(prog)
        # Counters only grow while the guest runs; nothing is unreadable.
        assert a.complete and b.complete, (a.notes, b.notes)
        assert cli_drops <= a.totals["tx_dropped"] <= b.totals["tx_dropped"]
        assert all(r.note is None or r.note.startswith("not allocated") for r in a.rows + b.rows)
        for x, y in zip(sa.cpus, sb.cpus):
            assert x.note is None and y.note is None
            assert x.processed <= y.processed and x.dropped <= y.dropped
        # The live guest runs the same kernel as the lab vmcore: the same reason table, read live.
        table = drop_reason_table(prog)
        dumped = drop_reason_table(target_of(lab_vmcore_for(g.kernel.name)).prog)
        assert table.has_reasons == dumped.has_reasons
        assert [(r.value, r.name, r.subsystem) for r in table.reasons] == [
            (r.value, r.name, r.subsystem) for r in dumped.reasons
        ]
    finally:
        del prog, t
        gc.collect()
