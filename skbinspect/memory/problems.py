"""What went wrong while reading a target, kept with the drgn program until the command reports it.

Two kinds, both recorded where they happen and reported once the command has printed what it read:

* **problems** (:func:`note_problem`): the target's memory is damaged or cannot be trusted -- a kernel
  list that loops, a per-CPU offset that cannot be right.  The reader worked around it and kept what it
  found; the command says so (a warning, or the notes of its JSON).
* **bugs** (:func:`note_bug`): an exception skbinspect did not expect while reading one object.  The
  object gets a note, the command goes on with the others and prints its output, then exits with the
  internal-error status (70) naming the bug: a bug never costs the evidence that could be read.

A command made of sections (``report``: the devices, each device and queue, the trace, the counters;
``drops``: each trace instance) runs each one under :func:`section_note`: what one section raises
becomes a note naming it and the other sections are still read and printed.
"""

from __future__ import annotations

import os
import struct
import traceback
from typing import List

import drgn

from skbinspect.errors import SkbinspectError
from skbinspect.memory.cache import per_program
from skbinspect.memory.faults import READ_FAULTS

__all__ = ["DAMAGE", "note_bug", "note_problem", "section_note", "take_bugs", "take_problems"]

#: What damaged memory makes a reader raise: a fault, a value that does not fit (READ_FAULTS), a symbol or
#: type or index that is not there (LookupError), a garbage length or NULL where a number was meant
#: (TypeError, struct.error).  Raised while reading one section, it is damage of that section, not a bug.
DAMAGE = (*READ_FAULTS, LookupError, TypeError, struct.error)

_PROBLEMS = "skbinspect.problems"
_BUGS = "skbinspect.bugs"


def _list(prog: drgn.Program, key: str) -> List[str]:
    lst: List[str] = per_program(prog, key, lambda p: [])
    return lst


def note_problem(prog: drgn.Program, message: str) -> None:
    """Record damage that the command should report (each distinct message once)."""
    lst = _list(prog, _PROBLEMS)
    if message not in lst:
        lst.append(message)


def take_problems(prog: drgn.Program) -> List[str]:
    """The problems recorded since the last call, in order (and forget them)."""
    return prog.cache.pop(_PROBLEMS, None) or []


def note_bug(prog: drgn.Program, what: str, exc: BaseException) -> str:
    """Record an unexpected exception raised while reading ``what``; returns the note for that object.

    With ``SKBINSPECT_DEBUG`` set, the traceback is printed now."""
    if os.environ.get("SKBINSPECT_DEBUG"):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    message = f"{what}: {type(exc).__name__}: {exc}"
    lst = _list(prog, _BUGS)
    if message not in lst:
        lst.append(message)
    return f"internal error while reading {message} (a bug in skbinspect; the rest was read)"


def take_bugs(prog: drgn.Program) -> List[str]:
    """The bugs recorded since the last call (and forget them)."""
    return prog.cache.pop(_BUGS, None) or []


def section_note(prog: drgn.Program, what: str, exc: BaseException) -> str:
    """The note for one section of a command (``what``: "device tap0", "the trace", "the drop counters")
    that raised ``exc``; the caller keeps it with its output and goes on with the other sections.

    A clear error (:class:`~skbinspect.errors.SkbinspectError`) or damage (:data:`DAMAGE`) is said as it
    is; anything else is a bug (:func:`note_bug`: the command exits 70 once its output is printed)."""
    if isinstance(exc, SkbinspectError):
        return f"{what}: {exc}"
    if isinstance(exc, DAMAGE):
        if os.environ.get("SKBINSPECT_DEBUG"):
            traceback.print_exception(type(exc), exc, exc.__traceback__)
        if isinstance(exc, READ_FAULTS):
            return f"{what}: unreadable: {exc}"
        return f"{what}: unreadable (damaged memory? {type(exc).__name__}: {exc})"
    return note_bug(prog, what, exc)
