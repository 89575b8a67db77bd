"""The ``skbinspect`` click group, its global target options and the shared :class:`State`; :func:`run`
turns errors into one paragraph and an exit status.  The commands live in the sibling modules, which
import this one (never the other way round)."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, TextIO, Tuple, TypeVar, cast

import click

from skbinspect import __version__
from skbinspect.errors import SkbinspectError
from skbinspect.output import StdoutStandIn, set_color
from skbinspect.target.opener import Target, open_target

__all__ = ["COMPLETE_VAR", "State", "cli", "instance_options", "json_document", "main", "pass_state", "run"]

#: The exit status of a usage error (an unknown option or command, a bad value): EX_USAGE.
USAGE_EXIT = 64

#: The environment variable of click's shell-completion protocol (skbinspect completion bash|zsh|fish).
COMPLETE_VAR = "_SKBINSPECT_COMPLETE"

EPILOG = """\b
Targets (before the command, as with drgn; the global options may also
follow the command):
  skbinspect info
      the live kernel, through /proc/kcore (needs root)
  skbinspect -c /var/crash/vmcore info
      a vmcore (ELF or kdump-compressed)
  skbinspect --qemu /run/qmp.sock info
      a running QEMU guest over QMP
  skbinspect -c vmcore -s ./vmlinux -s ./debug/ info
      debug info from given files or directories

Debug info is found automatically for the kernel and the modules skbinspect reads (tun, tap, macvlan,
macvtap, ipvlan, ipvtap, veth, vhost, vhost_net, drop_monitor) in the standard places:
/usr/lib/debug/boot/vmlinux-RELEASE, /usr/lib/debug/lib/modules/RELEASE/ (Debian, Ubuntu, Fedora).
"""


@dataclass
class State:
    core: Optional[str]
    qemu: Optional[str]
    symbols: Tuple[str, ...]
    default_symbols: bool
    json: bool
    _target: Optional[Target] = field(default=None, repr=False)
    # Set when running inside drgn: the session's program is used instead of opening a target.
    prog_factory: Optional[Callable[[], Target]] = None
    types: str = "auto"  # --types: auto, dwarf or btf
    output: Optional[str] = None  # -o FILE, while the command writes there

    def target(self) -> Target:
        if self._target is None:
            if self.prog_factory is not None:
                self._target = self.prog_factory()
            else:
                self._target = open_target(
                    self.core, self.qemu, self.symbols, self.default_symbols, types=self.types
                )
        return self._target


pass_state = click.make_pass_decorator(State)

_Command = TypeVar("_Command", bound=Callable[..., Any])


def instance_options(verb: str) -> Callable[[_Command], _Command]:
    """``-i/--instance NAME`` and ``--all-instances``, as the commands that read the trace take them:
    ``verb`` begins the latter's help ("Read", "Report")."""

    def add(f: _Command) -> _Command:
        f = click.option(
            "--all-instances", is_flag=True, help=f"{verb} the top-level buffer and every instance."
        )(f)
        return click.option(
            "-i",
            "--instance",
            metavar="NAME",
            help="Read this trace instance (default: the top-level buffer).",
        )(f)

    return add


def json_document(target: Target, warnings: Sequence[str], body: Dict[str, Any]) -> Dict[str, Any]:
    """A command's JSON document: ``target`` (kind, source, release) and ``warnings`` first, the same in
    every command (docs/json.md), then the command's own members (a ``warnings`` of its own replaces
    ``warnings``: info's has the target's and its own)."""
    doc: Dict[str, Any] = {
        "target": {"kind": target.kind, "source": target.source, "release": target.release},
        "warnings": list(warnings),
    }
    doc.update(body)
    return doc


