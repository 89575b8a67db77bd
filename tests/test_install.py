"""skbinspect installed the ways the README shows, in temporary directories: the "Install on a host"
blocks run as written (pipx, a venv under /opt), a built wheel checked for content and installed into a
fresh venv, and the live-host lab's copy of the interpreter when the tests run from a venv.

These tests need network access to the package index only (drgn, click and rich come from it, through
the host's pip configuration) and the Debian packages ``scripts/install-deps.sh --ci`` installs
(python3-venv, pipx).  What they need but cannot find makes them fail, never skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

from tests.vmcores.hostfs import PROJECT_DIR

pytestmark = pytest.mark.install

README = PROJECT_DIR / "README.md"
#: The PATH of a root shell on Debian: the system python3 and pipx, as an operator has them.
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: What an installed wheel may hold besides the package: nothing of the lab, the tests or the benches.
FORBIDDEN = re.compile(r"(^|/)(tests|bench|scripts|\.ci|vmcores)(/|$)|conftest|\.venv")

#: What proves the drgn plugin is registered, run by the installed interpreter: drgn's own plugin loader
#: finds the entry point and the %skbinspect command is in drgn's command namespace.
PLUGIN_CHECK = """
import importlib.metadata as md, sys
eps = md.entry_points(group="drgn.plugins") if sys.version_info >= (3, 10) else md.entry_points()["drgn.plugins"]
(ep,) = [e for e in eps if e.name == "skbinspect"]
assert ep.value == "skbinspect.drgn_plugin", ep.value
from _drgn_util.plugins import _load_plugins
names = [name for name, _ in _load_plugins()]
assert "skbinspect" in names, names
from drgn.commands import DEFAULT_COMMAND_NAMESPACE
assert "skbinspect" in DEFAULT_COMMAND_NAMESPACE._commands, sorted(DEFAULT_COMMAND_NAMESPACE._commands)
print("plugin ok")
"""


def _version() -> str:
    text = (PROJECT_DIR / "skbinspect" / "__init__.py").read_text()
    m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)", text, re.M)
    assert m, "skbinspect/__init__.py has no __version__"
    return m.group(1)


def _env(**extra: str) -> Dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_USER")
    }
    env["PATH"] = DEBIAN_PATH
    env.update(extra)
    return env


def _run(cmd: List[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def readme_install_blocks() -> Dict[str, str]:
    """The shell blocks of the README's "Install on a host" section, keyed "pipx" and "venv"."""
    text = README.read_text()
    m = re.search(r"^## Install on a host\n(.*?)^## ", text, re.M | re.S)
    assert m, "README has no '## Install on a host' section"
    blocks = re.findall(r"```sh\n(.*?)```", m.group(1), re.S)
    out = {}
    for b in blocks:
        out["pipx" if "pipx install" in b else "venv"] = b
    assert set(out) == {"pipx", "venv"}, f"expected a pipx and a venv block, found {blocks}"
    return out


