"""Rendering of ``skbinspect info``."""

from __future__ import annotations

import datetime
from typing import List, Optional, Tuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from skbinspect.output import console
from skbinspect.target.info import TargetInfo

__all__ = ["render_info"]


def _time(t: Optional[int]) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class _Rows:
    """The (key, value) rows of the info table, collected before choosing a layout."""

    def __init__(self, rows: List[Tuple[str, str]]) -> None:
        self.rows = rows

    def add_row(self, key: str, value: str) -> None:
        self.rows.append((key, value))


def render_info(info: TargetInfo, out: Optional[Console] = None) -> None:
    out = out or console()
    kinds = {"live": "live kernel", "vmcore": "vmcore", "qemu": "QEMU guest over QMP"}
    rows: List[Tuple[str, str]] = []
    t = _Rows(rows)
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
    key_w = max(len(k) for k, _ in rows)
    if not getattr(out, "plain", False) and key_w + 2 + max(len(v) for _, v in rows) > out.width:
        # narrower than a path: one line per row, never broken inside a word (the terminal wraps the
        # long line as a whole, and a copy of it is the whole path)
        for k, v in rows:
            out.print(Text(f"{k:<{key_w}}  ", style="bold") + Text(v), soft_wrap=True)
    else:
        g = Table.grid(padding=(0, 2))
        g.add_column(style="bold", no_wrap=True)
        g.add_column(overflow="fold")
        for k, v in rows:
            g.add_row(k, v)
        out.print(g)
    paths = [m.debug_file or sources.get(m.name, {}).get("types") or "" for m in info.modules]
    if not getattr(out, "plain", False) and 26 + max(map(len, paths), default=0) > out.width:
        out.print("[italic]modules skbinspect reads[/italic]")
        name_w = max([len("module")] + [len(m.name) for m in info.modules])
        out.print(Text(f"{'module':<{name_w}}  loaded  debug info", style="bold"), soft_wrap=True)
        for m in info.modules:
            btf = sources.get(m.name, {}).get("types")
            debug = "-" if not m.loaded else (m.debug_file or btf or "MISSING")
            out.print(Text(f"{m.name:<{name_w}}  {'yes' if m.loaded else 'no':<6}  {debug}"), soft_wrap=True)
        for w in info.warnings:
            out.print(f"[yellow]warning:[/yellow] {escape(w)}")
        return
    mt = Table(title="modules skbinspect reads", title_justify="left")
    mt.add_column("module")
    mt.add_column("loaded")
    mt.add_column("debug info", overflow="fold")
    for m in info.modules:
        if not m.loaded:
            mt.add_row(m.name, "no", "-")
        else:
            btf = sources.get(m.name, {}).get("types")
            mt.add_row(m.name, "yes", m.debug_file or btf or Text("MISSING", style="red"))
    out.print(mt)
    for w in info.warnings:
        out.print(f"[yellow]warning:[/yellow] {escape(w)}")
