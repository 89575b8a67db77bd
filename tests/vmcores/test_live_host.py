"""skbinspect inside a running Debian kernel, with no options and only the standard -dbg files.

The ``host`` boot (guest/scenarios/host.sh, image from hostfs.py) runs the lab scenarios, then skbinspect
inside the guest as root with neither ``-c`` nor ``-s``: it opens ``/proc/kcore`` and finds the debug files
under ``/usr/lib/debug`` by itself.  The guest then drains the rings; its own view is the truth, and the
same checks as the vmcore tests apply.  Then, with traffic flowing, consecutive ``ring --entries --json``
runs; then a non-root user; then the -dbg files unmounted.  Every run on the frozen state is also made
without the -dbg files (BTF and kallsyms) and must give the same output (issue 15).
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from tests.vmcores import test_ring as ring_checks
from tests.vmcores.config import DEFAULT_KERNEL, KERNELS
from tests.vmcores.lab import HOST_RUNS_DEFAULT_KERNEL, LabVmcore, host_runs
from tests.vmcores.test_lab_info import NEEDED
from tests.vmcores.test_reasons import check_reasons_json
from tests.vmcores.test_ring_live import check_snapshot
from tests.vmcores.test_stats import check_stats_json
from tests.vmcores.test_trace import check_trace_json, check_trace_text, parse_records, truth_text


def run_of(lab: LabVmcore, name: str) -> Dict[str, Any]:
    runs = lab.truth.get("skbinspect")
    assert runs, "the host guest recorded no skbinspect runs"
    assert name in runs, f"no run {name!r}; the guest recorded {sorted(runs)}"
    return runs[name]


def ok_stdout(lab: LabVmcore, name: str) -> str:
    """stdout of a run that must have succeeded inside the guest."""
    r = run_of(lab, name)
    assert r["rc"] == 0, f"{name}: exit {r['rc']}: {r['stderr']}"
    assert "Traceback" not in r["stderr"]
    return r["stdout"] if "stdout" in r else (Path(lab.dir) / r["stdout_path"]).read_text()


def ok_json(lab: LabVmcore, name: str) -> Any:
    return json.loads(ok_stdout(lab, name))


# ---- ring: the same checks as on the vmcores ------------------------------------------------------------

#: test_ring's checks that take (lab, ring JSON): applied here to the JSON printed inside the guest.
RING_CHECKS: List[Callable[..., None]] = [
    f for name, f in vars(ring_checks).items()
    if name.startswith("test_") and list(inspect.signature(f).parameters) == ["lab_vmcore", "ring_all"]
]  # fmt: skip


def test_ring_checks_exist() -> None:
    assert len(RING_CHECKS) >= 5, [f.__name__ for f in RING_CHECKS]


@pytest.mark.parametrize("check", RING_CHECKS, ids=lambda f: f.__name__[len("test_") :])
def test_ring_inside_guest(live_host_lab: LabVmcore, check: Callable[..., None]) -> None:
    """`skbinspect --json ring --entries --stale` inside the guest, against what the guest drained."""
    check(live_host_lab, ok_json(live_host_lab, "ring"))


def test_ring_text_inside_guest(live_host_lab: LabVmcore) -> None:
    out = ok_stdout(live_host_lab, "ring-text")
    links = {link["ifname"]: link for link in live_host_lab.truth["ip_link"]}
    assert "tap0" in out and "FULL" in out.upper()
    assert str(links["tap0"]["txqlen"]) in out
    assert "tun-full" in out  # the holder process


# ---- reasons, stats, trace --------------------------------------------------------------------------------


def test_reasons_inside_guest(live_host_lab: LabVmcore) -> None:
    check_reasons_json(live_host_lab, ok_json(live_host_lab, "reasons"))


def test_stats_inside_guest(live_host_lab: LabVmcore) -> None:
    check_stats_json(live_host_lab.truth, ok_json(live_host_lab, "stats"))


@pytest.mark.parametrize("array", ["top", "skbinst"])
def test_trace_text_inside_guest(live_host_lab: LabVmcore, array: str) -> None:
    """`trace --stacks` inside the guest equals the guest's tracefs trace file, line for line."""
    name = "trace-text" if array == "top" else "trace-skbinst-text"
    check_trace_text(ok_stdout(live_host_lab, name), truth_text(live_host_lab, array))


