"""``skbinspect report``: one post-mortem summary -- which queue dropped what, since when, and why."""

from __future__ import annotations

from typing import Optional

import click

from skbinspect.cli.app import State, cli, json_document, pass_state

__all__ = ["report"]

_EPILOG = """\b
Examples:
  skbinspect -c vmcore report                 verdicts first, then the evidence and the rules used
  skbinspect -c vmcore report -i skbinst      drops from a trace instance
  skbinspect -c vmcore --json report | jq '.verdicts[] | .summary'
\b
The exit status is 0 even when problems are found: this is a report, not a check."""


@cli.command(epilog=_EPILOG)
@click.option(
    "-i", "--instance", metavar="NAME", help="Read drops from this trace instance (default: top-level)."
)
@click.option("--no-stale", is_flag=True, help="Do not read what is left of freed (dropped) skbs.")
@pass_state
def report(state: State, instance: Optional[str], no_stale: bool) -> None:
    """Post-mortem summary: each tun/tap queue that is full or was dropping (drops by reason and location,
    time span, rate, the stalled reader), then the evidence: counters, stacks, the trace buffer's limits,
    and how the drops were tied to queues."""
    from skbinspect.memory.problems import take_problems
    from skbinspect.output import print_json
    from skbinspect.report.correlate import build_report
    from skbinspect.report.render import render_report

    target = state.target()
    rep = build_report(target.prog, instance, module_ok=target.debug.module_ok, stale=not no_stale)
    problems = take_problems(target.prog)
    rep.notes = list(target.warnings) + rep.notes + problems
    if state.json:  # notes keep the warnings too, as before the top-level warnings
        print_json(json_document(target, list(target.warnings) + problems, rep.to_json()))
    else:
        render_report(rep)
