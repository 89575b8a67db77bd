"""The package's import graph: no cycles between modules at import time, every command registered by
importing :mod:`skbinspect.cli`, and the public entry points where the packaging says they are."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import Dict, List, Set

import skbinspect

PACKAGE_DIR = Path(skbinspect.__file__).parent


def _module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph(package_dir: Path = PACKAGE_DIR) -> Dict[str, Set[str]]:
    """Module -> the skbinspect modules it names in a module-level import (imports inside functions run
    later, when every module is loaded, and cannot form an import-time cycle).  A package's
    ``__init__`` importing its own submodules is not counted against them: Python loads the package
    first either way."""
    modules = {_module_name(p, package_dir): p for p in package_dir.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        deps: Set[str] = set()
        for node in ast.parse(path.read_text()).body:
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package upwards
                    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    graph = _import_graph()
    assert len(graph) > 30  # the walk found the package
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    # the shape the CLI had: the group's module imports the commands at its bottom, and they import it
    graph = {"cli": {"cli_ring", "target"}, "cli_ring": {"cli", "tuntap"}, "target": set(), "tuntap": set()}
    assert _cycles(graph) == [["cli", "cli_ring"]]


def test_command_modules_do_not_import_each_other() -> None:
    graph = _import_graph()
    commands = {m for m in graph if m.startswith("skbinspect.cli.")}
    for m in commands:
        assert graph[m] & commands <= {"skbinspect.cli.app", "skbinspect.cli.progress"}, m


def test_every_module_imports_on_its_own() -> None:
    for info in pkgutil.walk_packages(skbinspect.__path__, "skbinspect."):
        if info.name != "skbinspect.__main__":
            importlib.import_module(info.name)


def test_cli_registers_every_command() -> None:
    from skbinspect.cli import cli, main

    assert callable(main)
    assert sorted(cli.commands) == [
        "completion",
        "drops",
        "info",
        "reasons",
        "report",
        "ring",
        "stats",
        "trace",
    ]


def test_entry_points_match_the_packaging() -> None:
    text = (PACKAGE_DIR.parent / "pyproject.toml").read_text()
    assert 'skbinspect = "skbinspect.cli:main"' in text
    assert 'skbinspect = "skbinspect.drgn_plugin"' in text
    plugin = importlib.import_module("skbinspect.drgn_plugin")
    assert callable(plugin.drgn_prog_set)