@click.group(
    epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option(
    "-c",
    "--core",
    metavar="PATH",
    type=click.Path(),
    help="Read a vmcore (ELF, or kdump-compressed by makedumpfile).",
)
@click.option(
    "--qemu", metavar="SOCKET", type=click.Path(), help="Read a running QEMU guest through its QMP socket."
)
@click.option(
    "-s",
    "--symbols",
    metavar="PATH",
    type=click.Path(),
    multiple=True,
    help="Debug info: a vmlinux or module .ko file, or a directory to search. Repeatable.",
)
@click.option("--no-default-symbols", is_flag=True, help="Do not search the standard debug-info places.")
@click.option(
    "--types",
    type=click.Choice(["auto", "dwarf", "btf"]),
    default="auto",
    show_default=True,
    help="Where types come from: DWARF debug info where found and the kernel's own BTF and kallsyms for "
    "the rest (auto), or only one of them.",
)
@click.option("--json", "json_", is_flag=True, help="Machine-readable JSON output (every command).")
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    type=click.Path(),
    help="Write the output to FILE instead of stdout: plain text as when piped, or JSON with --json.",
)
@click.option(
    "--no-pager",
    is_flag=True,
    help="Do not page long text on a terminal (default pager: less -FRX; $SKBINSPECT_PAGER or $PAGER).",
)
@click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colours: auto is on a terminal unless NO_COLOR is set. Piped text is plain (no table borders).",
)
@click.version_option(__version__, prog_name="skbinspect")
@click.pass_context
def cli(
    ctx: click.Context,
    core: Optional[str],
    qemu: Optional[str],
    symbols: Tuple[str, ...],
    no_default_symbols: bool,
    types: str,
    json_: bool,
    output: Optional[str],
    no_pager: bool,
    color: str,
) -> None:
    """Where did my packets go? Inspect tun/tap rings, drop reasons, per-CPU drop counters and the
    kernel's kfree_skb trace, on a live kernel, in a vmcore, or in a running QEMU guest."""
    set_color(color)
    if ctx.obj is None:
        ctx.obj = State(core, qemu, symbols, not no_default_symbols, json_, types=types)
        ctx.call_on_close(lambda: _finish(ctx.obj))
        _redirect_output(ctx, output)
        if not (no_pager or json_ or ctx.obj.output):
            _start_pager(ctx)
    else:  # inside drgn: keep the session's program; take --json, -o, and -s to add debug files to it;
        # never a pager (the session owns the terminal)
        if core or qemu:
            raise SkbinspectError(
                "-c/--qemu do not apply inside drgn: %skbinspect reads the session's program. Start drgn on the "
                "target instead (drgn -c VMCORE, or drgn --qemu SOCKET), or run the skbinspect command outside drgn."
            )
        ctx.obj.json = ctx.obj.json or json_
        if symbols:
            ctx.obj.symbols = ctx.obj.symbols + tuple(symbols)
        ctx.call_on_close(lambda: _finish(ctx.obj))
        _redirect_output(ctx, output)


class _OutputFile(StdoutStandIn):
    """``-o FILE``: stdout for the command's output.  Not a terminal, so text is plain as when piped; a
    write that fails (disk full) is an error naming the file, not a traceback."""

    def __init__(self, path: str, file: TextIO) -> None:
        super().__init__(file)
        self.path = path

    def write(self, text: str) -> int:
        try:
            return self._file.write(text)
        except OSError as e:
            raise SkbinspectError(f"cannot write {self.path}: {e.strerror or e}") from e

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            raise SkbinspectError(f"cannot write {self.path}: {e.strerror or e}") from e

    def close(self) -> None:
        self._file.close()


def _redirect_output(ctx: click.Context, output: Optional[str]) -> None:
    """``-o FILE``: sys.stdout is FILE until the command ends (``-`` is stdout).  The file is opened before
    the target, so that a path that cannot be written fails at once."""
    if output is None or output == "-":
        return
    try:
        f = open(output, "w", encoding="utf-8")  # noqa: SIM115 - closed when the command ends
    except OSError as e:
        raise SkbinspectError(f"cannot write the output file {output}: {e.strerror or e}.") from e
    ctx.obj.output = output
    saved = sys.stdout
    out = _OutputFile(output, f)
    sys.stdout = cast(TextIO, out)

    def restore() -> None:
        sys.stdout = saved
        try:
            out.close()
        except OSError as e:
            raise SkbinspectError(f"cannot write {output}: {e.strerror or e}") from e

    ctx.call_on_close(restore)


def _start_pager(ctx: click.Context) -> None:
    """Text on a terminal goes through the pager (skbinspect/cli/pager.py) until the command ends."""
    from skbinspect.cli.pager import PagedOutput, pager_command

    argv = pager_command()
    if argv is None or not sys.stdout.isatty() or ctx.invoked_subcommand == "completion":
        return
    saved = sys.stdout
    paged = PagedOutput(argv, saved)
    sys.stdout = cast(TextIO, paged)

    def restore() -> None:
        try:
            paged.close()
        finally:
            sys.stdout = saved

    ctx.call_on_close(restore)


#: Bugs met while reading (see :func:`skbinspect.memory.problems.note_bug`) by the command that ran last:
#: :func:`run` reports them after the command's output and exits with the internal-error status.
_bugs: List[str] = []


def _finish(state: State) -> None:
    """When a command ends: the damage it met and did not report itself, as warnings on stderr; the bugs
    it met, for :func:`run` to report once the output is out."""
    if state._target is None:
        return
    from skbinspect.memory.problems import take_bugs, take_problems

    prog = state._target.prog
    for p in take_problems(prog):
        click.echo(f"skbinspect: warning: {p}", err=True)
    _bugs.extend(take_bugs(prog))


