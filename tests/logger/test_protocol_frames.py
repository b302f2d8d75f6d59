"""Hand-written Coinbase frames for the protocol tests (helpers only, no tests here)."""

from __future__ import annotations

from typing import Any

import orjson

TS = "2026-09-05T22:10:29.562097895Z"


def at(channel: str, seq: int, events: list[dict[str, Any]], client_id: bool = False) -> bytes:
    """An Advanced Trade envelope with keys in the venue's order."""
    frame: dict[str, Any] = {"channel": channel}
    if client_id:
        frame["client_id"] = ""
    frame.update({"timestamp": TS, "sequence_num": seq, "events": events})
    return orjson.dumps(frame)


def at_l2(product: str, seq: int, kind: str = "update", levels: int = 2) -> bytes:
    updates = [{"side": "bid" if i % 2 else "offer", "event_time": TS,
                "price_level": f"{100 + i}.5", "new_quantity": "0.25"} for i in range(levels)]
    return at("l2_data", seq, [{"type": kind, "product_id": product, "updates": updates}],
              client_id=True)


def at_ticker(products: list[str], seq: int, channel: str = "ticker") -> bytes:
    tickers = [{"type": "ticker", "product_id": p, "price": "21932.98",
                "volume_24_h": "16038.2877"} for p in products]
    return at(channel, seq, [{"type": "update", "tickers": tickers}])


def at_trades(products: list[str], seq: int) -> bytes:
    trades = [{"product_id": p, "trade_id": str(800 + i), "price": "2668.35", "size": "0.1",
               "time": TS, "side": "SELL"} for i, p in enumerate(products)]
    return at("market_trades", seq, [{"type": "update", "trades": trades}])


def at_candles(product: str, seq: int) -> bytes:
    return at("candles", seq, [{"type": "snapshot", "candles": [{
        "start": "1688998200", "high": "1867.72", "low": "1865.63", "open": "1867.38",
        "close": "1866.81", "volume": "0.2", "product_id": product}]}])


def at_heartbeat(seq: int) -> bytes:
    return at("heartbeats", seq, [{"current_time": "2026-09-05 22:10:30 +0000 UTC m=+1.0",
                                   "heartbeat_counter": 139651}])


def at_status(seq: int) -> bytes:
    return at("status", seq, [{"type": "snapshot", "products": [
        {"product_type": "SPOT", "id": "BTC-USD", "status": "online"}]}])


def at_ack(seq: int, subscriptions: dict[str, list[str]]) -> bytes:
    return at("subscriptions", seq, [{"subscriptions": subscriptions}])


def at_error(message: str) -> bytes:
    return orjson.dumps({"type": "error", "message": message})


def ex(kind: str, **fields: Any) -> bytes:
    """An Exchange message, ``type`` first as the venue writes it."""
    return orjson.dumps({"type": kind, **fields})


def ex_match(product: str, trade_id: int, kind: str = "match", seq: int = 1000) -> bytes:
    return ex(kind, trade_id=trade_id, maker_order_id="m", taker_order_id="t", side="sell",
              size="0.1", price="14.7", product_id=product, sequence=seq, time=TS)


def ex_heartbeat(product: str, last_trade_id: int, seq: int = 5000) -> bytes:
    return ex("heartbeat", sequence=seq, last_trade_id=last_trade_id, product_id=product,
              time=TS)


def ex_ticker(product: str, seq: int, trade_id: int = 1) -> bytes:
    return ex("ticker", sequence=seq, product_id=product, price="1285.22", side="buy",
              time=TS, trade_id=trade_id, last_size="1")


def ex_ack(channels: dict[str, list[str]]) -> bytes:
    return ex("subscriptions", channels=[{"name": n, "product_ids": p}
                                         for n, p in channels.items()])
