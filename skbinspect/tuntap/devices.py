"""tun, tap, macvtap and ipvtap devices (drivers/net/tun.c, tap.c, macvtap.c, ipvlan/ipvtap.c) and their queues.

* tun (``rtnl_link_ops->kind == "tun"``): ``struct tun_struct`` is ``netdev_priv(dev)``; enabled queues are
  ``tfiles[0 .. numqueues)``, disabled ones (``TUNSETQUEUE``/``IFF_DETACH_QUEUE``) are on ``tun->disabled``
  linked by ``tun_file.next``.  Each ``tun_file`` has its ring in ``tx_ring``.  Same in 5.10 .. 7.1.
* macvtap / ipvtap (kind ``"macvtap"`` / ``"ipvtap"``): ``dev->rx_handler_data`` is the ``struct tap_dev``
  (registered with ``tap_handle_frame``); enabled queues are ``taps[0 .. numvtaps)``, every queue is on
  ``queue_list`` (``tap_queue.next``, ``enabled`` false when disabled), ring in ``tap_queue.ring``.

Who holds a queue is found by scanning every task's file table for files whose ``private_data`` is the
queue (``tun_file`` or ``tap_queue``); the file table and the ``struct file`` fields are read in bulk.
A vhost-net instance reading a queue (an open ``/dev/vhost-net`` whose RX ``rx_ring`` is the queue's ring)
is listed with the entries of its ``rxq`` batch.  The members read are in docs/kernel/tuntap.md.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import drgn
from drgn.helpers.linux.net import netdev_priv

from skbinspect.errors import SkbinspectError
from skbinspect.memory import walk
from skbinspect.memory.faults import READ_FAULTS
from skbinspect.memory.layout import struct_layout
from skbinspect.memory.percpu import percpu_offset_problems, possible_cpus
from skbinspect.memory.problems import note_bug, note_problem
from skbinspect.tuntap.entries import RingEntry, entries_json_chunks, entries_summary, read_entries
from skbinspect.tuntap.ptr_ring import RingSnapshot, read_ptr_ring, read_ring_indices

__all__ = [
    "QueueHolder",
    "VhostUser",
    "TapDevice",
    "TapQueue",
    "find_tap_devices",
    "list_tap_devices",
    "read_tap_devices",
    "UnknownDeviceError",
]

#: include/uapi/linux/if_tun.h (UAPI, stable): tun->flags bits.
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NAPI = 0x0010
IFF_NAPI_FRAGS = 0x0020
IFF_NO_PI = 0x1000
IFF_ONE_QUEUE = 0x2000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000
IFF_MULTI_QUEUE = 0x0100
IFF_PERSIST = 0x0800
TUN_FLAG_NAMES = [
    (IFF_MULTI_QUEUE, "multi_queue"),
    (IFF_VNET_HDR, "vnet_hdr"),
    (IFF_NO_PI, "no_pi"),
    (IFF_NAPI, "napi"),
    (IFF_NAPI_FRAGS, "napi_frags"),
    (IFF_PERSIST, "persist"),
    (IFF_TUN_EXCL, "exclusive"),
]
#: include/uapi/linux/if.h RFC 2863 operstates.
OPERSTATES = ["unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"]
MAX_TAP_QUEUES = 256  # both tun.c and if_tap.h
VHOST_NET_BATCH = 64  # drivers/vhost/net.c, 5.10 .. 7.1
MAX_TASKS = 1_000_000
MAX_FDS_PER_TASK = 1 << 20
TAP_KINDS = ("tun", "macvtap", "ipvtap")
#: What reading a device's structures can raise: a read fault, or a member or type this kernel lacks.
DEVICE_FAULTS = (*READ_FAULTS, LookupError)


class UnknownDeviceError(SkbinspectError):
    """A device named on the command line is not a tun/tap/macvtap/ipvtap device of the target."""

    exit_code = 4


@dataclass
class QueueHolder:
    """A process that has the queue's file open."""

    pid: int
    comm: str
    fd: int

    def to_json(self) -> Dict[str, Any]:
        return {"pid": self.pid, "comm": self.comm, "fd": self.fd}


