"""Corrupt memory never hangs or crashes skbinspect (issue 17): each failure seen on damaged lab dumps, as
a named test on a real dump (a copy patched where drgn says the object is) or a real dump file cut or
patched, and the seeded corruption campaign (:mod:`tests.vmcores.fuzz`) on two kernels.

Every run goes through the CLI as a user runs it.  What is asserted: the exit status is never 70 and no
signal kills the process; no traceback; damage is said (a warning, a note of the damaged object) and the
undamaged objects are still read.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests.conftest import lab_vmcore_for, run_skbinspect
from tests.vmcores.config import kernel_names
from tests.vmcores.lab import LabVmcore

TAPS = ("tap0", "tapmq", "macvtap0", "ipvtap0")
UNMAPPED = 0xFFFFC90000000000 + (0x3FFFF << 12)  # in the vmalloc area, nothing mapped there in the lab


def symbols_args(lab: LabVmcore) -> List[str]:
    out = ["--no-default-symbols"]
    for s in lab.symbols:
        out += ["-s", s]
    return out


def tap_of(prog: Any, name: str) -> Any:
    """The tun/tap device ``name`` as skbinspect reads it from the undamaged dump."""
    from skbinspect.tuntap.devices import read_tap_devices

    return {d.name: d for d in read_tap_devices(prog, [name], entries=True, holders=False)}[name]


def _q(v: int) -> bytes:
    return struct.pack("<Q", v & (2**64 - 1))


class DamagedCopy:
    """A copy of a lab vmcore, damaged for the length of a ``with`` and put back after."""

    def __init__(self, lab: LabVmcore, workdir: Path) -> None:
        from skbinspect.target.opener import open_target

        self.lab = lab
        self.core = workdir / f"{lab.kernel.name}.vmcore"
        shutil.copyfile(lab.vmcore, self.core)
        os.chmod(self.core, 0o600)
        self.prog = open_target(core=lab.vmcore, symbols=lab.symbols).prog  # the undamaged dump

    @contextmanager
    def damaged(self, *changes: Tuple[int, bytes]) -> Iterator[Path]:
        from tests.vmcores.corrupt import patch_any

        undo = []
        try:
            for addr, data in changes:
                undo.append((addr, patch_any(self.prog, self.core, addr, data)))
            yield self.core
        finally:
            for addr, old in reversed(undo):
                patch_any(self.prog, self.core, addr, old)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        p = run_skbinspect("-c", str(self.core), *symbols_args(self.lab), *args, timeout=timeout)
        assert p.returncode not in (70,) and 0 <= p.returncode < 128, (args, p.returncode, p.stderr[-2000:])
        assert "Traceback" not in p.stderr, p.stderr
        return p

    def ok(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        p = self.run(*args, timeout=timeout)
        assert p.returncode == 0, (args, p.stderr[-2000:])
        return p

    def ring(self, *args: str) -> Dict[str, Any]:
        return json.loads(self.ok("--json", "ring", *args).stdout)

    # addresses in the undamaged dump
    def dev(self, name: str) -> Any:
        from skbinspect.memory.walk import netns_devices

        for d in netns_devices(self.prog["init_net"].address_of_()):
            if d.name.string_().decode() == name:
                return d
        raise KeyError(name)

    def tap(self, name: str) -> Any:
        return tap_of(self.prog, name)

    def off(self, type_name: str, member: str) -> int:
        import drgn

        return drgn.offsetof(self.prog.type(type_name), member)


@pytest.fixture(scope="module")
def copy(lab_vmcore: LabVmcore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DamagedCopy]:
    c = DamagedCopy(lab_vmcore, tmp_path_factory.mktemp(f"damaged-{lab_vmcore.kernel.name}"))
    yield c
    os.unlink(c.core)


def _devices(out: Dict[str, Any]) -> Dict[str, Any]:
    return {d["name"]: d for d in out["devices"]}


# ---- ring and skb damage (TypeError in tuntap entries _read_skbs) ------------------------------------------


def test_ring_slots_and_skbs_damaged(copy: DamagedCopy) -> None:
    """tap0's ring: slot 1 points at unmapped memory, slot 2 at a misaligned address inside an skb, the
    skb of slot 3 has an absurd length.  `ring -e` (text and JSON) says so for those entries and decodes
    the others; the other devices are read in full."""
    t = copy.tap("tap0").queues[0]
    q, slots = t.ring.queue, t.ring.slots
    skb3 = slots[3]
    with copy.damaged(
        (q + 8, _q(UNMAPPED)),
        (q + 16, _q(slots[2] + 4)),
        (skb3 + copy.off("struct sk_buff", "len"), struct.pack("<I", 0x7FFFFFFF)),
    ):
        out = copy.ring("-e")
        copy.ok("ring", "-e")
    es = _devices(out)["tap0"]["queues"][0]["entries"]
    assert len(es) == len(t.entries)
    assert "unreadable" in es[1]["error"] and es[0]["error"] is None and es[4]["error"] is None
    assert "implausible lengths" in es[3]["error"]
    assert es[5]["data"] == t.entries[5].data.hex()
    mq = _devices(out)["tapmq"]
    assert sum(len(x["entries"]) for x in mq["queues"]) == sum(
        len(x.entries) for x in copy.tap("tapmq").queues
    )


def test_every_slot_random_non_canonical(copy: DamagedCopy) -> None:
    """Every slot of macvtap0's ring is a random non-canonical value: each entry is an error, nothing
    fails, the other devices are read."""
    import random

    t = copy.tap("macvtap0").queues[0]
    rng = random.Random(17)
    garbage = b"".join(_q(rng.getrandbits(47) | 1 << 52) for _ in range(t.ring.size))
    with copy.damaged((t.ring.queue, garbage)):
        out = copy.ring("-e")
        copy.ok("ring", "-e")
        copy.ok("report")
    q = _devices(out)["macvtap0"]["queues"][0]
    assert q["entries"] and all(e["error"] for e in q["entries"])
    assert all(_devices(out)[n]["queues"] for n in ("tap0", "tapmq", "ipvtap0"))


def test_ring_queue_pointer_misaligned_by_4(copy: DamagedCopy) -> None:
    """ipvtap0's ptr_ring.queue moved by 4 bytes: every slot is half of two pointers."""
    t = copy.tap("ipvtap0").queues[0]
    with copy.damaged((t.ring.address + copy.off("struct ptr_ring", "queue"), _q(t.ring.queue + 4))):
        out = copy.ring("-e")
        copy.ok("ring", "-e")
        copy.ok("report")
    q = _devices(out)["ipvtap0"]["queues"][0]
    assert q["ring"]["queue"] == f"{t.ring.queue + 4:#x}"
    assert len(_devices(out)) == 4


