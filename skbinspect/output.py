"""Output shared by every command: the rich consoles (tables on a terminal, plain text when piped) and
JSON printing.  No kernel access here."""

from __future__ import annotations

import json
import secrets
import sys
from typing import Any, Callable, Iterable, List, Union

from rich.console import Console

__all__ = ["RawJSON", "console", "err_console", "print_json"]


class _Console(Console):
    """A rich console that lets a closed pipe be the caller's business.

    rich's own :meth:`Console.on_broken_pipe` points file descriptor 1 at /dev/null and raises
    ``SystemExit(1)``: inside a drgn session that ends the session (and the descriptor belongs to drgn's
    pipe).  Here the :class:`BrokenPipeError` is raised on, for :func:`skbinspect.cli.app.run` to turn
    into exit status 0.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(32, "Broken pipe")


def console() -> Console:
    """stdout console: colours only on a terminal, never wrapped when piped."""
    tty = sys.stdout.isatty()
    # Piped output is plain text and is never truncated: wide enough for long paths.
    return _Console(highlight=False, width=None if tty else 200)


def err_console() -> Console:
    return _Console(stderr=True, highlight=False)


class RawJSON:
    """A value already rendered as compact JSON text, for :func:`print_json` to write as is.

    For large arrays built faster than ``json`` could (ring entries): ``text()`` gives the compact JSON,
    a string or an iterable of strings to write one after the other (spliced into piped output), and
    ``value()`` the plain object (indented output on a terminal).  Both are called only when printed.
    """

    __slots__ = ("text", "value")

    def __init__(self, text: Callable[[], Union[str, Iterable[str]]], value: Callable[[], Any]) -> None:
        self.text = text
        self.value = value


def print_json(obj: Any) -> None:
    """Indented for a person on a terminal; compact (and much faster: the C encoder) when piped.

    :class:`RawJSON` values are expanded (indented) or spliced in as their text (compact).
    """
    # json.dumps, not json.dump: only the one-shot path uses the C encoder.
    if sys.stdout.isatty():
        sys.stdout.write(
            json.dumps(obj, indent=2, default=lambda o: o.value() if isinstance(o, RawJSON) else str(o))
        )
        sys.stdout.write("\n")
        return
    raws: List[RawJSON] = []
    nonce = secrets.token_hex(8)

    def default(o: Any) -> Any:
        if isinstance(o, RawJSON):
            raws.append(o)
            return f"@@skbinspect-raw-{nonce}-{len(raws) - 1}@@"
        return str(o)

    text = json.dumps(obj, separators=(",", ":"), default=default)
    write = sys.stdout.write
    # the encoder met the RawJSON values in document order: write the text around each placeholder
    for i, raw in enumerate(raws):
        before, text = text.split(f'"@@skbinspect-raw-{nonce}-{i}@@"', 1)
        write(before)
        chunks = raw.text()
        if isinstance(chunks, str):
            write(chunks)
        else:
            for chunk in chunks:
                write(chunk)
    write(text)
    write("\n")
