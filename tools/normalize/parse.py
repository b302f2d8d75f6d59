"""Coinbase JSON → sink calls, for both dialects: the only module that knows the venue's shapes.

Advanced Trade frames have a `channel` and a list of `events`; Exchange frames a `type`. One
frame can hold events of several products (AT `_multi/<channel>` streams), so every item is
checked against the product being built. Side conventions (docs/EXPORT.md): Exchange `match`
`side` is the maker's side, and Advanced Trade documents `market_trades` `side` as the maker's
side too, so the aggressor (`side` in `trades`) is the opposite on both; `l2` sides become
`bid`/`ask`.
"""

from __future__ import annotations

from typing import Any

from tools.normalize.sink import EventSink

_AGGRESSOR = {"buy": "sell", "sell": "buy", "BUY": "sell", "SELL": "buy"}
_EPOCH_ZERO = "1970-01-01T00:00:00"


class Malformed(ValueError):
    """A frame whose shape is not what its channel/type promises."""


def parse(msg: Any, ts: int, channel: str, sink: EventSink) -> None:
    """Dispatch one decoded frame; Malformed if it cannot be read."""
    if not isinstance(msg, dict):
        raise Malformed(f"not a JSON object: {type(msg).__name__}")
    try:
        if "channel" in msg:
            _at(msg, ts, sink)
        else:
            _exchange(msg, ts, channel, sink)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise Malformed(f"{type(exc).__name__}: {exc}") from None


def _events(msg: dict[str, Any]) -> list[dict[str, Any]]:
    events = msg.get("events")
    return events if isinstance(events, list) else []


def _at(msg: dict[str, Any], ts: int, sink: EventSink) -> None:
    ch = msg["channel"]
    tsx = msg.get("timestamp")
    seq = msg.get("sequence_num")
    p = sink.product
    if ch == "l2_data":
        for ev in _events(msg):
            if ev.get("product_id") != p:
                continue
            snap = ev.get("type") == "snapshot"
            sink.book_begin(ts, snap)
            for u in ev["updates"]:
                et = u.get("event_time")
                if et is None or et.startswith(_EPOCH_ZERO):
                    et = tsx
                sink.level(ts, et, snap, u["side"] == "bid", u["price_level"],
                           u["new_quantity"], seq)
            sink.book_end(ts, tsx)
    elif ch == "market_trades":
        for ev in _events(msg):
            repeat = ev.get("type") == "snapshot"
            trades = ev["trades"]
            if repeat:  # history, newest first on the venue: oldest first here
                trades = sorted(trades, key=_trade_order)
            for tr in trades:
                if tr.get("product_id") == p:
                    sink.trade(ts, tr.get("time"), str(tr["trade_id"]),
                               _AGGRESSOR.get(tr.get("side", "")), tr["price"], tr["size"], seq,
                               repeat)
    elif ch in ("ticker", "ticker_batch"):
        for ev in _events(msg):
            snap = ev.get("type") == "snapshot"
            for t in ev["tickers"]:
                if t.get("product_id") == p:
                    g = t.get
                    sink.ticker(ts, tsx, ch, snap, (
                        t["price"], g("best_bid"), g("best_bid_quantity"), g("best_ask"),
                        g("best_ask_quantity"), None, None, None, None, g("high_24_h"),
                        g("low_24_h"), g("volume_24_h"), None, g("low_52_w"), g("high_52_w"),
                        g("price_percent_chg_24_h")), seq)
    elif ch == "candles":
        for ev in _events(msg):
            snap = ev.get("type") == "snapshot"
            for c in ev["candles"]:
                if c.get("product_id") == p:
                    sink.candle(ts, tsx, snap, (int(c["start"]) * 1_000_000_000, c["open"],
                                                c["high"], c["low"], c["close"], c["volume"]))
    elif ch == "status":
        for ev in _events(msg):
            for s in ev["products"]:
                _status(sink, ts, tsx, s)


def _trade_order(tr: dict[str, Any]) -> tuple[int, str]:
    tid = str(tr.get("trade_id"))
    return (int(tid), tid) if tid.isdigit() else (-1, tid)


def _status(sink: EventSink, ts: int, tsx: str | None, s: dict[str, Any]) -> None:
    g = s.get
    sink.status(ts, tsx, (
        g("id"), g("status"), g("status_message"), g("product_type"), g("base_currency"),
        g("quote_currency"), g("base_increment"), g("quote_increment"),
        g("min_market_funds"), g("display_name"), _bool(g("trading_disabled")),
        _bool(g("cancel_only")), _bool(g("limit_only")), _bool(g("post_only"))))


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _exchange(msg: dict[str, Any], ts: int, channel: str, sink: EventSink) -> None:
    t = msg.get("type")
    tsx = msg.get("time")
    if t == "status":
        for s in msg["products"]:
            _status(sink, ts, tsx, s)
        return
    if msg.get("product_id") != sink.product:
        return
    if t == "l2update":
        sink.book_begin(ts, False)
        for side, price, size in msg["changes"]:
            sink.level(ts, tsx, False, side == "buy", price, size, None)
        sink.book_end(ts, tsx)
    elif t == "snapshot":
        sink.book_begin(ts, True)
        for price, size in msg["bids"]:
            sink.level(ts, tsx, True, True, price, size, None)
        for price, size in msg["asks"]:
            sink.level(ts, tsx, True, False, price, size, None)
        sink.book_end(ts, tsx)
    elif t in ("match", "last_match"):
        sink.trade(ts, tsx, str(msg["trade_id"]), _AGGRESSOR.get(msg.get("side", "")),
                   msg["price"], msg["size"], msg.get("sequence"), t == "last_match")
    elif t == "ticker":
        g = msg.get
        tid = g("trade_id")
        sink.ticker(ts, tsx, channel, False, (
            msg["price"], g("best_bid"), g("best_bid_size"), g("best_ask"), g("best_ask_size"),
            g("side"), None if tid is None else str(tid), g("last_size"), g("open_24h"),
            g("high_24h"), g("low_24h"), g("volume_24h"), g("volume_30d"), None, None, None),
            g("sequence"))
