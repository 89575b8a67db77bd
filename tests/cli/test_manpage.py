"""docs/skbinspect.1 is generated from the click commands (skbinspect/cli/manpage.py): the committed page
is current, and groff renders it without a warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "skbinspect.1"


def _groff(*options: str) -> "subprocess.CompletedProcess[str]":
    """The committed page rendered by groff as man shows it (UTF-8), with these options."""
    groff = shutil.which("groff")
    if groff is None:
        pytest.fail("groff is not installed (Debian package groff-base, in scripts/install-deps.sh)")
    return subprocess.run(
        [groff, "-man", "-Tutf8", *options, str(PAGE)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        timeout=60,
    )


def test_committed_man_page_is_current() -> None:
    from skbinspect.cli import cli
    from skbinspect.cli.manpage import render_man

    assert PAGE.read_text() == render_man(cli), (
        "docs/skbinspect.1 is stale: python3 -m skbinspect.cli.manpage > docs/skbinspect.1"
    )


def test_man_page_renders_with_every_command_and_option() -> None:
    import click

    from skbinspect.cli import cli

    p = _groff("-ww", "-rLL=80n")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    import re

    text = re.sub(".\b", "", p.stdout)  # overstrike (bold, underline)
    text = text.replace("\u2010", "-").replace("\u2212", "-")
    assert "SKBINSPECT(1)" in text and "EXIT STATUS" in text
    for name, cmd in cli.commands.items():
        assert f"skbinspect {name}" in text, name
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert all(o in text for o in param.opts), (name, param.opts)
    for param in cli.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert all(o in text for o in param.opts), param.opts


def _help_pages() -> list:
    from skbinspect.cli import cli

    return [[]] + [[name] for name in sorted(cli.commands)]


@pytest.mark.parametrize("args", _help_pages(), ids=lambda a: " ".join(a) or "skbinspect")
def test_help_fits_80_columns(args: list) -> None:
    """``--help`` on an 80-column terminal: no line wider than it (the examples are typed as they are
    shown, so a long one would wrap in the middle of a command)."""
    from click.testing import CliRunner

    from skbinspect.cli import cli

    res = CliRunner().invoke(cli, [*args, "--help"], terminal_width=80)
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output
    wide = [line for line in res.output.splitlines() if len(line) > 80]
    assert not wide, wide


def test_man_page_examples_fit_80_columns() -> None:
    """The page's verbatim blocks (examples) are not refilled by man: they must fit 80 columns."""
    p = _groff("-rLL=78n", "-P-c", "-P-b", "-P-u")
    assert p.returncode == 0, p.stderr
    wide = [line for line in p.stdout.splitlines() if len(line) > 80]
    assert not wide, wide
