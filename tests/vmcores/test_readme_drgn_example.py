"""The README's "Inside drgn" examples, copied as written, run in a real ``drgn`` on each lab vmcore.

The ``>>>`` session is run as a doctest inside drgn (the REPL's semantics: ``prog`` and the default
program are the session's).  Its output is checked against each lab's truth, and on the kernel the README
shows (Debian 6.1, the default lab kernel) it must be exactly what the README prints.  The ``%skbinspect``
lines are run through drgn's command machinery.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.vmcores.drgn_session import run_drgn, truth_kfree_counts
from tests.vmcores.lab import LabVmcore

README = Path(__file__).resolve().parents[2] / "README.md"

_RUNNER = r"""
import doctest, json, sys
results = []
class _Rec(doctest.OutputChecker):
    def check_output(self, want, got, optionflags):
        results.append({"want": want, "got": got})
        return True
_test = doctest.DocTestParser().get_doctest(open(%(path)r).read(), {"prog": prog}, "README", "README.md", 0)
_runner = doctest.DocTestRunner(checker=_Rec(), verbose=False)
_runner.run(_test, out=sys.stderr.write)
print("RESULT " + json.dumps({"results": results, "failures": _runner.failures,
                              "sources": [e.source for e in _test.examples]}))
"""


def drgn_section() -> str:
    text = README.read_text()
    start = text.index("## Inside drgn")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def python_example() -> str:
    (block,) = re.findall(r"```python\n(.*?)```", drgn_section(), re.S)
    return block


def command_lines() -> List[str]:
    blocks = re.findall(r"```\n(.*?)```", drgn_section(), re.S)
    lines = [l[len(">>> %") :] for b in blocks for l in b.splitlines() if l.startswith(">>> %")]
    assert lines
    return lines


def test_readme_has_the_example() -> None:
    assert ">>> from skbinspect" in python_example()
    assert any(c.startswith("skbinspect ring") for c in command_lines())
    assert any(c.startswith("skbinspect drops") for c in command_lines())


def _run_example(lab: LabVmcore, d: Path) -> Dict[str, Any]:
    path = d / "example.txt"
    path.write_text(python_example())
    p = run_drgn(lab, _RUNNER % {"path": str(path)})
    assert p.returncode == 0, p.stderr
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, (p.stdout, p.stderr)
    res = json.loads(line[len("RESULT ") :])
    assert res["failures"] == 0, p.stderr  # an exception in any example line is a failure
    return res


@pytest.fixture(scope="module")
def example_run(lab_vmcore: LabVmcore, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    return _run_example(lab_vmcore, tmp_path_factory.mktemp("readme"))


def test_example_output_matches_the_truth(lab_vmcore: LabVmcore, example_run: Dict[str, Any]) -> None:
    truth = lab_vmcore.truth
    got = [r["got"] for r in example_run["results"]]
    links = {l["ifname"]: l for l in truth["ip_link"]}
    # 1: the full queues with their holders
    full = got[1].splitlines()
    want_full = []
    for dev, holder in (("tap0", "tun-full"), ("macvtap0", "macvtap-full"), ("ipvtap0", "ipvtap-full")):
        h = truth["holders"][holder]
        want_full.append(f"{dev} 0 {links[dev]['txqlen']} [({h['pid']}, {holder!r})]")
    assert full == want_full
    # 2: the three largest drop groups, counted like the guest's trace
    counts = truth_kfree_counts(lab_vmcore)
    groups = got[2].splitlines()
    assert len(groups) == 3
    biggest = sorted(counts["location_reason"].values(), reverse=True)[:3]
    assert [int(g.split()[0]) for g in groups] == biggest
    assert groups[0].split()[2].startswith("tun_net_xmit+")
    reason = groups[0].split()[1]
    assert reason == ("None" if lab_vmcore.kernel.release.startswith("5.10") else "FULL_RING")
    # 3: the first verdict names the full queue and its reader
    h = truth["holders"]["tun-full"]
    assert got[3].startswith(
        f"tap0 queue 0 full ({links['tap0']['txqlen']}/{links['tap0']['txqlen']}); 1800 "
    )
    assert f"the reader, pid {h['pid']} (tun-full)" in got[3]
    assert got[4].strip() == "True"


def test_example_output_is_what_the_readme_shows(default_lab_vmcore: LabVmcore, tmp_path: Path) -> None:
    """On the kernel the README's session comes from (the default lab kernel), the output is exactly
    what the README prints."""
    res = _run_example(default_lab_vmcore, tmp_path)
    assert len(res["results"]) == 5
    for r in res["results"]:
        assert run_specific(r["got"]) == run_specific(r["want"])


def run_specific(text: str) -> str:
    """The output with what differs from one build of the lab vmcore to the next masked: process ids
    (checked against the truth above) and times (TCG's speed varies)."""
    text = re.sub(r"\((\d+), '", "(PID, '", text)
    text = re.sub(r"\bpid \d+", "pid PID", text)
    text = re.sub(r"\(\d+/s\)", "(RATE/s)", text)
    return re.sub(r"\b\d+\.\d+\b", "T", text)


def test_readme_commands_run_in_drgn(lab_vmcore: LabVmcore, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmds = [c.replace("/tmp/report.json", str(out)) for c in command_lines()]
    code = "from drgn.commands import run_command\n" + "\n".join(f"run_command(prog, {c!r})" for c in cmds)
    p = run_drgn(lab_vmcore, code)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if "skbinspect: error" in line]
    if lab_vmcore.kernel.release.startswith("5.10"):
        # `drops --reason FULL_RING` on a kernel without drop reasons: said plainly, the session goes on
        assert len(errors) == 1 and "records no drop reasons" in errors[0], p.stderr
    else:
        assert errors == [], p.stderr
    rep = json.loads(out.read_text())
    assert {v["device"] for v in rep["verdicts"] if v["full"]} == {"tap0", "macvtap0", "ipvtap0"}
    assert "Usage: %skbinspect" in p.stdout
