"""The README's first command on a freshly installed Debian, as a new user runs it.

A Debian root made by ``debootstrap --variant=minbase`` with only ``python3 git ca-certificates`` (the
debootstrap output is cached as a tarball under the lab cache, keyed by suite and package list), the
checkout cloned into it, and ``./scripts/quickstart.sh`` run there with ``chroot``.  The root reaches the
same apt archive and package index as the host: the host's apt sources, their keyrings and its
``Acquire`` settings, its pip configuration (and the local index and wheel directories it names, bind
mounted), its local CA certificates and resolver are carried over, whatever they are.  QEMU runs inside,
so /proc, /sys and /dev are mounted; the host's lab cache is bind-mounted at the same path, so the lab
vmcore is reused when its cache key matches (it depends on the kernel, the guest's sources and settings,
not on the checkout's path or the host's tools).

Checked: the report's verdicts are printed, the tool is in the checkout's .venv, and nothing was
installed into the root's system Python (every dist-info there belongs to a Debian package; no pip).

Needs root, debootstrap (``scripts/install-deps.sh --ci``) and the network to the archive and the index.
Anything missing makes it fail, never skip.  Timings go to stdout (``-s`` or ``-rP`` shows them).
"""

from __future__ import annotations

import configparser
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

import pytest

from tests.vmcores.config import cache_dir
from tests.vmcores.hostfs import PROJECT_DIR
from tests.vmcores.kernels import KEYRING, debian_mirror

pytestmark = pytest.mark.fresh_root

#: What the fresh machine has besides minbase: exactly what the issue's new user had.
PACKAGES = ["python3", "git", "ca-certificates"]
#: Suites tested (Debian 12 and 13).
SUITES = ["bookworm", "trixie"]
#: A cached debootstrap root older than this is made again (security updates, new point releases).
ROOT_MAX_AGE_S = 30 * 86400
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Where the clone goes inside the root, and where the quick start's cache is by default there.
CLONE = "/root/skbinspect"
ROOT_DEFAULT_CACHE = "/root/.cache/skbinspect-lab"
#: Environment carried into the chroot: pip's, certificates', proxies' (the machine's own configuration).
ENV_PASS = re.compile(r"^(PIP_\w+|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|GIT_SSL_CAINFO"
                      r"|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY|SKBINSPECT_LAB_MIRROR)$")  # fmt: skip
#: pip settings whose values may name local files or directories (file:// indexes, find-links, certs).
PIP_PATH_KEYS = {
    "index-url",
    "extra-index-url",
    "find-links",
    "cert",
    "client-cert",
    "constraint",
    "requirement",
}


def _run(cmd: List[str], timeout: float = 1800, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}", pytrace=False
        )
    return p


def _need(tool: str, pkg: str) -> str:
    exe = shutil.which(tool, path=DEBIAN_PATH + ":" + os.environ.get("PATH", ""))
    if not exe:
        pytest.fail(f"{tool} is missing: apt-get install {pkg} (scripts/install-deps.sh --ci)", pytrace=False)
    return exe


def host_codename() -> str:
    text = Path("/etc/os-release").read_text()
    m = re.search(r"^VERSION_CODENAME=\"?(\w+)", text, re.M)
    return m.group(1) if m else ""


# ---- the cached debootstrap root -------------------------------------------------------------------


def base_root(suite: str, timings: Dict[str, float]) -> Path:
    """A tarball of ``debootstrap --variant=minbase --include=python3,git,ca-certificates SUITE`` (cached)."""
    debootstrap = _need("debootstrap", "debootstrap")
    what = f"minbase\0{suite}\0{','.join(PACKAGES)}\0{debian_mirror()}"
    key = hashlib.sha256(what.encode()).hexdigest()[:12]
    d = cache_dir() / "roots"
    d.mkdir(parents=True, exist_ok=True)
    tar = d / f"{suite}-minbase-{key}.tar.zst"
    if tar.exists() and time.time() - tar.stat().st_mtime < ROOT_MAX_AGE_S:
        return tar
    for old in d.glob(f"{suite}-minbase-*.tar.zst"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix=f".{suite}-", dir=d))
    try:
        t0 = time.monotonic()
        _run([debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}",
              *([f"--keyring={KEYRING}"] if os.path.exists(KEYRING) else []),
              suite, str(work / "root"), debian_mirror()], timeout=1800)  # fmt: skip
        timings["debootstrap_s"] = time.monotonic() - t0
        tar_cmd = [
            "tar",
            "--zstd",
            "--numeric-owner",
            "-C",
            str(work / "root"),
            "-cf",
            str(work / "root.tar.zst"),
        ]
        _run([*tar_cmd, "."])
        (work / "root.tar.zst").rename(tar)
    finally:
        _rm_root(work)
    return tar


