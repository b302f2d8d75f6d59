"""Shared fixtures for storage tests: a data root and a small engine config on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import EngineConfig


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config(root: Path) -> EngineConfig:
    return EngineConfig(root=root, backend="mmap", seal_stale_on_open=False)