@dataclass
class VhostUser:
    """A vhost-net instance whose RX side uses the queue's ring (drivers/vhost/net.c).

    Entries vhost has taken from the ring but not yet copied to the guest sit in its ``rxq`` batch
    (``struct vhost_net_buf``: ``queue[head .. tail)``); they are listed in :attr:`entries`.
    """

    pid: int  # the process that holds the /dev/vhost-net file (the VMM)
    comm: str
    fd: int
    address: int  # struct vhost_net *
    worker_pid: Optional[int] = None
    worker_comm: Optional[str] = None
    rxq_head: int = 0
    rxq_tail: int = 0
    entries: Sequence[RingEntry] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def to_json(self, entries: bool, raw: bool = False) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "pid": self.pid, "comm": self.comm, "fd": self.fd, "address": f"{self.address:#x}",
            "worker_pid": self.worker_pid, "worker_comm": self.worker_comm,
            "rxq_head": self.rxq_head, "rxq_tail": self.rxq_tail, "rxq_count": self.rxq_tail - self.rxq_head,
            "notes": self.notes,
        }  # fmt: skip
        if entries:
            d["entries"] = _entries_json(self.entries, raw)
        return d


@dataclass
class TapQueue:
    """One queue of a tun/tap device: its file-side object, its ring, who holds it, what it holds.

    :ivar index: ``queue_index`` for enabled queues (the ``skb->queue_mapping`` the device uses);
        ``None`` for disabled queues (their stored index is stale).
    :ivar state: ``"enabled"`` or ``"disabled"``.
    :ivar address: ``struct tun_file *`` or ``struct tap_queue *``.
    """

    index: Optional[int]
    state: str
    address: int
    ring: RingSnapshot
    holders: List[QueueHolder] = field(default_factory=list)
    vhost: List[VhostUser] = field(default_factory=list)
    #: a reader gets a virtio-net header of this many bytes before each frame (IFF_VNET_HDR), else 0
    vnet_hdr_sz: int = 0
    #: live targets: entries consumed by the reader while they were being read (not listed)
    consumed_while_reading: int = 0
    entries: Sequence[RingEntry] = field(default_factory=list)
    stale_entries: Sequence[RingEntry] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def live(self) -> int:
        return len(self.ring.analysis.live)

    @property
    def stale(self) -> int:
        return len(self.ring.analysis.stale)

    def contents_summary(self) -> Dict[str, Any]:
        """Counts by protocol and the top flows of the entries read (see
        :func:`~skbinspect.tuntap.entries.entries_summary`)."""
        return entries_summary(self.entries)

    def to_json(self, entries: bool, raw: bool = False) -> Dict[str, Any]:
        """:param raw: entries as :class:`~skbinspect.output.RawJSON` (rendered by print_json from columns)."""
        r = self.ring
        a = r.analysis
        d: Dict[str, Any] = {
            "index": self.index, "state": self.state, "address": f"{self.address:#x}",
            "ring": {
                "address": f"{r.address:#x}", "size": r.size, "producer": r.producer,
                "consumer_head": r.consumer_head, "consumer_tail": r.consumer_tail, "batch": r.batch,
                "queue": f"{r.queue:#x}", "live": len(a.live), "stale": len(a.stale), "free": a.free,
                "full": a.full, "producer_locked": r.producer_locked, "consumer_locked": r.consumer_locked,
                "problems": a.problems, "error": r.error, "torn": r.torn, "retries": r.retries,
            },
            "holders": [h.to_json() for h in self.holders],
            "vhost": [v.to_json(entries, raw) for v in self.vhost],
            "vnet_hdr_sz": self.vnet_hdr_sz,
            "consumed_while_reading": self.consumed_while_reading,
            "notes": self.notes,
        }  # fmt: skip
        if entries:
            d["entries"] = _entries_json(self.entries, raw)
            d["stale_entries"] = _entries_json(self.stale_entries, raw)
        else:
            d["summary"] = self.contents_summary()
        return d