@pytest.mark.parametrize("array", ["top", "skbinst"])
def test_trace_json_inside_guest(live_host_lab: LabVmcore, array: str) -> None:
    """`--json trace --stacks`: one object per event, in the guest's order, with its reason and address."""
    name = "trace-json" if array == "top" else "trace-skbinst-json"
    objs = [json.loads(line) for line in ok_stdout(live_host_lab, name).splitlines()]
    objs = [o for o in objs if o.get("record") != "summary"]  # the last line: losses, target, warnings
    truth = truth_text(live_host_lab, array)
    check_trace_json(objs, truth)
    events = [r for r in parse_records(truth) if r["event"] != "stack"]
    assert len(events) > 100 and any(o["event"] == "skb:kfree_skb" for o in objs)
    assert Counter(o["event"].split(":")[1] for o in objs if o["event"] != "ftrace:kernel_stack") == Counter(
        r["event"] for r in events
    )


# ---- info: the debug files found by itself ------------------------------------------------------------


def test_info_names_the_standard_debug_files(live_host_lab: LabVmcore) -> None:
    release = live_host_lab.truth["release"]
    info = ok_json(live_host_lab, "info-json")
    assert info["kind"] == "live" and info["release"] == release
    assert info["cpus_online"] == live_host_lab.truth["nproc"]
    # Debian's paths: /usr/lib/debug/boot/vmlinux-R, on 7.x a symlink to /usr/lib/debug/lib/modules/R/vmlinux
    assert info["vmlinux_debug_file"] in (
        f"/usr/lib/debug/boot/vmlinux-{release}",
        f"/usr/lib/debug/lib/modules/{release}/vmlinux",
    )
    mods = {m["name"]: m for m in info["modules"]}
    for name in NEEDED:
        assert mods[name]["loaded"], name
        assert mods[name]["debug_file"].startswith(f"/usr/lib/debug/lib/modules/{release}/kernel/"), mods[
            name
        ]
    assert info["missing_debug_info"] == []
    text = ok_stdout(live_host_lab, "info")
    assert release in text and info["vmlinux_debug_file"] in text
    assert mods["tun"]["debug_file"] in text
    assert "MISSING" not in text


# ---- races: consecutive runs with traffic flowing ---------------------------------------------------------


