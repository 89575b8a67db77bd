"""Drops over time as a picture: one sparkline per row (Unicode blocks ``▁▂▃▄▅▆▇█``, or ASCII when the
output cannot encode them), every row drawn on ONE scale so that rows compare by height, the peak rate
printed per row, and a time axis in seconds before the chart's end (the "now" the caller passes:
``drops`` and ``report`` pass the time stamp of the trace's latest drop; the kernel's clock at the dump
is not read).

Also the occupancy of a ring as a bar of its size (live, stale and free slots) for ``ring``.

Pure: numbers in, text lines (or an SVG document) out.  No kernel access, no rich."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple
from xml.sax.saxutils import escape as xml_escape

__all__ = [
    "BLOCKS",
    "ASCII_LEVELS",
    "Chart",
    "bucket_counts",
    "build_chart",
    "chart_for_console",
    "fit_chart",
    "level",
    "occupancy_bar",
    "occupancy_lines",
    "split_cells",
    "rate_text",
    "sparkline",
]

#: level 0 (no event) .. 8 (the scale's maximum)
BLOCKS = " ▁▂▃▄▅▆▇█"
ASCII_LEVELS = " .:-=+*#@"


def bucket_counts(times: Sequence[int], start: int, end: int, n: int) -> List[int]:
    """Count ``times`` in ``n`` equal buckets over [start, end]; a time stamp equal to ``end`` falls in
    the last bucket, one outside the span in none.  With ``end <= start`` everything at ``start`` is in
    bucket 0."""
    counts = [0] * n
    if n <= 0:
        return counts
    width = end - start
    top = n - 1
    for ts in times:
        if ts < start or ts > end:
            continue
        b = (ts - start) * n // width if width > 0 else 0
        counts[b if b < top else top] += 1
    return counts


def level(count: int, scale: int) -> int:
    """The block level (0..8) of ``count`` on a scale whose maximum is ``scale``: 0 only for no event,
    so that a single drop still shows (rounded up)."""
    if count <= 0 or scale <= 0:
        return 0
    return max(1, min(8, -(-count * 8 // scale)))


def sparkline(counts: Sequence[int], scale: int, ascii_only: bool = False) -> str:
    chars = ASCII_LEVELS if ascii_only else BLOCKS
    return "".join(chars[level(c, scale)] for c in counts)


def rate_text(per_s: float) -> str:
    """``10.6k/s``: three significant digits at most, with k/M."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if per_s >= div:
            v = per_s / div
            return (f"{v:.1f}" if v < 100 else f"{v:.0f}") + f"{unit}/s"
    if per_s >= 10:
        return f"{per_s:.0f}/s"
    return f"{per_s:.1f}/s"


def _secs_text(s: float) -> str:
    """An axis label: ``-2.5s``, ``-120s``, ``0``."""
    if abs(s) < 1e-12:
        return "0"
    return f"{s:.6g}s"


def nice_step(span: float, ticks: int = 4) -> float:
    """A step of 1, 2 or 5 times a power of ten that cuts ``span`` into about ``ticks`` parts."""
    import math

    if span <= 0:
        return 1.0
    raw = span / max(1, ticks)
    p = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * p >= raw:
            return m * p
    return 10 * p


