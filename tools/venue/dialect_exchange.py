"""Exchange (ws-feed) venue rules: subscribe/unsubscribe handling, acks, errors, REST products.

As documented (``PROTOCOL.md`` §1): products at the root apply to every channel, a channel
object may carry its own; the cumulative ``subscriptions`` ack follows every request and names
``level2_batch`` as ``level2_50``; ``level2``/``level3``/``full`` answer the authentication
error; an unknown product gets one ``" is not a valid product"`` error per channel while the
others are still subscribed; ``heartbeat`` needs at least one product.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson

from tools.venue.frames_exchange import ALIASES, AUTH_ONLY, CHANNELS, ExchangeFrames
from tools.venue.limits import Limits
from tools.venue.product import ProductState
from tools.venue.subs import Subs, SubscribeOutcome

REST_PATH = "/products"
AUTH_REASON = ("level2, level3, and full channels now require authentication. "
               "https://docs.cloud.coinbase.com/exchange/docs/websocket-auth")
_FAILED = "Failed to subscribe"
_NO_PRODUCTS = ("status",)


def _err(reason: str) -> bytes:
    return ExchangeFrames.error(_FAILED, reason)


def handle(subs: Subs, raw: bytes, known: Collection[str], limits: Limits) -> SubscribeOutcome:
    """Apply one client text frame to `subs` and say what to send back."""
    out = SubscribeOutcome()
    try:
        msg: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        out.errors.append(_err("Malformed JSON"))
        return out
    if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe"):
        out.errors.append(_err("Type has to be either subscribe or unsubscribe"))
        return out
    root = msg.get("product_ids")
    channels = msg.get("channels")
    if not channels or not isinstance(channels, list):
        out.errors.append(_err("No channels provided"))
        return out
    subscribe = msg["type"] == "subscribe"
    for entry in channels:
        if isinstance(entry, str):
            name, pids_raw = entry, root
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            name, pids_raw = entry["name"], entry.get("product_ids", root)
        else:
            out.errors.append(_err("Malformed channel entry"))
            continue
        name = ALIASES.get(name, name)
        if pids_raw is not None and (not isinstance(pids_raw, list)
                                     or not all(isinstance(p, str) for p in pids_raw)):
            out.errors.append(_err("product_ids must be a list of strings"))
            continue
        pids = list(dict.fromkeys(pids_raw or []))
        if subscribe:
            _subscribe(subs, name, pids, known, out)
        else:
            _unsubscribe(subs, name, pids)
    out.ack = True
    return out


def _unsubscribe(subs: Subs, name: str, pids: list[str]) -> None:
    held = subs.get(name)
    if held is None:
        return
    if not pids or name in _NO_PRODUCTS:
        del subs[name]
        return
    for p in pids:
        held.pop(p, None)
    if not held:
        del subs[name]


def _subscribe(subs: Subs, name: str, pids: list[str], known: Collection[str],
               out: SubscribeOutcome) -> None:
    if name in AUTH_ONLY:
        out.errors.append(_err(AUTH_REASON))
        return
    if name not in CHANNELS:
        out.errors.append(_err(f"{name} is not a valid channel"))
        return
    if name in _NO_PRODUCTS:
        if name not in subs:
            subs[name] = {}
            out.added_channels.append(name)
        return
    if not pids:
        out.errors.append(_err(f"You need to specify at least one product ID for channel "
                               f"{name}"))
        return
    held = subs.setdefault(name, {})
    for p in pids:
        if p not in known:
            out.errors.append(_err(f"{p} is not a valid product"))
        elif p not in held:
            held[p] = None
            out.added.append((name, p))
    if not held:
        del subs[name]


def rest_products(states: Iterable[ProductState], query: dict[str, list[str]]) -> bytes:
    """``GET /products``: a JSON array of every product, Exchange shape."""
    products = []
    for st in states:
        base, _, quote = st.pid.partition("-")
        products.append({
            "id": st.pid, "base_currency": base, "quote_currency": quote,
            "quote_increment": _incr(st.price_dec), "base_increment": _incr(st.size_dec),
            "display_name": f"{base}-{quote}", "min_market_funds": "1",
            "margin_enabled": False, "post_only": False, "limit_only": False,
            "cancel_only": False, "status": "online", "status_message": "",
            "trading_disabled": False, "fx_stablecoin": False,
            "max_slippage_percentage": "0.03000000", "auction_mode": False,
            "high_bid_limit_percentage": "",
        })
    return orjson.dumps(products)


def _incr(dec: int) -> str:
    return "1" if dec == 0 else "0." + "0" * (dec - 1) + "1"
