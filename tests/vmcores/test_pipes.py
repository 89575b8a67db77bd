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
