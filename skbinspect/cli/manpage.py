"""The man page, skbinspect(1), generated from the click commands: ``python3 -m skbinspect.cli.manpage
> docs/skbinspect.1`` (a test checks that the committed page is current, and that groff renders it)."""

from __future__ import annotations

import re
from typing import List

import click

from skbinspect import __version__

__all__ = ["render_man"]

_EXIT_STATUS = [
    ("0", "success, also when problems were found (report) and when the reader closed the pipe (| head)"),
    (
        "1",
        "bad input: an unknown drop reason, subsystem or trace instance; an output file that cannot be written",
    ),
    ("2", "a target that cannot be opened (not root, no /proc/kcore, not a vmcore, dead QMP socket)"),
    ("3", "missing or mismatched debug info (the message names the package to install)"),
    ("4", "a device given to ring that is not a tun/tap/macvtap/ipvtap device of the target"),
    ("64", "a usage error: an unknown option or command, a bad option value"),
    ("70", "an internal error (SKBINSPECT_DEBUG=1 shows the traceback)"),
    ("130", "interrupted"),
]

_ENVIRONMENT = [
    (
        "SKBINSPECT_PAGER, PAGER",
        "the pager for long text on a terminal (default: less -FRX); empty or cat: none",
    ),
    ("NO_COLOR", "no colours (with --color=auto)"),
    ("SKBINSPECT_DEBUG", "set to 1: a traceback for an internal error"),
]


def _esc(text: str) -> str:
    """``text`` as roff: backslashes and hyphens escaped, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line if line[:1] in (".", "'") else line) for line in text.split("\n"))


def _paragraphs(text: str) -> List[str]:
    """click help text as roff: paragraphs refilled by the formatter, ``\\b`` blocks kept as typed."""
    out: List[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        if block.startswith("\b"):
            out += [".PP", ".nf", _esc(block[1:].strip("\n")), ".fi"]
        else:
            out += [".PP", _esc(" ".join(block.split()))]
    return out


def _options(ctx: click.Context, cmd: click.Command) -> List[str]:
    out: List[str] = []
    for p in cmd.get_params(ctx):
        if not isinstance(p, click.Option):  # arguments are in the usage line (click 8.2+ gives them a
            continue  # help record of their own, older ones none: the page must not depend on it)
        rec = p.get_help_record(ctx)
        if rec is None:
            continue
        names, help_ = rec
        out += [".TP", "\\fB" + _esc(names) + "\\fR", _esc(" ".join(help_.split()))]
    return out


def render_man(group: click.Group) -> str:
    ctx = click.Context(group, info_name="skbinspect", **group.context_settings)
    lines = [
        '.TH SKBINSPECT 1 "" "skbinspect %s" "User Commands"' % _esc(__version__),
        ".SH NAME",
        "skbinspect \\- inspect tun/tap rings, drop reasons, drop counters and the trace buffer of a Linux kernel",
        ".SH SYNOPSIS",
        "\\fBskbinspect\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]",
        ".SH DESCRIPTION",
        *_paragraphs(group.help or ""),
        *_paragraphs(group.epilog or ""),
        ".SH GLOBAL OPTIONS",
        ".PP",
        "They come before the command, as with drgn, or after it.",
        *_options(ctx, group),
        ".SH COMMANDS",
    ]
    for name in sorted(group.commands):
        cmd = group.commands[name]
        if cmd.hidden:
            continue
        sub = click.Context(cmd, info_name=name, parent=ctx)
        usage = " ".join(cmd.collect_usage_pieces(sub))
        lines += [".SS " + _esc(name), "\\fBskbinspect " + _esc(name) + "\\fR " + _esc(usage)]
        lines += _paragraphs(cmd.help or "")
        lines += _options(sub, cmd)
        if cmd.epilog:
            lines += _paragraphs(cmd.epilog)
    lines += [".SH EXIT STATUS"]
    for code, what in _EXIT_STATUS:
        lines += [".TP", "\\fB" + code + "\\fR", _esc(what)]
    lines += [".SH ENVIRONMENT"]
    for var, what in _ENVIRONMENT:
        lines += [".TP", "\\fB" + _esc(var) + "\\fR", _esc(what)]
    lines += [
        ".SH FILES",
        ".TP",
        "\\fI/usr/lib/debug/boot/vmlinux\\-RELEASE\\fR, \\fI/usr/lib/debug/lib/modules/RELEASE/\\fR",
        "debug info, found by build ID (Debian: apt\\-get install linux\\-image\\-RELEASE\\-dbg)",
        ".SH SEE ALSO",
        "\\fBdrgn\\fR(1), \\fBcrash\\fR(8), \\fBtcpdump\\fR(8); the README and docs/json.md of the project",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from skbinspect.cli import cli

    click.echo(render_man(cli), nl=False)
