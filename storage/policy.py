"""When a writer commits: the one owner of the commit thresholds.

Two writers decide when to commit: the daemon's sink (it hands a batch to its storage thread
every ``records`` messages or ``interval_s`` seconds, and the thread commits once per batch)
and any caller driving an ``Engine`` itself (``Engine.commit_due``: tools, tests, benchmarks).
Both read the thresholds, their defaults and their validation from this one value, so the two
cannot drift apart; the daemon builds it once (``EngineConfig.commit_policy``) and hands the
same numbers to its sink.
"""

from __future__ import annotations

import dataclasses

__all__ = ["CommitPolicy"]


@dataclasses.dataclass(frozen=True, slots=True)
class CommitPolicy:
    """Commit when ``records`` are pending, or at least every ``interval_s`` seconds."""

    records: int = 10_000
    interval_s: float = 5.0

    def __post_init__(self) -> None:
        # the messages name the config keys (EngineConfig, the daemon's [storage] table)
        if self.records < 1:
            raise ValueError(f"commit_records must be >= 1, got {self.records}")
        if self.interval_s <= 0:
            raise ValueError(f"commit_interval_s must be > 0, got {self.interval_s}")

    def count_due(self, pending: int) -> bool:
        """Enough records are pending for a commit."""
        return pending >= self.records

    def interval_due(self, waited_s: float) -> bool:
        """The last commit is ``interval_s`` old (the caller decides what waiting means: the
        engine commits only when something waits, the sink ticks even when idle)."""
        return waited_s >= self.interval_s
