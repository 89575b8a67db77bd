"""Seeded random scenarios for the lab (issue 14): real kernels, setups the fixed boots do not have.

``generate(seed)`` is pure: the same seed gives the same scenario on every machine.  A scenario is one
guest boot (``random-<seed>``, see lab.py) holding one to three independent *groups*, each a device that
drops on a full ring with its own holder process and sender:

* ``tun``: a tap with 1-4 queues (``IFF_MULTI_QUEUE`` when more than one); each queue either *held*
  (open, never read: it fills) or *read* (a consumer keeps draining it); frames sent into the tap through
  AF_PACKET (``tun_net_xmit``).  A single-queue tap may instead be the RX backend of a *vhost-net* instance
  whose guest posts no buffers (vhost takes a batch of up to 64 skbs into its rxq and stops).
* ``macvtap`` / ``ipvtap`` (L2): 1-2 queues on a lower device, either a veth fed from its peer, or a
  dummy fed from a sibling macvlan (bridge mode) / ipvlan (L2) on the same dummy (frames forwarded
  between siblings, ``tap_handle_frame`` drops them).

Ring sizes (the device's ``txqueuelen``) and frame counts vary.  A bridge with a tap port is not
generated: the lab's kernels carry no ``bridge.ko`` (kernels.py's ``MODULE_DIRS`` does not extract
``net/bridge``; adding it re-fetches every kernel).

The *trace* is one per boot and shared by its groups (one ``report`` run reads one buffer, as a user's
would): ``skb:kfree_skb`` always, ``skb:consume_skb`` or not, the ``stacktrace`` option or not, the net
events (``net:net_dev_queue``, ``net:netif_rx``) or not, in the top-level buffer or in the instance
``scn``, with a buffer big enough for every event or small enough to wrap.  Whether it did wrap is not
decided here: the guest records each CPU's buffer stats (``overrun``) after the run, and the checks
(random_check.py) read them.

``Scenario.describe()`` is the JSON description (also written next to the vmcore as scenario.json);
``Scenario.script()`` the guest shell script (sourced by guest/init.sh, like guest/scenarios/*.sh).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "CI_SEEDS",
    "GENERATOR_VERSION",
    "Group",
    "Scenario",
    "TraceSpec",
    "boot_name",
    "generate",
    "seed_of",
]

#: Bump when the same seed must give a different scenario (part of the random boots' cache key through
#: the script text, and recorded in the description).
GENERATOR_VERSION = 1

#: Seeds CI builds and checks on every kernel (one boot each), plus every seed a long run found failing
#: (regressions), with what it found.
#:   1    instance, 16 KiB buffer that wraps, stacks, no net events: a 4-queue tap (1 held, 3 read), an
#:        ipvtap on a dummy fed from a sibling ipvlan (read), a single-queue tap stalled by vhost-net
#:   166  top level, big buffer, net events, no stacks: an ipvtap on a veth, two multi-queue taps with
#:        several full queues each (drops told apart by net events only)
#:   1021 (regression, found by the long mode on bookworm) stacks, no net events: an ipvtap on a dummy
#:        whose readers fell behind (14 drops, its queues no longer full at the dump) and a macvtap with a
#:        full queue: report gave all 372 tap_handle_frame drops to the macvtap ("driver": the driver's
#:        only device with a full queue), none to the ipvtap, and called 14 "freed without counting".
#:        Timing decides whether the ipvtap drops at all (on sid that run it did not).
CI_SEEDS: Tuple[int, ...] = (1, 166, 1021)

#: The instance a scenario's trace uses when it is not the top-level buffer.
INSTANCE = "scn"

#: Per-CPU buffer sizes (KiB): one that holds every event of any scenario, and small ones that wrap.
BIG_BUFFER_KB = 4096
SMALL_BUFFERS_KB = (16, 32, 64)

RING_SIZES = (32, 50, 64, 100, 128, 200)


@dataclass
class TraceSpec:
    instance: Optional[str]  # None: the top-level buffer
    stacks: bool  # options/stacktrace
    net_events: bool  # net:net_dev_queue and net:netif_rx
    consume: bool  # skb:consume_skb as well as skb:kfree_skb
    buffer_kb: int  # per CPU
    small_buffer: bool  # chosen to wrap (the guest's stats say whether it did)


@dataclass
class Group:
    index: int
    kind: str  # "tun", "macvtap", "ipvtap"
    device: str  # the device whose queues fill
    queues: int
    held: List[int]  # queues held open and never read
    read: List[int]  # queues a consumer keeps reading
    ring: int  # txqueuelen: each queue's ptr_ring size
    lower: str  # "none" (tun), "veth", "dummy"
    lower_devices: List[str]  # every other device of the group, in creation order
    feed: str  # the device the sender writes into
    frames: int
    start: int  # first frame sequence number (unique per group)
    pace: int  # sender sleeps 2 ms every `pace` frames (0: never)
    vhost: bool  # queue 0 is a vhost-net RX backend without guest buffers
    holder: str  # the holder's name (its /run dir, truth.json's holders key)
    comm: str

    @property
    def devices(self) -> List[str]:
        return [self.device] + self.lower_devices


@dataclass
class Scenario:
    seed: int
    trace: TraceSpec
    groups: List[Group] = field(default_factory=list)
    version: int = GENERATOR_VERSION

    def describe(self) -> Dict[str, Any]:
        d = asdict(self)
        d["boot"] = boot_name(self.seed)
        return d

    def short(self) -> str:
        """One line for humans: what the seed built."""
        t = self.trace
        tr = (
            f"trace {'top' if t.instance is None else 'instance ' + t.instance} {t.buffer_kb} KiB/cpu"
            f"{' stacks' if t.stacks else ''}{' net-events' if t.net_events else ''}"
            f"{' consume' if t.consume else ''}"
        )
        gs = []
        for g in self.groups:
            s = f"{g.device}={g.kind} q{g.queues} ring {g.ring} held {g.held} read {g.read}"
            if g.lower != "none":
                s += f" on {g.lower} fed from {g.feed}"
            if g.vhost:
                s += " vhost"
            gs.append(s + f" {g.frames} frames")
        return f"seed {self.seed}: {tr}; " + "; ".join(gs)

    @property
    def trace_dir(self) -> str:
        return "$T" if self.trace.instance is None else f"$T/instances/{self.trace.instance}"

    def script(self) -> str:
        """The guest script: trace setup, every group's devices, holders and traffic, then the capture."""
        t = self.trace
        tr = self.trace_dir
        out = [
            f"# random scenario, generated by tests/vmcores/scenarios.py (version {self.version})",
            f"# {self.short()}",
        ]
        if t.instance is not None:
            out.append(f"mkdir {tr}")
        out.append(f"echo {t.buffer_kb} > {tr}/buffer_size_kb")
        out.append(f"echo {1 if t.stacks else 0} > {tr}/options/stacktrace")
        out.append(f"echo 1 > {tr}/events/skb/kfree_skb/enable")
        if t.consume:
            out.append(f"echo 1 > {tr}/events/skb/consume_skb/enable")
        if t.net_events:
            out.append(f"echo 1 > {tr}/events/net/net_dev_queue/enable")
            out.append(f"echo 1 > {tr}/events/net/netif_rx/enable")
        out.append(f"echo 1 > {tr}/tracing_on")
        for g in self.groups:
            out.append(f"# group {g.index}: {g.kind} {g.device}")
            out.extend(_group_script(g))
        holders = " ".join(g.holder for g in self.groups)
        out += [
            "sleep 1",
            f"echo 0 > {tr}/tracing_on",
            "sleep 1",
            "capture_common",
            # the truth the checks need beyond capture_common: whether each CPU's buffer overran, and
            # where the drivers' functions are (5.10's trace text prints bare addresses)
            "mkdir -p /out/extra",
            f"for c in {tr}/per_cpu/cpu*; do cat $c/stats > /out/extra/stats.${{c##*/}}; done",
            "grep -E '\\[(tun|tap)\\]' /proc/kallsyms > /out/extra/kallsyms",
            f"for h in {holders}; do",
            "    mkdir -p /out/holders/$h",
            "    ctl $h info /out/holders/$h/info > /dev/null",
            "    cp /run/$h/*.reply /out/holders/$h/ 2>/dev/null",
            "done",
            "wait_host",
        ]
        for g in self.groups:
            if g.vhost:
                out.append(f"ctl {g.holder} vhost-detach > /out/holders/{g.holder}/detach.reply")
        out += [
            f"for h in {holders}; do",
            "    ctl $h drain /out/holders/$h/drained > /dev/null",
            "done",
            "finish",
        ]
        return "\n".join(out) + "\n"


