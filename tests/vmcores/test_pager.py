"""The pager on a real pseudo-terminal, as git's: long text on a terminal goes through ``less -FRX`` (or
``$SKBINSPECT_PAGER`` / ``$PAGER``); never with --no-pager, --json, -o, a pipe, or inside drgn; a pager
that cannot run is a warning and the output is printed unpaged."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from tests.vmcores.lab import LabVmcore
from tests.vmcores.test_lab_info import symbols_args


def on_pty(
    lab: LabVmcore, args: List[str], env: Dict[str, Optional[str]], keys: bytes = b"", rows: int = 24
) -> Tuple[int, str]:
    """skbinspect on a pseudo-terminal 120 columns wide with ``env`` (None: unset); ``keys`` are typed
    once it has printed something.  Returns its exit status and what the terminal got (\\r\\n as \\n)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    from tests.vmcores.drgn_session import REPO

    pid, fd = pty.fork()
    if pid == 0:
        for k in ("SKBINSPECT_DEBUG", "SKBINSPECT_PAGER", "PAGER", "LESS"):
            os.environ.pop(k, None)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.environ.update(COLUMNS="120", TERM="xterm", PYTHONPATH=REPO, LINES=str(rows))
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 120, 0, 0))
        os.execv(
            sys.executable,
            [sys.executable, "-m", "skbinspect", "-c", lab.vmcore, *symbols_args(lab.symbols), *args],
        )
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 120, 0, 0))
    buf = b""
    deadline = time.monotonic() + 300
    typed = not keys
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 2.0)
        if not r:
            if not typed and buf:  # it printed a screen and waits (less): type the keys
                os.write(fd, keys)
                typed = True
            continue
        try:
            data = os.read(fd, 1 << 16)
        except OSError:
            break
        if not data:
            break
        buf += data
    else:
        os.kill(pid, 9)
        raise AssertionError(f"skbinspect {args} on a terminal did not end: {buf[-2000:]!r}")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), buf.decode(errors="replace").replace("\r\n", "\n")


def visible(terminal: str) -> str:
    """The terminal's text as left on the screen: a line erased by ``\\r ESC[K`` (progress) is gone,
    other escapes removed."""
    text = re.sub(r"[^\n]*\r\x1b\[K", "", terminal)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]", "", text)


def recorder(tmp_path: Path) -> Tuple[str, Path]:
    """A pager that keeps what it is given in a file, then prints a marker."""
    rec = tmp_path / "paged.txt"
    return f"sh -c {shlex.quote(f'cat > {rec}; echo PAGER-ENDED')}", rec


def piped(lab: LabVmcore, *args: str) -> str:
    from tests.conftest import run_skbinspect

    p = run_skbinspect("-c", lab.vmcore, *symbols_args(lab.symbols), *args)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_text_on_a_terminal_goes_through_the_pager(lab_vmcore: LabVmcore, tmp_path: Path) -> None:
    """The pager gets the terminal's rendering (tables with borders at 120 columns), all of it; progress
    lines on stderr were erased before the pager took the terminal."""
    pager, rec = recorder(tmp_path)
    code, term = on_pty(lab_vmcore, ["ring", "-e"], {"SKBINSPECT_PAGER": pager, "PAGER": "nonexistent"})
    assert code == 0 and "Traceback" not in term, term[-2000:]
    assert "PAGER-ENDED" in term
    paged = rec.read_text()
    assert any(0x2500 <= ord(c) <= 0x257F for c in paged)  # a terminal's tables, for less -R
    plain = piped(lab_vmcore, "ring", "-e")
    names = [line.split()[0] for line in plain.splitlines() if " ifindex " in line]
    assert names and all(n in paged for n in names)
    # $PAGER when $SKBINSPECT_PAGER is not set; trace's progress is not left on the screen
    code, term = on_pty(lab_vmcore, ["trace", "--all-instances"], {"PAGER": pager})
    assert code == 0 and "PAGER-ENDED" in term, term[-2000:]
    assert "sub-buffers" not in visible(term), visible(term)[:2000]
    assert rec.read_text() == piped(lab_vmcore, "trace", "--all-instances")  # trace writes the same text