@dataclass
class TapDevice:
    """A tun/tap/macvtap/ipvtap device and its queues.

    :ivar kind: ``"tun"``, ``"macvtap"`` or ``"ipvtap"`` (the rtnl link kind).
    :ivar mode: ``"tap"`` or ``"tun"`` (L2 or L3 frames); macvtap/ipvtap are always ``"tap"``.
    """

    name: str
    ifindex: int
    netns: int  # inode number of the network namespace (as in /proc/PID/ns/net)
    kind: str
    mode: str
    flags: List[str]
    tx_queue_len: int
    operstate: str
    carrier: bool
    address: int  # struct net_device *
    queues: List[TapQueue] = field(default_factory=list)
    counters: Dict[str, int] = field(default_factory=dict)
    char_device: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def enabled_queues(self) -> int:
        return sum(1 for q in self.queues if q.state == "enabled")

    @property
    def disabled_queues(self) -> int:
        return sum(1 for q in self.queues if q.state == "disabled")

    def to_json(self, entries: bool = False, raw: bool = False) -> Dict[str, Any]:
        """:param raw: ring entries as :class:`~skbinspect.output.RawJSON`, for print_json (same output)."""
        return {
            "name": self.name, "ifindex": self.ifindex, "netns": self.netns, "kind": self.kind, "mode": self.mode,
            "flags": self.flags, "tx_queue_len": self.tx_queue_len, "operstate": self.operstate,
            "carrier": self.carrier, "address": f"{self.address:#x}", "char_device": self.char_device,
            "queues_enabled": self.enabled_queues, "queues_disabled": self.disabled_queues,
            "counters": self.counters, "notes": self.notes,
            "queues": [q.to_json(entries, raw) for q in self.queues],
        }  # fmt: skip


def _entries_json(entries: Sequence[RingEntry], raw: bool) -> Any:
    if not raw:
        return [e.to_json() for e in entries]
    from skbinspect.output import RawJSON

    return RawJSON(lambda: entries_json_chunks(entries), lambda: [e.to_json() for e in entries])


# ---- finding devices ----------------------------------------------------------------------------------


def _link_kind(dev: drgn.Object) -> Optional[str]:
    ops = dev.rtnl_link_ops.read_()
    if not ops:
        return None
    try:
        return ops.kind.string_().decode(errors="replace")
    except READ_FAULTS as e:
        note_problem(
            dev.prog_,
            f"device {_safe_name(dev)}: its rtnl_link_ops {ops.value_():#x} is unreadable ({e}): "
            "kind unknown, not listed",
        )
        return None


def _netns_inum(net: drgn.Object) -> int:
    try:
        return int(net.ns.inum)
    except (AttributeError, LookupError):
        # net->proc_inum became net->ns.inum (in v3.19)
        return int(net.proc_inum)


def list_tap_devices(prog: drgn.Program) -> Iterator[Tuple[drgn.Object, str, int]]:
    """Every tun/macvtap/ipvtap ``struct net_device *`` in every namespace, with its kind and netns."""
    count = 0
    for net in walk.net_namespaces(prog):
        try:
            inum = _netns_inum(net)
        except READ_FAULTS as e:
            note_problem(
                prog, f"network namespace at {net.value_():#x} unreadable ({e}): its devices not read"
            )
            continue
        for dev in walk.netns_devices(net):
            count += 1
            if count > 1_000_000:
                return
            try:
                kind = _link_kind(dev)
            except READ_FAULTS as e:
                note_problem(
                    prog, f"net_device at {dev.value_():#x} (netns {inum}) unreadable ({e}): not listed"
                )
                continue
            if kind in TAP_KINDS:
                yield dev, kind, inum


