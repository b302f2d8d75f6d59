"""Deterministic, seeded generator of realistic Coinbase market-data frames (both dialects).

Proportions are modelled on the real 2021 Exchange capture in ``../shared/coinbase/``
(measured: 97.7 % l2update, ~1 % each of ticker and match, one snapshot per product on
subscribe, books of 100-1 350 levels per side, busiest/quietest product ≈ 33×), and shapes on
the 2026 Advanced Trade samples. It is a generator with a live order book per product, not a
copy of the capture: a snapshot sent after a stream of updates shows the book those updates
built, and trades consume the best level and emit the matching book change.

Same seed, product list, dialect and start time → byte-identical frames.

    model = MarketModel(seed=1, products=50, dialect="advanced_trade")
    for product, channel, raw in model.day_of_messages(100_000): ...
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

from tools.venue.events import Event, Trade
from tools.venue.frames_at import ATFrames
from tools.venue.frames_exchange import ExchangeFrames
from tools.venue.product import ProductState, build_product, default_products
from tools.venue.streams import MULTI, conn_stream

__all__ = ["DEFAULT_START_NS", "MarketModel", "default_products", "stream_of"]

Dialect = Literal["advanced_trade", "exchange"]
#: 2026-01-02T00:00:00Z: fixed default virtual start, so a seed alone fixes every byte.
DEFAULT_START_NS = 1_767_312_000 * 1_000_000_000
_SEC = 1_000_000_000
_TABLE_BITS = 12
#: distance from the best price of a book change, in ticks: exponential (mean ≈ 8), as a
#: 1 024-slot table so one random draw picks it
_DIST = tuple(int(-math.log(1 - (k + 0.5) / 1024) / 0.12) for k in range(1024))
#: shared (non-product) streams of the single virtual connection of `day_of_messages`
SHARED_CHANNELS = frozenset({"heartbeats", "subscriptions", "status"})


class Frames(Protocol):
    """What the generator needs from a dialect's encoder (`ATFrames`, `ExchangeFrames`)."""

    dialect: str

    def l2_update(self, st: ProductState, t_ns: int,
                  changes: Sequence[tuple[bool, int, bytes]]) -> Event: ...
    def l2_snapshot(self, st: ProductState, t_ns: int) -> Event: ...
    def trade(self, st: ProductState, t_ns: int, tr: Trade) -> list[Event]: ...
    def ticker_batch(self, st: ProductState, t_ns: int) -> Event: ...
    def candle(self, st: ProductState, t_ns: int, kind: bytes = ...) -> Event | None: ...
    def product_heartbeat(self, st: ProductState, t_ns: int) -> Event | None: ...
    def status(self, states: Sequence[ProductState], t_ns: int,
               kind: bytes = ...) -> Event: ...
    def snapshots(self, sub: str, st: ProductState, t_ns: int) -> list[Event]: ...
    def subscriptions(self, t_ns: int, subs: dict[str, list[str]]) -> Event: ...


def stream_of(ev: Event, conn_id: int = 0) -> tuple[str, str]:
    """The (product, channel) storage stream a frame belongs to, as the daemon routes it."""
    products = ev[2]
    if len(products) == 1 and ev[0] not in SHARED_CHANNELS:
        return products[0], ev[0]
    if len(products) > 1 and ev[0] not in SHARED_CHANNELS:
        return MULTI, ev[0]
    return conn_stream(conn_id), ev[0]