def _group_options() -> Tuple[Set[str], Set[str]]:
    """The group's own options (also taken after the command: ``skbinspect ring tap0 --json``), as
    (options that take a value, flags), read from the click group itself so that a new global option is
    hoisted too.  ``--version`` and ``--help`` are left where they are typed."""
    valued: Set[str] = set()
    flags: Set[str] = set()
    for p in cli.params:
        if isinstance(p, click.Option):
            names = [n for n in p.opts + p.secondary_opts if n not in ("--version", "--help", "-h")]
            (flags if p.is_flag else valued).update(names)
    return valued, flags


def hoist_global_options(args: List[str]) -> List[str]:
    """``args`` with the group's options that follow the command moved before it, so that they mean the
    same wherever they are typed.  Stops at ``--``; no command's own option shares their names."""
    _GLOBAL_VALUED, _GLOBAL_FLAGS = _group_options()
    out: List[str] = []
    i = 0
    while i < len(args):  # the options before the command, and the command
        a = args[i]
        out.append(a)
        i += 1
        if a in _GLOBAL_VALUED and i < len(args):
            out.append(args[i])
            i += 1
        elif not a.startswith("-"):
            break
    moved: List[str] = []
    rest: List[str] = []
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        name = a.split("=", 1)[0]
        if a in _GLOBAL_FLAGS:
            moved.append(a)
        elif a in _GLOBAL_VALUED and i + 1 < len(args):
            moved += [a, args[i + 1]]
            i += 1
        elif a.startswith("--") and name in _GLOBAL_VALUED:
            moved.append(a)
        else:
            rest.append(a)
        i += 1
    if not moved:
        return list(args)
    return out[:-1] + moved + out[-1:] + rest


def run(args: Optional[List[str]] = None, obj: Any = None, prog_name: str = "skbinspect") -> int:
    """Run the CLI; returns the exit status.  Errors are one paragraph on stderr, never a traceback
    (set SKBINSPECT_DEBUG=1 to see one for an unexpected error).

    Nothing escapes, whatever happens to the output: a closed pipe (``| head``) is exit status 0, an
    interrupt 130, ``SystemExit`` from a library its status.  Inside drgn this keeps the session alive;
    the streams are left as they were (drgn owns and restores them).
    """
    del _bugs[:]
    try:
        # click's main() would turn a closed pipe into sys.exit(1) and swap sys.stdout/sys.stderr for
        # wrappers: the context is made and invoked here instead, and every outcome is handled below.
        argv = hoist_global_options(list(sys.argv[1:] if args is None else args))
        with cli.make_context(prog_name, argv, obj=obj) as ctx:
            cli.invoke(ctx)
        if _bugs:
            return _report_error(
                f"internal error while reading: {'; '.join(_bugs)}. The output above has everything else that "
                "could be read. This is a bug in skbinspect; rerun with SKBINSPECT_DEBUG=1 for the traceback and "
                "report it.",
                70,
            )
    except SkbinspectError as e:
        return _report_error(str(e), e.exit_code)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        return _report_error("aborted.", 130)
    except click.ClickException as e:
        e.show()
        # a typo on the command line is 64 (EX_USAGE, sysexits.h), not click's 2: that is a target that
        # cannot be opened
        return USAGE_EXIT if isinstance(e, click.UsageError) else e.exit_code
    except BrokenPipeError:
        # the reader went away (| head): not an error; main() quiets the stream for the exit
        return 0
    except KeyboardInterrupt:
        return _report_error("interrupted.", 130)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("SKBINSPECT_DEBUG"):
            traceback.print_exc()
        return _report_error(
            f"internal error: {type(e).__name__}: {e}. This is a bug in skbinspect; "
            "rerun with SKBINSPECT_DEBUG=1 for the traceback and report it.",
            70,
        )
    return 0


def _report_error(message: str, code: int) -> int:
    try:
        click.echo(f"skbinspect: error: {message}", err=True)
    except (BrokenPipeError, OSError, ValueError):  # stderr closed too: the status still tells
        pass
    return code


def main() -> None:
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:  # the shell asks for completions (the script of `skbinspect completion SHELL`)
        from click.shell_completion import shell_complete

        sys.exit(shell_complete(cli, {}, "skbinspect", COMPLETE_VAR, instruction))
    code = run()
    # A closed stdout (| head) leaves unwritten text buffered; the interpreter's exit would flush it and
    # report the BrokenPipeError (status 120).  Point the descriptor at /dev/null instead (the Python
    # documentation's recipe for SIGPIPE) -- only here, in the process skbinspect owns, never in drgn.
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(code)