def find_tap_devices(
    prog: drgn.Program, names: Sequence[str] = (), netns: Optional[int] = None
) -> List[Tuple[drgn.Object, str, int]]:
    """The devices named (by name or ifindex), or all; ``netns`` (inode number) restricts the namespace.

    :raises UnknownDeviceError: a name matches no tun/tap device; the message lists those that exist.
    """
    devs = [(d, k, n) for d, k, n in list_tap_devices(prog) if netns is None or n == netns]
    if not names:
        return devs
    out = []
    for want in names:
        match = [
            t
            for t in devs
            if _safe_name(t[0]) == want or (want.isdigit() and _safe_int(t[0], "ifindex") == int(want))
        ]
        if not match:
            have = (
                ", ".join(
                    f"{_safe_name(d)} ({k}, ifindex {_safe_int(d, 'ifindex')}, netns {n})" for d, k, n in devs
                )
                or "none"
            )
            raise UnknownDeviceError(
                f"no tun/tap/macvtap/ipvtap device {want!r}"
                + (f" in netns {netns}" if netns else "")
                + f". Devices found: {have}."
            )
        for t in match:
            if t not in out:
                out.append(t)
    return out


# ---- holders ------------------------------------------------------------------------------------------


def _fops_address(prog: drgn.Program, name: str) -> Optional[int]:
    try:
        return prog[name].address_
    except (KeyError, LookupError):
        try:
            return prog.symbol(name).address
        except LookupError:
            return None


def scan_queue_holders(
    prog: drgn.Program, queue_addresses: Set[int]
) -> Tuple[Dict[int, List[QueueHolder]], List[Tuple[QueueHolder, int]]]:
    """Processes whose open files point at one of ``queue_addresses`` (``file->private_data``), and
    every open ``/dev/vhost-net`` file as ``(holder, struct vhost_net address)``.

    Each task's fd array and each ``struct file`` are read in one read each.
    """
    result: Dict[int, List[QueueHolder]] = collections.defaultdict(list)
    vhosts: List[Tuple[QueueHolder, int]] = []
    if not queue_addresses:
        return result, vhosts
    fops = {a for a in (_fops_address(prog, "tun_fops"), _fops_address(prog, "tap_fops")) if a}
    vhost_fops = _fops_address(prog, "vhost_net_fops")
    flay = struct_layout(prog, "struct file", ("f_op", "private_data"))
    fdt_lay = struct_layout(prog, "struct fdtable", ("max_fds", "fd"))
    files_off = drgn.offsetof(prog.type("struct files_struct"), "fdt")
    tlay = struct_layout(prog, "struct task_struct", ("pid", "files"))
    comm_off = drgn.offsetof(prog.type("struct task_struct"), "comm")
    read = prog.read
    seen_files: Dict[int, Tuple[int, int]] = {}
    for n, task in enumerate(walk.tasks(prog)):
        if n >= MAX_TASKS:
            break
        try:
            taddr = task.value_()
            t = tlay.decode(read(taddr, tlay.size))
            if not t["files"]:
                continue
            fdt = int.from_bytes(read(t["files"] + files_off, 8), "little")
            d = fdt_lay.decode(read(fdt, fdt_lay.size))
            max_fds = min(d["max_fds"], MAX_FDS_PER_TASK)
            fds = memoryview(read(d["fd"], max_fds * 8)).cast("Q")
            comm = None
            for fd, fptr in enumerate(fds):
                if not fptr:
                    continue
                info = seen_files.get(fptr)
                if info is None:
                    f = flay.decode(read(fptr, flay.size))
                    info = seen_files[fptr] = (f["f_op"], f["private_data"])
                f_op, priv = info
                is_queue = priv in queue_addresses and (not fops or f_op in fops)
                is_vhost = vhost_fops is not None and f_op == vhost_fops and priv
                if is_queue or is_vhost:
                    if comm is None:
                        comm = read(taddr + comm_off, 16).split(b"\0", 1)[0].decode(errors="replace")
                    if is_queue:
                        result[priv].append(QueueHolder(t["pid"], comm, fd))
                    else:
                        vhosts.append((QueueHolder(t["pid"], comm, fd), priv))
        except READ_FAULTS:
            continue  # a task exiting (live), a torn table or a damaged one: skip it
    return result, vhosts


