"""Output to a pipe that closes early (``| head``): the CLI exits 0 without a word on stderr, and
``%skbinspect ... | head`` inside drgn's real REPL (on a pseudo-terminal) leaves the session answering."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from skbinspect.chart import BLOCKS, OCCUPANCY_CHARS
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
    # a carriage return starts its line again (a progress line cleared): what is left after the last one
    return "\n".join(line.split("\r")[-1] for line in text.split("\n"))


_CHART_ROW = re.compile(r"^ +\S+ +[" + BLOCKS[1:] + r" ]+ +peak \S+ +\d+$")
_OCCUPANCY_ROW = re.compile(r"^ +\S+ [" + OCCUPANCY_CHARS + r"]+  \d+ live, \d+ stale, \d+ free of \d+$")


def _without_chart(terminal: str) -> list:
    """The terminal's lines without the drops-over-time chart and ring's occupancy bars (their widths
    follow the window's, and piped text draws the bars in ASCII, so their words differ from the piped
    text's), after checking that each of their rows is one whole line: label, sparkline, peak rate and
    count; label, bar and the slot counts."""
    lines = terminal.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("drops over time, seconds before"):
            j = i + 1
            while j < len(lines) and "one scale for every row" not in lines[j]:
                j += 1
            assert j < len(lines), lines[i:]
            rows = [x for x in lines[i + 1 : j] if any(c in x for c in BLOCKS[1:])]
            assert rows and all(_CHART_ROW.match(x) for x in rows), rows
            i = j + 1
            continue
        if lines[i].lstrip().startswith("ring occupancy ("):
            j = i + 1
            while j < len(lines) and _OCCUPANCY_ROW.match(lines[j]):
                j += 1
            assert j > i + 1, lines[i : i + 3]
            i = j
            continue
        out.append(lines[i])
        i += 1
    return out


def _split_words(terminal: str, piped: str) -> list:
    """Words on the terminal that are not words of the piped text (nor a word cut short with an
    ellipsis, nor of the "(hidden at N columns: ...)" note): a number, symbol+offset or device name
    broken across lines shows up as such a fragment."""
    words = set(piped.split())
    bad = []
    for line in _without_chart(terminal):
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


#: every command, as a user types it on a terminal (the timeline and the charts included): the same as
#: the piped ones
TERMINAL_COMMANDS = PIPED_COMMANDS


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("args", TERMINAL_COMMANDS, ids=lambda a: "-".join(a))
def test_terminal_tables_never_split_words(lab_vmcore: LabVmcore, args: list, columns: int) -> None:
    """Every command on a pseudo-terminal 80 and 120 columns wide: no line wider than the window and no
    number, symbol+offset or device name broken across lines (each word on the terminal is a word of the
    piped text)."""
    from tests.conftest import run_skbinspect

    piped = run_skbinspect("-c", lab_vmcore.vmcore, *symbols_args(lab_vmcore.symbols), *args)
    assert piped.returncode == 0, piped.stderr
    term = _on_pty(lab_vmcore, columns, *args)
    # wider than the window only for a path that cannot be broken (info's debug files: the terminal
    # wraps that line, skbinspect does not cut the path) and in trace, whose lines are the tracefs
    # format, as `cat trace` prints them
    wide = [
        x
        for x in term.splitlines()
        if len(x) > columns and not any(len(w) > 40 and "/" in w for w in x.split())
    ]
    if args[0] != "trace":
        assert not wide, wide[:5]
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


@pytest.mark.parametrize("columns", [80, 120])
def test_drops_chart_fits_the_terminal(lab_vmcore: LabVmcore, columns: int) -> None:
    """The drops-over-time chart takes as many buckets as fit: no line of it is wider than the window,
    and its rows use the block characters on a UTF-8 terminal (every lab kernel's trace has drops)."""
    term = _on_pty(lab_vmcore, columns, "drops", "--top-stacks", "0")
    lines = term.splitlines()
    start = lines.index("drops over time, seconds before the last drop in the trace:")
    chart = lines[start : start + 1 + next(i for i, x in enumerate(lines[start:]) if "one scale" in x)]
    rows = [x for x in chart if any(c in x for c in BLOCKS[1:]) and "one scale" not in x]
    assert rows and max(len(line.rstrip()) for line in chart) <= columns, chart
    assert all(" peak " in x for x in rows), rows


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
