"""``skbinspect reasons`` on every lab kernel, checked against the guest's own skb:kfree_skb format file.

The truth is the ``__print_symbolic(REC->reason, { N, "NAME" }, ...)`` map of the tracefs format file the
guest printed; it is parsed here independently of skbinspect's own parser.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict

from skbinspect.counters.reasons import DropReasonTable, drop_reason_table
from skbinspect.target.opener import open_target
from tests.conftest import run_skbinspect
from tests.vmcores.lab import LabVmcore

_programs: Dict[str, object] = {}


def symbols_args(lab: LabVmcore):
    return sum((["-s", p] for p in lab.symbols), [])


def target_of(lab: LabVmcore):
    if lab.vmcore not in _programs:
        _programs[lab.vmcore] = open_target(lab.vmcore, None, lab.symbols, False)
    return _programs[lab.vmcore]


def truth_reason_map(lab: LabVmcore) -> Dict[int, str]:
    """value -> name from the guest's format file; {} when the event has no reason field."""
    fmt = lab.truth["formats"]["skb:kfree_skb"]
    if "field:enum skb_drop_reason reason" not in fmt:
        assert "__print_symbolic" not in fmt
        return {}
    sym = fmt[fmt.index("__print_symbolic(REC->reason") :]
    pairs = re.findall(r'\{ (\d+), "([A-Z0-9_]+)" \}', sym)
    assert pairs, "the format file's reason map did not parse"
    out = {int(v): n for v, n in pairs}
    assert len(out) == len(pairs), "duplicate values in the truth map"
    return out


def test_table_matches_kfree_skb_format(lab_vmcore: LabVmcore) -> None:
    truth = truth_reason_map(lab_vmcore)
    table: DropReasonTable = drop_reason_table(target_of(lab_vmcore).prog)
    if not truth:  # 5.10: no reasons at all
        assert lab_vmcore.kernel.release.startswith("5.10")
        assert table.has_reasons is False and table.reasons == []
        assert any("records no drop reasons" in n for n in table.notes)
        assert table.name(1) is None and table.lookup("FULL_RING") is None
        return
    assert table.has_reasons
    # Same set of values and the same name for each: the core drop reasons (the map leaves out the two
    # non-drop values SKB_NOT_DROPPED_YET and SKB_CONSUMED, which have no SKB_DROP_REASON_ prefix).
    ours = {r.value: r.name for r in table.reasons if r.subsystem == "core" and r.is_drop}
    assert ours == truth
    for v, n in truth.items():
        assert table.name(v) == n
        assert table.lookup(v).name == n
        assert table.lookup(n).value == v
        assert table.lookup(str(v)).value == v
        assert table.lookup(f"SKB_DROP_REASON_{n}").value == v
        assert table.lookup(n.lower()).value == v
    # Every name in the table came from the target: the preferred source on 6.1 is the string table,
    # from 6.4 the subsystem table; no value was named only by the enum except the non-drop value 0.
    assert {r.source for r in table.reasons if r.is_drop} <= {"subsys_table", "string_table", "enum"}
    assert all(r.source != "enum" for r in table.reasons if r.subsystem == "core" and r.is_drop)
    assert "print_fmt" in table.sources_found and "enum" in table.sources_found
    # The sources agree on these kernels: no conflicting names.
    assert all(not r.conflicts for r in table.reasons)
    full = table.lookup("FULL_RING")
    assert full is not None and full.value == next(v for v, n in truth.items() if n == "FULL_RING")
    assert "tun/tap" in full.tags and "queue" in full.tags


def test_table_is_cached(default_lab_vmcore: LabVmcore) -> None:
    prog = target_of(default_lab_vmcore).prog
    assert drop_reason_table(prog) is drop_reason_table(prog)


