"""``skbinspect report`` against each lab vmcore's truth: the full queues, their drops (counts from the
guest's own trace text), the stalled readers, the counters, and the plain-text verdicts."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from tests.conftest import run_skbinspect
from tests.vmcores.agreement import assert_agree
from tests.vmcores.drgn_session import location_key, truth_callers_at, truth_kfree_counts
from tests.vmcores.lab import LabVmcore
from tests.vmcores.test_lab_info import symbols_args

#: The lab's full queues: device -> (holder process, the driver function that drops on a full ring).
LAB_FULL = {
    "tap0": ("tun-full", "tun_net_xmit"),
    "macvtap0": ("macvtap-full", "tap_handle_frame"),
    "ipvtap0": ("ipvtap-full", "tap_handle_frame"),
}


@pytest.fixture(scope="module")
def report(lab_vmcore: LabVmcore) -> Dict[str, Any]:
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "--json", "report")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def report_text(lab_vmcore: LabVmcore) -> str:
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "report")
    assert p.returncode == 0, p.stderr  # a report, not a check: problems found, still 0
    assert "Traceback" not in p.stderr
    return p.stdout


def _unsure(v: Dict[str, Any]) -> int:
    return sum(d["count"] for d in v["drops"] if d["tied_by"].endswith("(ambiguous)"))


def _old(lab: LabVmcore) -> bool:
    return lab.kernel.release.startswith("5.10")


def test_full_queues_are_the_verdicts(lab_vmcore: LabVmcore, report: Dict[str, Any]) -> None:
    truth = lab_vmcore.truth
    links = {l["ifname"]: l for l in truth["ip_link"]}
    verdicts = {v["device"]: v for v in report["verdicts"]}
    assert set(verdicts) == set(LAB_FULL), [v["summary"] for v in report["verdicts"]]
    # full rings first
    assert all(v["full"] for v in report["verdicts"][: len(LAB_FULL)])
    for dev, (holder, _fn) in LAB_FULL.items():
        v = verdicts[dev]
        size = links[dev]["txqlen"]
        assert v["full"] and v["size"] == size and v["live"] == size and v["queue"] == 0
        h = truth["holders"][holder]
        assert [(x["pid"], x["comm"], x["kind"]) for x in v["holders"]] == [(h["pid"], h["comm"], "process")]
        assert f"pid {h['pid']} ({holder})" in v["cause"] and "has not consumed" in v["cause"]
        assert f"{dev} queue 0 full ({size}/{size})" in v["summary"]


def test_drops_tied_to_full_queues_count_like_the_trace(
    lab_vmcore: LabVmcore, report: Dict[str, Any]
) -> None:
    truth = truth_kfree_counts(lab_vmcore)
    printed = list(truth["location"])
    verdicts = {v["device"]: v for v in report["verdicts"]}
    shared: Dict[str, int] = {}  # location -> drops that may be macvtap0's or ipvtap0's
    for dev, (_, fn) in LAB_FULL.items():
        v = verdicts[dev]
        assert v["drops"], dev
        keys = {location_key(d["location"], d["location_symbol"], printed) for d in v["drops"]}
        assert len(keys) == 1, v["drops"]
        key = keys.pop()
        assert all(d["location_symbol"].split("+")[0] == fn for d in v["drops"])
        if fn == "tap_handle_frame":
            # macvtap0 and ipvtap0 both drop there: their drops are told apart by the callers in each
            # event's stack, as the guest's own stack records show them; the rest is counted for both
            callers = truth_callers_at(lab_vmcore, key)
            assert sum(callers.values()) == truth["location"][key]
            kind = v["kind"]
            by_stack = [d for d in v["drops"] if d["tied_by"] == "stack"]
            unsure = [d for d in v["drops"] if d["tied_by"] == "driver (ambiguous)"]
            assert sum(d["count"] for d in by_stack) == callers.get(kind, 0) > 0
            assert sum(d["count"] for d in unsure) == callers.get(None, 0)
            shared[key] = callers.get(None, 0)
            # issue 14: the shared drops are counted once (report["shared_drops"]), in neither device's count
            assert v["drop_count"] == callers[kind]
        else:
            assert len(v["drops"]) == 1
            assert v["drops"][0]["count"] == v["drop_count"] == truth["location"][key]
        for d in v["drops"]:
            if _old(lab_vmcore):
                assert d["reason"] is None  # 5.10: no reasons, still the location and the count
            else:
                assert d["reason"] == "FULL_RING"
        if not _old(lab_vmcore):
            assert truth["location_reason"][f"{key}|FULL_RING"] == truth["location"][key]
        assert f"{v['drop_count']} {v['drops'][0]['reason'] or 'drops'} in {fn}" in v["summary"]
    # the rest of the trace's drops are the other groups, each counted like the trace: nothing lost, and
    # nothing counted twice (issue 14: the drops shared by macvtap0 and ipvtap0 are counted once)
    tied = sum(v["drop_count"] for v in report["verdicts"])
    other = sum(g["count"] for g in report["other_drops"])
    once = sum(s["count"] for s in report["shared_drops"])
    assert once == sum(shared.values())
    assert all(sorted(s["candidates"]) == ["ipvtap0", "macvtap0"] for s in report["shared_drops"])
    assert tied + once + other == sum(truth["location"].values()) == report["trace"]["kfree_skb_events"]
    for g in report["other_drops"]:
        assert truth["location"][location_key(g["location"], g["location_symbol"], printed)] == g["count"]
    assert all(
        g["location_symbol"].split("+")[0] not in ("tun_net_xmit", "tap_handle_frame")
        for g in report["other_drops"]
    )


def test_counters_agree_with_the_truth(lab_vmcore: LabVmcore, report: Dict[str, Any]) -> None:
    """The device counter tied to each full queue equals the guest's own ``ip -s -s link`` counter."""
    links = {l["ifname"]: l for l in lab_vmcore.truth["ip_link"]}
    checks = {c["device"]: c for c in report["counter_checks"]}
    for dev in LAB_FULL:
        c = checks[dev]
        direction, name = c["counter"].split("_", 1)
        assert links[dev]["stats64"][direction]["dropped"] == c["counter_value"]
        v = next(v for v in report["verdicts"] if v["device"] == dev)
        # drops the trace cannot tell apart from another device's (macvtap0/ipvtap0 without a telling stack)
        unsure = sum(d["count"] for d in v["drops"] if d["tied_by"].endswith("(ambiguous)"))
        assert c["trace_count"] == v["drop_count"] + unsure
        n, value = c["trace_count"], c["counter_value"]
        want = (
            "agree"
            if value == n or (unsure and n - unsure <= value <= n)
            else ("counter-higher" if value > n else "trace-higher")
        )
        assert c["verdict"] == want


