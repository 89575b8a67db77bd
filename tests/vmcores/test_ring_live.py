"""``skbinspect ring`` on a running guest over QMP, with traffic flowing and a reader consuming."""

from __future__ import annotations

import gc
import json
import os
import re
import time
from typing import Any, Dict, List, Set

from tests.conftest import run_skbinspect
from tests.vmcores.test_lab_info import symbols_args

RUNS = int(os.environ.get("SKBINSPECT_LIVE_RUNS", "50"))


def check_snapshot(out: dict) -> int:
    """Self-consistency of one live snapshot; returns how many queues were flagged as torn."""
    torn = 0
    devs = {d["name"]: d for d in out["devices"]}
    assert "taplive" in devs
    for d in out["devices"]:
        for q in d["queues"]:
            r = q["ring"]
            assert r["error"] is None
            size = r["size"]
            assert 0 <= r["live"] <= size and 0 <= r["stale"] < max(r["batch"], 1) + 1
            assert r["live"] + r["stale"] + r["free"] == size or r["torn"] or r["problems"]
            if r["torn"] or r["problems"]:
                torn += 1
                continue
            idx = [e["index"] for e in q["entries"]]
            assert len(idx) == len(set(idx)) == r["live"] - q["consumed_while_reading"]
            addrs = [e["address"] for e in q["entries"]]
            assert len(addrs) == len(set(addrs)), "an skb listed twice"
            assert all(0 <= i < size for i in idx)
    return torn


def test_fifty_live_snapshots(default_live_guest) -> None:  # type: ignore[no-untyped-def]
    g = default_live_guest
    torn = 0
    fulls = 0
    for i in range(RUNS):
        p = run_skbinspect(
            "--qemu", g.qmp_socket, *symbols_args(g.symbols), "--json", "ring", "--entries", timeout=120
        )
        assert p.returncode == 0, f"run {i}: {p.stderr}"
        assert "Traceback" not in p.stderr
        out = json.loads(p.stdout)
        torn += check_snapshot(out)
        taplive = next(d for d in out["devices"] if d["name"] == "taplive")
        assert taplive["queues_enabled"] == 2
        holders = {h["comm"] for q in taplive["queues"] for h in q["holders"]}
        assert "live-holder" in holders
        fulls += any(q["ring"]["full"] for q in taplive["queues"])
    # the unread queue fills up and stays full while traffic flows
    assert fulls >= RUNS // 2
    # torn snapshots are allowed only when flagged, and should be rare
    assert torn <= RUNS // 5


#: Reads while taps are created and deleted in the guest (issue 17).
CHURN_READS = int(os.environ.get("SKBINSPECT_LIVE_CHURN_READS", "100"))
CHURN_NAME = re.compile(r"churn[0-7]|churnq[0-3]")
#: One read over QMP under TCG takes a few seconds; this is a hang.
READ_LIMIT_S = 60.0
#: A read takes about 0.1 s and the guest (TCG) changes its devices a few times a second: the reads are
#: spaced so that they meet many of the churn's states.
CHURN_PAUSE_S = 0.3


def _api_reads_under_churn(g: Any, fixed_out: Dict[str, Set[str]]) -> Dict[str, Any]:
    """The Python API part of :func:`test_reads_while_taps_come_and_go`, in a function so that the program
    (and its QMP connection: QMP serves one client at a time) is gone when it returns."""
    from skbinspect import helpers
    from skbinspect.target.opener import open_target

    t = open_target(None, g.qmp_socket, g.symbols, False)
    prog = t.prog
    fixed = fixed_out["ring"] = {d.name for d in helpers.tap_devices(prog)}
    fixed_all = fixed_out["stats"] = {d.name for d in helpers.drop_stats(prog).devices}
    assert "taplive" in fixed and not any(CHURN_NAME.fullmatch(n) for n in fixed_all)
    g.guest.send("churn")
    seen: Dict[str, int] = {}
    sets = set()
    problems: List[str] = []
    slowest = 0.0
    t0 = time.monotonic()
    for i in range(CHURN_READS):
        kind = ("ring", "ring -e", "stats")[i % 3]
        start = time.monotonic()
        if kind == "stats":
            st = helpers.drop_stats(prog)
            names = [d.name for d in st.devices]
            problems += st.notes
            assert all(n in fixed_all or CHURN_NAME.fullmatch(n) for n in names), (i, names)
        else:
            devs = helpers.tap_devices(prog, entries=kind == "ring -e")
            names = [d.name for d in devs]
            problems += devs.problems
            assert "taplive" in names, (i, names)
            for d in devs:
                assert d.name in fixed or CHURN_NAME.fullmatch(d.name), (i, d.name)
                if d.name == "taplive":
                    if kind == "ring -e":
                        check_snapshot({"devices": [d.to_json(True)]})
                    assert len(d.queues) == 2 and d.queues[1].ring.analysis.full
            sets.add(frozenset(n for n in names if CHURN_NAME.fullmatch(n)))
        took = time.monotonic() - start
        slowest = max(slowest, took)
        assert took < READ_LIMIT_S, f"read {i} ({kind}) took {took:.0f} s"
        for n in names:
            if CHURN_NAME.fullmatch(n):
                seen[n] = seen.get(n, 0) + 1
        time.sleep(CHURN_PAUSE_S)  # a read takes well under a second: spread them over the churn's changes
    return {"seen": seen, "sets": len(sets), "problems": problems, "slowest": slowest,
            "seconds": time.monotonic() - t0}  # fmt: skip


def test_reads_while_taps_come_and_go(default_live_guest) -> None:  # type: ignore[no-untyped-def]
    """100 consecutive reads (ring, ring --entries, stats; through the Python API in one process, then a
    few CLI runs) while the guest creates and deletes tap devices (``churn_loop`` in the live scenario:
    persistent taps without queues, and taps whose two queues a holder fills and closes): no exception,
    no hang, every device listed is one the guest had (a fixed one, or one of the churn's names), taplive
    always read in full, and the churn seen (devices appearing and going between reads)."""
    g = default_live_guest
    fixed: Dict[str, Set[str]] = {}
    try:
        r = _api_reads_under_churn(g, fixed)
        gc.collect()
        t0 = time.monotonic()
        for args in (["--json", "ring"], ["--json", "ring", "--entries"], ["--json", "stats"], ["report"]):
            p = run_skbinspect("--qemu", g.qmp_socket, *symbols_args(g.symbols), *args, timeout=300)
            assert p.returncode == 0 and "Traceback" not in p.stderr, (args, p.stderr[-2000:])
            if args[0] == "--json":
                names = [d["name"] for d in json.loads(p.stdout)["devices"]]
                known = fixed[args[1]]
                assert all(n in known or CHURN_NAME.fullmatch(n) for n in names), names
        cli_s = time.monotonic() - t0
    finally:
        g.guest.send("calm")
    print(
        f"\n{CHURN_READS} API reads in {r['seconds']:.0f} s (slowest {r['slowest']:.1f} s), 4 CLI runs in "
        f"{cli_s:.0f} s; churn devices seen: {r['seen']}; {r['sets']} distinct sets"
    )
    # the churn ran under the reads: churn devices were listed, and the set changed between reads
    assert len(r["seen"]) >= 6 and r["sets"] >= 10, r
    # a list that changes is not damage: no walk may report a loop or stop
    assert not [p for p in r["problems"] if "walk stopped" in p or "loops" in p], r["problems"]
