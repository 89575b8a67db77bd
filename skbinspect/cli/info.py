"""``skbinspect info``: the target kind, kernel release, CPUs, debug info found and missing."""

from __future__ import annotations

from skbinspect.cli.app import State, cli, json_document, pass_state

__all__ = ["info"]


@cli.command(
    epilog="""\b
Examples:
  skbinspect -c vmcore info
  skbinspect --json info | jq .missing_debug_info"""
)
@pass_state
def info(state: State) -> None:
    """Target kind, kernel release, CPUs, debug info found and missing; crash time and panic message."""
    from skbinspect.output import print_json
    from skbinspect.target.info import target_info
    from skbinspect.target.render import render_info

    target = state.target()
    ti = target_info(target)
    if state.json:
        print_json(json_document(target, ti.warnings, ti.to_json()))
    else:
        render_info(ti)
