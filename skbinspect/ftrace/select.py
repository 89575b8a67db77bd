"""Which trace arrays and records a trace command shows: ``--instance``/``--all-instances``, ``-e``
event filters, ``--since`` and ``--last``, written as tracefs text or JSON lines."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Deque, Dict, List, Optional, Sequence, Set, TextIO, Tuple

from skbinspect.errors import SkbinspectError

if TYPE_CHECKING:
    import drgn

    from skbinspect.ftrace.reader import TraceArray, TraceEvent, TraceReader
    from skbinspect.ftrace.render import TraceTextFormatter

__all__ = ["event_ids", "last_timestamp", "selected_arrays", "write_json", "write_text"]


def selected_arrays(prog: drgn.Program, instance: Optional[str], all_instances: bool) -> List[TraceArray]:
    from skbinspect.ftrace.reader import find_trace_array, trace_arrays

    if all_instances:
        if instance:
            raise SkbinspectError("give --instance NAME or --all-instances, not both.")
        return trace_arrays(prog)
    return [find_trace_array(prog, instance)]


def event_ids(reader: TraceReader, events: Sequence[str]) -> Optional[Set[int]]:
    if not events:
        return None
    ids = set()
    for e in events:
        f = reader.formats.lookup(e)
        if f is None:
            name = e.split(":")[-1]
            close = sorted(x for x in reader.formats.by_name if name in x)[:8]
            raise SkbinspectError(
                f"no event {e!r} in this kernel"
                + (f" (similar: {', '.join(close)})." if close else ".")
                + " Give events as SYSTEM:NAME, e.g. skb:kfree_skb."
            )
        ids.add(f.id)
    return ids


def last_timestamp(reader: TraceReader) -> Optional[int]:
    ts_of = reader.codec.ts
    end = None
    for keys, _ in reader.windows():
        if keys:
            t = ts_of(max(keys))
            if end is None or t > end:
                end = t
    return end


def write_text(
    reader: TraceReader,
    fmt: TraceTextFormatter,
    out: TextIO,
    want: Optional[Set[int]],
    last: Optional[int],
    threshold: Optional[int],
    stacks: bool,
) -> None:
    """Records in the trace file's order; a stack record is shown (with --stacks) when the event it
    follows on its CPU is shown, or on its own when no event precedes it (the buffer wrapped)."""
    st = reader.stack_type
    kept_last: Dict[int, Optional[bool]] = {}  # cpu -> was the last non-stack record shown
    tail: Optional[Deque[TraceEvent]] = deque() if last else None
    limit = last or 0  # with a tail, the number of events it keeps
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
                while n_events > limit:
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


def write_json(
    reader: TraceReader,
    fmt: TraceTextFormatter,
    out: TextIO,
    want: Optional[Set[int]],
    last: Optional[int],
    threshold: Optional[int],
    stacks: bool,
) -> None:
    from skbinspect.ftrace.render import JsonLines

    lines = JsonLines(fmt, reader.tr.name, stacks)
    line = lines.line_key
    st = reader.stack_type
    types = None
    if want is not None:
        types = set(want)
    skip_orphans = want is None and not stacks  # stack records whose event was overwritten: --stacks only
    codec = reader.codec
    stacks_of = reader.attached_stacks
    if last is None:  # the streamed common case
        lines.write_all(
            reader.grouped_windows(types), out, stacks_of, st if skip_orphans else None, threshold
        )
        return
    pop = stacks_of.pop
    tail: Deque[Tuple[int, bytes, Optional[List[Tuple[bytes, int]]]]] = deque(maxlen=last)
    for k, page, page_id in reader.grouped_keys(types):
        srec = pop((k, page_id), None) if stacks_of else None
        if skip_orphans and codec.type(k) == st:
            continue
        if threshold is not None and codec.ts(k) < threshold:
            continue
        tail.append((k, page, srec))
    buf = [line(k, page, srec) for k, page, srec in tail]
    if buf:
        out.write("\n".join(buf) + "\n")
