"""Output to a pipe that closes early (``| head``): the CLI exits 0 without a word on stderr, and
``%skbinspect ... | head`` inside drgn's real REPL (on a pseudo-terminal) leaves the session answering."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.vmcores.drgn_session import drgn_repl
from tests.vmcores.lab import LabVmcore
from tests.vmcores.test_lab_info import symbols_args


@pytest.mark.parametrize("args", [["drops"], ["--json", "ring"], ["stats"], ["trace"]])
def test_cli_closed_pipe_exits_zero(lab_vmcore: LabVmcore, args: list) -> None:
    env = dict(os.environ)
    env.pop("SKBINSPECT_DEBUG", None)
    cmd = [
        sys.executable,
        "-m",
        "skbinspect",
        "-c",
        lab_vmcore.vmcore,
        *symbols_args(lab_vmcore.symbols),
        *args,
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(40)
    p.stdout.close()  # the reader goes away, as head does, while skbinspect still writes
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 0, err
    assert err == "", err


def test_drgn_session_survives_commands_piped_to_head(lab_vmcore: LabVmcore) -> None:
    lines = [
        "%skbinspect drops | head -3",
        "%skbinspect drops | head -3",
        "%skbinspect ring | head -2",
        "%skbinspect --json ring | head -c 10",
        "%skbinspect trace | head -1",
        "print('still-here', 6 * 7)",
    ]
    out = drgn_repl(lab_vmcore, lines, columns=120)
    assert "still-here 42" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    # each command's echo is followed by a fresh prompt: all six were read by a live REPL
    assert out.count(">>> %skbinspect") == 5, out[-3000:]


PIPED_COMMANDS = [
    ["info"],
    ["ring"],
    ["ring", "-e"],
    ["ring", "--stale"],
    ["reasons"],
    ["reasons", "NOT_SPECIFIED"],
    ["stats"],
    ["trace"],
    ["drops"],
    ["report"],
]


@pytest.mark.parametrize("args", PIPED_COMMANDS, ids=lambda a: "-".join(a))
def test_piped_text_is_plain(lab_vmcore: LabVmcore, args: list) -> None:
    """Piped text: no box-drawing characters, no line ending in spaces, no escape codes (grep/awk/cut)."""
    from tests.conftest import run_skbinspect

    p = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), *args)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip()
    boxes = sorted({c for c in p.stdout if 0x2500 <= ord(c) <= 0x257F})
    assert not boxes, f"box-drawing characters {boxes} in piped {args}"
    trailing = [line for line in p.stdout.splitlines() if line != line.rstrip()]
    assert not trailing, f"{len(trailing)} lines end in spaces, e.g. {trailing[0]!r}"
    assert "\x1b[" not in p.stdout


def _on_pty(lab: LabVmcore, columns: int, *args: str) -> str:
    """skbinspect on a pseudo-terminal ``columns`` wide (window size set with TIOCSWINSZ): its output,
    escapes removed."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    from tests.vmcores.drgn_session import REPO

    pid, fd = pty.fork()
    if pid == 0:
        os.environ.pop("SKBINSPECT_DEBUG", None)
        # rich sizes by COLUMNS first (pytest's environment may carry one): the same width as the window
        os.environ["COLUMNS"] = str(columns)
        os.environ.pop("LINES", None)
        os.environ["TERM"] = "xterm"
        os.environ["PYTHONPATH"] = REPO
        os.environ["SKBINSPECT_PAGER"] = ""  # the output as printed, not through less (it waits for q)
        # the window size, set on the terminal before skbinspect starts (no race with the parent)
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        os.execv(
            sys.executable,
            [sys.executable, "-m", "skbinspect", "-c", lab.vmcore, *symbols_args(lab.symbols), *args],
        )
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    buf = b""
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:
            break
        if not data:
            break
        buf += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, buf[-2000:]
    text = buf.decode(errors="replace").replace("\r\n", "\n")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return text.split("\r")[-1] if "\r" in text else text


