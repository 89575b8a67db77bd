"""``skbinspect ring``: every tun/tap/macvtap/ipvtap queue's ptr_ring, its contents and who holds it."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Iterator, List, Optional, Tuple

import click

from skbinspect.cli.app import State, cli, json_document, pass_state

__all__ = ["ring"]

RING_EPILOG = """\b
Examples:
  skbinspect ring
      every tun/tap/macvtap/ipvtap device in every namespace
  skbinspect ring tap0 macvtap0
      only these (name or ifindex)
  skbinspect -c vmcore ring tap0 -e
      with the live entries, oldest first, headers decoded
  skbinspect ring --stale tapmq
      the entries and the stale window (consumed, not yet zeroed)
  skbinspect ring -e tap0 --json
      JSON: devices -> queues -> ring -> entries (see README)
  skbinspect ring -e -o ring.txt
      the entries as plain text in ring.txt (-o: every command)
  skbinspect ring --stale --pcap q.pcapng
      the rings' packets for Wireshark/tcpdump, stale window included
(global options -c, -s, --qemu, --json, -o, --color may also follow the
command)

Fullness follows the kernel: a ring is full when queue[producer] != NULL, which includes a producer
that wrapped onto slots consumed but not yet zeroed (the stale window, at most batch-1 slots)."""


@cli.command(epilog=RING_EPILOG)
@click.argument("devices", nargs=-1, metavar="[DEVICE]...")
@click.option("-e", "--entries", is_flag=True, help="List the live entries with decoded headers.")
@click.option("--stale", is_flag=True, help="Also list the stale window's entries (implies --entries).")
@click.option(
    "--netns",
    type=int,
    metavar="INUM",
    help="Only this network namespace (inode number, as in /proc/PID/ns/net).",
)
@click.option("--no-holders", is_flag=True, help="Do not scan processes for queue holders.")
@click.option(
    "--pcap",
    "pcap",
    metavar="FILE",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the ring's packets to FILE as pcapng (the whole linear part of each frame): the live "
    "entries, what vhost-net took into its rxq batch, and with --stale the stale window; each packet "
    "commented with device, queue, ring or batch index, skb address and its set.",
)
@pass_state
def ring(
    state: State,
    devices: Tuple[str, ...],
    entries: bool,
    stale: bool,
    netns: Optional[int],
    no_holders: bool,
    pcap: Optional[str],
) -> None:
    """Each tun/tap queue's ring: size, producer, consumer head/tail, live/stale/free, full, who holds it."""
    from skbinspect.memory.problems import take_problems
    from skbinspect.output import print_json
    from skbinspect.tuntap.devices import read_tap_devices
    from skbinspect.tuntap.entries import whole_linear
    from skbinspect.tuntap.render import render_ring

    entries = entries or stale
    target = state.target()
    with whole_linear() if pcap else nullcontext():
        devs = read_tap_devices(
            target.prog,
            devices,
            netns,
            entries=True,
            stale=stale and entries,
            holders=not no_holders,
            module_ok=target.debug.module_ok,
        )
        if pcap:
            _write_pcap(pcap, devs, stale)
    # damage met on the way (a device list that loops, ...) is said with the target's warnings
    warnings = target.warnings + take_problems(target.prog)
    if state.json:
        print_json(json_document(target, warnings, {"devices": [d.to_json(entries, raw=True) for d in devs]}))
    else:
        for w in warnings:
            click.echo(f"warning: {w}", err=True)
        render_ring(devs, entries, stale)


def _write_pcap(path: str, devs: List[Any], stale: bool = False) -> None:
    """The packets of every ring listed as pcapng (see tuntap/pcap.py), per queue in the order the
    reader meets them: with ``stale``, the stale window (consumed, not yet zeroed), then what vhost-net
    took into its rxq batch, then the live entries.  Each packet's comment names its set."""
    from collections import Counter

    from skbinspect.errors import SkbinspectError
    from skbinspect.tuntap.pcap import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapPacket, write_pcapng

    skipped = 0
    sets: Counter = Counter()

    def packets() -> Iterator[PcapPacket]:
        nonlocal skipped
        for d in devs:
            for q in d.queues:
                queue = "-" if q.index is None else q.index
                batch: List[Tuple[str, Any, str]] = []
                if stale:
                    batch += [(f"ring index {e.index}", e, "stale") for e in q.stale_entries]
                for v in q.vhost:
                    what = f"vhost-net batch of pid {v.pid}"
                    batch += [(f"rxq batch index {v.rxq_head + e.index}", e, what) for e in v.entries]
                batch += [(f"ring index {e.index}", e, "live") for e in q.entries]
                for where, e, what in batch:
                    if e.error or not e.data:
                        skipped += 1
                        continue
                    sets["vhost" if what.startswith("vhost") else what] += 1
                    yield PcapPacket(
                        d.name,
                        LINKTYPE_ETHERNET if e.l2 else LINKTYPE_RAW,
                        e.data,
                        e.length or len(e.data),
                        e.tstamp_ns or 0,
                        f"{d.name} queue {queue} {where} {e.kind} {e.address:#x} {what}",
                    )

    try:
        with open(path, "wb") as f:
            n = write_pcapng(f, packets())
    except OSError as e:
        raise SkbinspectError(f"cannot write {path}: {e.strerror or e}") from e
    names = {"live": "live", "stale": "stale", "vhost": "from vhost-net's rxq batch"}
    parts = [f"{sets[k]} {names[k]}" for k in ("live", "stale", "vhost") if sets[k]]
    click.echo(
        f"wrote {n} packets to {path}"
        + (f" ({', '.join(parts)})" if parts else "")
        + (f"; {skipped} unreadable entries left out" if skipped else ""),
        err=True,
    )
