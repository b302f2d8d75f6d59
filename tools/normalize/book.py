"""The L2 order book rebuild: the one implementation export, `inspect book` and `inspect integrity`
share, so a book printed, a book sampled into Parquet and a validity figure always agree.

The book is valid only between a snapshot and the next thing that may have lost an update: a
stream marker (gap, disconnect, dropped, restart, stop, note; not `subscribe`, which announces
the snapshot that follows), or a damaged stretch of file. Updates seen while invalid are still
applied (the next snapshot replaces everything anyway) but nothing built from the book then
claims to be valid.

Levels are kept in one dict per side keyed by the price as a float, holding the venue's own
price and size strings, so output stays exact; two spellings of one price ("100.0", "100.00")
are one level, as on the venue. The best price per side comes from a lazily cleaned heap.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from storage import RecordKind
from tools.normalize.native import pure

Level = tuple[str, str]  # (price, size) exactly as the venue sent them

#: markers that do not make the book doubtful: SUBSCRIBE precedes a fresh snapshot
_HARMLESS = frozenset({int(RecordKind.SUBSCRIBE)})


class Side:
    """One side of the book. The best price comes from a heap of the side's prices (negated
    for bids) cleaned lazily: a removed level leaves its entry until it reaches the top, so
    neither a removal nor a best-price read ever scans the whole side."""

    __slots__ = ("_bid", "_heap", "levels")

    def __init__(self, is_bid: bool) -> None:
        self.levels: dict[float, Level] = {}
        self._bid = is_bid
        self._heap: list[float] = []

    def set(self, price: str, size: str) -> float:
        key = float(price)
        levels = self.levels
        if float(size) == 0.0:
            levels.pop(key, None)
        elif key in levels:
            levels[key] = (price, size)
        else:
            self.add(key, price, size)
        return key

    def add(self, key: float, price: str, size: str) -> None:
        """A price not on the book yet (`set` and `BookTracker.message` decide that). The
        level goes in before a rebuild, so the rebuilt heap holds the new price too."""
        heap = self._heap
        heapq.heappush(heap, -key if self._bid else key)
        self.levels[key] = (price, size)
        if len(heap) > 2 * len(self.levels) + 1024:  # mostly removed prices: rebuild
            self._rebuild()

    def _rebuild(self) -> None:
        self._heap = [-k for k in self.levels] if self._bid else list(self.levels)
        heapq.heapify(self._heap)

    def clear(self) -> None:
        self.levels.clear()
        self._heap.clear()

    def best_key(self) -> float | None:
        heap, levels = self._heap, self.levels
        while heap:
            k = -heap[0] if self._bid else heap[0]
            if k in levels:
                return k
            heapq.heappop(heap)
        return None

    def best(self) -> Level | None:
        heap = self._heap
        if heap:  # the usual case: the heap's top is still on the book
            got = self.levels.get(-heap[0] if self._bid else heap[0])
            if got is not None:
                return got
        k = self.best_key()
        return None if k is None else self.levels[k]

    def top(self, n: int) -> list[Level]:
        keys = (heapq.nlargest(n, self.levels) if self._bid
                else heapq.nsmallest(n, self.levels))
        return [self.levels[k] for k in keys]

    def nth_key(self, n: int) -> float | None:
        """The key of the n-th best level (1-based), or None if the side has fewer levels."""
        if len(self.levels) < n:
            return None
        keys = (heapq.nlargest(n, self.levels) if self._bid
                else heapq.nsmallest(n, self.levels))
        return keys[-1]


class L2Book:
    """Price levels of one product: changed through `BookTracker.level`, read with `top`,
    `crossed` and each side's `best`."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = Side(True)
        self.asks = Side(False)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """(bids best first, asks best first), at most n each."""
        return self.bids.top(n), self.asks.top(n)

    def crossed(self) -> int:
        """0 normal, 1 locked (best bid == best ask), 2 crossed (bid above ask)."""
        b, a = self.bids.best_key(), self.asks.best_key()
        if b is None or a is None or b < a:
            return 0
        return 1 if b == a else 2


@dataclass
class BookStats:
    """What `inspect integrity` reports about one product's book over a span of time."""

    snapshots: int = 0
    updates: int = 0
    levels: int = 0
    invalidations: int = 0
    markers: int = 0
    crossed_moments: int = 0
    locked_moments: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    valid_ns: int = 0

    def valid_pct(self) -> float | None:
        if self.first_ns is None or self.last_ns is None or self.last_ns <= self.first_ns:
            return None
        return round(100.0 * self.valid_ns / (self.last_ns - self.first_ns), 3)


