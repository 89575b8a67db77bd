"""``skbinspect stats``: per-CPU drop counters (softnet_data, device and driver counters, drop_monitor)."""

from __future__ import annotations

from typing import Tuple

import click

from skbinspect.cli.app import State, cli, json_document, pass_state
from skbinspect.errors import SkbinspectError

__all__ = ["stats"]


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
    from skbinspect.counters.render import filter_nonzero, render_stats
    from skbinspect.counters.stats import drop_stats
    from skbinspect.memory.problems import take_problems
    from skbinspect.output import print_json

    target = state.target()
    loaded = "drop_monitor" in target.debug.modules
    result = drop_stats(target.prog, devices or None, drop_monitor_loaded=loaded)
    if devices:
        found = {d.name for d in result.devices} | {str(d.ifindex) for d in result.devices}
        missing = [d for d in devices if d not in found]
        if missing:
            from skbinspect.counters.stats import device_stats

            names = sorted(d.name for d in device_stats(target.prog))
            raise SkbinspectError(
                f"no device {', '.join(missing)} in {target.source}; devices: {', '.join(names)}."
            )
    result.notes += take_problems(target.prog)  # damage met on the way: a device list that loops, ...
    for name in ("tun", "macvlan", "ipvlan", "veth", "drop_monitor"):
        if not target.debug.module_ok(name):
            result.notes.append(f"module {name} has no debug info: its counters are not read.")
    if nonzero:
        result = filter_nonzero(result)
    if state.json:
        print_json(json_document(target, target.warnings, result.to_json()))
        return
    for w in target.warnings:
        click.echo(f"warning: {w}", err=True)
    render_stats(result)
