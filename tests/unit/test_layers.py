"""The allowed directions of imports between the layers of the package (docs/architecture.md).

Every import of every module is read with ``ast`` (function-level ones too, since modules import
heavy or optional parts lazily) and checked against ``MAY_IMPORT``. A forbidden edge fails with
the file, the line and what that layer may import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Source folder -> the package name it is installed under (the innermost folder wins).
ROOTS = {REPO / "hqshm": "hqshm", REPO / "cluster": "hqshm.cluster",
         REPO / "hqshm" / "api" / "hyperqueue": "hyperqueue"}

# Layer of a module, by the longest matching prefix of its dotted name.
LAYERS = {
    "hqshm": "root",  # the package itself: its version
    "hqshm.errors": "errors",
    "hqshm._hqaffinity": "c-module",
    "hqshm.cluster": "cluster",
    "hqshm.model": "model",
    "hqshm.link": "link",
    "hqshm.node": "node",
    "hqshm.server": "server",
    "hqshm.cli": "cli",
    "hqshm.api": "api",
    "hyperqueue": "hyperqueue",  # HQ's module layout, installed under HQ's package name
}
# What each layer may import (besides itself), bottom to top. cluster/ knows no product and
# reaches its own modules only relatively, so that its install name could change.
MAY_IMPORT = {
    "root": set(),
    "errors": set(),
    "c-module": set(),
    "cluster": set(),
    "model": {"cluster", "errors"},
    "link": {"root", "cluster", "errors", "model"},
    "node": {"root", "cluster", "errors", "model", "c-module"},
    "server": {"root", "cluster", "errors", "model", "link"},
    "cli": {"root", "cluster", "errors", "model", "link", "node", "server"},
    "api": {"root", "cluster", "errors", "model", "link"},
    "hyperqueue": {"api"},  # re-exports only
}


def layer_of(module: str) -> str | None:
    matching = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(matching, key=len)] if matching else None


def source_modules() -> Iterator[tuple[Path, str]]:
    for folder, package in ROOTS.items():
        nested = [other for other in ROOTS if other != folder and other.is_relative_to(folder)]
        for path in sorted(folder.rglob("*.py")):
            if any(path.is_relative_to(other) for other in nested):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield path, ".".join([package, *parts])


KNOWN = {name for _, name in source_modules()}


def imports_of(path: Path, module: str) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, whether the import was relative) for every import."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield node.lineno, submodule if submodule in KNOWN else target, bool(node.level)


def violations() -> list[str]:
    found = []
    for path, module in source_modules():
        own = layer_of(module)
        assert own is not None, module
        for line, target, relative in imports_of(path, module):
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            theirs = layer_of(target)
            if own == "cluster" and target.startswith("hqshm.cluster") and not relative:
                found.append(f"{where}: cluster/ imports its own modules relatively")
            if theirs is None or theirs == own:
                continue
            if theirs not in MAY_IMPORT[own]:
                allowed = ", ".join(sorted(MAY_IMPORT[own])) or "nothing of the package"
                found.append(f"{where}: the {own} layer may import {allowed}")
    return found


def test_imports_point_only_down_the_layers() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [("hqshm.cluster.core", "cluster"), ("hqshm.cli.submit.jobfile", "cli"),
     ("hqshm", "root"), ("hqshm.errors", "errors"), ("numpy", None),
     ("hqshm.api.client", "api"), ("hyperqueue.task.function", "hyperqueue")],
)
def test_layer_of(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer


def test_the_check_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The walker finds a function-level import and resolves a relative one."""
    probe = tmp_path / "probe.py"
    probe.write_text("from ..link import client\n\ndef f():\n    from hqshm.cli import render\n")
    found = {target for _, target, _ in imports_of(probe, "hqshm.node.probe")}
    assert found == {"hqshm.link.client", "hqshm.cli.render"}
