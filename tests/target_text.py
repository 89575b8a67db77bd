"""Text as a target can hold it, for the renderers' tests: an interface may be called ``t[ap]0`` (the
kernel's ``dev_valid_name`` refuses only ``/``, ``:`` and white space), a task may name itself anything
(``prctl(PR_SET_NAME)``), a kernel log line may quote ``[...]``, and a corrupt dump holds any bytes.
Every one must be printed as it is: never taken for rich markup (hidden, or a ``MarkupError``) nor for an
emoji code."""

from __future__ import annotations

import io
import re
import sys
from typing import Any, Callable

import pytest

from skbinspect import output

#: markup tags rich would apply and hide (``[red]``, ``[ap]``), a closing tag with nothing to close (rich
#: raises on it), an IPv6 literal, an emoji code, and an escape
HOSTILE = "t[ap]0[/][red]x[/red][fe80::1]:ok:\\[b]"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class TerminalStdout(io.StringIO):
    """A stdout stand-in that is a terminal."""

    def isatty(self) -> bool:
        return True


class PipedStdout(io.StringIO):
    """A stdout stand-in that is a pipe."""

    def isatty(self) -> bool:
        return False


def rendered(
    monkeypatch: pytest.MonkeyPatch, render: Callable[..., Any], *args: Any, terminal: bool, **kw: Any
) -> str:
    """What ``render(*args, **kw)`` prints on stdout, piped or on a wide colour terminal (colour codes
    removed), through :func:`skbinspect.output.console` as the CLI prints."""
    buf = TerminalStdout() if terminal else PipedStdout()
    monkeypatch.setattr(sys, "stdout", buf)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("NO_COLOR", raising=False)
    output.set_color("always" if terminal else "never")
    try:
        render(*args, **kw)
    finally:
        output.set_color("auto")
    return _ANSI.sub("", buf.getvalue())