def test_trace_limits(lab_vmcore: LabVmcore, report: Dict[str, Any]) -> None:
    top = lab_vmcore.truth["trace"]["top"]["trace"]
    line = next(l for l in top.splitlines() if l.startswith("# entries-in-buffer/entries-written:"))
    entries, written = (int(x) for x in line.split(":", 1)[1].split()[0].split("/"))
    t = report["trace"]
    assert (t["entries"], t["written"]) == (entries, written)
    assert t["lost"] == written - entries
    assert t["has_reasons"] is (not _old(lab_vmcore))
    kfree_ts = [
        float(l.split("kfree_skb:")[0].split()[-1].rstrip(":")) for l in top.splitlines() if "kfree_skb:" in l
    ]
    assert abs(t["first_s"] - min(kfree_ts)) < 2e-6 and abs(t["last_s"] - max(kfree_ts)) < 2e-6


def test_memory_reuse_and_stale_skbs_are_marked(report: Dict[str, Any]) -> None:
    for r in report["reused"]:
        assert r["drops"] >= 1
    for v in report["verdicts"]:
        for s in v["stale_skbs"]:
            assert s["slab_state"] in ("free", "reused", "unknown")
            if s["slab_state"] != "free":
                assert s["error"] and s["summary"] is None and s["device"] is None
            if s["device"] is not None and not s["device"].startswith("0x"):
                assert s["device"] == v["device"]
    names = {r["name"] for r in report["rules"]}
    assert names == {
        "ring-full drops",
        "stalled reader",
        "counters against the trace",
        "memory reused",
        "stale skbs",
    }


