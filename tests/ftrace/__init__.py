"""Unit tests of skbinspect.ftrace on hand-built bytes (no kernel, no drgn target)."""
