"""The default backend: slice assignment into the segment's shared mapping.

A commit of 1 000 records is one memcpy into the page cache per stream and no syscall at all,
which is why this is the portable fast path. The file range must already be allocated (the
segment's posix_fallocate guarantees it), so a full disk can never surface here as SIGBUS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from storage.backends.base import WriteOp

__all__ = ["MmapBackend"]


class MmapBackend:
    """Writes through each op's mapping; ``sync`` is fdatasync, which on Linux also writes back
    the pages dirtied through a shared mapping of the same file."""

    name = "mmap"

    def write(self, ops: Sequence[WriteOp]) -> None:
        # One slice assignment per op and no per-op checks: a write that does not fit its
        # mapping, or has none, fails the assignment itself (IndexError, TypeError) and is
        # then explained as ValueError. 4 ops per stream and commit make the checks count.
        try:
            for _, mm, offset, data in ops:
                mm[offset : offset + len(data)] = data  # type: ignore[index]
        except (IndexError, TypeError):
            _check(ops)
            raise

    def sync(self, fds: Sequence[int]) -> None:
        for fd in fds:
            os.fdatasync(fd)

    def close(self) -> None:
        """Nothing to release: mappings belong to the segments."""


def _check(ops: Sequence[WriteOp]) -> None:
    """ValueError for the first op that has no mapping or does not fit in it."""
    for fd, mm, offset, data in ops:
        if mm is None:
            raise ValueError(f"mmap backend needs a mapping for fd {fd}")
        end = offset + len(data)
        if offset < 0 or end > len(mm):
            raise ValueError(f"write to [{offset}, {end}) beyond mapping of {len(mm)} bytes")
