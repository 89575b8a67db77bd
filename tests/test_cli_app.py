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
