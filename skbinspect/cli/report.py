"""``skbinspect report``: one post-mortem summary -- which queue dropped what, since when, and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import click

from skbinspect.cli.app import State, cli, json_document, pass_state
from skbinspect.cli.progress import progress

if TYPE_CHECKING:
    from skbinspect.report.correlate import Report

__all__ = ["report"]

_EPILOG = """\b
Examples:
  skbinspect -c vmcore report
      one line per verdict, then the detail and the evidence
  skbinspect -c vmcore report --explain
      ... and the rules that tied drops to queues
  skbinspect -c vmcore report --verbose
      ... listing every stale skb read
  skbinspect -c vmcore report -i skbinst
      drops from a trace instance
  skbinspect -c vmcore report --svg drops.svg
      also the drops-over-time chart as an SVG file
  skbinspect -c vmcore --json report | jq '.verdicts[] | .summary'

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
@click.option(
    "--svg",
    "svg",
    metavar="FILE",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the drops-over-time chart to FILE as a standalone SVG (to attach to a ticket).",
)
@pass_state
def report(
    state: State, instance: Optional[str], no_stale: bool, explain: bool, verbose: bool, svg: Optional[str]
) -> None:
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
    problems = take_problems(target.prog)
    rep.notes = list(target.warnings) + rep.notes + problems
    if svg:
        _write_svg(svg, rep, target.release)
    if state.json:  # notes keep the warnings too, as before the top-level warnings
        print_json(json_document(target, list(target.warnings) + problems, rep.to_json()))
    else:
        render_report(rep, explain=explain, verbose=verbose)


def _write_svg(path: str, rep: "Report", release: str) -> None:
    from skbinspect.chart import fit_chart
    from skbinspect.errors import SkbinspectError

    ch = None
    if rep.drop_times is not None:
        times, in_ns, end = rep.drop_times
        ch = fit_chart(times, in_ns, None, end, max_buckets=120)
    if ch is None:
        raise SkbinspectError(f"no drops in the trace: no chart to write to {path}")
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(ch.svg(f"kfree_skb drops over time ({release})"))
    except OSError as e:
        raise SkbinspectError(f"cannot write {path}: {e.strerror or e}") from e
    click.echo(
        f"wrote the drops-over-time chart ({ch.total()} drops, {ch.buckets} buckets) to {path}", err=True
    )
