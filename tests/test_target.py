"""Opening targets: every kind of bad input gives one clear paragraph and a non-zero exit, no traceback.

File-format checks run on small crafted files; debug-info checks run on a real lab vmcore.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from skbinspect import cli
from skbinspect.errors import TargetError
from skbinspect.target.debuginfo import debug_package_hint, elf_build_id
from skbinspect.target.opener import check_vmcore_file
from tests.conftest import lab_kernel, run_skbinspect


def assert_clean_error(p, *needles: str, code: int = None) -> str:
    """The process failed with a message containing ``needles`` and printed no traceback."""
    assert p.returncode != 0, p.stdout
    if code is not None:
        assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert p.stderr.startswith("skbinspect: error: "), p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)
    return p.stderr


def test_missing_vmcore(tmp_path: Path) -> None:
    assert_clean_error(run_skbinspect("-c", str(tmp_path / "nope"), "info"), "does not exist", code=2)


def test_vmcore_is_directory(tmp_path: Path) -> None:
    assert_clean_error(run_skbinspect("-c", str(tmp_path), "info"), "is a directory", code=2)


def test_empty_vmcore(tmp_path: Path) -> None:
    f = tmp_path / "vmcore"
    f.write_bytes(b"")
    assert_clean_error(run_skbinspect("-c", str(f), "info"), "is empty", code=2)


def test_not_a_vmcore(tmp_path: Path) -> None:
    f = tmp_path / "vmcore"
    f.write_bytes(b"hello, this is not a dump\n" * 100)
    assert_clean_error(run_skbinspect("-c", str(f), "info"), "is not a vmcore", code=2)


def test_elf_executable_is_not_a_vmcore() -> None:
    assert_clean_error(
        run_skbinspect("-c", shutil.which("true") or "/bin/true", "info"), "not a core dump", code=2
    )


def test_unreadable_vmcore(tmp_path: Path) -> None:
    f = tmp_path / "vmcore"
    f.write_bytes(b"\x7fELF")
    f.chmod(0)
    if os.geteuid() == 0:
        # root reads anything: check the message through the function with a failing open instead
        with pytest.raises(TargetError, match="cannot read vmcore"):
            real_open = open

            def deny(path, *a, **k):  # type: ignore[no-untyped-def]
                if str(path) == str(f):
                    raise PermissionError(13, "Permission denied")
                return real_open(path, *a, **k)

            import builtins

            old = builtins.open
            builtins.open = deny
            try:
                check_vmcore_file(str(f))
            finally:
                builtins.open = old
    else:
        assert_clean_error(run_skbinspect("-c", str(f), "info"), "Permission denied", code=2)


def test_flattened_vmcore_says_how_to_reassemble(tmp_path: Path) -> None:
    f = tmp_path / "vmcore.flat"
    # makedumpfile's flattened header: signature, type, version, then 4 KiB of header
    f.write_bytes(b"makedumpfile\0\0\0\0" + struct.pack(">qq", 1, 1) + b"\0" * 4000)
    err = assert_clean_error(run_skbinspect("-c", str(f), "info"), "flattened format", code=2)
    assert f"makedumpfile -R {f}.reassembled < {f}" in err


def test_truncated_program_headers(tmp_path: Path) -> None:
    f = tmp_path / "vmcore"
    hdr = bytearray(64)
    hdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<H", hdr, 16, 4)  # ET_CORE
    struct.pack_into("<Q", hdr, 32, 64)  # e_phoff
    struct.pack_into("<HH", hdr, 54, 56, 10)  # 10 program headers that are not there
    f.write_bytes(bytes(hdr))
    assert_clean_error(run_skbinspect("-c", str(f), "info"), "truncated", code=2)


def test_missing_symbols_path(tmp_path: Path, default_lab_vmcore) -> None:  # type: ignore[no-untyped-def]
    p = run_skbinspect("-c", default_lab_vmcore.vmcore, "-s", str(tmp_path / "nothing"), "info")
    assert_clean_error(p, "no such file or directory", code=2)


def test_qmp_socket_missing(tmp_path: Path) -> None:
    p = run_skbinspect("--qemu", str(tmp_path / "qmp.sock"), "info")
    assert_clean_error(p, "does not exist", "-qmp unix:", code=2)


def test_qmp_not_a_socket(tmp_path: Path) -> None:
    f = tmp_path / "qmp.sock"
    f.write_text("")
    assert_clean_error(run_skbinspect("--qemu", str(f), "info"), "is not a socket", code=2)


def test_core_and_qemu_together(tmp_path: Path) -> None:
    assert_clean_error(run_skbinspect("-c", "x", "--qemu", "y", "info"), "not both", code=2)


# ---- live target preconditions, checked in-process (the test machine's own kernel is not read) ----


def test_live_needs_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import skbinspect.target.opener as target

    real_exists = os.path.exists
    monkeypatch.setattr(target.os.path, "exists", lambda p: True if p == "/proc/kcore" else real_exists(p))
    monkeypatch.setattr(target.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(target, "_has_cap_sys_rawio", lambda: False)
    assert cli.run(["info"]) == 2
    err = capsys.readouterr().err
    assert "needs root (or CAP_SYS_RAWIO)" in err and "skbinspect -c VMCORE" in err
    assert "Traceback" not in err


def test_live_without_proc_kcore(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import skbinspect.target.opener as target

    real_exists = os.path.exists
    monkeypatch.setattr(target.os.path, "exists", lambda p: False if p == "/proc/kcore" else real_exists(p))
    assert cli.run(["info"]) == 2
    err = capsys.readouterr().err
    assert "/proc/kcore does not exist" in err and "CONFIG_PROC_KCORE" in err


# ---- debug info, on a real vmcore -------------------------------------------------------------------


def test_no_vmlinux_debug_info_names_the_package(default_lab_vmcore) -> None:  # type: ignore[no-untyped-def]
    lab = default_lab_vmcore
    # --types dwarf: without it the kernel's BTF stands in (tests/vmcores/test_btf.py)
    p = run_skbinspect("-c", lab.vmcore, "--no-default-symbols", "--types", "dwarf", "info")
    err = assert_clean_error(p, "no debug info", code=3)
    release = lab.truth["release"]
    assert f"apt-get install linux-image-{release}-dbg" in err
    assert "dbgsym" in err and "dnf debuginfo-install" in err


def test_mismatched_vmlinux_build_id(default_lab_vmcore) -> None:  # type: ignore[no-untyped-def]
    from tests.vmcores.config import DEFAULT_KERNEL, KERNELS

    other = next(n for n in KERNELS if n != DEFAULT_KERNEL)
    wrong = lab_kernel(other).debug_vmlinux
    p = run_skbinspect(
        "-c", default_lab_vmcore.vmcore, "--no-default-symbols", "--types", "dwarf", "-s", wrong, "info"
    )
    err = assert_clean_error(p, "does not match", wrong, code=3)
    bid = elf_build_id(wrong)
    assert bid is not None and bid.hex() in err


def test_missing_module_debug_info_is_named_and_info_still_works(default_lab_vmcore) -> None:  # type: ignore[no-untyped-def]
    lab = default_lab_vmcore
    vmlinux = lab.kernel.debug_vmlinux
    p = run_skbinspect(
        "-c", lab.vmcore, "--no-default-symbols", "--types", "dwarf", "-s", vmlinux, "--json", "info"
    )
    assert p.returncode == 0, p.stderr
    import json

    info = json.loads(p.stdout)
    assert "tun" in info["missing_debug_info"] and "tap" in info["missing_debug_info"]
    assert any("module tun is loaded but has no debug info" in w for w in info["warnings"])


def test_truncated_vmcore_gives_partial_results(tmp_path: Path, default_lab_vmcore) -> None:  # type: ignore[no-untyped-def]
    lab = default_lab_vmcore
    cut = tmp_path / "vmcore"
    size = os.path.getsize(lab.vmcore)
    with open(lab.vmcore, "rb") as src, open(cut, "wb") as dst:
        left = size * 9 // 10
        while left:
            chunk = src.read(min(left, 8 << 20))
            dst.write(chunk)
            left -= len(chunk)
    p = run_skbinspect("-c", str(cut), *sum((["-s", s] for s in lab.symbols), []), "info")
    assert "Traceback" not in p.stderr
    if p.returncode == 0:
        assert "is truncated" in p.stdout and lab.truth["release"] in p.stdout
    else:
        assert_clean_error(p, "truncated")


def test_debug_package_hint_orders_by_distribution() -> None:
    assert debug_package_hint("6.5.6-300.fc39.x86_64").index("dnf") < debug_package_hint(
        "6.5.6-300.fc39.x86_64"
    ).index("apt-get")
    assert "linux-image-6.1.0-50-cloud-amd64-dbg" in debug_package_hint("6.1.0-50-cloud-amd64")


def test_debug_package_hint_names_only_the_distribution_the_kernel_says() -> None:
    """A live kernel's ``uname -v`` names Debian or Ubuntu: then only that package is named."""
    deb = debug_package_hint("6.1.0-50-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-30)")
    assert "apt-get install linux-image-6.1.0-50-cloud-amd64-dbg" in deb
    assert "Ubuntu" not in deb and "dnf" not in deb
    ubu = debug_package_hint(
        "6.8.0-40-generic", "#40-Ubuntu SMP PREEMPT_DYNAMIC Fri Jul  5 10:34:03 UTC 2024"
    )
    assert "linux-image-6.8.0-40-generic-dbgsym" in ubu and "Debian" not in ubu
    # unknown (a vmcore without debug info): every distribution, the likeliest first
    both = debug_package_hint("6.1.0-50-cloud-amd64", None)
    assert both.index("Debian") < both.index("Ubuntu") < both.index("Fedora")
