"""Output shared by every command: the rich consoles (tables on a terminal, plain text when piped) and
JSON printing.  No kernel access here."""

from __future__ import annotations

import json
import re
import secrets
import sys
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Union, cast

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = [
    "RawJSON",
    "StdoutStandIn",
    "console",
    "err_console",
    "fit_hints",
    "fit_table",
    "literal_cells",
    "plain_table",
    "plain_table_lines",
    "print_json",
    "set_color",
]


_COLOR_MODES = ("auto", "always", "never")
_color = "auto"


def set_color(mode: str) -> None:
    """``--color``: ``auto`` (on a terminal, unless NO_COLOR is set), ``always`` or ``never``."""
    global _color
    if mode not in _COLOR_MODES:
        raise ValueError(f"colour mode {mode!r} is not one of {', '.join(_COLOR_MODES)}")
    _color = mode


def _colour_options() -> Dict[str, Any]:
    if _color == "never":
        return {"color_system": None, "no_color": True}
    if _color == "always":
        return {"force_terminal": True, "no_color": False}
    return {}  # rich's own choice: colours on a terminal, none when NO_COLOR is set


# the spaces at the end of a line, before any colour codes that close it (--color=always)
_TRAILING = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$")


class StdoutStandIn:
    """What the stand-ins for stdout share (piped text, ``-o FILE``, the pager): the file under them gives
    ``fileno`` and ``encoding``; ``isatty`` says whether the console should treat it as a terminal."""

    #: a terminal as far as the console is concerned (tables, colours, the width)
    terminal_like = False

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def isatty(self) -> bool:
        return self.terminal_like

    def fileno(self) -> int:
        return self._file.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._file, "encoding", None) or "utf-8"


