"""Progress of long decodes on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Callable, Optional, Tuple

__all__ = ["clear_line", "progress"]

#: Whether a progress line is on the terminal now (stderr), to be cleared before other output.
_on_screen = False


def clear_line() -> None:
    """Erase the progress line, if one is shown (before a pager takes the terminal)."""
    global _on_screen
    if _on_screen:
        _on_screen = False
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def progress(
    label: str, streaming: bool = False
) -> Tuple[Optional[Callable[[int, int], None]], Callable[[], None]]:
    """A progress callback for long decodes, shown on stderr only when stderr is a terminal, and not
    while a pager holds the terminal (it would be drawn over the pager's screen).

    :param streaming: the command writes its output while it decodes (``trace``): no progress line when
        stdout is a terminal too, where it would be drawn in the middle of the output (the output shows
        the progress); shown when stdout goes to a file or a pipe."""
    from skbinspect.cli.pager import paging

    if not sys.stderr.isatty() or (streaming and sys.stdout.isatty()):
        return None, lambda: None
    state = {"last": 0, "shown": False}

    def cb(done: int, total: int) -> None:
        global _on_screen
        if done - state["last"] < 256 and done != total:
            return
        if paging():
            return
        state["last"] = done
        state["shown"] = True
        pct = 100 * done // total if total else 100
        _on_screen = True
        sys.stderr.write(f"\r{label}: {done}/{total} sub-buffers ({pct}%)")
        sys.stderr.flush()
        if done == total:  # the decode is over and output follows on the same terminal: no trace left
            clear_line()

    def end() -> None:
        if state["shown"] and not paging():
            clear_line()

    return cb, end
