"""Rendering of ``skbinspect ring``: rich tables on a terminal, plain text when piped."""

from __future__ import annotations

from typing import List, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from skbinspect.output import console, fit_hints
from skbinspect.tuntap.devices import TapDevice, TapQueue

__all__ = ["render_ring"]


def _holders(q: TapQueue) -> str:
    held = [f"{h.pid} ({h.comm}) fd {h.fd}" for h in q.holders]
    held += [f"vhost-net of {v.pid} ({v.comm})" for v in q.vhost]
    if not held:
        return "nobody" if q.state == "enabled" else "-"
    return ", ".join(held)


def _fill(q: TapQueue) -> Text:
    r = q.ring
    if r.error:
        return Text("unreadable", style="red")
    a = r.analysis
    s = f"{len(a.live)}/{r.size}"
    if a.full:
        return Text(f"FULL {s}", style="bold red")
    return Text(s)


def _occupancy(out: Console, d: TapDevice) -> None:
    """The device's queues as bars of their ring size: live, stale and free slots (ASCII when piped)."""
    from skbinspect.chart import occupancy_lines, unicode_ok

    rows = []
    for q in d.queues:
        if q.ring.error:
            continue
        a = q.ring.analysis
        rows.append(("-" if q.index is None else str(q.index), len(a.live), len(a.stale), a.free))
    tty = out.is_terminal and not getattr(out, "plain", False)
    for line in occupancy_lines(rows, out.width if tty else None, not (tty and unicode_ok(out.encoding))):
        out.print(escape(line), highlight=False)


def render_ring(devices: List[TapDevice], entries: bool, stale: bool, out: Optional[Console] = None) -> None:
    out = out or console()
    if not devices:
        out.print("no tun, tap, macvtap or ipvtap devices in the target")
        return
    for d in devices:
        flags = ", ".join([d.mode] + d.flags)
        # names, flags and notes come from the target: escaped, never markup (output._Console)
        head = (
            f"[bold]{escape(d.name)}[/bold] ifindex {d.ifindex} netns {d.netns}: {escape(d.kind)} "
            f"({escape(flags)}), txqueuelen {d.tx_queue_len}, {escape(d.operstate)}, "
            f"carrier {'on' if d.carrier else 'off'}, "
            f"queues {d.enabled_queues} enabled / {d.disabled_queues} disabled"
        )
        if d.char_device:
            head += f", {escape(d.char_device)}"
        head += f", net_device {d.address:#x}"  # for drgn or crash, as crash's net shows it
        out.print(head)
        if d.counters:
            out.print("  drops: " + escape(", ".join(f"{k} {v}" for k, v in d.counters.items())))
        for n in d.notes:
            out.print(f"  [yellow]note:[/yellow] {escape(n)}")
        if not d.queues:
            continue
        t = Table(show_edge=True, pad_edge=False)
        # the queue's own object: drivers/net/tun.c struct tun_file, drivers/net/tap.c struct tap_queue
        queue_struct = "tun_file" if d.kind == "tun" else "tap_queue"
        for col in (
            "queue",
            "state",
            "fill",
            "size",
            "prod",
            "head",
            "tail",
            "batch",
            "live",
            "stale",
            "free",
            "held by",
            queue_struct,
            "ptr_ring",
        ):
            t.add_column(
                col, overflow="fold", justify="right" if col not in ("state", "held by", "fill") else "left"
            )
        for q in d.queues:
            r = q.ring
            a = r.analysis
            t.add_row(
                "-" if q.index is None else str(q.index),
                q.state,
                _fill(q),
                str(r.size),
                str(r.producer),
                str(r.consumer_head),
                str(r.consumer_tail),
                str(r.batch),
                str(len(a.live)),
                str(len(a.stale)),
                str(a.free),
                _holders(q),
                f"{q.address:#x}",
                f"{r.address:#x}",
            )
        fit_hints(
            t,
            wrap=("held by",),
            drop=(queue_struct, "ptr_ring", "batch", "stale", "free", "size", "tail", "head", "prod"),
        )
        out.print(t)
        _occupancy(out, d)
        for q in d.queues:
            label = f"queue {q.index if q.index is not None else '(disabled)'}"
            for p in q.ring.analysis.problems + q.notes:
                out.print(f"  [yellow]{label}:[/yellow] {escape(p)}")
            for v in q.vhost:
                out.print(
                    f"  {label}: used by vhost-net of pid {v.pid} ({v.comm}) fd {v.fd}, worker "
                    f"{v.worker_pid} ({v.worker_comm}); {v.rxq_tail - v.rxq_head} entries taken from the "
                    "ring, not yet delivered to the guest (rxq)",
                    markup=False,
                )
                for n in v.notes:
                    out.print(f"    [yellow]note:[/yellow] {escape(n)}")
                if entries and v.entries:
                    for e in v.entries:
                        out.print(
                            f"    rxq[{v.rxq_head + e.index}] {e.kind} {e.address:#x} len {e.length}: "
                            f"{e.error or e.summary}",
                            markup=False,
                        )
            if q.ring.torn:
                out.print(
                    f"  [yellow]{label}:[/yellow] ring kept changing while read ({q.ring.retries} re-reads): "
                    "snapshot may be torn"
                )
            if entries:
                rows = [*(q.stale_entries if stale else ()), *q.entries]
                if rows:
                    et = Table(  # a str title is printed literally (output.literal_cells)
                        title=f"{d.name} {label}: {len(q.entries)} live entries, oldest first"
                        + (f", {len(q.stale_entries)} stale" if stale else ""),
                        title_justify="left",
                    )
                    for col in ("slot", "kind", "address", "len", "proto", "headers"):
                        et.add_column(col, overflow="fold")
                    for e in rows:
                        et.add_row(
                            f"{e.index}{' stale' if e.stale else ''}",
                            e.kind,
                            f"{e.address:#x}",
                            "-" if e.length is None else str(e.length),
                            f"{e.protocol:#06x}" if e.protocol is not None else "-",
                            e.error or e.summary,
                        )
                    out.print(et)
            elif q.entries:
                s = q.contents_summary()
                # flows of one packet tell nothing when every flow is unique (the top flow has 1 then)
                flows = [(flow, n) for flow, n in s["top_flows"][:3] if n > 1]
                unique = "; every flow a single packet" if s["top_flows"] and not flows else ""
                out.print(
                    f"  {label} holds: " + ", ".join(f"{n} {p}" for p, n in s["protocols"].items()) + unique,
                    markup=False,
                )
                for flow, n in flows:
                    out.print(f"    {n:6} {flow}", markup=False)
        out.print()
