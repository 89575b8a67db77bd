"""``skbinspect trace`` and ``skbinspect drops``: the kernel's ftrace ring buffers, decoded from memory."""

from __future__ import annotations

import sys
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, TextIO, Tuple

import click

from .cli import State, cli, pass_state
from .errors import SkbinspectError

__all__ = ["trace", "drops"]


def _progress(label: str) -> Tuple[Optional[Callable[[int, int], None]], Callable[[], None]]:
    """A progress callback for long decodes, shown on stderr only when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None, lambda: None
    state = {"last": 0, "shown": False}

    def cb(done: int, total: int) -> None:
        if done - state["last"] < 256 and done != total:
            return
        state["last"] = done
        state["shown"] = True
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\r{label}: {done}/{total} sub-buffers ({pct}%)")
        sys.stderr.flush()

    def end() -> None:
        if state["shown"]:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    return cb, end


def _arrays(prog: Any, instance: Optional[str], all_instances: bool) -> List[Any]:
    from .ftrace import find_trace_array, trace_arrays

    if all_instances:
        if instance:
            raise SkbinspectError("give --instance NAME or --all-instances, not both.")
        return trace_arrays(prog)
    return [find_trace_array(prog, instance)]


def _event_ids(reader: Any, events: Sequence[str]) -> Optional[set]:
    if not events:
        return None
    ids = set()
    for e in events:
        f = reader.formats.lookup(e)
        if f is None:
            name = e.split(":")[-1]
            close = sorted(x for x in reader.formats.by_name if name in x)[:8]
            raise SkbinspectError(
                f"no event {e!r} in this kernel" + (f" (similar: {', '.join(close)})." if close else ".")
                + " Give events as SYSTEM:NAME, e.g. skb:kfree_skb."
            )
        ids.add(f.id)
    return ids


_EPILOG_TRACE = """\b
Examples:
  skbinspect -c vmcore trace                         the top-level buffer, like /sys/kernel/tracing/trace
  skbinspect -c vmcore trace --stacks --last 20      the last 20 events, with their kernel stacks
  skbinspect -c vmcore trace -i skbinst -e skb:kfree_skb
  skbinspect -c vmcore trace --all-instances --since 2.5
  skbinspect -c vmcore --json trace --stacks | jq 'select(.reason == "FULL_RING")'