def _split_words(terminal: str, piped: str) -> list:
    """Words on the terminal that are not words of the piped text (nor a word cut short with an
    ellipsis, nor of the "(hidden at N columns: ...)" note): a number, symbol+offset or device name
    broken across lines shows up as such a fragment."""
    words = set(piped.split())
    bad = []
    for line in terminal.splitlines():
        if line.startswith("(hidden at "):
            continue
        # table borders are not part of any word (rich may set a cell against its border)
        line = "".join(" " if 0x2500 <= ord(c) <= 0x257F else c for c in line)
        for w in line.split():
            if w in words:
                continue
            if w.endswith("…") and any(x.startswith(w[:-1]) for x in words):
                continue
            bad.append(w)
    return bad


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("args", [["ring"], ["drops", "--no-timeline"], ["stats"]], ids=lambda a: a[0])
def test_terminal_tables_never_split_words(lab_vmcore: LabVmcore, args: list, columns: int) -> None:
    from tests.conftest import run_skbinspect

    piped = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), *args)
    assert piped.returncode == 0, piped.stderr
    term = _on_pty(lab_vmcore, columns, *args)
    assert max(len(line) for line in term.splitlines()) <= columns
    bad = _split_words(term, piped.stdout)
    assert not bad, f"split on a {columns}-column terminal: {bad[:20]}"


def test_info_paths_never_broken_on_a_narrow_terminal(lab_vmcore: LabVmcore) -> None:
    """``info`` at 80 columns: every debug-info path is whole on one line (the terminal may wrap the
    line; skbinspect never breaks it inside the path, nor cuts it)."""
    term = _on_pty(lab_vmcore, 80, "info")
    lines = term.splitlines()
    vm = [line.split()[-1] for line in lines if line.startswith("vmlinux debug info")]
    assert vm and os.path.basename(vm[0]).startswith("vmlinux") and os.path.isfile(vm[0]), term
    assert "…" not in term
    mods = [line for line in lines if line.startswith("tun ")]
    assert mods and mods[0].split()[-1].endswith("tun.ko") and os.path.isfile(mods[0].split()[-1]), term


@pytest.mark.parametrize("columns", [50, 80])
def test_drops_timeline_fits_the_terminal(lab_vmcore: LabVmcore, columns: int) -> None:
    """The timeline's buckets are summed in groups on a narrow terminal: no line is wider than it."""
    term = _on_pty(lab_vmcore, columns, "drops", "--top-stacks", "0")
    lines = [line for line in term.splitlines() if "|" in line]
    if "records no drop reasons" in term and not lines:
        return
    assert lines and max(len(line.rstrip()) for line in lines) <= columns, lines


@pytest.mark.parametrize(
    "args", [["ring", "-e"], ["stats"], ["report"], ["--json", "info"], ["--json", "trace"]], ids="-".join
)
def test_output_file_from_a_terminal_equals_piped_output(lab_vmcore: LabVmcore, tmp_path, args: list) -> None:  # type: ignore[no-untyped-def]
    """``-o FILE`` typed on a terminal (after the command): the file holds exactly what the piped output
    is (plain text, or JSON), and nothing of it reaches the terminal."""
    from tests.conftest import run_skbinspect

    out = tmp_path / "out"
    terminal = _on_pty(lab_vmcore, 120, *args, "-o", str(out))
    piped = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), *args)
    assert piped.returncode == 0, piped.stderr
    written = out.read_text()
    assert written == piped.stdout
    assert len(written) > 200
    first = written.splitlines()[0]
    assert first not in terminal, terminal[-2000:]


def test_output_file_inside_drgn(lab_vmcore: LabVmcore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``%skbinspect ... -o FILE`` inside drgn writes the file; the session goes on, its output on the
    terminal again."""
    from tests.conftest import run_skbinspect

    text, js = tmp_path / "ring.txt", tmp_path / "ring.json"
    lines = [f"%skbinspect ring -o {text}", f"%skbinspect --json ring -o {js}", "print('still-here', 6 * 7)"]
    out = drgn_repl(lab_vmcore, lines, columns=120)
    assert "still-here 42" in out and "Traceback" not in out, out[-3000:]
    piped = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), "ring")
    assert text.read_text() == piped.stdout
    import json

    doc = json.loads(js.read_text())
    assert doc["target"]["release"] == lab_vmcore.kernel.release
    assert {d["name"] for d in doc["devices"]} == {
        line.split()[0] for line in piped.stdout.splitlines() if " ifindex " in line
    }