@dataclass
class Chart:
    """Per-row bucket counts over [start, end] (the trace clock's units), on one scale."""

    rows: List[Tuple[str, List[int]]]  # label, counts (most events first)
    start: int
    end: int  # "now": the axis counts seconds before it
    buckets: int
    in_ns: bool
    end_label: str = "the last drop in the trace"

    @property
    def scale(self) -> int:
        """The largest bucket of any row: the one scale every row is drawn on."""
        return max((max(c) for _, c in self.rows if c), default=0)

    @property
    def bucket_s(self) -> Optional[float]:
        """A bucket's width in seconds (None when the clock does not count ns or the span is empty)."""
        if not self.in_ns or self.end <= self.start or not self.buckets:
            return None
        return (self.end - self.start) / self.buckets / 1e9

    @property
    def span_s(self) -> Optional[float]:
        return (self.end - self.start) / 1e9 if self.in_ns else None

    def peak(self, counts: Sequence[int]) -> int:
        return max(counts) if counts else 0

    def peak_rate(self, counts: Sequence[int]) -> Optional[float]:
        """The row's busiest bucket as drops per second (None without a ns clock or a span)."""
        b = self.bucket_s
        return self.peak(counts) / b if b else None

    def total(self) -> int:
        return sum(sum(c) for _, c in self.rows)

    def peak_text(self, counts: Sequence[int]) -> str:
        r = self.peak_rate(counts)
        return f"peak {rate_text(r)}" if r is not None else f"peak {self.peak(counts)}/bucket"

    def axis(self, indent: int) -> str:
        """Seconds before the end under the sparklines: a label starts at the column it names (the last,
        ``0``, ends there); one at each end and as many between as fit two spaces apart."""
        n = self.buckets
        span = self.span_s
        if span is None or n < 2:
            return ""
        base = [" "] * n

        def place(labels: List[str], col: int, text: str, right: bool = False) -> bool:
            lo = col - len(text) + 1 if right else col
            hi = lo + len(text)
            if lo < 0 or hi > n or any(c != " " for c in labels[max(0, lo - 2) : min(n, hi + 2)]):
                return False
            labels[lo:hi] = list(text)
            return True

        place(base, n - 1, _secs_text(0.0), right=True)
        place(base, 0, f"{-span:.3g}s")
        # round times (-step, -2*step, ...) from the column of the bucket that holds them: the step that
        # places at least two (else the most) labels
        labels = base
        best = -1
        for ticks in (4, 3, 2, 1):
            trial = base[:]
            step = nice_step(span, ticks)
            placed = 0
            k = 1
            while k * step <= span * (1 + 1e-9) and k < 50:
                t = -k * step
                col = min(n - 1, int((span + t) / span * n))
                text = _secs_text(round(t / step) * step if step >= 1 else float(f"{t:.6g}"))
                placed += place(trial, col, text)
                k += 1
            if placed > best:
                labels, best = trial, placed
            if placed >= 2:
                break
        return (" " * indent + "".join(labels)).rstrip()

    def width(self, indent: int = 2) -> int:
        """The widest line of :meth:`lines` (the heading aside)."""
        return max((len(line) for line in self.lines(True, indent)[1:]), default=0)

    def lines(self, ascii_only: bool = False, indent: int = 2) -> List[str]:
        """The chart as text: a heading, one line per row, the time axis."""
        if not self.rows:
            return []
        name_w = max(len(lab) for lab, _ in self.rows)
        scale = self.scale
        top = (ASCII_LEVELS if ascii_only else BLOCKS)[-1]
        b = self.bucket_s
        per = f"{b:.3g} s" if b is not None else "bucket"
        out = [f"drops over time, seconds before {self.end_label}:"]
        peaks = [self.peak_text(c) for _, c in self.rows]
        peak_w = max(len(p) for p in peaks)
        for (lab, counts), pk in zip(self.rows, peaks):
            out.append(
                " " * indent
                + f"{lab.ljust(name_w)}  {sparkline(counts, scale, ascii_only)}  {pk.ljust(peak_w)}  {sum(counts)}"
            )
        ax = self.axis(indent + name_w + 2)
        if ax:
            out.append(ax)
        out.append(" " * indent + f"one scale for every row: {top} = {scale} drops in a {per} bucket")
        return [line.rstrip() for line in out]

    def svg(self, title: str = "drops over time") -> str:
        """A standalone SVG: one bar row per label, on one scale, with the time axis."""
        row_h, bar_w, left, top_m = 40, 8, 180, 40
        n = max(self.buckets, 1)
        width = left + n * bar_w + 140
        height = top_m + row_h * len(self.rows) + 40
        scale = self.scale or 1
        e = xml_escape
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">',
            f"<title>{e(title)}</title>",
            f'<text x="8" y="20" font-size="14" font-weight="bold">{e(title)} '
            f"(one scale: full height = {self.scale} drops per bucket)</text>",
        ]
        for i, (lab, counts) in enumerate(self.rows):
            y0 = top_m + i * row_h
            base = y0 + row_h - 8
            parts.append(f'<text x="8" y="{base}">{e(lab)}</text>')
            parts.append(
                f'<line x1="{left}" y1="{base}" x2="{left + n * bar_w}" y2="{base}" stroke="#999" stroke-width="1"/>'
            )
            for j, c in enumerate(counts):
                if c <= 0:
                    continue
                h = max(1.0, (row_h - 12) * c / scale)
                parts.append(
                    f'<rect x="{left + j * bar_w}" y="{base - h:.2f}" width="{bar_w - 1}" height="{h:.2f}" '
                    f'fill="#c0392b"><title>{c} drops</title></rect>'
                )
            parts.append(
                f'<text x="{left + n * bar_w + 8}" y="{base}">{e(self.peak_text(counts))}, {sum(counts)}</text>'
            )
        span = self.span_s
        ay = top_m + row_h * len(self.rows) + 16
        if span is not None:
            for k in range(5):
                x = left + (n * bar_w) * k / 4
                parts.append(
                    f'<text x="{x:.1f}" y="{ay}" text-anchor="middle">{e(_secs_text(-span + span * k / 4))}</text>'
                )
            parts.append(f'<text x="{left}" y="{ay + 16}">seconds before {e(self.end_label)}</text>')
        parts.append("</svg>")
        return "\n".join(parts) + "\n"