def _group_script(g: Group) -> List[str]:
    ip = "$IP"
    run = f"/run/{g.holder}"
    send = f"skblab send {g.feed} {{n}} --start {{s}}" + (f" --pace {g.pace}" if g.pace else "")
    send += " >> /out/senders"
    lines: List[str] = []
    if g.kind == "tun":
        mq = " --mq" if g.queues > 1 else ""
        lines.append(f"hold {g.holder} tun {g.device} {run} --queues {g.queues}{mq} --comm {g.comm}")
        lines.append(f"{ip} link set {g.device} txqueuelen {g.ring} up")
    else:
        lower = g.lower_devices
        if g.lower == "veth":
            peer, low = lower  # the sender writes into the peer; the tap sits on the other end
            lines += [
                f"{ip} link add {peer} type veth peer name {low}",
                f"{ip} link set {low} up",
                f"{ip} link set {peer} up",
            ]
        else:  # dummy, with a sibling macvlan/ipvlan the sender writes into
            low, sib = lower
            lines += [f"{ip} link add {low} type dummy", f"{ip} link set {low} up"]
            if g.kind == "macvtap":
                lines.append(f"{ip} link add link {low} name {sib} type macvlan mode bridge")
            else:
                lines.append(f"{ip} link add link {low} name {sib} type ipvlan mode l2")
            lines.append(f"{ip} link set {sib} up")
        mode = "mode bridge" if g.kind == "macvtap" else "mode l2"
        lines += [
            f"{ip} link add link {low} name {g.device} type {g.kind} {mode}",
            f"{ip} link set {g.device} txqueuelen {g.ring} up",
            f"idx=$(cat /sys/class/net/{g.device}/ifindex)",
            f"hold {g.holder} tap /dev/tap$idx {run} --queues {g.queues} --comm {g.comm}",
        ]
    for q in g.read:
        lines.append(f"ctl {g.holder} consume {q} 0 > {run}/consume{q}.reply")
    if g.vhost:
        # fill half the ring, let vhost take its batch, then overflow it
        first = g.ring // 2
        lines.append(send.format(n=first, s=g.start))
        lines.append(f"ctl {g.holder} vhost-attach 0 > {run}/attach.reply")
        lines.append("sleep 1")
        lines.append(send.format(n=g.frames - first, s=g.start + first))
    else:
        lines.append(send.format(n=g.frames, s=g.start))
    return lines


