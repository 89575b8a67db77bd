"""Build lab vmcores and their ground truth; boot live guests for QMP tests.

A *boot* runs one scenario script (guest/scenarios/NAME.sh) in a fresh guest.  The ``lab`` boot holds
the base scenarios (tun-full, tun-mq, macvtap-full, ipvtap-full, trace-instance) side by side, each with its own
devices and holder process, so one vmcore per kernel carries all of them with their truth.

Layout of one built vmcore (under ``<cache>/vmcores/<kernel>/<boot>-<key>/``):
  vmcore        ELF dump written by QEMU's dump-guest-memory (paused guest, -device vmcoreinfo)
  truth.json    the guest's own view, see parse_truth()
  out/          the raw files the guest captured
  console.log   the guest's console
  lab.json      manifest: kernel files, paths, key, timings
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .config import DEFAULT_KERNEL, KERNELS, cache_dir
from .hostfs import build_host_image, host_image_digest
from .initramfs import GUEST_DIR, build_initramfs, build_skblab, guest_sources_digest
from .kernels import KernelFiles, LabError, fetch_kernel
from .qemu import GUEST_SETTINGS, Guest
from .scenarios import CI_SEEDS, boot_name, generate, seed_of

__all__ = ["LabVmcore", "LiveGuest", "build_vmcore", "live_guest", "parse_truth", "LAB_FORMAT"]

log = logging.getLogger("lab")

#: Bump when the layout of a built vmcore directory or truth.json changes (or parse_truth does).
LAB_FORMAT = 1

BOOT_TIMEOUT = 600.0  # boot + scenario under TCG, generous for a loaded 2-core machine


@dataclass(frozen=True)
class BootSpec:
    """How a boot differs from a plain dump boot (a vmcore of a 256 MB guest taken at READY)."""

    dump: bool = True  # take a vmcore when the guest says READY
    memory_mb: int = 256
    host_image: bool = False  # attach the live-host image (hostfs.py) as /dev/vdc
    includes: Tuple[str, ...] = ()  # other scenario files the boot's script sources (/scenarios/NAME)
    out_disk_mb: int = 64
    done_timeout: float = 300.0  # from READY (or boot) to DONE
    runs: bool = False  # pass skblab_runs=N (host_runs()) on the kernel command line


#: Boots that are not plain dump boots.
BOOTS: Dict[str, BootSpec] = {
    # skbinspect inside the guest as on a Debian host (see host.sh); runs lab.sh's scenarios unchanged.
    # 1.5 GB: drgn indexes the 400-600 MB vmlinux debug file inside the guest.
    "host": BootSpec(
        dump=False,
        memory_mb=1536,
        host_image=True,
        includes=("lab.sh",),
        out_disk_mb=256,
        done_timeout=3000.0,
        runs=True,
    ),
}

#: Consecutive ``ring --entries --json`` runs with traffic flowing, inside the host guest.  Each run loads
#: the kernel's DWARF under TCG (12-25 s), so the full 50 run on the default kernel and a few elsewhere.
HOST_RUNS_DEFAULT_KERNEL = 50
HOST_RUNS_OTHER_KERNELS = 5


def boot_spec(boot: str) -> BootSpec:
    return BOOTS.get(boot, BootSpec())


def host_runs(kernel: KernelFiles) -> int:
    """How many race runs the host boot makes on ``kernel`` (``$SKBINSPECT_LAB_HOST_RUNS`` overrides)."""
    env = os.environ.get("SKBINSPECT_LAB_HOST_RUNS")
    if env:
        return int(env)
    return HOST_RUNS_DEFAULT_KERNEL if kernel.name == DEFAULT_KERNEL else HOST_RUNS_OTHER_KERNELS


#: Modules the random boots load besides GUEST_MODULES (a dummy as a macvlan/ipvlan lower device).
RANDOM_MODULES = ["dummy"]


def scenario_script(boot: str) -> bytes:
    """The script a boot runs: guest/scenarios/BOOT.sh, or for ``random-<seed>`` the generated one."""
    seed = seed_of(boot)
    if seed is not None:
        return generate(seed).script().encode()
    return (GUEST_DIR / "scenarios" / f"{boot}.sh").read_bytes()


def _append(kernel: KernelFiles, boot: str) -> str:
    """Extra kernel command line of a boot: ``name=value`` words reach the guest's init as variables."""
    return f"skblab_runs={host_runs(kernel)}" if boot_spec(boot).runs else ""


