"""``skbinspect stats``: per-CPU drop counters (softnet_data, device and driver counters, drop_monitor)."""

from __future__ import annotations

from typing import Tuple

import click

from skbinspect.cli.app import State, cli, json_document, pass_state
from skbinspect.errors import SkbinspectError

__all__ = ["stats"]


STATS_EPILOG = """\b
Examples:
  skbinspect stats
      softnet per CPU, the drop counters that moved, drop_monitor
  skbinspect stats --all
      every device and row, the all-zero ones too
  skbinspect stats tap0 macvtap0
      only these devices (name or ifindex), every row
  skbinspect --json stats --nonzero
      JSON without the all-zero rows (JSON has them all by default)
  skbinspect --json stats
      JSON: softnet.cpus[], devices[].rows[] and .totals, drop_monitor

Device totals are what dev_get_stats() (ip -s -s link) reports for the drop fields: the core's
per-CPU core_stats (5.18+; NULL until the first drop) or net_device atomics (older kernels), plus the
driver's own counters (tun, macvlan/macvtap, ipvlan/ipvtap, veth, dev->stats). macvlan and ipvlan
report one counter as both rx_errors and rx_dropped."""


@cli.command(epilog=STATS_EPILOG)
@click.argument("devices", nargs=-1, metavar="[DEVICE]...")
@click.option(
    "--nonzero",
    is_flag=True,
    help="Hide rows (CPUs, devices, counters) that are all zero: the text's default, and JSON's with it.",
)
@click.option(
    "--all",
    "all_rows",
    is_flag=True,
    help="Text: every device and row, the all-zero ones too (the default for named devices and JSON).",
)
@pass_state
def stats(state: State, devices: Tuple[str, ...], nonzero: bool, all_rows: bool) -> None:
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
    if nonzero and all_rows:
        raise click.UsageError("--nonzero and --all contradict each other: give one.")
    if state.json:
        if nonzero:
            result = filter_nonzero(result)
        print_json(json_document(target, target.warnings, result.to_json()))
        return
    hidden = ""
    if nonzero or not (all_rows or devices):  # text shows what moved, unless asked for every row
        shown = filter_nonzero(result)
        n_dev = len(result.devices) - len(shown.devices)
        n_rows = sum(len(d.rows) for d in result.devices) - sum(len(d.rows) for d in shown.devices)
        n_cpu = len(result.softnet.cpus) - len(shown.softnet.cpus)
        if n_dev or n_rows or n_cpu:
            parts = [f"{n_dev} device{'s' * (n_dev != 1)} with no drops"] if n_dev else []
            parts += [f"{n_rows} all-zero counter row{'s' * (n_rows != 1)}"] if n_rows else []
            parts += [f"{n_cpu} idle CPU{'s' * (n_cpu != 1)}"] if n_cpu else []
            hidden = f"hidden: {', '.join(parts)} (--all shows every row)"
        result = shown
    for w in target.warnings:
        click.echo(f"warning: {w}", err=True)
    render_stats(result)
    if hidden:
        from skbinspect.output import console

        console().print(hidden, markup=False)
