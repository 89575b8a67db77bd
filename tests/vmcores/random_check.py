"""The property checks of a random scenario's vmcore (issue 14), shared by test_report_random.py and the
long mode (``python -m tests.vmcores random``).

Truth is the guest's: its ``ip -s -s link`` counters, its trace text (the drops at the drivers' enqueue
functions, ``tun_net_xmit`` and ``tap_handle_frame``, counted from the text; 5.10 prints bare addresses,
resolved with the guest's own kallsyms), each CPU's ring buffer stats (``overrun``: the trace holds every
event or not), and each held queue's frames drained after the dump (a queue is full when it drains a ring
of frames).  The properties:

(a) when the trace holds every event, the report's traced drops of each device equal its drop counter
    (drops the report says may be several devices' count for none of them: the counter then lies within
    the device's own plus those shared ones, and the sums over the scenario's devices are equal);
(b) no drop counted twice: no device has more tied drops than its counter, and the tied, shared and
    unattributed drops together are no more than the trace's drop events at the enqueue functions;
(c) no verdict states a cause the scenario contradicts: a queue a consumer reads is never full nor
    stalled; a held queue that drained a ring of frames is full with its reader stalled (or vhost named);
    a queue that drained less is not full; no verdict for a device the scenario did not create; no
    counter check blames the trace's window or uncounted frees when the trace holds every event.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .lab import LabVmcore
from .scenarios import CI_SEEDS, Group, Scenario, generate, seed_of

__all__ = ["Outcome", "check", "report_args", "site_drops", "trace_complete"]

ENQUEUE = ("tun_net_xmit", "tap_handle_frame")
STALLED = ("reader-stalled", "no-reader", "vhost-no-guest-buffers")


@dataclass
class Outcome:
    """What checking one random vmcore found."""

    kernel: str
    seed: int
    scenario: str  # Scenario.short()
    failures: List[str] = field(default_factory=list)
    facts: Dict[str, Any] = field(default_factory=dict)

    def message(self, lab: Optional[LabVmcore] = None) -> str:
        head = f"{self.kernel} seed {self.seed} ({len(self.failures)} failures)\n  {self.scenario}\n"
        if lab is not None:
            head += f"  vmcore: {lab.vmcore}\n  replay: python -m tests.vmcores random --seed {self.seed} --kernel {self.kernel}\n"
        head += f"  facts: {json.dumps(self.facts)}\n"
        return head + "\n".join(f"  - {f}" for f in self.failures)


def report_args(lab: LabVmcore) -> List[str]:
    """skbinspect's arguments for the JSON report of a random boot (reading its scenario's buffer)."""
    seed = seed_of(lab.boot)
    assert seed is not None, lab.boot
    inst = generate(seed).trace.instance
    args = ["-c", lab.vmcore]
    for s in lab.symbols:
        args += ["-s", s]
    return args + ["--json", "report"] + (["-i", inst] if inst else [])


def _trace_text(lab: LabVmcore, sc: Scenario) -> str:
    t = lab.truth["trace"]
    if sc.trace.instance is None:
        return str(t["top"].get("trace", ""))
    return str(t["instances"].get(sc.trace.instance, {}).get("trace", ""))


def trace_complete(lab: LabVmcore) -> Tuple[bool, Dict[str, int]]:
    """Whether the buffer the scenario traced into lost nothing: every CPU's ``overrun`` (and ``dropped
    events``, 5.10 on) is 0.  Tracing starts before any device exists, so then it holds every drop."""
    over: Dict[str, int] = {}
    for name, text in lab.truth.get("extra", {}).items():
        if not name.startswith("stats."):
            continue
        for key in ("overrun", "dropped events"):
            m = re.search(rf"^{key}: (\d+)", text, re.M)
            if m:
                over[f"{name[6:]} {key}"] = int(m.group(1))
    if not over:
        raise AssertionError("the guest recorded no ring buffer stats (truth extra/stats.cpuN)")
    return all(v == 0 for v in over.values()), over


def _kallsyms(lab: LabVmcore) -> Tuple[List[int], List[str]]:
    syms = []
    for line in lab.truth.get("extra", {}).get("kallsyms", "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "tTwW":
            syms.append((int(parts[0], 16), parts[2]))
    syms.sort()
    return [a for a, _ in syms], [n for _, n in syms]


def site_drops(lab: LabVmcore, sc: Scenario) -> Dict[str, int]:
    """kfree_skb events in the guest's trace text at each enqueue function."""
    addrs, names = _kallsyms(lab)
    out = {f: 0 for f in ENQUEUE}
    for m in re.finditer(r"kfree_skb: .*?location=(\S+)", _trace_text(lab, sc)):
        loc = m.group(1)
        fn = loc.split("+")[0]
        if re.fullmatch(r"(0x)?[0-9a-f]{16}", loc):  # 5.10: a bare address
            i = bisect.bisect_right(addrs, int(loc, 16)) - 1
            fn = names[i] if i >= 0 else ""
        if fn in out:
            out[fn] += 1
    return out


