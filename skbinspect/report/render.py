"""Rendering of ``skbinspect report`` (see :mod:`skbinspect.report.correlate`).  No kernel access here."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from rich.console import Console
from rich.markup import escape

from skbinspect.output import console
from skbinspect.report.correlate import Report, ReusedSkb

__all__ = ["render_report", "render_timeline"]


def timeline_lines(out: Console, rep: Report, margin: int = 0) -> List[str]:
    """The trace's drops over time (:mod:`skbinspect.chart`), sized to ``out``'s width: plain lines."""
    if rep.drop_times is None:
        return []
    from skbinspect.chart import chart_for_console

    times, in_ns, end = rep.drop_times
    return list(chart_for_console(out, times, in_ns, end, margin=margin))


def render_timeline(out: Console, rep: Report, margin: int = 0) -> None:
    """The trace's drops over time (:mod:`skbinspect.chart`), sized to the terminal."""
    for line in timeline_lines(out, rep, margin):
        out.print(escape(line), highlight=False)


def _s(x: Optional[float], fmt: str = "%.6f") -> str:
    return "-" if x is None else fmt % x


def _ago(rep: Report, t: Optional[float]) -> str:
    """`` (≥3.2 s before the dump)`` for a trace time, when the dump's time is known."""
    if t is None or rep.dump_s is None:
        return ""
    return f" (≥{rep.dump_s - t:.1f} s before the dump)"


def render_report(
    rep: Report,
    out: Optional[Console] = None,
    explain: bool = False,
    verbose: bool = False,
    height: Optional[int] = None,
) -> None:
    """The report: one line per verdict first, then each verdict's detail, the evidence, and (with
    ``explain``) the rules that tied drops to queues.  Stale-skb reads are folded into a count unless
    ``verbose``.  When the whole is longer than a screen (``height`` rows, the terminal's by default,
    at least 24), the verdict lines are repeated at the end.  When rendering fails half-way (a bug), the
    lines made so far are printed before the error goes on."""
    out = out or console()
    lines: List[str] = []
    try:
        _report_lines(rep, out, explain, verbose, height, _Lines(lines))
    finally:
        for line in lines:
            out.print(line)


