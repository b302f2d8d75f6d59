"""One product's normalized rows: the sink the parsers feed, the book tracker, the markers.

`ProductRows.feed(channel, record, shared)` takes the product's records in receive-time order
(its own streams and, with `shared=True`, the `_multi` frames that may name it) and appends
rows to each selected dataset; a dataset's rows are handed to `out(dataset, table)` every
`row_group` rows and at `flush()`. With no datasets selected it only rebuilds the book and
counts (what `inspect book` and `inspect integrity` need): the same code path as export.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from storage import Record, RecordBatch, RecordKind
from tools.normalize import columnar
from tools.normalize import datasets as D
from tools.normalize.book import BookTracker, Level, first_bad
from tools.normalize.columns import Columns
from tools.normalize.parse import Malformed, parse

#: kinds this code names; later kinds are shown as kind<N> (RESTART 7 and STOP 8 are agreed)
KIND_NAMES = {int(k): k.name.lower() for k in RecordKind} | {7: "restart", 8: "stop"}
#: where a marker of a channel is flagged in the companion `marker` column
_AFFECTS = {
    "level2": ("book_l2", "book_snapshot", "quotes"),
    "level2_batch": ("book_l2", "book_snapshot", "quotes"),
    "market_trades": ("trades",), "matches": ("trades",),
    "ticker": ("ticker", "quotes"), "ticker_batch": ("ticker",),
    "candles": ("candles",), "status": ("status",),
}


def kind_name(kind: int) -> str:
    return KIND_NAMES.get(kind, f"kind{kind}")


@dataclass(frozen=True)
class Options:
    """What to build: datasets, book depth and sampling, number type, row-group size."""

    datasets: frozenset[str] = frozenset()
    depth: int = D.DEFAULT_DEPTH
    interval_ns: int | None = 1_000_000_000
    on_change: bool = False
    floats: bool = False
    row_group: int = 256_000


Out = Callable[[str, pa.Table], None]


@dataclass
class Counters:
    trades: int = 0
    repeats_skipped: int = 0
    trade_gaps: int = 0
    trades_missing: int = 0
    malformed: int = 0
    markers: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)


@dataclass
class ProductRows:
    product: str
    opts: Options = field(default_factory=Options)
    out: Out | None = None
    tracker: BookTracker = field(default_factory=BookTracker)
    counters: Counters = field(default_factory=Counters)
    cols: dict[str, Columns] = field(init=False)
    _last_trade: int | None = None
    _channel: str = ""
    _tsx: str | None = None
    _next_sample: int | None = None
    _last_quote: tuple[Level | None, Level | None] | None = None
    _touched: bool = False
    _bounds: tuple[float | None, float | None] = (None, None)
    #: (time, marker name) of the last thing that made a valid book invalid
    invalidated_by: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        specs: dict[str, tuple[tuple[str, str], ...]] = {
            "trades": D.TRADES, "book_l2": D.BOOK_L2, "quotes": D.QUOTES, "ticker": D.TICKER,
            "candles": D.CANDLES, "status": D.STATUS, "markers": D.MARKERS,
            "book_snapshot": D.book_snapshot_spec(self.opts.depth)}
        self.cols = {n: Columns(specs[n], self.opts.floats) for n in self.opts.datasets}
        self._bind()

    def _bind(self) -> None:
        """Direct references for the two hot datasets, and whether the book is needed."""
        self._l2 = self.cols.get("book_l2")
        self._trades = self.cols.get("trades")
        self._need_book = not self.cols or bool({"book_snapshot", "quotes"} & set(self.cols))
        self._touching = self._need_book and self.opts.on_change
        self._book_rows = bool({"book_snapshot", "quotes"} & set(self.cols))

    # -- input --------------------------------------------------------------------------------
    def feed(self, channel: str, rec: Record, shared: bool = False) -> None:
        if rec.kind != RecordKind.DATA:
            if not shared:  # a shared stream's markers concern other products too
                self.marker(rec.ts_ns, channel, kind_name(rec.kind), rec.payload.decode(
                    "utf-8", "replace"), rec.kind)
            return
        self._channel = channel
        try:
            parse(orjson.loads(rec.payload), rec.ts_ns, channel, self)
        except (orjson.JSONDecodeError, Malformed) as exc:
            if shared:
                return  # not ours to report: the frame's own products' readers see it
            self.counters.malformed += 1
            self.marker(rec.ts_ns, channel, "malformed", orjson.dumps(
                {"error": str(exc), "offset": rec.offset}).decode(), -1)

    def marker(self, ts: int, channel: str, name: str, payload: str, kind: int) -> None:
        """A stream marker, a damaged file stretch (`damaged`) or an unreadable frame."""
        self.counters.markers += 1
        self.counters.by_kind[name] += 1
        if "markers" in self.cols:
            self._add("markers", ts, channel, name, payload)
        for ds in _AFFECTS.get(channel, ()):
            if ds in self.cols:
                self.cols[ds].mark(name)
        if channel in D.BOOK_CHANNELS and self.tracker.marker(ts, kind):
            self.invalidated_by = (ts, name)
            self._book_invalid(ts)

    # -- input in bulk (the columnar fast path) ------------------------------------------------
    def bulk_ok(self, channel: str) -> bool:
        """Can a run of this channel's frames go through the columnar path (columnar.py)?"""
        if channel in D.BOOK_CHANNELS:
            return self._l2 is not None and not self._need_book
        return channel in ("market_trades", "matches") and self._trades is not None

    def feed_run(self, channel: str, recs: list[Record]) -> None:
        """DATA records of one stream with no marker between them, in file order."""
        payloads = [r.payload for r in recs]
        ts = [r.ts_ns for r in recs]
        if channel in D.BOOK_CHANNELS:
            table = columnar.book_l2(payloads, ts, self.product, self.opts.floats)
            if table is not None:
                self._add_table("book_l2", table)
                return
        else:
            got = columnar.trades(payloads, ts, self.product, self.opts.floats)
            if got is not None:
                table, top = got
                self.counters.trades += table.num_rows
                if top is not None and (self._last_trade is None or top > self._last_trade):
                    self._last_trade = top
                self._add_table("trades", table)
                return
        for r in recs:
            self.feed(channel, r)

    def feed_batches(self, channel: str, batches: list[RecordBatch]) -> None:
        """Stored batches of one book stream holding DATA records only, in file order: the
        columnar path straight from the stored bytes (no record objects)."""
        table = columnar.book_l2_batches(batches, self.product, self.opts.floats)
        if table is not None:
            self._add_table("book_l2", table)
            return
        for b in batches:
            for r in b.records():
                self.feed(channel, r)

    def _add_table(self, ds: str, table: pa.Table) -> None:
        c = self.cols[ds]
        if c.rows:
            self._emit(ds)
        if not table.num_rows:
            return
        if c.pending is not None:
            marks = pa.array([c.pending] + [None] * (table.num_rows - 1), pa.string())
            table = table.set_column(table.schema.get_field_index("marker"), "marker", marks)
            c.pending = None
        if self.out is not None:
            self.out(ds, table)

    # -- sink: trades -------------------------------------------------------------------------
    def trade(self, ts: int, tsx: str | None, trade_id: str, side: str | None, price: str,
              size: str, seq: int | None, repeat: bool) -> None:
        tid = int(trade_id) if trade_id.isdigit() else None
        last = self._last_trade
        if tid is not None:
            if repeat and last is not None and tid <= last:
                self.counters.repeats_skipped += 1
                return
            if last is not None and tid > last + 1:
                self.counters.trade_gaps += 1
                self.counters.trades_missing += tid - last - 1
            if last is None or tid > last:
                self._last_trade = tid
        self.counters.trades += 1
        c = self._trades
        if c is not None:
            c.add(ts, tsx, trade_id, side, price, size, seq)
            if len(c.rows) >= self.opts.row_group:
                self._emit("trades")

    # -- sink: book ---------------------------------------------------------------------------
    def book(self, ts: int, tsx: str | None, is_snapshot: bool,
             levels: list[tuple[bool, str, str]], times: list[str | None] | None,
             seq: int | None) -> None:
        """A whole book message: one `BookTracker.apply` call (the compiled level loop where
        built), then its book_l2 rows, then what the changed book gives (samples, quotes).
        A level with no number for a price or size raises as the level-by-level path did,
        with the rows of the levels before it added."""
        if self._next_sample is not None and ts >= self._next_sample:
            self._sample_until(ts)
        if is_snapshot:
            self._touched = True
        try:
            self.tracker.apply(ts, is_snapshot, levels if self._need_book else [])
        except (ValueError, TypeError):
            done = levels[:first_bad(levels)]
            self._touch(done)
            self._l2_rows(ts, tsx, is_snapshot, done, times, seq)
            raise
        if self._touching and not self._touched:
            self._touch(levels)
        if self._l2 is not None:
            self._l2_rows(ts, tsx, is_snapshot, levels, times, seq)
        if self._book_rows:
            self._book_end(ts, tsx)
        else:  # what _book_end leaves when no sampled dataset is built
            self._tsx = tsx
            self._touched = False

    def book_part(self, ts: int, tsx: str | None, is_snapshot: bool,
                  levels: list[tuple[bool, str, str]], times: list[str | None] | None,
                  seq: int | None) -> None:
        """The readable head of a broken book message, level by level as it always was:
        begun and never ended (the tracker owes a snapshot's end to the next message)."""
        self._sample(ts, is_snapshot)
        self.tracker.begin(ts, is_snapshot)
        for i, level in enumerate(levels):
            if self._need_book:
                self.tracker.level(*level)
                self._touch((level,))
            self._l2_rows(ts, tsx, is_snapshot, (level,), None if times is None
                          else times[i:i + 1], seq)

    def _sample(self, ts: int, is_snapshot: bool) -> None:
        """Interval samples due before this book message; a snapshot touches the book."""
        if self._next_sample is not None and ts >= self._next_sample:
            self._sample_until(ts)
        self._touched = self._touched or is_snapshot

    def _touch(self, levels: Iterable[tuple[bool, str, str]]) -> None:
        """With --on-change: did a level change the top `depth` of its side?"""
        if not self._touching or self._touched:
            return
        bounds = self._bounds
        for is_bid, price, _ in levels:
            key, bound = float(price), bounds[0 if is_bid else 1]
            if bound is None or (key >= bound if is_bid else key <= bound):
                self._touched = True
                return

    def _l2_rows(self, ts: int, tsx: str | None, is_snapshot: bool,
                 levels: Iterable[tuple[bool, str, str]], times: list[str | None] | None,
                 seq: int | None) -> None:
        c = self._l2
        if c is None:
            return
        group = self.opts.row_group
        for i, (is_bid, price, size) in enumerate(levels):
            c.add(ts, tsx if times is None else times[i], is_snapshot,
                  "bid" if is_bid else "ask", price, size, seq)
            if len(c.rows) >= group:
                self._emit("book_l2")

    def _book_end(self, ts: int, tsx: str | None) -> None:
        tr = self.tracker
        self._tsx = tsx
        if "book_snapshot" in self.cols:
            if self._next_sample is None and self.opts.interval_ns:
                step = self.opts.interval_ns
                self._next_sample = (ts // step + 1) * step
            if self.opts.on_change and self._touched and tr.valid:
                self._snapshot_row(ts)
        self._touched = False
        if "quotes" in self.cols and tr.valid:
            q = (tr.book.bids.best(), tr.book.asks.best())
            if q != self._last_quote:
                self._last_quote = q
                b, a = q
                self._add("quotes", ts, tsx, "book", True, *(b or (None, None)),
                          *(a or (None, None)))

    def restart_sampling(self) -> None:
        """Start the interval grid afresh at the next book frame (after a skipped span)."""
        self._next_sample = None
        self._last_quote = None

    def _book_invalid(self, ts: int) -> None:
        if "quotes" in self.cols:
            self._last_quote = None
            self._add("quotes", ts, None, "book", False, None, None, None, None)
        if "book_snapshot" in self.cols and self.opts.on_change:
            self._snapshot_row(ts)

    def _sample_until(self, ts: int) -> None:
        """Interval samples for every grid time up to `ts` (the book did not change since)."""
        step = self.opts.interval_ns or 1
        assert self._next_sample is not None
        while self._next_sample <= ts:
            self._snapshot_row(self._next_sample)
            self._next_sample += step

    def _snapshot_row(self, ts: int) -> None:
        depth, tr = self.opts.depth, self.tracker
        cells: list[Any] = [None] * (4 * depth)
        if tr.valid:
            bids, asks = tr.book.top(depth)
            for i, (price, size) in enumerate(asks):
                cells[4 * i], cells[4 * i + 1] = price, size
            for i, (price, size) in enumerate(bids):
                cells[4 * i + 2], cells[4 * i + 3] = price, size
            if self.opts.on_change:
                self._bounds = (tr.book.bids.nth_key(depth), tr.book.asks.nth_key(depth))
        self._add("book_snapshot", ts, self._tsx, tr.valid, *cells)

    # -- sink: ticker, candles, status --------------------------------------------------------
    def ticker(self, ts: int, tsx: str | None, channel: str, is_snapshot: bool,
               values: tuple[Any, ...], seq: int | None) -> None:
        if "ticker" in self.cols:
            self._add("ticker", ts, tsx, channel, is_snapshot, *values[:8], seq, *values[8:])
        bid, bid_size, ask, ask_size = values[1:5]
        if "quotes" in self.cols and channel == "ticker" and bid is not None \
                and ask is not None:
            self._add("quotes", ts, tsx, "ticker", True, bid, bid_size, ask, ask_size)

    def candle(self, ts: int, tsx: str | None, is_snapshot: bool,
               values: tuple[Any, ...]) -> None:
        if "candles" in self.cols:
            self._add("candles", ts, tsx, is_snapshot, *values)

    def status(self, ts: int, tsx: str | None, values: tuple[Any, ...]) -> None:
        if "status" in self.cols:
            self._add("status", ts, tsx, *values)

    # -- output -------------------------------------------------------------------------------
    def _add(self, ds: str, *values: Any) -> None:
        c = self.cols[ds]
        c.add(*values)
        if len(c.rows) >= self.opts.row_group:
            self._emit(ds)

    def _emit(self, ds: str) -> None:
        c = self.cols[ds]
        if not len(c):
            return
        table = c.take()
        if ds == "markers":  # markers of bulk-read streams come first: back into time order
            table = table.sort_by("ts_recv")
        if self.out is not None:
            self.out(ds, table)

    def flush(self) -> None:
        """Hand every dataset's remaining rows to `out`."""
        for ds in self.cols:
            self._emit(ds)

    def unconverted(self) -> int:
        return sum(c.unconverted for c in self.cols.values())
