"""Driving `ProductRows` over days: warm-up from the last snapshot, then day by day.

A book at time T needs the last snapshot before T and every update after it. Snapshots come on
subscribe (and after each resubscription or reconnect), so the last one can lie days back; the
search looks back `lookback_days` UTC days at most, so the cost of starting mid-range is
bounded (documented in docs/EXPORT.md). Warm-up uses the same `ProductRows` code with no
datasets selected: one rebuild implementation for export, `inspect book` and `integrity`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from storage import Record, RecordBatch, RecordKind
from tools.normalize import datasets as D
from tools.normalize.rows import ProductRows
from tools.normalize.source import (
    DAMAGED,
    MULTI,
    merged,
    stream_batches,
    stream_days,
    stream_records,
)

DAY_NS = 86_400 * 1_000_000_000
DEFAULT_LOOKBACK_DAYS = 3


def day_of(ts_ns: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=ts_ns // DAY_NS)


def day_start(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY_NS


_SNAPSHOT = re.compile(rb'"type"\s*:\s*"snapshot"')


def is_snapshot(payload: bytes) -> bool:
    """A level2 snapshot frame, told by its first bytes (no JSON decoding): Exchange frames
    start with their type, AT frames carry the event type right after the envelope."""
    return _SNAPSHOT.search(payload, 0, 200) is not None


def book_channels(root_channels: Iterable[str]) -> list[str]:
    return [c for c in D.BOOK_CHANNELS if c in root_channels]


def find_snapshot(root: Path, product: str, channels: list[str], before_ns: int,
                  lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> int | None:
    """Receive time of the last book snapshot of `product` strictly before `before_ns`."""
    base = root
    # T's own day up to T, and the `lookback_days` whole days before it
    last_day = day_of(before_ns - 1)
    first_day = day_of(before_ns) - dt.timedelta(days=lookback_days)
    days = sorted({d for ch in channels for d in stream_days(base, product, ch)
                   if first_day <= d <= last_day}, reverse=True)
    for d in days:
        found: int | None = None
        for ch in channels:
            for rec, _ in stream_records(base, product, ch, d, None, before_ns):
                if rec is not None and rec.kind == RecordKind.DATA and is_snapshot(rec.payload):
                    found = rec.ts_ns if found is None else max(found, rec.ts_ns)
        if found is not None:
            return found
    return None


def feed_span(rows: ProductRows, root: Path, channels: list[str], from_ns: int | None,
              to_ns: int | None, day: dt.date) -> None:
    """Feed every record of the product's `channels` on `day` within [from_ns, to_ns).

    A channel whose rows depend on its own stream alone (rows.bulk_ok) and that has no
    `_multi` stream is read in runs for the columnar path; the rest in time order.
    """
    bulk = [c for c in channels if rows.bulk_ok(c) and not (root / MULTI / c).is_dir()]
    for ch in bulk:
        if ch in D.BOOK_CHANNELS and from_ns is None and to_ns is None:
            _bulk_batches(rows, root, ch, day)
        else:
            _bulk_stream(rows, root, ch, day, from_ns, to_ns)
    rest = [c for c in channels if c not in bulk]
    if not rest:
        return
    for it in merged(root, rows.product, rest, day, from_ns, to_ns):
        if it.record.kind == DAMAGED:
            rows.marker(it.ts_ns, it.channel, "damaged",
                        orjson.dumps({"error": it.damage}).decode(), DAMAGED)
        else:
            rows.feed(it.channel, it.record, it.shared)


RUN_RECORDS = 65_536


def _repeats_trades(payload: bytes) -> bool:
    """AT trade snapshots and Exchange last_match repeat earlier trades: the Python path
    de-duplicates them, so they are not put in a columnar run."""
    return is_snapshot(payload) or payload.startswith(b'{"type":"last_match"')


def _bulk_stream(rows: ProductRows, root: Path, channel: str, day: dt.date,
                 from_ns: int | None, to_ns: int | None) -> None:
    run: list[Record] = []
    last_ts = from_ns or 0
    trades = channel not in D.BOOK_CHANNELS
    for rec, damage in stream_records(root, rows.product, channel, day, from_ns, to_ns):
        if rec is not None and rec.kind == RecordKind.DATA and not (
                trades and _repeats_trades(rec.payload)):
            run.append(rec)
            last_ts = rec.ts_ns
            if len(run) >= RUN_RECORDS:
                rows.feed_run(channel, run)
                run = []
            continue
        if run:
            rows.feed_run(channel, run)
            run = []
        if rec is None:
            rows.marker(last_ts, channel, "damaged", orjson.dumps({"error": damage}).decode(),
                        DAMAGED)
        else:
            last_ts = rec.ts_ns
            rows.feed(channel, rec)
    if run:
        rows.feed_run(channel, run)


def _bulk_batches(rows: ProductRows, root: Path, channel: str, day: dt.date) -> None:
    """A whole day of a book stream, batch by batch: batches without markers go to the
    columnar path together; a batch holding a marker is fed record by record."""
    run: list[RecordBatch] = []
    size = 0
    last_ts = 0
    for batch, damage in stream_batches(root, rows.product, channel, day):
        if batch is not None and batch.all_data():
            run.append(batch)
            size += len(batch)
            last_ts = batch.ts[-1]
            if size >= RUN_RECORDS:
                rows.feed_batches(channel, run)
                run, size = [], 0
            continue
        if run:
            rows.feed_batches(channel, run)
            run, size = [], 0
        if batch is None:
            rows.marker(last_ts, channel, "damaged", orjson.dumps({"error": damage}).decode(),
                        DAMAGED)
            continue
        for rec in batch.records():
            last_ts = rec.ts_ns
            rows.feed(channel, rec)
    if run:
        rows.feed_batches(channel, run)


def warm_up(rows: ProductRows, root: Path, channels: list[str], until_ns: int,
            lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> int | None:
    """Rebuild `rows.tracker`'s book from the last snapshot before `until_ns` up to it.

    Returns the snapshot's time, or None when none was found within the lookback (the book
    then stays invalid until the next snapshot). Rows are not produced while warming up.
    """
    snap = find_snapshot(root, rows.product, channels, until_ns, lookback_days)
    if snap is None:
        return None
    saved_out, rows.out = rows.out, None
    saved_cols, rows.cols = rows.cols, {}
    rows._bind()
    try:
        d = day_of(snap)
        while day_start(d) < until_ns:
            feed_span(rows, root, channels, snap, until_ns, d)
            d += dt.timedelta(days=1)
    finally:
        rows.out, rows.cols = saved_out, saved_cols
        rows._bind()
    rows.tracker.close_span(until_ns)
    return snap


def run_days(rows: ProductRows, root: Path, channels: list[str], days: Iterable[dt.date],
             day_done: Callable[[dt.date, ProductRows], None] | None = None) -> None:
    """Feed each day in order (the book carries over), calling `day_done` after each."""
    for d in days:
        feed_span(rows, root, channels, None, None, d)
        if day_done is not None:
            day_done(d, rows)


def book_at(root: Path, product: str, at_ns: int,
            lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> tuple[ProductRows, int | None]:
    """The book of `product` with every record received at or before `at_ns` applied, and
    the time of the snapshot it starts from (None: no snapshot within the lookback)."""
    rows = ProductRows(product)
    chans = [c for c in D.BOOK_CHANNELS if stream_days(root, product, c)]
    if not chans:
        return rows, None
    return rows, warm_up(rows, root, chans, at_ns + 1, lookback_days)