@dataclass
class LabVmcore:
    """A built lab vmcore with its ground truth and the debug files that match it."""

    kernel: KernelFiles
    boot: str
    dir: str
    vmcore: str
    truth_path: str
    key: str
    timings: Dict[str, float] = field(default_factory=dict)
    _truth: Optional[Dict[str, Any]] = field(default=None, repr=False)

    @property
    def truth(self) -> Dict[str, Any]:
        if self._truth is None:
            self._truth = json.loads(Path(self.truth_path).read_text())
        return self._truth

    @property
    def symbols(self) -> List[str]:
        """``-s`` arguments for skbinspect: the vmlinux and the module debug directory."""
        return [self.kernel.debug_vmlinux, self.kernel.debug_modules_dir]

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("_truth")
        d["kernel"] = self.kernel.to_json()
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "LabVmcore":
        d = dict(d)
        d["kernel"] = KernelFiles(**d["kernel"])
        return cls(**d)


def _key(kernel: KernelFiles, boot: str) -> str:
    """Cache key of a built vmcore: what decides its content (the kernel, the guest's sources and QEMU
    settings, the truth format), not the builder's own code, so editing the builder rebuilds nothing."""
    h = hashlib.sha256()
    h.update(f"{LAB_FORMAT}\0{kernel.release}\0{kernel.version}\0{boot}\0{GUEST_SETTINGS}\0".encode())
    seed = seed_of(boot)
    if seed is None:
        h.update(guest_sources_digest(boot).encode())
    else:
        h.update(guest_sources_digest(boot, scenario_script(boot)).encode())
        h.update(" ".join(RANDOM_MODULES).encode())
    spec = boot_spec(boot)
    if spec != BootSpec():
        h.update(repr(spec).encode())
        for inc in spec.includes:
            h.update(inc.encode() + b"\0" + (GUEST_DIR / "scenarios" / inc).read_bytes())
        if spec.host_image:
            h.update(host_image_digest().encode())
        h.update(_append(kernel, boot).encode())
    return h.hexdigest()[:12]


def _read_out_disk(img: Path, dest: Path) -> None:
    with tarfile.open(img, "r:") as tar:
        for m in tar.getmembers():
            if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                continue
            tar.extract(m, dest)


def _parse_holder_lines(text: str) -> Dict[str, Any]:
    """Parse a holder's info file and its drained/consumed frame logs."""
    out: Dict[str, Any] = {}
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["pid"]:
            out["pid"] = int(parts[1])
        elif parts[:1] == ["comm"]:
            out["comm"] = parts[1]
    return out


def _parse_frames(text: str) -> Dict[int, Dict[str, Any]]:
    queues: Dict[int, Dict[str, Any]] = {}
    for line in text.splitlines():
        m = re.match(r"queue (\d+) fd (\d+) (frame (\d+) ([0-9a-f]*)|error (\d+))$", line.strip())
        if not m:
            continue
        q = queues.setdefault(
            int(m.group(1)), {"index": int(m.group(1)), "fd": int(m.group(2)), "frames": []}
        )
        if m.group(4) is not None:
            q["frames"].append({"len": int(m.group(4)), "hex": m.group(5)})
        else:
            q["read_error"] = int(m.group(6))
    return queues


def parse_softnet_stat(text: str) -> List[List[int]]:
    return [[int(x, 16) for x in line.split()] for line in text.splitlines() if line.strip()]


