"""``skbinspect reasons`` (the target's drop-reason table) and ``skbinspect stats`` (per-CPU drop counters)."""

from __future__ import annotations

from typing import Optional, Tuple

import click

from .cli import State, cli, pass_state
from .errors import SkbinspectError

__all__ = ["reasons", "stats"]

REASONS_EPILOG = """\b
Examples:
  skbinspect reasons                   the whole table: value, name, subsystem, where the name came from
  skbinspect reasons 55                what reason 55 is on this kernel
  skbinspect reasons FULL_RING         which value FULL_RING has on this kernel
  skbinspect reasons --tuntap          only the tun/tap and ring/queue/backlog reasons
  skbinspect --json reasons            JSON: has_reasons, subsystems, notes, reasons[]
\b
Numbers differ between kernels (FULL_RING is 55 on 6.1, 67 on 6.12, 78 on 7.x): everything here is
read from the target.  Kernels before 5.17 (e.g. 5.10) record no reasons."""


@cli.command(epilog=REASONS_EPILOG)
@click.argument("key", required=False, metavar="[VALUE|NAME]")
@click.option("-S", "--subsystem", metavar="NAME", help="Only this subsystem (core, openvswitch, qdisc, ...).")
@click.option("--tuntap", is_flag=True, help="Only the tun/tap reasons and the ring/queue/backlog reasons.")
@pass_state
def reasons(state: State, key: Optional[str], subsystem: Optional[str], tuntap: bool) -> None:
    """The target's drop reasons: value, name, subsystem; or look one up by value or name."""
    from dataclasses import replace

    from .reasons import drop_reason_table
    from .render import print_json
    from .render_stats import render_reason, render_reasons

    target = state.target()
    table = drop_reason_table(target.prog)
    shown = table.reasons
    if key is not None and table.has_reasons:
        r = table.lookup(key)
        if r is None:
            hint = ""
            try:
                hint = f" (as a value it would be {table.label(int(key, 0))})"
            except ValueError:
                pass
            raise SkbinspectError(f"this kernel ({target.release}) has no drop reason {key!r}{hint}. "
                                  "`skbinspect reasons` lists them all.")
        shown = [r]
    if subsystem:
        shown = [r for r in shown if r.subsystem == subsystem.lower()]
        if table.has_reasons and subsystem.lower() not in table.subsystems.values():
            raise SkbinspectError(f"this kernel ({target.release}) has no drop-reason subsystem {subsystem!r}; "
                                  f"it has: {', '.join(sorted(table.subsystems.values()))}.")
    if tuntap:
        shown = [r for r in shown if r.tags]
    if state.json:
        d = table.to_json()
        d["reasons"] = [r.to_json() for r in shown]
        d["release"] = target.release
        print_json(d)
        return
    for w in target.warnings:
        click.echo(f"warning: {w}", err=True)
    if key is not None and table.has_reasons:
        render_reason(table, shown[0])
    else:
        render_reasons(replace(table, reasons=shown), target.release)


STATS_EPILOG = """\b
Examples:
  skbinspect stats                     softnet per CPU, every device's drop counters, drop_monitor
  skbinspect stats tap0 macvtap0       only these devices (name or ifindex)
  skbinspect stats --nonzero           hide rows where every counter is zero
  skbinspect --json stats              JSON: softnet.cpus[], devices[].rows[] and .totals, drop_monitor
\b
Device totals are what dev_get_stats() (ip -s -s link) reports for the drop fields: the core's
per-CPU core_stats (5.18+; NULL until the first drop) or net_device atomics (older kernels), plus the
driver's own counters (tun, macvlan/macvtap, ipvlan/ipvtap, veth, dev->stats). macvlan and ipvlan
report one counter as both rx_errors and rx_dropped."""


@cli.command(epilog=STATS_EPILOG)
@click.argument("devices", nargs=-1, metavar="[DEVICE]...")
@click.option("--nonzero", is_flag=True, help="Hide rows (CPUs, devices, counters) that are all zero.")
@pass_state
def stats(state: State, devices: Tuple[str, ...], nonzero: bool) -> None:
    """Per-CPU drop counters: softnet_data, each device's core/driver counters, drop_monitor's state."""
    from .render import print_json
    from .render_stats import filter_nonzero, render_stats
    from .stats import drop_stats

    target = state.target()
    loaded = "drop_monitor" in target.debug.modules
    result = drop_stats(target.prog, devices or None, drop_monitor_loaded=loaded)
    if devices:
        found = {d.name for d in result.devices} | {str(d.ifindex) for d in result.devices}
        missing = [d for d in devices if d not in found]
        if missing:
            from .stats import device_stats

            names = sorted(d.name for d in device_stats(target.prog))
            raise SkbinspectError(f"no device {', '.join(missing)} in {target.source}; devices: {', '.join(names)}.")
    for name in ("tun", "macvlan", "ipvlan", "veth", "drop_monitor"):
        if not target.debug.module_ok(name):
            result.notes.append(f"module {name} has no debug info: its counters are not read.")
    if nonzero:
        result = filter_nonzero(result)
    if state.json:
        d = result.to_json()
        d["target"] = {"kind": target.kind, "source": target.source, "release": target.release}
        d["warnings"] = target.warnings
        print_json(d)
        return
    for w in target.warnings:
        click.echo(f"warning: {w}", err=True)
    render_stats(result)
