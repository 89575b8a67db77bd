"""``skbinspect ring``: every tun/tap/macvtap/ipvtap queue's ptr_ring, its contents and who holds it."""

from __future__ import annotations

from typing import Optional, Tuple

import click

from skbinspect.cli.app import State, cli, pass_state

__all__ = ["ring"]

RING_EPILOG = """\b
Examples:
  skbinspect ring                      every tun/tap/macvtap/ipvtap device in every namespace
  skbinspect ring tap0 macvtap0        only these (name or ifindex)
  skbinspect -c vmcore ring tap0 -e    with the live entries, oldest first, headers decoded
  skbinspect ring -e --stale tapmq     also the stale window (consumed, not yet zeroed)
  skbinspect --json ring -e tap0       JSON: devices -> queues -> ring -> entries (see README)
\b
Fullness follows the kernel: a ring is full when queue[producer] != NULL, which includes a producer
that wrapped onto slots consumed but not yet zeroed (the stale window, at most batch-1 slots)."""


@cli.command(epilog=RING_EPILOG)
@click.argument("devices", nargs=-1, metavar="[DEVICE]...")
@click.option("-e", "--entries", is_flag=True, help="List the live entries with decoded headers.")
@click.option("--stale", is_flag=True, help="With --entries, also list the stale window's entries.")
@click.option(
    "--netns",
    type=int,
    metavar="INUM",
    help="Only this network namespace (inode number, as in /proc/PID/ns/net).",
)
@click.option("--no-holders", is_flag=True, help="Do not scan processes for queue holders.")
@pass_state
def ring(
    state: State, devices: Tuple[str, ...], entries: bool, stale: bool, netns: Optional[int], no_holders: bool
) -> None:
    """Each tun/tap queue's ring: size, producer, consumer head/tail, live/stale/free, full, who holds it."""
    from skbinspect.memory.problems import take_problems
    from skbinspect.output import print_json
    from skbinspect.tuntap.devices import read_tap_devices
    from skbinspect.tuntap.render import render_ring

    target = state.target()
    devs = read_tap_devices(
        target.prog,
        devices,
        netns,
        entries=True,
        stale=stale and entries,
        holders=not no_holders,
        module_ok=target.debug.module_ok,
    )
    # damage met on the way (a device list that loops, ...) is said with the target's warnings
    warnings = target.warnings + take_problems(target.prog)
    if state.json:
        print_json(
            {
                "target": {"kind": target.kind, "source": target.source, "release": target.release},
                "warnings": warnings,
                "devices": [d.to_json(entries, raw=True) for d in devs],
            }
        )
    else:
        for w in warnings:
            click.echo(f"warning: {w}", err=True)
        render_ring(devs, entries, stale)