def test_text_report_names_queue_reason_location_and_reader(
    lab_vmcore: LabVmcore, report: Dict[str, Any], report_text: str
) -> None:
    head, _, rest = report_text.partition("Evidence")
    # the rules are behind --explain
    assert "How drops were tied to queues" not in rest and "--explain" in rest
    for v in report["verdicts"]:
        assert " ".join(v["summary"].split()) in " ".join(head.split())
        for h in v["holders"]:
            assert f"reader: pid {h['pid']} ({h['comm']})" in head
        for d in v["drops"]:
            assert f"{d['count']} {d['reason'] or '-'} at {d['location_symbol']}" in " ".join(head.split())


def _run_text(lab: LabVmcore, *args: str) -> str:
    p = run_skbinspect(
        "-c", lab.vmcore, *symbols_args(lab.symbols), "report", *args, env={"COLUMNS": "80", "LINES": "24"}
    )
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return p.stdout


def test_verdict_lines_come_first_and_fit_80_columns(lab_vmcore: LabVmcore, report: Dict[str, Any]) -> None:
    """Issue 14: one line per device with a verdict, right under the title, each within 80 columns, each
    naming the device, its full queues and the count of drops tied to it, derived from the verdicts."""
    text = _run_text(lab_vmcore)
    lines = text.splitlines()
    heads = report["headlines"]
    assert [h["device"] for h in heads] == list(dict.fromkeys(v["device"] for v in report["verdicts"]))
    assert [l.strip() for l in lines[1 : 1 + len(heads)]] == [h["text"] for h in heads]
    links = {l["ifname"]: l for l in lab_vmcore.truth["ip_link"]}
    for h, line in zip(heads, lines[1 : 1 + len(heads)]):
        assert len(line) <= 80, line
        vs = [v for v in report["verdicts"] if v["device"] == h["device"]]
        n = sum(v["drop_count"] for v in vs)
        amb = sum(_unsure(v) for v in vs)
        size = links[h["device"]]["txqlen"]
        assert line.split(" · ")[0].strip() == f"{h['device']} q0 FULL {size}/{size}"
        assert line.split(" · ")[1].startswith(f"{n} FULL_RING" if not _old(lab_vmcore) else f"{n} drops")
        assert (f"(+{amb} shared)" in line) == bool(amb)
        holder = LAB_FULL[h["device"]][0]
        assert f"pid {lab_vmcore.truth['holders'][holder]['pid']} " in line
        assert h["cause_code"] == vs[0]["cause_code"] == "reader-stalled"
    # the time before the dump: a lower bound from the run queues' clocks, never before the trace's end
    assert report["dump_s"] is None or report["dump_s"] >= report["trace"]["last_s"]
    # the whole report is longer than a screen: the verdict lines are repeated at the end
    assert lines[-len(heads) - 1 :] == ["Verdicts (again)"] + lines[1 : 1 + len(heads)]


def test_report_explain_and_verbose(lab_vmcore: LabVmcore, report: Dict[str, Any]) -> None:
    """The tying rules only with --explain; stale skbs folded into a count, listed with --verbose."""
    plain = _run_text(lab_vmcore)
    assert "How drops were tied to queues" not in plain
    assert "How drops were tied to queues" in _run_text(lab_vmcore, "--explain")
    stale = sum(len(v["stale_skbs"]) for v in report["verdicts"])
    assert stale  # the lab's full queues have recent drops
    assert "stale skb 0x" not in plain
    assert plain.count("--verbose lists them") == sum(1 for v in report["verdicts"] if v["stale_skbs"])
    assert _run_text(lab_vmcore, "--verbose").count("stale skb 0x") == stale