def _vhost_worker(prog: drgn.Program, vn: drgn.Object) -> Tuple[Optional[int], Optional[str]]:
    """The worker thread of a vhost device (pid, comm), from the ``worker`` of its first virtqueue or of
    the device."""
    # dev.worker is the worker's task_struct up to v6.3.
    # Linux kernel commit 1a5f8090c6de ("vhost: move worker thread fields to new struct") (in v6.4)
    # Linux kernel commit 6e890c5d5021 ("vhost: use vhost_tasks for worker threads") (in v6.4)
    # made it a struct vhost_worker whose vtsk->task is the thread.
    # vhost_virtqueue.worker, one worker per virtqueue, and no vhost_dev.worker (in v6.5)
    vq = vn.vqs[0].vq
    candidates = []
    for path in ("worker",):
        if vq.type_.has_member(path):
            candidates.append(vq.worker.read_())
    if vn.dev.type_.has_member("worker"):
        candidates.append(vn.dev.worker.read_())
    for w in candidates:
        if not w:
            continue
        wt = w.type_.type
        task = None
        if wt.type_name() == "struct task_struct":
            task = w
        elif wt.has_member("vtsk"):
            vtsk = w.vtsk.read_()
            if vtsk:
                task = vtsk.task.read_()
        elif wt.has_member("task"):
            task = w.task.read_()
        if task is not None and task:
            return int(task.pid), task.comm.string_().decode(errors="replace")
    return None, None


def _read_vhost(
    prog: drgn.Program, holder: QueueHolder, address: int, l2_for: Callable[[int], bool]
) -> Tuple[int, VhostUser]:
    """The RX ring a vhost-net instance uses, and the user with its rxq batch (VHOST_NET_VQ_RX = 0).

    :param l2_for: whether the frames of the device owning a ring address start with Ethernet.
    """
    vn = drgn.Object(prog, "struct vhost_net *", address)
    nvq = vn.vqs[0]
    ring = nvq.rx_ring.value_() if nvq.type_.has_member("rx_ring") else 0
    l2 = l2_for(ring)
    u = VhostUser(holder.pid, holder.comm, holder.fd, address)
    try:
        u.worker_pid, u.worker_comm = _vhost_worker(prog, vn)
    except (*DEVICE_FAULTS, AttributeError) as e:
        u.notes.append(f"worker thread not found: {e}")
    rxq = nvq.rxq
    u.rxq_head, u.rxq_tail = int(rxq.head), int(rxq.tail)
    n = u.rxq_tail - u.rxq_head
    if rxq.queue and 0 < n <= VHOST_NET_BATCH and 0 <= u.rxq_head:
        slots = list(memoryview(prog.read(rxq.queue.value_() + 8 * u.rxq_head, 8 * n)).cast("Q"))
        u.entries = read_entries(prog, slots, list(range(n)), l2)
    elif n:
        u.notes.append(f"implausible rxq batch head {u.rxq_head} tail {u.rxq_tail}")
    return ring, u


# ---- reading devices ----------------------------------------------------------------------------------


def _carrier(prog: drgn.Program, dev: drgn.Object) -> bool:
    try:
        bit = prog.constant("__LINK_STATE_NOCARRIER").value_()
    except LookupError:
        bit = 2  # enum netdev_state_t has been stable: START, PRESENT, NOCARRIER
    return not (int(dev.state) >> bit & 1)


def _queue(
    prog: drgn.Program,
    obj: drgn.Object,
    ring_member: str,
    index: Optional[int],
    state: str,
    live: Optional[bool],
) -> TapQueue:
    ring = read_ptr_ring(prog, obj.member_(ring_member).address_, live)
    return TapQueue(index, state, obj.value_(), ring)