class MarketModel:
    """A seeded market of `products` whose events are encoded in one dialect.

    `generate(n, until_ns)` advances the virtual clock to `until_ns`, producing `n` market
    events (book changes and trades) spread evenly over the interval, interleaved with the
    time-driven frames whose second boundaries fall inside it (AT heartbeats and candles,
    Exchange per-product heartbeats, ticker_batch every 5 s, status every 60 s).
    """

    def __init__(self, seed: int, products: list[str] | int, dialect: Dialect = "advanced_trade",
                 start_ns: int | None = None, trade_ratio: float = 0.01) -> None:
        if dialect not in ("advanced_trade", "exchange"):
            raise ValueError(f"unknown dialect {dialect!r}: advanced_trade or exchange")
        ids = default_products(products) if isinstance(products, int) else list(products)
        if not ids:
            raise ValueError("a market needs at least one product")
        if len(set(ids)) != len(ids):
            raise ValueError("product ids must be distinct")
        self.seed = seed
        self.dialect: Dialect = dialect
        self.rng = random.Random(seed)
        self.enc: Frames = ATFrames() if dialect == "advanced_trade" else ExchangeFrames()
        self.states: dict[str, ProductState] = {
            pid: build_product(pid, rank, self.rng) for rank, pid in enumerate(ids)}
        self.products = ids
        self.start_ns = DEFAULT_START_NS if start_ns is None else start_ns
        self.now_ns = self.start_ns
        self.trade_ratio = trade_ratio
        self._table = self._weighted_table()
        self._next_sec = (self.now_ns // _SEC + 1) * _SEC
        self._warm_up()

    def _weighted_table(self) -> list[ProductState]:
        """4 096 slots filled in proportion to product weight: an O(1) weighted pick."""
        states = list(self.states.values())
        total = sum(s.weight for s in states)
        size = 1 << _TABLE_BITS
        table: list[ProductState] = []
        for s in states:
            table.extend([s] * max(1, round(s.weight / total * size)))
        self.rng.shuffle(table)
        while len(table) < size:
            table.append(states[len(table) % len(states)])
        return table[:size]

    def _warm_up(self) -> None:
        """Give every product a last trade, so `last_match` and trade snapshots exist."""
        for st in self.states.values():
            for _ in range(3):
                self._trade(st, self.now_ns)

    # -- the market -----------------------------------------------------------------------
    def _uuid(self) -> bytes:
        h = b"%032x" % self.rng.getrandbits(128)
        return b"%s-%s-4%s-a%s-%s" % (h[:8], h[8:12], h[13:16], h[17:20], h[20:])

    def _trade(self, st: ProductState, t_ns: int) -> list[Event]:
        rng = self.rng
        taker_buy = rng.random() < 0.5
        book = st.asks if taker_buy else st.bids
        ticks = st.best_ask if taker_buy else st.best_bid
        size = st.sizes[rng.getrandbits(8)]
        st.sequence += 1 + rng.getrandbits(4)
        st.trade_id += 1
        tr = Trade(ticks, size, taker_buy, st.trade_id, self._uuid(), self._uuid())
        st.last_price, st.last_size = ticks, size
        st.last_side = b"sell" if taker_buy else b"buy"
        qty = float(size)
        st.volume_24h += qty
        st.candle_volume += qty
        st.candle_high = max(st.candle_high, ticks)
        st.candle_low = min(st.candle_low, ticks)
        st.traded_since_candle = st.traded_since_batch = True
        out = self.enc.trade(st, t_ns, tr)
        # The trade takes liquidity: a third of the time it consumes the whole best level,
        # and a new level appears at the far end (so books keep their depth); both are
        # published as book changes, so the book stays exactly what the updates say.
        changes: list[tuple[bool, int, bytes]]
        if rng.random() < 0.33 and len(book) > 20:
            del book[ticks]
            fresh = st.sizes[rng.getrandbits(8)]
            if taker_buy:
                st.best_ask = min(st.asks)
                far = max(st.asks) + 1 + rng.getrandbits(2)
                st.asks[far] = fresh
                changes = [(False, ticks, b"0"), (False, far, fresh)]
            else:
                st.best_bid = max(st.bids)
                far = min(st.bids) - 1 - rng.getrandbits(2)
                changes = [(True, ticks, b"0")]
                if far > 0:
                    st.bids[far] = fresh
                    changes.append((True, far, fresh))
        else:
            new_size = st.sizes[rng.getrandbits(8)]
            book[ticks] = new_size
            changes = [(not taker_buy, ticks, new_size)]
        out.append(self.enc.l2_update(st, t_ns, changes))
        return out

    def _change(self, st: ProductState) -> tuple[bool, int, bytes]:
        """One book change near the top. A single 32-bit draw feeds every choice (side,
        distance, size, probabilities): this is the generator's hottest function."""
        r = self.rng.getrandbits(32)
        bid = r & 1
        dist = _DIST[(r >> 1) & 1023]
        size = st.sizes[(r >> 11) & 255]
        p = (r >> 19) & 255  # uniform 0..255
        st.sequence += 1 + ((r >> 27) & 7)
        if bid:
            best = st.best_bid
            if dist == 0 and st.best_ask - best > 2 and p < 77:  # 30 %: improve the bid
                best += 1
                st.best_bid = best
                st.bids[best] = size
                return True, best, size
            ticks = best - dist
            if ticks <= 0:
                ticks = best
            bids = st.bids
            if ticks != best and p < 115 and ticks in bids:  # 45 %: an existing level goes
                del bids[ticks]
                return True, ticks, b"0"
            bids[ticks] = size
            return True, ticks, size
        best = st.best_ask
        if dist == 0 and best - st.best_bid > 2 and p < 77:
            best -= 1
            st.best_ask = best
            st.asks[best] = size
            return False, best, size
        ticks = best + dist
        asks = st.asks
        if ticks != best and p < 115 and ticks in asks:
            del asks[ticks]
            return False, ticks, b"0"
        asks[ticks] = size
        return False, ticks, size

    def _timed(self, t_ns: int, out: list[Event]) -> None:
        """Frames due at the second boundary `t_ns`."""
        enc = self.enc
        sec = t_ns // _SEC
        if self.dialect == "advanced_trade":
            out.append(self.heartbeat(t_ns))
            for st in self.states.values():
                if st.traded_since_candle:
                    ev = enc.candle(st, t_ns)
                    if ev is not None:
                        out.append(ev)
                    st.traded_since_candle = False
        else:
            for st in self.states.values():
                hb = enc.product_heartbeat(st, t_ns)
                if hb is not None:
                    out.append(hb)
        if sec % 5 == 0:
            for st in self.states.values():
                if st.traded_since_batch:
                    out.append(enc.ticker_batch(st, t_ns))
                    st.traded_since_batch = False
        if sec % 300 == 0:
            for st in self.states.values():
                st.candle_open = st.candle_high = st.candle_low = st.last_price
                st.candle_volume = 0.0
        if sec % 60 == 0:
            out.append(enc.status(list(self.states.values()), t_ns, b"update"))

    def generate(self, n: int, until_ns: int) -> list[Event]:
        """`n` market events spread over (now, until_ns], plus timed frames; clock → until_ns."""
        if until_ns < self.now_ns:
            raise ValueError("the virtual clock cannot go backwards")
        out: list[Event] = []
        rng = self.rng
        table = self._table
        enc = self.enc
        t0 = self.now_ns
        step = (until_ns - t0) / n if n else 0.0
        ratio = self.trade_ratio
        multi = 0.5 if self.dialect == "advanced_trade" else 0.1
        trade_cut = int(ratio * 65536)
        multi_cut = int(multi * 65536)
        change = self._change
        l2 = enc.l2_update
        append = out.append
        next_sec = self._next_sec
        for k in range(1, n + 1):
            t = t0 + int(step * k)
            if t >= next_sec:
                while t >= next_sec:
                    self._timed(next_sec, out)
                    next_sec += _SEC
                self._next_sec = next_sec
            r = rng.getrandbits(32)
            st = table[r >> 20]
            u = r & 0xFFFF
            if u < trade_cut:
                out.extend(self._trade(st, t))
            elif (r >> 16) & 0xF < multi_cut >> 12:
                append(l2(st, t, [change(st) for _ in range(2 + (u & 1))]))
            else:
                append(l2(st, t, (change(st),)))
        while until_ns >= self._next_sec:
            self._timed(self._next_sec, out)
            self._next_sec += _SEC
        self.now_ns = until_ns
        return out

    # -- frames for one subscriber --------------------------------------------------------
    def heartbeat(self, t_ns: int) -> Event:
        """An Advanced Trade heartbeats frame (counter = venue uptime in seconds)."""
        if not isinstance(self.enc, ATFrames):
            raise ValueError("heartbeats frames are Advanced Trade only")
        return self.enc.heartbeat(t_ns, t_ns - self.start_ns + 139_000 * _SEC)

    def snapshots(self, channel: str, product: str) -> list[Event]:
        """Frames sent right after `product` is subscribed on `channel` (book, last trade)."""
        return self.enc.snapshots(channel, self.states[product], self.now_ns)

    def status_event(self) -> Event:
        return self.enc.status(list(self.states.values()), self.now_ns)

    def subscriptions(self, subs: dict[str, list[str]]) -> Event:
        return self.enc.subscriptions(self.now_ns, subs)

    def frames(self, channel: str, product: str, rate: float = 2000.0,
               chunk: int = 2000) -> Iterator[bytes]:
        """Endless raw frames of one (channel, product) subscription, snapshot first.

        Advanced Trade frames are numbered as if this were the connection's only
        subscription (``sequence_num`` from 0).
        """
        seq = 0
        at = self.dialect == "advanced_trade"
        for ev in self.snapshots(channel, product):
            yield ev[3] + b"%d" % seq + ev[4] if at else ev[3]
            seq += 1
        while True:
            batch = self.generate(chunk, self.now_ns + int(chunk / rate * _SEC))
            for ev in batch:
                if ev[0] == channel and (product in ev[2] or (channel == "heartbeats")):
                    yield ev[3] + b"%d" % seq + ev[4] if at else ev[3]
                    seq += 1

    def day_of_messages(self, n: int, rate: float = 2000.0,
                        chunk: int = 4096) -> Iterator[tuple[str, str, bytes]]:
        """`n` frames of one virtual connection subscribed to every public channel and product.

        Yields (product, channel, raw_bytes) with the storage stream the daemon would route
        the frame to (`stream_of`): acks, status and snapshots first, then the live mix at
        `rate` market events per virtual second. Used by benchmarks and storage tests.
        """
        at = self.dialect == "advanced_trade"
        seq = 0
        emitted = 0
        channels = (("heartbeats", "candles", "status", "ticker", "ticker_batch", "level2",
                     "market_trades") if at else
                    ("heartbeat", "status", "ticker", "ticker_batch", "level2_batch", "matches"))
        opening: list[Event] = []
        subs: dict[str, list[str]] = {}
        for ch in channels:
            subs[ch] = [] if ch in ("heartbeats", "status") and at else list(self.products)
            if ch == "status" and not at:
                subs[ch] = []
            opening.append(self.subscriptions(dict(subs)))
            if ch == "status":
                opening.append(self.status_event())
            for pid in self.products:
                opening.extend(self.snapshots(ch, pid))
        batch: list[Event] = opening
        while True:
            for ev in batch:
                if emitted >= n:
                    return
                product, channel = stream_of(ev)
                yield product, channel, (ev[3] + b"%d" % seq + ev[4]) if at else ev[3]
                seq += 1
                emitted += 1
            batch = self.generate(chunk, self.now_ns + int(chunk / rate * _SEC))
