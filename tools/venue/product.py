"""Per-product market state (order book, last trade, counters) and realistic product ids.

The generator and the venue share one `ProductState` per product: an order book kept as two
dicts of price ticks → size string, so a level2 snapshot sent on subscribe shows exactly the
book the earlier updates built, and Exchange per-product `sequence` / `trade_id` counters that
behave like the real feed (sequence advances on every book event, so `match`/`ticker`
sequences have gaps by design; `trade_id` is +1 per trade).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

# Bases roughly by Coinbase 24 h volume, quotes in the order the venue lists them.
_BASES_TEXT = (
    "BTC ETH SOL XRP DOGE ADA AVAX LINK LTC DOT BCH SHIB UNI MATIC ATOM XLM ETC FIL APT ARB "
    "NEAR OP ICP AAVE ALGO GRT HBAR MKR SAND MANA AXS CRV SNX COMP YFI SUSHI BAT ZRX ENS LDO "
    "RNDR INJ SEI SUI TIA JTO PYTH BONK WIF PEPE FET IMX STX EGLD XTZ EOS KSM MINA FLOW CHZ "
    "APE GALA BLUR DYDX ONDO JASMY ANKR SKL BAND NMR NU DASH ZEC CELO ONE QNT RPL LRC STORJ "
    "OXT KNC REN BAL UMA MASK AMP OGN CTSI SPELL AUDIO CVC GTC POLY RLC TRB ACH ALCX API3"
)
_BASES = tuple(_BASES_TEXT.split())
_QUOTES = ("USD", "EUR", "GBP", "USDT", "BTC", "ETH")

# Reference prices: per base in USD, scaled by quote.
_QUOTE_SCALE = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "USDT": 1.0, "BTC": 1 / 60000,
                "ETH": 1 / 3000}
_BASE_PRICE = {"BTC": 61234.5, "ETH": 3021.7, "SOL": 148.3, "XRP": 0.52, "DOGE": 0.13,
               "ADA": 0.45, "AVAX": 27.4, "LINK": 14.2, "LTC": 71.8, "DOT": 6.1, "BCH": 352.0}


#: levels per side of the deepest real books
_DEEP = {"BTC-USD": 6000, "ETH-USD": 3000}


def default_products(n: int) -> list[str]:
    """`n` distinct realistic product ids, most liquid first (BTC-USD, ETH-USD, SOL-USD, ...).

    Deterministic (no randomness): product i is base ``i // len(quotes)``-ordered by rounds of
    quotes, so any prefix of the list is the same set a bigger simulation starts with.
    """
    if n < 0:
        raise ValueError(f"product count must be >= 0, got {n}")
    out: list[str] = []
    for quote in _QUOTES:
        for base in _BASES:
            if base == quote or (quote == "ETH" and base == "BTC"):
                continue
            out.append(f"{base}-{quote}")
            if len(out) == n:
                return out
    if len(out) < n:
        raise ValueError(f"at most {len(out)} default products, asked for {n}")
    return out


def _decimals_for(price: float) -> int:
    """Quote increment decimals like the venue's: ~5-6 significant digits in the price."""
    if price >= 10000:
        return 2
    d = 2
    while price * 10**d < 100000 and d < 8:
        d += 1
    return d