def _tun_queues(
    prog: drgn.Program, dev: drgn.Object, live: Optional[bool]
) -> Tuple[TapDevice, List[TapQueue]]:
    tun = netdev_priv(dev, "struct tun_struct")
    flags = int(tun.flags)
    queues = []
    n = int(tun.numqueues)
    notes = []
    if n > MAX_TAP_QUEUES:
        notes.append(f"numqueues {n} exceeds MAX_TAP_QUEUES: corrupt tun_struct, reading {MAX_TAP_QUEUES}")
        n = MAX_TAP_QUEUES
    tfiles = tun.tfiles
    vnet = int(tun.vnet_hdr_sz) if flags & IFF_VNET_HDR else 0
    for i in range(n):
        try:
            tf = tfiles[i].read_()
            if not tf:
                notes.append(f"tfiles[{i}] is NULL although numqueues is {int(tun.numqueues)}")
                continue
            q = _queue(prog, tf, "tx_ring", i, "enabled", live)
            q.vnet_hdr_sz = vnet
            qi = int(tf.queue_index)
        except READ_FAULTS as e:
            notes.append(f"queue {i} unreadable: {e}")
            continue
        if qi != i:
            q.notes.append(f"queue_index {qi} differs from its slot {i}")
        queues.append(q)
    ndis = int(tun.numdisabled)
    disabled = walk.list_entries(
        prog,
        tun.disabled.address_,
        "struct tun_file",
        "next",
        "disabled list",
        limit=MAX_TAP_QUEUES,  # a longer list is corrupt: the walk stops and says so in notes
        notes=notes,
    )
    for tf in disabled:
        dq = _queue(prog, tf, "tx_ring", None, "disabled", live)
        dq.vnet_hdr_sz = vnet
        queues.append(dq)
    if ndis != sum(1 for q in queues if q.state == "disabled"):
        notes.append(
            f"numdisabled is {ndis} but {sum(1 for q in queues if q.state == 'disabled')} on the list"
        )
    mode = "tun" if flags & IFF_TUN else "tap"
    d = _device(prog, dev, "tun", mode, [name for bit, name in TUN_FLAG_NAMES if flags & bit])
    d.notes += notes
    return d, queues


def _tapdev_queues(
    prog: drgn.Program, dev: drgn.Object, kind: str, live: Optional[bool]
) -> Tuple[TapDevice, List[TapQueue]]:
    tap = drgn.cast("struct tap_dev *", dev.rx_handler_data)
    notes = []
    if not tap or tap.dev.value_() != dev.value_():
        raise drgn.FaultError(
            f"{kind} device without its tap_dev (rx_handler_data)", dev.rx_handler_data.value_()
        )
    enabled_addrs = {}
    nv = int(tap.numvtaps)
    if nv > MAX_TAP_QUEUES:
        notes.append(f"numvtaps {nv} exceeds MAX_TAP_QUEUES: corrupt tap_dev")
        nv = MAX_TAP_QUEUES
    for i in range(nv):
        q = tap.taps[i].read_()
        if q:
            enabled_addrs[q.value_()] = i
    queues = []
    queue_list = walk.list_entries(
        prog,
        tap.queue_list.address_,
        "struct tap_queue",
        "next",
        "queue_list",
        limit=MAX_TAP_QUEUES,  # a longer list is corrupt: the walk stops and says so in notes
        notes=notes,
    )
    for q in queue_list:
        idx = enabled_addrs.get(q.value_())
        state = "enabled" if idx is not None else "disabled"
        tq = _queue(prog, q, "ring", idx, state, live)
        try:
            # tap_open() gives every queue IFF_VNET_HDR by default (5.10 .. 7.1)
            tq.vnet_hdr_sz = int(q.vnet_hdr_sz) if int(q.flags) & IFF_VNET_HDR else 0
            enabled = bool(q.enabled)
        except READ_FAULTS as e:
            notes.append(f"queue at {q.value_():#x} unreadable: {e}")
            continue
        if enabled != (idx is not None):
            tq.notes.append(f"enabled flag {enabled} but {'in' if idx is not None else 'not in'} taps[]")
        queues.append(tq)
    queues.sort(key=lambda q: (q.index is None, q.index if q.index is not None else 0))
    d = _device(prog, dev, kind, "tap", [])
    d.char_device = f"/dev/tap{int(dev.ifindex)}"
    d.notes += notes
    return d, queues


def _device(prog: drgn.Program, dev: drgn.Object, kind: str, mode: str, flags: List[str]) -> TapDevice:
    op = int(dev.operstate)
    return TapDevice(
        name=dev.name.string_().decode(errors="replace"),
        ifindex=int(dev.ifindex),
        netns=0,
        kind=kind,
        mode=mode,
        flags=flags,
        tx_queue_len=int(dev.tx_queue_len),
        operstate=OPERSTATES[op] if 0 <= op < len(OPERSTATES) else str(op),
        carrier=_carrier(prog, dev),
        address=dev.value_(),
    )