def parse_truth(out: Path, kernel: KernelFiles) -> Dict[str, Any]:
    """Turn the guest's captured files into truth.json.

    Keys: release, cmdline, nproc, ip_link (``ip -j -s -s link``), softnet_stat (rows of ints, as
    printed), trace.top / trace.instances.NAME ({text, buffer_size_kb[, buffer_subbuf_size_kb]}),
    formats ("skb:kfree_skb": format file text), holders.NAME ({pid, comm, queues: [{index, fd,
    frames_drained: [{len, hex}], frames_consumed: [...]}]}), kernel (the Debian package facts);
    for the host boot also skbinspect.NAME ({rc, seconds, stderr, stdout or only stdout_path}: each
    skbinspect run inside the guest, see host.sh) and live_info (the taplive holder).
    """

    def read(rel: str) -> str:
        p = out / rel
        return p.read_text(errors="replace") if p.exists() else ""

    truth: Dict[str, Any] = {
        "format": LAB_FORMAT,
        "kernel": {"suite": kernel.suite, "release": kernel.release, "version": kernel.version},
        "release": read("release").strip(),
        "cmdline": read("cmdline").strip(),
        "nproc": int(read("nproc").strip() or 0),
        "ip_link": json.loads(read("ip-link.json") or "[]"),
        "ip_link_text": read("ip-link.txt"),
        "proc_net_dev": read("proc-net-dev"),
        "senders": read("senders"),
        "softnet_stat": parse_softnet_stat(read("softnet_stat")),
        "trace": {"top": {}, "instances": {}},
        "formats": {},
        "holders": {},
        # random boots: each CPU's ring buffer stats (stats.cpuN) and the tun/tap modules' kallsyms lines
        "extra": {p.name: p.read_text(errors="replace") for p in sorted((out / "extra").glob("*"))},
    }
    for sub in ("top",):
        d = out / "trace" / sub
        truth["trace"][sub] = (
            {p.name: p.read_text(errors="replace") for p in sorted(d.glob("*"))} if d.is_dir() else {}
        )
    inst_root = out / "trace" / "instances"
    if inst_root.is_dir():
        for d in sorted(inst_root.iterdir()):
            truth["trace"]["instances"][d.name] = {
                p.name: p.read_text(errors="replace") for p in sorted(d.glob("*"))
            }
    fmt_root = out / "formats"
    if fmt_root.is_dir():
        truth["formats"] = {p.name: p.read_text() for p in sorted(fmt_root.iterdir())}
    hold_root = out / "holders"
    if hold_root.is_dir():
        for d in sorted(hold_root.iterdir()):
            info_text = read(f"holders/{d.name}/info")
            h = _parse_holder_lines(info_text)
            queues = {
                int(m.group(1)): {"index": int(m.group(1)), "fd": int(m.group(2))}
                for m in re.finditer(r"^queue (\d+) fd (\d+)$", info_text, re.M)
            }
            drained = _parse_frames(read(f"holders/{d.name}/drained"))
            consumed = _parse_frames(read(f"holders/{d.name}/consumed"))
            for i, q in queues.items():
                q["frames_drained"] = drained.get(i, {}).get("frames", [])
                if "read_error" in drained.get(i, {}):
                    q["drain_error"] = drained[i]["read_error"]
                q["frames_consumed"] = consumed.get(i, {}).get("frames", [])
            h["queues"] = [queues[i] for i in sorted(queues)]
            h["replies"] = {p.stem: p.read_text().strip() for p in sorted(d.glob("*.reply"))}
            truth["holders"][d.name] = h
    runs = out / "skbinspect"
    if runs.is_dir():  # the host boot: skbinspect run inside the guest
        truth["skbinspect"] = {}
        for rc in sorted(runs.glob("*.rc")):
            name = rc.stem
            run: Dict[str, Any] = {
                "rc": int(rc.read_text().strip() or -1),
                "seconds": int(read(f"skbinspect/{name}.cs").strip() or 0) / 100,
                "stderr": read(f"skbinspect/{name}.err"),
                "stdout_path": f"out/skbinspect/{name}.out",
            }
            if not name.startswith("race-"):  # the 50 race outputs stay in their files (megabytes)
                run["stdout"] = read(f"skbinspect/{name}.out")
            truth["skbinspect"][name] = run
        truth["live_info"] = read("live-info")
    return truth


def _progress(kernel: KernelFiles, boot: str, line: str) -> None:
    """A guest's "STEP ..." control lines are its progress on long boots (the host boot's runs)."""
    if line.startswith("STEP "):
        log.info("%s/%s: %s", kernel.name, boot, line[5:])