@pytest.mark.parametrize(
    "args",
    [["--no-pager", "ring", "-e"], ["ring", "-e", "--no-pager"], ["--json", "ring"], ["ring", "-o", "-"]],
)
def test_no_pager(lab_vmcore: LabVmcore, tmp_path: Path, args: List[str]) -> None:
    pager, rec = recorder(tmp_path)
    if "-o" in args:  # -o FILE: the file has it, nothing is paged
        args = [a if a != "-" else str(tmp_path / "out.txt") for a in args]
    code, term = on_pty(lab_vmcore, args, {"SKBINSPECT_PAGER": pager})
    assert code == 0 and "Traceback" not in term, term[-2000:]
    assert not rec.exists() and "PAGER-ENDED" not in term


def test_no_pager_when_piped_or_empty(lab_vmcore: LabVmcore, tmp_path: Path) -> None:
    pager, rec = recorder(tmp_path)
    from tests.conftest import run_skbinspect

    p = run_skbinspect(
        "-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "ring", env={"SKBINSPECT_PAGER": pager}
    )
    assert p.returncode == 0 and p.stdout and not rec.exists()
    # SKBINSPECT_PAGER="" (or cat): none, whatever $PAGER says
    code, term = on_pty(lab_vmcore, ["ring"], {"SKBINSPECT_PAGER": "", "PAGER": pager})
    assert code == 0 and not rec.exists() and "tap0" in term


def test_a_pager_that_cannot_run_prints_unpaged(lab_vmcore: LabVmcore) -> None:
    code, term = on_pty(lab_vmcore, ["ring", "-e"], {"PAGER": "nonexistent-pager-xyz"})
    assert code == 0 and "Traceback" not in term, term[-2000:]
    assert "cannot run the pager 'nonexistent-pager-xyz'" in term
    text = visible(term)
    plain = piped(lab_vmcore, "ring", "-e")
    names = [line.split()[0] for line in plain.splitlines() if " ifindex " in line]
    assert all(n in text for n in names)


def test_less_pages_long_output_and_q_quits(lab_vmcore: LabVmcore) -> None:
    """The default, less -FRX, on a 24-line terminal: a long ``ring -e`` stops at a screen; q ends it all,
    exit 0, no error.  ``info`` fits a 60-line terminal: less -F prints it and exits by itself, no key typed."""
    if not subprocess.run(["sh", "-c", "command -v less"], capture_output=True).stdout:
        pytest.fail("less is not installed (Debian package less): the default pager cannot be tested")
    code, term = on_pty(lab_vmcore, ["ring", "-e"], {}, keys=b"q")
    assert code == 0, term[-2000:]
    assert "Traceback" not in term and "skbinspect: error" not in term
    lines = [line for line in visible(term).splitlines() if line.strip()]
    assert len(lines) < len(piped(lab_vmcore, "ring", "-e").splitlines())  # a screen, not everything
    code, term = on_pty(lab_vmcore, ["info"], {}, rows=60)
    assert code == 0 and lab_vmcore.kernel.release in visible(term), term[-2000:]


def test_no_pager_inside_drgn(lab_vmcore: LabVmcore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``%skbinspect`` never pages: drgn's session owns the terminal."""
    from tests.vmcores.drgn_session import drgn_repl

    pager, rec = recorder(tmp_path)
    monkeypatch.setenv("SKBINSPECT_PAGER", pager)
    out = drgn_repl(lab_vmcore, ["%skbinspect ring -e", "print('still-here', 6 * 7)"], columns=120)
    assert "still-here 42" in out and "tap0" in out, out[-3000:]
    assert not rec.exists() and "PAGER-ENDED" not in out
