"""Rendering of ``skbinspect report`` (see :mod:`skbinspect.report.correlate`).  No kernel access here."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from rich.console import Console
from rich.markup import escape

from skbinspect.output import console
from skbinspect.report.correlate import Report, ReusedSkb

__all__ = ["render_report", "render_timeline"]


def render_timeline(out: Console, rep: Report, margin: int = 0) -> None:
    """The trace's drops over time (:mod:`skbinspect.chart`), sized to the terminal."""
    if rep.drop_times is None:
        return
    from skbinspect.chart import chart_for_console

    times, in_ns, end = rep.drop_times
    for line in chart_for_console(out, times, in_ns, end, margin=margin):
        out.print(escape(line), highlight=False)


def _s(x: Optional[float], fmt: str = "%.6f") -> str:
    return "-" if x is None else fmt % x


def render_report(rep: Report, out: Optional[Console] = None) -> None:
    out = out or console()
    p = out.print
    p(f"[bold]skbinspect report[/bold] ({escape(rep.release)})")
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
                f"{_s(r.first_s)} .. {_s(r.last_s)}"
                + (f", {r.rate_per_s:.1f}/s" if r.rate_per_s else "")
                + f" (tied by {r.tied_by})"
            )
        for h in v.holders:
            p(
                f"      reader: pid {h.pid} ({escape(h.comm)}) fd {h.fd}"
                + (f", state {h.state}" if h.state else "")
                + (" [vhost worker]" if h.kind == "vhost" else "")
            )
        if v.counter is not None and v.counter_value is not None:
            p(f"      counter: {v.counter} = {v.counter_value}")
        for s in v.stale_skbs:
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
                f"      stale skb {s.address:#x} (dropped at {_s(s.ts_s)}; slab object {s.slab_state}): "
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
                f"    {c.device} {c.counter} {c.counter_value} vs trace {c.trace_count}: {c.verdict}: {escape(c.explanation)}"
            )
    if rep.device_counters:
        p("  device counters that moved:")
        for dc in rep.device_counters:
            p(f"    {escape(dc['device'])}: " + ", ".join(f"{k} {n}" for k, n in dc["counters"].items()))
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
    render_timeline(out, rep, margin=2)
    for n in rep.notes:
        p(f"  note: {escape(n)}")
    p()
    p("[bold]How drops were tied to queues[/bold]")
    for rule in rep.rules:
        p(f"  {escape(rule['name'])}: {escape(rule['explanation'])}")
