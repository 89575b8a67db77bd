"""Targets: opening the live kernel, a vmcore or a QEMU guest (:mod:`.opener`), finding debug info
(:mod:`.debuginfo`) and describing what was opened (:mod:`.info`, rendered by :mod:`.render`)."""

from skbinspect.target.opener import Target, kernel_version, open_target, target_from_program

__all__ = ["Target", "kernel_version", "open_target", "target_from_program"]
