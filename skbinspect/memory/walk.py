"""Bounded walks of kernel lists and trees: a damaged target can make them stop, never loop.

drgn's helpers (``list_for_each_entry``, ``for_each_net``, ``for_each_netdev``, ``for_each_task``) follow
pointers for as long as they do not come back to the head: a node that points to itself or to an earlier
node makes them loop forever.  The walks here follow the same links in the same order, and stop

* at a node already seen (the list loops), after a maximum number of nodes,
* at a NULL link, a ``LIST_POISON`` link (an entry deleted while linked), a pointer that is not a
  kernel address or not aligned, or a node that cannot be read.

A walk that stops early keeps what it found and says where it stopped and why (``device list of netns
4026531840 loops back to lo after tapmq: walk stopped, 5 read``), as a problem of the program
(:func:`~skbinspect.memory.problems.note_problem`) that the command reports.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterator, List, Optional, Set, Tuple

import drgn

from skbinspect.memory.faults import READ_FAULTS
from skbinspect.memory.problems import note_problem

__all__ = [
    "LIST_POISON1",
    "LIST_POISON2",
    "MAX_NETNS",
    "MAX_NETDEVS",
    "MAX_TASKS",
    "list_entries",
    "list_is_sound",
    "list_nodes",
    "net_namespaces",
    "netns_devices",
    "pointer_problem",
    "tasks",
    "xa_entries",
]

#: include/linux/poison.h with x86-64's CONFIG_ILLEGAL_POINTER_VALUE (0xdead000000000000): what
#: list_del() leaves in a deleted entry's next and prev.
LIST_POISON1 = 0xDEAD000000000100
LIST_POISON2 = 0xDEAD000000000122

MAX_NETNS = 100_000
MAX_NETDEVS = 1_000_000
MAX_TASKS = 1_000_000
MAX_LIST = 1_000_000

#: include/linux/xarray.h: XA_CHUNK_SHIFT (CONFIG_BASE_SMALL=n), and the internal entries.
XA_CHUNK_SHIFT = 6
XA_ZERO_ENTRY = (257 << 2) | 2


def pointer_problem(p: int, align: int = 8) -> Optional[str]:
    """Why ``p`` cannot be a link to a kernel object, or None if it may be one."""
    if p == 0:
        return "a NULL link"
    if p in (LIST_POISON1, LIST_POISON2):
        return f"LIST_POISON ({p:#x}: an entry deleted while still linked)"
    # kernel addresses are in the upper half: canonical with 48- or 57-bit virtual addresses
    if p >> 56 != 0xFF:
        return f"a link to {p:#x}, not a kernel address"
    if p % align:
        return f"a misaligned link {p:#x}"
    return None


def _name(name: Optional[Callable[[int], str]], address: int) -> str:
    if name is not None:
        try:
            return name(address)
        except (*READ_FAULTS, LookupError, TypeError, UnicodeError):
            pass
    return f"{address:#x}"


def list_nodes(
    prog: drgn.Program,
    head: int,
    what: str,
    *,
    limit: int = MAX_LIST,
    name: Optional[Callable[[int], str]] = None,
    offset: int = 0,
    notes: Optional[List[str]] = None,
) -> Iterator[int]:
    """The nodes (``struct list_head`` addresses) of the circular list whose head is at ``head``, in
    ``list_for_each()`` order, minus ``offset`` (the containing entry's address when ``offset`` is the
    ``list_head`` member's offset).

    :param what: the list, for the note when the walk stops early ("device list of netns 4026531840").
    :param name: names an entry (its address) in that note; the address when it cannot.
    :param notes: where that note goes (an object's notes); by default a problem of the program.
    """
    read = prog.read_u64
    seen: Set[int] = set()
    last: Optional[int] = None
    count = 0

    def say(message: str) -> None:
        if notes is None:
            note_problem(prog, message)
        elif message not in notes:
            notes.append(message)

    def stop(problem: str) -> None:
        where = "at its head" if last is None else f"after {_name(name, last - offset)}"
        say(f"{what} {problem} {where}: walk stopped, {count} read")

    try:
        pos = read(head)
    except READ_FAULTS as e:
        say(f"{what} unreadable (head at {head:#x}: {e})")
        return
    while pos != head:
        problem = pointer_problem(pos)
        if problem is None and pos in seen:
            problem = f"loops back to {_name(name, pos - offset)}"
        if problem is None and count >= limit:
            problem = f"is longer than {limit} entries"
        if problem is not None:
            stop(f"has {problem}" if problem.startswith("a") else problem)
            return
        try:
            nxt = read(pos)
        except READ_FAULTS as e:
            stop(f"has an unreadable node at {pos:#x} ({e})")
            return
        seen.add(pos)
        yield pos - offset
        last = pos
        count += 1
        pos = nxt


def list_is_sound(
    prog: drgn.Program,
    head: int,
    what: str,
    *,
    limit: int = MAX_LIST,
    name: Optional[Callable[[int], str]] = None,
    offset: int = 0,
) -> bool:
    """Whether the list at ``head`` comes back to its head within ``limit`` nodes, every link sound (the
    problem is noted when not): check a list before handing it to a drgn helper that walks it unbounded.
    ``name`` and ``offset`` as for :func:`list_nodes`."""
    seen: List[str] = []
    for _ in list_nodes(prog, head, what, limit=limit, name=name, offset=offset, notes=seen):
        pass
    for n in seen:
        note_problem(prog, n)
    return not seen


def list_entries(
    prog: drgn.Program,
    head: int,
    type_name: str,
    member: str,
    what: str,
    *,
    limit: int = MAX_LIST,
    name: Optional[Callable[[drgn.Object], str]] = None,
    notes: Optional[List[str]] = None,
) -> Iterator[drgn.Object]:
    """``list_for_each_entry(type_name, head, member)``, bounded (see :func:`list_nodes`): ``type_name *``
    objects."""
    ptr = prog.pointer_type(prog.type(type_name))
    off = drgn.offsetof(prog.type(type_name), member)
    named: Optional[Callable[[int], str]] = None
    if name is not None:
        entry_name = name
        named = lambda a: entry_name(drgn.Object(prog, ptr, a))  # noqa: E731
    for a in list_nodes(prog, head, what, limit=limit, name=named, offset=off, notes=notes):
        yield drgn.Object(prog, ptr, a)


def net_namespaces(prog: drgn.Program) -> Iterator[drgn.Object]:
    """``for_each_net()``, bounded: every ``struct net *`` on ``net_namespace_list``."""

    def name(net: drgn.Object) -> str:
        return f"netns {int(net.ns.inum)}"

    return list_entries(
        prog,
        prog["net_namespace_list"].address_,
        "struct net",
        "list",
        "network namespace list",
        limit=MAX_NETNS,
        name=name,
    )


def _dev_name(dev: drgn.Object) -> str:
    return dev.name.string_().decode(errors="replace") or f"{dev.value_():#x}"


def netns_devices(net: drgn.Object, what: Optional[str] = None) -> Iterator[drgn.Object]:
    """``for_each_netdev(net)``, bounded: every ``struct net_device *`` on ``net->dev_base_head``."""
    prog = net.prog_
    if what is None:
        try:
            what = f"device list of netns {int(net.ns.inum)}"
        except (*READ_FAULTS, LookupError, AttributeError):
            what = f"device list of netns at {net.value_():#x}"
    return list_entries(
        prog,
        net.dev_base_head.address_,
        "struct net_device",
        "dev_list",
        what,
        limit=MAX_NETDEVS,
        name=_dev_name,
    )


def xa_entries(prog: drgn.Program, xa: int, what: str, *, limit: int = MAX_LIST) -> Iterator[Tuple[int, int]]:
    """``xa_for_each()`` of the ``struct xarray`` at ``xa``, bounded: ``(index, entry)`` in index order,
    without NULL and zero entries.  Each node is read once; a node seen before, one whose ``shift`` is
    not its parent's minus XA_CHUNK_SHIFT, or one that cannot be read, is skipped with a note."""
    xt = prog.type("struct xarray")
    head = prog.read_u64(xa + drgn.offsetof(xt, "xa_head"))
    nt = prog.type("struct xa_node")
    shift_off = drgn.offsetof(nt, "shift")
    slots_off = drgn.offsetof(nt, "slots")
    nslots = nt.member("slots").type.length or 0  # XA_CHUNK_SIZE
    unpack = struct.Struct(f"<{nslots}Q").unpack_from

    def is_node(v: int) -> bool:
        return v & 3 == 2 and v > 4096

    if not is_node(head):
        if head and head != XA_ZERO_ENTRY and head & 3 != 2:
            yield 0, head
        return
    seen: Set[int] = set()
    count = 0
    # per node being walked: [its index base, its shift, its slot values, the next slot]
    stack: List[List[Any]] = []

    def push(v: int, index: int, parent_shift: Optional[int]) -> None:
        node = v - 2
        why = pointer_problem(node)
        if why is None and node in seen:
            why = "a node seen before (the tree loops)"
        raw = b""
        shift = 0
        if why is None:
            try:
                raw = prog.read(node + slots_off, 8 * nslots)
                shift = prog.read(node + shift_off, 1)[0]
            except READ_FAULTS as e:
                why = f"an unreadable node ({e})"
        if why is None and (
            shift % XA_CHUNK_SHIFT or (parent_shift is not None and shift != parent_shift - XA_CHUNK_SHIFT)
        ):
            why = f"a node with shift {shift} under shift {parent_shift}"
        if why is not None:
            note_problem(prog, f"{what} has {why} at index {index}: that part skipped")
            return
        seen.add(node)
        stack.append([index, shift, unpack(raw), 0])

    push(head, 0, None)
    while stack:
        top = stack[-1]
        index, shift, slots, k = top
        if k >= nslots:
            stack.pop()
            continue
        top[3] = k + 1
        v = slots[k]
        at = index + (k << shift)
        if is_node(v):
            if shift == 0:
                note_problem(prog, f"{what} has a node below a leaf at index {at}: that part skipped")
                continue
            push(v, at, shift)
        elif v and v != XA_ZERO_ENTRY and not (v & 3 == 2 and v < 256):
            count += 1
            if count > limit:
                note_problem(prog, f"{what} has more than {limit} entries: walk stopped")
                return
            yield at, v


def tasks(prog: drgn.Program) -> Iterator[drgn.Object]:
    """``for_each_task()``, bounded: the ``struct task_struct *`` of every PID of the initial PID
    namespace, in PID order (the PID IDR, ``init_pid_ns.idr``, walked with :func:`xa_entries`)."""
    idr = prog["init_pid_ns"].idr
    pid_t = prog.type("struct pid")
    first_off = drgn.offsetof(pid_t, "tasks")  # tasks[PIDTYPE_PID].first: PIDTYPE_PID is 0
    link_off = drgn.offsetof(prog.type("struct task_struct"), "pid_links")
    ptr = prog.pointer_type(prog.type("struct task_struct"))
    what = "task list (the PID IDR of init_pid_ns)"
    for _, pid in xa_entries(prog, idr.idr_rt.address_, what, limit=MAX_TASKS):
        if pointer_problem(pid) is not None:
            continue
        try:
            first = prog.read_u64(pid + first_off)
        except READ_FAULTS:
            continue
        if first and pointer_problem(first) is None:
            yield drgn.Object(prog, ptr, first - link_off)
