"""``skbinspect trace`` / ``drops`` and the ftrace decoder on every lab kernel, against the guest's own
tracefs ``trace`` files (truth: ``trace.top.trace`` and ``trace.instances.skbinst.trace``).

The lab kernels boot with ``no_hash_pointers``, so the guest's text shows the real addresses the decoder
reads.  The top-level buffer holds kfree_skb and consume_skb with ``options/stacktrace``; the instance
``skbinst`` has wrapped several times and, on 6.8+, uses 8 KiB sub-buffers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.conftest import run_skbinspect
from tests.vmcores.lab import LabVmcore

ARRAYS = ["top", "skbinst"]

_LINE = re.compile(
    r"^(?P<comm>.*)-(?P<pid>\d+)\s+\[(?P<cpu>\d{3})\] (?P<flags>\S+)\s+(?P<ts>\d+\.\d{6}): (?P<body>.*)$"
)
_HEADER = re.compile(r"entries-in-buffer/entries-written: (\d+)/(\d+)\s+#P:(\d+)")


def symbols_args(paths: List[str]) -> List[str]:
    return sum((["-s", p] for p in paths), [])


def truth_text(lab: LabVmcore, array: str) -> str:
    t = lab.truth["trace"]
    return t["top"]["trace"] if array == "top" else t["instances"][array]["trace"]


def body_lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def parse_records(text: str) -> List[Dict[str, Any]]:
    """The guest's trace file as records: context fields, body, and the frames of a stack record."""
    recs: List[Dict[str, Any]] = []
    for line in body_lines(text):
        if line.startswith(" => "):
            recs[-1]["frames"].append(line[4:])
            continue
        m = _LINE.match(line)
        assert m, f"unparsed trace line {line!r}"
        d: Dict[str, Any] = m.groupdict()
        d["comm"] = d["comm"].strip()
        d["pid"] = int(d["pid"])
        d["cpu"] = int(d["cpu"])
        d["frames"] = []
        d["event"] = "stack" if d["body"] == "<stack trace>" else d["body"].split(":", 1)[0]
        recs.append(d)
    return recs