class Stamp:
    """RFC 3339 timestamps for a virtual clock, with the date-time part cached per second.

    Formatting a timestamp per message is on the hot path; only the sub-second digits change
    between consecutive messages, so the ``YYYY-MM-DDTHH:MM:SS`` part is computed once a second.
    """

    __slots__ = ("_prefix", "_sec")

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = b""

    def _head(self, t_ns: int) -> bytes:
        sec = t_ns // 1_000_000_000
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        return self._prefix

    def ns(self, t_ns: int) -> bytes:
        """``2026-09-05T22:10:30.260465255Z`` (Advanced Trade envelope precision)."""
        return b"%s.%09dZ" % (self._head(t_ns), t_ns % 1_000_000_000)

    def us(self, t_ns: int) -> bytes:
        """``2021-04-17T16:43:37.075687Z`` (Exchange precision)."""
        return b"%s.%06dZ" % (self._head(t_ns), (t_ns // 1000) % 1_000_000)


@dataclass(eq=False)
class ProductState:
    """One product's book, last trade and counters; mutated by the generator only."""

    pid: str
    weight: float
    price_dec: int
    size_dec: int
    bids: dict[int, bytes] = field(default_factory=dict)
    asks: dict[int, bytes] = field(default_factory=dict)
    best_bid: int = 0
    best_ask: int = 0
    sequence: int = 0
    trade_id: int = 0
    last_price: int = 0
    last_size: bytes = b"0"
    last_side: bytes = b"buy"
    open_24h: bytes = b"0"
    volume_24h: float = 0.0
    sizes: list[bytes] = field(default_factory=list)
    traded_since_candle: bool = False
    traded_since_batch: bool = False
    candle_open: int = 0
    candle_high: int = 0
    candle_low: int = 0
    candle_volume: float = 0.0
    recent_trades: list[bytes] = field(default_factory=list)
    ptuple: tuple[str, ...] = ()
    px_cache: dict[int, bytes] = field(default_factory=dict)
    low_24h: bytes = b"0"
    high_24h: bytes = b"0"
    low_52w: bytes = b"0"
    high_52w: bytes = b"0"

    pid_b: bytes = b""

    def px(self, ticks: int) -> bytes:
        """Price string for a tick count, with the product's quote increment decimals.

        Cached: books move around a few thousand ticks, and formatting is on the hot path.
        """
        cached = self.px_cache.get(ticks)
        if cached is not None:
            return cached
        d = self.price_dec
        if d == 0:
            out = b"%d" % ticks
        else:
            s = b"%0*d" % (d + 1, ticks)
            out = s[:-d] + b"." + s[-d:]
        if len(self.px_cache) < 65536:
            self.px_cache[ticks] = out
        return out


def build_product(pid: str, rank: int, rng: random.Random) -> ProductState:
    """A product with a realistic price, increments, counters and a full two-sided book.

    Book depth is modelled on the 2021 capture: 100-1 350 levels per side with uneven gaps;
    BTC-USD and ETH-USD get 6 000 and 3 000 levels per side.
    Liquidity weight follows the capture's skew (busiest product ≈ 33× the quietest of ten).
    """
    base, _, quote = pid.partition("-")
    ref = _BASE_PRICE.get(base, 0.5 + 200 * rng.random() ** 3) * _QUOTE_SCALE.get(quote, 1.0)
    price_dec = _decimals_for(ref)
    size_dec = rng.choice((1, 2, 6, 8))
    st = ProductState(pid=pid, weight=1.0 / (1 + rank) ** 0.9, price_dec=price_dec,
                      size_dec=size_dec)
    mid = max(int(ref * 10**price_dec), 1000)
    st.sizes = [_size(rng, size_dec) for _ in range(256)]
    depth_bid = int(100 * 13.5 ** rng.random())
    depth_ask = int(100 * 13.5 ** rng.random())
    if pid in _DEEP:
        # The most liquid books are deep: the real BTC-USD level2 snapshot exceeds 1 MiB
        # (PROTOCOL.md §0.4), which breaks clients left at the websockets 1 MiB default.
        depth_bid = depth_ask = _DEEP[pid]
    tick = mid - 1
    for _ in range(depth_bid):
        st.bids[tick] = st.sizes[rng.getrandbits(8)]
        tick -= 1 + int(rng.expovariate(0.4))
        if tick <= 0:
            break
    tick = mid + 1
    for _ in range(depth_ask):
        st.asks[tick] = st.sizes[rng.getrandbits(8)]
        tick += 1 + int(rng.expovariate(0.4))
    st.best_bid, st.best_ask = mid - 1, mid + 1
    st.last_price = mid
    st.open_24h = st.px(int(mid * (0.95 + 0.1 * rng.random())))
    st.volume_24h = 1000 + 1e6 * rng.random() ** 4
    st.sequence = rng.randrange(10**7, 10**11)
    st.trade_id = rng.randrange(10**5, 10**9)
    st.candle_open = st.candle_high = st.candle_low = mid
    st.ptuple = (pid,)
    st.pid_b = pid.encode()
    st.low_24h, st.high_24h = st.px(int(mid * 0.93)), st.px(int(mid * 1.04))
    st.low_52w, st.high_52w = st.px(int(mid * 0.45)), st.px(int(mid * 1.7))
    return st


def _size(rng: random.Random, dec: int) -> bytes:
    value = rng.lognormvariate(0.0, 2.0)
    if dec == 0:
        return b"%d" % max(1, int(value))
    return (b"%.*f" % (dec, value)) if value >= 10**-dec else (b"%.*f" % (dec, 10**-dec))