def test_ring_slot_at_unmapped_memory(copy: DamagedCopy) -> None:
    """One slot of tapmq's queue 0 points at unmapped memory: that entry is an error, the rest decode."""
    t = copy.tap("tapmq").queues[0]
    k = t.ring.analysis.live[0]
    with copy.damaged((t.ring.queue + 8 * k, _q(UNMAPPED))):
        out = copy.ring("-e")
    es = [q for q in _devices(out)["tapmq"]["queues"] if q["index"] == 0][0]["entries"]
    assert "unreadable" in es[0]["error"] and all(e["error"] is None for e in es[1:])


# ---- damaged net_devices (FaultError in _link_kind, list_tap_devices) ---------------------------------------


def test_damaged_net_devices_are_notes(copy: DamagedCopy) -> None:
    """tap0's rtnl_link_ops points at unmapped memory (its kind cannot be read) and macvtap0's tap_dev
    pointer is garbage: tap0 is left out with a warning naming it, macvtap0 is listed with a note, the
    others are read in full."""
    tap0, mvt = copy.dev("tap0"), copy.dev("macvtap0")
    with copy.damaged(
        (tap0.rtnl_link_ops.address_, _q(UNMAPPED)),
        (mvt.rx_handler_data.address_, _q(UNMAPPED + 0x1000)),
    ):
        out = copy.ring("-e")
        text = copy.ok("ring")
        copy.ok("report")
        copy.ok("stats")
    devs = _devices(out)
    assert "tap0" not in devs and any("device tap0" in w and "rtnl_link_ops" in w for w in out["warnings"])
    assert "device tap0" in text.stderr
    assert devs["macvtap0"]["queues"] == [] and any("queues" in n for n in devs["macvtap0"]["notes"])
    assert devs["tapmq"]["queues"] and devs["ipvtap0"]["queues"][0]["entries"]


# ---- names written as rich markup (MarkupError, found by the campaign's "markup" mutation) ---------------------


def test_names_that_look_like_markup_are_printed_as_they_are(copy: DamagedCopy) -> None:
    """tap0 is renamed ``[/]t[ap]:ok:[b`` and so is the task that holds its queue (any name a device or a
    task may have): ``ring``, ``report`` and ``stats`` print both names as they are.  Before, rich took
    them for markup: exit 70 with a MarkupError."""
    from skbinspect.memory import walk
    from skbinspect.tuntap.devices import read_tap_devices
    from tests.vmcores.fuzz import MARKUP_NAME

    name = MARKUP_NAME[:15]
    holder = read_tap_devices(copy.prog, ["tap0"], holders=True)[0].queues[0].holders[0]
    task = next(t for t in walk.tasks(copy.prog) if int(t.pid) == holder.pid)
    with copy.damaged((copy.dev("tap0").name.address_, name + b"\0"), (task.comm.address_, name + b"\0")):
        out = copy.ring()
        ring = copy.ok("ring", "-e").stdout
        report = copy.ok("report").stdout
        stats = copy.ok("stats").stdout
    text = name.decode()
    dev = _devices(out)[text]
    assert dev["queues"][0]["holders"][0]["comm"] == text
    assert f"{text} ifindex {dev['ifindex']}" in ring and f"{holder.pid} ({text}) fd {holder.fd}" in ring
    assert f"reader: pid {holder.pid} ({text}) fd {holder.fd}" in report
    assert any(line.split()[:1] == [text] for line in stats.splitlines()), stats


# ---- lists that loop, NULL and poisoned links -----------------------------------------------------------------