def with_stacks(recs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The event records (stack records left out), each with ``stacks``: the frames of the stack records
    that follow it on its CPU."""
    out: List[Dict[str, Any]] = []
    last_on_cpu: Dict[int, Dict[str, Any]] = {}
    for r in recs:
        if r["event"] == "stack":
            owner = last_on_cpu.get(r["cpu"])
            if owner is not None:
                owner["stacks"].append(r["frames"])
            continue
        r["stacks"] = []
        last_on_cpu[r["cpu"]] = r
        out.append(r)
    return out


def kv(body: str) -> Dict[str, str]:
    """``skbaddr=... protocol=... location=... reason: X`` as a dict."""
    event, rest = body.split(": ", 1)
    out = {}
    m = re.search(r" reason: (\S+)$", rest)
    if m:
        out["reason"] = m.group(1)
        rest = rest[: m.start()]
    for m in re.finditer(r"(\w+)=(\S+(?: \[\w+\])?)", rest):
        out[m.group(1)] = m.group(2)
    return out


_targets: Dict[str, Any] = {}


def target(lab: LabVmcore) -> Any:
    from skbinspect.target.opener import open_target

    key = lab.vmcore
    if key not in _targets:
        _targets.clear()  # one kernel's program at a time
        _targets[key] = open_target(core=lab.vmcore, symbols=lab.symbols)
    return _targets[key]


def cli(lab: LabVmcore, *args: str) -> Any:
    p = run_skbinspect("-c", lab.vmcore, *symbols_args(lab.symbols), *args)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return p


# ---- the text equals the guest's trace file ----------------------------------------------------------


@pytest.mark.parametrize("array", ARRAYS)
def test_trace_text_equals_guest_trace_file(lab_vmcore: LabVmcore, array: str) -> None:
    """Every record (skb events, every other event, every stack frame) line for line, in order."""
    args = ["trace", "--stacks"] + (["-i", array] if array != "top" else [])
    p = cli(lab_vmcore, *args)
    check_trace_text(p.stdout, truth_text(lab_vmcore, array))


def check_trace_text(out: str, truth: str) -> None:
    """``trace --stacks`` text against the guest's trace file: every record line for line, in order, and
    the header's counts (entries-in-buffer / entries-written, CPUs), which are the kernel's own."""
    ours, theirs = body_lines(out), body_lines(truth)
    assert len(theirs) > 1000
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"line {i}: ours {a!r} != guest's {b!r}"
    assert len(ours) == len(theirs)
    assert _HEADER.search(out).groups() == _HEADER.search(truth).groups()


@pytest.mark.parametrize("array", ARRAYS)
def test_buffer_counters_and_losses(lab_vmcore: LabVmcore, array: str) -> None:
    from skbinspect.ftrace.reader import find_trace_array, trace_reader

    prog = target(lab_vmcore).prog
    tr = find_trace_array(prog, None if array == "top" else array)
    entries, written, ncpu = map(int, _HEADER.search(truth_text(lab_vmcore, array)).groups())
    assert (tr.entries, tr.written, len(tr.cpus)) == (entries, written, ncpu)
    r = trace_reader(prog, None if array == "top" else array)
    n = sum(len(keys) for keys, _ in r.windows())
    assert n == entries and r.damage == []
    assert tr.lost == written - entries
    if array == "skbinst":
        assert tr.lost > 0  # the instance wrapped, and that is said
        assert sum(c.overrun for c in tr.cpus) == written - entries
    # the sub-buffer size of the target: 8 KiB for the instance where the kernel has sub-buffer sizes (6.8+)
    inst = lab_vmcore.truth["trace"]["instances"]["skbinst"]
    if array == "skbinst" and "buffer_subbuf_size_kb" in inst:
        assert tr.subbuf_size == int(inst["buffer_subbuf_size_kb"]) * 1024 == 8192
    else:
        assert tr.subbuf_size == 4096


# ---- structured events against the guest's lines ----------------------------------------------------------


@pytest.mark.parametrize("array", ARRAYS)
def test_skb_events_equal_guest_records(lab_vmcore: LabVmcore, array: str) -> None:
    """The Python API's skb events: count, order, CPU, pid, comm, time, skb address, location, protocol,
    reason name and stack frames equal the guest's records."""
    from skbinspect.ftrace.skb_events import iter_skb_events, symbolizer

    prog = target(lab_vmcore).prog
    syms = symbolizer(prog)
    recs = parse_records(truth_text(lab_vmcore, array))
    # the guest's skb events, each with the stack records that follow it on its CPU
    expected = [r for r in with_stacks(recs) if r["event"] in ("kfree_skb", "consume_skb")]
    ours = list(iter_skb_events(prog, None if array == "top" else array))
    assert len(ours) == len(expected) > 100
    has_reason = lab_vmcore.kernel.release.split(".")[0] != "5"
    sym_text = any(" [" in r["body"] or "+0x" in r["body"] for r in expected)  # 6.11+: location=%pS
    for e, t in zip(ours, expected):
        f = kv(t["body"])
        assert e.kind == t["event"]
        assert (e.cpu, e.pid, e.comm) == (t["cpu"], t["pid"], t["comm"])
        assert "%d.%06d" % divmod((e.ts + 500) // 1000, 1000000) == t["ts"]
        assert "%016x" % e.skbaddr == f["skbaddr"]
        if e.kind == "kfree_skb":
            assert str(e.protocol) == f["protocol"]
            if has_reason:
                assert e.reason_name == f["reason"]
            else:
                assert e.reason is None and e.reason_name is None and "reason" not in f
            if "rx_sk" in f:
                assert "%016x" % e.rx_sk == f["rx_sk"]
        if "location" in f:
            if sym_text:  # "func+0xoff/0xsize [module]": ours is "func+0xoff [module]"
                m = re.match(r"(\S+?)(\+0x[0-9a-f]+)/0x[0-9a-f]+( \[\w+\])?$", f["location"])
                assert m, f["location"]
                assert e.location_symbol == m.group(1) + m.group(2) + (m.group(3) or "")
            else:
                assert "%016x" % e.location == f["location"]
                # and our symbol names the function the stack shows just above kfree_skb's helpers
        frames = [syms.name(a) for a in (e.stack or [])]
        assert frames == (t["stacks"][0] if t["stacks"] else [])


def test_every_other_event_is_decoded(lab_vmcore: LabVmcore) -> None:
    """Counts per event kind (stack records included) equal the guest's, for both buffers."""
    from skbinspect.ftrace.reader import trace_reader

    prog = target(lab_vmcore).prog
    for array in ARRAYS:
        r = trace_reader(prog, None if array == "top" else array)
        ours = Counter("stack" if ev.is_stack else ev.name for ev in r.raw_events())
        theirs = Counter(rec["event"] for rec in parse_records(truth_text(lab_vmcore, array)))
        assert ours == theirs


def test_event_formats_equal_guest_format_files(lab_vmcore: LabVmcore) -> None:
    from skbinspect.ftrace.formats import format_file_text
    from skbinspect.ftrace.reader import event_formats

    formats = event_formats(target(lab_vmcore).prog)
    captured = lab_vmcore.truth["formats"]
    assert "skb:kfree_skb" in captured
    for name, text in captured.items():
        f = formats.lookup(name)
        assert f is not None, name
        assert format_file_text(f) == text, name


# ---- command options --------------------------------------------------------------------------------------


def test_trace_filters(lab_vmcore: LabVmcore) -> None:
    recs = parse_records(truth_text(lab_vmcore, "top"))
    events = [r for r in recs if r["event"] != "stack"]

    # --event: only consume_skb lines, in order
    p = cli(lab_vmcore, "trace", "--event", "skb:consume_skb")
    got = [_LINE.match(x).group("ts", "cpu", "body") for x in body_lines(p.stdout)]
    want = [(r["ts"], "%03d" % r["cpu"], r["body"]) for r in events if r["event"] == "consume_skb"]
    assert got == want and want

    # --cpu: one CPU's records, with its stacks
    cpu = Counter(r["cpu"] for r in events).most_common()[-1][0]
    p = cli(lab_vmcore, "trace", "--cpu", str(cpu), "--stacks")
    want_lines = []
    for r in recs:
        if r["cpu"] == cpu:
            want_lines.append(r)
    got_recs = parse_records("\n".join(body_lines(p.stdout)))
    assert [(r["ts"], r["body"], r["frames"]) for r in got_recs] == [
        (r["ts"], r["body"], r["frames"]) for r in want_lines
    ]

    # --last N: the last N events with their stacks
    p = cli(lab_vmcore, "trace", "--last", "7", "--stacks")
    got_recs = parse_records("\n".join(body_lines(p.stdout)))
    assert [r["event"] != "stack" for r in got_recs].count(True) == 7
    tail = recs[-len(got_recs) :]
    assert [(r["ts"], r["body"], r["frames"]) for r in got_recs] == [
        (r["ts"], r["body"], r["frames"]) for r in tail
    ]

    # --since S: the events of the last S seconds before the last event (a boundary between two events
    # far enough apart that the microsecond rounding of the text cannot matter)
    ts = [float(r["ts"]) for r in events]
    last = max(float(r["ts"]) for r in recs)  # the last record (a stack record counts)
    k = next(i for i in range(len(ts) // 2, len(ts)) if ts[i] - ts[i - 1] > 20e-6)
    since = last - (ts[k] + ts[k - 1]) / 2
    p = cli(lab_vmcore, "trace", "--since", repr(since))
    got = [_LINE.match(x).group("ts") for x in body_lines(p.stdout)]
    assert got == [r["ts"] for r in events[k:]]


def test_trace_json(lab_vmcore: LabVmcore) -> None:
    p = cli(lab_vmcore, "--json", "trace", "-i", "skbinst", "--stacks")
    *objs, summary = [json.loads(line) for line in p.stdout.splitlines()]
    check_trace_json(objs, truth_text(lab_vmcore, "skbinst"))
    assert all(o["instance"] == "skbinst" for o in objs)
    # the losses of the wrapped instance are in the last line, the summary record (and said on stderr)
    assert "overwritten" in p.stderr
    assert summary["record"] == "summary" and "event" not in summary
    assert summary["target"]["release"] == lab_vmcore.kernel.release and summary["warnings"] == []
    (inst,) = summary["instances"]
    entries, written, ncpu = map(int, _HEADER.search(truth_text(lab_vmcore, "skbinst")).groups())
    assert inst["instance"] == "skbinst" and len(inst["cpus"]) == ncpu
    assert (inst["entries"], inst["lost"]) == (entries, written - entries) and inst["lost"] > 0
    assert [n for n in inst["notes"] if "overwritten" in n] and inst["skipped"] == []


def check_trace_json(objs: List[Dict[str, Any]], truth: str) -> None:
    """``--json trace --stacks`` objects against the guest's trace file: one object per event in the guest's
    order (stack records are attached to the event they follow, except those whose event was overwritten
    when the buffer wrapped: they come out on their own), and each kfree_skb's address and reason."""
    events = [r for r in parse_records(truth) if r["event"] != "stack"]
    assert [o["time"] for o in objs if o["event"] != "ftrace:kernel_stack"] == [r["ts"] for r in events]
    kfree = [o for o in objs if o["event"] == "skb:kfree_skb"]
    want = [kv(r["body"]) for r in events if r["event"] == "kfree_skb"]
    assert len(kfree) == len(want)
    for o, w in zip(kfree, want):
        assert o["fields"]["skbaddr"] == "0x" + w["skbaddr"].lstrip("0")
        assert o.get("reason") == w.get("reason")
        assert o["stack"] and o["location_symbol"]


@pytest.mark.parametrize("array", ARRAYS)
def test_fast_json_lines_equal_plain_objects(lab_vmcore: LabVmcore, array: str) -> None:
    """``trace --json`` writes through precompiled templates: they give the very objects event_json() does."""
    from skbinspect.ftrace.reader import trace_reader
    from skbinspect.ftrace.render import JsonLines, TraceTextFormatter, event_json
    from skbinspect.ftrace.skb_events import symbolizer

    prog = target(lab_vmcore).prog
    r = trace_reader(prog, None if array == "top" else array)
    fmt = TraceTextFormatter(r, symbolizer(prog))
    lines = JsonLines(fmt, array, stacks=True)
    n = 0
    for ev in r.events():
        assert json.loads(lines.line(ev)) == json.loads(json.dumps(event_json(ev, fmt, array, True)))
        n += 1
    assert n > 100


def test_all_instances_and_errors(lab_vmcore: LabVmcore) -> None:
    p = cli(lab_vmcore, "trace", "--all-instances", "--last", "1")
    assert "top-level buffer" in p.stdout and "instance skbinst" in p.stdout
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "trace", "-i", "nosuch")
    assert p.returncode == 1 and "no trace instance named 'nosuch'" in p.stderr and "skbinst" in p.stderr
    assert "Traceback" not in p.stderr
    p = run_skbinspect(
        "-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "trace", "--event", "skb:nosuch"
    )
    assert p.returncode == 1 and "no event 'skb:nosuch'" in p.stderr


# ---- drops ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("array", ARRAYS)
def test_drops_groups_equal_guest_counts(lab_vmcore: LabVmcore, array: str) -> None:
    recs = parse_records(truth_text(lab_vmcore, array))
    kfree = [r for r in recs if r["event"] == "kfree_skb"]
    # the guest's own grouping: (reason, function of the location's stack frame below the free helpers)
    want: Counter = Counter()
    last_on_cpu: Dict[int, Dict[str, Any]] = {}
    for r in recs:
        if r["event"] == "stack":
            o = last_on_cpu.pop(r["cpu"], None)
            if o is not None:
                want[(kv(o["body"]).get("reason"), _dropper(r["frames"]))] += 1
            continue
        last_on_cpu[r["cpu"]] = r if r["event"] == "kfree_skb" else None  # type: ignore[assignment]
    args = ["--json", "drops"] + (["-i", array] if array != "top" else [])
    rep = json.loads(cli(lab_vmcore, *args).stdout)
    assert rep["total"] == rep["kfree_skb_events"] == len(kfree)
    assert rep["consume_skb_events"] == sum(1 for r in recs if r["event"] == "consume_skb")
    got: Counter = Counter()
    for g in rep["groups"]:
        fn = g["location_symbol"].split("+")[0]
        got[(g["reason"], fn)] += g["count"]
        assert g["first_ts"] <= g["last_ts"]
        assert sum(s["count"] for s in g["stacks"]) <= g["count"]
    if array == "top":  # every drop in the top buffer has its stack
        assert got == want
    assert sum(got.values()) == len(kfree)
    assert rep["has_reasons"] == (lab_vmcore.kernel.release.split(".")[0] != "5")
    if rep["has_reasons"]:
        full = sum(1 for r in kfree if kv(r["body"]).get("reason") == "FULL_RING")
        assert full > 0
        rep2 = json.loads(cli(lab_vmcore, *(args + ["--reason", "full_ring"])).stdout)
        assert rep2["total"] == full and {g["reason"] for g in rep2["groups"]} == {"FULL_RING"}
    else:
        assert all(g["reason"] is None for g in rep["groups"])


def _dropper(frames: List[str]) -> str:
    """The first frame below the tracing and freeing helpers: the function that dropped the skb."""
    skip = (
        "trace_event_raw_event_",
        "__traceiter_",
        "trace_",
        "kfree_skb",
        "sk_skb_reason_drop",
        "__kfree_skb",
        "kfree_skb_list",
    )
    for f in frames:
        if not f.startswith(skip):
            return f
    return frames[-1]


def test_drops_text(lab_vmcore: LabVmcore) -> None:
    p = cli(lab_vmcore, "drops")
    assert "by reason and location" in p.stdout
    assert "tun_net_xmit" in p.stdout
    if lab_vmcore.kernel.release.split(".")[0] != "5":
        assert "FULL_RING" in p.stdout and "drops over time" in p.stdout
    else:
        assert "no drop reasons" in p.stdout


# ---- robustness: a corrupted copy of a dump ----------------------------------------------------------------


def test_corrupt_ring_is_reported_not_fatal(default_lab_vmcore: LabVmcore, tmp_path: Path) -> None:
    """A page ring that loops, and sub-buffers with garbage commits and headers: partial results, the
    damage said, no traceback."""
    import struct as st

    from skbinspect.ftrace.reader import find_trace_array, trace_reader
    from tests.vmcores.corrupt import copy_vmcore, patch_virt

    lab = default_lab_vmcore
    prog = target(lab).prog
    tr = find_trace_array(prog, None)
    r = trace_reader(prog, None)
    cpu0 = max(r.pages, key=lambda cp: len(cp.pages))
    good_total = tr.entries
    core = copy_vmcore(lab.vmcore, tmp_path / "vmcore")
    # the CPU with the most sub-buffers: the 3rd sub-buffer's commit word is garbage, the 5th's first event header is zeroed with an
    # impossible length; the 8th buffer_page links back to the 6th (a loop before the commit page)
    refs = cpu0.pages
    assert len(refs) > 10
    patch_virt(prog, core, refs[3][1] + 8, st.pack("<Q", 0xFFFFFF))
    patch_virt(prog, core, refs[5][1] + 16, st.pack("<II", 0, 3))
    patch_virt(prog, core, refs[8][0], st.pack("<Q", refs[6][0]))
    p = run_skbinspect("-c", str(core), *symbols_args(lab.symbols), "trace", "--stacks")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert f"# skipped: CPU {cpu0.cpu}" in p.stdout
    assert "loops" in p.stdout and "impossible event length 3" in p.stdout and "beyond" in p.stdout
    n = sum(1 for line in body_lines(p.stdout) if _LINE.match(line))
    assert 0 < n < good_total
    p = run_skbinspect("-c", str(core), *symbols_args(lab.symbols), "drops")
    assert p.returncode == 0 and "Traceback" not in p.stderr and "skipped" in p.stdout


# ---- a running guest over QMP ------------------------------------------------------------------------------


def test_live_guest_trace_and_drops(live_lab_guest: Any) -> None:  # type: ignore[no-untyped-def]
    """The top-level buffer of a running guest (kfree_skb enabled, traffic dropped on a full tap queue)
    read while the kernel writes it: every run succeeds, lines parse, the drops are there; whatever was
    torn by concurrent writes is reported, never a traceback."""
    g = live_lab_guest
    base = ["--qemu", g.qmp_socket, *symbols_args(g.symbols)]
    seen_full = 0
    for _ in range(5):
        p = run_skbinspect(*base, "trace", "--event", "skb:kfree_skb", "--last", "50", timeout=180)
        assert p.returncode == 0, p.stderr
        assert "Traceback" not in p.stderr
        lines = body_lines(p.stdout)
        assert 0 < len(lines) <= 50
        for line in lines:
            m = _LINE.match(line)
            assert m and m.group("body").startswith("kfree_skb: skbaddr="), line
        seen_full += sum("FULL_RING" in x for x in lines)
        p = run_skbinspect(*base, "--json", "drops", timeout=180)
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
        rep = json.loads(p.stdout)
        assert rep["total"] > 0
        assert any(gr["location_symbol"].startswith("tun_net_xmit") for gr in rep["groups"])
    if g.kernel.release.split(".")[0] != "5":
        assert seen_full > 0


def test_drops_reason_filter_is_checked_against_the_kernel(lab_vmcore: LabVmcore) -> None:
    """--reason takes the kernel's names in any spelling; a name the kernel lacks is an error, not an
    empty report; a kernel without drop reasons (5.10) says so."""
    base = ["-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols)]
    p = run_skbinspect(*base, "drops", "--reason", "FULL_RIN")
    assert p.returncode == 1 and "Traceback" not in p.stderr and p.stdout == ""
    has_reasons = "field:enum skb_drop_reason reason" in lab_vmcore.truth["formats"]["skb:kfree_skb"]
    if not has_reasons:
        assert "records no drop reasons" in p.stderr
        return
    assert "unknown drop reason 'FULL_RIN'" in p.stderr and "FULL_RING" in p.stderr
    want = sum(
        1
        for r in parse_records(truth_text(lab_vmcore, "top"))
        if r["event"] == "kfree_skb" and kv(r["body"]).get("reason") == "FULL_RING"
    )
    for spelling in ("FULL_RING", "full_ring", "SKB_DROP_REASON_FULL_RING"):
        out = json.loads(cli(lab_vmcore, "--json", "drops", "--reason", spelling).stdout)
        assert sum(g["count"] for g in out["groups"]) == want > 0, spelling
