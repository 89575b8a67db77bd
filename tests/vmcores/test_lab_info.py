"""``skbinspect info`` on every lab kernel: vmcores and a running guest over QMP, checked against truth."""

from __future__ import annotations

import json
import os
from typing import List

from tests.conftest import run_skbinspect
from tests.vmcores.lab import LabVmcore

NEEDED = [
    "tun",
    "tap",
    "macvlan",
    "macvtap",
    "ipvlan",
    "ipvtap",
    "veth",
    "vhost",
    "vhost_net",
    "drop_monitor",
]


def symbols_args(paths: List[str]) -> List[str]:
    return sum((["-s", p] for p in paths), [])


def test_vmcore_info_matches_truth(lab_vmcore: LabVmcore) -> None:
    truth = lab_vmcore.truth
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "--json", "info")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["kind"] == "vmcore" and info["vmcore_format"] == "elf"
    assert info["release"] == truth["release"] == lab_vmcore.kernel.release
    assert info["cpus_online"] == truth["nproc"] and info["cpus_possible"] >= truth["nproc"]
    assert info["vmlinux_debug_file"] and info["vmlinux_debug_file"].startswith(lab_vmcore.kernel.debug_root)
    mods = {m["name"]: m for m in info["modules"]}
    for name in NEEDED:  # the lab guest loads all of them
        assert mods[name]["loaded"], name
        assert mods[name]["debug_file"] and mods[name]["debug_file"].startswith(
            lab_vmcore.kernel.debug_root
        ), name
    assert info["missing_debug_info"] == [] and info["warnings"] == []
    # a QEMU dump of a running guest: no kdump crash time and no panic
    assert info["crash_time"] is None and info["panic_message"] is None
    # the kernel's wall clock when dumped: after the guest booted, and not in the future of the truth file
    assert info["kernel_time"] is not None
    assert 0 < info["kernel_time"] <= os.path.getmtime(lab_vmcore.truth_path) + 1


def test_vmcore_info_text(lab_vmcore: LabVmcore) -> None:
    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "info")
    assert p.returncode == 0, p.stderr
    assert lab_vmcore.truth["release"] in p.stdout
    assert "vmlinux debug info" in p.stdout
    # 7.x: the boot path is a symlink to lib/modules/<release>/vmlinux and drgn reports either
    vmlinux = lab_vmcore.kernel.debug_vmlinux
    assert vmlinux in p.stdout or os.path.realpath(vmlinux) in p.stdout
    assert "MISSING" not in p.stdout


def test_debug_info_found_from_root_like_directory(lab_vmcore: LabVmcore) -> None:
    """-s with a directory shaped like / finds vmlinux at its Debian path (7.x: under lib/modules)."""
    p = run_skbinspect(
        "-c", lab_vmcore.vmcore, "--no-default-symbols", "-s", lab_vmcore.kernel.debug_root, "--json", "info"
    )
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["vmlinux_debug_file"].startswith(lab_vmcore.kernel.debug_root)
    assert info["missing_debug_info"] == []


def test_build_id_reader_matches_vmcoreinfo(lab_vmcore: LabVmcore) -> None:
    """skbinspect's own ELF build-ID reader (used in mismatch messages) agrees with the kernel's
    VMCOREINFO BUILD-ID for the matching vmlinux."""
    from skbinspect.target.debuginfo import elf_build_id

    with open(lab_vmcore.vmcore, "rb") as f:
        head = f.read(1 << 20)
    i = head.find(b"BUILD-ID=")
    assert i >= 0, "QEMU dump without VMCOREINFO BUILD-ID"
    want = head[i + 9 : head.index(b"\n", i)].decode()
    got = elf_build_id(os.path.realpath(lab_vmcore.kernel.debug_vmlinux))
    assert got is not None and got.hex() == want


def test_lab_truth_is_complete(lab_vmcore: LabVmcore) -> None:
    """The lab captured every piece of truth the scenarios promise (guards the lab itself)."""
    t = lab_vmcore.truth
    assert t["release"] == lab_vmcore.kernel.release
    assert len(t["softnet_stat"]) == t["nproc"]
    assert {d["ifname"] for d in t["ip_link"]} >= {
        "tap0",
        "tapmq",
        "macvtap0",
        "ipvtap0",
        "veth0",
        "veth1",
        "veth2",
        "veth3",
    }
    assert "kfree_skb" in t["trace"]["top"]["trace"] and "<stack trace>" in t["trace"]["top"]["trace"]
    inst = t["trace"]["instances"]["skbinst"]
    import re

    m = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", inst["trace"])
    assert m and int(m.group(1)) < int(m.group(2)), "the trace instance must have wrapped"
    assert any(k.startswith("skb:kfree_skb") for k in t["formats"])
    full = t["holders"]["tun-full"]
    tap0 = next(d for d in t["ip_link"] if d["ifname"] == "tap0")
    assert len(full["queues"]) == 1 and len(full["queues"][0]["frames_drained"]) == tap0["txqlen"]
    assert tap0["stats64"]["tx"]["dropped"] > 0
    mq = t["holders"]["tun-mq"]
    assert len(mq["queues"]) == 4 and mq["replies"]["disable"] == "ok"
    assert len(mq["queues"][0]["frames_consumed"]) == 21
    mvt = t["holders"]["macvtap-full"]
    mvt_dev = next(d for d in t["ip_link"] if d["ifname"] == "macvtap0")
    assert len(mvt["queues"][0]["frames_drained"]) == mvt_dev["txqlen"]
    assert mvt_dev["stats64"]["rx"]["dropped"] > 0
    for h in t["holders"].values():
        assert h["pid"] > 1 and h["comm"]


def test_qmp_info_on_running_guest(live_lab_guest) -> None:  # type: ignore[no-untyped-def]
    g = live_lab_guest
    p = run_skbinspect("--qemu", g.qmp_socket, *symbols_args(g.symbols), "--json", "info")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["kind"] == "qemu"
    assert info["release"] == g.kernel.release
    assert info["missing_debug_info"] == []
    assert info["cpus_online"] == 2