@pytest.mark.parametrize(
    "device,to",
    [("tap0", "self"), ("macvtap0", "self"), ("ipvtap0", "self"), ("tapmq", "lo")],
)
def test_device_list_loops(copy: DamagedCopy, device: str, to: str) -> None:
    """A net_device's dev_list.next points at itself (tap, macvtap, ipvtap) or back to lo: the walk stops
    there and says so; the devices before it are listed; nothing hangs."""
    d = copy.dev(device)
    node = d.dev_list.address_
    target = node if to == "self" else copy.dev("lo").dev_list.address_
    with copy.damaged((node, _q(target))):
        out = copy.ring()
        for cmd in (["ring", "-e"], ["stats"], ["report"], ["--json", "report"]):
            p = copy.ok(*cmd, timeout=60)
        stats = json.loads(copy.ok("--json", "stats", timeout=60).stdout)
    loop = [w for w in out["warnings"] if "loops back to" in w and "walk stopped" in w]
    assert loop and f"after {device}" in loop[0], out["warnings"]
    assert device in _devices(out)
    assert any("loops back to" in n for n in stats["notes"])
    assert "walk stopped" in p.stdout  # report's notes


def test_netns_list_loops(copy: DamagedCopy) -> None:
    """init_net.list.next points at itself: the namespace walk stops after init_net, every device of
    init_net is still read."""
    node = copy.prog["init_net"].list.address_
    with copy.damaged((node, _q(node))):
        out = copy.ring()
        copy.ok("stats", timeout=60)
        copy.ok("report", timeout=60)
    assert set(TAPS) <= set(_devices(out))
    assert any("network namespace list loops back to" in w for w in out["warnings"])


@pytest.mark.parametrize(
    "where,value",
    [("init_net.list", 0), ("tapmq.dev_list", 0), ("tapmq.dev_list", 0xDEAD000000000100)],
    ids=["netns-null", "devlist-null", "devlist-poison"],
)
def test_null_and_poisoned_links(copy: DamagedCopy, where: str, value: int) -> None:
    """init_net.list.next = NULL, a dev_list.next = NULL or LIST_POISON1: the walk stops, says why, and
    keeps what it found."""
    if where == "init_net.list":
        node = copy.prog["init_net"].list.address_
    else:
        node = copy.dev(where.split(".")[0]).dev_list.address_
    with copy.damaged((node, _q(value))):
        out = copy.ring()
        copy.ok("stats")
        copy.ok("report")
        copy.ok("ring", "-e")
    why = "NULL link" if value == 0 else "LIST_POISON"
    assert any(why in w and "walk stopped" in w for w in out["warnings"]), out["warnings"]
    if where.startswith("tapmq"):
        assert {"tap0", "tapmq"} <= set(_devices(out)) and "macvtap0" not in _devices(out)


# ---- stacked VLAN tags in a queued frame (KeyError 'vid') ----------------------------------------------------


@pytest.mark.parametrize("tags", [5, 64])
def test_stacked_vlan_tags_in_a_queued_frame(copy: DamagedCopy, tags: int) -> None:
    """The first frame in tap0's ring rewritten with ``tags`` stacked 802.1Q tags after its MAC
    addresses: `ring -e` shows the four decoded tags and says the rest were not decoded."""
    import drgn

    e = copy.tap("tap0").queues[0].entries[0]
    skb = drgn.Object(copy.prog, "struct sk_buff *", e.address)
    data = skb.data.value_()
    stack = b"".join(struct.pack(">HH", 0x8100, 100 + i) for i in range(tags))
    frame = (e.data[:12] + stack + e.data[12:])[: len(e.data)]
    with copy.damaged((data, frame)):
        text = copy.ok("ring", "-e", "tap0").stdout
        out = copy.ring("-e", "tap0")
        copy.ok("report")
    first = out["devices"][0]["queues"][0]["entries"][0]
    assert [h["vid"] for h in first["headers"][1:5]] == [100, 101, 102, 103]
    assert "more than 4 stacked VLAN tags" in text


# ---- per-CPU offsets -------------------------------------------------------------------------------------------


def test_per_cpu_offsets_zeroed(copy: DamagedCopy) -> None:
    """__per_cpu_offset zeroed: tap0's tx_dropped (1800 in the lab) is not shown as 0; stats marks the
    softnet rows as not read and says why; report does not count the zeros as read."""
    from skbinspect.counters.stats import cpu_lists

    possible = cpu_lists(copy.prog)[0]
    with copy.damaged((copy.prog["__per_cpu_offset"].address_, bytes(8 * (max(possible) + 1)))):
        out = copy.ring()
        stats = json.loads(copy.ok("--json", "stats").stdout)
        report = copy.ok("report").stdout
    tap0 = _devices(out)["tap0"]
    if copy.prog.type("struct net_device").has_member("core_stats"):  # 5.18+: per-CPU core_stats
        assert tap0["counters"] == {} and any("__per_cpu_offset" in n for n in tap0["notes"])
    else:  # net_device atomics (to 5.17): not per-CPU, still read
        assert "tx_dropped" in tap0["counters"] and not any("__per_cpu_offset" in n for n in tap0["notes"])
    assert all(c["note"] and "__per_cpu_offset" in c["note"] for c in stats["softnet"]["cpus"])
    assert any("cannot be trusted" in n for n in stats["notes"])
    if copy.prog.type("struct net_device").has_member("core_stats"):
        assert "counts only what could be read" in report