def boot_name(seed: int) -> str:
    return f"random-{seed}"


def seed_of(boot: str) -> Optional[int]:
    """The seed of a ``random-<seed>`` boot, else None."""
    if boot.startswith("random-") and boot[7:].isdigit():
        return int(boot[7:])
    return None


def _group(rng: random.Random, index: int, kind: str) -> Group:
    ring = rng.choice(RING_SIZES)
    lower = "none"
    lower_devices: List[str] = []
    prefix = {"tun": "rt", "macvtap": "rm", "ipvtap": "ri"}[kind]
    device = f"{prefix}{index}"
    feed = device
    vhost = False
    if kind == "tun":
        queues = rng.choice((1, 1, 2, 3, 4))
        # vhost needs room for its 64-skb batch on top of half a ring sent first
        vhost = queues == 1 and ring >= 128 and rng.random() < 0.4
    else:
        queues = rng.choice((1, 1, 2))
        lower = rng.choice(("veth", "dummy"))
        if lower == "veth":
            lower_devices = [f"rv{index}a", f"rv{index}b"]  # peer (fed), the tap's lower
            feed = lower_devices[0]
        else:
            lower_devices = [f"rd{index}", f"rs{index}"]  # dummy, sibling macvlan/ipvlan (fed)
            feed = lower_devices[1]
    if vhost:
        held, read = [0], []
    else:
        roles = [rng.random() < 0.6 for _ in range(queues)]  # True: held unread
        held = [q for q in range(queues) if roles[q]]
        read = [q for q in range(queues) if not roles[q]]
    # enough frames that a held queue fills even when the flow hash gives it less than its share
    frames = ring * queues * rng.choice((2, 3)) + rng.randrange(0, 200)
    pace = 50 if kind != "tun" or read else rng.choice((0, 50))
    return Group(
        index=index,
        kind=kind,
        device=device,
        queues=queues,
        held=held,
        read=read,
        ring=ring,
        lower=lower,
        lower_devices=lower_devices,
        feed=feed,
        frames=frames,
        start=1_000_000 * (index + 1),
        pace=pace,
        vhost=vhost,
        holder=f"scn{index}",
        comm=f"scn{index}-holder",
    )


def generate(seed: int) -> Scenario:
    """The scenario of ``seed`` (deterministic)."""
    rng = random.Random(f"skbinspect-scenario-{GENERATOR_VERSION}-{seed}")
    small = rng.random() < 0.35
    trace = TraceSpec(
        instance=INSTANCE if rng.random() < 0.4 else None,
        stacks=rng.random() < 0.5,
        net_events=rng.random() < 0.6,
        consume=rng.random() < 0.5,
        buffer_kb=rng.choice(SMALL_BUFFERS_KB) if small else BIG_BUFFER_KB,
        small_buffer=small,
    )
    n = rng.choice((1, 2, 2, 3))
    kinds = [rng.choice(("tun", "tun", "macvtap", "ipvtap")) for _ in range(n)]
    return Scenario(seed=seed, trace=trace, groups=[_group(rng, i, k) for i, k in enumerate(kinds)])
