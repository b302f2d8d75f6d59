"""Advanced Trade frame encoders: the envelope and every public channel's events, as bytes.

Field order and shapes follow the real 2026 captures in the shared samples (no ``client_id`` on
the market-data host, integer ``heartbeat_counter``, ``l2_data`` for the ``level2`` channel).
Frames are built with byte templates, not dicts + JSON, because this is the venue's hot path;
tests parse every kind with orjson to prove they are valid JSON of the documented shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from tools.venue.events import Event, Trade
from tools.venue.product import ProductState, Stamp

DIALECT = "advanced_trade"
#: subscribe-channel name → channel name on the wire
WIRE = {"heartbeats": "heartbeats", "candles": "candles", "status": "status",
        "ticker": "ticker", "ticker_batch": "ticker_batch", "level2": "l2_data",
        "market_trades": "market_trades"}
CHANNELS = tuple(WIRE)
_HEAD = b'{"channel":"%s","timestamp":"%s","sequence_num":'


class ATFrames:
    """Encodes Advanced Trade events; one instance per market model (it caches timestamps)."""

    dialect = DIALECT

    def __init__(self) -> None:
        self._stamp = Stamp()

    def _head(self, wire: bytes, t_ns: int) -> bytes:
        return _HEAD % (wire, self._stamp.ns(t_ns))

    # -- level2 -------------------------------------------------------------------------------
    def l2_update(self, st: ProductState, t_ns: int,
                  changes: Sequence[tuple[bool, int, bytes]]) -> Event:
        ts = self._stamp.ns(t_ns)
        if len(changes) == 1:  # the common case, without a generator expression
            bid, ticks, size = changes[0]
            tail = (b',"events":[{"type":"update","product_id":"%s","updates":[{"side":"%s",'
                    b'"event_time":"%s","price_level":"%s","new_quantity":"%s"}]}]}' % (
                        st.pid_b, b"bid" if bid else b"offer", ts, st.px(ticks), size))
            return ("level2", "l2_data", st.ptuple, _HEAD % (b"l2_data", ts), tail, None)
        ups = b",".join(
            b'{"side":"%s","event_time":"%s","price_level":"%s","new_quantity":"%s"}'
            % (b"bid" if bid else b"offer", ts, st.px(ticks), size)
            for bid, ticks, size in changes)
        tail = b',"events":[{"type":"update","product_id":"%s","updates":[%s]}]}' % (
            st.pid_b, ups)
        return ("level2", "l2_data", st.ptuple, _HEAD % (b"l2_data", ts), tail, None)

    def l2_snapshot(self, st: ProductState, t_ns: int) -> Event:
        ts = self._stamp.ns(t_ns)
        tpl = b'{"side":"%s","event_time":"' + ts + b'","price_level":"%s","new_quantity":"%s"}'
        px = st.px
        parts = [tpl % (b"bid", px(k), v) for k, v in st.bids.items()]
        parts += [tpl % (b"offer", px(k), v) for k, v in st.asks.items()]
        tail = b',"events":[{"type":"snapshot","product_id":"%s","updates":[%s]}]}' % (
            st.pid_b, b",".join(parts))
        return ("level2", "l2_data", st.ptuple, _HEAD % (b"l2_data", ts), tail, None)

    # -- trades and tickers -------------------------------------------------------------------
    def _trade_obj(self, st: ProductState, tr: Trade, t_ns: int) -> bytes:
        return (b'{"product_id":"%s","trade_id":"%d","price":"%s","size":"%s","time":"%s",'
                b'"side":"%s"}' % (st.pid_b, tr.trade_id, st.px(tr.ticks), tr.size,
                                   self._stamp.us(t_ns), b"BUY" if tr.taker_buy else b"SELL"))

    def _ticker_obj(self, st: ProductState, with_book: bool) -> bytes:
        chg = (st.last_price / max(float(st.open_24h), 1e-12) / 10**st.price_dec - 1) * 100
        body = (b'{"type":"ticker","product_id":"%s","price":"%s","volume_24_h":"%.8f",'
                b'"low_24_h":"%s","high_24_h":"%s","low_52_w":"%s","high_52_w":"%s",'
                b'"price_percent_chg_24_h":"%.14g"' % (
                    st.pid_b, st.px(st.last_price), st.volume_24h, st.low_24h, st.high_24h,
                    st.low_52w, st.high_52w, chg))
        if with_book:
            body += (b',"best_bid":"%s","best_ask":"%s","best_bid_quantity":"%s",'
                     b'"best_ask_quantity":"%s"' % (
                         st.px(st.best_bid), st.px(st.best_ask),
                         st.bids.get(st.best_bid, b"0"), st.asks.get(st.best_ask, b"0")))
        return body + b"}"

    def trade(self, st: ProductState, t_ns: int, tr: Trade) -> list[Event]:
        obj = self._trade_obj(st, tr, t_ns)
        st.recent_trades.append(obj)
        if len(st.recent_trades) > 50:
            del st.recent_trades[:-50]
        head_mt = self._head(b"market_trades", t_ns)
        tail_mt = b',"events":[{"type":"update","trades":[%s]}]}' % obj
        tail_tk = b',"events":[{"type":"update","tickers":[%s]}]}' % self._ticker_obj(st, True)
        return [("market_trades", "market_trades", st.ptuple, head_mt, tail_mt, None),
                ("ticker", "ticker", st.ptuple, self._head(b"ticker", t_ns), tail_tk, None)]

    def ticker_batch(self, st: ProductState, t_ns: int) -> Event:
        tail = b',"events":[{"type":"update","tickers":[%s]}]}' % self._ticker_obj(st, False)
        return ("ticker_batch", "ticker_batch", st.ptuple, self._head(b"ticker_batch", t_ns),
                tail, None)

    def candle(self, st: ProductState, t_ns: int, kind: bytes = b"update") -> Event:
        start = (t_ns // 1_000_000_000) // 300 * 300
        tail = (b',"events":[{"type":"%s","candles":[{"start":"%d","high":"%s","low":"%s",'
                b'"open":"%s","close":"%s","volume":"%.8f","product_id":"%s"}]}]}' % (
                    kind, start, st.px(st.candle_high), st.px(st.candle_low),
                    st.px(st.candle_open), st.px(st.last_price), st.candle_volume, st.pid_b))
        return ("candles", "candles", st.ptuple, self._head(b"candles", t_ns), tail, None)

    def product_heartbeat(self, st: ProductState, t_ns: int) -> Event | None:
        """Advanced Trade heartbeats are per connection, not per product: none here."""
        return None

    def status(self, states: Iterable[ProductState], t_ns: int,
               kind: bytes = b"snapshot") -> Event:
        prods: list[bytes] = []
        ids: list[str] = []
        for st in states:
            base, _, quote = st.pid.partition("-")
            prods.append(
                b'{"product_type":"SPOT","id":"%s","base_currency":"%s","quote_currency":"%s",'
                b'"base_increment":"%s","quote_increment":"%s","display_name":"%s/%s",'
                b'"status":"online","status_message":"","min_market_funds":"1"}' % (
                    st.pid_b, base.encode(), quote.encode(), _incr(st.size_dec),
                    _incr(st.price_dec), base.encode(), quote.encode()))
            ids.append(st.pid)
        tail = b',"events":[{"type":"%s","products":[%s]}]}' % (kind, b",".join(prods))
        return ("status", "status", tuple(ids), self._head(b"status", t_ns), tail, None)

    def snapshots(self, sub: str, st: ProductState, t_ns: int) -> list[Event]:
        """What the venue sends right after a product is subscribed on `sub`."""
        if sub == "level2":
            return [self.l2_snapshot(st, t_ns)]
        if sub == "ticker":
            tail = b',"events":[{"type":"snapshot","tickers":[%s]}]}' % self._ticker_obj(st, True)
            return [("ticker", "ticker", st.ptuple, self._head(b"ticker", t_ns), tail, None)]
        if sub == "ticker_batch":
            tail = (b',"events":[{"type":"snapshot","tickers":[%s]}]}'
                    % self._ticker_obj(st, False))
            return [("ticker_batch", "ticker_batch", st.ptuple,
                     self._head(b"ticker_batch", t_ns), tail, None)]
        if sub == "market_trades":
            tail = b',"events":[{"type":"snapshot","trades":[%s]}]}' % b",".join(
                reversed(st.recent_trades))
            return [("market_trades", "market_trades", st.ptuple,
                     self._head(b"market_trades", t_ns), tail, None)]
        if sub == "candles":
            return [self.candle(st, t_ns, b"snapshot")]
        return []

    # -- per-connection frames ----------------------------------------------------------------
    def heartbeat(self, t_ns: int, uptime_ns: int) -> Event:
        secs, frac = divmod(uptime_ns, 1_000_000_000)
        tail = (b',"events":[{"current_time":"%s +0000 UTC m=+%d.%09d","heartbeat_counter":%d}]}'
                % (self._stamp.ns(t_ns)[:-1].replace(b"T", b" "), secs, frac, secs))
        return ("heartbeats", "heartbeats", (), self._head(b"heartbeats", t_ns), tail, None)

    def subscriptions(self, t_ns: int, subs: dict[str, list[str]]) -> Event:
        """Cumulative ack: every channel the connection holds, with its products."""
        body = orjson.dumps({"subscriptions": {
            ch: (["heartbeats"] if ch == "heartbeats" and not ps else ps)
            for ch, ps in subs.items()}})
        return ("subscriptions", "subscriptions", (), self._head(b"subscriptions", t_ns),
                b',"events":[' + body + b"]}", None)

    @staticmethod
    def error(message: str) -> bytes:
        """Error frames have no envelope and consume no sequence number."""
        return orjson.dumps({"type": "error", "message": message})


def _incr(dec: int) -> bytes:
    return b"1" if dec == 0 else b"0." + b"0" * (dec - 1) + b"1"
