"""Rendering of ``skbinspect info``."""

from __future__ import annotations

import datetime
from typing import Optional

from rich.console import Console
from rich.table import Table

from skbinspect.output import console
from skbinspect.target.info import TargetInfo

__all__ = ["render_info"]


def _time(t: Optional[int]) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_info(info: TargetInfo, out: Optional[Console] = None) -> None:
    out = out or console()
    kinds = {"live": "live kernel", "vmcore": "vmcore", "qemu": "QEMU guest over QMP"}
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    t.add_row(
        "target",
        f"{kinds.get(info.kind, info.kind)}: {info.source}"
        + (f" ({info.vmcore_format})" if info.vmcore_format else ""),
    )
    t.add_row("release", info.release)
    if info.version:
        t.add_row("version", info.version)
    cpus = "-" if info.cpus_possible is None else f"{info.cpus_online} online / {info.cpus_possible} possible"
    t.add_row("CPUs", cpus)
    if info.kind == "vmcore":
        t.add_row(
            "crash time", _time(info.crash_time) if info.crash_time else "not recorded (no kdump CRASHTIME)"
        )
        t.add_row("kernel clock", _time(info.kernel_time))
        t.add_row("panic", info.panic_message or "none found in the kernel log")
    else:
        t.add_row("kernel clock", _time(info.kernel_time))
    sources = info.debug_sources or {}
    if info.vmlinux_debug_file is None and "vmlinux" in sources:
        t.add_row("vmlinux types", sources["vmlinux"]["types"] + " (no debug info)")
        t.add_row("vmlinux symbols", sources["vmlinux"]["symbols"])
    else:
        t.add_row("vmlinux debug info", info.vmlinux_debug_file or "MISSING")
    out.print(t)
    mt = Table(title="modules skbinspect reads", title_justify="left")
    mt.add_column("module")
    mt.add_column("loaded")
    mt.add_column("debug info", overflow="fold")
    for m in info.modules:
        if not m.loaded:
            mt.add_row(m.name, "no", "-")
        else:
            btf = sources.get(m.name, {}).get("types")
            mt.add_row(m.name, "yes", m.debug_file or btf or "[red]MISSING[/red]")
    out.print(mt)
    for w in info.warnings:
        out.print(f"[yellow]warning:[/yellow] {w}")