def _device_counters(
    prog: drgn.Program, dev: drgn.Object, notes: Optional[List[str]] = None
) -> Dict[str, int]:
    """The core drop counters of ``dev`` (5.18+: per-CPU ``core_stats`` summed; before: atomics).

    A CPU whose per-CPU offset cannot be trusted or whose counters cannot be read is left out of the sums
    with a note in ``notes``; when no CPU can be read, there are no counters (never zeros as if read)."""
    out: Dict[str, int] = {}
    names = ("rx_dropped", "tx_dropped", "rx_nohandler", "rx_otherhost_dropped")
    dev_type = dev.type_.type
    if not dev_type.has_member("core_stats"):
        # Linux kernel commit 625788b58445 ("net: add per-cpu storage and net->core_stats") (in v5.18)
        # moved them from atomic_long_t members of net_device into core_stats
        for n in names:
            if dev_type.has_member(n):
                out[n] = int(dev.member_(n).counter)
        return out
    cs = dev.core_stats.read_()
    from drgn.helpers.linux.percpu import per_cpu_ptr

    cs_type = prog.type("struct net_device_core_stats")
    # Linux kernel commit 794c24e9921f ("net-core: rx_otherhost_dropped to core_stats") (in v5.19)
    out = {n: 0 for n in names if cs_type.has_member(n)}
    if cs:
        lay = struct_layout(prog, "struct net_device_core_stats", list(out))
        cpus = possible_cpus(prog)
        unread = dict(percpu_offset_problems(prog, cpus))
        for cpu in cpus:
            if cpu in unread:
                continue
            try:
                vals = lay.decode(prog.read(per_cpu_ptr(cs, cpu).value_(), lay.size))
            except READ_FAULTS as e:
                unread[cpu] = f"core_stats of CPU {cpu} unreadable ({e})"
                continue
            for n in out:
                out[n] += vals[n]
        if unread and notes is not None:
            part = "none of them" if len(unread) == len(cpus) else "the other CPUs only"
            notes.append(f"drop counters: {'; '.join(unread[c] for c in sorted(unread))}: {part} counted")
        if cpus and len(unread) == len(cpus):
            return {}
    # else: allocated lazily on the first increment, NULL means nothing counted yet (all zero)
    return out