def test_subsystems_from_target(lab_vmcore: LabVmcore) -> None:
    """Subsystem reasons: each value's subsystem is the one its high 16 bits name in the target's
    enum skb_drop_reason_subsys, and the core list is registered from 6.4 on."""
    table = drop_reason_table(target_of(lab_vmcore).prog)
    if not table.has_reasons:
        return
    prog = target_of(lab_vmcore).prog
    try:
        subsys_enum = prog.type("enum skb_drop_reason_subsys")
    except LookupError:
        assert set(table.subsystems.values()) == {"core"}
        assert {r.subsystem for r in table.reasons} == {"core"}
        return
    names = {
        e.value: e.name[len("SKB_DROP_REASON_SUBSYS_") :].lower()
        for e in subsys_enum.enumerators
        if not e.name.endswith("_NUM")
    }
    assert table.subsystems == names
    assert "core" in table.registered
    for r in table.reasons:
        assert r.subsystem == names[r.value >> 16]
    # Subsystems the target does not register are said so, with the reason.
    for _sid, n in names.items():
        if n not in table.registered:
            assert any(note.startswith(f"{n}: not registered") for note in table.notes), n
    if "qdisc" in names.values():  # 7.x: qdisc reasons come from enum qdisc_drop_reason
        q = table.by_subsystem("qdisc")
        qe = {
            e.value: e.name
            for e in prog.type("enum qdisc_drop_reason").enumerators
            if e.value >> 16 and e.value & 0xFFFF
        }
        assert {r.value: r.name for r in q} == qe
        assert all(r.source == "enum" for r in q)


def test_cli_reasons_json(lab_vmcore: LabVmcore) -> None:
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore), "--json", "reasons")
    assert p.returncode == 0, p.stderr
    check_reasons_json(lab_vmcore, json.loads(p.stdout))


def check_reasons_json(lab: LabVmcore, out: Dict[str, Any]) -> None:
    """``reasons --json``: the core drop reasons, value for value, are the guest's kfree_skb format map."""
    truth = truth_reason_map(lab)
    assert out["has_reasons"] == bool(truth)
    got = {r["value"]: r["name"] for r in out["reasons"] if r["subsystem"] == "core" and r["is_drop"]}
    assert got == truth


def test_cli_reasons_lookup(lab_vmcore: LabVmcore) -> None:
    truth = truth_reason_map(lab_vmcore)
    args = ("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore))
    if not truth:
        p = run_skbinspect(*args, "reasons")
        assert p.returncode == 0, p.stderr
        assert "records no drop reasons" in p.stdout and "Traceback" not in p.stderr
        p = run_skbinspect(*args, "reasons", "FULL_RING")
        assert p.returncode == 0 and "records no drop reasons" in p.stdout, p.stdout + p.stderr
        return
    full = next(v for v, n in truth.items() if n == "FULL_RING")
    for key in (str(full), "FULL_RING", "skb_drop_reason_full_ring"):
        p = run_skbinspect(*args, "--json", "reasons", key)
        assert p.returncode == 0, p.stderr
        got = json.loads(p.stdout)
        assert [(r["value"], r["name"]) for r in got["reasons"]] == [(full, "FULL_RING")]
    p = run_skbinspect(*args, "reasons", "FULL_RING")
    assert p.returncode == 0 and "FULL_RING" in p.stdout and str(full) in p.stdout
    p = run_skbinspect(*args, "reasons", "NO_SUCH_REASON_XYZ")
    assert p.returncode == 1 and "NO_SUCH_REASON_XYZ" in p.stderr and "Traceback" not in p.stderr


def test_cli_reasons_text(lab_vmcore: LabVmcore) -> None:
    truth = truth_reason_map(lab_vmcore)
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore), "reasons")
    assert p.returncode == 0, p.stderr
    if truth:
        for v, n in truth.items():
            assert re.search(rf"^\W*{v}\W.*\b{n}\b", p.stdout, re.M), (v, n)


def test_reasons_unknown_name_suggests_close_ones(lab_vmcore: LabVmcore) -> None:
    """``reasons FULL`` names FULL_RING (where the kernel has it), as ``drops --reason FULL`` does."""
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore), "reasons", "FULL")
    assert "Traceback" not in p.stderr
    if "records no drop reasons" in p.stdout:  # 5.10: no table to look in, the command says so
        assert p.returncode == 0, p.stderr
        return
    assert p.returncode == 1, p.stderr
    assert "did you mean" in p.stderr and "FULL_RING" in p.stderr, p.stderr