def test_consecutive_live_runs_inside_guest(live_host_lab: LabVmcore) -> None:
    """With a sender and a reader running, every `--json ring --entries` run succeeded and each snapshot is
    self-consistent (a torn one is flagged, never listed wrong)."""
    runs = sorted(
        (n for n in live_host_lab.truth["skbinspect"] if n.startswith("race-")),
        key=lambda n: int(n.split("-")[1]),
    )
    want = host_runs(live_host_lab.kernel)
    if live_host_lab.kernel.name == DEFAULT_KERNEL and not os.environ.get("SKBINSPECT_LAB_HOST_RUNS"):
        assert want == HOST_RUNS_DEFAULT_KERNEL == 50
    assert len(runs) == want
    torn = fulls = 0
    producers = set()
    live_pid = int(re.search(r"pid (\d+)", live_host_lab.truth["live_info"]).group(1))
    for n in runs:
        out = ok_json(live_host_lab, n)
        torn += check_snapshot(out)
        taplive = next(d for d in out["devices"] if d["name"] == "taplive")
        assert taplive["queues_enabled"] == 2
        holders = {(h["pid"], h["comm"]) for q in taplive["queues"] for h in q["holders"]}
        assert (live_pid, "live-holder") in holders  # and its reader child, which shares the fds
        assert {c for _, c in holders} <= {"live-holder", "skblab-reader"}
        fulls += any(q["ring"]["full"] for q in taplive["queues"])
        producers.add(tuple(q["ring"]["producer"] for q in taplive["queues"]))
    assert len(producers) > 1, "the rings did not move between runs: no traffic was flowing"
    assert fulls >= len(runs) // 2  # the unread queue fills and stays full
    assert torn <= max(1, len(runs) // 5)


# ---- the two ways it must refuse ----------------------------------------------------------------------------


def test_non_root_is_told_plainly(live_host_lab: LabVmcore) -> None:
    r = run_of(live_host_lab, "nonroot")
    assert r["rc"] != 0 and r["rc"] != 70
    assert r["stdout"] == ""
    err = r["stderr"]
    assert "Traceback" not in err
    assert "root" in err and "CAP_SYS_RAWIO" in err
    assert "-c" in err or "vmcore" in err  # what to do instead


def _old_kernel(lab: LabVmcore) -> bool:
    """5.10: no module BTF (it arrived in 5.11), so the modules' types need the -dbg package."""
    return KERNELS[lab.kernel.name].series == "5.10"


def test_missing_dbg_package_is_named_only_where_needed(live_host_lab: LabVmcore) -> None:
    """Without the -dbg files: 6.1+ reads its own BTF and kallsyms; 5.10 reads vmlinux's but has no
    module BTF, so it names the package for the modules' part."""
    release = live_host_lab.truth["release"]
    r = run_of(live_host_lab, "nodbg")
    err = r["stderr"]
    assert "Traceback" not in err
    if not _old_kernel(live_host_lab):
        assert r["rc"] == 0, err
        assert "tap0" in r["stdout"] and "taplive" not in r["stdout"]
        return
    # 5.10: vmlinux's types from BTF, but none for the modules: tap0 is listed without its queues, and the
    # warning names the package (exit 0: what can be read is)
    assert r["rc"] == 0, err
    assert "tap0" in r["stdout"] and "module tun has no debug info" in r["stdout"]
    assert "module tun is loaded but has no debug info" in err and f"linux-image-{release}-dbg" in err
    assert not re.search(r"(?im)^(drgn|\s*File \")", err), err


# ---- without the -dbg files: BTF and kallsyms, on the same frozen state as the DWARF runs ------------------

#: runs made with the -dbg files (NAME) and again without them (btf-NAME), outputs compared whole
SAME_WITHOUT_DBG = [
    "ring",
    "reasons",
    "stats",
    "trace-json",
    "trace-skbinst-json",
    "trace-text",
    "trace-skbinst-text",
    "ring-text",
    "drops-json",
    "report-json",
]
#: on 5.10 only what needs no module types
SAME_WITHOUT_DBG_5_10 = ["reasons", "trace-json", "trace-skbinst-json", "trace-text", "trace-skbinst-text"]


def _info_without_debug_fields(info: Dict[str, Any]) -> Dict[str, Any]:
    info = {k: v for k, v in info.items() if k not in ("vmlinux_debug_file", "debug_sources", "kernel_time")}
    info["modules"] = [{k: v for k, v in m.items() if k != "debug_file"} for m in info["modules"]]
    return info


@pytest.mark.parametrize("name", SAME_WITHOUT_DBG)
def test_without_dbg_files_every_command_gives_the_same_output(live_host_lab: LabVmcore, name: str) -> None:
    lab = live_host_lab
    if _old_kernel(lab) and name not in SAME_WITHOUT_DBG_5_10:
        r = run_of(lab, f"btf-{name}")
        assert "Traceback" not in r["stderr"] and r["rc"] in (0, 3), r
        if name.startswith("ring"):  # no module types: devices without their queues, the package named
            package = f"linux-image-{lab.truth['release']}-dbg"
            if name == "ring":  # --json: the warnings are in the document
                doc = ok_json(lab, f"btf-{name}")
                assert any(package in w for w in doc["warnings"]), doc["warnings"]
            else:
                assert package in r["stderr"]
            assert "module tun has no debug info" in ok_stdout(lab, f"btf-{name}")
        return
    if name in ("ring", "report-json"):
        btf_doc, dwarf_doc = ok_json(lab, f"btf-{name}"), ok_json(lab, name)
        assert _without_what_changes_between_runs(btf_doc) == _without_what_changes_between_runs(dwarf_doc)
    elif _old_kernel(lab) and ok_stdout(lab, name).startswith("{"):  # a JSON document or JSON lines
        # 5.10 without -dbg: the modules have no types (no module BTF before 5.11), which the JSON's
        # warnings say, naming the package; everything else is the same
        package = f"linux-image-{lab.truth['release']}-dbg"
        btf, dwarf = _json_docs(ok_stdout(lab, f"btf-{name}")), _json_docs(ok_stdout(lab, name))
        warned = [w for d in btf for w in d.pop("warnings", [])]
        assert any(package in w for w in warned), warned
        assert not [w for d in dwarf for w in d.pop("warnings", [])]
        assert btf == dwarf
    else:
        assert ok_stdout(lab, f"btf-{name}") == ok_stdout(lab, name)
    assert run_of(lab, f"btf-{name}")["stderr"] == run_of(lab, name)["stderr"]


def _json_docs(text: str) -> List[Dict[str, Any]]:
    """A JSON document, or JSON lines (trace --json), as a list of objects."""
    text = text.strip()
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines()]


