"""docs/json.md against every command's real ``--json`` output on the lab's vmcores.

The documented top-level keys are read from the doc's tables, so the doc cannot drift: every key a
command prints is documented, every documented key (not marked optional) is printed, and every document
has the same ``target`` and ``warnings``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from tests.conftest import run_skbinspect
from tests.vmcores.lab import LabVmcore

DOC = Path(__file__).resolve().parents[2] / "docs" / "json.md"

#: doc section -> the command line that prints it
COMMANDS: Dict[str, List[str]] = {
    "info": ["info"],
    "ring": ["ring", "-e"],
    "reasons": ["reasons"],
    "stats": ["stats"],
    "drops": ["drops"],
    "drops --all-instances": ["drops", "--all-instances"],
    "report": ["report"],
    "trace: event lines": ["trace", "--stacks"],
    "trace: summary record": ["trace", "--stacks"],
}


def documented() -> Dict[str, Tuple[List[str], List[str]]]:
    """Section -> (required keys, optional keys), in the doc's order, from each section's table."""
    out: Dict[str, Tuple[List[str], List[str]]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            out[section] = ([], [])
        elif section and (m := re.match(r"\| `([a-z_]+)` \| (.*)\|$", line)):
            out[section][1 if m.group(2).startswith("optional") else 0].append(m.group(1))
    return out


def test_doc_has_every_command() -> None:
    from skbinspect.cli import cli

    doc = documented()
    assert set(doc) == set(COMMANDS)
    commands = {c.split(":")[0].split()[0] for c in doc}
    assert commands == set(cli.commands) - {"completion"}, "a command's JSON is not documented"
    for section, (required, _) in doc.items():
        if section != "trace: event lines":
            assert "target" in required and "warnings" in required, section


def run_json(lab: LabVmcore, args: List[str]) -> Any:
    p = run_skbinspect("-c", lab.vmcore, *sum((["-s", s] for s in lab.symbols), []), "--json", *args)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return p.stdout


def test_every_command_json_matches_the_doc(lab_vmcore: LabVmcore) -> None:
    doc = documented()
    target = None
    outputs: Dict[Tuple[str, ...], str] = {}
    for section, args in COMMANDS.items():
        text = outputs.get(tuple(args)) or outputs.setdefault(tuple(args), run_json(lab_vmcore, args))
        if section.startswith("trace"):
            lines = [json.loads(line) for line in text.splitlines()]
            assert lines and lines[-1].get("record") == "summary" and "event" not in lines[-1]
            assert all("event" in o and "record" not in o for o in lines[:-1])
            objs = lines[:-1] if section == "trace: event lines" else lines[-1:]
        else:
            objs = [json.loads(text)]
        required, optional = doc[section]
        assert objs, section
        seen = set()
        for o in objs:
            assert set(required) <= set(o), (section, sorted(set(required) - set(o)))
            assert set(o) <= set(required) | set(optional), (
                section,
                sorted(set(o) - set(required) - set(optional)),
            )
            seen |= set(o)
        if section == "trace: event lines":  # the lab's trace has skb events with stacks
            assert {"location_symbol", "reason", "stack"} <= seen or lab_vmcore.kernel.release.startswith(
                "5.10"
            )
            continue
        (o,) = objs
        # the same target, first, in every document
        assert list(o)[: 2 + (section.startswith("trace: summary"))][-2:] == ["target", "warnings"]
        assert o["target"]["release"] == lab_vmcore.kernel.release
        assert o["target"] == (target := target or o["target"])
        assert o["target"]["kind"] == "vmcore" and o["target"]["source"] == str(lab_vmcore.vmcore)
        assert isinstance(o["warnings"], list)


@pytest.mark.parametrize("section", ["drops --all-instances"])
def test_instances_reports_have_the_single_report_keys(lab_vmcore: LabVmcore, section: str) -> None:
    """Each buffer's report in ``drops --all-instances`` is what ``drops -i NAME`` prints, without the
    document's own target and warnings."""
    doc = documented()
    all_ = json.loads(run_json(lab_vmcore, COMMANDS[section]))
    names = [r["instance"] for r in all_["instances"]]
    assert names[0] == "top" and "skbinst" in names
    single = json.loads(run_json(lab_vmcore, ["drops", "-i", "skbinst"]))
    (inst,) = [r for r in all_["instances"] if r["instance"] == "skbinst"]
    assert inst == {k: v for k, v in single.items() if k not in ("target", "warnings")}
    assert set(inst) == set(doc["drops"][0]) - {"target", "warnings"}