def _counter(lab: LabVmcore, dev: str, name: str) -> int:
    link = next(l for l in lab.truth["ip_link"] if l["ifname"] == dev)
    direction = name.split("_", 1)[0]
    return int(link["stats64"][direction]["dropped"])


def _drop_counter_name(g: Group) -> str:
    return "tx_dropped" if g.kind == "tun" else "rx_dropped"


def _enqueue(g: Group) -> str:
    return "tun_net_xmit" if g.kind == "tun" else "tap_handle_frame"


def _drained(lab: LabVmcore, g: Group) -> List[int]:
    h = lab.truth["holders"].get(g.holder)
    if h is None:
        raise AssertionError(f"no truth for holder {g.holder}")
    by = {q["index"]: len(q["frames_drained"]) for q in h["queues"]}
    return [by.get(i, 0) for i in range(g.queues)]


def check(lab: LabVmcore, report: Dict[str, Any], sc: Optional[Scenario] = None) -> Outcome:
    """Check ``report`` (``--json report``, with ``-i`` when the scenario traced into an instance) of a
    random boot's vmcore against the scenario and the guest's truth."""
    if sc is None:
        seed = seed_of(lab.boot)
        assert seed is not None, lab.boot
        sc = generate(seed)
    out = Outcome(lab.kernel.name, sc.seed, sc.short())
    fail = out.failures.append
    complete, stats = trace_complete(lab)
    sites = site_drops(lab, sc)
    out.facts.update(complete=complete, buffer_stats=stats, site_drops=sites)

    verdicts = report.get("verdicts", [])
    by_dev: Dict[str, List[Dict[str, Any]]] = {}
    for v in verdicts:
        by_dev.setdefault(v["device"], []).append(v)
    shared = report.get("shared_drops", [])
    unattr = report.get("unattributed_drops", [])
    tap_devices = {g.device for g in sc.groups}
    all_devices = {d for g in sc.groups for d in g.devices}

    # (c) no verdict for a device the scenario did not make
    for v in verdicts:
        if v["device"] not in tap_devices:
            fail(f"verdict for {v['device']} q{v['queue']}, not a device of the scenario: {v['summary']}")

    counters = {g.device: _counter(lab, g.device, _drop_counter_name(g)) for g in sc.groups}
    # A driver's drops are all in the trace when the buffer lost nothing, or (a wrapped buffer) when the
    # trace's drop events at its enqueue function are as many as its devices' counters: none can have
    # more traced than counted, so each then has all of its own.
    whole: Dict[str, bool] = {}
    for fn in ENQUEUE:
        devs = [g.device for g in sc.groups if _enqueue(g) == fn]
        whole[fn] = complete or (bool(devs) and sites[fn] == sum(counters[d] for d in devs))
    out.facts["whole"] = whole
    sum_tied = sum_counters = 0
    for g in sc.groups:
        vs = by_dev.get(g.device, [])
        tied = sum(int(v["drop_count"]) for v in vs)
        counter = counters[g.device]
        mine_shared = sum(int(s["count"]) for s in shared if g.device in s["candidates"])
        sum_tied += tied
        sum_counters += counter
        # (b) per device: the trace cannot hold more of its drops than it counted
        if tied > counter:
            fail(f"{g.device}: {tied} traced drops tied, more than its {_drop_counter_name(g)} {counter}")
        # (a)
        if whole[_enqueue(g)] and not tied <= counter <= tied + mine_shared:
            fail(
                f"{g.device}: the trace holds every drop of it, yet {tied} tied"
                + (f" (+{mine_shared} shared)" if mine_shared else "")
                + f" vs {_drop_counter_name(g)} {counter}"
            )
        # (c) per queue
        drained = _drained(lab, g)
        qv = {int(v["queue"]): v for v in vs if v["queue"] is not None}
        for v in vs:  # a device-level verdict (no queue full): neither full nor stalled
            if v["queue"] is None and (v["full"] or v["cause_code"] in STALLED):
                fail(f"{g.device}: a verdict for no queue says {v['cause_code']}: {v['summary']}")
        for q in range(g.queues):
            v = qv.get(q)
            if q in g.read:
                if v is not None and (v["full"] or v["cause_code"] in STALLED):
                    fail(f"{g.device} q{q} is read by a consumer, yet: {v['cause_code']}: {v['summary']}")
                continue
            full = counter > 0 if g.vhost else drained[q] >= g.ring
            if full:
                want = "vhost-no-guest-buffers" if g.vhost else "reader-stalled"
                if v is None:
                    fail(
                        f"{g.device} q{q} is full (drained {drained[q]} of a {g.ring}-slot ring): no verdict"
                    )
                elif not v["full"] or v["cause_code"] != want:
                    fail(
                        f"{g.device} q{q} full and held unread: verdict full={v['full']} "
                        f"cause {v['cause_code']!r}, expected {want!r}: {v['summary']}"
                    )
                elif g.vhost and not v.get("vhost_batch"):
                    fail(f"{g.device} q{q}: vhost holds a batch, the verdict says none: {v['summary']}")
            elif v is not None and v["full"]:
                fail(f"{g.device} q{q} drained {drained[q]} < ring {g.ring}, yet the verdict says full")
            if v is not None and not g.vhost and v["cause_code"] == "vhost-no-guest-buffers":
                fail(f"{g.device} q{q}: no vhost in this group, yet: {v['summary']}")
        if counter == 0 and tied:
            fail(f"{g.device} counted no drop, yet {tied} are tied to it")
    out.facts.update(counters=counters, tied=sum_tied)

    total_shared = sum(int(s["count"]) for s in shared)
    total_unattr = sum(int(u["count"]) for u in unattr)
    out.facts.update(shared=total_shared, unattributed=total_unattr)
    for s in shared:
        if not set(s["candidates"]) <= all_devices:
            fail(f"shared drops with candidates outside the scenario: {s}")
    # (b) overall: nothing counted twice
    at_sites = sum(sites.values())
    if sum_tied + total_shared + total_unattr > at_sites:
        fail(
            f"{sum_tied} tied + {total_shared} shared + {total_unattr} unattributed drops, "
            f"more than the trace's {at_sites} drop events at {' and '.join(ENQUEUE)}"
        )
    # (a) overall
    if complete:
        if sum_tied + total_shared != sum_counters:
            fail(
                f"the trace holds every drop: {sum_tied} tied + {total_shared} shared != counters {sum_counters}"
            )
        if total_unattr:
            fail(f"the trace holds every drop, yet {total_unattr} are unattributed: {unattr}")
    kind_of = {g.device: g for g in sc.groups}
    for c in report.get("counter_checks", []):
        cg = kind_of.get(c["device"])
        if cg is None or c["counter"] != _drop_counter_name(cg):
            continue
        g = cg
        if c["counter_value"] != counters[g.device]:
            fail(
                f"counter check reads {c['counter']} {c['counter_value']}, the guest says {counters[g.device]}"
            )
        if complete and c["verdict"] != "agree":
            fail(
                f"the trace holds every drop, yet the counter check says: {c['verdict']}: {c['explanation']}"
            )
        if whole[_enqueue(g)] and (
            "earlier than" in c["explanation"] or "without counting" in c["explanation"]
        ):
            fail(f"the trace holds every drop of {g.device}, yet its counter check says: {c['explanation']}")
    return out


