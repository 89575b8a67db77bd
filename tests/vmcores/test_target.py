"""Opening a real lab vmcore with missing, mismatched or partial debug info, or cut short: one clear
paragraph and a non-zero exit (or partial results with a warning), never a traceback.  The checks on
crafted files are in tests/target/test_opener.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

from skbinspect.target.debuginfo import elf_build_id
from tests.conftest import assert_clean_error, lab_kernel, run_skbinspect
from tests.vmcores.lab import LabVmcore


def test_missing_symbols_path(tmp_path: Path, default_lab_vmcore: LabVmcore) -> None:
    p = run_skbinspect("-c", default_lab_vmcore.vmcore, "-s", str(tmp_path / "nothing"), "info")
    assert_clean_error(p, "no such file or directory", code=2)


def test_no_vmlinux_debug_info_names_the_package(default_lab_vmcore: LabVmcore) -> None:
    lab = default_lab_vmcore
    # --types dwarf: without it the kernel's BTF stands in (tests/vmcores/test_btf.py)
    p = run_skbinspect("-c", lab.vmcore, "--no-default-symbols", "--types", "dwarf", "info")
    err = assert_clean_error(p, "no debug info", code=3)
    release = lab.truth["release"]
    assert f"apt-get install linux-image-{release}-dbg" in err
    assert "dbgsym" in err and "dnf debuginfo-install" in err


def test_mismatched_vmlinux_build_id(default_lab_vmcore: LabVmcore) -> None:
    from tests.vmcores.config import DEFAULT_KERNEL, KERNELS

    other = next(n for n in KERNELS if n != DEFAULT_KERNEL)
    wrong = lab_kernel(other).debug_vmlinux
    p = run_skbinspect(
        "-c", default_lab_vmcore.vmcore, "--no-default-symbols", "--types", "dwarf", "-s", wrong, "info"
    )
    err = assert_clean_error(p, "does not match", wrong, code=3)
    bid = elf_build_id(wrong)
    assert bid is not None and bid.hex() in err


def test_missing_module_debug_info_is_named_and_info_still_works(default_lab_vmcore: LabVmcore) -> None:
    lab = default_lab_vmcore
    p = run_skbinspect(
        "-c",
        lab.vmcore,
        "--no-default-symbols",
        "--types",
        "dwarf",
        "-s",
        lab.kernel.debug_vmlinux,
        "--json",
        "info",
    )
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert "tun" in info["missing_debug_info"] and "tap" in info["missing_debug_info"]
    assert any("module tun is loaded but has no debug info" in w for w in info["warnings"])


def test_truncated_vmcore_gives_partial_results(tmp_path: Path, default_lab_vmcore: LabVmcore) -> None:
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
