"""The interface every write backend implements: put bytes at file offsets, sync files.

Segments preallocate and grow files themselves (posix_fallocate), and keep a shared mapping of
each file, so a backend only moves bytes. The engine calls ``write`` twice per commit (first all
batch bytes, then the commit-point header fields), so a backend need not order ops within a call.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from typing import NamedTuple, Protocol

__all__ = ["Backend", "WriteOp"]


class WriteOp(NamedTuple):
    """Write ``data`` at ``offset`` of the file ``fd`` (mapped as ``mm`` when not None)."""

    fd: int
    mm: mmap.mmap | None
    offset: int
    data: bytes | memoryview


class Backend(Protocol):
    """A way to move committed bytes into preallocated segment files."""

    name: str

    def write(self, ops: Sequence[WriteOp]) -> None:
        """Perform every op; all are complete on return. Raise OSError (e.g. ENOSPC, EIO) on
        failure, claiming no partial success: the engine then treats the whole call as undone."""
        ...

    def sync(self, fds: Sequence[int]) -> None:
        """Make the written bytes of ``fds`` durable against power loss (fdatasync/msync)."""
        ...

    def close(self) -> None:
        """Release backend resources (rings, buffers); files belong to the segments."""
        ...
