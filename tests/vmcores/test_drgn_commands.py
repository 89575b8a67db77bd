"""``%skbinspect`` inside a real ``drgn`` session on each lab vmcore, through drgn's command machinery
(``drgn.commands.run_command``, with its shell-like redirections), checked against the guest's truth and
against the skbinspect CLI's own output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.conftest import run_skbinspect
from tests.vmcores.drgn_session import location_key, run_drgn, truth_kfree_counts
from tests.vmcores.lab import LabVmcore
from tests.vmcores.test_lab_info import symbols_args

MARK = "=== skbinspect-test {} ==="


@pytest.fixture(scope="module")
def session(lab_vmcore: LabVmcore, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    d = tmp_path_factory.mktemp("drgn")
    ring_json, drops_json = d / "ring.json", d / "drops.json"
    code = "\n".join(
        [
            "from drgn.commands import run_command",
            f"print({MARK.format('ring')!r}, flush=True)",
            'run_command(prog, "skbinspect ring tap0")',
            f"print({MARK.format('drops')!r}, flush=True)",
            'run_command(prog, "skbinspect drops --stacks 1 --no-timeline")',
            f"print({MARK.format('end')!r}, flush=True)",
            f'run_command(prog, "skbinspect --json ring tap0 macvtap0 > {ring_json}")',
            f'run_command(prog, "skbinspect --json drops > {drops_json}")',
            'run_command(prog, "skbinspect ring nosuchdev")',
        ]
    )
    p = run_drgn(lab_vmcore, code)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    out = p.stdout
    ring_text = out.split(MARK.format("ring"), 1)[1].split(MARK.format("drops"), 1)[0]
    drops_text = out.split(MARK.format("drops"), 1)[1].split(MARK.format("end"), 1)[0]
    return {
        "ring_text": ring_text,
        "drops_text": drops_text,
        "stderr": p.stderr,
        "ring": json.loads(ring_json.read_text()),
        "drops": json.loads(drops_json.read_text()),
    }


def cli_json(lab: LabVmcore, *args: str) -> Any:
    p = run_skbinspect("-c", lab.vmcore, *symbols_args(lab.symbols), "--json", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_ring_in_drgn_names_full_queue_and_holder(lab_vmcore: LabVmcore, session: Dict[str, Any]) -> None:
    truth = lab_vmcore.truth
    links = {l["ifname"]: l for l in truth["ip_link"]}
    devs = {d["name"]: d for d in session["ring"]["devices"]}
    assert set(devs) == {"tap0", "macvtap0"}
    for name, holder in (("tap0", "tun-full"), ("macvtap0", "macvtap-full")):
        (q,) = devs[name]["queues"]
        size = links[name]["txqlen"]
        assert q["ring"]["full"] and q["ring"]["size"] == size and q["ring"]["live"] == size
        h = truth["holders"][holder]
        assert [(x["pid"], x["comm"], x["fd"]) for x in q["holders"]] == [
            (h["pid"], h["comm"], h["queues"][0]["fd"])
        ]
    text = session["ring_text"]
    size = links["tap0"]["txqlen"]
    assert text.lstrip().startswith(f"tap0 ifindex {links['tap0']['ifindex']} ")
    assert f"FULL {size}/{size}" in text
    assert f"{truth['holders']['tun-full']['pid']} (tun-full)" in text


def test_ring_in_drgn_equals_cli(lab_vmcore: LabVmcore, session: Dict[str, Any]) -> None:
    """Same options, same output: the devices of ``%skbinspect --json ring`` equal the CLI's."""
    cli = cli_json(lab_vmcore, "ring", "tap0", "macvtap0")
    assert session["ring"]["devices"] == cli["devices"]
    assert session["ring"]["target"]["release"] == cli["target"]["release"] == lab_vmcore.kernel.release


def test_drops_in_drgn_count_like_the_trace(lab_vmcore: LabVmcore, session: Dict[str, Any]) -> None:
    truth = truth_kfree_counts(lab_vmcore)
    printed = list(truth["location"])
    rep = session["drops"]
    assert rep["total"] == sum(truth["location"].values())
    got: Dict[str, int] = {}
    for g in rep["groups"]:
        key = location_key(g["location"], g["location_symbol"], printed)
        got[key] = got.get(key, 0) + g["count"]
        if rep["has_reasons"]:
            assert truth["location_reason"][f"{key}|{g['reason']}"] == g["count"]
    assert got == truth["location"]
    full = {
        g["location_symbol"].split("+")[0]: g
        for g in rep["groups"]
        if g["location_symbol"].split("+")[0] in ("tun_net_xmit", "tap_handle_frame")
    }
    assert set(full) == {"tun_net_xmit", "tap_handle_frame"}
    if lab_vmcore.kernel.release.startswith("5.10"):
        assert not rep["has_reasons"] and all(g["reason"] is None for g in full.values())
    else:
        assert all(g["reason"] == "FULL_RING" for g in full.values())
    # the text table has the same groups
    text = session["drops_text"]
    for g in rep["groups"]:
        assert g["location_symbol"] in text
    assert f"{rep['total']} drops" in text


