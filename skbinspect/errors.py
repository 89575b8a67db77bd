"""Errors skbinspect reports to people: one clear paragraph, never a traceback."""

from __future__ import annotations

__all__ = ["SkbinspectError", "TargetError", "DebugInfoError"]


class SkbinspectError(Exception):
    """An error with a message written for the user. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class TargetError(SkbinspectError):
    """The target (live kernel, vmcore, QEMU guest) cannot be opened."""

    exit_code = 2


class DebugInfoError(SkbinspectError):
    """Debugging information is missing or does not match the target."""

    exit_code = 3
