"""``skbinspect trace``: the kernel's ftrace ring buffers, decoded from memory, as tracefs text or JSON."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Dict, List, Optional, Set, Tuple

import click

from skbinspect.cli.app import State, cli, instance_options, json_document, pass_state
from skbinspect.cli.progress import progress
from skbinspect.errors import SkbinspectError

__all__ = ["trace"]


_EPILOG_TRACE = """\b
Examples:
  skbinspect -c vmcore trace
      the top-level buffer, like /sys/kernel/tracing/trace
  skbinspect -c vmcore trace --stacks --last 20
      the last 20 events, with their kernel stacks
  skbinspect -c vmcore trace -i skbinst --event skb:kfree_skb
  skbinspect -c vmcore trace --all-instances --since 2.5
  skbinspect -c vmcore --json trace | jq 'select(.reason == "FULL_RING")'
"""


def _cpus(cpus: Set[int]) -> str:
    return ", ".join(map(str, sorted(cpus))) or "none"


@cli.command(epilog=_EPILOG_TRACE)
@instance_options("Read")
@click.option(
    "--event",
    "events",
    metavar="SYSTEM:NAME",
    multiple=True,
    help="Only these events (repeatable), e.g. skb:kfree_skb. (No short form: -e is ring's --entries.)",
)
@click.option("--cpu", "cpus", type=int, multiple=True, help="Only this CPU's buffer (repeatable).")
@click.option("--last", type=click.IntRange(min=1), metavar="N", help="Only the last N events.")
@click.option(
    "--since",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Only events recorded in the last SECONDS before the last record in the buffer.",
)
@click.option("--stacks", is_flag=True, help="Show the kernel stack recorded with each event.")
@pass_state
def trace(
    state: State,
    instance: Optional[str],
    all_instances: bool,
    events: Tuple[str, ...],
    cpus: Tuple[int, ...],
    last: Optional[int],
    since: Optional[float],
    stacks: bool,
) -> None:
    """Events of the kernel's ftrace ring buffer, decoded from memory, oldest first.

    Text output has the line format of the tracefs trace file; with --json, one object per event per
    line (streamed), then one summary object ("record": "summary": target, warnings, and each buffer's
    losses and notes).  Losses (the buffer wrapped, events dropped) and anything skipped as corrupt are
    reported too.
    """
    from skbinspect.ftrace.reader import TraceReader
    from skbinspect.ftrace.render import TraceTextFormatter, loss_lines, trace_header
    from skbinspect.ftrace.select import event_ids, last_timestamp, selected_arrays, write_json, write_text
    from skbinspect.ftrace.skb_events import symbolizer

    if since is not None and not math.isfinite(since):
        raise click.BadParameter(
            f"{since} is not a number of seconds (leave --since out for everything).", param_hint="--since"
        )
    target = state.target()
    prog = target.prog
    arrays = selected_arrays(prog, instance, all_instances)
    if cpus:
        have = {c.cpu for tr in arrays for c in tr.cpus}
        unknown = sorted(set(cpus) - have)
        if unknown:
            raise SkbinspectError(
                f"--cpu {', '.join(map(str, unknown))}: no such CPU in the trace buffer"
                + (
                    f"s (they have CPU {_cpus(have)})."
                    if len(arrays) > 1
                    else f" (it has CPU {_cpus(have)})."
                )
            )
    out = sys.stdout
    syms = symbolizer(prog)
    summaries: List[Dict[str, Any]] = []
    for n, tr in enumerate(arrays):
        cb, done = progress(f"decoding {tr.name}", streaming=True)
        reader = TraceReader(prog, tr, cpus or None, cb)
        want = event_ids(reader, events)
        fmt = TraceTextFormatter(reader, syms)
        try:
            threshold = None
            if since is not None:
                end = last_timestamp(reader)
                reader = TraceReader(prog, tr, cpus or None, cb)
                fmt = TraceTextFormatter(reader, syms)
                if end is not None:
                    threshold = end - int(since * (1e9 if tr.in_ns else 1))
            if state.json:
                write_json(reader, fmt, out, want, last, threshold, stacks)
            else:
                if n:
                    out.write("\n")
                header = trace_header(tr, reader, len(tr.cpus))
                out.write("\n".join(header) + "\n")
                write_text(reader, fmt, out, want, last, threshold, stacks)
        finally:
            done()
        notes = loss_lines(tr, reader) + [f"warning: {w}" for w in reader.warnings]
        if state.json:
            summaries.append(_instance_summary(tr, reader, notes))
            for line in notes:  # for the person watching too; the summary record has them
                click.echo(f"skbinspect: {tr.name}: {line}", err=True)
        elif notes:
            out.write("".join(f"# {line}\n" for line in notes))
        out.flush()
    if state.json:
        from skbinspect.memory.problems import take_problems

        doc = json_document(target, target.warnings + take_problems(prog), {"instances": summaries})
        out.write(json.dumps({"record": "summary", **doc}, default=str) + "\n")
        out.flush()


def _instance_summary(tr: Any, reader: Any, notes: List[str]) -> Dict[str, Any]:
    """One buffer's part of ``trace --json``'s summary record: what was lost and skipped (docs/json.md)."""
    return {
        "instance": tr.name,
        "entries": sum(c.entries for c in reader.cpu_buffers),
        "lost": sum(c.overrun + c.dropped + c.commit_overrun for c in reader.cpu_buffers),
        "cpus": [c.to_json() for c in reader.cpu_buffers],
        "missed_sub_buffers": reader.missed_pages,
        "skipped": [str(d) for d in reader.damage],
        "notes": notes,
    }
