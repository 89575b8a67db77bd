"""Issue 14: ``report`` on seeded random scenarios (scenarios.py), on every lab kernel.

Each of CI's seeds (``scenarios.CI_SEEDS``) is one ``random-<seed>`` boot per kernel; the properties are
random_check.py's: per-device traced drops equal to the counters when the trace holds every drop, no drop
counted twice, no verdict contradicting the scenario.  A failure prints the seed, the scenario and the
command that replays it.  ``python -m tests.vmcores random --seeds N`` runs the same checks on many more.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict

import pytest

from tests.conftest import lab_kernel, run_skbinspect
from tests.vmcores.kernels import LabError
from tests.vmcores.lab import LabVmcore, build_vmcore
from tests.vmcores.random_check import check, report_args
from tests.vmcores.scenarios import CI_SEEDS, boot_name, generate


@pytest.fixture(scope="module", params=CI_SEEDS, ids=lambda s: f"seed{s}")
def random_boot(request: Any, lab_kernel_name: str) -> LabVmcore:
    boot = boot_name(request.param)
    try:
        return build_vmcore(lab_kernel(lab_kernel_name), boot)
    except LabError as e:
        pytest.fail(
            f"{boot} lab vmcore could not be built ({generate(request.param).short()}): {e}", pytrace=False
        )


_reports: Dict[str, Dict[str, Any]] = {}


def _report(lab: LabVmcore) -> Dict[str, Any]:
    if lab.dir not in _reports:
        p = run_skbinspect(*report_args(lab))
        assert p.returncode == 0 and "Traceback" not in p.stderr, (lab.boot, p.stderr)
        _reports[lab.dir] = json.loads(p.stdout)
    return copy.deepcopy(_reports[lab.dir])


def test_random_scenario_properties(random_boot: LabVmcore) -> None:
    outcome = check(random_boot, _report(random_boot))
    assert not outcome.failures, outcome.message(random_boot)


def test_scenario_description_stored(random_boot: LabVmcore) -> None:
    """The vmcore's scenario.json is the generator's description of its seed (what the guest ran)."""
    from pathlib import Path

    stored = json.loads((Path(random_boot.dir) / "scenario.json").read_text())
    assert stored == generate(stored["seed"]).describe()
    assert random_boot.boot == stored["boot"]


def test_the_checks_catch_wrong_reports(random_boot: LabVmcore) -> None:
    """The checks are not vacuous: the issue's faults, planted in this scenario's real report, fail them."""
    rep = _report(random_boot)
    sc = generate(int(random_boot.boot.split("-")[1]))
    tied = [v for v in rep["verdicts"] if v["drop_count"]]
    shared = [s for s in rep["shared_drops"] if s["count"]]
    assert tied or shared, f"the scenario dropped nothing: {sc.short()}"
    if tied:  # counted twice: a verdict's drops given again to another queue of the device
        bad = copy.deepcopy(rep)
        twin = copy.deepcopy(tied[0])
        twin["queue"] = 15  # a queue of no verdict
        bad["verdicts"].append(twin)
        assert any("more than" in f for f in check(random_boot, bad).failures)
        bad = copy.deepcopy(rep)  # or not tied at all
        for v in bad["verdicts"]:
            v["drop_count"] = 0
        assert check(random_boot, bad).failures or not check(random_boot, rep).facts["complete"]
    if shared:  # a shared drop counted once for the device as well
        bad = copy.deepcopy(rep)
        bad["shared_drops"].append(copy.deepcopy(shared[0]))
        assert any("more than" in f for f in check(random_boot, bad).failures)
    full = [v for v in rep["verdicts"] if v["full"]]
    assert full, f"no full queue in {sc.short()}"
    bad = copy.deepcopy(rep)  # a held, full queue said to be fine
    for v in bad["verdicts"]:
        v["full"], v["cause_code"] = False, "ok"
    assert any("expected" in f for f in check(random_boot, bad).failures)
    read = [(g.device, q) for g in sc.groups for q in g.read]
    if read:  # a queue its consumer reads said to be stalled
        bad = copy.deepcopy(rep)
        v = copy.deepcopy(full[0])
        v["device"], v["queue"] = read[0]
        bad["verdicts"].append(v)
        assert any("read by a consumer" in f for f in check(random_boot, bad).failures)