def _boot_once(kernel: KernelFiles, boot: str, work: Path) -> Dict[str, float]:
    scenario = GUEST_DIR / "scenarios" / f"{boot}.sh"
    seed = seed_of(boot)
    if seed is not None:  # generated: the script next to the build, with its description
        scenario = work / f"{boot}.sh"
        scenario.write_bytes(scenario_script(boot))
        (work / "scenario.json").write_text(json.dumps(generate(seed).describe(), indent=1))
    spec = boot_spec(boot)
    timings: Dict[str, float] = {}
    t0 = time.monotonic()
    skblab = build_skblab(cache_dir() / "bin")
    extra = {f"scenarios/{inc}": (GUEST_DIR / "scenarios" / inc).read_bytes() for inc in spec.includes}
    initrd = build_initramfs(
        kernel,
        scenario,
        work / "initramfs.cpio",
        skblab,
        extra_modules=RANDOM_MODULES if seed is not None else None,
        extra_files=extra,
    )
    drives: List[Path] = []
    if spec.host_image:
        drives.append(build_host_image(kernel, work / "host.img"))
        timings["image_s"] = round(time.monotonic() - t0, 2)
    with Guest(
        work,
        kernel.vmlinuz,
        initrd,
        append=_append(kernel, boot),
        memory_mb=spec.memory_mb,
        out_disk_mb=spec.out_disk_mb,
        readonly_drives=drives,
    ) as g:
        g.start()
        if spec.dump:
            g.wait_for("READY", BOOT_TIMEOUT)
            timings["ready_s"] = round(time.monotonic() - t0, 2)
            timings["dump_s"] = round(g.dump(work / "vmcore"), 2)
            g.send("go")
        g.wait_for("DONE", spec.done_timeout, on_line=lambda line: _progress(kernel, boot, line))
        g.wait_exit(60)
    _read_out_disk(g.out_disk, work / "out")
    g.out_disk.unlink()
    for p in [work / "initramfs.cpio"] + drives:
        p.unlink()
    truth = parse_truth(work / "out", kernel)
    if truth["release"] != kernel.release:
        raise LabError(f"guest says release {truth['release']!r}, expected {kernel.release!r}")
    (work / "truth.json").write_text(json.dumps(truth, indent=1))
    timings["total_s"] = round(time.monotonic() - t0, 2)
    return timings


#: A work directory this old belongs to no running build or guest (a host boot takes under 30 minutes).
STALE_WORK_S = 6 * 3600


