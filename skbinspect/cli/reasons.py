"""``skbinspect reasons``: the target's own drop-reason table."""

from __future__ import annotations

from typing import Any, List, Optional

import click

from skbinspect.cli.app import State, cli, json_document, pass_state
from skbinspect.errors import SkbinspectError

__all__ = ["reasons"]

REASONS_EPILOG = """\b
Examples:
  skbinspect reasons
      the whole table: value, name, subsystem, where the name came from
  skbinspect reasons 55
      what reason 55 is on this kernel
  skbinspect reasons FULL_RING
      which value FULL_RING has on this kernel
  skbinspect reasons --tuntap
      only the tun/tap and ring/queue/backlog reasons
  skbinspect --json reasons
      JSON: has_reasons, subsystems, notes, reasons[]

Numbers differ between kernels (FULL_RING is 55 on 6.1, 67 on 6.12, 78 on 7.x): everything here is
read from the target.  Kernels before 5.17 (e.g. 5.10) record no reasons."""


def _close_names(key: str, table: Any) -> List[str]:
    """Names like ``key``: those containing it (``FULL`` -> ``FULL_RING``), then difflib's close ones, as
    ``drops --reason`` suggests them."""
    import difflib

    names = [r.name for r in table.reasons]
    k = key.upper().removeprefix("SKB_DROP_REASON_")
    close = [n for n in names if k and k in n][:3]
    close += [n for n in difflib.get_close_matches(k, names, n=3, cutoff=0.6) if n not in close]
    return close[:3]


@cli.command(epilog=REASONS_EPILOG)
@click.argument("key", required=False, metavar="[VALUE|NAME]")
@click.option(
    "-S", "--subsystem", metavar="NAME", help="Only this subsystem (core, openvswitch, qdisc, ...)."
)
@click.option("--tuntap", is_flag=True, help="Only the tun/tap reasons and the ring/queue/backlog reasons.")
@pass_state
def reasons(state: State, key: Optional[str], subsystem: Optional[str], tuntap: bool) -> None:
    """The target's drop reasons: value, name, subsystem; or look one up by value or name."""
    from dataclasses import replace

    from skbinspect.counters.reasons import drop_reason_table
    from skbinspect.counters.render import render_reason, render_reasons
    from skbinspect.memory.problems import take_problems
    from skbinspect.output import print_json

    target = state.target()
    table = drop_reason_table(target.prog)
    shown = table.reasons
    if key is not None and table.has_reasons:
        r = table.lookup(key)
        if r is None:
            hint = ""
            try:
                hint = f" (as a value it would be {table.label(int(key, 0))})"
            except ValueError:
                pass
            raise SkbinspectError(
                f"this kernel ({target.release}) has no drop reason {key!r}{hint}"
                + (f"; did you mean {', '.join(close)}?" if (close := _close_names(key, table)) else ".")
                + " `skbinspect reasons` lists them all."
            )
        shown = [r]
    if subsystem:
        shown = [r for r in shown if r.subsystem == subsystem.lower()]
        if table.has_reasons and subsystem.lower() not in table.subsystems.values():
            raise SkbinspectError(
                f"this kernel ({target.release}) has no drop-reason subsystem {subsystem!r}; "
                f"it has: {', '.join(sorted(table.subsystems.values()))}."
            )
    if tuntap:
        shown = [r for r in shown if r.tags]
    if state.json:
        d = table.to_json()
        d["reasons"] = [r.to_json() for r in shown]
        d["release"] = target.release
        print_json(json_document(target, target.warnings + take_problems(target.prog), d))
        return
    for w in target.warnings:
        click.echo(f"warning: {w}", err=True)
    if key is not None and table.has_reasons:
        render_reason(table, shown[0])
    else:
        render_reasons(replace(table, reasons=shown), target.release)
