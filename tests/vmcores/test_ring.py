"""``skbinspect ring`` against the lab's truth: what each queue held, as the guest drained it after the dump."""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, List, Tuple

import pytest

from tests.conftest import run_skbinspect
from tests.vmcores.lab import LabVmcore
from tests.vmcores.test_lab_info import symbols_args


def ring_json(lab: LabVmcore, *args: str) -> Dict[str, Any]:
    p = run_skbinspect("-c", lab.vmcore, *symbols_args(lab.symbols), "--json", "ring", *args)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def ring_all(lab_vmcore: LabVmcore) -> Dict[str, Any]:
    return ring_json(lab_vmcore, "--entries", "--stale")


def truth_queue(lab: LabVmcore, holder: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """The lab holder process and queue that has this (pid, fd)."""
    for name, h in lab.truth["holders"].items():
        if h["pid"] == holder["pid"]:
            for q in h["queues"]:
                if q["fd"] == holder["fd"]:
                    assert holder["comm"] == h["comm"]
                    return name, q
    raise AssertionError(f"holder {holder} is not a lab process")


def devices_by_name(ring: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {d["name"]: d for d in ring["devices"]}


def test_devices_found(lab_vmcore: LabVmcore, ring_all: Dict[str, Any]) -> None:
    devs = devices_by_name(ring_all)
    assert set(devs) == {"tap0", "tapmq", "macvtap0", "ipvtap0"}
    links = {l["ifname"]: l for l in lab_vmcore.truth["ip_link"]}
    for name, d in devs.items():
        assert d["ifindex"] == links[name]["ifindex"]
        assert d["tx_queue_len"] == links[name]["txqlen"]
        assert d["carrier"] == ("NO-CARRIER" not in links[name]["flags"])
        assert d["operstate"].upper() == links[name]["operstate"]
        assert not d["notes"], d["notes"]
    assert devs["tap0"]["kind"] == "tun" and devs["tap0"]["mode"] == "tap"
    assert "multi_queue" in devs["tapmq"]["flags"] and "multi_queue" not in devs["tap0"]["flags"]
    for name, kind in (("macvtap0", "macvtap"), ("ipvtap0", "ipvtap")):
        assert devs[name]["kind"] == kind and devs[name]["char_device"] == f"/dev/tap{links[name]['ifindex']}"
    # tapmq: 4 queues opened, one disabled
    assert devs["tapmq"]["queues_enabled"] == 3 and devs["tapmq"]["queues_disabled"] == 1


def test_every_queue_matches_what_the_guest_drained(lab_vmcore: LabVmcore, ring_all: Dict[str, Any]) -> None:
    """Live count and the ordered entries (length and bytes) equal the frames drained after the dump."""
    seen = set()
    for d in ring_all["devices"]:
        for q in d["queues"]:
            assert len(q["holders"]) == 1, (d["name"], q)
            holder_name, tq = truth_queue(lab_vmcore, q["holders"][0])
            seen.add((holder_name, tq["fd"]))
            drained = tq["frames_drained"]
            r = q["ring"]
            assert r["error"] is None and r["problems"] == [] and not r["torn"]
            assert r["live"] == len(q["entries"]) == len(drained), (d["name"], q["index"])
            hdr = q["vnet_hdr_sz"]  # a reader gets the virtio-net header first (macvtap's default)
            if d["kind"] in ("macvtap", "ipvtap"):
                assert hdr == 10
            for e, f in zip(q["entries"], drained):
                assert e["kind"] == "skb" and e["error"] is None
                assert e["length"] == f["len"] - hdr
                assert e["digest_complete"] and e["data"] == f["hex"][2 * hdr :]
    # every queue the lab opened was found exactly once
    want = {(n, q["fd"]) for n, h in lab_vmcore.truth["holders"].items() for q in h["queues"]}
    assert seen == want


def test_ring_indices_follow_the_kernel_rules(lab_vmcore: LabVmcore, ring_all: Dict[str, Any]) -> None:
    for d in ring_all["devices"]:
        for q in d["queues"]:
            r = q["ring"]
            size = r["size"]
            assert size == d["tx_queue_len"]
            assert 0 <= r["consumer_tail"] <= r["consumer_head"] < size and 0 <= r["producer"] < size
            assert r["live"] + r["stale"] + r["free"] == size
            _, tq = truth_queue(lab_vmcore, q["holders"][0])
            consumed = len(tq["frames_consumed"])
            if q["state"] == "enabled":
                # produced = consumed + still queued; no wrap in these scenarios unless the ring filled
                assert r["consumer_head"] == consumed % size
                assert r["producer"] == (consumed + r["live"]) % size
            # full exactly when queue[producer] is occupied: live + stale window == size
            assert r["full"] == (r["live"] + (r["consumer_head"] - r["consumer_tail"]) == size)
            if r["full"]:
                assert r["producer"] == r["consumer_tail"]
            # batched zeroing: the stale window is head - tail < batch
            assert r["consumer_head"] - r["consumer_tail"] < max(r["batch"], 1)
            assert [e["index"] for e in q["entries"]] == [
                (r["consumer_head"] + i) % size for i in range(r["live"])
            ]


def test_full_rings_and_their_drops(lab_vmcore: LabVmcore, ring_all: Dict[str, Any]) -> None:
    devs = devices_by_name(ring_all)
    links = {l["ifname"]: l for l in lab_vmcore.truth["ip_link"]}
    tap0 = devs["tap0"]["queues"][0]["ring"]
    assert tap0["full"] and tap0["live"] == links["tap0"]["txqlen"]
    for name in ("macvtap0", "ipvtap0"):
        ring = devs[name]["queues"][0]["ring"]
        assert ring["full"] and ring["live"] == links[name]["txqlen"], name
    assert not any(q["ring"]["full"] for q in devs["tapmq"]["queues"])
    # tun counts its FULL_RING drops as tx_dropped in the core counters (5.18+ per-CPU core_stats,
    # before that tun's own per-CPU stats, which `skbinspect stats` reads)
    counters = devs["tap0"]["counters"]
    if "tx_dropped" in counters and lab_vmcore.kernel.name != "bullseye":
        assert counters["tx_dropped"] == links["tap0"]["stats64"]["tx"]["dropped"]


def test_stale_window_and_disabled_queue(lab_vmcore: LabVmcore, ring_all: Dict[str, Any]) -> None:
    mq = devices_by_name(ring_all)["tapmq"]
    read_q = [q for q in mq["queues"] if truth_queue(lab_vmcore, q["holders"][0])[1]["frames_consumed"]]
    assert len(read_q) == 1
    r = read_q[0]["ring"]
    consumed = len(truth_queue(lab_vmcore, read_q[0]["holders"][0])[1]["frames_consumed"])
    assert r["consumer_head"] == consumed and r["consumer_tail"] == consumed - consumed % r["batch"]
    assert r["stale"] == consumed % r["batch"] > 0
    stale = read_q[0]["stale_entries"]
    assert [e["index"] for e in stale] == list(range(r["consumer_tail"], r["consumer_head"]))
    assert all(e["stale"] for e in stale)
    disabled = [q for q in mq["queues"] if q["state"] == "disabled"]
    assert len(disabled) == 1 and disabled[0]["index"] is None
    # the kernel purged the disabled queue's ring: nothing live, and the guest drained nothing from it
    assert disabled[0]["ring"]["live"] == 0
    assert truth_queue(lab_vmcore, disabled[0]["holders"][0])[1]["frames_drained"] == []


def test_holders_are_the_scenario_processes(lab_vmcore: LabVmcore, ring_all: Dict[str, Any]) -> None:
    by_dev = {"tap0": "tun-full", "tapmq": "tun-mq", "macvtap0": "macvtap-full", "ipvtap0": "ipvtap-full"}
    for d in ring_all["devices"]:
        h = lab_vmcore.truth["holders"][by_dev[d["name"]]]
        for q in d["queues"]:
            assert [(x["pid"], x["comm"]) for x in q["holders"]] == [(h["pid"], h["comm"])]


def test_named_device_and_summary_mode(lab_vmcore: LabVmcore) -> None:
    r = ring_json(lab_vmcore, "macvtap0")
    assert [d["name"] for d in r["devices"]] == ["macvtap0"]
    q = r["devices"][0]["queues"][0]
    assert "entries" not in q and sum(q["summary"]["protocols"].values()) == q["ring"]["live"]
    by_index = ring_json(lab_vmcore, str(r["devices"][0]["ifindex"]))
    assert [d["name"] for d in by_index["devices"]] == ["macvtap0"]


def test_unknown_device_lists_what_exists(lab_vmcore: LabVmcore) -> None:
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "ring", "tap0", "nosuch0")
    assert p.returncode == 4 and "Traceback" not in p.stderr
    assert "no tun/tap/macvtap/ipvtap device 'nosuch0'" in p.stderr
    for name in ("tap0", "tapmq", "macvtap0", "ipvtap0"):
        assert name in p.stderr


def test_text_output(lab_vmcore: LabVmcore) -> None:
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "ring", "-e", "tap0")
    assert p.returncode == 0, p.stderr
    assert "FULL 1000/1000" in p.stdout and "tun-full" in p.stdout
    assert "1000 live entries, oldest first" in p.stdout


