"""Test helper: read back what the daemon stored, per stream, with the real storage reader."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from storage.layout import iter_segments
from storage.reader import SegmentReader
from storage.records import RecordKind


def read_streams(root: Path) -> dict[tuple[str, str], list[tuple[int, int, bytes]]]:
    """(product, channel) → [(kind, ts_ns, payload)] in stored order."""
    out: dict[tuple[str, str], list[tuple[int, int, bytes]]] = defaultdict(list)
    for ref in iter_segments(root):
        if ref.archived:
            continue
        r = SegmentReader.open(ref.path)
        try:
            out[(ref.product, ref.channel)].extend(
                (rec.kind, rec.ts_ns, bytes(rec.payload)) for rec in r.records())
        finally:
            r.close()
    return dict(out)


def data_only(records: list[tuple[int, int, bytes]]) -> list[bytes]:
    return [p for k, _, p in records if k == RecordKind.DATA]


def markers(records: list[tuple[int, int, bytes]], kind: RecordKind) -> list[bytes]:
    return [p for k, _, p in records if k == kind]