def test_report_without_module_debug_info(lab_vmcore: LabVmcore) -> None:
    """Only the vmlinux: queues cannot be read, yet the report still names the dropping devices with the
    trace's counts (tied by driver and counters), says what it cannot know, and exits 0."""
    vmlinux = lab_vmcore.symbols[0]
    # --types dwarf: else the modules' BTF fills in (tests/vmcores/test_btf.py)
    p = run_skbinspect(
        "-c", lab_vmcore.vmcore, "--no-default-symbols", "--types", "dwarf", "-s", vmlinux, "--json", "report"
    )
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    rep = json.loads(p.stdout)
    assert any("module tun" in n and "debug info" in n for n in rep["notes"])
    truth = truth_kfree_counts(lab_vmcore)
    printed = list(truth["location"])
    verdicts = {v["device"]: v for v in rep["verdicts"]}
    assert set(verdicts) >= set(LAB_FULL)
    # where the driver's counters are unreadable too (5.10's tun keeps its own per-CPU stats), the drops
    # can only be tied to every device of the driver: marked ambiguous
    for dev in set(verdicts) - set(LAB_FULL):
        assert all(d["tied_by"] == "driver (ambiguous)" for d in verdicts[dev]["drops"])
        assert any("several" in n for n in verdicts[dev]["notes"])
    for dev, (_, fn) in LAB_FULL.items():
        v = verdicts[dev]
        assert not v["full"] and v["queue"] is None and v["holders"] == []
        assert "could not be read" in v["cause"]
        assert v["drops"] and all(d["location_symbol"].split("+")[0] == fn for d in v["drops"])
        (key,) = {location_key(d["location"], d["location_symbol"], printed) for d in v["drops"]}
        if fn == "tap_handle_frame":  # shared by macvtap0 and ipvtap0: told apart by stack, the rest shared
            callers = truth_callers_at(lab_vmcore, key)
            assert v["drop_count"] + _unsure(v) == callers[v["kind"]] + callers.get(None, 0)
        else:
            # issue 14: tap0's drops may be tapmq's too (no counter readable to tell): counted once, shared
            assert v["drop_count"] + _unsure(v) == truth["location"][key]
    # the macvlan driver's counters need its module: no false "not counted" claim
    checks = {c["device"]: c for c in rep["counter_checks"]}
    assert checks["macvtap0"]["verdict"] in ("agree", "unknown")


def test_memory_reuse_equals_ring_entries_at_dropped_addresses(
    lab_vmcore: LabVmcore, report: Dict[str, Any]
) -> None:
    """Reused = the live ring entries whose address the guest's trace shows in a kfree_skb event."""
    dropped: Dict[int, int] = {}
    for line in lab_vmcore.truth["trace"]["top"]["trace"].splitlines():
        if "kfree_skb:" in line and "skbaddr=" in line:
            a = int(line.split("skbaddr=", 1)[1].split()[0], 16)
            dropped[a] = dropped.get(a, 0) + 1
    p = run_skbinspect(
        "-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "--json", "ring", "--entries"
    )
    assert p.returncode == 0, p.stderr
    want = set()
    for d in json.loads(p.stdout)["devices"]:
        for q in d["queues"]:
            for e in q["entries"]:
                a = int(e["address"], 16)
                if a in dropped:
                    want.add((d["name"], q["index"], e["index"], a, dropped[a]))
    got = {(r["device"], r["queue"], r["slot"], int(r["address"], 16), r["drops"]) for r in report["reused"]}
    assert got == want


def test_report_and_drops_agree(lab_vmcore: LabVmcore) -> None:
    """Issue 14: per device, the traced drops the report ties equal what ``drops`` attributes to that
    device and the devices that feed it, in the top-level buffer and in each trace instance."""
    instances = [None] + sorted(lab_vmcore.truth["trace"].get("instances") or {})
    for inst in instances:
        args = ["-i", inst] if inst else []
        out = {}
        for cmd in ("drops", "report"):
            p = run_skbinspect(
                "-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "--json", cmd, *args
            )
            assert p.returncode == 0, p.stderr
            out[cmd] = json.loads(p.stdout)
        assert_agree(out["drops"], out["report"])
        if inst is None:
            # the lab's full queues all have traced drops, tied on both sides
            assert {v["device"] for v in out["report"]["verdicts"] if v["drop_count"]} == set(LAB_FULL)
