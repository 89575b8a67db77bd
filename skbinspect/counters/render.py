"""Rendering of ``skbinspect reasons`` and ``skbinspect stats``: rich tables on a terminal, plain text
when piped.  No kernel access here."""

from __future__ import annotations

from typing import Dict, List, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from skbinspect.counters.reasons import DropReason, DropReasonTable
from skbinspect.counters.stats import TOTAL_FIELDS, CounterRow, DropStats
from skbinspect.output import console, fit_hints

__all__ = ["render_reasons", "render_reason", "render_stats", "filter_nonzero"]


def _style(r: DropReason) -> str:
    if "tun/tap" in r.tags:
        return "bold yellow"
    if "queue" in r.tags:
        return "cyan"
    if not r.is_drop:
        return "dim"
    return ""


def _marker(r: DropReason) -> str:
    return " ".join(r.tags)


def render_reasons(table: DropReasonTable, release: str = "", out: Optional[Console] = None) -> None:
    """The whole table; tun/tap reasons in bold, ring/queue reasons in colour (and tagged in text)."""
    out = out or console()
    if not table.has_reasons:
        head = f"This kernel{f' ({release})' if release else ''} records no drop reasons"
        notes = list(table.notes)
        lead = "this kernel records no drop reasons"
        if notes and notes[0].startswith(lead):
            head += notes.pop(0)[len(lead) :]
        else:
            head += "."
        out.print(head, markup=False)  # the release and notes come from the target
        for n in notes:
            out.print(f"note: {n}", markup=False)
        return
    t = Table(title=f"drop reasons of {release or 'the target'}", title_justify="left")
    t.add_column("value", justify="right")
    t.add_column("hex", justify="right")
    t.add_column("subsystem")
    t.add_column("name", no_wrap=True)
    t.add_column("source")
    t.add_column("tags")
    for r in table.reasons:
        name = r.name + ("" if r.is_drop else " (not a drop)") + (" [!]" if r.conflicts else "")
        t.add_row(
            str(r.value), f"{r.value:#x}", r.subsystem, Text(name, style=_style(r)), r.source, _marker(r)
        )
    out.print(t)
    subs = ", ".join(
        f"{k}={v}"
        + ("" if v in table.registered or v == "core" and not table.registered else " (not registered)")
        for k, v in sorted(table.subsystems.items())
    )
    out.print(f"subsystems: {subs}", markup=False)
    out.print(
        f"sources: {', '.join(table.sources_found)} (preferred first); tags: tun/tap = the reasons "
        "tun/tap drop with, queue = ring/queue/backlog reasons",
        markup=False,
    )
    for n in table.notes:
        out.print(f"[yellow]note:[/yellow] {escape(n)}")


def render_reason(table: DropReasonTable, r: DropReason, out: Optional[Console] = None) -> None:
    """One reason, looked up by value or name."""
    out = out or console()
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold")
    g.add_column()
    g.add_row("value", f"{r.value} ({r.value:#x}; subsystem {r.value >> table.subsys_shift}, code {r.code})")
    g.add_row("name", Text(r.name, style=_style(r)))
    g.add_row("subsystem", r.subsystem)
    if r.enum_name:
        g.add_row("enumerator", r.enum_name)
    g.add_row(
        "source",
        r.source
        + (f" (also: {', '.join(s for s in r.sources if s != r.source)})" if len(r.sources) > 1 else ""),
    )
    if r.tags:
        g.add_row("tags", _marker(r))
    if not r.is_drop:
        g.add_row("note", "not a drop: the kernel uses this value for skbs that were not dropped")
    for s, n in r.conflicts.items():
        g.add_row("disagreement", f"{s} names it {n}")
    out.print(g)


# --- stats ------------------------------------------------------------------------------------------


def filter_nonzero(stats: DropStats) -> DropStats:
    """A copy of ``stats`` without idle rows (and without devices whose rows are all idle)."""
    from dataclasses import replace

    sn = replace(stats.softnet, cpus=[c for c in stats.softnet.cpus if not c.idle or c.note])
    devs = []
    for d in stats.devices:
        rows = [r for r in d.rows if not r.idle or (r.note and not r.note.startswith("not allocated"))]
        if rows or any(d.totals.values()) or not d.complete:
            devs.append(replace(d, rows=rows))
    dm = replace(stats.drop_monitor, cpus=[c for c in stats.drop_monitor.cpus if not c.idle or c.note])
    return replace(stats, softnet=sn, devices=devs, drop_monitor=dm)


def _row_totals(row: CounterRow) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for raw, targets in row.counts_as.items():
        for t in targets:
            out[t] = out.get(t, 0) + row.counters.get(raw, 0)
    return out