def test_bounded_walks_match_drgn(copy: DamagedCopy) -> None:
    """On the undamaged dump the bounded walks give exactly what drgn's helpers give, in the same order."""
    from drgn.helpers.linux.net import for_each_net, for_each_netdev
    from drgn.helpers.linux.pid import for_each_task

    from skbinspect.memory import walk

    prog = copy.prog
    assert [n.value_() for n in walk.net_namespaces(prog)] == [n.value_() for n in for_each_net(prog)]
    for net in for_each_net(prog):
        assert [d.value_() for d in walk.netns_devices(net)] == [d.value_() for d in for_each_netdev(net)]
    assert [t.value_() for t in walk.tasks(prog)] == [t.value_() for t in for_each_task(prog)]


def test_pid_xarray_loops(copy: DamagedCopy) -> None:
    """A slot of the PID xarray's root node points back at the root node (drgn's for_each_task() would
    walk it for ever): the holder scan skips that part, says so, and the rings are still read."""
    idr = copy.prog["init_pid_ns"].idr.idr_rt.address_
    head = copy.prog.read_u64(idr + copy.off("struct xarray", "xa_head"))
    assert head & 3 == 2 and head > 4096, "the lab's PID xarray has a root node"
    slots = head - 2 + copy.off("struct xa_node", "slots")
    with copy.damaged((slots + 8 * 63, _q(head))):
        out = copy.ring()
        copy.ok("report", timeout=60)
    assert any("task list" in w and ("seen before" in w or "below a leaf" in w) for w in out["warnings"])
    assert all(_devices(out)[n]["queues"] for n in TAPS)


@pytest.mark.parametrize("to", ["self", "second"])
def test_module_list_loops(copy: DamagedCopy, to: str) -> None:
    """The first module's list.next points at itself, or the second module's back at the first: opening
    the dump and symbolizing stacks (trace, drops, report) finish, and say the module list is damaged."""
    mods = copy.prog["modules"].address_
    first = copy.prog.read_u64(mods)
    second = copy.prog.read_u64(first)
    node, target = (first, first) if to == "self" else (second, first)
    with copy.damaged((node, _q(target))):
        p = copy.ok("trace", "--stacks", "--last", "20", timeout=90)
        copy.ok("drops", timeout=90)
        copy.ok("report", timeout=90)
    assert "module list loops back to" in p.stderr


def test_trace_array_list_damaged(copy: DamagedCopy) -> None:
    """The instance skbinst's trace_array.list.next points at unmapped memory (a bit flip found by the
    campaign): the top-level buffer is still read (it is global_trace), with a warning."""
    from skbinspect.ftrace.reader import trace_arrays

    inst = [t for t in trace_arrays(copy.prog) if t.name == "skbinst"][0]
    node = inst.address + copy.off("struct trace_array", "list")
    with copy.damaged((node, _q(UNMAPPED))):
        p = copy.ok("trace", "--last", "5")
        copy.ok("drops")
        copy.ok("--json", "report")
    assert "found as global_trace" in p.stdout + p.stderr


def test_nr_cpu_ids_absurd(copy: DamagedCopy) -> None:
    """nr_cpu_ids overwritten with 2^31-1: drgn's for_each_possible_cpu() would test two billion bits;
    the CPU masks are read once, bounded by NR_CPUS, and the damage is said."""
    with copy.damaged((copy.prog["nr_cpu_ids"].address_, struct.pack("<I", 0x7FFFFFFF))):
        out = copy.ring()
        stats = json.loads(copy.ok("--json", "stats", timeout=60).stdout)
        copy.ok("report", timeout=60)
    if copy.prog.type("struct net_device").has_member("core_stats"):  # ring reads per-CPU counters
        assert any("nr_cpu_ids is 2147483647" in w for w in out["warnings"])
    assert any("nr_cpu_ids is 2147483647" in n for n in stats["notes"])
    from skbinspect.memory.percpu import possible_cpus

    assert [c["cpu"] for c in stats["softnet"]["cpus"]] == possible_cpus(copy.prog)


# ---- damaged dump files -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kdump_file() -> Path:
    """A real kdump-compressed dump of the default lab kernel (makedumpfile -c -d 31)."""
    from tests.vmcores.config import DEFAULT_KERNEL
    from tests.vmcores.kdump import kdump_of
    from tests.vmcores.kernels import LabError

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    try:
        return kdump_of(lab.vmcore, lab.kernel.debug_vmlinux)
    except LabError as e:
        pytest.fail(f"no kdump-compressed dump: {e}", pytrace=False)


