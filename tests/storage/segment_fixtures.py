"""Constants and helpers shared by the storage-core tests (imported by module name: pytest puts
this directory on sys.path)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from storage import SegmentReader, iter_segments

#: 2026-11-24 12:00:00 UTC in ns: tests pin "now" so day logic is deterministic.
NOON_NS = int(dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
DAY_NS = 86_400 * 1_000_000_000


def read_all(root: Path, product: str | None = None) -> list[tuple[int, int, bytes]]:
    """Every committed record under ``root`` as (ts_ns, kind, payload), in segment order."""
    out: list[tuple[int, int, bytes]] = []
    for ref in iter_segments(root, product):
        with SegmentReader.open(ref.path) as r:
            out += [(x.ts_ns, x.kind, x.payload) for x in r.records()]
    return out
