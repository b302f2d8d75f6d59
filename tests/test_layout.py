"""The repository keeps the layout and dependency direction the architecture promises."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_storage_imports_neither_logger_nor_tools() -> None:
    assert not {"logger", "tools"} & _imports("storage")


def test_logger_does_not_import_tools() -> None:
    assert "tools" not in _imports("logger")


def test_top_level_layout_exists() -> None:
    for name in ("pyproject.toml", "README.md", "Makefile", ".ci/run", "logger", "storage",
                 "tools", "tests", "docs/ARCHITECTURE.md"):
        assert (ROOT / name).exists(), name
