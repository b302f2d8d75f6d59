"""Exchange (ws-feed) frame encoders: l2update/snapshot, match/last_match, ticker, heartbeat.

Field order follows the real 2021 capture and the 2026 samples. Exchange frames carry their
per-product ``sequence`` in the body, so each frame is complete when encoded and is shared by
every subscriber (``tail`` is empty; see `tools.venue.events`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from tools.venue.events import Event, Trade
from tools.venue.frames_at import _incr
from tools.venue.product import ProductState, Stamp

DIALECT = "exchange"
#: public channels and the name the venue uses in its `subscriptions` ack
ACK_NAME = {"heartbeat": "heartbeat", "status": "status", "ticker": "ticker",
            "ticker_batch": "ticker_batch", "level2_batch": "level2_50", "matches": "matches",
            "auctionfeed": "auctionfeed"}
CHANNELS = tuple(ACK_NAME)
#: channels that exist but need authentication since 2023-08-01
AUTH_ONLY = ("level2", "level3", "full", "user", "balance", "rfq_matches")
ALIASES = {"level2_50": "level2_batch", "ticker_1000": "ticker_batch"}


class ExchangeFrames:
    """Encodes Exchange events; one instance per market model (it caches timestamps)."""

    dialect = DIALECT

    def __init__(self) -> None:
        self._stamp = Stamp()

    def l2_update(self, st: ProductState, t_ns: int,
                  changes: Sequence[tuple[bool, int, bytes]]) -> Event:
        if len(changes) == 1:  # the common case, without a generator expression
            bid, ticks, size = changes[0]
            body = (b'{"type":"l2update","product_id":"%s","changes":[["%s","%s","%s"]],'
                    b'"time":"%s"}' % (st.pid_b, b"buy" if bid else b"sell", st.px(ticks), size,
                                       self._stamp.us(t_ns)))
            return ("level2_batch", "l2update", st.ptuple, body, b"", None)
        chg = b",".join(b'["%s","%s","%s"]' % (b"buy" if bid else b"sell", st.px(k), size)
                        for bid, k, size in changes)
        body = b'{"type":"l2update","product_id":"%s","changes":[%s],"time":"%s"}' % (
            st.pid_b, chg, self._stamp.us(t_ns))
        return ("level2_batch", "l2update", st.ptuple, body, b"", None)

    def l2_snapshot(self, st: ProductState, t_ns: int) -> Event:
        px = st.px
        asks = b",".join(b'["%s","%s"]' % (px(k), v) for k, v in st.asks.items())
        bids = b",".join(b'["%s","%s"]' % (px(k), v) for k, v in st.bids.items())
        body = b'{"type":"snapshot","product_id":"%s","asks":[%s],"bids":[%s],"time":"%s"}' % (
            st.pid_b, asks, bids, self._stamp.us(t_ns))
        return ("level2_batch", "snapshot", st.ptuple, body, b"", None)

    def _match(self, st: ProductState, tr: Trade, t_ns: int, kind: bytes) -> bytes:
        # `side` is the maker side: a buy taker lifts a resting sell.
        return (b'{"type":"%s","trade_id":%d,"maker_order_id":"%s","taker_order_id":"%s",'
                b'"side":"%s","size":"%s","price":"%s","product_id":"%s","sequence":%d,'
                b'"time":"%s"}' % (kind, tr.trade_id, tr.maker_order_id, tr.taker_order_id,
                                   b"sell" if tr.taker_buy else b"buy", tr.size,
                                   st.px(tr.ticks), st.pid_b, st.sequence,
                                   self._stamp.us(t_ns)))

    def _ticker(self, st: ProductState, t_ns: int) -> bytes:
        return (b'{"type":"ticker","sequence":%d,"product_id":"%s","price":"%s","open_24h":"%s",'
                b'"volume_24h":"%.8f","low_24h":"%s","high_24h":"%s","volume_30d":"%.8f",'
                b'"best_bid":"%s","best_bid_size":"%s","best_ask":"%s","best_ask_size":"%s",'
                b'"side":"%s","time":"%s","trade_id":%d,"last_size":"%s"}' % (
                    st.sequence, st.pid_b, st.px(st.last_price), st.open_24h, st.volume_24h,
                    st.low_24h, st.high_24h, st.volume_24h * 23.7, st.px(st.best_bid),
                    st.bids.get(st.best_bid, b"0"), st.px(st.best_ask),
                    st.asks.get(st.best_ask, b"0"), st.last_side, self._stamp.us(t_ns),
                    st.trade_id, st.last_size))

    def trade(self, st: ProductState, t_ns: int, tr: Trade) -> list[Event]:
        match = self._match(st, tr, t_ns, b"match")
        st.recent_trades.append(match)
        if len(st.recent_trades) > 1:
            del st.recent_trades[:-1]
        seq = st.sequence
        return [("matches", "match", st.ptuple, match, b"", seq),
                ("ticker", "ticker", st.ptuple, self._ticker(st, t_ns), b"", seq)]

    def ticker_batch(self, st: ProductState, t_ns: int) -> Event:
        return ("ticker_batch", "ticker", st.ptuple, self._ticker(st, t_ns), b"", st.sequence)

    def candle(self, st: ProductState, t_ns: int, kind: bytes = b"update") -> Event | None:
        """The Exchange feed has no candles channel."""
        return None

    def product_heartbeat(self, st: ProductState, t_ns: int) -> Event:
        body = (b'{"type":"heartbeat","last_trade_id":%d,"product_id":"%s","sequence":%d,'
                b'"time":"%s"}' % (st.trade_id, st.pid_b, st.sequence, self._stamp.us(t_ns)))
        return ("heartbeat", "heartbeat", st.ptuple, body, b"", st.sequence)

    def status(self, states: Iterable[ProductState], t_ns: int,
               kind: bytes = b"snapshot") -> Event:
        prods: list[bytes] = []
        ids: list[str] = []
        currencies: dict[str, int] = {}
        for st in states:
            base, _, quote = st.pid.partition("-")
            prods.append(
                b'{"id":"%s","base_currency":"%s","quote_currency":"%s","base_increment":"%s",'
                b'"quote_increment":"%s","display_name":"%s","status":"online",'
                b'"status_message":null,"min_market_funds":"1","post_only":false,'
                b'"limit_only":false,"cancel_only":false,"fx_stablecoin":false}' % (
                    st.pid_b, base.encode(), quote.encode(), _incr(st.size_dec),
                    _incr(st.price_dec), st.pid_b))
            ids.append(st.pid)
            currencies.setdefault(base, 8)
            currencies.setdefault(quote, 2)
        curr = b",".join(
            b'{"id":"%s","name":"%s","display_name":"%s","min_size":"%s","status":"online",'
            b'"status_message":null,"max_precision":"%s","convertible_to":[],"details":{},'
            b'"default_network":"","supported_networks":[]}' % (
                c.encode(), c.encode(), c.encode(), _incr(d), _incr(d))
            for c, d in currencies.items())
        body = b'{"type":"status","products":[%s],"currencies":[%s]}' % (b",".join(prods), curr)
        return ("status", "status", tuple(ids), body, b"", None)

    def snapshots(self, sub: str, st: ProductState, t_ns: int) -> list[Event]:
        """What the venue sends right after a product is subscribed on `sub`."""
        if sub == "level2_batch":
            return [self.l2_snapshot(st, t_ns)]
        if sub == "ticker":
            return [("ticker", "ticker", st.ptuple, self._ticker(st, t_ns), b"", st.sequence)]
        if sub == "matches" and st.recent_trades:
            last = st.recent_trades[-1].replace(b'"type":"match"', b'"type":"last_match"', 1)
            seq = orjson.loads(last)["sequence"]
            return [("matches", "last_match", st.ptuple, last, b"", seq)]
        return []

    def subscriptions(self, t_ns: int, subs: dict[str, list[str]]) -> Event:
        """Cumulative ack listing every channel held, with the venue's channel names."""
        chans = [{"name": ACK_NAME.get(ch, ch), "product_ids": ps, "account_ids": None}
                 for ch, ps in subs.items()]
        return ("subscriptions", "subscriptions", (),
                orjson.dumps({"type": "subscriptions", "channels": chans}), b"", None)

    @staticmethod
    def error(message: str, reason: str | None = None) -> bytes:
        msg: dict[str, str] = {"type": "error", "message": message}
        if reason is not None:
            msg["reason"] = reason
        return orjson.dumps(msg)
