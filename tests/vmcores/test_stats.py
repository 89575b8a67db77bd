"""``skbinspect stats`` on every lab kernel, against the guest's own /proc/net/softnet_stat and
``ip -j -s -s link`` captured just before the dump (nothing touches the network between the two)."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List

import drgn

from skbinspect.counters.stats import (
    TOTAL_FIELDS,
    DeviceStats,
    cpu_lists,
    device_stats,
    device_stats_one,
    drop_monitor_state,
    read_percpu_counters,
    softnet_stats,
)
from skbinspect.memory.layout import struct_layout
from tests.conftest import run_skbinspect
from tests.vmcores.lab import LabVmcore
from tests.vmcores.test_reasons import symbols_args, target_of

# ip's JSON names for the drop fields of struct rtnl_link_stats64 (iproute2 prints nohandler and
# otherhost only when the kernel sends them and, for otherhost, only when non-zero).
IP_FIELDS = {
    "rx_dropped": ("rx", "dropped"),
    "tx_dropped": ("tx", "dropped"),
    "rx_errors": ("rx", "errors"),
    "rx_nohandler": ("rx", "nohandler"),
    "rx_otherhost_dropped": ("rx", "otherhost"),
}


def ip_value(dev: Dict[str, Any], total: str) -> int:
    side, key = IP_FIELDS[total]
    return dev["stats64"][side].get(key, 0)


def test_softnet_matches_proc(lab_vmcore: LabVmcore) -> None:
    truth: List[List[int]] = lab_vmcore.truth["softnet_stat"]
    sn = softnet_stats(target_of(lab_vmcore).prog)
    online = [c for c in sn.cpus if c.online]
    assert len(online) == len(truth) == lab_vmcore.truth["nproc"]
    assert sn.proc_columns == len(truth[0])
    for i, (c, row) in enumerate(zip(online, truth)):
        assert c.note is None
        assert c.proc_row(i, len(row)) == row, (c, row)
    # the dropped counter's form follows the target's struct softnet_data
    t = target_of(lab_vmcore).prog.type("struct softnet_data")
    if t.has_member("drop_counters"):
        assert sn.dropped_form.startswith("struct numa_drop_counters")
        assert all(c.dropped_parts is not None and len(c.dropped_parts) == 2 for c in online)
    else:
        assert sn.dropped_form == f"{t.member('dropped').type.type_name()} dropped"
    assert any(c.processed for c in online)  # the lab's frames went through the backlog


def test_device_totals_match_ip(lab_vmcore: LabVmcore) -> None:
    prog = target_of(lab_vmcore).prog
    truth = {d["ifname"]: d for d in lab_vmcore.truth["ip_link"]}
    devs = {d.name: d for d in device_stats(prog)}
    assert set(devs) == set(truth)
    core = prog.type("struct net_device").has_member("core_stats")
    for name, d in devs.items():
        assert d.complete, (name, d.notes)
        assert d.ifindex == truth[name]["ifindex"]
        for f in TOTAL_FIELDS:
            if f in d.totals:
                assert d.totals[f] == ip_value(truth[name], f), (name, f, d.totals, truth[name]["stats64"])
            else:  # a counter this kernel/driver does not have: ip shows nothing or 0
                assert ip_value(truth[name], f) == 0, (name, f)
        core_fields = [m.name for m in prog.type("struct net_device_core_stats").members] if core else []
        assert ("rx_otherhost_dropped" in d.totals) == ("rx_otherhost_dropped" in core_fields)
        # totals are the sums of the rows
        s: Dict[str, int] = {}
        for r in d.rows:
            for raw, targets in r.counts_as.items():
                for t in targets:
                    s[t] = s.get(t, 0) + r.counters[raw]
        assert all(d.totals[k] == s.get(k, 0) for k in d.totals)
    # where the drops live, by kernel: tap0's FULL_RING drops are tun's own per-CPU counters on 5.10,
    # the core's per-CPU core_stats from 5.18; macvtap0's ring-full drops are macvlan's rx_errors.
    tap0 = devs["tap0"]
    src = "core_stats" if core else "tun_pcpu_stats"
    assert (
        sum(r.counters["tx_dropped"] for r in tap0.rows if r.source == src)
        == ip_value(truth["tap0"], "tx_dropped")
        > 0
    )
    assert [r.cpu for r in tap0.rows if r.source == src] == sorted(
        r.cpu for r in tap0.rows if r.source == src
    )
    # ipvtap0's are ipvlan's rx_errs (ipvlan_get_stats64: rx_errors = rx_dropped = rx_errs)
    ipv = devs["ipvtap0"]
    assert (
        sum(r.counters["rx_errs"] for r in ipv.rows if r.source == "ipvl_pcpu_stats")
        == ip_value(truth["ipvtap0"], "rx_dropped")
        == ip_value(truth["ipvtap0"], "rx_errors")
        > 0
    )
    mvt = devs["macvtap0"]
    assert (
        sum(r.counters["rx_errors"] for r in mvt.rows if r.source == "vlan_pcpu_stats")
        == ip_value(truth["macvtap0"], "rx_dropped")
        == ip_value(truth["macvtap0"], "rx_errors")
        > 0
    )
    # lazily allocated core_stats: a device that never dropped has a NULL pointer, shown as zeros
    if core:
        lo = devs["lo"]
        assert [r.note for r in lo.rows if r.source == "core_stats"] == [
            "not allocated (NULL): nothing counted yet, all zero"
        ]


def test_drop_monitor_state(lab_vmcore: LabVmcore) -> None:
    """drop_monitor is loaded in the lab guest but nobody turned it on."""
    t = target_of(lab_vmcore)
    assert "drop_monitor" in t.debug.modules
    dm = drop_monitor_state(t.prog)
    assert dm.loaded and not dm.tracing
    assert dm.mode in ("summary", "packet")
    assert dm.queue_limit is not None and dm.queue_limit > 0
    from drgn.helpers.linux.cpumask import for_each_possible_cpu

    cpus = list(for_each_possible_cpu(t.prog))
    assert sorted((c.kind, c.cpu) for c in dm.cpus) == sorted(
        [("sw", c) for c in cpus] + [("hw", c) for c in cpus]
    )
    assert all(c.note is None and c.queued == 0 and c.lost == 0 and not c.summary for c in dm.cpus)
    assert drop_monitor_state(t.prog, module_loaded=False).loaded is False


def test_bad_percpu_pointers(default_lab_vmcore: LabVmcore) -> None:
    """NULL gives zeros with a note; a garbage per-CPU pointer gives a per-row note, never an exception."""
    prog = target_of(default_lab_vmcore).prog
    t = prog.type("struct net_device_core_stats")
    lay = struct_layout(prog, "struct net_device_core_stats", [m.name for m in t.members])
    rows = read_percpu_counters(prog, 0, lay, "core_stats")
    assert len(rows) == 1 and rows[0].note.startswith("not allocated") and rows[0].idle
    for garbage in (0xDEAD000000000000, 0x0000_7F00_0000_0000, 0xFFFF_FFFF_FFFF_FFF0):
        rows = read_percpu_counters(prog, garbage, lay, "core_stats")
        assert rows and all(r.note and "bad per-CPU pointer" in r.note and r.idle for r in rows), rows
        assert [r.cpu for r in rows] == sorted(r.cpu for r in rows)


def test_bad_net_device(default_lab_vmcore: LabVmcore) -> None:
    """A net_device pointer into unmapped memory, or onto memory that is not a net_device."""
    prog = target_of(default_lab_vmcore).prog
    bogus = drgn.Object(prog, "struct net_device *", value=0xDEAD000000001000)
    d = device_stats_one(prog, bogus)
    assert isinstance(d, DeviceStats) and not d.complete and "unreadable" in d.notes[0]
    # Readable memory that holds something else: kernel text and a zero-filled page.
    for addr in (prog.symbol("_text").address, prog.symbol("empty_zero_page").address):
        d = device_stats_one(prog, drgn.Object(prog, "struct net_device *", value=addr))
        assert isinstance(d, DeviceStats)


def test_bad_softnet_memory(default_lab_vmcore: LabVmcore) -> None:
    """A program whose memory reads fail at the per-CPU area: per-CPU notes, not a traceback."""
    prog = target_of(default_lab_vmcore).prog

    class FailingReads:
        """Wraps the program; reads of softnet_data fail as in a dump that lost those pages."""

        def __init__(self, prog: drgn.Program) -> None:
            self._prog = prog
            self.cache: Dict[str, Any] = {}

        def read(self, addr: int, size: int, physical: bool = False) -> bytes:
            raise drgn.FaultError("page not in the dump", addr)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._prog, name)

        def __getitem__(self, name: str) -> Any:
            return self._prog[name]

    failing = FailingReads(prog)
    failing.cache["skbinspect.stats.cpus"] = cpu_lists(prog)  # the CPU lists themselves were readable
    sn = softnet_stats(failing)  # type: ignore[arg-type]
    assert sn.cpus and all(c.note and "unreadable" in c.note for c in sn.cpus)
    assert all(c.processed == 0 and c.dropped == 0 for c in sn.cpus)


def args_of(lab: LabVmcore) -> List[str]:
    return ["-c", lab.vmcore, *symbols_args(lab)]


def test_cli_stats_json(lab_vmcore: LabVmcore) -> None:
    p = run_skbinspect(*args_of(lab_vmcore), "--json", "stats")
    assert p.returncode == 0, p.stderr
    check_stats_json(lab_vmcore.truth, json.loads(p.stdout))


def check_stats_json(truth: Dict[str, Any], out: Dict[str, Any]) -> None:
    """``stats --json`` against the guest's /proc/net/softnet_stat rows and ``ip -s -s link`` totals."""
    online = [c for c in out["softnet"]["cpus"] if c["online"]]
    assert len(online) == len(truth["softnet_stat"]) == truth["nproc"]
    for c, row in zip(online, truth["softnet_stat"]):
        assert [
            c["processed"],
            c["dropped"],
            c["time_squeeze"],
            c["received_rps"],
            c["flow_limit_count"],
            c["backlog_len"],
        ] == [row[0], row[1], row[2], row[9], row[10], row[11]]
    ip = {d["ifname"]: d for d in truth["ip_link"]}
    assert {d["name"] for d in out["devices"]} == set(ip)
    for d in out["devices"]:
        for f, v in d["totals"].items():
            assert v == ip_value(ip[d["name"]], f), (d["name"], f)
    # the FULL_RING drops the lab caused are there
    tap0 = next(d for d in out["devices"] if d["name"] == "tap0")
    assert tap0["totals"]["tx_dropped"] == ip_value(ip["tap0"], "tx_dropped") > 0
    assert out["drop_monitor"]["loaded"] is True


