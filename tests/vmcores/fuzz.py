"""A seeded, reproducible corruption campaign on real lab vmcores.

The addresses worth damaging come from drgn on a real lab dump (:func:`collect_sites`): the net namespace
and device lists, tun and tap device structs, ring headers, ring slots and whole queue arrays, sampled
skbs and their frames, softnet_data and the per-CPU offsets, core_stats, ftrace sub-buffers and their
list links, the event and drop-reason tables, the PID xarray and the holders' file tables, the module
list.  Each run damages one site of a copy of the dump (random bytes, zeros, 0xff, a flipped bit, a
pointer swapped with another of its kind, NULL, LIST_POISON, a misaligned or unmapped pointer, a node
linked to itself, two nodes linked to each other, 64 stacked VLAN tags in a frame, a device, task,
instance or reason name rewritten as rich markup: :data:`MARKUP_NAME`), runs every command
(``ring -e``, ``stats``, ``trace``, ``drops``, ``report``, as text and ``--json``) under a timeout (30 s
of CPU in the worker, so that a busy machine does not pass for a hang; a worker that stops answering
for 180 s without using it is killed), and puts the bytes back.  One copy per kernel is patched and restored in place.

A run fails on: an exit status of 70 (an internal error) or a signal, a traceback, a timeout (a hang),
``--json`` output that is not JSON, a tun/tap device or holder renamed :data:`MARKUP_NAME` that ``ring``
does not print as it is, or -- when the damage is confined to one device, or is in no device
nor the lists that lead to them (:data:`ELSEWHERE`) -- another tun/tap device missing or read differently
from the undamaged dump.

Commands run in a worker process that opens the copy once and runs the CLI in-process (``run()`` with the
opened target, as the drgn plugin does): drgn reads the file on every access, so each patch is seen, and a
run costs the commands only.  ``--subprocess`` runs each command as ``python -m skbinspect`` instead (slower,
also exercises opening the damaged dump).  A worker that stops answering (a hang in C) is killed and
restarted; the run counts as a hang.

    python -m tests.vmcores.fuzz --kernels bookworm,sid --runs 300 --seed 1 --out /tmp/fuzz
    python -m tests.vmcores.fuzz --kernels sid --seed 2029 --start 417 --runs 1    # replay run 417
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

COMMANDS: List[List[str]] = [["ring", "-e"], ["stats"], ["trace"], ["drops"], ["report"]]
#: Per command: CPU seconds in the worker (in-process), wall-clock seconds as a subprocess.
TIMEOUT = 30.0
#: A worker that has not answered after this long (wall clock) is stuck (blocked, or in C) and killed.
WALL_TIMEOUT = 180.0
TAP_DEVICES = ("tap0", "tapmq", "macvtap0", "ipvtap0")
LIST_POISON1 = 0xDEAD000000000100
#: A name the target may hold (an interface may be called so, a task may name itself so): a closing tag
#: with nothing to close (rich raises on it), a tag that would hide text, an emoji code.  Cut to the room
#: the name has, the "[/]" first.
MARKUP_NAME = b"[/]t[ap]:ok:[b]"
#: Sites in none of the tun/tap devices' objects nor in the lists that lead to them (namespaces, devices):
#: with the damage there, every device is listed with its queues and ring sizes as in the undamaged dump.
#: Holders (tasks, files), counters (percpu, softnet), the trace and its tables only add to a device.
ELSEWHERE = frozenset({"ftrace", "events", "reasons", "softnet", "percpu", "tasks", "files", "modules"})


# ---- sites ------------------------------------------------------------------------------------------


@dataclass
class Site:
    """A place in kernel memory to damage.

    :ivar kind: ``ptr`` (an 8-byte pointer), ``node`` (a ``list_head``: next, then prev), ``int`` (an
        integer of ``size`` bytes), ``bytes`` (a region of ``size`` bytes), ``frame`` (packet bytes),
        ``text`` (a NUL-terminated name in ``size`` bytes, the NUL included).
    :ivar owner: the tun/tap device the damage is confined to, if it is.
    :ivar group: sites whose pointers may be swapped with each other and nodes of one list.
    """

    category: str
    name: str
    address: int
    size: int
    kind: str
    owner: Optional[str] = None
    group: str = ""


def collect_sites(prog: Any) -> List[Site]:
    """The sites of a lab dump (see the module docstring), read with drgn and skbinspect's readers."""
    import drgn
    from drgn.helpers.linux.net import netdev_priv

    from skbinspect.ftrace.reader import trace_arrays, trace_reader
    from skbinspect.memory import walk
    from skbinspect.tuntap.devices import read_tap_devices

    sites: List[Site] = []

    def add(category: str, name: str, address: int, size: int, kind: str, owner: Optional[str] = None,
            group: str = "") -> None:  # fmt: skip
        sites.append(Site(category, name, address, size, kind, owner, group or category))

    def off(t: str, m: str) -> int:
        return drgn.offsetof(prog.type(t), m)

    # namespaces and devices
    init_net = prog["init_net"]
    add("netns", "init_net.list", init_net.list.address_, 16, "node", group="netns")
    add("netns", "net_namespace_list", prog["net_namespace_list"].address_, 16, "node", group="netns")
    devs = {}
    for dev in walk.netns_devices(init_net.address_of_()):
        name = dev.name.string_().decode()
        devs[name] = dev
        owner = name if name in TAP_DEVICES else None
        add("devlist", f"{name}.dev_list", dev.dev_list.address_, 16, "node", group="devlist")
        add("device", f"{name}.rtnl_link_ops", dev.rtnl_link_ops.address_, 8, "ptr", owner, "ops")
        add("device", f"{name}.netdev_ops", dev.netdev_ops.address_, 8, "ptr", owner, "ops")
        add("device", f"{name}.name", dev.name.address_, 16, "text", owner)
        if dev.type_.type.has_member("core_stats"):
            add("device", f"{name}.core_stats", dev.core_stats.address_, 8, "ptr", owner, "percpu")
    # tun and tap devices: their structs, queues, rings, slots, skbs, frames
    tds = {d.name: d for d in read_tap_devices(prog, entries=True, holders=True)}
    for name, d in tds.items():
        dev = devs.get(name)
        if dev is None:
            continue
        if d.kind == "tun":
            tun = netdev_priv(dev, "struct tun_struct")
            for m in ("numqueues", "numdisabled", "flags"):
                add("tun", f"{name}.tun.{m}", tun.member_(m).address_, 4, "int", name)
            add("tun", f"{name}.tun.tfiles[0]", tun.tfiles[0].address_, 8, "ptr", name, "tfile")
            add("tun", f"{name}.tun.disabled", tun.disabled.address_, 16, "node", name, f"{name}.disabled")
        else:
            tap = drgn.cast("struct tap_dev *", dev.rx_handler_data)
            add("tap", f"{name}.rx_handler_data", dev.rx_handler_data.address_, 8, "ptr", name, "tapdev")
            add("tap", f"{name}.tap.numvtaps", tap.numvtaps.address_, 4, "int", name)
            add("tap", f"{name}.tap.taps[0]", tap.taps[0].address_, 8, "ptr", name, "tfile")
            add("tap", f"{name}.tap.queue_list", tap.queue_list.address_, 16, "node", name, f"{name}.qlist")
        for q in d.queues:
            r = q.ring
            qn = f"{name}.q{q.index}"
            ro = {m: off("struct ptr_ring", m) for m in ("producer", "consumer_head", "consumer_tail", "size",
                                                         "batch", "queue")}  # fmt: skip
            for m, o in ro.items():
                add("ring", f"{qn}.ring.{m}", r.address + o, 8 if m == "queue" else 4,
                    "ptr" if m == "queue" else "int", name, "ringq")  # fmt: skip
            if r.queue and r.size:
                add("ringarray", f"{qn}.queue[]", r.queue, 8 * r.size, "slots", name)
                for k in sorted({0, r.size // 3, r.size - 1, r.producer % r.size}):
                    add("slot", f"{qn}.queue[{k}]", r.queue + 8 * k, 8, "ptr", name, "skb")
            for e in list(q.entries)[:: max(1, len(q.entries) // 3)][:3]:
                add("skb", f"{qn}.skb@{e.index}", e.address, 256, "bytes", name)
                for m, size in (("len", 4), ("data_len", 4), ("head", 8), ("data", 8), ("mac_header", 2)):
                    add("skbfield", f"{qn}.skb@{e.index}.{m}", e.address + off("struct sk_buff", m), size,
                        "ptr" if size == 8 else "int", name, "skbptr")  # fmt: skip
                data = prog.read_u64(e.address + off("struct sk_buff", "data"))
                add("frame", f"{qn}.frame@{e.index}", data, 64, "frame", name)
    # per CPU
    from skbinspect.counters.stats import cpu_lists

    possible, _, offsets = cpu_lists(prog)
    add("percpu", "nr_cpu_ids", prog["nr_cpu_ids"].address_, 4, "int")
    add("percpu", "__cpu_possible_mask", prog["__cpu_possible_mask"].address_, 8, "bytes")
    add("percpu", "__cpu_online_mask", prog["__cpu_online_mask"].address_, 8, "bytes")
    pco = prog["__per_cpu_offset"].address_
    sd = prog["softnet_data"]
    for cpu in possible:
        add("percpu", f"__per_cpu_offset[{cpu}]", pco + 8 * cpu, 8, "int")
        a = (sd.address_ + offsets[cpu]) & (2**64 - 1)
        add("softnet", f"softnet_data[{cpu}]", a, 256, "bytes")
    # ftrace
    for tr in trace_arrays(prog):
        add("ftrace", f"trace_array {tr.name}.list", tr.address + off("struct trace_array", "list"), 16, "node",
            group="trarrays")  # fmt: skip
        r = trace_reader(prog, None if tr.is_top else tr.name)
        tro = drgn.Object(prog, "struct trace_array *", tr.address)
        add("ftrace", f"trace_array {tr.name}", tr.address, 128, "bytes")
        for m in ("clock_id", "trace_flags"):
            if tro.type_.type.has_member(m):
                add("ftrace", f"trace_array {tr.name}.{m}", tro.member_(m).address_, 4, "int")
        add("ftrace", f"trace_array {tr.name}.name", tro.name.address_, 8, "ptr", group="trname")
        if not tr.is_top:
            add("ftrace", f"trace_array {tr.name} name string", tro.name.value_(), len(tr.name) + 1, "text")
        add("ftrace", f"trace_buffer of {tr.name}", tr.buffer, 128, "bytes")
        tb = drgn.Object(prog, "struct trace_buffer *", tr.buffer)
        for m in ("subbuf_order", "subbuf_size", "cpus"):
            if tb.type_.type.has_member(m):
                add("ftrace", f"trace_buffer of {tr.name}.{m}", tb.member_(m).address_, 4, "int")
        add("ftrace", f"trace_buffer of {tr.name}.buffers", tb.buffers.address_, 8, "ptr", group="trbufs")
        for cb in r.cpu_buffers[:2]:
            add("ftrace", f"{tr.name} cpu{cb.cpu} ring_buffer_per_cpu", cb.address, 128, "bytes")
            add("ftrace", f"{tr.name} cpu{cb.cpu} ring_buffer_per_cpu+128", cb.address + 128, 256, "bytes")
        for cp in r.pages[:2]:
            for k in sorted({0, len(cp.pages) // 2, len(cp.pages) - 1}):
                if k < 0 or k >= len(cp.pages):
                    continue
                bpage, page = cp.pages[k][0], cp.pages[k][1]
                add(
                    "ftrace",
                    f"{tr.name} cpu{cp.cpu} bpage{k}.list",
                    bpage,
                    16,
                    "node",
                    group=f"bp{tr.name}{cp.cpu}",
                )
                add("ftrace", f"{tr.name} cpu{cp.cpu} page{k} header", page, 16, "bytes")
                add("ftrace", f"{tr.name} cpu{cp.cpu} page{k} events", page + 16, 128, "bytes")
    ev = prog["ftrace_events"].address_
    first = prog.read_u64(ev)
    add("events", "ftrace_events", ev, 16, "node", group="events")
    add("events", "ftrace_events.first", first, 16, "node", group="events")
    for sym in ("event_kfree_skb", "event_consume_skb"):
        try:
            call = prog[sym]
        except KeyError:
            continue
        add("events", f"{sym}.list", call.list.address_, 16, "node", group="events")
        add("events", sym, call.address_, 96, "bytes")
        add("events", f"{sym}.class", call.member_("class").address_, 8, "ptr", group="evclass")
        fields = call.member_("class").fields.address_
        add("events", f"{sym} fields", fields, 16, "node", group=f"{sym}.fields")
        add("events", f"{sym} first field", prog.read_u64(fields), 64, "bytes")
    try:
        sc = prog["savedcmd"].value_()
        add("events", "savedcmd", sc, 64, "bytes")
    except KeyError:
        pass
    # drop reasons
    for sym in ("drop_reasons", "drop_reasons_by_subsys"):
        try:
            a = prog[sym].address_
        except LookupError:
            continue
        add("reasons", f"{sym}[0..4]", a, 32, "bytes")
        add("reasons", f"{sym}[1]", a + 8, 8, "ptr", group="reasons")
        if sym == "drop_reasons":
            name = prog.read_u64(a + 8 * 2)
            if name:
                add("reasons", f"{sym}[2] string", name, len(prog.read(name, 64).split(b"\0")[0]) + 1, "text")
    # tasks and files of the holders
    idr = prog["init_pid_ns"].idr.idr_rt.address_
    head = prog.read_u64(idr + off("struct xarray", "xa_head"))
    add("tasks", "init_pid_ns.idr.xa_head", idr + off("struct xarray", "xa_head"), 8, "ptr", group="xa")
    if head & 3 == 2 and head > 4096:
        add("tasks", "pid xa_node slots", head - 2 + off("struct xa_node", "slots"), 64, "bytes")
        add(
            "tasks",
            "pid xa_node slot[1]",
            head - 2 + off("struct xa_node", "slots") + 8,
            8,
            "ptr",
            group="xa",
        )
    holders = {h.pid for d in tds.values() for q in d.queues for h in q.holders}
    for task in walk.tasks(prog):
        if int(task.pid) in holders:
            add("tasks", f"pid {int(task.pid)}.comm", task.comm.address_, 16, "text")
            add("files", f"pid {int(task.pid)}.files", task.files.address_, 8, "ptr", group="files")
            fdt = task.files.fdt.read_()
            add("files", f"pid {int(task.pid)}.fdt.max_fds", fdt.max_fds.address_, 4, "int")
            add("files", f"pid {int(task.pid)}.fdt.fd", fdt.fd.address_, 8, "ptr", group="files")
    # modules
    mods = prog["modules"].address_
    add("modules", "modules", mods, 16, "node", group="modules")
    m1 = prog.read_u64(mods)
    add("modules", "first module.list", m1, 16, "node", group="modules")
    return sites


# ---- mutations ----------------------------------------------------------------------------------------

MUTATIONS = {
    "ptr": [
        "null",
        "self",
        "swap",
        "poison",
        "misalign",
        "unmapped",
        "noncanonical",
        "bitflip",
        "random",
        "ff",
    ],
    "node": [
        "null",
        "self",
        "loop2",
        "poison",
        "misalign",
        "unmapped",
        "bitflip",
        "random",
        "zeros",
        "ff",
        "swap",
    ],
    "int": ["zeros", "ff", "random", "bitflip", "large", "negative"],
    "bytes": ["random", "zeros", "ff", "bitflip"],
    "text": ["markup", "markup", "random", "zeros", "ff", "bitflip"],
    "frame": ["random", "zeros", "ff", "bitflip", "vlan64", "vlan5"],
    "slots": ["random_noncanonical", "zeros", "ff", "one_unmapped", "shifted", "self"],
}


def mutate(
    rng: random.Random, site: Site, sites: Sequence[Site], read: Any
) -> Tuple[str, List[Tuple[int, bytes]]]:
    """Choose a mutation for ``site``: ``(its name, [(address, new bytes)])``.  ``read(address, size)``
    reads the undamaged dump."""
    how = rng.choice(MUTATIONS[site.kind])
    a, n = site.address, site.size
    same = [s for s in sites if s.group == site.group and s.kind == site.kind and s.address != a]

    def q(v: int) -> bytes:
        return struct.pack("<Q", v & (2**64 - 1))

    if site.kind in ("ptr", "node"):
        cur = struct.unpack("<Q", read(a, 8))[0]
        if how == "null":
            return how, [(a, q(0))]
        if how == "self":
            return how, [(a, q(a))]
        if how == "loop2" and same:
            b = rng.choice(same).address
            return f"loop2 with {b:#x}", [(a, q(b)), (b, q(a))]
        if how == "swap" and same:
            other = rng.choice(same)
            return f"swap with {other.name}", [(a, read(other.address, 8)), (other.address, q(cur))]
        if how == "poison":
            return how, [(a, q(LIST_POISON1))]
        if how == "misalign":
            return how, [(a, q(cur + rng.choice([1, 2, 4, -4])))]
        if how == "unmapped":
            return how, [(a, q(0xFFFFC90000000000 + (rng.getrandbits(30) << 12)))]
        if how == "noncanonical":
            return how, [(a, q(rng.getrandbits(63) & ~(0xFF << 56)))]
        if how == "bitflip":
            return how, [(a, q(cur ^ (1 << rng.randrange(64))))]
        if how == "zeros":
            return how, [(a, bytes(n))]
        if how == "ff":
            return how, [(a, b"\xff" * 8)]
        return "random", [(a, rng.getrandbits(64).to_bytes(8, "little"))]
    if site.kind == "int":
        cur = int.from_bytes(read(a, n), "little")
        v = {
            "zeros": 0,
            "ff": (1 << 8 * n) - 1,
            "random": rng.getrandbits(8 * n),
            "bitflip": cur ^ (1 << rng.randrange(8 * n)),
            "large": cur + rng.choice([1 << 20, 1 << 24, 1 << 31, 4096]),
            "negative": (1 << 8 * n) - rng.randrange(1, 1000),
        }[how]
        return how, [(a, (v & ((1 << 8 * n) - 1)).to_bytes(n, "little"))]
    if site.kind == "slots":
        count = n // 8
        if how == "random_noncanonical":
            return how, [
                (a, b"".join(q(rng.getrandbits(63) & ~(0xFF << 56) | 1 << 40) for _ in range(count)))
            ]
        if how == "one_unmapped":
            k = rng.randrange(count)
            return how, [(a + 8 * k, q(0xFFFFC90000000000 + (rng.getrandbits(30) << 12)))]
        if how == "shifted":
            raw = read(a, n)
            return how, [(a, raw[4:] + raw[:4])]  # every slot misaligned by 4 bytes
        if how == "self":
            return how, [(a, b"".join(q(a) for _ in range(count)))]
        return how, [(a, (b"\xff" if how == "ff" else b"\0") * n)]
    if how == "markup":
        return how, [(a, MARKUP_NAME[: n - 1] + b"\0")]
    # bytes, frame, text
    raw = bytearray(read(a, n))
    if how == "vlan64" or how == "vlan5":
        tags = 64 if how == "vlan64" else 5
        stack = b"".join(struct.pack(">HH", 0x8100, 100 + i) for i in range(tags))
        body = bytes(raw[:12]) + stack + bytes(raw[12:])
        return how, [(a, body[:n])]
    if how == "random":
        raw = bytearray(rng.getrandbits(8) for _ in range(n))
    elif how in ("zeros", "ff"):
        raw = bytearray((b"\xff" if how == "ff" else b"\0") * n)
    else:
        for _ in range(rng.randrange(1, 4)):
            k = rng.randrange(n)
            raw[k] ^= 1 << rng.randrange(8)
    return how, [(a, bytes(raw))]


# ---- the worker ---------------------------------------------------------------------------------------


class _Hang(BaseException):
    """Raised by the alarm: not an Exception, so that no handler in skbinspect swallows it."""


def _worker(core: str, symbols: List[str]) -> None:
    """Open ``core`` once; for each request line ``{"args": [...], "timeout": s}`` on stdin, run the CLI
    in-process and answer one line ``{"rc", "out", "err", "secs", "timeout"}`` on the original stdout."""
    from skbinspect.cli import app
    from skbinspect.target.opener import open_target

    proto = os.fdopen(os.dup(1), "w")
    target = open_target(core=core, symbols=symbols)

    def alarm(signum: int, frame: Any) -> None:
        raise _Hang()

    # the limit is CPU time (ITIMER_PROF): a loop burns it, a busy machine does not make a command "hang"
    signal.signal(signal.SIGPROF, alarm)
    proto.write(json.dumps({"ready": True}) + "\n")
    proto.flush()
    for line in sys.stdin:
        req = json.loads(line)
        target.prog.cache.clear()  # the memory changed: nothing derived from it may be kept
        out, err = io.StringIO(), io.StringIO()
        state = app.State(None, None, (), True, False, prog_factory=lambda: target)
        old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        t0 = time.monotonic()
        hung = False
        rc: Optional[int] = None
        signal.setitimer(signal.ITIMER_PROF, req.get("timeout", TIMEOUT))
        try:
            rc = app.run(req["args"], obj=state)
        except _Hang:
            hung = True
        except BaseException as e:  # noqa: BLE001 - anything escaping run() is a failure to report
            err.write(f"ESCAPED run(): {type(e).__name__}: {e}\n")
            rc = -1
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            sys.stdout, sys.stderr = old
        reply = {"rc": rc, "out": out.getvalue(), "err": err.getvalue(), "secs": time.monotonic() - t0,
                 "timeout": hung}  # fmt: skip
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


class Worker:
    """The parent's handle on a worker process (restarted when it hangs or dies)."""

    def __init__(self, core: str, symbols: List[str], log: Any) -> None:
        self.core, self.symbols, self.log = core, symbols, log
        self.p: Optional[subprocess.Popen] = None

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("SKBINSPECT_DEBUG", None)
        self.p = subprocess.Popen(
            [sys.executable, "-m", "tests.vmcores.fuzz", "worker", self.core, *self.symbols],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            cwd=str(Path(__file__).resolve().parents[2]),
        )  # fmt: skip
        assert self.p.stdout is not None
        ready = self._readline(300)
        if ready is None:
            raise RuntimeError("fuzz worker did not start")

    def _readline(self, timeout: float) -> Optional[str]:
        assert self.p is not None and self.p.stdout is not None
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            return None
        line = self.p.stdout.readline()
        return line or None

    def run(self, args: List[str], timeout: float) -> Dict[str, Any]:
        if self.p is None or self.p.poll() is not None:
            self.start()
        assert self.p is not None and self.p.stdin is not None
        t0 = time.monotonic()
        self.p.stdin.write(json.dumps({"args": args, "timeout": timeout}) + "\n")
        self.p.stdin.flush()
        line = self._readline(max(WALL_TIMEOUT, 4 * timeout))  # a hang that burns no CPU (blocked)
        if line is None:
            died = self.p.poll()
            self.stop()
            if died is not None:
                return {"rc": died, "out": "", "err": f"worker died ({died})", "secs": time.monotonic() - t0,
                        "timeout": False}  # fmt: skip
            return {"rc": None, "out": "", "err": "worker hung (killed)", "secs": time.monotonic() - t0,
                    "timeout": True}  # fmt: skip
        return json.loads(line)

    def stop(self) -> None:
        if self.p is not None:
            if self.p.poll() is None:
                self.p.kill()
            self.p.wait()
            self.p = None


def _subprocess_run(core: str, symbols: List[str], args: List[str], timeout: float) -> Dict[str, Any]:
    """One command as its own process; the timeout is wall-clock, so give it room on a busy machine."""
    cmd = [sys.executable, "-m", "skbinspect", "-c", core, "--no-default-symbols"]
    for s in symbols:
        cmd += ["-s", s]
    env = dict(os.environ)
    env.pop("SKBINSPECT_DEBUG", None)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd + args, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        return {"rc": None, "out": "", "err": str(e), "secs": time.monotonic() - t0, "timeout": True}
    return {
        "rc": p.returncode,
        "out": p.stdout,
        "err": p.stderr,
        "secs": time.monotonic() - t0,
        "timeout": False,
    }


# ---- the campaign -------------------------------------------------------------------------------------


@dataclass
class RunResult:
    kernel: str
    run: int
    seed: int
    site: str
    category: str
    mutation: str
    failures: List[str] = field(default_factory=list)
    secs: float = 0.0
    exit_codes: Dict[str, Any] = field(default_factory=dict)
    secs_by_command: Dict[str, float] = field(default_factory=dict)


def _device_shape(ring_json: Dict[str, Any]) -> Dict[str, Tuple[int, Tuple[int, ...]]]:
    return {
        d["name"]: (len(d["queues"]), tuple(q["ring"]["size"] for q in d["queues"]))
        for d in ring_json["devices"]
    }


def _check(args: List[str], res: Dict[str, Any]) -> List[str]:
    """What is wrong with one command's result."""
    what = " ".join(args)
    bad = []
    if res["timeout"]:
        bad.append(f"{what}: timeout (hang)")
    elif res["rc"] is None or res["rc"] < 0 or res["rc"] >= 128:
        bad.append(f"{what}: killed ({res['rc']}): {res['err'][-300:]}")
    elif res["rc"] == 70:
        bad.append(f"{what}: exit 70: {res['err'][-500:]}")
    if "Traceback" in res["err"] or "ESCAPED" in res["err"]:
        bad.append(f"{what}: traceback: {res['err'][-500:]}")
    if args[0] == "--json" and res["rc"] == 0:
        try:
            if args[1] == "trace":
                for line in res["out"].splitlines():
                    json.loads(line)
            else:
                json.loads(res["out"])
        except ValueError as e:
            bad.append(f"{what}: output is not JSON ({e})")
    return bad


def _name_shown(site: Site, ring_text: str) -> List[str]:
    """A tun/tap device or a queue holder renamed :data:`MARKUP_NAME`: ``ring`` prints the name as it is."""
    shown_by_ring = (site.category == "device" and site.owner is not None) or site.name.endswith(".comm")
    name = MARKUP_NAME[: site.size - 1].decode()
    if shown_by_ring and name not in ring_text:
        return [f"ring: {site.name} renamed {name!r} is not printed as it is"]
    return []


class Campaign:
    """Runs on one kernel's dump: a copy patched and restored in place."""

    def __init__(self, kernel: str, vmcore: str, symbols: Sequence[str], workdir: Path, log: Any,
                 use_subprocess: bool = False) -> None:  # fmt: skip
        from skbinspect.target.opener import open_target
        from tests.vmcores.corrupt import copy_vmcore, file_offsets

        self.kernel = kernel
        self.symbols = list(symbols)
        self.copy = str(copy_vmcore(vmcore, workdir / f"{kernel}.vmcore"))
        os.chmod(self.copy, 0o600)
        self.target = open_target(core=vmcore, symbols=self.symbols)
        self.prog = self.target.prog
        self.sites = collect_sites(self.prog)
        only = os.environ.get("SKBINSPECT_FUZZ_CATEGORIES")
        if only:
            self.sites = [x for x in self.sites if x.category in only.split(",")]
        kinds = os.environ.get("SKBINSPECT_FUZZ_KINDS")
        if kinds:
            self.sites = [x for x in self.sites if x.kind in kinds.split(",")]
        self.file_offsets = file_offsets
        self.use_subprocess = use_subprocess
        self.worker = Worker(self.copy, self.symbols, log)
        self.baseline = self._ring_shape()

    def _exec(self, args: List[str]) -> Dict[str, Any]:
        if self.use_subprocess:
            return _subprocess_run(self.copy, self.symbols, args, 2 * TIMEOUT)
        return self.worker.run(args, TIMEOUT)

    def _ring_shape(self) -> Dict[str, Tuple[int, Tuple[int, ...]]]:
        res = self._exec(["--json", "ring"])
        assert res["rc"] == 0, res["err"]
        return _device_shape(json.loads(res["out"]))

    def patch(self, changes: List[Tuple[int, bytes]]) -> List[Tuple[int, bytes]]:
        """Write ``changes`` ((virtual address, bytes)) into the copy; return what restores it."""
        undo: List[Tuple[int, bytes]] = []
        with open(self.copy, "r+b") as f:
            for addr, data in changes:
                for off, part in self.file_offsets(self.prog, self.copy, addr, data):
                    f.seek(off)
                    undo.append((off, f.read(len(part))))
                    f.seek(off)
                    f.write(part)
        return undo

    def restore(self, undo: List[Tuple[int, bytes]]) -> None:
        with open(self.copy, "r+b") as f:
            for off, data in reversed(undo):
                f.seek(off)
                f.write(data)

    def one(self, run: int, seed: int) -> RunResult:
        rng = random.Random(f"{self.kernel}:{seed}:{run}")
        site = rng.choice(self.sites)
        mutation, changes = mutate(rng, site, self.sites, self.prog.read)
        res = RunResult(self.kernel, run, seed, site.name, site.category, mutation)
        try:
            undo = self.patch(changes)
        except ValueError as e:
            res.failures.append(f"cannot patch: {e}")  # an address outside the dump: a harness problem
            return res
        t0 = time.monotonic()
        try:
            for cmd in COMMANDS:
                for json_ in (False, True):
                    args = (["--json"] if json_ else []) + cmd
                    r = self._exec(args)
                    res.exit_codes[" ".join(args)] = "timeout" if r["timeout"] else r["rc"]
                    res.secs_by_command[" ".join(args)] = round(r["secs"], 2)
                    res.failures += _check(args, r)
                    if json_ and cmd[0] == "ring" and r["rc"] == 0:
                        res.failures += self._others_intact(self._owners(site, changes), r["out"])
                    if not json_ and cmd[0] == "ring" and r["rc"] == 0 and mutation == "markup":
                        res.failures += _name_shown(site, r["out"])
        finally:
            self.restore(undo)
        res.secs = time.monotonic() - t0
        return res

    def _owners(self, site: Site, changes: List[Tuple[int, bytes]]) -> Optional[set]:
        """The devices the damage is in (a swap writes two sites): empty when it is in no device's objects
        nor in what lists the devices (every device must then read as undamaged), None when it may be in
        several devices or in the lists (no device is expected intact)."""
        hit = [s for s in self.sites if any(s.address <= a < s.address + s.size for a, _ in changes)]
        if all(s.category in ELSEWHERE for s in [site, *hit]):
            return set()
        owners = {site.owner} | {s.owner for s in hit}
        return None if None in owners else owners

    def _others_intact(self, owners: Optional[set], out: str) -> List[str]:
        if owners is None:
            return []
        try:
            got = _device_shape(json.loads(out))
        except ValueError:
            return []
        return [
            f"{name} (undamaged) {'missing' if name not in got else f'read as {got[name]}, not {shape}'} "
            f"with the damage in {', '.join(sorted(owners))}"
            for name, shape in self.baseline.items()
            if name not in owners and got.get(name) != shape
        ]

    def close(self) -> None:
        self.worker.stop()


def run_campaign(kernels: Sequence[str], runs: int, seed: int, out: Optional[Path] = None,
                 use_subprocess: bool = False, progress: bool = False, start: int = 0) -> Dict[str, Any]:  # fmt: skip
    """``runs`` runs on each of ``kernels``, numbered from ``start`` (a run is its kernel, seed and number:
    ``start`` replays one); returns the figures and the failed runs."""
    from tests.conftest import lab_vmcore_for

    work = Path(tempfile.mkdtemp(prefix="skbinspect-fuzz-"))
    log_path = (out or work) / "workers.log"
    (out or work).mkdir(parents=True, exist_ok=True)
    results: List[RunResult] = []
    t0 = time.monotonic()
    try:
        with open(log_path, "a") as log:
            for k in kernels:
                lab = lab_vmcore_for(k)
                c = Campaign(k, lab.vmcore, lab.symbols, work, log, use_subprocess)
                try:
                    for i in range(start, start + runs):
                        r = c.one(i, seed)
                        results.append(r)
                        if out is not None:
                            with open(out / "runs.jsonl", "a") as f:
                                f.write(json.dumps(asdict(r)) + "\n")
                        if progress:
                            status = "FAIL " + "; ".join(r.failures)[:300] if r.failures else "ok"
                            print(f"{k} #{i} {r.site} / {r.mutation}: {r.secs:.1f}s {status}", flush=True)
                finally:
                    c.close()
                    os.unlink(c.copy)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in results if r.failures]
    codes = [v for r in results for v in r.exit_codes.values()]
    summary = {
        "kernels": list(kernels),
        "runs": len(results),
        "commands": len(codes),
        "failed_runs": len(failed),
        "exit_70": sum(1 for v in codes if v == 70),
        "timeouts": sum(1 for v in codes if v == "timeout"),
        "exit_codes": {k: list(map(str, codes)).count(k) for k in sorted(set(map(str, codes)))},
        "seconds": round(time.monotonic() - t0),
        "failures": [asdict(r) for r in failed],
    }
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "worker":
        _worker(argv[1], list(argv[2:]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m tests.vmcores.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernels", default="bookworm,sid")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("SKBINSPECT_FUZZ_RUNS", "20")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--start", type=int, default=0, help="the first run's number (with --runs 1: replay one run)"
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument("--subprocess", action="store_true", help="run each command as its own process")
    ap.add_argument(
        "--categories", help="only sites of these categories (comma separated), e.g. ftrace,events"
    )
    ap.add_argument("--kinds", help="only sites of these kinds (comma separated), e.g. text,frame")
    a = ap.parse_args(argv)
    if a.categories:
        os.environ["SKBINSPECT_FUZZ_CATEGORIES"] = a.categories
    if a.kinds:
        os.environ["SKBINSPECT_FUZZ_KINDS"] = a.kinds
    s = run_campaign(a.kernels.split(","), a.runs, a.seed, a.out, a.subprocess, progress=True, start=a.start)
    print(json.dumps({k: v for k, v in s.items() if k != "failures"}, indent=1))
    return 1 if s["failed_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
