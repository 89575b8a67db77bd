"""skbinspect.output: piped text is plain (no borders, no trailing spaces, no wrapping), --color, and a
closed pipe raised to the caller instead of rich's SystemExit."""

from __future__ import annotations

import io
import sys
from typing import Iterator

import pytest
from rich.table import Table
from rich.text import Text

from skbinspect import output
from tests.target_text import PipedStdout


class _Closed(PipedStdout):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture(autouse=True)
def _auto_color() -> Iterator[None]:
    yield
    output.set_color("auto")


def _piped(monkeypatch: pytest.MonkeyPatch) -> PipedStdout:
    # in the test itself: pytest's capture puts its own sys.stdout back between setup and call
    buf = PipedStdout()
    monkeypatch.setattr(sys, "stdout", buf)
    return buf


def _table() -> Table:
    t = Table(title="by reason and location", title_justify="left")
    t.add_column("reason")
    t.add_column("location", overflow="fold")
    t.add_column("count", justify="right")
    t.add_row("FULL_RING", Text("tun_net_xmit+0x2c5 [tun]"), "1800")
    t.add_row("NOT_SPECIFIED", "x" * 300, "7")
    return t


def test_piped_table_is_plain_space_aligned(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = _piped(monkeypatch)
    output.console().print(_table())
    lines = piped.getvalue().splitlines()
    assert lines[0] == "by reason and location"
    assert lines[1].split() == ["reason", "location", "count"]
    assert lines[2].split() == ["FULL_RING", "tun_net_xmit+0x2c5", "[tun]", "1800"]
    assert lines[3].split() == ["NOT_SPECIFIED", "x" * 300, "7"]  # not wrapped, not folded
    assert len(lines) == 4
    text = piped.getvalue()
    assert not any(0x2500 <= ord(c) <= 0x257F for c in text)
    assert all(line == line.rstrip() for line in lines)
    assert lines[2].index("1800") + 4 == lines[3].index("7") + 1  # right-aligned numbers
    assert not lines[1].startswith(" ")


def test_piped_long_text_line_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = _piped(monkeypatch)
    line = " ".join(f"word{i}" for i in range(100))
    output.console().print(line)
    assert piped.getvalue() == line + "\n"


def test_color_never_always(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = _piped(monkeypatch)
    output.set_color("always")
    monkeypatch.setenv("NO_COLOR", "1")
    output.console().print("[red]red[/red] text   ")
    assert "\x1b[" in piped.getvalue()  # an explicit --color=always wins over NO_COLOR
    assert not piped.getvalue().rstrip("\n").endswith(" ")
    piped.seek(0)
    piped.truncate()
    output.set_color("never")
    output.console().print(_table())
    assert "\x1b[" not in piped.getvalue()
    with pytest.raises(ValueError):
        output.set_color("sometimes")


def test_no_color_env_honoured_in_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    output.set_color("auto")
    c = output.err_console()
    assert c.no_color


def test_closed_pipe_raises_broken_pipe_not_system_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", _Closed())
    with pytest.raises(BrokenPipeError):
        output.console().print(_table())


@pytest.mark.parametrize("terminal", [False, True])
def test_table_cells_and_titles_are_literal(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    """A ``str`` cell or title is data (read from the target), printed as it is: not markup, not emoji."""
    from tests.target_text import HOSTILE, rendered

    def render() -> None:
        t = Table(title=f"{HOSTILE} entries")
        t.add_column("device")
        t.add_column("styled")
        t.add_row(HOSTILE, Text("FULL", style="bold red"))
        output.console().print(t)
        output.console().print(f"[yellow]note:[/yellow] {HOSTILE}", markup=False)

    text = rendered(monkeypatch, render, terminal=terminal)
    assert text.count(HOSTILE) == 3, text
    assert "FULL" in text


def test_styled_cells_keep_their_style(monkeypatch: pytest.MonkeyPatch) -> None:
    """Literal cells change no style: a ``Text`` cell keeps its own, a title the table's title style."""
    buf = _piped(monkeypatch)
    output.set_color("always")
    t = Table(title="reasons")
    t.add_column("name")
    t.add_row(Text("FULL_RING", style="bold red"))
    output.console().print(t)
    assert "\x1b[1;31mFULL_RING" in buf.getvalue()
    assert "\x1b[3mreasons\x1b[0m\n" in buf.getvalue()  # rich's table.title: italic, on its own line


def test_piped_table_title_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A title wider than its table is not wrapped to the table's width when piped."""
    piped = _piped(monkeypatch)
    t = Table(title="tap0 queue 0: 1 live entries, oldest first", title_justify="left")
    t.add_column("slot")
    t.add_row("0")
    output.console().print(t)
    assert piped.getvalue() == "tap0 queue 0: 1 live entries, oldest first\nslot\n0\n"


def _rich_plain(t: Table) -> str:
    """What rich itself prints for a plain table (colourless, trailing spaces dropped)."""
    import rich.console

    buf = io.StringIO()
    rich.console.Console(
        file=buf, width=output.PIPE_WIDTH, color_system=None, highlight=False, emoji=False
    ).print(t)
    return "".join(line.rstrip(" ") + "\n" for line in buf.getvalue().splitlines())


def test_plain_table_lines_are_what_rich_prints() -> None:
    """The fast layout of piped tables against rich's own, on random tables: justification, empty cells,
    cells with spaces, brackets and emoji codes, no rows.  Tables with other characters (wide, combining,
    zero-width, Unicode spaces) are left to rich."""
    import random

    rng = random.Random(77)
    words = ["", " ", "x", "tap0", "0xffff888004a1b000", "  lead", "trail  ", "[b]", "a b c", ":ok:", "~"]
    other = ["漢字", "é", "😄", "\xa0", "\u3000", "\u200b", "e\u0301", "\t"]
    fast = 0
    for _ in range(3000):
        t = Table()
        ncols = rng.randint(1, 6)
        for _ in range(ncols):
            t.add_column(rng.choice(["queue", "len", "", "held by"]), justify=rng.choice(["left", "right"]))
        vocabulary = words + (other if rng.random() < 0.2 else [])
        for _ in range(rng.randint(0, 5)):
            t.add_row(*("".join(rng.choices(vocabulary, k=rng.randint(0, 3))) for _ in range(ncols)))
        lines = output.plain_table_lines(output.plain_table(t))  # str cells, as the console meets them
        assert output.plain_table_lines(output.literal_cells(t)) == lines  # Text cells: the same
        ascii_only = all(str(x).isascii() and str(x).isprintable() for c in t.columns for x in c._cells)
        assert (lines is not None) == ascii_only, t.columns
        if lines is not None:
            fast += 1
            assert "".join(line + "\n" for line in lines) == _rich_plain(t), t.columns
    assert fast > 2000


def test_plain_table_lines_leave_other_tables_to_rich() -> None:
    """Tables the fast layout does not make: rich lays them out (multi-line cells, a grid without a
    header, centred columns, renderables that are not text)."""
    cases = []
    t = output.plain_table(Table())
    t.add_column("summary")
    t.add_row("a\nb")
    cases.append(t)
    g = output.plain_table(Table.grid())
    g.add_column()
    g.add_row("x")
    cases.append(g)
    t = output.plain_table(Table())
    t.add_column("c", justify="center")
    t.add_row("x")
    cases.append(t)
    t = output.plain_table(Table())
    t.add_column("nested")
    t.add_row(Table())
    cases.append(t)
    for t in cases:
        assert output.plain_table_lines(output.literal_cells(t)) is None