def _row_detail(row: CounterRow) -> str:
    """Raw counters whose names differ from the columns they are shown in, or not counted at all."""
    parts = []
    for raw, v in row.counters.items():
        targets = row.counts_as.get(raw, [])
        if targets == [raw]:
            continue
        parts.append(f"{raw}={v}" + (f"->{'+'.join(targets)}" if targets else " (not in totals)"))
    return " ".join(parts)


def _where(row: CounterRow) -> str:
    if row.cpu is not None:
        return f"cpu{row.cpu}"
    if row.queue is not None:
        return f"rxq{row.queue}"
    return "-"


def render_stats(stats: DropStats, out: Optional[Console] = None) -> None:
    out = out or console()
    sn = stats.softnet
    t = Table(title=f"softnet_data per CPU (dropped: {sn.dropped_form})", title_justify="left")
    for column in (
        "cpu",
        "processed",
        "dropped",
        "time_squeeze",
        "received_rps",
        "flow_limit",
        "backlog",
        "input_qlen",
        "process_qlen",
    ):
        t.add_column(column, justify="right" if column != "cpu" else "left")
    t.add_column("note")
    for c in sn.cpus:
        t.add_row(
            str(c.cpu) + ("" if c.online else " (offline)"),
            str(c.processed),
            Text(str(c.dropped), style="bold red" if c.dropped else ""),
            str(c.time_squeeze),
            str(c.received_rps),
            str(c.flow_limit_count),
            str(c.backlog_len),
            str(c.input_qlen),
            str(c.process_qlen),
            c.note or "",
        )
    fit_hints(
        t,
        wrap=("note",),
        drop=("flow_limit", "received_rps", "backlog", "input_qlen", "process_qlen", "time_squeeze", "note"),
    )
    out.print(t)
    for n in sn.notes:
        out.print(f"[yellow]note:[/yellow] {escape(n)}")

    fields = [f for f in TOTAL_FIELDS if any(f in d.totals for d in stats.devices)] or list(TOTAL_FIELDS[:2])
    dt = Table(
        title="device drop counters (per CPU where the kernel keeps them so; totals as ip -s -s link)",
        title_justify="left",
    )
    dt.add_column("device", no_wrap=True)
    dt.add_column("source", no_wrap=True)
    dt.add_column("where")
    for f in fields:
        dt.add_column(f, justify="right")
    dt.add_column("detail / note")
    for d in stats.devices:
        label = d.name + (f" @ns{d.netns}" if d.netns else "")
        dt.add_row(
            Text(label, style="bold"),
            Text(f"{d.kind or '-'} / {d.driver}", style="bold"),
            "total",
            *[
                Text(
                    str(d.totals[f]) if f in d.totals else "-",
                    style="bold red" if d.totals.get(f) else "bold",
                )
                for f in fields
            ],
            Text(
                ("" if d.complete else "INCOMPLETE: ") + "; ".join(d.notes),
                style="" if d.complete else "yellow",
            ),
        )
        for r in d.rows:
            tot = _row_totals(r)
            dt.add_row(
                "",
                r.source,
                _where(r),
                *[str(tot[f]) if f in tot else "" for f in fields],
                "; ".join(x for x in (_row_detail(r), r.note or "") if x),
            )
    if stats.devices:
        fit_hints(
            dt,
            wrap=("detail / note", "where", "source"),
            drop=("detail / note", "where", "rx_errors", "rx_otherhost_dropped", "rx_nohandler"),
        )
        out.print(dt)
    else:
        out.print("no devices to show")
    for n in stats.notes:
        out.print(f"[yellow]note:[/yellow] {escape(n)}")

    dm = stats.drop_monitor
    if not dm.loaded:
        return
    state = "monitoring" if dm.tracing else "not monitoring"
    out.print(
        f"drop_monitor: loaded, {state}, mode {dm.mode or '?'}"
        + (f", hardware drops {'on' if dm.monitor_hw else 'off'}" if dm.monitor_hw is not None else "")
        + (f", queue limit {dm.queue_limit}" if dm.queue_limit is not None else "")
        + (f", truncation {dm.trunc_len}" if dm.trunc_len else ""),
        markup=False,
    )
    if dm.cpus:
        mt = Table(title="drop_monitor per CPU", title_justify="left")
        for column in ("cpu", "kind", "queued", "lost", "summary (drop site: count)", "note"):
            mt.add_column(column, justify="right" if column in ("queued", "lost") else "left")
        for dc in dm.cpus:
            summary: List[str] = [f"{sym}: {count}" for _, sym, count in dc.summary]
            mt.add_row(str(dc.cpu), dc.kind, str(dc.queued), str(dc.lost), "\n".join(summary), dc.note or "")
        out.print(mt)
    for n in dm.notes:
        out.print(f"[yellow]note:[/yellow] {escape(n)}")
