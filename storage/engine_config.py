"""The engine's settings, validated once when built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from storage.backends import DEFAULT_BACKEND
from storage.format import HEADER_SIZE
from storage.policy import CommitPolicy
from storage.rootlock import LOCK_NAME, check_lock_name

__all__ = ["EngineConfig"]

_COMMIT = CommitPolicy()  # the defaults of the commit thresholds (their one owner)


@dataclasses.dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine settings. Extent sizes bound the disk reserved but not yet used: a stream starts
    with ``first_extent_bytes`` and grows by doubling up to ``max_extent_bytes`` per step.
    ``max_batch_bytes`` caps one batch (bigger commits are split); ``seals_per_commit`` and
    ``seal_budget_s`` bound how many past-day segments one commit seals and how long it may
    spend on it (the rest follow at the next commits). ``io_threads`` threads seal (trim) files
    in parallel — at close, and in waves within that budget — and create the next UTC day's
    segments of the active streams during the last ``precreate_s`` seconds of a day (within
    the same budget per commit), so midnight does not create 2 800 files in one commit.
    ``commit_records`` and ``commit_interval_s`` are flat, as the daemon's ``[storage]`` table
    names them; :attr:`commit_policy` is the value that decides (``storage.policy``)."""

    root: Path
    backend: str = DEFAULT_BACKEND
    commit_records: int = _COMMIT.records
    commit_interval_s: float = _COMMIT.interval_s
    fsync_interval_s: float | None = None
    segment_max_bytes: int = 1 << 30
    first_extent_bytes: int = 64 << 10
    max_extent_bytes: int = 64 << 20
    max_batch_bytes: int = 16 << 20
    seal_stale_on_open: bool = True
    seals_per_commit: int = 256
    seal_budget_s: float = 0.05
    io_threads: int = 4
    precreate_s: float = 600.0
    lock_name: str = LOCK_NAME
    """``.lock`` (the whole root) or ``.lock.<worker>`` for one of a daemon's worker engines,
    which then owns only the streams it writes (``storage.rootlock``)."""
    mark_unclean: bool = True
    """At open, turn what earlier runs left (live journals of runs that did not close, loss
    ledgers of closes that could not commit everything, unsealed segments) into RESTART and
    DROPPED markers (``storage.unclean``). Only an engine that owns every stream those may
    name does this: a daemon's worker engines leave it to one pass of their supervisor."""
    commit_chunk_bytes: int = 32 << 20
    """A commit of more pending payload bytes than this (the catch-up after a full disk) is
    written in steps of about this size, each step's encoded copy freed before the next, so
    memory stays near the pending bytes instead of three times them."""

    def __post_init__(self) -> None:
        check_lock_name(self.lock_name)
        CommitPolicy(self.commit_records, self.commit_interval_s)  # validates the thresholds
        if self.fsync_interval_s is not None and self.fsync_interval_s < 0:
            raise ValueError(f"fsync_interval_s must be >= 0, got {self.fsync_interval_s}")
        if self.segment_max_bytes < 2 * HEADER_SIZE:
            raise ValueError(f"segment_max_bytes too small: {self.segment_max_bytes}")
        if self.first_extent_bytes < 1 or self.max_extent_bytes < 1:
            raise ValueError("extent sizes must be positive")
        if self.seals_per_commit < 1:
            raise ValueError(f"seals_per_commit must be >= 1, got {self.seals_per_commit}")
        if self.io_threads < 1:
            raise ValueError(f"io_threads must be >= 1, got {self.io_threads}")
        if self.max_batch_bytes < 4096:
            raise ValueError(f"max_batch_bytes too small: {self.max_batch_bytes}")
        if self.commit_chunk_bytes < 1:
            raise ValueError(f"commit_chunk_bytes must be >= 1, got {self.commit_chunk_bytes}")

    @property
    def commit_policy(self) -> CommitPolicy:
        """When to commit (``Engine.commit_due``; the daemon hands the same to its sink)."""
        return CommitPolicy(self.commit_records, self.commit_interval_s)

    @property
    def durable(self) -> bool:
        """With an fsync interval, new files and seals are fsynced too (power-loss safety)."""
        return self.fsync_interval_s is not None
