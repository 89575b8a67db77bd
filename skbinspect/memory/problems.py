"""What went wrong while reading a target, kept with the drgn program until the command reports it.

Two kinds, both recorded where they happen and reported once the command has printed what it read:

* **problems** (:func:`note_problem`): the target's memory is damaged or cannot be trusted -- a kernel
  list that loops, a per-CPU offset that cannot be right.  The reader worked around it and kept what it
  found; the command says so (a warning, or the notes of its JSON).
* **bugs** (:func:`note_bug`): an exception skbinspect did not expect while reading one object.  The
  object gets a note, the command goes on with the others and prints its output, then exits with the
  internal-error status (70) naming the bug: a bug never costs the evidence that could be read.
"""

from __future__ import annotations

import os
import traceback
from typing import List

import drgn

from skbinspect.memory.cache import per_program

__all__ = ["note_bug", "note_problem", "take_bugs", "take_problems"]

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
