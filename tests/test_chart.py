"""skbinspect.chart on numbers: bucketing, one scale across rows, peak rates, the time axis, the ASCII
fallback, the occupancy bars and the SVG."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

from skbinspect.chart import (
    ASCII_LEVELS,
    BLOCKS,
    bucket_counts,
    build_chart,
    fit_chart,
    level,
    occupancy_bar,
    occupancy_lines,
    rate_text,
    sparkline,
    split_cells,
    unicode_ok,
)


def test_bucket_counts_every_event_once() -> None:
    rng = random.Random(7)
    times = [rng.randrange(1_000, 5_000) for _ in range(1000)] + [1_000, 5_000]
    for n in (1, 7, 48, 60, 4_001):
        counts = bucket_counts(times, 1_000, 5_000, n)
        assert len(counts) == n and sum(counts) == len(times)
    # bucket i holds [start + i*w/n, start + (i+1)*w/n); the end falls in the last bucket
    assert bucket_counts([0, 9, 10, 19, 20], 0, 20, 2) == [2, 3]
    assert bucket_counts([5, 25], 10, 20, 4) == [0, 0, 0, 0]  # outside the span: not counted
    assert bucket_counts([3, 3], 3, 3, 5) == [2, 0, 0, 0, 0]


def test_level_scale_and_rounding() -> None:
    assert level(0, 10) == 0
    assert level(1, 1000) == 1  # a single drop still shows
    assert level(1000, 1000) == 8
    assert level(501, 1000) == 5  # rounded up: 4.008 -> 5
    assert level(500, 1000) == 4
    assert sparkline([0, 1, 8], 8) == BLOCKS[0] + BLOCKS[1] + BLOCKS[8]
    assert sparkline([0, 1, 8], 8, ascii_only=True) == ASCII_LEVELS[0] + ASCII_LEVELS[1] + ASCII_LEVELS[8]
    assert all(ord(c) < 128 for c in ASCII_LEVELS)


def test_one_scale_across_rows() -> None:
    # two rows with the same shape but ten times fewer drops: drawn lower, not identical
    a = [0, 0, 10, 10, 20, 20, 20, 30, 30, 40]
    big = {"BIG": [t * 1_000_000 for t in a], "SMALL": [t * 1_000_000 for t in a[::10]]}
    big["SMALL"] = [0, 20_000_000, 40_000_000]
    ch = build_chart(big, 5, True)
    assert ch is not None
    rows = dict(ch.rows)
    assert ch.scale == max(max(rows["BIG"]), max(rows["SMALL"])) == 3
    assert sparkline(rows["BIG"], ch.scale) != sparkline(rows["SMALL"], ch.scale)
    lines = ch.lines()
    big_line = next(line for line in lines if line.lstrip().startswith("BIG"))
    small_line = next(line for line in lines if line.lstrip().startswith("SMALL"))
    assert BLOCKS[8] in big_line and BLOCKS[8] not in small_line
    assert f"{BLOCKS[8]} = 3 drops in a 0.008 s bucket" in lines[-1]
    assert [r[0] for r in ch.rows] == ["BIG", "SMALL"]  # most drops first


def test_peak_rate() -> None:
    # 100 drops within the first of 10 buckets of a 1 s span: 100 / 0.1 s = 1000/s
    times = {"X": [i * 1_000 for i in range(100)] + [1_000_000_000]}
    ch = build_chart(times, 10, True)
    assert ch is not None
    counts = dict(ch.rows)["X"]
    assert counts[0] == 100 and counts[-1] == 1 and sum(counts) == 101
    assert abs(ch.peak_rate(counts) - 1000.0) < 1e-6  # type: ignore[operator]
    assert ch.peak_text(counts) == "peak 1.0k/s"
    assert rate_text(10_612.4) == "10.6k/s"
    assert rate_text(2_500_000) == "2.5M/s"
    assert rate_text(522.2) == "522/s"
    assert rate_text(4.04) == "4.0/s"
    # a clock that does not count ns: a peak per bucket, no rate
    ch2 = build_chart(times, 10, False)
    assert ch2 is not None and ch2.peak_text(dict(ch2.rows)["X"]) == "peak 100/bucket"


def test_axis_counts_seconds_before_the_end() -> None:
    times = {"X": [0, 2_000_000_000]}
    ch = build_chart(times, 41, True, end=4_000_000_000, end_label="the dump")
    assert ch is not None and ch.end == 4_000_000_000 and ch.start == 0
    lines = ch.lines()
    assert lines[0] == "drops over time, seconds before the dump:"
    row = lines[1]
    axis = lines[2]
    col0 = row.index(BLOCKS[8])  # the first bucket
    assert axis[col0:].startswith("-4s")
    assert axis.rstrip().endswith(" 0") and len(axis.rstrip()) == col0 + 41
    # round seconds at the column of the bucket they fall in: -2s is the middle bucket
    assert axis[col0 + 20 : col0 + 23] == "-2s"
    assert row[col0 + 20] == BLOCKS[8]  # the drop at t=2 s is in that bucket
    # a round time next to the left edge's label is left out, the others stay
    odd = build_chart({"X": [0, 4_712_954_000]}, 42, True)
    assert odd is not None
    ax = odd.axis(0)
    assert (
        ax.startswith("-4.71s")
        and ax.endswith(" 0")
        and ax.index("-2s") == int((4.712954 - 2) / 4.712954 * 42)
    )


def test_fit_chart_fits_columns() -> None:
    rng = random.Random(3)
    times = {
        "FULL_RING": sorted(rng.randrange(10**10) for _ in range(5000)),
        "NOT_SPECIFIED": sorted(rng.randrange(10**10) for _ in range(300)),
    }
    for cols in (70, 80, 120):
        ch = fit_chart(times, True, cols)
        assert ch is not None and ch.width() <= cols
        assert ch.total() == 5300
    narrow = fit_chart(times, True, 40)  # no fewer than 8 buckets: the terminal wraps the line
    assert narrow is not None and narrow.buckets == 8
    wide = fit_chart(times, True, None)
    assert wide is not None and wide.buckets == 60


def test_ascii_fallback_and_encodings() -> None:
    ch = build_chart({"A": [0, 5, 10]}, 8, True)
    assert ch is not None
    assert all(ord(c) < 128 for line in ch.lines(ascii_only=True) for c in line)
    assert unicode_ok("utf-8") and unicode_ok("UTF8") and not unicode_ok("ascii") and not unicode_ok(None)


def test_nothing_to_chart() -> None:
    assert build_chart({}, 10, True) is None
    assert build_chart({"A": []}, 10, True) is None
    one = build_chart({"A": [5]}, 10, True)
    assert one is not None and one.buckets == 1 and one.rows == [("A", [1])] and one.bucket_s is None


def test_split_cells() -> None:
    assert split_cells([1000, 0, 0], 40) == [40, 0, 0]
    assert split_cells([113, 5, 138], 50) == [22, 1, 27]
    assert split_cells([0, 2, 254], 50) == [0, 1, 49]  # two stale slots still show
    assert split_cells([0, 0, 0], 50) == [0, 0, 0]
    rng = random.Random(5)
    for _ in range(500):
        parts = [rng.randrange(0, 300) for _ in range(3)]
        w = rng.randrange(3, 80)
        cells = split_cells(parts, w)
        if sum(parts):
            assert sum(cells) == w
            assert all(c >= 1 for c, p in zip(cells, parts) if p)


def test_occupancy_lines() -> None:
    assert occupancy_bar(3, 1, 4, 8) == "███▒░░░░"
    assert occupancy_bar(3, 1, 4, 8, ascii_only=True) == "###~...."
    lines = occupancy_lines([("0", 113, 5, 138), ("-", 0, 2, 254)], 80)
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].endswith("113 live, 5 stale, 138 free of 256")
    piped = occupancy_lines([("0", 1000, 0, 0)], None, ascii_only=True)
    assert "#" * 50 in piped[1] and all(ord(c) < 128 for line in piped for c in line)


def test_svg_is_well_formed() -> None:
    ch = build_chart({"FULL_RING": [0, 1, 2, 500_000_000, 10**9], "A<&>": [3, 4]}, 20, True)
    assert ch is not None
    root = ET.fromstring(ch.svg("drops & more").encode())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    rects = root.findall("{http://www.w3.org/2000/svg}rect")
    # one bar per non-empty bucket; each titled with its count, the counts summing to the events
    assert len(rects) == sum(1 for _, c in ch.rows for x in c if x)
    total = sum(int(r.find("{http://www.w3.org/2000/svg}title").text.split()[0]) for r in rects)  # type: ignore[union-attr]
    assert total == 7
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "A<&>" in texts and "seconds before" in texts