def build_chart(
    times: Mapping[str, Sequence[int]],
    buckets: int,
    in_ns: bool,
    end: Optional[int] = None,
    end_label: str = "the last drop in the trace",
) -> Optional[Chart]:
    """A :class:`Chart` of the time stamps per label, from the earliest to ``end`` (default the latest
    time stamp); None when there is nothing to chart."""
    stamps = [t for ts in times.values() if ts for t in (min(ts), max(ts))]
    if not stamps or buckets <= 0:
        return None
    start = min(stamps)
    stop = max(stamps) if end is None else max(end, max(stamps))
    if stop <= start:
        buckets = 1
    rows = [
        (label, bucket_counts(ts, start, stop, buckets))
        for label, ts in sorted(times.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        if ts
    ]
    return Chart(rows, start, stop, buckets, in_ns, end_label)


def fit_chart(
    times: Mapping[str, Sequence[int]],
    in_ns: bool,
    columns: Optional[int],
    end: Optional[int] = None,
    end_label: str = "the last drop in the trace",
    max_buckets: int = 60,
    indent: int = 2,
) -> Optional[Chart]:
    """:func:`build_chart` with as many buckets (up to ``max_buckets``, at least 8) as let every row fit
    in ``columns`` (None: no limit)."""
    n = max_buckets
    ch = build_chart(times, n, in_ns, end, end_label)
    if ch is None or columns is None:
        return ch
    for _ in range(4):
        over = ch.width(indent) - columns
        if over <= 0 or ch.buckets <= 8:
            break
        ch = build_chart(times, max(8, ch.buckets - over), in_ns, end, end_label) or ch
    return ch


def unicode_ok(encoding: Optional[str]) -> bool:
    """Whether text in ``encoding`` can carry the block characters (UTF-8 and its spellings)."""
    return (encoding or "").lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig")


def chart_for_console(
    con: object,
    times: Mapping[str, Sequence[int]],
    in_ns: bool,
    end: Optional[int],
    end_label: str = "the last drop in the trace",
    margin: int = 0,
) -> List[str]:
    """The chart's lines for a rich console, each after ``margin`` spaces: as wide as its terminal (no
    width limit when piped: plain output is never wrapped), ASCII when its encoding is not UTF-8."""
    tty = bool(getattr(con, "is_terminal", False)) and not getattr(con, "plain", False)
    columns = getattr(con, "width", None) if tty else None
    ch = fit_chart(times, in_ns, None if columns is None else columns - margin, end, end_label)
    if ch is None:
        return []
    pad = " " * margin
    return [pad + line for line in ch.lines(ascii_only=not unicode_ok(getattr(con, "encoding", None)))]


# ---- ring occupancy ------------------------------------------------------------------------------------

#: live, stale, free slots
OCCUPANCY_CHARS = "█▒░"
OCCUPANCY_ASCII = "#~."


def split_cells(parts: Sequence[int], width: int) -> List[int]:
    """``width`` cells shared among ``parts`` in proportion (largest remainder), every non-zero part
    getting at least one cell when there are cells enough; the cells sum to ``width`` (0 if all parts
    are 0)."""
    total = sum(p for p in parts if p > 0)
    if total <= 0 or width <= 0:
        return [0] * len(parts)
    exact = [max(0, p) * width / total for p in parts]
    cells = [int(x) for x in exact]
    for i in sorted(range(len(parts)), key=lambda i: -(exact[i] - cells[i]))[: width - sum(cells)]:
        cells[i] += 1
    # a part with slots but no cell takes one from the largest part
    for i, p in enumerate(parts):
        if p > 0 and cells[i] == 0:
            j = max(range(len(cells)), key=lambda k: cells[k])
            if cells[j] > 1:
                cells[j] -= 1
                cells[i] = 1
    return cells


def occupancy_bar(live: int, stale: int, free: int, width: int, ascii_only: bool = False) -> str:
    """A ring's slots as a bar ``width`` cells wide: live, then stale, then free."""
    chars = OCCUPANCY_ASCII if ascii_only else OCCUPANCY_CHARS
    return "".join(c * n for c, n in zip(chars, split_cells([live, stale, free], width)))


def occupancy_lines(
    rows: Sequence[Tuple[str, int, int, int]],
    columns: Optional[int],
    ascii_only: bool = False,
    indent: int = 2,
) -> List[str]:
    """The occupancy histogram of a device's queues: a legend, then per queue (label, live, stale,
    free) a bar of its ring size and the numbers; the bars up to 50 cells, fewer to fit ``columns``."""
    if not rows:
        return []
    chars = OCCUPANCY_ASCII if ascii_only else OCCUPANCY_CHARS
    label_w = max(len(r[0]) for r in rows)
    nums = [f"{lv} live, {st} stale, {fr} free of {lv + st + fr}" for _, lv, st, fr in rows]
    num_w = max(len(n) for n in nums)
    width = 50
    if columns is not None:
        width = max(10, min(width, columns - indent - label_w - 1 - 2 - num_w))
    out = [" " * indent + f"ring occupancy ({chars[0]} live, {chars[1]} stale, {chars[2]} free):"]
    for (label, lv, st, fr), n in zip(rows, nums):
        out.append(
            " " * indent + f"{label.rjust(label_w)} {occupancy_bar(lv, st, fr, width, ascii_only)}  {n}"
        )
    return out
