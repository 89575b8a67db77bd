"""The ``skbinspect`` command line: global target options, then a command.  A thin layer over the API.

:mod:`skbinspect.cli.app` holds the click group and the shared state; each command is a module of its
own that registers itself on the group when imported here.
"""

from __future__ import annotations

from skbinspect.cli import (  # noqa: F401  (registers the commands)
    completion,
    drops,
    info,
    reasons,
    report,
    ring,
    stats,
    trace,
)
from skbinspect.cli.app import State, cli, main, run

__all__ = ["State", "cli", "main", "run"]
