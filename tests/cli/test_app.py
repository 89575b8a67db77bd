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
