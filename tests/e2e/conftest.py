"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def data_root(tmp_path: Path) -> Iterator[Path]:
    """The daemon's data root: on tmpfs when the machine has one.

    400 products × 7 channels are ~2 800 segment files; on a VM disk that does a millisecond
    or more per mkdir/open/ftruncate, creating and sealing them dominates a short test. tmpfs
    keeps the files real (mmap, io_uring, ftruncate all apply) and the test short.
    """
    shm = Path("/dev/shm")
    if shm.is_dir():
        d = Path(tempfile.mkdtemp(prefix="cbl-e2e-", dir=shm))
        try:
            yield d / "data"
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path / "data"
