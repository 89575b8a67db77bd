"""A pager for long text on a terminal, as git has: ``less -FRX`` unless ``$SKBINSPECT_PAGER`` or
``$PAGER`` names another (empty or ``cat``: none).  ``less -F`` prints output that fits the screen and
exits, so short output looks as without a pager.

The pager is started at the command's first write to stdout, so that a command's progress on stderr
(decoding the trace buffer) is over or, once the pager runs, no longer drawn (:func:`paging`); its
warnings are printed after the pager exits.  A pager that cannot be started is a warning, and the output
goes to the terminal unpaged.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from typing import IO, List, Optional, TextIO

from skbinspect.output import StdoutStandIn

__all__ = ["PagedOutput", "pager_command", "paging"]

DEFAULT_PAGER = "less -FRX"

#: The pager running for the current command (None: output is not paged, or not yet started).
_active: Optional["PagedOutput"] = None


def paging() -> bool:
    """Whether a pager holds the terminal now: progress lines on stderr would garble its screen."""
    return _active is not None and _active.proc is not None


def pager_command() -> Optional[List[str]]:
    """The pager to run, as argv (no shell), or None for none: ``$SKBINSPECT_PAGER``, ``$PAGER``, then
    ``less -FRX``."""
    for var in ("SKBINSPECT_PAGER", "PAGER"):
        value = os.environ.get(var)
        if value is not None:
            break
    else:
        value = DEFAULT_PAGER
    try:
        argv = shlex.split(value)
    except ValueError:
        argv = value.split()
    if not argv or argv == ["cat"]:
        return None
    return argv


class PagedOutput(StdoutStandIn):
    """stdout for a command whose text goes through a pager.  A terminal as far as the console is
    concerned (tables, colours for ``less -R``, the terminal's width), which it still is in the end."""

    terminal_like = True

    def __init__(self, argv: List[str], terminal: TextIO) -> None:
        super().__init__(terminal)
        self.argv = argv
        self.proc: Optional["subprocess.Popen[str]"] = None
        self._stdin: Optional[IO[str]] = None
        self._started = False

    def _start(self) -> None:
        global _active
        self._started = True
        env = dict(os.environ)
        env.setdefault("LESS", "FRX")  # as git: quit if one screen, colours, no screen clearing
        env.setdefault("LV", "-c")
        from skbinspect.cli.progress import clear_line

        clear_line()  # a progress line would stay glued to the first line of output
        try:
            self._file.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                env=env,
                text=True,
                encoding=self.encoding,
                errors="replace",
            )
        except (OSError, ValueError) as e:
            self.proc = None
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            sys.stderr.write(
                f"skbinspect: warning: cannot run the pager {shlex.join(self.argv)!r} ({msg}): output not paged "
                "(set SKBINSPECT_PAGER, or use --no-pager).\n"
            )
            return
        self._stdin = self.proc.stdin
        _active = self

    def write(self, text: str) -> int:
        if not self._started:
            self._start()
        if self._stdin is None:
            return self._file.write(text)
        return self._stdin.write(text)  # BrokenPipeError when the pager quit (q): the command stops, exit 0

    def flush(self) -> None:
        if self._stdin is not None:
            self._stdin.flush()
        else:
            self._file.flush()

    def close(self) -> None:
        """Let the pager show the rest and wait for the user to quit it."""
        global _active
        if self.proc is not None:
            try:
                if self._stdin is not None:
                    self._stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            while True:
                try:
                    self.proc.wait()
                    break
                except KeyboardInterrupt:  # ^C in less: less goes on; so does the wait
                    continue
        if _active is self:
            _active = None