def run_report(lab: LabVmcore) -> Dict[str, Any]:
    """``skbinspect --json report`` of a random boot, as a user runs it (a separate process)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.pop("SKBINSPECT_DEBUG", None)
    p = subprocess.run(
        [sys.executable, "-m", "skbinspect", *report_args(lab)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if p.returncode != 0 or "Traceback" in p.stderr:
        raise AssertionError(f"report failed (exit {p.returncode}): {p.stderr.strip()[-2000:]}")
    out: Dict[str, Any] = json.loads(p.stdout)
    return out


def long_run(kernels: List[str], seeds: List[int], jobs: int, keep: bool, out_path: Optional[str]) -> int:
    """Build and check ``seeds`` on ``kernels``, ``jobs`` guests at a time; 1 if any failed."""
    import shutil
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from .config import KERNELS
    from .kernels import fetch_kernel
    from .lab import build_vmcore
    from .scenarios import boot_name

    lock = threading.Lock()
    ks = {n: fetch_kernel(KERNELS[n]) for n in kernels}
    results: List[Dict[str, Any]] = []

    def one(job: Tuple[str, int]) -> None:
        name, seed = job
        t = time.monotonic()
        sc = generate(seed)
        rec: Dict[str, Any] = {"kernel": name, "seed": seed, "scenario": sc.short()}
        lab = None
        try:
            lab = build_vmcore(ks[name], boot_name(seed))
            rec["boot_s"] = lab.timings.get("total_s")
            o = check(lab, run_report(lab), sc)
            rec.update(failures=o.failures, facts=o.facts, vmcore=lab.vmcore)
            msg = o.message(lab) if o.failures else f"{name} seed {seed}: ok {json.dumps(o.facts)}"
        except Exception as e:  # a lab error, a report that failed, or the checker's own bug: recorded
            rec["failures"] = [f"{type(e).__name__}: {e}"]
            msg = f"{name} seed {seed}: ERROR {e}\n  {sc.short()}"
        rec["seconds"] = round(time.monotonic() - t, 1)
        if lab is not None and not rec["failures"] and not keep and seed not in CI_SEEDS:
            shutil.rmtree(lab.dir, ignore_errors=True)
        with lock:
            results.append(rec)
            print(msg, flush=True)
            if out_path:
                with open(out_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")

    with ThreadPoolExecutor(max(1, jobs)) as ex:
        list(ex.map(one, [(n, s) for s in seeds for n in kernels]))
    bad = [r for r in results if r["failures"]]
    print(
        f"random: {len(results)} runs ({len(seeds)} seeds x {len(kernels)} kernels), {len(bad)} failed"
        + "".join(f"\n  {r['kernel']} seed {r['seed']}: {r['failures'][0]}" for r in bad)
    )
    return 1 if bad else 0
