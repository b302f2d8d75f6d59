"""The notebook API: raw records or normalized rows of a data root, as Arrow tables or pandas.

    from tools.normalize import api
    trades = api.table("data", "trades", products=["BTC-USD"], start="2026-11-24T10:00Z",
                       end="2026-11-24T11:00Z")                 # pyarrow.Table
    df = api.dataframe("data", "book_snapshot", products=["BTC-USD"], depth=10)  # pandas
    for r in api.records("data", products=["BTC-USD"], channels=["level2"]): ...
    api.book("data", "BTC-USD", "2026-11-24T10:00Z")            # dict: bids, asks, valid

Rows are exactly what `cbl-export` writes (same code), with a `product` column added. Times
are ISO 8601 strings, dates, epoch seconds or nanoseconds, or `datetime`s (UTC if naive).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from tools.console_cli import format_time, parse_time
from tools.normalize import datasets as D
from tools.normalize.export import SHARED, channels_for, conn_dirs, status_day
from tools.normalize.integrity import integrity as _integrity
from tools.normalize.replay import (
    DEFAULT_LOOKBACK_DAYS,
    book_at,
    day_of,
    day_start,
    run_days,
    warm_up,
)
from tools.normalize.rows import Options, ProductRows, kind_name
from tools.normalize.source import product_days, products, stream_days, stream_records

__all__ = ["RawRecord", "book", "dataframe", "integrity", "records", "table"]

When = str | int | dt.datetime | dt.date | None
PathLike = str | os.PathLike[str]


class RawRecord(NamedTuple):
    product: str
    channel: str
    ts_ns: int
    kind: str       # "data", a marker name, or "damaged" (unreadable bytes)
    payload: bytes  # the venue's bytes (data) or the marker's JSON


def _ns(when: When) -> int | None:
    if when is None:
        return None
    if isinstance(when, dt.datetime):
        aware = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        return int(aware.timestamp()) * 1_000_000_000 + aware.microsecond * 1000
    if isinstance(when, dt.date):
        return day_start(when)
    return parse_time(str(when))


def _days(root: Path, product: str, channels: Sequence[str], lo: int | None,
          hi: int | None) -> list[dt.date]:
    return [d for d in product_days(root, product, channels)
            if (lo is None or d >= day_of(lo)) and (hi is None or d <= day_of(hi - 1))]


def records(root: PathLike, products: Sequence[str] | None = None,
            channels: Sequence[str] | None = None, start: When = None,
            end: When = None) -> Iterator[RawRecord]:
    """Raw records (data and markers) per stream, each stream in file order; an unreadable
    stretch of a file is one record of kind `damaged` (payload: what is wrong)."""
    base = Path(root)
    lo, hi = _ns(start), _ns(end)
    for p in products or _products(base):
        chans = channels or sorted(c.name for c in (base / p).iterdir() if c.is_dir())
        for ch in chans:
            for d in _days(base, p, [ch], lo, hi):
                last = lo or 0
                for rec, damage in stream_records(base, p, ch, d, lo, hi):
                    if rec is None:  # an unreadable stretch: said in place, at its time
                        yield RawRecord(p, ch, last, "damaged", str(damage).encode())
                        continue
                    last = rec.ts_ns
                    yield RawRecord(p, ch, rec.ts_ns, kind_name(rec.kind), rec.payload)


def _products(root: Path) -> list[str]:
    return products(root)


def table(root: PathLike, dataset: str, products: Sequence[str] | None = None,
          start: When = None, end: When = None, *, depth: int = D.DEFAULT_DEPTH,
          interval_ms: int | None = 1000, on_change: bool = False, floats: bool = False,
          lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> pa.Table:
    """One normalized dataset (see docs/EXPORT.md) as a pyarrow Table, rows by product."""
    if dataset not in D.ALL_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(D.ALL_DATASETS)}")
    base = Path(root)
    lo, hi = _ns(start), _ns(end)
    opts = Options(datasets=frozenset({dataset}), depth=depth, on_change=on_change,
                   interval_ns=None if interval_ms is None else interval_ms * 1_000_000,
                   floats=floats)
    parts: list[pa.Table] = []
    names = [SHARED] if dataset == "status" else (products or _products(base))
    for p in names:
        parts += _product_tables(base, p, opts, lo, hi, lookback_days)
    if not parts:
        return _empty(dataset, opts)
    out = pa.concat_tables(parts)
    if lo is not None:
        out = out.filter(pc.greater_equal(out["ts_recv"], pa.scalar(lo, pa.int64()).cast(
            out.schema.field("ts_recv").type)))
    if hi is not None:
        out = out.filter(pc.less(out["ts_recv"], pa.scalar(hi, pa.int64()).cast(
            out.schema.field("ts_recv").type)))
    return out


def _product_tables(base: Path, p: str, opts: Options, lo: int | None, hi: int | None,
                    lookback_days: int) -> list[pa.Table]:
    got: list[pa.Table] = []
    rows = ProductRows(p, opts, lambda _ds, t: got.append(t))
    if p == SHARED:
        days = sorted({d for c in conn_dirs(base) for d in stream_days(base, c, "status")
                       if (lo is None or d >= day_of(lo)) and (hi is None or d <= day_of(hi - 1))})
        for d in days:
            status_day(rows, base, d)
    else:
        chans = channels_for(opts.datasets)
        days = _days(base, p, chans, lo, hi)
        book = [c for c in D.BOOK_CHANNELS if c in chans and product_days(base, p, [c])]
        if days and book and opts.datasets & {"book_snapshot", "quotes"}:
            warm_up(rows, base, book, day_start(days[0]), lookback_days)
        run_days(rows, base, chans, days)
    rows.flush()
    if p == SHARED:
        return got
    return [t.append_column("product", pa.array([p] * t.num_rows, pa.string())) for t in got]


def _empty(dataset: str, opts: Options) -> pa.Table:
    from tools.normalize.columns import Columns

    spec = {"trades": D.TRADES, "book_l2": D.BOOK_L2, "quotes": D.QUOTES, "ticker": D.TICKER,
            "candles": D.CANDLES, "status": D.STATUS, "markers": D.MARKERS,
            "book_snapshot": D.book_snapshot_spec(opts.depth)}[dataset]
    t = Columns(spec, opts.floats).take()
    if dataset != "status":
        t = t.append_column("product", pa.array([], pa.string()))
    return t


def dataframe(root: PathLike, dataset: str, products: Sequence[str] | None = None,
              start: When = None, end: When = None, **kwargs: Any) -> Any:
    """`table(...)` as a pandas DataFrame (needs pandas; decimals become `decimal.Decimal`)."""
    return table(root, dataset, products, start, end, **kwargs).to_pandas()


def book(root: PathLike, product: str, at: When, depth: int = 10,
         lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> dict[str, Any]:
    """The rebuilt L2 book at `at`, as `inspect book --json` prints it."""
    at_ns = _ns(at)
    if at_ns is None:
        raise ValueError("book() needs a time")
    rows, snap = book_at(Path(root), product, at_ns, lookback_days)
    bids, asks = rows.tracker.book.top(depth)
    why = rows.invalidated_by
    valid = snap is not None and rows.tracker.valid
    return {"product": product, "at": format_time(at_ns),
            "snapshot": None if snap is None else format_time(snap), "valid": valid,
            "invalid_reason": None if valid or why is None else why[1],
            "bids": bids, "asks": asks}


def integrity(root: PathLike, products: Sequence[str] | None = None,
              first: dt.date | None = None, last: dt.date | None = None) -> list[dict[str, Any]]:
    """`inspect integrity --json` as a list of dicts."""
    return list(_integrity(Path(root), list(products) if products else None, first, last))
