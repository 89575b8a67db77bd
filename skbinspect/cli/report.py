"""``skbinspect report``: one post-mortem summary -- which queue dropped what, since when, and why."""

from __future__ import annotations

from typing import Optional

import click

from skbinspect.cli.app import State, cli, pass_state
from skbinspect.cli.progress import progress

__all__ = ["report"]

_EPILOG = """\b
Examples:
  skbinspect -c vmcore report                 one line per verdict, then the detail and the evidence
  skbinspect -c vmcore report --explain       ... and the rules that tied drops to queues
  skbinspect -c vmcore report --verbose       ... listing every stale skb read
  skbinspect -c vmcore report -i skbinst      drops from a trace instance
  skbinspect -c vmcore --json report | jq '.verdicts[] | .summary'
\b
The exit status is 0 even when problems are found: this is a report, not a check."""


@cli.command(epilog=_EPILOG)
@click.option(
    "-i", "--instance", metavar="NAME", help="Read drops from this trace instance (default: top-level)."
)
@click.option("--no-stale", is_flag=True, help="Do not read what is left of freed (dropped) skbs.")
@click.option("--explain", is_flag=True, help="Also print the rules that tied drops to devices and queues.")
@click.option(
    "--verbose", is_flag=True, help="List each stale skb read (by default folded into a count per queue)."
)
@pass_state
def report(state: State, instance: Optional[str], no_stale: bool, explain: bool, verbose: bool) -> None:
    """Post-mortem summary: each tun/tap queue that is full or was dropping (drops by reason and location,
    time span, rate, the stalled reader), then the evidence: counters, stacks, the trace buffer's limits,
    and how the drops were tied to queues."""
    from skbinspect.memory.problems import take_problems
    from skbinspect.output import print_json
    from skbinspect.report.correlate import build_report
    from skbinspect.report.render import render_report

    target = state.target()
    cb, done = progress(f"decoding {instance or 'the trace'}")
    try:
        rep = build_report(
            target.prog, instance, module_ok=target.debug.module_ok, stale=not no_stale, progress=cb
        )
    finally:
        done()
    rep.notes = list(target.warnings) + rep.notes + take_problems(target.prog)
    if state.json:
        d = rep.to_json()
        d["target"] = {"kind": target.kind, "source": target.source, "release": target.release}
        print_json(d)
    else:
        render_report(rep, explain=explain, verbose=verbose)
