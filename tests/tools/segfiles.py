"""Real segment files for the tools' tests, written with the storage codec itself.

Tests build the exact bytes a sealed or live segment holds (header + CRC'd batches) without
running the engine, so the archive and CLI tests do not depend on engine timing.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

from storage.archive import ArchiveReader
from storage.format import HEADER_SIZE, SegmentHeader, encode_batch, encode_header
from storage.layout import segment_path
from storage.records import RecordKind

Rec = tuple[int, int, bytes]  # ts_ns, kind, payload

DAY = dt.date(2026, 11, 20)
DAY_NS = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def message(i: int, product: str = "BTC-USD") -> bytes:
    """A level2-like update, different per i but as repetitive as the real feed."""
    price = 61000 + (i * 7919) % 2000
    return (b'{"channel":"l2_data","timestamp":"2026-11-20T00:00:%02d.%06dZ","sequence_num":%d,'
            b'"events":[{"type":"update","product_id":"%s","updates":[{"side":"%s",'
            b'"event_time":"2026-11-20T00:00:00Z","price_level":"%d.%02d",'
            b'"new_quantity":"%d.%08d"}]}]}' % (
                i % 60, i % 1_000_000, i, product.encode(), b"bid" if i % 2 else b"offer",
                price, i % 100, i % 7, (i * 31337) % 100_000_000))


def make_batches(n_records: int, per_batch: int, start_ns: int = DAY_NS + 3_600_000_000_000,
                 step_ns: int = 1_000_000, markers_every: int = 0) -> list[list[Rec]]:
    """Consecutive batches of increasing timestamps; optional GAP markers every k records."""
    batches: list[list[Rec]] = []
    cur: list[Rec] = []
    for i in range(n_records):
        kind = RecordKind.GAP if markers_every and i % markers_every == markers_every - 1 \
            else RecordKind.DATA
        payload = b'{"reason":"sequence","missed":3}' if kind else message(i)
        cur.append((start_ns + i * step_ns, int(kind), payload))
        if len(cur) == per_batch:
            batches.append(cur)
            cur = []
    if cur:
        batches.append(cur)
    return batches


def write_segment(root: Path, batches: Sequence[Sequence[Rec]], *, product: str = "BTC-USD",
                  channel: str = "level2", day: dt.date = DAY, number: int = 0,
                  sealed: bool = True, prealloc: int = 0) -> Path:
    """A segment file as the engine leaves it: header, batches, zero-filled preallocation."""
    body = b""
    for b in batches:  # a v2 batch's CRC binds its file offset
        body += encode_batch([r[0] for r in b], bytes(r[1] for r in b), [r[2] for r in b],
                             offset=HEADER_SIZE + len(body))
    recs = [r for b in batches for r in b]
    header = SegmentHeader(
        product=product, channel=channel, day=day, number=number, created_ns=DAY_NS,
        committed_len=HEADER_SIZE + len(body), record_count=len(recs),
        first_ts_ns=min((r[0] for r in recs), default=0),
        last_ts_ns=max((r[0] for r in recs), default=0), sealed=sealed,
    )
    path = segment_path(root, product, channel, day, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_header(header) + body
    with open(path, "wb") as f:
        f.write(data)
        if prealloc > len(data):
            f.truncate(prealloc)
    os.chmod(path, 0o644)
    return path


def all_records(batches: Sequence[Sequence[Rec]]) -> list[Rec]:
    return [r for b in batches for r in b]


def archive_records(path: Path) -> list[Rec]:
    """Every record of an archive as (ts_ns, kind, payload), to compare with its source."""
    with ArchiveReader.open(path) as reader:
        return [(r.ts_ns, r.kind, r.payload) for r in reader.records()]


def append_batches(path: Path, batches: Sequence[Sequence[Rec]], *, seal: bool = False) -> None:
    """Commit more batches to a live segment the way the engine does: bytes first, then the
    header's commit point and statistics (and optionally the sealed flag)."""
    from storage.format import decode_header

    with open(path, "r+b") as f:
        header = decode_header(f.read(HEADER_SIZE))
        body = b""
        for b in batches:
            body += encode_batch([r[0] for r in b], bytes(r[1] for r in b), [r[2] for r in b],
                                 offset=header.committed_len + len(body))
        recs = [r for b in batches for r in b]
        f.seek(header.committed_len)
        f.write(body)
        f.flush()
        first = min([r[0] for r in recs] + ([header.first_ts_ns] if header.record_count else []),
                    default=0)
        last = max([r[0] for r in recs] + [header.last_ts_ns], default=0)
        new = SegmentHeader(
            product=header.product, channel=header.channel, day=header.day,
            number=header.number, created_ns=header.created_ns,
            committed_len=header.committed_len + len(body),
            record_count=header.record_count + len(recs), first_ts_ns=first, last_ts_ns=last,
            sealed=seal or header.sealed,
        )
        f.seek(0)
        f.write(encode_header(new))