def read_tap_devices(
    prog: drgn.Program,
    names: Sequence[str] = (),
    netns: Optional[int] = None,
    entries: bool = True,
    stale: bool = False,
    holders: bool = True,
    live: Optional[bool] = None,
    module_ok: Optional[Callable[[str], bool]] = None,
) -> List[TapDevice]:
    """Read tun/tap/macvtap/ipvtap devices with their queues, rings and (optionally) ring contents.

    :param names: device names or ifindexes; all devices if empty.
    :param entries: decode the live entries (always counted; decoding reads each object).
    :param stale: also decode the stale window's entries.
    :param module_ok: ``module_ok(name)`` tells whether a module's debug info is loaded (default: every
        module's is); devices of a module without it are listed with a note instead of being read.
    """
    devices: List[TapDevice] = []
    is_live = bool(prog.flags & drgn.ProgramFlags.IS_LIVE) if live is None else live
    for dev, kind, inum in find_tap_devices(prog, names, netns):
        needed = {"tun": ["tun"], "macvtap": ["tap", "macvtap"], "ipvtap": ["tap", "ipvtap"]}[kind]
        missing = [m for m in needed if module_ok is not None and not module_ok(m)]
        try:
            if missing:
                d = _device(prog, dev, kind, "tap" if kind != "tun" else "?", [])
                d.notes.append(
                    f"module {', '.join(missing)} has no debug info: queues not read "
                    f"(install the kernel's -dbg package)"
                )
                qs: List[TapQueue] = []
            elif kind == "tun":
                d, qs = _tun_queues(prog, dev, live)
            else:
                d, qs = _tapdev_queues(prog, dev, kind, live)
        except Exception as e:  # noqa: BLE001 - a fault is a note; anything else a bug, reported after the output
            d = TapDevice(
                name=_safe_name(dev),
                ifindex=_safe_int(dev, "ifindex"),
                netns=inum,
                kind=kind,
                mode="?",
                flags=[],
                tx_queue_len=_safe_int(dev, "tx_queue_len"),
                operstate="?",
                carrier=False,
                address=dev.value_(),
            )
            if isinstance(e, (*READ_FAULTS, LookupError)):
                d.notes.append(f"cannot read the device's queues: {e}")
            else:
                d.notes.append(note_bug(prog, f"device {d.name}", e))
            qs = []
        d.netns = inum
        d.queues = qs
        try:
            d.counters = _device_counters(prog, dev, d.notes)
        except DEVICE_FAULTS as e:
            d.notes.append(f"drop counters unreadable: {e}")
        l2 = d.mode != "tun"
        for q in qs:
            if q.ring.error:
                q.notes.append(q.ring.error)
                continue
            try:
                if entries:
                    # a vmcore does not change: its entries are read when used (JSON: a chunk at a time)
                    q.entries = read_entries(
                        prog, q.ring.slots, q.ring.analysis.live, l2, deferred=not is_live
                    )
                    if is_live:
                        _drop_consumed_while_reading(prog, q)
                if stale and q.ring.analysis.stale:
                    q.stale_entries = read_entries(
                        prog, q.ring.slots, q.ring.analysis.stale, l2, stale=True, deferred=not is_live
                    )
            except (*READ_FAULTS, LookupError) as e:
                q.notes.append(f"entries unreadable: {e}")
            except Exception as e:  # noqa: BLE001 - reported as a bug once the rest is printed
                q.notes.append(note_bug(prog, f"the entries of {d.name} queue {q.index}", e))
        devices.append(d)
    if holders:
        addrs = {q.address for d in devices for q in d.queues}
        try:
            found, vhost_files = scan_queue_holders(prog, addrs)
        except DEVICE_FAULTS as e:
            found, vhost_files = {}, []
            for d in devices:
                d.notes.append(f"cannot scan processes for queue holders: {e}")
        by_ring = {q.ring.address: (d, q) for d in devices for q in d.queues}
        for holder, vaddr in vhost_files:
            try:
                ring_addr, user = _read_vhost(
                    prog, holder, vaddr, lambda a: by_ring[a][0].mode != "tun" if a in by_ring else True
                )
            except DEVICE_FAULTS as e:
                for d in devices:
                    d.notes.append(f"vhost-net instance of pid {holder.pid} unreadable: {e}")
                continue
            if ring_addr in by_ring:
                by_ring[ring_addr][1].vhost.append(user)
        for d in devices:
            for q in d.queues:
                q.holders = sorted(found.get(q.address, []), key=lambda h: (h.pid, h.fd))
    return devices


def _drop_consumed_while_reading(prog: drgn.Program, q: TapQueue) -> None:
    """Live targets: entries a reader consumed while we were reading them may already be freed and
    reused; keep only those still live afterwards, and say how many were dropped."""
    now = read_ring_indices(prog, q.ring.address)
    r = q.ring
    if now is None or (now["consumer_head"] == r.consumer_head and now["queue"] == r.queue):
        return
    if now["queue"] != r.queue or now["size"] != r.size:
        q.notes.append("the ring was resized while being read: entries may be stale")
        return
    taken = (now["consumer_head"] - r.consumer_head) % r.size if r.size else 0
    if taken >= len(q.entries):
        gone = len(q.entries)
        q.entries = []
    else:
        gone = taken
        q.entries = q.entries[taken:]
    q.consumed_while_reading = gone
    if gone:
        q.notes.append(f"{gone} entries were consumed by the reader while being read and are not listed")


def _safe_name(dev: drgn.Object) -> str:
    try:
        return dev.name.string_().decode(errors="replace")
    except READ_FAULTS:
        return f"?{dev.value_():#x}"


def _safe_int(dev: drgn.Object, member: str) -> int:
    try:
        return int(dev.member_(member))
    except READ_FAULTS:
        return -1
