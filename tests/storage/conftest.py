"""Shared fixtures for storage tests: a data root and a small engine config on real files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import EngineConfig, fastpath


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config(root: Path) -> EngineConfig:
    return EngineConfig(root=root, backend="mmap", seal_stale_on_open=False)


@pytest.fixture
def paths() -> Iterator[None]:
    """Restore the default staging path (``storage.fastpath``) after a test that switches it."""
    try:
        yield
    finally:
        fastpath.select()
