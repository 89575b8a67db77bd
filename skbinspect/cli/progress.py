"""Progress of long decodes on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
from typing import Callable, Optional, Tuple

__all__ = ["progress"]


def progress(
    label: str, streaming: bool = False
) -> Tuple[Optional[Callable[[int, int], None]], Callable[[], None]]:
    """A progress callback for long decodes, shown on stderr only when stderr is a terminal.

    :param streaming: the command writes its output while it decodes (``trace``): no progress line when
        stdout is a terminal too, where it would be drawn in the middle of the output (the output shows
        the progress); shown when stdout goes to a file or a pipe."""
    if not sys.stderr.isatty() or (streaming and sys.stdout.isatty()):
        return None, lambda: None
    state = {"last": 0, "shown": False}

    def cb(done: int, total: int) -> None:
        if done - state["last"] < 256 and done != total:
            return
        state["last"] = done
        state["shown"] = True
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\r{label}: {done}/{total} sub-buffers ({pct}%)")
        sys.stderr.flush()

    def end() -> None:
        if state["shown"]:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    return cb, end