def _report_lines(
    rep: Report, out: Console, explain: bool, verbose: bool, height: Optional[int], p: "_Lines"
) -> None:
    """The report's lines (markup strings), added to ``p``: see :func:`render_report`."""
    lines = p.lines
    p(f"[bold]skbinspect report[/bold] ({escape(rep.release)})")
    for hl in rep.headlines:
        p(f"  {escape(hl['text'])}")
    if not rep.headlines:
        p(
            "  no tun/tap queue is full and no ring-full drops are in the trace"
            + (" (some devices could not be read: see the notes)" if rep.notes else "")
        )
    if rep.dump_s is not None:
        p(f"  [dim](times since boot on the trace clock; the dump at ≥{rep.dump_s:.3f})[/dim]")
    p()
    p("[bold]Verdicts[/bold]")
    if not rep.verdicts:
        p(
            "  no tun/tap queue is full and no ring-full drops are in the trace"
            + (" (some devices could not be read: see the notes)" if rep.notes else "")
        )
    for v in rep.verdicts:
        mark = "[red]FULL[/red]" if v.full else "[yellow]dropped[/yellow]"
        p(f"  {mark} {escape(v.summary)}")
        for r in v.drops:
            p(
                f"      {r.count:>7} {escape(r.reason or '-')} at {escape(r.location_symbol or '-')}, "
                f"{_s(r.first_s)} .. {_s(r.last_s)}{_ago(rep, r.last_s)}"
                + (f", {r.rate_per_s:.1f}/s" if r.rate_per_s else "")
                + f" (tied by {escape(r.tied_by)})"
            )
        for h in v.holders:
            p(
                f"      reader: pid {h.pid} ({escape(h.comm)}) fd {h.fd}"
                + (f", state {escape(h.state)}" if h.state else "")
                + (escape(" [vhost worker]") if h.kind == "vhost" else "")
            )
        if v.counter is not None and v.counter_value is not None:
            p(f"      counter: {escape(v.counter)} = {v.counter_value}")
        if v.stale_skbs and not verbose:
            states: Dict[str, int] = {}
            for s in v.stale_skbs:
                states[s.slab_state] = states.get(s.slab_state, 0) + 1
            p(
                f"      {len(v.stale_skbs)} stale skbs of its last drops read ("
                + escape(", ".join(f"{n} {st}" for st, n in sorted(states.items())))
                + "); --verbose lists them"
            )
        for s in v.stale_skbs if verbose else []:
            what = ", ".join(
                x
                for x in (
                    f"dev {s.device}" if s.device else None,
                    f"len {s.length}" if s.length is not None else None,
                    s.summary or None,
                )
                if x
            )
            p(
                f"      stale skb {s.address:#x} (dropped at {_s(s.ts_s)}; slab object {escape(s.slab_state)}): "
                f"{escape(what or '-')}" + (f" [dim]({escape(s.error)})[/dim]" if s.error else "")
            )
        for n in v.notes:
            p(f"      note: {escape(n)}")
    p()
    p("[bold]Evidence[/bold]")
    if rep.counter_checks:
        p("  counters against the trace:")
        for c in rep.counter_checks:
            p(
                f"    {escape(c.device)} {escape(c.counter)} {c.counter_value} vs trace {c.trace_count}: "
                f"{escape(c.verdict)}: {escape(c.explanation)}"
            )
    if rep.device_counters:
        p("  device counters that moved:")
        for dc in rep.device_counters:
            p(
                f"    {escape(dc['device'])}: "
                + escape(", ".join(f"{k} {n}" for k, n in dc["counters"].items()))
            )
    if rep.softnet_moved:
        p("  per-CPU softnet stats that moved:")
        for sc in rep.softnet_moved:
            p(
                f"    cpu {sc['cpu']}: dropped {sc['dropped']}, time_squeeze {sc['time_squeeze']}, "
                f"flow_limit_count {sc['flow_limit_count']}, backlog {sc['backlog_len']}"
            )
    if rep.other_drops:
        p("  other drops in the trace:")
        for g in rep.other_drops:
            p(
                f"    {g['count']:>7} {escape(g['reason'] or '-')} at {escape(g['location_symbol'] or '-')}"
                + (f" ({escape(', '.join(g['tasks']))})" if g["tasks"] else "")
            )
    if rep.top_stacks:
        p("  most common drop stacks:")
        for st in rep.top_stacks:
            p(f"    {st['count']} x {escape(st['reason'] or '-')} at {escape(st['location_symbol'] or '-')}:")
            for f in st["frames"][:8]:
                p(f"        {escape(f)}")
    if rep.reused:
        by_dev: Dict[Tuple[str, Optional[int]], List[ReusedSkb]] = {}
        for reused in rep.reused:
            by_dev.setdefault((reused.device, reused.queue), []).append(reused)
        p("  memory reused (a dropped skb's address is queued again in a ring):")
        for (dev, q), rs in sorted(by_dev.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            p(
                f"    {escape(dev)} queue {q}: {len(rs)} entries at addresses of earlier drops, e.g. {rs[0].address:#x} "
                f"(slot {rs[0].slot}, dropped {rs[0].drops}x)"
            )
    t = rep.trace
    if t is not None:
        p(
            f"  trace buffer ({escape(t.instance)}): {t.entries} entries of {t.written} written, {t.lost} lost; "
            f"drops from {_s(t.first_s)} to {_s(t.last_s)}"
            + (f" ({t.span_s:.3f} s)" if t.span_s is not None else "")
            + f"; {t.kfree_skb_events} kfree_skb, {t.consume_skb_events} consume_skb"
        )
        for n in t.notes:
            p(f"    note: {escape(n)}")
    for line in timeline_lines(out, rep, margin=2):  # in its place among the evidence
        p(escape(line))
    for n in rep.notes:
        p(f"  note: {escape(n)}")
    p()
    if explain:
        p("[bold]How drops were tied to queues[/bold]")
        for rule in rep.rules:
            p(f"  {escape(rule['name'])}: {escape(rule['explanation'])}")
    else:
        p("[dim]--explain: how drops were tied to queues[/dim]")
    rows = height if height is not None else max(24, out.size.height if out.is_terminal else 24)
    if rep.headlines and _rows(lines, out.width) > rows:
        p()
        p("[bold]Verdicts (again)[/bold]")
        for hl in rep.headlines:
            p(f"  {escape(hl['text'])}")


class _Lines:
    """``print``-like collector of the report's lines (markup strings)."""

    def __init__(self, lines: List[str]) -> None:
        self.lines = lines

    def __call__(self, s: str = "") -> None:
        self.lines.append(s)


def _rows(lines: List[str], width: int) -> int:
    """Terminal rows the lines take at ``width`` columns (markup left out)."""
    from rich.text import Text

    n = 0
    for line in lines:
        plain = Text.from_markup(line).plain
        n += max(1, -(-len(plain) // max(width, 1)))
    return n
