"""``skbinspect drops``: kfree_skb drops in the trace, grouped by reason and location."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import click

from skbinspect.cli.app import State, cli, instance_options, json_document, pass_state
from skbinspect.cli.progress import progress
from skbinspect.errors import SkbinspectError

__all__ = ["drops"]


_EPILOG_DROPS = """\b
Examples:
  skbinspect -c vmcore drops
      kfree_skb drops by reason and location, with stacks
  skbinspect -c vmcore drops -i skbinst --reason FULL_RING
  skbinspect -c vmcore --json drops | jq '.groups[] | {reason, count}'
"""


def _known_reasons(prog: Any, names: Sequence[str]) -> Tuple[str, ...]:
    """``--reason`` values checked against the target's own drop-reason table, as its canonical names
    (``full_ring``, ``SKB_DROP_REASON_FULL_RING`` and the value give ``FULL_RING``).  A name this kernel
    does not have is an error naming the closest ones, not a silently empty report."""
    if not names:
        return ()
    import difflib

    from skbinspect.counters.reasons import drop_reason_table
    from skbinspect.target.opener import kernel_version

    table = drop_reason_table(prog)
    if not table.has_reasons:
        major, minor = kernel_version(prog)
        raise SkbinspectError(
            f"this kernel ({major}.{minor}) records no drop reasons (they came in 5.17), so --reason cannot "
            "filter; leave it out to see every kfree_skb drop by location."
        )
    out = []
    for n in names:
        r = table.lookup(n)
        if r is None:
            close = difflib.get_close_matches(n.upper(), [x.name for x in table.reasons], n=3, cutoff=0.6)
            raise SkbinspectError(
                f"unknown drop reason {n!r} on this kernel"
                + (f"; did you mean {', '.join(close)}?" if close else ".")
                + " `skbinspect reasons` lists the ones it has."
            )
        out.append(r.name)
    return tuple(out)


@cli.command(epilog=_EPILOG_DROPS)
@instance_options("Report")
@click.option(
    "--reason",
    "reasons",
    metavar="NAME",
    multiple=True,
    help="Only drops with this reason (repeatable), e.g. FULL_RING.",
)
@click.option(
    "--top-stacks",
    "n_stacks",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    metavar="N",
    help="The N most common stacks of each group (0: none). Was --stacks N (trace's --stacks is a flag).",
)
@click.option(
    "--stacks", "old_stacks", type=click.IntRange(min=0), hidden=True, help="Deprecated: --top-stacks."
)
@click.option("--no-timeline", is_flag=True, help="Leave out the chart of drops over time.")
@pass_state
def drops(
    state: State,
    instance: Optional[str],
    all_instances: bool,
    reasons: Tuple[str, ...],
    n_stacks: int,
    old_stacks: Optional[int],
    no_timeline: bool,
) -> None:
    """kfree_skb drops in the trace buffer, grouped by reason and location: counts, first and last
    time, rate, the most common stacks, the tasks, the device when the buffer names it, and a chart of
    each reason's drops over time (one sparkline per reason on one scale, its peak rate, seconds before
    the last drop in the trace)."""
    from skbinspect.ftrace.drops import drops_report
    from skbinspect.ftrace.reader import TraceReader
    from skbinspect.ftrace.render import render_drops
    from skbinspect.ftrace.select import selected_arrays
    from skbinspect.memory.problems import DAMAGE, note_problem, section_note, take_problems
    from skbinspect.output import print_json

    if old_stacks is not None:  # the deprecated spelling, still honoured
        n_stacks = old_stacks
    target = state.target()
    prog = target.prog
    reasons = _known_reasons(prog, reasons)
    reports = []
    arrays = selected_arrays(prog, instance, all_instances)
    for tr in arrays:
        cb, done = progress(f"decoding {tr.name}")
        try:
            reports.append(
                drops_report(
                    prog,
                    reader=TraceReader(prog, tr, None, cb),
                    reasons=reasons,
                    module_ok=target.debug.module_ok,
                )
            )
        except Exception as e:  # noqa: BLE001 - one instance's damage is a note; the others are still read
            if len(arrays) == 1 and isinstance(e, SkbinspectError):
                raise
            note = section_note(prog, f"trace instance {tr.name}", e)
            if len(arrays) == 1 and isinstance(e, DAMAGE):
                raise SkbinspectError(f"cannot read the drops: {note}") from None
            note_problem(prog, note)  # a bug: exit 70 once the other instances are printed
        finally:
            done()
    if not reports and not all_instances:
        return  # its bug is reported (exit 70)
    if state.json:
        warnings = target.warnings + take_problems(prog)
        if len(reports) == 1 and not all_instances:
            print_json(json_document(target, warnings, reports[0].to_json(n_stacks)))
        else:  # one document: the instances' reports in a list
            print_json(json_document(target, warnings, {"instances": [r.to_json(n_stacks) for r in reports]}))
        return
    for i, rep in enumerate(reports):
        if i:
            click.echo()
        render_drops(rep, stacks=n_stacks, timeline=not no_timeline)
