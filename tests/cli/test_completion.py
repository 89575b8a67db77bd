"""``skbinspect completion bash|zsh|fish`` and click's completion protocol (``_SKBINSPECT_COMPLETE``), run
as the shells run them: a separate skbinspect process answering the environment, and bash itself sourcing
the script and completing a command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]


def skbinspect(*args: str, env: Dict[str, str] = {}) -> subprocess.CompletedProcess:  # noqa: B006
    full = dict(os.environ, PYTHONPATH=str(REPO), **env)
    full.pop("SKBINSPECT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "skbinspect", *args], capture_output=True, text=True, env=full, timeout=120
    )


@pytest.mark.parametrize(
    "shell, needle",
    [
        ("bash", "complete -o nosort -F _skbinspect_completion skbinspect"),
        ("zsh", "compdef _skbinspect_completion skbinspect"),
        ("fish", "complete --no-files --command skbinspect"),
    ],
)
def test_completion_script(shell: str, needle: str) -> None:
    p = skbinspect("completion", shell)
    assert p.returncode == 0, p.stderr
    assert "_SKBINSPECT_COMPLETE" in p.stdout and needle in p.stdout, p.stdout
    assert p.stderr == ""


def test_completion_of_an_unknown_shell_is_a_usage_error() -> None:
    p = skbinspect("completion", "tcsh")
    assert p.returncode != 0 and "tcsh" in p.stderr and "Traceback" not in p.stderr


def complete(words: str, cword: int) -> List[str]:
    p = skbinspect(
        env={"_SKBINSPECT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_protocol_completes_commands_options_and_choices() -> None:
    assert complete("skbinspect ri", 1) == ["plain,ring"]
    assert complete("skbinspect re", 1) == ["plain,reasons", "plain,report"]
    assert complete("skbinspect ring --st", 2) == ["plain,--stale"]
    assert complete("skbinspect --col", 1) == ["plain,--color"]
    assert complete("skbinspect --color ", 2) == ["plain,auto", "plain,always", "plain,never"]
    assert complete("skbinspect -c ", 2) == ["file,"]  # a vmcore: the shell completes file names
    assert complete("skbinspect completion ", 2) == ["plain,bash", "plain,zsh", "plain,fish"]
    assert "plain,--top-stacks" in complete("skbinspect drops --", 2)


def test_bash_sources_the_script_and_completes(tmp_path: Path) -> None:
    """bash itself: the script sourced, ``skbinspect ri<TAB>`` and ``skbinspect ring --e<TAB>``."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.fail("bash is not installed")
    exe = tmp_path / "bin" / "skbinspect"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m skbinspect "$@"\n')
    exe.chmod(0o755)
    script = skbinspect("completion", "bash").stdout
    (tmp_path / "skbinspect.bash").write_text(script)
    code = f"""
source {tmp_path}/skbinspect.bash
complete -p skbinspect
for line in "skbinspect ri" "skbinspect ring --e" "skbinspect --types "; do
    read -ra COMP_WORDS <<< "$line"
    [[ $line == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
    COMPREPLY=()
    _skbinspect_completion skbinspect
    echo "$line => ${{COMPREPLY[*]}}"
done
"""
    env = dict(os.environ, PATH=f"{exe.parent}:{os.environ['PATH']}")
    p = subprocess.run([bash, "--norc", "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "complete -o nosort -F _skbinspect_completion skbinspect", p.stdout
    assert "skbinspect ri => ring" in lines
    assert "skbinspect ring --e => --entries" in lines
    assert "skbinspect --types  => auto dwarf btf" in lines, p.stdout