class _PlainLines(StdoutStandIn):
    """A text stream that drops the spaces rich pads lines with before each newline (piped output)."""

    def __init__(self, file: TextIO) -> None:
        super().__init__(file)
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if lines:
            self._file.write("".join(_TRAILING.sub(r"\1", line) + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._file.write(self._partial)
            self._partial = ""
        self._file.flush()


class _Console(Console):
    """A rich console that lets a closed pipe be the caller's business, and prints tables plain when
    piped.

    rich's own :meth:`Console.on_broken_pipe` points file descriptor 1 at /dev/null and raises
    ``SystemExit(1)``: inside a drgn session that ends the session (and the descriptor belongs to drgn's
    pipe).  Here the :class:`BrokenPipeError` is raised on, for :func:`skbinspect.cli.app.run` to turn
    into exit status 0.

    With ``plain`` (stdout is not a terminal) every table is printed without borders, columns aligned with
    spaces, so that grep, awk and cut work on it, and no line is wrapped or ends in spaces.

    Text read from the target (device names, process names, kernel log lines, decoded headers) is data:
    table cells and titles given as ``str`` are printed as they are (:func:`literal_cells`), never as
    rich markup, and ``:name:`` is never turned into an emoji.  A styled cell is a :class:`Text`; other
    lines escape what they quote from the target (:func:`rich.markup.escape`).
    """

    def __init__(self, *args: Any, plain: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("emoji", False)
        super().__init__(*args, **kwargs)
        self.plain = plain

    def print(self, *objects: Any, **kwargs: Any) -> None:
        hidden: List[str] = []
        for obj in objects:
            if isinstance(obj, Table):
                if self.plain:
                    plain_table(obj)
                    if obj.title is not None:  # its own line: rich wraps a title to the table's width
                        super().print(_literal_title(obj))
                        obj.title = None
                    if self.color_system is None and len(objects) == 1 and not kwargs:
                        lines = plain_table_lines(obj)
                        if lines is not None:  # the same text without rich's layout (a ring's entries)
                            super().print(Text("\n".join(lines)), soft_wrap=True)
                            return
                    literal_cells(obj)
                else:
                    hidden += fit_table(self, literal_cells(obj))
        super().print(*objects, **kwargs)
        if hidden:
            super().print(f"[dim](hidden at {self.width} columns: {', '.join(hidden)})[/dim]")

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(32, "Broken pipe")


def _literal_title(t: Table) -> Any:
    if isinstance(t.title, str):  # rich styles a str title itself, a Text not
        return Text(t.title, style=t.title_style or "table.title")
    return t.title


def literal_cells(t: Table) -> Table:
    """``t`` with every ``str`` cell and title as literal :class:`Text`: a ``[`` read from the target (an
    interface called ``t[ap]0``, a task ``[kworker]``, an IPv6 ``[fe80::1]``) is printed, not taken for
    markup that hides it or raises :class:`rich.errors.MarkupError`."""
    for c in t.columns:
        cells = c._cells
        for i, cell in enumerate(cells):
            if isinstance(cell, str):
                cells[i] = Text(cell)
    t.title = _literal_title(t)
    return t


def plain_table(t: Table) -> Table:
    """``t`` without borders or edge padding: columns separated by two spaces, for piped output."""
    t.box = None
    t.show_edge = False
    t.pad_edge = False
    t.show_lines = False
    t.padding = (0, 1)
    return t


def plain_table_lines(t: Table) -> Optional[List[str]]:
    """The lines rich prints for the borderless table :func:`plain_table` makes (without colours, trailing
    spaces dropped), made without rich's layout: the columns at their widest cell, left or right
    justified, two spaces apart.  ``str`` cells are literal (:func:`literal_cells`).  None for a table
    only rich lays out: no header, a caption or footer, set widths, centred columns, a cell that is not
    one line of printable ASCII."""
    if (
        not t.show_header
        or t.show_footer
        or t.caption is not None
        or t.title is not None
        or t.box is not None
        or t.show_edge
        or t.pad_edge
        or t.collapse_padding
        or t.padding != (0, 1, 0, 1)
        or t.width is not None
        or t.min_width is not None
        or t.expand
        or not t.columns
    ):
        return None
    columns: List[List[str]] = []
    for c in t.columns:
        if c.justify not in ("left", "right") or c.width or c.min_width or c.max_width or c.ratio:
            return None
        header = c.header
        if not isinstance(header, str) or "[" in header:
            return None  # rich renders a str header as markup
        cells = [header]
        for cell in c._cells:
            if isinstance(cell, str):
                cells.append(cell)
            elif isinstance(cell, Text) and cell.justify is None:
                cells.append(cell.plain)
            else:
                return None
        whole = "".join(cells)
        if not (whole.isascii() and whole.isprintable()):  # one cell width per character, one line
            return None
        columns.append(cells)
    last = len(columns) - 1
    parts: List[List[str]] = []
    for i, (c, cells) in enumerate(zip(t.columns, columns)):
        width = max(map(len, cells))  # rich measures a cell's whole text, trailing spaces too
        if c.justify == "right":  # rich's Lines.justify: strip the trailing white space, pad on the left
            cells = [x.rstrip().rjust(width) for x in cells]
        elif i != last:
            cells = [x.ljust(width) for x in cells]
        parts.append(cells)
    return ["  ".join(row).rstrip(" ") for row in zip(*parts)]


class _Fit:
    __slots__ = ("drop", "wrap")

    def __init__(self, drop: Sequence[str], wrap: Sequence[str]) -> None:
        self.drop = tuple(drop)
        self.wrap = frozenset(wrap)


_FIT: "weakref.WeakKeyDictionary[Table, _Fit]" = weakref.WeakKeyDictionary()


def fit_hints(t: Table, drop: Sequence[str] = (), wrap: Sequence[str] = ()) -> Table:
    """How ``t`` fits a narrow terminal: the columns (by header) that may wrap at spaces (free text: task
    lists, notes, holders), and the columns to hide, first to last, when it is still too wide without
    borders.  Every other cell is never broken across lines (numbers, symbol+offset, device names)."""
    _FIT[t] = _Fit(drop, wrap)
    return t


def _natural_width(con: Console, t: Table) -> int:
    return Measurement.get(con, con.options.update_width(PIPE_WIDTH), t).maximum


def _narrowest(con: Console, t: Table) -> int:
    """The width ``t`` needs with no cell split: every unwrappable column whole, the others at their
    longest word."""
    options = con.options.update_width(PIPE_WIDTH)
    need = t._extra_width  # borders and padding between columns
    for c in t.columns:
        m = t._measure_column(con, options, c)
        need += m.maximum if c.no_wrap else m.minimum
    return need


def fit_table(con: Console, t: Table) -> List[str]:
    """Make ``t`` fit ``con``'s width, in this order: numbers, symbols and names are never split (only
    the columns :func:`fit_hints` allows wrap, at spaces); below the natural width the borders go; then
    the hinted columns, in their order.  Returns the headers of the columns hidden."""
    hints = _FIT.get(t)
    if hints is None:  # a table not sized for narrow terminals: rich's own layout, as before
        return []
    for c in t.columns:
        if str(c.header) in hints.wrap:
            c.no_wrap, c.overflow = False, "ellipsis"  # at spaces; a word too long is cut, never split
        else:
            c.no_wrap, c.overflow = True, "ellipsis"
    width = con.width
    if _natural_width(con, t) <= width:
        return []
    plain_table(t)
    t.title_justify = "left"
    hidden: List[str] = []
    for header in hints.drop:
        if _narrowest(con, t) <= width:
            break
        keep = [c for c in t.columns if str(c.header) != header]
        if len(keep) != len(t.columns):
            t.columns[:] = keep
            for i, c in enumerate(keep):  # rich pads the first and last column by their index
                c._index = i
            hidden.append(header)
    return hidden


# Piped text is never wrapped: rich needs a width, this one no line reaches.
PIPE_WIDTH = 1 << 20


def console() -> Console:
    """stdout console: tables and colours on a terminal; plain, unwrapped text when piped (colours as
    ``--color`` says)."""
    out = sys.stdout
    if out.isatty():
        return _Console(highlight=False, **_colour_options())
    return _Console(
        file=cast(TextIO, _PlainLines(out)),
        highlight=False,
        width=PIPE_WIDTH,
        plain=True,
        **_colour_options(),
    )


def err_console() -> Console:
    return _Console(stderr=True, highlight=False, **_colour_options())


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