def _mounts_under(path: Path) -> List[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].encode().decode("unicode_escape")
        if (mnt + "/").startswith(prefix):
            out.append(mnt)
    return out


def _rm_root(path: Path) -> None:
    """Remove a root directory, but never while anything is mounted below it (that would delete the
    host's /dev or lab cache through the bind mounts)."""
    if not path.exists():
        return
    left = _mounts_under(path)
    if left:
        raise RuntimeError(f"not removing {path}: still mounted below it: {left}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


# ---- carrying the host's configuration over --------------------------------------------------------


def _copy_in(root: Path, src: str, overwrite: bool = True) -> None:
    s = Path(src)
    dest = root / src.lstrip("/")
    if not s.exists() or (dest.exists() and not overwrite):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if s.is_dir():
        shutil.copytree(s, dest, dirs_exist_ok=True, symlinks=True)
    else:
        if dest.is_symlink():
            dest.unlink()
        shutil.copy2(s, dest)


def _apt_source_files() -> List[Path]:
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def carry_apt(root: Path, suite: str) -> None:
    """The host's apt sources (suite names rewritten when the root is another suite), the keyrings they
    name and the trusted keys (when the root lacks them), and the host's ``Acquire`` settings."""
    host = host_codename()
    etc = root / "etc/apt"
    (etc / "sources.list").unlink(missing_ok=True)  # debootstrap's own; the host's replace it
    keyrings: Set[str] = set()
    for f in _apt_source_files():
        text = f.read_text()
        keyrings |= set(re.findall(r"^Signed-By:\s*(/\S+)", text, re.M | re.I))
        keyrings |= set(re.findall(r"signed-by=(/[^\s\]]+)", text, re.I))
        if host and suite != host:
            text = re.sub(rf"(?<![\w-]){re.escape(host)}(?=[\s-]|$)", suite, text, flags=re.M)
        dest = root / str(f).lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
    for k in sorted(keyrings):
        _copy_in(root, k, overwrite=False)
    for k in glob.glob("/etc/apt/trusted.gpg.d/*") + ["/etc/apt/trusted.gpg"]:
        _copy_in(root, k, overwrite=False)
    for c in sorted(Path("/etc/apt/apt.conf.d").glob("*")):
        text = c.read_text(errors="replace") if c.is_file() else ""
        if re.search(r"^\s*Acquire", text, re.M) and "Invoke" not in text:  # no hooks calling host tools
            _copy_in(root, str(c), overwrite=False)


def _pip_config_files() -> List[str]:
    home = os.path.expanduser("~")
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    files = ["/etc/pip.conf", *[f"{d}/pip/pip.conf" for d in xdg_dirs], f"{home}/.pip/pip.conf",
             f"{os.environ.get('XDG_CONFIG_HOME') or home + '/.config'}/pip/pip.conf"]  # fmt: skip
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    return [f for f in files if os.path.isfile(f)]


def _pip_local_paths(config_files: List[str]) -> Set[str]:
    """Local files and directories the pip configuration (files and PIP_* variables) names."""
    values: List[str] = []
    for f in config_files:
        cp = configparser.RawConfigParser()
        try:
            cp.read(f)
        except configparser.Error:
            continue
        for section in cp.sections():
            for k, v in cp.items(section):
                if k.replace("_", "-") in PIP_PATH_KEYS:
                    values += v.split()
    for k, v in os.environ.items():
        if k.startswith("PIP_") and k[4:].lower().replace("_", "-") in PIP_PATH_KEYS:
            values += v.split()
    out = set()
    for v in values:
        if v.startswith("file://"):
            v = v[len("file://") :]
        if v.startswith("/") and os.path.exists(v):
            out.add(v)
    return out


def carry_network_config(root: Path) -> List[str]:
    """Resolver, local CA certificates, pip configuration: copied in.  Returns the local directories the
    pip configuration names (indexes, find-links), to be bind-mounted read-only."""
    for f in ("/etc/resolv.conf", "/etc/hosts"):
        if os.path.exists(f):  # a plain file in the root, even where the host's is a symlink
            dest = root / f.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_symlink():
                dest.unlink()
            shutil.copyfile(os.path.realpath(f), dest)
    _copy_in(root, "/usr/local/share/ca-certificates")
    configs = _pip_config_files()
    home = os.path.expanduser("~")
    for f in configs:
        at = "/root" + f[len(home) :] if f.startswith(home + "/") else f
        dest = root / at.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    if os.path.isdir("/etc/xdg/pip"):
        _copy_in(root, "/etc/xdg/pip")
    dirs: Set[str] = set()
    for p in sorted(_pip_local_paths(configs)):
        if os.path.isdir(p):
            dirs |= _local_index_dirs(p)
        else:
            _copy_in(root, p)
    out: List[str] = []
    for d in sorted(dirs):  # a directory inside one already bound needs no mount of its own
        if not any(d == o or d.startswith(o.rstrip("/") + "/") for o in out):
            out.append(d)
    return out


def _local_index_dirs(d: str, sample: int = 20) -> Set[str]:
    """What a local pip index (or find-links directory) needs: the directory itself and where its
    project pages link to (a "simple" index often links to ../../files/...), found from a sample of
    its pages; as one common directory when they share a parent below /."""
    links: Set[str] = set()
    for page in sorted(Path(d).glob("*/index.html"))[:sample]:
        for href in re.findall(r'href="([^"#]+)', page.read_text(errors="replace")):
            if href.startswith("file://"):
                target = href[len("file://") :]
            elif re.match(r"^[a-z]+://", href):
                continue
            else:
                target = os.path.normpath(os.path.join(page.parent, href))
            links.add(os.path.dirname(target))
    common = os.path.commonpath([d, *links])
    if common.count("/") >= 2 or (common != "/" and not links - {common}):
        return {common}
    return {d, *links}


def chroot_env(cache: Path) -> Dict[str, str]:
    env = {"HOME": "/root", "PATH": DEBIAN_PATH, "LANG": "C.UTF-8", "TERM": "dumb", "USER": "root"}
    env.update({k: v for k, v in os.environ.items() if ENV_PASS.match(k)})
    if str(cache) != ROOT_DEFAULT_CACHE:
        env["SKBINSPECT_LAB_CACHE"] = str(cache)
    return env


# ---- mounts ------------------------------------------------------------------------------------------


class Mounts:
    """Mounts below a root, undone (lazily, in reverse order) however the test ends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: List[Path] = []

    def _target(self, at: str) -> Path:
        t = self.root / at.lstrip("/")
        t.mkdir(parents=True, exist_ok=True)
        return t

    def mount(self, *args: str, at: str) -> Path:
        t = self._target(at)
        subprocess.run(["mount", *args, str(t)], check=True, capture_output=True, text=True)
        self.done.append(t)
        return t

    def bind(self, src: str, at: Optional[str] = None, ro: bool = False, recursive: bool = False) -> None:
        t = self.mount("--rbind" if recursive else "--bind", src, at=at or src)
        subprocess.run(["mount", "--make-rslave", str(t)], check=True, capture_output=True)
        if ro:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(t)], check=True, capture_output=True)

    def undo(self) -> None:
        for t in reversed(self.done):
            subprocess.run(["umount", "-l", str(t)], capture_output=True)
        self.done.clear()


@pytest.fixture
def fresh_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dict]:  # type: ignore[type-arg]
    suite = request.param
    if os.geteuid() != 0:
        pytest.fail("the fresh-root test needs root (debootstrap, chroot, mounts)", pytrace=False)
    _need("chroot", "coreutils")
    timings: Dict[str, float] = {}
    tar = base_root(suite, timings)
    root = tmp_path / "root"
    root.mkdir()
    mounts = Mounts(root)
    try:
        t0 = time.monotonic()
        _run(["tar", "--zstd", "--numeric-owner", "-xpf", str(tar), "-C", str(root)])
        timings["extract_s"] = time.monotonic() - t0
        carry_apt(root, suite)
        pip_dirs = carry_network_config(root)
        # the host's local CAs, in the root's bundle
        _run(["chroot", str(root), "update-ca-certificates"], env={"PATH": DEBIAN_PATH})
        yield {"suite": suite, "root": root, "mounts": mounts, "pip_dirs": pip_dirs, "timings": timings}
    finally:
        mounts.undo()
        _rm_root(root)


def _python_dists(root: Path) -> List[str]:
    """dist-info / egg-info entries of the root's system Python (Debian's and /usr/local's)."""
    pats = ["usr/lib/python3*/**/*.dist-info", "usr/lib/python3*/**/*.egg-info",
            "usr/local/lib/python3*/**/*.dist-info", "usr/local/lib/python3*/**/*.egg-info"]  # fmt: skip
    out = set()
    for pat in pats:
        out |= {"/" + str(Path(p).relative_to(root)) for p in glob.glob(str(root / pat), recursive=True)}
    return sorted(out)


def _dpkg_owned(root: Path) -> Set[str]:
    owned: Set[str] = set()
    for f in (root / "var/lib/dpkg/info").glob("*.list"):
        owned |= set(f.read_text(errors="replace").splitlines())
    return owned


@pytest.mark.timeout(5400)
@pytest.mark.parametrize("fresh_root", SUITES, indirect=True)
def test_readme_quickstart_in_fresh_debian_root(fresh_root: Dict) -> None:  # type: ignore[type-arg]
    root: Path = fresh_root["root"]
    mounts: Mounts = fresh_root["mounts"]
    timings: Dict[str, float] = fresh_root["timings"]
    before = _python_dists(root)
    assert not [d for d in before if d.startswith("/usr/local/")], before

    # the checkout, as a new user gets it: git clone (plus the tracked changes not yet committed here)
    clone = root / CLONE.lstrip("/")
    _run(["git", "clone", "-q", "--no-hardlinks", str(PROJECT_DIR), str(clone)])
    diff = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "diff", "HEAD", "--binary"], capture_output=True, check=True
    ).stdout
    if diff.strip():
        subprocess.run(["git", "-C", str(clone), "apply", "--whitespace=nowarn", "-"], input=diff, check=True)
    head = _run(["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"]).stdout.strip()
    assert _run(["git", "-C", str(clone), "rev-parse", "HEAD"]).stdout.strip() == head

    # what QEMU and the lab need inside, and the host's package index and lab cache
    mounts.mount("-t", "proc", "proc", at="/proc")
    mounts.bind("/sys", recursive=True)
    mounts.bind("/dev", recursive=True)
    for d in fresh_root["pip_dirs"]:
        mounts.bind(d, ro=True)
    cache = cache_dir().resolve()
    cache.mkdir(parents=True, exist_ok=True)
    mounts.bind(str(cache))
    (root / "tmp").chmod(0o1777)

    env = chroot_env(cache)
    log = root.parent / "quickstart.log"
    t0 = time.monotonic()
    with open(log, "w") as out:
        p = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in env.items()],
                            "chroot", str(root), "/bin/bash", "-c", f"cd {CLONE} && ./scripts/quickstart.sh"],
                           stdout=out, stderr=subprocess.STDOUT, timeout=5000)  # fmt: skip
    timings["quickstart_s"] = time.monotonic() - t0
    text = log.read_text(errors="replace")
    print(f"\nfresh {fresh_root['suite']} root: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    assert p.returncode == 0, (
        f"quickstart.sh failed ({p.returncode}) in the fresh {fresh_root['suite']} root:\n{text[-5000:]}"
    )

    # the report, with its verdicts: the lab's full tap ring among them
    assert re.search(r"^skbinspect report \(", text, re.M), text[-5000:]
    verdicts = text.split("\nVerdicts\n", 1)
    assert len(verdicts) == 2, text[-5000:]
    assert re.search(r"^\s+FULL tap0 queue 0 full", verdicts[1], re.M), verdicts[1][:5000]
    assert "Traceback" not in text, text[-5000:]

    # the tool is in the checkout's venv, made by the root's own python3
    p = _run(["chroot", str(root), f"{CLONE}/.venv/bin/skbinspect", "--version"], env=env)
    assert p.stdout.startswith("skbinspect, version"), p.stdout
    base = _run(["chroot", str(root), f"{CLONE}/.venv/bin/python", "-c", "import sys; print(sys.base_prefix)"],
                env=env).stdout.strip()  # fmt: skip
    assert base == "/usr", base

    # nothing went into the system Python: every dist-info there is a Debian package's, and no pip
    after = _python_dists(root)
    owned = _dpkg_owned(root)
    foreign = [d for d in after if d not in owned]
    assert not foreign, f"installed into the system Python, not by apt: {foreign}"
    p = subprocess.run(["chroot", str(root), "/usr/bin/python3", "-c", "import pip"], capture_output=True, text=True,
                       env=env)  # fmt: skip
    assert p.returncode != 0 and "No module named" in p.stderr, "pip is importable by the system python3"