def test_drops_in_drgn_equals_cli(lab_vmcore: LabVmcore, session: Dict[str, Any]) -> None:
    cli = cli_json(lab_vmcore, "drops")
    assert session["drops"] == cli


def test_error_in_drgn_is_one_paragraph(session: Dict[str, Any]) -> None:
    err = session["stderr"]
    assert "skbinspect: error:" in err and "nosuchdev" in err
    assert "Traceback" not in err


def test_percent_commands_in_the_interactive_repl(lab_vmcore: LabVmcore) -> None:
    """``%skbinspect`` typed at drgn's ``>>>`` prompt on a terminal, as a person would."""
    from tests.vmcores.drgn_session import drgn_repl

    truth = lab_vmcore.truth
    links = {l["ifname"]: l for l in truth["ip_link"]}
    out = drgn_repl(lab_vmcore, ["%skbinspect ring tap0", "%skbinspect drops --stacks 0 --no-timeline"])
    assert "Traceback" not in out and "skbinspect: error" not in out, out[-3000:]
    ring_part = out.split(">>> %skbinspect ring tap0", 1)[1].split(">>> %skbinspect drops", 1)[0]
    size = links["tap0"]["txqlen"]
    assert f"FULL {size}/{size}" in ring_part
    assert f"{truth['holders']['tun-full']['pid']} (tun-full) fd" in ring_part
    drops_part = out.split(">>> %skbinspect drops", 1)[1]
    counts = truth_kfree_counts(lab_vmcore)
    assert f"{sum(counts['location'].values())} drops" in drops_part
    assert "tun_net_xmit+" in drops_part and "tap_handle_frame+" in drops_part


def test_python_api_in_drgn_equals_cli(lab_vmcore: LabVmcore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``skbinspect.helpers`` in a drgn session, the program omitted (drgn's default program) or given:
    the same results as the CLI's --json."""
    out = tmp_path / "api.json"
    code = "\n".join(
        [
            "import json",
            "from skbinspect.helpers import drop_stats, drop_reasons, skb_events, drops, tap_devices",
            "r = {'stats': drop_stats().to_json(), 'reasons': drop_reasons(prog).to_json(),",
            "     'kfree': sum(1 for _ in skb_events(kinds=['skb:kfree_skb'])), 'drops': drops(prog).to_json(),",
            "     'ring': [d.to_json(False) for d in tap_devices(['tap0', 'macvtap0'], entries=True)]}",
            f"open({str(out)!r}, 'w').write(json.dumps(r, default=str))",
        ]
    )
    p = run_drgn(lab_vmcore, code)
    assert p.returncode == 0, p.stderr
    api = json.loads(out.read_text())
    st = cli_json(lab_vmcore, "stats")
    assert api["stats"]["softnet"] == st["softnet"] and api["stats"]["devices"] == st["devices"]
    assert api["reasons"] == {k: v for k, v in cli_json(lab_vmcore, "reasons").items() if k in api["reasons"]}
    # the CLI's document is the report's, with the target and warnings every command's has
    assert api["drops"] == {
        k: v for k, v in cli_json(lab_vmcore, "drops").items() if k not in ("target", "warnings")
    }
    assert api["kfree"] == sum(truth_kfree_counts(lab_vmcore)["location"].values())
    assert api["ring"] == cli_json(lab_vmcore, "ring", "tap0", "macvtap0")["devices"]


def test_symbols_option_adds_debug_files_to_the_session(lab_vmcore: LabVmcore, tmp_path: Path) -> None:
    """A drgn session started with only the vmlinux: `%skbinspect -s DIR` loads the module debug files
    into the session's program; -c inside drgn is refused with a plain message."""
    import shutil
    import subprocess
    import sys

    vmlinux, modules = lab_vmcore.symbols
    out = tmp_path / "ring.json"
    code = "\n".join(
        [
            "from drgn.commands import run_command",
            "run_command(prog, 'skbinspect --json info > %s')" % (tmp_path / "before.json"),
            f"run_command(prog, 'skbinspect -s {modules} --json ring tap0 > {out}')",
            f"run_command(prog, 'skbinspect -c {lab_vmcore.vmcore} info')",
        ]
    )
    exe = shutil.which("drgn") or str(Path(sys.executable).with_name("drgn"))
    p = subprocess.run(
        [exe, "-q", "-c", lab_vmcore.vmcore, "-s", vmlinux, "-e", code],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    before = json.loads((tmp_path / "before.json").read_text())
    # the session has no module DWARF: tun's types come from the kernel's BTF where there is module BTF
    # (5.11+), else tun has none
    tun_types = (before.get("debug_sources") or {}).get("tun", {}).get("types", "")
    assert "tun" in before["missing_debug_info"] or "BTF" in tun_types, before
    assert "DWARF" not in tun_types
    ring = json.loads(out.read_text())
    (dev,) = ring["devices"]
    links = {l["ifname"]: l for l in lab_vmcore.truth["ip_link"]}
    assert dev["name"] == "tap0" and dev["queues"][0]["ring"]["size"] == links["tap0"]["txqlen"]
    assert "-c/--qemu do not apply inside drgn" in p.stderr