def test_module_without_debug_info_still_lists_devices(lab_vmcore: LabVmcore) -> None:
    """Only vmlinux debug info: the devices are named with a note, nothing crashes."""
    p = run_skbinspect(
        "-c",
        lab_vmcore.vmcore,
        "--no-default-symbols",
        "--types",
        "dwarf",  # else the modules' BTF fills in (tests/vmcores/test_btf.py)
        "-s",
        lab_vmcore.kernel.debug_vmlinux,
        "--json",
        "ring",
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    devs = devices_by_name(out)
    assert set(devs) == {"tap0", "tapmq", "macvtap0", "ipvtap0"}
    for d in devs.values():
        assert d["queues"] == [] and any("has no debug info" in n for n in d["notes"])
    assert any("module tun is loaded but has no debug info" in w for w in out["warnings"])


def test_garbage_ring_fields_and_queue_pointer(tmp_path, default_lab_vmcore: LabVmcore) -> None:  # type: ignore[no-untyped-def]
    """In a copy of the dump: tap0's ring gets an absurd size, macvtap0's a queue pointer to nowhere.
    Both are reported as unreadable with the reason; tapmq is still read in full."""
    import drgn

    from skbinspect.target.opener import open_target
    from skbinspect.tuntap.devices import read_tap_devices
    from tests.vmcores.corrupt import copy_vmcore, patch_virt

    lab = default_lab_vmcore
    t = open_target(core=lab.vmcore, symbols=lab.symbols)
    devs = {d.name: d for d in read_tap_devices(t.prog, entries=False, holders=False)}
    ring_t = t.prog.type("struct ptr_ring")
    tap0_ring = devs["tap0"].queues[0].ring.address
    mvt_ring = devs["macvtap0"].queues[0].ring.address
    core = copy_vmcore(lab.vmcore, tmp_path / "vmcore")
    patch_virt(t.prog, core, tap0_ring + drgn.offsetof(ring_t, "size"), struct.pack("<i", 0x7FFFFFF0))
    patch_virt(t.prog, core, mvt_ring + drgn.offsetof(ring_t, "queue"), struct.pack("<Q", 0xDEAD000000000000))

    out = json.loads(_run_ok(str(core), lab, "--json", "ring", "--entries"))
    got = devices_by_name(out)
    r = got["tap0"]["queues"][0]["ring"]
    assert "implausible ring size" in r["error"] and got["tap0"]["queues"][0]["entries"] == []
    r = got["macvtap0"]["queues"][0]["ring"]
    assert "unreadable" in r["error"] and "0xdead000000000000" in r["error"]
    mq = got["tapmq"]
    assert all(q["ring"]["error"] is None for q in mq["queues"])
    assert sum(len(q["entries"]) for q in mq["queues"]) == sum(
        len(q["frames_drained"]) for q in lab.truth["holders"]["tun-mq"]["queues"]
    )
    text = _run_ok(str(core), lab, "ring")
    assert "unreadable" in text and "implausible ring size" in text


def _run_ok(core: str, lab: LabVmcore, *args: str) -> str:
    p = run_skbinspect("-c", core, *symbols_args(lab.symbols), *args)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def vhost_vmcore(lab_kernel_name: str) -> LabVmcore:
    from tests.conftest import lab_kernel
    from tests.vmcores.kernels import LabError
    from tests.vmcores.lab import build_vmcore

    try:
        return build_vmcore(lab_kernel(lab_kernel_name), "vhost")
    except LabError as e:
        pytest.fail(f"vhost lab vmcore could not be built: {e}", pytrace=False)


def test_vhost_net_batch_and_worker(vhost_vmcore: LabVmcore) -> None:
    """A vhost-net instance without guest buffers took a batch from the ring into its rxq: skbinspect
    shows it with its worker, and rxq batch + ring entries equal what the guest drained after vhost gave
    the batch back (VHOST_NET_SET_BACKEND -1 -> ptr_ring_unconsume)."""
    lab = vhost_vmcore
    out = ring_json(lab, "--entries", "tapvh")
    q = out["devices"][0]["queues"][0]
    truth = lab.truth["holders"]["vhost"]
    assert [(h["pid"], h["comm"]) for h in q["holders"]] == [(truth["pid"], truth["comm"])]
    assert len(q["vhost"]) == 1
    v = q["vhost"][0]
    assert v["pid"] == truth["pid"] and v["comm"] == "vhost-holder"
    assert v["worker_comm"] == f"vhost-{truth['pid']}" and v["worker_pid"] != truth["pid"]
    assert 0 < v["rxq_count"] <= 64 and len(v["entries"]) == v["rxq_count"]
    assert lab.truth["holders"]["vhost"]["replies"].get("detach") == "ok"
    drained = truth["queues"][0]["frames_drained"]
    listed = v["entries"] + q["entries"]
    assert len(listed) == len(drained)
    for e, f in zip(listed, drained):
        assert e["length"] == f["len"] and e["data"] == f["hex"]


def _tcpdump_packets(path: str) -> List[str]:
    """The packets of a capture file as tcpdump reads them, hex."""
    import shutil
    import subprocess

    exe = shutil.which("tcpdump")
    if exe is None:
        pytest.fail("tcpdump is not installed (scripts/install-deps.sh installs it)", pytrace=False)
    p = subprocess.run([exe, "-r", path, "-nn", "-xx"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    packets: List[str] = []
    for line in p.stdout.splitlines():
        if not line.startswith("\t"):
            packets.append("")
        else:
            packets[-1] += "".join(line.split(":", 1)[1].split())
    return packets


def test_pcap_holds_what_the_guest_drained(lab_vmcore: LabVmcore, tmp_path: Any) -> None:
    """``ring --pcap``: tcpdump reads the file, and its packets, in order, are the frames each queue's
    reader drained after the dump (without the virtio-net header), every live entry of every ring."""
    pcap = str(tmp_path / "rings.pcapng")
    ring = ring_json(lab_vmcore, "--pcap", pcap)
    want: List[str] = []
    for d in ring["devices"]:
        for q in d["queues"]:
            _, tq = truth_queue(lab_vmcore, q["holders"][0])
            hdr = q["vnet_hdr_sz"]
            want += [f["hex"][2 * hdr :] for f in tq["frames_drained"]]
    got = _tcpdump_packets(pcap)
    assert len(got) == len(want) > 0
    assert got == want


def test_text_lists_only_flows_that_repeat(lab_vmcore: LabVmcore) -> None:
    """``ring``'s "holds" line per queue: the flows of more than one packet (of the 3 commonest) follow
    it; when every flow is unique (the commonest has 1 packet) the line says so and lists none."""
    summary = ring_json(lab_vmcore)
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "ring")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    checked = 0
    for d in summary["devices"]:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{d['name']} ifindex "))
        block = lines[start + 1 :]
        block = block[: next((i for i, line in enumerate(block) if " ifindex " in line), len(block))]
        for q in d["queues"]:
            s = q.get("summary")
            if not s or not s["top_flows"]:
                continue
            at = next(i for i, line in enumerate(block) if line.startswith(f"  queue {q['index']} holds: "))
            repeat = [(f, n) for f, n in s["top_flows"][:3] if n > 1]
            assert block[at].endswith("; every flow a single packet") == (not repeat), block[at]
            shown = [line for line in block[at + 1 : at + 1 + len(repeat) + 1] if line.startswith("    ")]
            assert [line.split(None, 1) for line in shown] == [[str(n), f] for f, n in repeat]
            checked += 1
    assert checked >= 4


def test_occupancy_bars_equal_the_json(lab_vmcore: LabVmcore) -> None:
    """``ring``'s occupancy bars (piped: ASCII): per queue, in the table's order, the live, stale and free
    counts of the JSON (whose sum is the ring size), and cells in proportion to them."""
    import re

    from skbinspect.chart import split_cells

    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "ring")
    assert p.returncode == 0, p.stderr
    rows = re.findall(r"^  (\S+) ([#~.]+)  (\d+) live, (\d+) stale, (\d+) free of (\d+)$", p.stdout, re.M)
    want = []
    ring_all = ring_json(lab_vmcore)  # (runs the CLI on the vmcore: not one of test_live_host's JSON checks)
    for d in ring_all["devices"]:
        for q in d["queues"]:
            r = q["ring"]
            want.append(
                ("-" if q["index"] is None else str(q["index"]), r["live"], r["stale"], r["free"], r["size"])
            )
    assert [(x[0], int(x[2]), int(x[3]), int(x[4]), int(x[5])) for x in rows] == want
    for _label, bar, live, stale, free, size in rows:
        assert int(live) + int(stale) + int(free) == int(size)
        cells = split_cells([int(live), int(stale), int(free)], len(bar))
        assert bar == "#" * cells[0] + "~" * cells[1] + "." * cells[2]
    assert any("~" in x[1] for x in rows)  # tapmq's stale window shows


def _pcap_comments(path: str) -> List[str]:
    """The comment of each packet of a pcapng file, in order (tcpdump does not print them)."""
    from tests.tuntap.test_pcap import _blocks, _options

    with open(path, "rb") as f:
        blocks = _blocks(f.read())
    out = []
    for kind, body in blocks:
        if kind == 6:
            caplen = struct.unpack_from("<I", body, 12)[0]
            opts = dict(_options(body[20 + caplen + (-caplen % 4) :]))
            out.append(opts.get(1, b"").decode())
    return out


def test_pcap_with_the_stale_window(lab_vmcore: LabVmcore, tmp_path: Any) -> None:
    """``ring --stale --pcap``: per queue the stale window's entries, then the live ones; tcpdump reads
    them and they equal the entries skbinspect lists in the same run (the stale skbs are freed, so their
    bytes are whatever the slab holds now), the live ones equal what the guest drained; each packet's
    comment names its device, queue, ring index, skb address and set."""
    pcap = str(tmp_path / "stale.pcapng")
    ring = ring_json(lab_vmcore, "--stale", "--pcap", pcap)
    want: List[str] = []
    comments: List[str] = []
    n_stale = 0
    for d in ring["devices"]:
        for q in d["queues"]:
            queue = "-" if q["index"] is None else q["index"]
            _, tq = truth_queue(lab_vmcore, q["holders"][0])
            hdr = q["vnet_hdr_sz"]
            readable = [e for e in q["stale_entries"] if e["error"] is None and e["data"]]
            n_stale += len(readable)
            want += [e["data"] for e in readable]
            comments += [
                f"{d['name']} queue {queue} ring index {e['index']} {e['kind']} {e['address']} stale"
                for e in readable
            ]
            live = [f["hex"][2 * hdr :] for f in tq["frames_drained"]]
            assert [e["data"] for e in q["entries"]] == live
            want += live
            comments += [
                f"{d['name']} queue {queue} ring index {e['index']} {e['kind']} {e['address']} live"
                for e in q["entries"]
            ]
    assert n_stale > 0  # tapmq's read queue has a stale window (see test_stale_window_and_disabled_queue)
    got = _tcpdump_packets(pcap)
    assert len(got) == len(want) and got == want
    assert _pcap_comments(pcap) == comments


def test_pcap_with_vhost_net_batch(vhost_vmcore: LabVmcore, tmp_path: Any) -> None:
    """``ring --pcap`` on a queue vhost-net reads: the entries vhost took into its rxq batch come first,
    then the ring's; together they are what the guest drained after vhost gave the batch back."""
    lab = vhost_vmcore
    pcap = str(tmp_path / "vhost.pcapng")
    out = ring_json(lab, "-e", "--pcap", pcap, "tapvh")
    q = out["devices"][0]["queues"][0]
    v = q["vhost"][0]
    assert v["rxq_count"] > 0
    drained = [f["hex"] for f in lab.truth["holders"]["vhost"]["queues"][0]["frames_drained"]]
    got = _tcpdump_packets(pcap)
    assert got == drained
    comments = _pcap_comments(pcap)
    queue = q["index"]
    assert comments == [
        f"tapvh queue {queue} rxq batch index {v['rxq_head'] + i} {e['kind']} {e['address']} "
        f"vhost-net batch of pid {v['pid']}"
        for i, e in enumerate(v["entries"])
    ] + [f"tapvh queue {queue} ring index {e['index']} {e['kind']} {e['address']} live" for e in q["entries"]]


def test_text_gives_the_addresses(lab_vmcore: LabVmcore) -> None:
    """Issue 16: ``ring`` gives each device's net_device address and each queue's tun_file/tap_queue and
    ptr_ring addresses (to take into drgn or crash), the same as the JSON's; drgn finds each queue's
    ring at its address (the ptr_ring inside the tun_file/tap_queue)."""
    import re

    import drgn

    summary = ring_json(lab_vmcore)
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "ring")
    assert p.returncode == 0, p.stderr
    text = p.stdout
    prog = None
    for d in summary["devices"]:
        assert re.search(rf"^{re.escape(d['name'])} ifindex .*, net_device {d['address']}$", text, re.M), d[
            "name"
        ]
        for q in d["queues"]:
            row = re.search(rf"\s{q['address']}\s+{q['ring']['address']}$", text, re.M)
            assert row, (d["name"], q["index"])
            if prog is None:
                from tests.vmcores.test_reasons import target_of

                prog = target_of(lab_vmcore).prog
            kind = "struct tun_file" if d["kind"] == "tun" else "struct tap_queue"
            member = "tx_ring" if d["kind"] == "tun" else "ring"
            obj = drgn.Object(prog, kind + " *", int(q["address"], 16))
            assert getattr(obj, member).address_ == int(q["ring"]["address"], 16)
