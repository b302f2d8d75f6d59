"""Coinbase JSON → sink calls, for both dialects: the only module that knows the venue's shapes.

Advanced Trade frames have a `channel` and a list of `events`; Exchange frames a `type`. One
frame can hold events of several products (AT `_multi/<channel>` streams), so every item is
checked against the product being built. Side conventions (docs/EXPORT.md): Exchange `match`
`side` is the maker's side, and Advanced Trade documents `market_trades` `side` as the maker's
side too, so the aggressor (`side` in `trades`) is the opposite on both; `l2` sides become
`bid`/`ask`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

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
    except _ERRORS as exc:
        raise Malformed(f"{type(exc).__name__}: {exc}") from None


#: what a frame of an unexpected shape raises while it is read (and float() of a bad number)
_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError)
#: one level of a book message as the parsers read it: ((is_bid, price, size), its time)
_Read = tuple[tuple[bool, str, str], str | None]


def _at_levels(ev: dict[str, Any], tsx: str | None) -> Iterator[_Read]:
    """An AT l2_data event's levels one by one, each check in the order the fast path's
    comprehensions stand for, so a broken event fails at the same level with the same error."""
    for u in ev["updates"]:
        et = u.get("event_time")
        if et is None or et.startswith(_EPOCH_ZERO):
            et = tsx
        yield (u["side"] == "bid", u["price_level"], u["new_quantity"]), et


def _exchange_levels(msg: dict[str, Any], tsx: str | None, snap: bool) -> Iterator[_Read]:
    """An Exchange l2update's changes or snapshot's bids then asks, one by one (see above)."""
    if not snap:
        for side, price, size in msg["changes"]:
            yield (side == "buy", price, size), tsx
        return
    for price, size in msg["bids"]:
        yield (True, price, size), tsx
    for price, size in msg["asks"]:
        yield (False, price, size), tsx


def _broken(sink: EventSink, ts: int, tsx: str | None, snap: bool, read: Iterator[_Read],
            seq: int | None) -> NoReturn:
    """A book message whose levels could not all be read: the levels before the bad one are
    applied (`book_part`: begun, never ended), as when the book was fed level by level, and
    the error is raised again (the frame is counted malformed by the caller's caller)."""
    levels: list[tuple[bool, str, str]] = []
    times: list[str | None] = []
    try:
        for level, et in read:
            levels.append(level)
            times.append(et)
    except _ERRORS:
        sink.book_part(ts, tsx, snap, levels, times, seq)
        raise
    raise AssertionError("a book message read whole on its second reading")  # pragma: no cover


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
            try:
                ups = ev["updates"]
                levels = [(u["side"] == "bid", u["price_level"], u["new_quantity"])
                          for u in ups]
                times = [tsx if et is None or et.startswith(_EPOCH_ZERO) else et
                         for et in [u.get("event_time") for u in ups]]
            except _ERRORS:
                _broken(sink, ts, tsx, snap, _at_levels(ev, tsx), seq)
            sink.book(ts, tsx, snap, levels, times, seq)
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
        try:
            levels = [(side == "buy", price, size) for side, price, size in msg["changes"]]
        except _ERRORS:
            _broken(sink, ts, tsx, False, _exchange_levels(msg, tsx, False), None)
        sink.book(ts, tsx, False, levels, None, None)
    elif t == "snapshot":
        try:
            levels = ([(True, price, size) for price, size in msg["bids"]]
                      + [(False, price, size) for price, size in msg["asks"]])
        except _ERRORS:
            _broken(sink, ts, tsx, True, _exchange_levels(msg, tsx, True), None)
        sink.book(ts, tsx, True, levels, None, None)
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
