"""skbinspect.cli.app.run: nothing escapes it (a closed pipe is 0, SystemExit its status) and global
options are taken before the command."""

from __future__ import annotations

import sys

import click
import pytest

from skbinspect.cli import app


@pytest.mark.parametrize(
    "exc, code",
    [
        (BrokenPipeError(32, "Broken pipe"), 0),
        (SystemExit(1), 1),
        (SystemExit(None), 0),
        (KeyboardInterrupt(), 130),
        (RuntimeError("x"), 70),
    ],
)
def test_run_never_raises(monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int) -> None:
    commands = dict(app.cli.commands)
    try:

        @app.cli.command("boom-test")
        def boom() -> None:
            raise exc

        assert app.run(["boom-test"]) == code
    finally:
        app.cli.commands.clear()
        app.cli.commands.update(commands)
    assert sys.stdout is sys.__stdout__ or not isinstance(sys.stdout, click.utils.PacifyFlushWrapper)


@pytest.mark.parametrize(
    "args, want",
    [
        (["ring", "tap0", "--json"], ["--json", "ring", "tap0"]),
        (
            ["-c", "v", "ring", "-e", "-s", "x", "--color", "never"],
            ["-c", "v", "-s", "x", "--color", "never", "ring", "-e"],
        ),
        (["ring", "--color=always", "tap0"], ["--color=always", "ring", "tap0"]),
        (["--json", "drops", "--top-stacks", "1"], ["--json", "drops", "--top-stacks", "1"]),
        (["trace", "--", "--json"], ["trace", "--", "--json"]),
        (
            ["--qemu", "sock", "info", "--no-default-symbols"],
            ["--qemu", "sock", "--no-default-symbols", "info"],
        ),
        (["--json"], ["--json"]),
        # every option of the group, --types included (it was missing from a hand-written list)
        (
            ["--types", "dwarf", "-c", "v", "report", "-s", "x"],
            ["--types", "dwarf", "-c", "v", "-s", "x", "report"],
        ),
        (["ring", "--types=btf"], ["--types=btf", "ring"]),
        (["ring", "--help"], ["ring", "--help"]),
    ],
)
def test_hoist_global_options(args: list, want: list) -> None:
    assert app.hoist_global_options(args) == want


def test_short_options_have_one_meaning() -> None:
    """Across the group and every command, a short option always names the same long option."""
    import skbinspect.cli  # noqa: F401 - registers the commands

    seen: dict = {}
    for cmd in [app.cli, *app.cli.commands.values()]:
        for p in cmd.params:
            if not isinstance(p, click.Option):
                continue
            shorts = [o for o in p.opts if len(o) == 2]
            longs = sorted(o for o in p.opts if o.startswith("--"))
            for s in shorts:
                assert seen.setdefault(s, longs) == longs, (s, cmd.name, longs, seen[s])


def test_long_options_have_one_kind() -> None:
    """A long option is a flag everywhere or takes a value everywhere (drops --stacks N is now
    --top-stacks N; --stacks is trace's flag, the old spelling stays hidden)."""
    import skbinspect.cli  # noqa: F401

    kinds: dict = {}
    for cmd in [app.cli, *app.cli.commands.values()]:
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                for o in p.opts:
                    assert kinds.setdefault(o, p.is_flag) == p.is_flag, (o, cmd.name)


def _with_command(fn):  # type: ignore[no-untyped-def]
    """Run ``fn`` with a test command ``out-test`` that prints a table (rich) and, with --json, JSON."""
    commands = dict(app.cli.commands)

    @app.cli.command("out-test")
    @app.pass_state
    def out_test(state: app.State) -> None:
        from rich.table import Table

        from skbinspect.output import console, print_json

        if state.json:
            print_json({"a": [1, 2]})
            return
        t = Table("name", "value", title="things")
        t.add_row("[bold]tap0[/bold]", "1000")
        console().print(t)

    try:
        return fn()
    finally:
        app.cli.commands.clear()
        app.cli.commands.update(commands)


@pytest.mark.parametrize("where", ["before", "after"])
def test_output_file_is_plain_text(tmp_path, where: str) -> None:  # type: ignore[no-untyped-def]
    """-o FILE (before or after the command): the text as when piped: no borders, no escapes, no
    trailing spaces; stdout is left as it was."""
    out = tmp_path / "out.txt"
    args = ["-o", str(out), "--color", "auto", "out-test"]
    if where == "after":
        args = ["out-test", "-o", str(out)]
    saved = sys.stdout
    assert _with_command(lambda: app.run(args)) == 0
    assert sys.stdout is saved
    text = out.read_text()
    assert "tap0" in text and "1000" in text and "things" in text
    assert not any(0x2500 <= ord(c) <= 0x257F for c in text) and "\x1b[" not in text
    assert all(line == line.rstrip() for line in text.splitlines())


def test_output_file_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    out = tmp_path / "out.json"
    assert _with_command(lambda: app.run(["out-test", "--json", "--output", str(out)])) == 0
    assert json.loads(out.read_text()) == {"a": [1, 2]}
    # "-" is stdout
    assert _with_command(lambda: app.run(["out-test", "-o", "-"])) == 0


def test_output_file_that_cannot_be_written(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A clear error, before the command runs (no target is opened), and no traceback."""
    for path in (tmp_path / "no" / "such" / "dir.txt", tmp_path):
        code = _with_command(lambda p=path: app.run(["out-test", "-o", str(p)]))
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("skbinspect: error: cannot write the output file"), err
        assert str(path) in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()


def test_output_file_write_error_is_clean(capsys) -> None:  # type: ignore[no-untyped-def]
    """A write that fails (a full disk: /dev/full) is an error naming the file, exit 1."""
    import os

    if not os.path.exists("/dev/full"):
        pytest.fail("/dev/full is missing: the test needs it")
    code = _with_command(lambda: app.run(["out-test", "-o", "/dev/full"]))
    err = capsys.readouterr().err
    assert code == 1 and "cannot write /dev/full" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "args",
    [["nosuchcommand"], ["ring", "--nosuchoption"], ["--color", "purple", "info"], ["trace", "--last", "0"]],
)
def test_usage_errors_exit_64_not_2(args: list, capsys) -> None:  # type: ignore[no-untyped-def]
    """A typo on the command line is EX_USAGE (64): exit 2 is a target that cannot be opened."""
    import skbinspect.cli  # noqa: F401 - registers the commands

    assert app.run(args) == 64
    err = capsys.readouterr().err
    assert "Error:" in err and "Traceback" not in err
