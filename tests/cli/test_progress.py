"""skbinspect.cli.progress: where the progress line is drawn."""

from __future__ import annotations

import io
import sys

import pytest

from skbinspect.cli.progress import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_streaming_output_on_a_terminal_has_no_progress_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """``trace`` writes while it decodes: with stdout on the same terminal a progress line would be
    glued to the output, so there is none; with stdout redirected it is drawn on stderr and cleared."""
    err = _Tty()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", _Tty())
    cb, done = progress("decoding top", streaming=True)
    assert cb is None
    done()
    assert err.getvalue() == ""
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # stdout to a file: progress on the terminal
    cb, done = progress("decoding top", streaming=True)
    assert cb is not None
    cb(10, 10)
    done()
    assert err.getvalue() == "\rdecoding top: 10/10 sub-buffers (100%)\r\x1b[K"


def test_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    cb, _ = progress("decoding top")
    assert cb is None
    monkeypatch.setattr(sys, "stderr", _Tty())
    monkeypatch.setattr(sys, "stdout", _Tty())
    cb, _ = progress("decoding top")  # decode first, output after (drops): shown
    assert cb is not None