def sweep_stale_work(parent: Path, prefix: str) -> None:
    """Remove the work directories ``parent/prefix*`` of builds and live guests that were killed (Ctrl-C,
    a CI timeout) before they could rename or remove them: a host boot's is 700 MB."""
    for stale in parent.glob(f"{prefix}*"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_WORK_S:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # removed by another build meanwhile


def load_vmcore(kernel: KernelFiles, boot: str = "lab") -> Optional[LabVmcore]:
    """The cached vmcore of ``boot`` on ``kernel``, if it was built with the current sources."""
    manifest = cache_dir() / "vmcores" / kernel.name / f"{boot}-{_key(kernel, boot)}" / "lab.json"
    if manifest.exists():
        return LabVmcore.from_json(json.loads(manifest.read_text()))
    return None


def build_vmcore(kernel: KernelFiles, boot: str = "lab", retries: int = 1) -> LabVmcore:
    """Build (or reuse) the vmcore of ``boot`` on ``kernel``; retries a failed boot once."""
    cached = load_vmcore(kernel, boot)
    if cached:
        return cached
    key = _key(kernel, boot)
    final = cache_dir() / "vmcores" / kernel.name / f"{boot}-{key}"
    final.parent.mkdir(parents=True, exist_ok=True)
    # Older builds of the same boot are superseded: remove them so the cache does not grow.
    for old in final.parent.glob(f"{boot}-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    sweep_stale_work(final.parent, f".{boot}-")
    errors = []
    for attempt in range(retries + 1):
        work = Path(tempfile.mkdtemp(prefix=f".{boot}-", dir=final.parent))
        try:
            timings = _boot_once(kernel, boot, work)
        except LabError as e:
            errors.append(str(e))
            log.warning("%s/%s: boot %d failed: %s", kernel.name, boot, attempt + 1, str(e).splitlines()[0])
            failed = final.parent / f".failed-{boot}"
            shutil.rmtree(failed, ignore_errors=True)
            work.rename(failed)
            continue
        lab = LabVmcore(
            kernel, boot, str(final), str(final / "vmcore"), str(final / "truth.json"), key, timings
        )
        (work / "lab.json").write_text(json.dumps(lab.to_json(), indent=2))
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        return lab
    raise LabError(
        f"{kernel.name} ({kernel.release}): the {boot} guest failed {len(errors)} times "
        f"(logs in {final.parent / ('.failed-' + boot)}):\n" + "\n---\n".join(errors)
    )


#: The random boots CI builds on every kernel (scenarios.CI_SEEDS).
CI_RANDOM_BOOTS = [boot_name(s) for s in CI_SEEDS]

#: The boots the test suite uses (built by ``python -m tests.vmcores build`` by default).
TEST_BOOTS = ["lab", "vhost", "offlab", "host"] + CI_RANDOM_BOOTS


def build(names: List[str], boots: List[str] = TEST_BOOTS, jobs: int = 2) -> List[LabVmcore]:
    """Fetch kernels and build the vmcores of ``boots`` for ``names``, ``jobs`` guests at a time."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    locks = {name: threading.Lock() for name in names}
    kernels: Dict[str, KernelFiles] = {}

    def kernel(name: str) -> KernelFiles:
        with locks[name]:  # fetch each kernel once, even with several boots in flight
            if name not in kernels:
                kernels[name] = fetch_kernel(KERNELS[name])
            return kernels[name]

    def one(job: "tuple[str, str]") -> LabVmcore:
        name, boot = job
        t = time.monotonic()
        k = kernel(name)
        lab = build_vmcore(k, boot)
        log.info("%s/%s: %s ready in %.0f s (%s)", name, boot, k.release, time.monotonic() - t, lab.dir)
        return lab

    # Longest first, so the slowest guest (the default kernel's host boot, with its 50 skbinspect runs
    # under TCG) does not start last and keep one worker busy alone at the end.
    jobs_list = [(n, b) for b in boots for n in names]
    jobs_list.sort(key=lambda j: (boot_spec(j[1]).runs, j[0] == DEFAULT_KERNEL), reverse=True)
    with ThreadPoolExecutor(max(1, jobs)) as ex:
        return list(ex.map(one, jobs_list))


# ---- live guests (QMP) -------------------------------------------------------------------------------


@dataclass
class LiveGuest:
    """A running lab guest: read it with ``skbinspect --qemu <qmp_socket>``."""

    kernel: KernelFiles
    qmp_socket: str
    info: Dict[str, Any]
    guest: Guest

    @property
    def symbols(self) -> List[str]:
        return [self.kernel.debug_vmlinux, self.kernel.debug_modules_dir]


@contextmanager
def live_guest(kernel: KernelFiles, boot: str = "live", retries: int = 1) -> Iterator[LiveGuest]:
    """Boot ``boot`` and keep it running (traffic flowing) while the caller reads it over QMP.
    A guest that fails to come up (a TCG boot panic) is retried once."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    sweep_stale_work(cache_dir(), f"live-{kernel.name}-")
    for attempt in range(retries + 1):
        work = Path(tempfile.mkdtemp(prefix=f"live-{kernel.name}-", dir=cache_dir()))
        try:
            skblab = build_skblab(cache_dir() / "bin")
            initrd = build_initramfs(
                kernel, GUEST_DIR / "scenarios" / f"{boot}.sh", work / "initramfs.cpio", skblab
            )
            with Guest(work, kernel.vmlinuz, initrd) as g:
                try:
                    g.start()
                    line = g.wait_for("INFO", BOOT_TIMEOUT)
                    g.wait_for("READY", 120)
                except LabError as e:
                    if attempt < retries:
                        log.warning(
                            "%s/%s: live guest failed, retrying: %s",
                            kernel.name,
                            boot,
                            str(e).splitlines()[0],
                        )
                        continue
                    raise
                info: Dict[str, Any] = {"raw": line}
                m = re.search(r"pid (\d+)", line)
                if m:
                    info["pid"] = int(m.group(1))
                # drgn's QMP reader and ours must not share the socket: give drgn its own.
                g.qmp.close()  # type: ignore[union-attr]
                g.qmp = None
                yield LiveGuest(kernel, str(g.qmp_path), info, g)
                return
        finally:
            shutil.rmtree(work, ignore_errors=True)
