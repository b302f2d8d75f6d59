"""Records of one product, across its channels, in receive-time order, from `.seg` and `.seg.zst`.

Only storage's public readers are used (`storage.archive.open_any`, `iter_segments`), so a live
segment, a sealed one and an archive read the same. A product's frames live in its own streams
`<product>/<channel>` and, on Advanced Trade, in `_multi/<channel>` when a frame names several
products; both are merged by receive time. A damaged stretch of a file does not stop the read:
it becomes a `damaged` event at the time of the last good record, so the book built across it
is marked invalid instead of silently wrong.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from storage import (
    CorruptSegment,
    Damage,
    Record,
    RecordBatch,
    SegmentRef,
    iter_segments,
    open_any,
    record_batches,
)

MULTI = "_multi"
T = TypeVar("T")
DAMAGED = -1  # pseudo kind of an `Item` that stands for unreadable bytes


class Item(NamedTuple):
    ts_ns: int
    order: int       # tie-break: stream index, so equal times keep a stable order
    channel: str
    shared: bool     # from a `_multi` stream
    record: Record
    damage: str | None = None


def _one_per_segment(refs: Iterable[SegmentRef]) -> list[SegmentRef]:
    """While compaction runs both X.seg and X.seg.zst can exist: they hold the same records."""
    seen: set[tuple[Path, int, dt.date]] = set()
    out = []
    for r in refs:
        key = (r.path.parent, r.number, r.day)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def stream_days(root: Path, product: str, channel: str) -> list[dt.date]:
    """Days of a stream that may hold records. The recorder pre-creates the next day's
    segments in the last minutes of a day: such an empty file is not a day of data (it
    would be exported, and marked done, before a single record of that day exists)."""
    try:
        return sorted({r.day for r in iter_segments(root, product, channel)
                       if not _empty_live(r)})
    except (ValueError, OSError):
        return []


def _empty_live(ref: SegmentRef) -> bool:
    """True only for a readable, undamaged live segment with no record at all; anything
    unreadable counts as holding data, so it is read and its damage reported."""
    if ref.archived:
        return False
    try:
        reader = open_any(ref.path)
    except (OSError, ValueError):
        return False
    try:
        first = next(iter(reader.records()), None)
        return first is None and not reader.damage
    except (OSError, ValueError, CorruptSegment):
        return False
    finally:
        reader.close()


def product_days(root: Path, product: str, channels: Iterable[str]) -> list[dt.date]:
    days: set[dt.date] = set()
    for ch in channels:
        days.update(stream_days(root, product, ch))
    return sorted(days)


def products(root: Path) -> list[str]:
    """Product streams under a root (names not starting with `_`)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "_")))


def stream_records(root: Path, product: str, channel: str, day: dt.date,
                   from_ns: int | None = None, to_ns: int | None = None,
                   ) -> Iterator[tuple[Record | None, str | None]]:
    """(record, None) for each record of a stream's day; (None, why) after a damaged stretch."""
    return _with_damage(root, product, channel, day,
                        lambda reader: reader.records(from_ns, to_ns))


def stream_batches(root: Path, product: str, channel: str, day: dt.date,
                   ) -> Iterator[tuple[RecordBatch | None, str | None]]:
    """`stream_records` by whole batches: (batch, None) for each, (None, why) after a
    damaged stretch. For readers that treat many records at once (the columnar export)."""
    return _with_damage(root, product, channel, day, record_batches)


def _with_damage(root: Path, product: str, channel: str, day: dt.date,
                 read: Callable[[Any], Iterable[T]]) -> Iterator[tuple[T | None, str | None]]:
    """What ``read`` gives of each file of a stream's day, as (item, None), with (None, why)
    where a damaged range was skipped or a file could not be read. Readers resynchronise past
    a damaged batch or frame and say so (``reader.damage``, ``on_damage``): each skipped range
    is reported where it was met, so a book built across it is marked invalid."""
    try:
        refs = _one_per_segment(iter_segments(root, product, channel, day))
    except (ValueError, OSError):
        return
    for ref in refs:
        try:
            reader = open_any(ref.path)
        except (OSError, ValueError) as exc:
            yield None, f"{ref.path}: {exc}"
            continue
        pending: list[Damage] = list(reader.damage)
        reader.on_damage = pending.append
        try:
            for item in read(reader):
                if pending:
                    yield from ((None, str(d)) for d in pending)
                    pending.clear()
                yield item, None
            yield from ((None, str(d)) for d in pending)
        except (CorruptSegment, OSError, ValueError) as exc:
            yield None, f"{ref.path}: {exc}"
        finally:
            reader.close()


def _items(root: Path, product: str, channel: str, order: int, day: dt.date,
           from_ns: int | None, to_ns: int | None) -> Iterator[Item]:
    shared = product == MULTI
    last_ts = from_ns or 0
    for rec, damage in stream_records(root, product, channel, day, from_ns, to_ns):
        if rec is None:
            yield Item(last_ts, order, channel, shared,
                       Record(last_ts, DAMAGED, b"", -1), damage)
        else:
            last_ts = rec.ts_ns
            yield Item(rec.ts_ns, order, channel, shared, rec)


def merged(root: Path, product: str, channels: Iterable[str], day: dt.date,
           from_ns: int | None = None, to_ns: int | None = None,
           with_multi: bool = True) -> Iterator[Item]:
    """Every record of the product's channels on `day` (and `_multi` frames), by time."""
    sources = []
    for i, ch in enumerate(channels):
        sources.append(_items(root, product, ch, 2 * i, day, from_ns, to_ns))
        if with_multi and (root / MULTI / ch).is_dir():
            sources.append(_items(root, MULTI, ch, 2 * i + 1, day, from_ns, to_ns))
    if len(sources) == 1:
        yield from sources[0]
    else:  # Items compare as tuples: by time, then by stream (never further)
        yield from heapq.merge(*sources)
