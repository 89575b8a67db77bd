"""The drops-over-time chart (skbinspect.chart) on the lab's trace buffers: its rows count every
kfree_skb event of the guest's own trace file, per reason, and the text drops prints says so."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from skbinspect.chart import BLOCKS, fit_chart
from tests.vmcores.lab import LabVmcore
from tests.vmcores.test_trace import ARRAYS, cli, kv, parse_records, target, truth_text


def _guest_drops(lab: LabVmcore, array: str) -> Counter:
    """The guest's kfree_skb records per reason (the label drops uses: the reason name, or ``-``)."""
    recs = parse_records(truth_text(lab, array))
    return Counter(kv(r["body"]).get("reason", "-") for r in recs if r["event"] == "kfree_skb")


@pytest.mark.parametrize("array", ARRAYS)
def test_chart_counts_equal_the_guest_trace(lab_vmcore: LabVmcore, array: str) -> None:
    from skbinspect.ftrace.drops import drops_report

    want = _guest_drops(lab_vmcore, array)
    assert sum(want.values()) > 0
    rep = drops_report(target(lab_vmcore).prog, None if array == "top" else array)
    for columns in (None, 120, 80):
        ch = fit_chart(rep.times, rep.in_ns, columns, rep.last_ts)
        assert ch is not None
        got = Counter({label: sum(counts) for label, counts in ch.rows})
        if rep.has_reasons:
            assert got == want
        else:  # no reason before 5.17: the rows are labelled by drops' own group label
            assert sum(got.values()) == sum(want.values())
        assert ch.end == rep.last_ts and ch.start == rep.first_ts
        # one scale: the largest bucket of any row draws a full block, every non-empty bucket a block
        assert ch.scale == max(max(c) for _, c in ch.rows)
        if columns is not None:
            assert ch.width() <= columns
    # the piped text: each row's total and its peak rate from the same buckets
    p = cli(lab_vmcore, "drops", "--top-stacks", "0", *(["-i", array] if array != "top" else []))
    text = p.stdout
    assert "drops over time, seconds before the last drop in the trace:" in text
    rows = re.findall(r"^  (\S+)\s+([" + BLOCKS[1:] + r" ]+?)\s+peak (\S+)\s+(\d+)$", text, re.M)
    assert rows, text
    if rep.has_reasons:
        assert {r[0]: int(r[3]) for r in rows} == dict(want)
    assert sum(int(r[3]) for r in rows) == sum(want.values())
    full = BLOCKS[-1]
    assert sum(r[1].count(full) for r in rows) >= 1  # the busiest bucket of all rows reaches the top


def test_report_svg(lab_vmcore: LabVmcore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``report --svg FILE``: well-formed SVG whose bars count every kfree_skb event of the guest's
    top-level trace, one labelled row per reason."""
    import xml.etree.ElementTree as ET

    want = _guest_drops(lab_vmcore, "top")
    path = tmp_path / "drops.svg"
    p = cli(lab_vmcore, "report", "--svg", str(path))
    assert f"to {path}" in p.stderr
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg"
    bars = [int(r.find(ns + "title").text.split()[0]) for r in root.iter(ns + "rect")]  # type: ignore[union-attr]
    assert sum(bars) == sum(want.values())
    texts = [t.text or "" for t in root.iter(ns + "text")]
    rows = [t for t in texts if t in want]
    assert sorted(rows) == sorted(want) and "seconds before the last drop in the trace" in texts
