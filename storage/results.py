"""What a commit (or the close) reports back: what it made durable, what failed, what got
sealed. Kept apart from the engine's rooms so that each of them can add to one result."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

__all__ = ["CommitError", "CommitResult"]


class CommitError(NamedTuple):
    """Why some records were not committed (they stay pending and are retried)."""

    product: str
    channel: str
    errno: int | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(slots=True)
class CommitResult:
    """What one commit made durable, how long it took, what failed and what got sealed."""

    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: list[CommitError] = dataclasses.field(default_factory=list)
    sealed: list[Path] = dataclasses.field(default_factory=list)
    lost: int = 0
    """Only from :meth:`Engine.close`: records it could not commit (written to the root's
    loss ledger, marked DROPPED by the next engine)."""
