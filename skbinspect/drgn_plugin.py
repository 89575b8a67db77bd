"""drgn plugin: ``%skbinspect COMMAND ...`` inside a drgn session on a Linux kernel.

Registered through the ``drgn.plugins`` entry point.  drgn imports this module when a program's target
is set; the command then runs the same CLI as ``skbinspect`` on the session's program: ``-c`` and
``--qemu`` are refused (the session already has its target), ``-s`` adds debug files to the program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Sequence

import drgn
from drgn.commands import argument, parse_shell_command
from drgn.commands.linux import linux_kernel_custom_command

if TYPE_CHECKING:
    from skbinspect.target.opener import Target

__all__ = ["drgn_prog_set"]


def drgn_prog_set(prog: drgn.Program) -> None:
    """drgn plugin hook: nothing to do per program; importing this module registered the command."""


def _target(prog: drgn.Program, symbols: Sequence[str] = ()) -> Target:
    # the same cached Target as the Python API's (skbinspect.helpers), so commands and calls share it
    from skbinspect.helpers import skbinspect_target

    return skbinspect_target(prog, symbols)


@linux_kernel_custom_command(
    name="skbinspect",
    description="where did my packets go? (skbinspect)",
    usage="**skbinspect** [--json] [-o *FILE*] *COMMAND* [*OPTIONS*]",
    long_description="Runs a skbinspect command (info, ring, reasons, stats, trace, drops, report) on this "
    "program, with the same options and output as the skbinspect CLI. -c and --qemu do not apply (the "
    "session's program is used); -s PATH adds debug files (a vmlinux, a module, or a directory to search) to "
    "the session's program, as drgn's own options do. Try %skbinspect --help.",
    arguments=(argument("args", nargs="*", help="skbinspect command and options"),),
    parse=parse_shell_command,
)
def _cmd_skbinspect(prog: drgn.Program, name: str, args: List[str], **kwargs: Any) -> None:
    import sys

    from skbinspect.cli import State, run

    state = State(None, None, (), True, False)
    state.prog_factory = lambda: _target(prog, state.symbols)
    # The command must never end the session it runs in: run() catches everything (a closed pipe, an
    # interrupt, SystemExit, internal errors); the streams are put back as drgn set them, whatever a
    # library did to them, and drgn closes its pipe itself.
    saved = sys.stdin, sys.stdout, sys.stderr
    try:
        run(list(args), obj=state, prog_name="%skbinspect")
        try:
            sys.stdout.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
