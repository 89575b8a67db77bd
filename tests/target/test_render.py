"""skbinspect.target.render: the kernel's own strings (release, banner, panic message) and the paths and
warnings about them are printed as they are, piped and on a terminal."""

from __future__ import annotations

import pytest

from skbinspect.target.info import ModuleInfo, TargetInfo
from skbinspect.target.render import render_info
from tests.target_text import HOSTILE, rendered


@pytest.mark.parametrize("terminal", [False, True])
def test_target_text_is_printed_as_is(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    info = TargetInfo(
        "vmcore", HOSTILE, HOSTILE, HOSTILE, 2, 2, HOSTILE, [ModuleInfo("tun", True, HOSTILE), ModuleInfo("tap", True, None)],
        panic_message=HOSTILE, warnings=[HOSTILE],
    )  # fmt: skip
    text = rendered(monkeypatch, render_info, info, terminal=terminal)
    # target, release, version, panic, vmlinux debug info, tun's debug file, the warning
    assert text.count(HOSTILE) == 7, text
    assert "MISSING" in text  # tap's debug info
