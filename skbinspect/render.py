"""Rendering: rich tables on a terminal, plain text when piped, JSON on request.  No kernel access here."""

from __future__ import annotations

import datetime
import json
import secrets
import sys
from typing import Any, Callable, Iterable, List, Optional, Union

from rich.console import Console
from rich.table import Table

from .info import TargetInfo

__all__ = ["RawJSON", "console", "err_console", "print_json", "render_info"]


def console() -> Console:
    """stdout console: colours only on a terminal, never wrapped when piped."""
    tty = sys.stdout.isatty()
    # Piped output is plain text and is never truncated: wide enough for long paths.
    return Console(highlight=False, width=None if tty else 200)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


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
        sys.stdout.write(json.dumps(obj, indent=2, default=lambda o: o.value() if isinstance(o, RawJSON) else str(o)))
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


def _time(t: Optional[int]) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_info(info: TargetInfo, out: Optional[Console] = None) -> None:
    out = out or console()
    kinds = {"live": "live kernel", "vmcore": "vmcore", "qemu": "QEMU guest over QMP"}
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    t.add_row("target", f"{kinds.get(info.kind, info.kind)}: {info.source}" +
              (f" ({info.vmcore_format})" if info.vmcore_format else ""))
    t.add_row("release", info.release)
    if info.version:
        t.add_row("version", info.version)
    cpus = "-" if info.cpus_possible is None else f"{info.cpus_online} online / {info.cpus_possible} possible"
    t.add_row("CPUs", cpus)
    if info.kind == "vmcore":
        t.add_row("crash time", _time(info.crash_time) if info.crash_time else "not recorded (no kdump CRASHTIME)")
        t.add_row("kernel clock", _time(info.kernel_time))
        t.add_row("panic", info.panic_message or "none found in the kernel log")
    else:
        t.add_row("kernel clock", _time(info.kernel_time))
    t.add_row("vmlinux debug info", info.vmlinux_debug_file or "MISSING")
    out.print(t)
    mt = Table(title="modules skbinspect reads", title_justify="left")
    mt.add_column("module")
    mt.add_column("loaded")
    mt.add_column("debug info", overflow="fold")
    for m in info.modules:
        if not m.loaded:
            mt.add_row(m.name, "no", "-")
        else:
            mt.add_row(m.name, "yes", m.debug_file or "[red]MISSING[/red]")
    out.print(mt)
    for w in info.warnings:
        out.print(f"[yellow]warning:[/yellow] {w}")