def _run_file(path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    from tests.vmcores.config import DEFAULT_KERNEL

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    p = run_skbinspect("-c", str(path), *symbols_args(lab), *args, timeout=timeout)
    assert 0 <= p.returncode < 128 and p.returncode != 70, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    return p


def test_kdump_file_reads_like_the_elf_dump(kdump_file: Path) -> None:
    """The makedumpfile dump is read like the ELF one: the same devices, rings and entries."""
    from tests.vmcores.config import DEFAULT_KERNEL

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    a = json.loads(_run_file(kdump_file, "--json", "ring", "-e").stdout)
    b = json.loads(run_skbinspect("-c", lab.vmcore, *symbols_args(lab), "--json", "ring", "-e").stdout)
    assert a["devices"] == b["devices"]


def test_kdump_file_cuts_never_kill(kdump_file: Path, tmp_path: Path) -> None:
    """The kdump file cut anywhere in its headers, notes, bitmaps, descriptor table or page data: a clear
    refusal (exit 2) or, cut on a page boundary at the very end, a warning -- never SIGBUS (cuts from
    ~4,200 to 12,287 bytes used to kill the process)."""
    from tests.vmcores.kdump import kdump_layout

    size = kdump_file.stat().st_size
    lay = kdump_layout(kdump_file)
    cuts = [100, 500, 4096, 4200, 5000, 6000, 8191, 9000, 12287, 12288, lay["table_at"] + 100]
    cuts += [lay["table_at"] + 24 * lay["pages"] + 10, size // 3, size // 2, size - 5000, size - 1]
    cut = tmp_path / "cut"
    with open(kdump_file, "rb") as f:
        data = f.read()
    for n in cuts:
        cut.write_bytes(data[:n])
        p = _run_file(cut, "ring", timeout=60)
        assert p.returncode in (0, 2), (n, p.returncode, p.stderr)
        if p.returncode == 2:
            assert "kdump-compressed dump" in p.stderr and "\n" not in p.stderr.strip(), (n, p.stderr)
        else:
            assert "truncated" in p.stderr, n


@pytest.mark.parametrize("damage", ["header-version-0", "note-offset", "note-size", "aarch64", "descriptors"])
def test_kdump_file_damaged_headers(kdump_file: Path, tmp_path: Path, damage: str) -> None:
    """kdump header_version 0, a note offset or size past the end, another architecture, random page
    descriptors: exit 2 with one paragraph (drgn errors or SIGBUS before)."""
    import random

    from tests.vmcores.kdump import kdump_layout

    data = bytearray(kdump_file.read_bytes())
    bs = kdump_layout(kdump_file)["block_size"]
    if damage == "header-version-0":
        data[8:12] = struct.pack("<i", 0)
    elif damage == "note-offset":
        data[bs + 48 : bs + 56] = struct.pack("<q", 1 << 40)
    elif damage == "note-size":
        data[bs + 56 : bs + 64] = struct.pack("<Q", 1 << 40)
    elif damage == "aarch64":
        data[12 + 65 * 4 : 12 + 65 * 4 + 8] = b"aarch64\0"
    else:
        lay = kdump_layout(kdump_file)
        rng = random.Random(3)
        for _ in range(20):
            at = lay["table_at"] + 24 * rng.randrange(lay["pages"])
            data[at : at + 12] = rng.getrandbits(96).to_bytes(12, "little")
    bad = tmp_path / "bad"
    bad.write_bytes(data)
    p = _run_file(bad, "ring")
    assert p.returncode == 2 and p.stderr.startswith("skbinspect: error: "), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_kdump_file_with_excluded_pages(kdump_file: Path, tmp_path: Path) -> None:
    """A filtered dump without pages skbinspect needs (tap0's tun_file with its ring, macvtap0's ring
    array, an skb of ipvtap0's ring): ring -e, report and stats go on and name each missing object
    ("Excluded page"); tapmq is read in full but for what shares those pages (slab pages hold other
    devices' tun_files and skbs too: which do depends on the boot)."""
    import drgn
    from drgn.helpers.linux.mm import follow_phys

    from skbinspect.target.opener import open_target
    from tests.vmcores.config import DEFAULT_KERNEL
    from tests.vmcores.kdump import exclude_pages

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    prog = open_target(core=lab.vmcore, symbols=lab.symbols).prog
    mm = prog["init_mm"].address_of_()
    tap0, mvt, ipv = tap_of(prog, "tap0"), tap_of(prog, "macvtap0"), tap_of(prog, "ipvtap0")
    addrs = [tap0.queues[0].address, mvt.queues[0].ring.queue, ipv.queues[0].entries[2].address]
    pfns = [follow_phys(mm, a).value_() >> 12 for a in addrs]
    filtered = tmp_path / "filtered"
    assert exclude_pages(kdump_file, filtered, pfns) == 3
    out = json.loads(_run_file(filtered, "--json", "ring", "-e").stdout)
    devs = _devices(out)
    assert any("Excluded page" in n for n in devs["tap0"]["notes"]), devs["tap0"]["notes"]
    assert "Excluded page" in devs["macvtap0"]["queues"][0]["ring"]["error"]
    es = devs["ipvtap0"]["queues"][0]["entries"]
    gone = addrs[2] >> 12  # the skbs in that page are unreadable, the others read
    assert all(("unreadable" in (e["error"] or "")) == (int(e["address"], 16) >> 12 == gone) for e in es)
    assert sum(1 for e in es if e["error"]) < len(es) // 2
    excluded = set(pfns)

    def in_excluded(address: int, size: int) -> bool:
        pages = range(address & ~0xFFF, address + size, 0x1000)
        return any(follow_phys(mm, a).value_() >> 12 in excluded for a in pages)

    tun_file, skb_size = prog.type("struct tun_file").size, prog.type("struct sk_buff").size
    checked = 0
    for q, got in zip(tap_of(prog, "tapmq").queues, devs["tapmq"]["queues"]):
        if in_excluded(q.address, tun_file) or in_excluded(q.ring.queue, 8 * q.ring.size):
            continue  # this queue shares a page with tap0's tun_file or macvtap0's ring array
        checked += 1
        assert len(got["entries"]) == len(q.entries)
        for e, undamaged in zip(got["entries"], q.entries):
            assert int(e["address"], 16) == undamaged.address
            skb = drgn.Object(prog, "struct sk_buff", address=undamaged.address)
            frame = int(skb.head) + int(skb.mac_header)  # the frame's bytes, as read for the entry
            lost = in_excluded(undamaged.address, skb_size) or in_excluded(frame, len(undamaged.data) or 1)
            assert bool(e["error"]) == lost, e
    assert checked
    for cmd in (
        ["ring", "-e"],
        ["report"],
        ["--json", "report"],
        ["stats"],
        ["drops"],
        ["trace", "--last", "5"],
    ):
        assert _run_file(filtered, *cmd).returncode == 0, cmd


def test_damaged_elf_files(tmp_path: Path) -> None:
    """An ELF dump cut after its program headers (libelf: invalid operation), with its VMCOREINFO zeroed
    (no valid OSRELEASE), of another architecture (AArch64), and a FIFO given as the dump (open() used to
    block for ever): each is exit 2 with one paragraph."""
    from tests.vmcores.config import DEFAULT_KERNEL

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    with open(lab.vmcore, "rb") as f:
        head = f.read(1 << 16)
    phoff, phnum = struct.unpack_from("<Q", head, 32)[0], struct.unpack_from("<H", head, 56)[0]
    cases = {}
    cases["cut-after-phdrs"] = head[: phoff + 56 * phnum]
    arm = bytearray(head)
    arm[18:20] = struct.pack("<H", 183)
    cases["aarch64"] = bytes(arm)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    zeroed = tmp_path / "vmcoreinfo-zeroed"
    shutil.copyfile(lab.vmcore, zeroed)
    os.chmod(zeroed, 0o600)
    start = head.find(b"VMCOREINFO\0") + 12
    end = head.find(b"\0", start)
    with open(zeroed, "r+b") as f:
        f.seek(start)
        f.write(bytes(end - start))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in [tmp_path / n for n in cases] + [zeroed, fifo]:
        p = _run_file(path, "info", timeout=60)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, (path.name, p.stderr)
    os.unlink(zeroed)


def test_qemu_host_that_does_not_resolve() -> None:
    p = run_skbinspect("--qemu", "no-such-host.invalid:4444", "info", timeout=60)
    assert p.returncode == 2 and "cannot resolve" in p.stderr and "Traceback" not in p.stderr


def test_truncated_debug_vmlinux(tmp_path: Path) -> None:
    """A debug vmlinux cut short (a partial download) is a debug-info error (exit 3), not struct.error."""
    from tests.vmcores.config import DEFAULT_KERNEL

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    src = lab.kernel.debug_vmlinux
    size = os.path.getsize(src)
    with open(src, "rb") as f:
        head = f.read(1 << 20)
    for n in (100, 4096, 1 << 20):
        cut = tmp_path / f"vmlinux-{n}"
        cut.write_bytes(head[:n])
        # --types dwarf: the debug file is what is tested (in auto mode the kernel's BTF would stand in)
        p = run_skbinspect(
            "-c", lab.vmcore, "--no-default-symbols", "--types", "dwarf", "-s", str(cut), "info", timeout=120
        )
        assert p.returncode == 3 and "Traceback" not in p.stderr, (n, p.returncode, p.stderr)
    assert size > 1 << 20


@pytest.mark.parametrize("since", ["inf", "nan", "1e400"])
def test_trace_since_not_a_number_of_seconds(since: str) -> None:
    from tests.vmcores.config import DEFAULT_KERNEL

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    p = run_skbinspect("-c", lab.vmcore, *symbols_args(lab), "trace", "--since", since)
    assert p.returncode == 64 and "--since" in p.stderr and "Traceback" not in p.stderr  # a usage error


def test_trace_cpu_that_does_not_exist() -> None:
    from tests.vmcores.config import DEFAULT_KERNEL

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    p = run_skbinspect("-c", lab.vmcore, *symbols_args(lab), "trace", "--cpu", "8192")
    assert p.returncode == 1 and "no such CPU" in p.stderr and p.stdout == ""


def test_a_bug_still_prints_what_was_read(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """An unexpected exception while reading one device (a bug) is a note of that device; the command
    prints everything else and then exits 70 naming the bug."""
    from skbinspect.cli import app
    from skbinspect.target.opener import open_target
    from skbinspect.tuntap import devices
    from tests.vmcores.config import DEFAULT_KERNEL

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    target = open_target(core=lab.vmcore, symbols=lab.symbols)

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(devices, "_tapdev_queues", boom)
    state = app.State(None, None, (), True, False, prog_factory=lambda: target)
    rc = app.run(["--json", "ring"], obj=state)
    got = capsys.readouterr()
    assert rc == 70 and "simulated bug" in got.err and "internal error" in got.err
    devs = _devices(json.loads(got.out))
    assert devs["tap0"]["queues"] and devs["tapmq"]["queues"]
    assert any("internal error while reading device macvtap0" in n for n in devs["macvtap0"]["notes"])


# ---- sections of report and drops (one section's damage is a note; the others are printed) ---------------------


def _full_queues(rep: Dict[str, Any]) -> List[Tuple[str, Any]]:
    return sorted((v["device"], v["queue"]) for v in rep["verdicts"] if v["full"])


def test_trace_buffer_pointer_damaged(copy: DamagedCopy) -> None:
    """The top-level trace_array's array_buffer.buffer points at unmapped memory (on 7.x its sub-buffer
    order is read through it first, which faulted in _trace_array and read as "no trace instance named
    'top'"; on 6.1 the buffer read as empty with no word of the damage): `report` still gives every full
    queue's verdict and says the trace buffer is unreadable, `drops` says so instead of a silent 0, and
    `drops --all-instances` still counts the instance's drops as on the undamaged dump."""
    import drgn

    from skbinspect.ftrace.reader import trace_arrays

    before = json.loads(copy.ok("--json", "report").stdout)
    inst_before = {
        d["instance"]: d["total"]
        for d in json.loads(copy.ok("--json", "drops", "--all-instances").stdout)["instances"]
    }
    top = [t for t in trace_arrays(copy.prog) if t.is_top][0]
    tro = drgn.Object(copy.prog, "struct trace_array *", top.address)
    with copy.damaged((tro.array_buffer.buffer.address_, _q(UNMAPPED))):
        rep = json.loads(copy.ok("--json", "report").stdout)
        drops = json.loads(copy.ok("--json", "drops").stdout)
        every = json.loads(copy.ok("--json", "drops", "--all-instances").stdout)["instances"]
        text = copy.ok("drops").stdout
    assert _full_queues(before) and _full_queues(rep) == _full_queues(before)
    assert any("unreadable" in n for n in rep["trace"]["notes"]), rep["trace"]
    assert not any("buffer is empty" in n for n in rep["trace"]["notes"]), rep["trace"]
    assert drops["total"] == 0 and any("unreadable" in n for n in drops["notes"]), drops
    assert "unreadable" in text
    got = {d["instance"]: d["total"] for d in every}
    assert got["skbinst"] == inst_before["skbinst"] > 0


@pytest.fixture(scope="module")
def default_target() -> Any:
    from skbinspect.target.opener import open_target
    from tests.vmcores.config import DEFAULT_KERNEL

    lab = lab_vmcore_for(DEFAULT_KERNEL)
    return open_target(core=lab.vmcore, symbols=lab.symbols)


def _run_in_process(target: Any, capsys: Any, *args: str) -> Tuple[int, str, str]:
    from skbinspect.cli import app

    capsys.readouterr()
    rc = app.run(list(args), obj=app.State(None, None, (), True, False, prog_factory=lambda: target))
    got = capsys.readouterr()
    return rc, got.out, got.err


@pytest.mark.parametrize("exc", [TypeError, RuntimeError])
def test_report_sections_are_guarded(
    default_target: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, exc: type
) -> None:
    """An exception in one section of `report` -- the drop counters, the trace, one queue of one device --
    is a note naming that section, and every other section is printed as on the undamaged dump.  A
    TypeError (a garbage length or NULL met in the read path) is damage: exit 0.  Anything else is a bug:
    exit 70, after the same output."""
    from skbinspect.counters import stats
    from skbinspect.ftrace import drops
    from skbinspect.report import correlate

    rc, out, _ = _run_in_process(default_target, capsys, "--json", "report")
    assert rc == 0
    base = json.loads(out)

    def boom(*a: Any, **k: Any) -> Any:
        raise exc("simulated")

    real_batch = correlate._vhost_batch

    def batch(q: Any) -> int:  # tapmq is the only device with a queue 2
        if q is not None and q.index == 2:
            raise exc("simulated")
        return real_batch(q)

    want_rc = 0 if exc is TypeError else 70
    for target, name, fn, section in (
        (stats, "drop_stats", boom, "drop counters"),
        (drops, "drops_report", boom, "trace"),
        (correlate, "_vhost_batch", batch, "tapmq queue 2"),
    ):
        with monkeypatch.context() as m:
            m.setattr(target, name, fn)
            rc, out, err = _run_in_process(default_target, capsys, "--json", "report")
            text_rc, text, _ = _run_in_process(default_target, capsys, "report")
        rep = json.loads(out)
        assert rc == want_rc and text_rc == want_rc, (section, rc, err)
        assert any(section in n and "simulated" in n for n in rep["notes"]), (section, rep["notes"])
        assert (want_rc == 70) == ("internal error" in err), err
        assert _full_queues(rep) == _full_queues(base), section
        assert rep["release"] == base["release"]
        if section != "trace":
            assert rep["trace"] == base["trace"]
        for v in base["verdicts"]:
            assert v["device"] in text


def test_report_rendering_bug_still_prints_what_was_made(
    default_target: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A bug while rendering the text report (here: in the drops-over-time chart, among the evidence):
    the lines made before it (the title, the verdict lines, the verdicts) are printed, then exit 70."""
    from skbinspect.report import render

    rc, whole, _ = _run_in_process(default_target, capsys, "report")
    assert rc == 0
    head = whole[: whole.index("drops over time")].rstrip(" ")  # up to the chart (its indent too)
    assert head.count("\n") > 5

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("simulated")

    monkeypatch.setattr(render, "timeline_lines", boom)
    rc, out, err = _run_in_process(default_target, capsys, "report")
    assert rc == 70 and "internal error" in err and "simulated" in err, err
    assert out == head, out[-2000:]


@pytest.mark.parametrize("exc", [TypeError, RuntimeError])
def test_drops_instances_are_guarded(
    default_target: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, exc: type
) -> None:
    """An exception while reading one trace instance's drops: `drops --all-instances` prints the other
    instances and names the one it could not read (a bug: exit 70 after them); `drops` on that instance
    alone is a clear error (damage) or exit 70 (a bug), never a traceback."""
    from skbinspect.ftrace import drops

    rc, out, _ = _run_in_process(default_target, capsys, "--json", "drops", "--all-instances")
    base = {d["instance"]: d for d in json.loads(out)["instances"]}
    real = drops.drops_report

    def top_fails(prog: Any, *a: Any, **k: Any) -> Any:
        if k["reader"].tr.is_top:
            raise exc("simulated")
        return real(prog, *a, **k)

    monkeypatch.setattr(drops, "drops_report", top_fails)
    rc, out, err = _run_in_process(default_target, capsys, "--json", "drops", "--all-instances")
    got = {d["instance"]: d for d in json.loads(out)["instances"]}
    assert rc == (0 if exc is TypeError else 70), err
    assert "top" not in got and got["skbinst"] == base["skbinst"]
    said = err + "\n".join(
        json.loads(out)["warnings"]
    )  # damage: in the document's warnings; a bug: on stderr
    assert "trace instance top" in said and "simulated" in said and "Traceback" not in err
    rc, out, err = _run_in_process(default_target, capsys, "drops")
    assert rc == (1 if exc is TypeError else 70) and out == "" and "simulated" in err, (rc, err)


# ---- the Python API gives the problems (skbinspect.helpers) -------------------------------------------------


def test_python_api_gives_the_problems(copy: DamagedCopy) -> None:
    """A drgn user calling skbinspect.helpers on a damaged dump (tapmq's dev_list.next pointing back at
    lo, __per_cpu_offset zeroed) gets the problems with the results: ``tap_devices().problems``, the notes
    of ``drop_stats()`` and ``post_mortem()``, and :func:`problems` for what was met outside the helpers;
    on the undamaged dump there are none."""
    from skbinspect import helpers
    from skbinspect.counters.stats import cpu_lists
    from skbinspect.target.opener import open_target
    from skbinspect.tuntap.devices import read_tap_devices

    def fresh() -> Any:
        prog = open_target(core=str(copy.core), symbols=copy.lab.symbols).prog
        helpers.skbinspect_target(prog, copy.lab.symbols)
        return prog

    prog = fresh()
    sound = helpers.tap_devices(prog)
    assert sound.problems == [] and helpers.problems(prog) == []
    assert not any("per-CPU" in n for n in helpers.drop_stats(prog).notes)

    node = copy.dev("tapmq").dev_list.address_
    possible = cpu_lists(copy.prog)[0]
    with copy.damaged(
        (node, _q(copy.dev("lo").dev_list.address_)),
        (copy.prog["__per_cpu_offset"].address_, bytes(8 * (max(possible) + 1))),
    ):
        prog = fresh()
        devs = helpers.tap_devices(prog)
        stats = helpers.drop_stats(prog)
        rep = helpers.post_mortem(prog)
        left = helpers.problems(prog)
        read_tap_devices(prog)  # skbinspect's module called directly: its problems come from problems()
        direct = helpers.problems(prog)
        again = helpers.problems(prog)
    loop = [p for p in devs.problems if "loops back to" in p and "walk stopped" in p]
    assert loop and "after tapmq" in loop[0], devs.problems
    assert {"tap0", "tapmq"} <= {d.name for d in devs}
    assert any("__per_cpu_offset" in n or "per-CPU" in n for n in stats.notes), stats.notes
    assert any("walk stopped" in n for n in rep.notes), rep.notes
    assert left == [] and any("walk stopped" in p for p in direct) and again == []


# ---- the campaign ----------------------------------------------------------------------------------------------

#: Runs per kernel in CI (a few minutes); SKBINSPECT_FUZZ_RUNS runs a long campaign.
CI_RUNS = 25


def _campaign_kernels() -> List[str]:
    """bookworm and sid (6.1 and 7.x) among the selected lab kernels, else the first selected."""
    chosen = [k for k in ("bookworm", "sid") if k in kernel_names()]
    return chosen or kernel_names()[:1]


@pytest.mark.parametrize("kernel", _campaign_kernels())
def test_corruption_campaign(kernel: str, tmp_path: Path) -> None:
    """The seeded campaign (tests.vmcores.fuzz) on bookworm and sid: zero tracebacks, hangs, exit-70s or
    non-JSON output, and the undamaged devices still read when the damage is in one device."""
    from tests.vmcores.fuzz import run_campaign

    runs = int(os.environ.get("SKBINSPECT_FUZZ_RUNS", CI_RUNS))
    s = run_campaign([kernel], runs, seed=17, out=tmp_path)
    assert s["runs"] == runs and s["commands"] == runs * 10
    assert not s["failures"], json.dumps(s["failures"], indent=1)[:5000]
