"""The ``skbinspect`` click group, its global target options and the shared :class:`State`; :func:`run`
turns errors into one paragraph and an exit status.  The commands live in the sibling modules, which
import this one (never the other way round)."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import click

from skbinspect import __version__
from skbinspect.errors import SkbinspectError
from skbinspect.target.opener import Target, open_target

__all__ = ["State", "cli", "main", "pass_state", "run"]

EPILOG = """\b
Targets (before the command, as with drgn):
  skbinspect info                      the live kernel, through /proc/kcore (needs root)
  skbinspect -c /var/crash/vmcore info a vmcore (ELF or kdump-compressed)
  skbinspect --qemu /run/qmp.sock info a running QEMU guest over QMP
  skbinspect -c vmcore -s ./vmlinux -s ./debug/ info
                                       debug info from given files or directories
\b
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


@click.group(
    epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option(
    "-c", "--core", metavar="PATH", help="Read a vmcore (ELF, or kdump-compressed by makedumpfile)."
)
@click.option("--qemu", metavar="SOCKET", help="Read a running QEMU guest through its QMP socket.")
@click.option(
    "-s",
    "--symbols",
    metavar="PATH",
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
) -> None:
    """Where did my packets go? Inspect tun/tap rings, drop reasons, per-CPU drop counters and the
    kernel's kfree_skb trace, on a live kernel, in a vmcore, or in a running QEMU guest."""
    if ctx.obj is None:
        ctx.obj = State(core, qemu, symbols, not no_default_symbols, json_, types=types)
    else:  # inside drgn: keep the session's program; take --json, and -s to add debug files to it
        if core or qemu:
            raise SkbinspectError(
                "-c/--qemu do not apply inside drgn: %skbinspect reads the session's program. Start drgn on the "
                "target instead (drgn -c VMCORE, or drgn --qemu SOCKET), or run the skbinspect command outside drgn."
            )
        ctx.obj.json = ctx.obj.json or json_
        if symbols:
            ctx.obj.symbols = ctx.obj.symbols + tuple(symbols)


def _report_error(message: str, code: int) -> int:
    click.echo(f"skbinspect: error: {message}", err=True)
    return code


def run(args: Optional[List[str]] = None, obj: Any = None, prog_name: str = "skbinspect") -> int:
    """Run the CLI; returns the exit status.  Errors are one paragraph on stderr, never a traceback
    (set SKBINSPECT_DEBUG=1 to see one for an unexpected error)."""
    try:
        cli.main(args=args, prog_name=prog_name, obj=obj, standalone_mode=False)
    except SkbinspectError as e:
        return _report_error(str(e), e.exit_code)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        return _report_error("aborted.", 130)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return _report_error("interrupted.", 130)
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("SKBINSPECT_DEBUG"):
            traceback.print_exc()
        return _report_error(
            f"internal error: {type(e).__name__}: {e}. This is a bug in skbinspect; "
            "rerun with SKBINSPECT_DEBUG=1 for the traceback and report it.",
            70,
        )
    return 0


def main() -> None:
    sys.exit(run())