def _without_what_changes_between_runs(out: Dict[str, Any]) -> Dict[str, Any]:
    """``ring`` or ``report`` JSON without what a live kernel changes between two runs: what they decode
    from freed skbs (stale ring slots, stale skbs of a report) is memory the running kernel reuses (the
    runs themselves allocate), so only where it is is kept; the report's dump time and how it was found
    are the moment of each run."""
    out = json.loads(json.dumps(out))
    for d in out.get("devices", ()):
        for q in d.get("queues", ()):
            q["stale_entries"] = [
                {"index": e.get("index"), "address": e.get("address")} for e in q["stale_entries"]
            ]
    for v in out.get("verdicts", ()):
        v["stale_skbs"] = [{"address": s["address"], "ts_s": s.get("ts_s")} for s in v.get("stale_skbs", ())]
        # the time before "the dump" is before the run on a live kernel: it grows between two runs
        for k in ("first_before_dump_s", "last_before_dump_s"):
            v.pop(k, None)
    if "dump_s" in out:  # the run queues' clock at each run, and the verdict lines that say it
        out.pop("dump_s")
        out["headlines"] = [{k: h[k] for k in h if k != "text"} for h in out.get("headlines", ())]
    if "dump_basis" in out:
        # how the dump time was found depends on the moment on a live kernel: sched_clock may turn
        # unstable between two runs (the clocksource watchdog, on a loaded TCG guest: seen on trixie, the
        # first run past the stability check and the next one not), and an idle CPU's run-queue clock lags
        # the trace.  Kept: whether the clocks could be read at all (BTF mode once could not).
        out["dump_basis"] = "unreadable" in out["dump_basis"]
    return out


def test_without_dbg_files_info_says_where_types_came_from(live_host_lab: LabVmcore) -> None:
    lab = live_host_lab
    dwarf, btf = ok_json(lab, "info-json"), ok_json(lab, "btf-info-json")
    assert btf["vmlinux_debug_file"] is None and "debug_sources" not in dwarf
    src = btf["debug_sources"]
    assert src["vmlinux"] == {"types": "BTF from /sys/kernel/btf/vmlinux", "symbols": "/proc/kallsyms"}
    if _old_kernel(lab):
        assert set(src) == {"vmlinux"} and "tun" in btf["missing_debug_info"]
        assert any("module tun is loaded but has no debug info" in w for w in btf["warnings"])
        return
    assert _info_without_debug_fields(btf) == _info_without_debug_fields(dwarf)
    for name in NEEDED:
        assert src[name] == {
            "types": f"BTF from /sys/kernel/btf/{name}",
            "symbols": "kallsyms from kernel memory",
        }
    assert "BTF from /sys/kernel/btf/vmlinux" in ok_stdout(lab, "btf-info")


def test_without_dbg_files_and_with_kallsyms_hidden(live_host_lab: LabVmcore) -> None:
    """kernel.kptr_restrict=2 zeroes /proc/kallsyms' addresses even for root: kallsyms are then read from
    kernel memory (located through VMCOREINFO, 6.0+); 5.10 says what is missing."""
    lab = live_host_lab
    r = run_of(lab, "btf-kptr-ring")
    if _old_kernel(lab):
        assert r["rc"] == 3 and "Traceback" not in r["stderr"]
        assert "kptr_restrict" in r["stderr"] and f"linux-image-{lab.truth['release']}-dbg" in r["stderr"]
        return
    assert ok_stdout(lab, "btf-kptr-ring") == ok_stdout(lab, "ring")
    src = ok_json(lab, "btf-kptr-info-json")["debug_sources"]
    assert src["vmlinux"]["symbols"] == "kallsyms from kernel memory"


def test_time_with_and_without_dbg_files(live_host_lab: LabVmcore) -> None:
    """Each run's wall time inside the guest (TCG), with the -dbg files and without (made one right after
    the other): printed for the record (pytest -s), and without them no slower than twice as slow."""
    lab = live_host_lab
    names = SAME_WITHOUT_DBG_5_10 if _old_kernel(lab) else SAME_WITHOUT_DBG + ["info-json"]
    rows = [(n, run_of(lab, n)["seconds"], run_of(lab, f"btf-{n}")["seconds"]) for n in names]
    print(
        f"\n{lab.kernel.name} ({lab.truth['release']}) run times in the guest, seconds: with -dbg / without"
    )
    for n, d, b in rows:
        print(f"  {n:22s} {d:7.2f} {b:7.2f}")
    total_d, total_b = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"  {'total':22s} {total_d:7.2f} {total_b:7.2f}  ratio {total_b / total_d:.2f}")
    assert total_b <= 2 * total_d