def as_test_script(block: str, tmp: Path) -> str:
    """A README block made to run in ``tmp``: /opt and /usr/local/bin moved under it, ./skbinspect is the
    checkout, and apt-get lines checked (the packages must already be installed) instead of run."""
    lines = ["set -euxo pipefail"]
    for line in block.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("apt-get install"):
            pkgs = line.split()[2:]
            lines += [f"dpkg-query -W -f='${{Status}}\\n' {p} | grep -q 'install ok installed' "
                      f"|| {{ echo '{p} is not installed: run scripts/install-deps.sh --ci' >&2; exit 1; }}"
                      for p in pkgs]  # fmt: skip
            continue
        line = re.sub(r"(?<![\w.])/usr/local/bin\b", f"{tmp}/usr/local/bin", line)
        line = re.sub(r"(?<![\w.])/opt/", f"{tmp}/opt/", line)
        line = re.sub(r"(?<![\w/])\./skbinspect\b", str(PROJECT_DIR), line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_readme_block(name: str, tmp: Path) -> subprocess.CompletedProcess:
    (tmp / "usr/local/bin").mkdir(parents=True)
    (tmp / "opt").mkdir()
    script = as_test_script(readme_install_blocks()[name], tmp)
    env = _env(PATH=f"{tmp}/usr/local/bin:{DEBIAN_PATH}", HOME=str(tmp / "home"))
    return _run(["bash", "-c", script], env=env)


def test_readme_install_with_pipx(tmp_path: Path) -> None:
    p = run_readme_block("pipx", tmp_path)
    assert f"skbinspect, version {_version()}" in p.stdout, p.stdout
    exe = tmp_path / "usr/local/bin/skbinspect"
    assert exe.exists(), "pipx put no skbinspect into PIPX_BIN_DIR"
    venv_py = tmp_path / "opt/pipx/venvs/skbinspect/bin/python"
    assert _run([str(venv_py), "-c", PLUGIN_CHECK], env=_env()).stdout.strip() == "plugin ok"
    # the drgn next to it, as the README says, loads the plugin when it runs
    _run([str(tmp_path / "opt/pipx/venvs/skbinspect/bin/drgn"), "--version"], env=_env())


def test_readme_install_in_venv_under_opt(tmp_path: Path) -> None:
    p = run_readme_block("venv", tmp_path)
    assert f"skbinspect, version {_version()}" in p.stdout, p.stdout
    link = tmp_path / "usr/local/bin/skbinspect"
    assert link.is_symlink() and os.readlink(link) == f"{tmp_path}/opt/skbinspect/bin/skbinspect"
    venv_py = tmp_path / "opt/skbinspect/bin/python"
    # made by the system's python3, as on a Debian host (not by whatever runs the tests)
    base = _run([str(venv_py), "-c", "import sys; print(sys.base_prefix)"], env=_env()).stdout.strip()
    assert base == "/usr", f"the venv's base is {base}, not Debian's /usr"
    assert _run([str(venv_py), "-c", PLUGIN_CHECK], env=_env()).stdout.strip() == "plugin ok"
    # the CLI errors as a user sees them, through the installed script: a missing vmcore is exit 2
    p = subprocess.run([str(link), "-c", str(tmp_path / "nonexistent"), "info"], capture_output=True, text=True,
                       env=_env(), timeout=120)  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr


def test_wheel_content_and_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
          str(PROJECT_DIR)])  # fmt: skip
    (whl,) = dist.glob("skbinspect-*.whl")
    assert whl.name.startswith(f"skbinspect-{_version()}-py3-none-any"), whl.name
    names = zipfile.ZipFile(whl).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"skbinspect", f"skbinspect-{_version()}.dist-info"}, top
    assert not [n for n in names if FORBIDDEN.search(n)], [n for n in names if FORBIDDEN.search(n)]
    shipped = {n for n in names if n.startswith("skbinspect/") and n.endswith(".py")}
    in_tree = {str(p.relative_to(PROJECT_DIR)) for p in (PROJECT_DIR / "skbinspect").rglob("*.py")}
    assert shipped == in_tree, in_tree ^ shipped
    dist_info = f"skbinspect-{_version()}.dist-info"
    entry_points = zipfile.ZipFile(whl).read(f"{dist_info}/entry_points.txt").decode()
    assert re.search(r"^\[drgn\.plugins\]\nskbinspect = skbinspect\.drgn_plugin$", entry_points, re.M), (
        entry_points
    )
    assert re.search(r"^\[console_scripts\]\nskbinspect = skbinspect\.cli:main$", entry_points, re.M), (
        entry_points
    )

    # a fresh venv (the system python3, as on a Debian host); the dependencies come from the package index
    venv = tmp_path / "venv"
    _run(["/usr/bin/python3", "-m", "venv", str(venv)], env=_env())
    _run([str(venv / "bin/pip"), "install", "-q", str(whl)], env=_env(), cwd=str(tmp_path))
    p = _run([str(venv / "bin/skbinspect"), "--version"], env=_env(), cwd=str(tmp_path))
    assert p.stdout.strip() == f"skbinspect, version {_version()}", p.stdout
    # the installed copy is used, not the checkout
    where = _run([str(venv / "bin/python"), "-c", "import skbinspect; print(skbinspect.__file__)"], env=_env(),
                 cwd=str(tmp_path)).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)), where
    assert (
        _run([str(venv / "bin/python"), "-c", PLUGIN_CHECK], env=_env(), cwd=str(tmp_path)).stdout.strip()
        == "plugin ok"
    )
    _run([str(venv / "bin/drgn"), "--version"], env=_env(), cwd=str(tmp_path))


def test_host_image_python_from_venv(tmp_path: Path) -> None:
    """The live-host lab copies the interpreter running the tests into the guest: from a venv (as
    scripts/test.sh runs), the base interpreter and its standard library, and drgn, click, rich from the
    venv's site-packages into a site-packages the base interpreter searches.  The staged interpreter is
    run here, isolated from the host's own paths, and must import all of them from the stage."""
    from tests.vmcores.hostfs import _stage_python, python_prefix

    assert sys.prefix != sys.base_prefix, (
        "the suite runs in scripts/test.sh's venv (.venv); run it from there"
    )
    stage = tmp_path / "stage"
    stage.mkdir()
    _stage_python(stage)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    exe = stage / str(python_prefix() / "bin" / ver).lstrip("/")
    assert exe.exists()
    libdir = stage / str(python_prefix() / "lib").lstrip("/")
    code = ("import sys, drgn, click, rich, skbinspect, skbinspect.drgn_plugin\n"
            "for m in (drgn, click, rich, skbinspect): print(m.__file__)\n")  # fmt: skip
    env = {"PATH": DEBIAN_PATH, "LD_LIBRARY_PATH": str(libdir)}
    p = _run([str(exe), "-I", "-c", code], env=env)
    files = p.stdout.split()
    assert len(files) == 4 and all(f.startswith(str(stage)) for f in files), p.stdout