def test_cli_stats_filter_and_nonzero(lab_vmcore: LabVmcore) -> None:
    truth = {d["ifname"]: d for d in lab_vmcore.truth["ip_link"]}
    p = run_skbinspect(*args_of(lab_vmcore), "--json", "stats", "tap0", str(truth["macvtap0"]["ifindex"]))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [d["name"] for d in out["devices"]] == [n for n in truth if n in ("tap0", "macvtap0")]
    # --nonzero: exactly the devices with a non-zero drop counter in ip's view
    p = run_skbinspect(*args_of(lab_vmcore), "--json", "stats", "--nonzero")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    want = {n for n, d in truth.items() if any(ip_value(d, f) for f in IP_FIELDS)}
    assert {d["name"] for d in out["devices"]} == want
    assert all(any(r["counters"].values()) for d in out["devices"] for r in d["rows"])
    # text, piped: the same devices, with their totals
    p = run_skbinspect(*args_of(lab_vmcore), "stats", "--nonzero")
    assert p.returncode == 0, p.stderr
    for n in truth:  # a word of its own (piped text is plain: a device name may start the line)
        assert bool(re.search(rf"(^|\s){re.escape(n)}\s", p.stdout, re.M)) == (n in want), n
    assert "softnet_data per CPU" in p.stdout and "drop_monitor: loaded, not monitoring" in p.stdout
    p = run_skbinspect(*args_of(lab_vmcore), "stats", "nosuchdev0")
    assert p.returncode == 1 and "no device nosuchdev0" in p.stderr and "tap0" in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_stats_text_shows_what_moved(lab_vmcore: LabVmcore) -> None:
    """Issue 16: text ``stats`` shows the devices whose drop counters moved (as ``--nonzero``) and says
    what it hid; ``--all`` and named devices show every row; JSON keeps every device unless --nonzero."""
    truth = {d["ifname"]: d for d in lab_vmcore.truth["ip_link"]}
    moved = {n for n, d in truth.items() if any(ip_value(d, f) for f in IP_FIELDS)}
    every = json.loads(run_skbinspect(*args_of(lab_vmcore), "--json", "stats").stdout)
    assert {d["name"] for d in every["devices"]} == set(truth)

    def named(text: str) -> set:
        return {n for n in truth if re.search(rf"(^|\s){re.escape(n)}\s", text, re.M)}

    p = run_skbinspect(*args_of(lab_vmcore), "stats")
    assert p.returncode == 0, p.stderr
    assert named(p.stdout) == moved
    body, _, hidden = p.stdout.rstrip("\n").rpartition("\n")
    n_quiet = len(truth) - len(moved)
    assert hidden.startswith(f"hidden: {n_quiet} device") and "--all shows every row" in hidden, hidden
    assert (
        body
        == run_skbinspect(*args_of(lab_vmcore), "stats", "--nonzero").stdout.rstrip("\n").rpartition("\n")[0]
    )
    p = run_skbinspect(*args_of(lab_vmcore), "stats", "--all")
    assert p.returncode == 0 and named(p.stdout) == set(truth) and "hidden:" not in p.stdout
    quiet = sorted(set(truth) - moved)
    if quiet:  # a named device is shown whole, drops or not
        p = run_skbinspect(*args_of(lab_vmcore), "stats", quiet[0])
        assert p.returncode == 0 and quiet[0] in named(p.stdout) and "hidden:" not in p.stdout
    p = run_skbinspect(*args_of(lab_vmcore), "stats", "--all", "--nonzero")
    assert p.returncode == 64 and "contradict" in p.stderr
