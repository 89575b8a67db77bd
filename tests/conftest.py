"""Fixtures for the real-kernel lab.

``lab_vmcore`` is parametrised over the lab kernels (``SKBINSPECT_LAB_KERNELS``, default all four) and
builds what is missing on first use (cached under ``SKBINSPECT_LAB_CACHE``).  A lab that cannot be built
makes the test fail with the reason: lab tests never skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from tests.vmcores.config import KERNELS, kernel_names
from tests.vmcores.kernels import KernelFiles, LabError, fetch_kernel
from tests.vmcores.lab import LabVmcore, LiveGuest, build_vmcore, live_guest

_kernels: Dict[str, KernelFiles] = {}
_vmcores: Dict[str, LabVmcore] = {}


def lab_kernel(name: str) -> KernelFiles:
    if name not in _kernels:
        try:
            _kernels[name] = fetch_kernel(KERNELS[name])
        except LabError as e:
            pytest.fail(f"lab kernel {name} unavailable: {e}", pytrace=False)
    return _kernels[name]


def lab_vmcore_for(name: str) -> LabVmcore:
    if name not in _vmcores:
        try:
            _vmcores[name] = build_vmcore(lab_kernel(name))
        except LabError as e:
            pytest.fail(f"lab vmcore for {name} could not be built: {e}", pytrace=False)
    return _vmcores[name]


_LAB_TESTS = Path(__file__).parent / "vmcores"


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Every test under tests/vmcores needs the real-kernel lab: mark it ``lab``, so that
    ``pytest -m "not lab"`` (or ``pytest tests --ignore=tests/vmcores``) runs only the pure tests."""
    for item in items:
        if _LAB_TESTS in Path(str(item.fspath)).parents or item.get_closest_marker("fresh_root"):
            item.add_marker(pytest.mark.lab)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lab_kernel_name" in metafunc.fixturenames:
        metafunc.parametrize("lab_kernel_name", kernel_names(), scope="session")


@pytest.fixture(scope="session")
def lab_vmcore(lab_kernel_name: str) -> LabVmcore:
    """A built lab vmcore (``lab`` boot: tun-full, tun-mq, macvtap-full, ipvtap-full, trace-instance) with its truth."""
    return lab_vmcore_for(lab_kernel_name)


_host_labs: Dict[str, LabVmcore] = {}


@pytest.fixture(scope="session")
def live_host_lab(lab_kernel_name: str) -> LabVmcore:
    """The ``host`` boot of a lab kernel: skbinspect run inside the guest with no options (its outputs in
    ``.truth["skbinspect"]``), on the lab scenarios, with the guest's own view as truth."""
    if lab_kernel_name not in _host_labs:
        try:
            _host_labs[lab_kernel_name] = build_vmcore(lab_kernel(lab_kernel_name), "host")
        except LabError as e:
            pytest.fail(f"live-host lab for {lab_kernel_name} could not be built: {e}", pytrace=False)
    return _host_labs[lab_kernel_name]


@pytest.fixture(scope="session")
def default_lab_vmcore() -> LabVmcore:
    """The lab vmcore of the default kernel (for tests that need one real dump, not all four)."""
    from tests.vmcores.config import DEFAULT_KERNEL

    return lab_vmcore_for(DEFAULT_KERNEL)


@pytest.fixture(scope="module")
def live_lab_guest(lab_kernel_name: str) -> Iterator[LiveGuest]:
    """A running lab guest (``live`` boot, traffic flowing) to read over QMP."""
    try:
        with live_guest(lab_kernel(lab_kernel_name)) as g:
            yield g
    except LabError as e:
        pytest.fail(f"live lab guest for {lab_kernel_name} failed: {e}", pytrace=False)


def run_skbinspect(
    *args: str, env: Dict[str, str] = None, user: str = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the skbinspect CLI as a user would (a separate process), capturing its output."""
    cmd: List[str] = [sys.executable, "-m", "skbinspect", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    full_env = dict(os.environ)
    full_env.pop("SKBINSPECT_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def assert_clean_error(p: subprocess.CompletedProcess, *needles: str, code: Optional[int] = None) -> str:
    """The process failed with a message containing ``needles`` and printed no traceback."""
    assert p.returncode != 0, p.stdout
    if code is not None:
        assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert p.stderr.startswith("skbinspect: error: "), p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)
    return p.stderr


@pytest.fixture(scope="module")
def default_live_guest() -> Iterator[LiveGuest]:
    """A running guest of the default kernel (for long live tests run on one kernel)."""
    from tests.vmcores.config import DEFAULT_KERNEL

    try:
        with live_guest(lab_kernel(DEFAULT_KERNEL)) as g:
            yield g
    except LabError as e:
        pytest.fail(f"live lab guest for {DEFAULT_KERNEL} failed: {e}", pytrace=False)
