"""Damaged ranges a reader skipped, reported with where, how much and what it likely cost.

Readers resynchronise past a damaged batch (segments) or frame (archives) instead of stopping,
so one bad byte costs one batch or frame, never the rest of a file. Every skip is recorded as
a :class:`Damage` so tools can print ``file@offset: N bytes skipped (~K records lost)`` and exit
1; nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Damage", "estimate_records"]


@dataclass(frozen=True, slots=True)
class Damage:
    """``length`` bytes at file ``offset`` of ``path`` yielded no record; ``records`` is an
    estimate of the records they held (exact for an archive frame: its seek-table count)."""

    path: Path
    offset: int
    length: int
    records: int
    reason: str

    def __str__(self) -> str:
        return (f"{self.path}@{self.offset}: {self.reason}; {self.length} bytes skipped "
                f"(~{self.records} records lost)")


def estimate_records(length: int, valid_bytes: int, valid_records: int) -> int:
    """Records ``length`` damaged bytes probably held, from the file's intact batches' average
    size (at least 1 for a non-empty range: it was meant to hold a batch)."""
    if length <= 0:
        return 0
    per = valid_bytes / valid_records if valid_records else 120.0
    return max(1, round(length / per))
