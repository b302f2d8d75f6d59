"""A clean segment image of what a damaged segment still holds, with its losses marked.

`compact --salvage` archives this image instead of the damaged file: every record the
resynchronising reader returns (each from a batch that passed its position-bound CRC), in file
order, and one GAP marker record at each damaged range saying which file, where, how many bytes
and about how many records were lost — so a reader of the archive sees the hole in the stream,
at its place in time, and counts it. The image is a sealed format-v2 segment: header hints and
time index recomputed, batches re-encoded at their new offsets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from storage.damage import Damage
from storage.format import HEADER_SIZE, BatchInfo, SegmentHeader, encode_batch, encode_header
from storage.reader import SegmentReader
from storage.records import Record, RecordKind
from storage.recovery import index_due

__all__ = ["marker_payload", "salvage_image"]

#: Records per re-encoded batch (whole batches go to one archive frame; ~1 MiB frames).
BATCH_RECORDS = 1000
DEFAULT_INDEX_STEP = 1 << 20


def marker_payload(d: Damage) -> bytes:
    """The GAP marker's JSON for one damaged range of the original file."""
    return json.dumps({"reason": "damaged", "source": d.path.name, "offset": d.offset,
                       "bytes": d.length, "records_lost_estimate": d.records,
                       "detail": d.reason}, sort_keys=True).encode()


def _with_markers(records: list[Record], damage: list[Damage],
                  fallback_ts: int) -> Iterator[tuple[int, int, bytes]]:
    """Records in file order with a GAP marker before the first record after each damaged
    range; a marker takes the timestamp of the record before it (else the one after it)."""
    pending = sorted(damage, key=lambda d: d.offset)
    prev_ts: int | None = None
    for rec in records:
        while pending and pending[0].offset < rec.offset:
            yield (rec.ts_ns if prev_ts is None else prev_ts, RecordKind.GAP,
                   marker_payload(pending.pop(0)))
        yield rec.ts_ns, rec.kind, rec.payload
        prev_ts = rec.ts_ns
    for d in pending:
        yield (fallback_ts if prev_ts is None else prev_ts, RecordKind.GAP, marker_payload(d))


def salvage_image(source: Path, why: str) -> tuple[bytes, list[BatchInfo], int]:
    """(segment image, its batches, record count incl. markers) for damaged ``source``. The
    damage found by the compactor (``why``) is marked even if the reader skipped nothing (a
    header or index that disagrees with intact batches loses no record, but is noted)."""
    with SegmentReader.open(source) as reader:
        records = list(reader.records())
        damage = [d for d in reader.damage if d.length] or [Damage(source, 0, 0, 0, why)]
        header = reader.header
    day_ns = (header.day.toordinal() - 719163) * 86_400 * 10**9  # 719163: 1970-01-01
    rows = list(_with_markers(records, damage, day_ns))
    body = bytearray()
    batches: list[BatchInfo] = []
    index: list[tuple[int, int]] = []
    step = header.index_step or DEFAULT_INDEX_STEP
    last_before: int | None = None
    for i in range(0, len(rows), BATCH_RECORDS):
        chunk = rows[i:i + BATCH_RECORDS]
        off = HEADER_SIZE + len(body)
        if index_due(index, off, step):
            index.append((off, 0 if last_before is None else last_before))
        ts = [r[0] for r in chunk]
        raw = encode_batch(ts, bytes(r[1] for r in chunk), [r[2] for r in chunk], offset=off)
        body += raw
        batches.append(BatchInfo(off, len(raw), len(chunk), min(ts), max(ts)))
        last_before = max(ts) if last_before is None else max(last_before, max(ts))
    new = SegmentHeader(
        header.product, header.channel, header.day, header.number, header.created_ns,
        HEADER_SIZE + len(body), len(rows), min((r[0] for r in rows), default=0),
        max((r[0] for r in rows), default=0), True, tuple(index), step)
    return encode_header(new) + bytes(body), batches, len(rows)
