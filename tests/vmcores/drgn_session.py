"""Run ``drgn`` itself on a lab vmcore, non-interactively, as a user of the drgn plugin would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, List, MutableMapping, Optional

from tests.vmcores.lab import LabVmcore

# drgn finds the plugin through the installed entry point but imports it by name: this checkout first
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _with_repo_path(env: MutableMapping[str, str]) -> None:
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)


def drgn_args(lab: LabVmcore) -> List[str]:
    """drgn's own options for a lab vmcore: the vmlinux, and the module tree as a kernel directory (drgn's
    ``-s`` takes files only)."""
    vmlinux, modules = lab.symbols
    return ["-c", lab.vmcore, "-s", vmlinux, "--kernel-directory", modules]


def run_drgn(lab: LabVmcore, code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``drgn -c VMCORE ... -e CODE`` in a separate process (``prog`` is the session's program)."""
    exe = shutil.which("drgn") or os.path.join(os.path.dirname(sys.executable), "drgn")
    env = dict(os.environ)
    env.pop("SKBINSPECT_DEBUG", None)
    _with_repo_path(env)
    return subprocess.run(
        [exe, "-q", *drgn_args(lab), "-e", code], capture_output=True, text=True, env=env, timeout=timeout
    )


def truth_kfree_counts(lab: LabVmcore) -> Dict[str, Dict[str, int]]:
    """The guest's own top-level trace text: kfree_skb count per location as printed (an address before
    6.x printed symbols, ``func+0xoff/0xsize [mod]`` after), and per (location, reason)."""
    import collections

    by_loc: collections.Counter = collections.Counter()
    by_loc_reason: collections.Counter = collections.Counter()
    for line in lab.truth["trace"]["top"]["trace"].splitlines():
        if "kfree_skb:" not in line or "location=" not in line:
            continue
        loc = line.split("location=", 1)[1].split()[0]
        reason = line.split("reason: ", 1)[1].strip() if "reason: " in line else None
        by_loc[loc] += 1
        by_loc_reason[f"{loc}|{reason}"] += 1
    return {"location": dict(by_loc), "location_reason": dict(by_loc_reason)}


def truth_callers_at(lab: LabVmcore, location: str) -> Dict[Optional[str], int]:
    """The guest's kfree_skb events printed at ``location``, counted by the device kind their stack shows
    (the first stack record after the event on its CPU: ``macvlan_*`` callers -> macvtap, ``ipvlan_*``
    -> ipvtap, neither or no stack -> None)."""
    import collections

    from tests.vmcores.test_trace import kv, parse_records, with_stacks

    counts: collections.Counter = collections.Counter()
    recs = with_stacks(parse_records(lab.truth["trace"]["top"]["trace"]))
    for r in recs:
        if r["event"] != "kfree_skb" or kv(r["body"]).get("location", "").split(" ")[0] != location:
            continue
        names = [f.split("+", 1)[0] for f in (r["stacks"][0] if r["stacks"] else [])]
        kinds = {
            k
            for p, k in (("macvlan_", "macvtap"), ("ipvlan_", "ipvtap"))
            if any(n.startswith(p) for n in names)
        }
        counts[kinds.pop() if len(kinds) == 1 else None] += 1
    return dict(counts)


def location_key(location_hex: str, location_symbol: str, printed: List[str]) -> str:
    """Which printed trace location is this one: the same address, or the same ``func+0xoff``."""
    addr = int(location_hex, 16)
    fn_off = location_symbol.split(" ", 1)[0]
    for p in printed:
        if p.startswith("0x") or all(c in "0123456789abcdef" for c in p):
            try:
                if int(p, 16) == addr:
                    return p
            except ValueError:
                pass
        elif p.split("/", 1)[0] == fn_off:
            return p
    raise AssertionError(
        f"location {location_symbol} ({location_hex}) is not in the guest's trace: {printed}"
    )


def drgn_repl(lab: LabVmcore, lines: List[str], timeout: float = 300, columns: int = 250) -> str:
    """Type ``lines`` into drgn's interactive REPL on a pseudo-terminal (as a person would, ``%`` commands
    included) and return everything it printed, ANSI escapes removed."""
    import fcntl
    import pty
    import re
    import select
    import signal
    import struct
    import termios
    import time

    exe = shutil.which("drgn") or os.path.join(os.path.dirname(sys.executable), "drgn")
    pid, fd = pty.fork()
    if pid == 0:  # the child: drgn on the terminal
        os.environ.pop("SKBINSPECT_DEBUG", None)
        _with_repo_path(os.environ)
        os.environ["TERM"] = "xterm"  # not "dumb": rich sizes a dumb terminal at 80 columns
        os.environ["COLUMNS"] = str(columns)  # rich sizes its tables by it (and by the window size below)
        os.execv(exe, [exe, "-q", *drgn_args(lab)])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    buf = b""
    deadline = time.monotonic() + timeout

    def until_prompt() -> None:
        """Read until the REPL waits at a fresh ``>>> `` prompt (and has been quiet for a moment)."""
        nonlocal buf
        start = len(buf)
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                tail = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", buf[start:])
                if tail.rstrip(b" ").endswith(b">>>"):
                    return
                continue
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                return
            if not data:
                return
            buf += data
        raise AssertionError(f"drgn REPL timed out; output so far: {buf[-2000:]!r}")

    try:
        until_prompt()
        for line in lines:
            os.write(fd, line.encode() + b"\n")
            until_prompt()
        os.write(fd, b"exit()\n")
        time.sleep(0.5)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    text = buf.decode(errors="replace").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