@dataclass
class BookTracker:
    """The book plus its validity, fed message by message in receive-time order."""

    book: L2Book = field(default_factory=L2Book)
    valid: bool = False
    stats: BookStats = field(default_factory=BookStats)
    _valid_since: int = 0
    _cross_state: int = 0
    _in_snapshot: bool = False

    def _seen(self, ts: int) -> None:
        st = self.stats
        if st.first_ns is None:
            st.first_ns = ts
            if self.valid:
                self._valid_since = ts
        if st.last_ns is None or ts > st.last_ns:
            st.last_ns = ts

    def begin(self, ts: int, is_snapshot: bool) -> None:
        """A book message starts; a snapshot replaces the whole book."""
        st = self.stats
        if st.first_ns is None:
            self._seen(ts)
        elif ts > st.last_ns:  # type: ignore[operator]
            st.last_ns = ts
        if is_snapshot:
            self.book.clear()
            self._in_snapshot = True
            self.stats.snapshots += 1
        else:
            self.stats.updates += 1

    def level(self, is_bid: bool, price: str, size: str) -> float:
        self.stats.levels += 1
        book = self.book
        return (book.bids if is_bid else book.asks).set(price, size)

    def apply(self, ts: int, is_snapshot: bool, levels: list[tuple[bool, str, str]]) -> None:
        """A whole book message as the parsers deliver it: `message`, keeping the exact
        outcome of `begin`, `level`... `end` in two rare cases. After a snapshot that broke
        off (begun, never ended: its end is owed to the next message) this message goes
        level by level; a level whose price or size is no number raises as `level` does, with
        the levels before it applied and counted as `level` counts them."""
        if self._in_snapshot:
            self.begin(ts, is_snapshot)
            for is_bid, price, size in levels:
                self.level(is_bid, price, size)
            self.end(ts)
            return
        try:
            if native_message is not None:  # `message` without its Python frame
                native_message(self, ts, is_snapshot, levels)
            else:
                self.message(ts, is_snapshot, levels)
        except (ValueError, TypeError):
            self.stats.levels += first_bad(levels) + 1
            self._in_snapshot = is_snapshot
            raise

    def message(self, ts: int, is_snapshot: bool,
                levels: Iterable[tuple[bool, str, str]]) -> None:
        """A whole book message at once: what `begin`, `level` for each (is_bid, price,
        size) and `end` do, inlined (one call per message, not three plus one per level;
        tests/export check that both ways give the same book and stats)."""
        if native_message is not None:
            native_message(self, ts, is_snapshot, levels)  # what follows, compiled (_book.c)
            return
        st = self.stats
        if st.first_ns is None:
            self._seen(ts)
        elif ts > st.last_ns:  # type: ignore[operator]
            st.last_ns = ts
        book = self.book
        bids, asks = book.bids, book.asks
        if is_snapshot:
            book.clear()
            st.snapshots += 1
        else:
            st.updates += 1
        on_bid, on_ask = bids.levels, asks.levels
        n = 0
        for is_bid, price, size in levels:
            n += 1
            key = float(price)
            on = on_bid if is_bid else on_ask
            if float(size) == 0.0:
                on.pop(key, None)
            elif key in on:
                on[key] = (price, size)
            else:
                (bids if is_bid else asks).add(key, price, size)
        st.levels += n
        if is_snapshot and not self.valid:
            self.valid = True
            self._valid_since = ts
        self._in_snapshot = False
        state = 0
        if self.valid:  # book.crossed(), with the usual case (clean heap tops) inlined
            bh, ah = bids._heap, asks._heap
            b = -bh[0] if bh else None
            if b is not None and b not in on_bid:
                b = bids.best_key()
            a = ah[0] if ah else None
            if a is not None and a not in on_ask:
                a = asks.best_key()
            if b is not None and a is not None and b >= a:
                state = 1 if b == a else 2
        if state != self._cross_state:
            self._crossing(state)

    def end(self, ts: int) -> None:
        """A book message is fully applied: a snapshot makes the book valid; check crossing."""
        if self._in_snapshot:
            self._in_snapshot = False
            if not self.valid:
                self.valid = True
                self._valid_since = ts
        self._crossing(self.book.crossed() if self.valid else 0)

    def _crossing(self, state: int) -> None:
        if state == self._cross_state:
            return
        if state:
            if state == 2:
                self.stats.crossed_moments += 1
            else:
                self.stats.locked_moments += 1
        self._cross_state = state

    def marker(self, ts: int, kind: int) -> bool:
        """A marker in a book stream; returns True if it invalidated a valid book."""
        self._seen(ts)
        self.stats.markers += 1
        if kind in _HARMLESS:
            return False
        return self.invalidate(ts)

    def invalidate(self, ts: int) -> bool:
        if not self.valid:
            return False
        self.stats.valid_ns += max(0, ts - self._valid_since)
        self.valid = False
        self.stats.invalidations += 1
        return True

    def close_span(self, ts: int) -> BookStats:
        """Account valid time up to `ts` and return this span's stats; start a new span."""
        st = self.stats
        if self.valid and st.first_ns is not None:
            st.valid_ns += max(0, ts - self._valid_since)
            st.last_ns = max(st.last_ns or ts, ts)
        self.stats = BookStats()
        self._valid_since = ts
        return st


def first_bad(levels: Iterable[tuple[bool, str, str]]) -> int:
    """Index of the first level whose price or size `float()` refuses (the one `level` and
    `message` raise at), or the number of levels if none (only read after such an error)."""
    n = 0
    for _, price, size in levels:
        try:
            float(price)
            float(size)
        except (ValueError, TypeError):
            return n
        n += 1
    return n


NativeMessage = Callable[[BookTracker, int, bool, Iterable[tuple[bool, str, str]]], None]


def _load() -> NativeMessage | None:
    if pure():
        return None
    try:
        from tools.normalize._book import message
    except ImportError:  # not built: the pure code
        return None
    return message


#: `BookTracker.message` compiled (_book.c), or None: the pure code
native_message: NativeMessage | None = _load()
