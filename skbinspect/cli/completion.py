"""``skbinspect completion bash|zsh|fish``: the shell's completion script, from click's
``shell_completion`` (commands, options and choices; the script calls skbinspect back with
``_SKBINSPECT_COMPLETE`` set, which :func:`skbinspect.cli.app.main` answers before anything else)."""

from __future__ import annotations

import click

from skbinspect.cli.app import COMPLETE_VAR, cli

__all__ = ["completion"]

_EPILOG = """\b
Install (then open a new shell):
  bash:
    skbinspect completion bash \\
        > ~/.local/share/bash-completion/completions/skbinspect
    (or, for every user: > /etc/bash_completion.d/skbinspect; bash 4.4+)
  zsh:
    skbinspect completion zsh > ~/.zfunc/_skbinspect
    with  fpath+=~/.zfunc; autoload -Uz compinit; compinit  in ~/.zshrc
    (or: eval "$(skbinspect completion zsh)" in ~/.zshrc)
  fish:
    skbinspect completion fish \\
        > ~/.config/fish/completions/skbinspect.fish"""


@cli.command(epilog=_EPILOG)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish (commands, options, choices)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # click has all three
    click.echo(cls(cli, {}, "skbinspect", COMPLETE_VAR).source())