"""


@cli.command(epilog=_EPILOG_TRACE)
@click.option("-i", "--instance", metavar="NAME", help="Read this trace instance (default: the top-level buffer).")
@click.option("--all-instances", is_flag=True, help="Read the top-level buffer and every instance.")
@click.option("-e", "--event", "events", metavar="SYSTEM:NAME", multiple=True,
              help="Only these events (repeatable), e.g. skb:kfree_skb.")
@click.option("--cpu", "cpus", type=int, multiple=True, help="Only this CPU's buffer (repeatable).")
@click.option("--last", type=click.IntRange(min=1), metavar="N", help="Only the last N events.")
@click.option("--since", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Only events recorded in the last SECONDS before the last record in the buffer.")
@click.option("--stacks", is_flag=True, help="Show the kernel stack recorded with each event.")
@pass_state
def trace(state: State, instance: Optional[str], all_instances: bool, events: Tuple[str, ...],
          cpus: Tuple[int, ...], last: Optional[int], since: Optional[float], stacks: bool) -> None:
    """Events of the kernel's ftrace ring buffer, decoded from memory, oldest first.

    Text output has the line format of the tracefs trace file; with --json, one object per event per
    line (streamed).  Losses (the buffer wrapped, events dropped) and anything skipped as corrupt are
    reported too.
    """
    from .ftrace import TraceReader
    from .render_trace import TraceTextFormatter, loss_lines, trace_header
    from .skb_events import symbolizer

    prog = state.target().prog
    arrays = _arrays(prog, instance, all_instances)
    out = sys.stdout
    syms = symbolizer(prog)
    for n, tr in enumerate(arrays):
        cb, done = _progress(f"decoding {tr.name}")
        reader = TraceReader(prog, tr, cpus or None, cb)
        want = _event_ids(reader, events)
        fmt = TraceTextFormatter(reader, syms)
        try:
            threshold = None
            if since is not None:
                end = _last_ts(reader)
                reader = TraceReader(prog, tr, cpus or None, cb)
                fmt = TraceTextFormatter(reader, syms)
                if end is not None:
                    threshold = end - int(since * (1e9 if tr.in_ns else 1))
            if state.json:
                _emit_json(reader, fmt, out, want, last, threshold, stacks)
            else:
                if n:
                    out.write("\n")
                header = trace_header(tr, reader, len(tr.cpus))
                out.write("\n".join(header) + "\n")
                _emit_text(reader, fmt, out, want, last, threshold, stacks)
        finally:
            done()
        notes = loss_lines(tr, reader) + [f"warning: {w}" for w in reader.warnings]
        if notes:
            if state.json:
                for line in notes:
                    click.echo(f"skbinspect: {tr.name}: {line}", err=True)
            else:
                out.write("".join(f"# {line}\n" for line in notes))
        out.flush()


def _last_ts(reader: Any) -> Optional[int]:
    shift = reader.codec.shift
    end = None
    for keys, _ in reader.windows():
        if keys:
            t = max(keys) >> shift
            if end is None or t > end:
                end = t
    return end


def _emit_text(reader: Any, fmt: Any, out: TextIO, want: Optional[set], last: Optional[int],
               threshold: Optional[int], stacks: bool) -> None:
    """Records in the trace file's order; a stack record is shown (with --stacks) when the event it
    follows on its CPU is shown, or on its own when no event precedes it (the buffer wrapped)."""
    st = reader.stack_type
    kept_last: Dict[int, Optional[bool]] = {}  # cpu -> was the last non-stack record shown
    tail: Optional[Deque[Any]] = deque() if last else None
    n_events = 0
    trimmed = False
    buf: List[str] = []
    write = out.write
    for ev in reader.raw_events():
        if ev.type == st:
            prev = kept_last.get(ev.cpu)
            show = stacks and (prev if prev is not None else want is None)
            if show and threshold is not None and ev.ts < threshold:
                show = False
            if not show:
                continue
        else:
            ok = (want is None or ev.type in want) and (threshold is None or ev.ts >= threshold)
            kept_last[ev.cpu] = ok
            if not ok:
                continue
        if tail is not None:
            tail.append(ev)
            if ev.type != st:
                n_events += 1
                while n_events > last:  # type: ignore[operator]
                    trimmed = True
                    if tail.popleft().type != st:
                        n_events -= 1
            continue
        buf.append(fmt.text(ev))
        if len(buf) >= 512:
            write("\n".join(buf) + "\n")
            buf.clear()
    if tail is not None:
        # stack records left at the front belong to events that were cut off
        while trimmed and tail and tail[0].type == st:
            tail.popleft()
        for ev in tail:
            buf.append(fmt.text(ev))
    if buf:
        write("\n".join(buf) + "\n")


def _emit_json(reader: Any, fmt: Any, out: TextIO, want: Optional[set], last: Optional[int],
               threshold: Optional[int], stacks: bool) -> None:
    from .render_trace import JsonLines

    lines = JsonLines(fmt, reader.tr.name, stacks)
    line = lines.line_key
    st = reader.stack_type
    types = None
    if want is not None:
        types = set(want)
    skip_orphans = want is None and not stacks  # stack records whose event was overwritten: --stacks only
    shift = reader.codec.shift
    stacks_of = reader._stacks
    if last is None:  # the streamed common case
        lines.write_all(reader.grouped_windows(types), out, stacks_of, st if skip_orphans else None, threshold)
        return
    pop = stacks_of.pop
    tail: Deque[Any] = deque(maxlen=last)
    for k, page, pid in reader.grouped_keys(types):
        srec = pop((k, pid), None) if stacks_of else None
        if skip_orphans and k & 0xFFFF == st:
            continue
        if threshold is not None and k >> shift < threshold:
            continue
        tail.append((k, page, srec))
    buf = [line(k, page, srec) for k, page, srec in tail]
    if buf:
        out.write("\n".join(buf) + "\n")


_EPILOG_DROPS = """\b
Examples:
  skbinspect -c vmcore drops                    kfree_skb drops by reason and location, with stacks
  skbinspect -c vmcore drops -i skbinst --reason FULL_RING
  skbinspect -c vmcore --json drops | jq '.groups[] | {reason, location_symbol, count}'
"""


def _known_reasons(prog: Any, names: Sequence[str]) -> Tuple[str, ...]:
    """``--reason`` values checked against the target's own drop-reason table, as its canonical names
    (``full_ring``, ``SKB_DROP_REASON_FULL_RING`` and the value give ``FULL_RING``).  A name this kernel
    does not have is an error naming the closest ones, not a silently empty report."""
    if not names:
        return ()
    import difflib

    from .reasons import drop_reason_table
    from .target import kernel_version

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
@click.option("-i", "--instance", metavar="NAME", help="Read this trace instance (default: the top-level buffer).")
@click.option("--all-instances", is_flag=True, help="Report the top-level buffer and every instance.")
@click.option("--reason", "reasons", metavar="NAME", multiple=True,
              help="Only drops with this reason (repeatable), e.g. FULL_RING.")
@click.option("--stacks", "n_stacks", type=click.IntRange(min=0), default=3, show_default=True, metavar="N",
              help="The N most common stacks of each group (0: none).")
@click.option("--no-timeline", is_flag=True, help="Leave out the per-reason timeline.")
@pass_state
def drops(state: State, instance: Optional[str], all_instances: bool, reasons: Tuple[str, ...], n_stacks: int,
          no_timeline: bool) -> None:
    """kfree_skb drops in the trace buffer, grouped by reason and location: counts, first and last
    time, rate, the most common stacks, the tasks, the device when the buffer names it, and a timeline
    of each reason over the recorded span."""
    from .drops import drops_report
    from .ftrace import TraceReader
    from .render import print_json
    from .render_trace import render_drops

    prog = state.target().prog
    reasons = _known_reasons(prog, reasons)
    reports = []
    for tr in _arrays(prog, instance, all_instances):
        cb, done = _progress(f"decoding {tr.name}")
        try:
            reports.append(drops_report(prog, reader=TraceReader(prog, tr, None, cb), reasons=reasons))
        finally:
            done()
    if state.json:
        if len(reports) == 1 and not all_instances:
            print_json(reports[0].to_json(n_stacks))
        else:
            print_json([r.to_json(n_stacks) for r in reports])
        return
    for i, rep in enumerate(reports):
        if i:
            click.echo()
        render_drops(rep, stacks=n_stacks, timeline=not no_timeline)
