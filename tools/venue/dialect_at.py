"""Advanced Trade venue rules: subscribe/unsubscribe handling, acks, errors, REST products.

Behaviour as documented and measured (``PROTOCOL.md`` §2): one channel per message; unknown
product ids are silently left out of the cumulative ``subscriptions`` ack; an unknown (or
authenticated-only) channel gets ``authentication failure``; holding more than 30 level2
products on one connection gets ``too many L2 streams requested in a single session`` and the
whole request is refused (the socket stays open, as reported); an unsubscribe without
``product_ids`` drops the channel and frees level2 room.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson

from tools.venue.frames_at import CHANNELS, ATFrames
from tools.venue.limits import TOO_MANY_L2, Limits
from tools.venue.product import ProductState
from tools.venue.subs import Subs, SubscribeOutcome

REST_PATH = "/api/v3/brokerage/market/products"
_NO_PRODUCTS = ("heartbeats", "status")


def handle(subs: Subs, raw: bytes, known: Collection[str], limits: Limits) -> SubscribeOutcome:
    """Apply one client text frame to `subs` and say what to send back."""
    out = SubscribeOutcome()
    try:
        msg: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        out.errors.append(ATFrames.error("failure to subscribe"))
        return out
    if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe"):
        out.errors.append(ATFrames.error("failure to subscribe"))
        return out
    channel = msg.get("channel")
    if not isinstance(channel, str):
        out.errors.append(ATFrames.error("failure to subscribe"))
        return out
    if channel not in CHANNELS:
        out.errors.append(ATFrames.error("authentication failure"))
        return out
    pids_raw = msg.get("product_ids")
    if pids_raw is not None and (not isinstance(pids_raw, list)
                                 or not all(isinstance(p, str) for p in pids_raw)):
        out.errors.append(ATFrames.error("failure to subscribe"))
        return out
    pids: list[str] = list(dict.fromkeys(pids_raw or []))
    if msg["type"] == "unsubscribe":
        held = subs.get(channel)
        if held is not None:
            if pids_raw is None or channel in _NO_PRODUCTS:
                del subs[channel]
            else:
                for p in pids:
                    held.pop(p, None)
                if not held:
                    del subs[channel]
        out.ack = True
        return out
    valid = [p for p in pids if p in known]
    held = subs.get(channel)
    if channel in _NO_PRODUCTS and not valid:
        if held is None:
            subs[channel] = {}
            out.added_channels.append(channel)
        out.ack = True
        return out
    new = [p for p in valid if held is None or p not in held]
    if (channel == "level2" and limits.enabled
            and len(held or ()) + len(new) > limits.l2_products_per_conn):
        out.errors.append(ATFrames.error(TOO_MANY_L2))
        out.l2_refused = len(new)
        return out
    if held is None:
        held = subs[channel] = {}
        if channel in _NO_PRODUCTS:
            out.added_channels.append(channel)
    for p in new:
        held[p] = None
        out.added.append((channel, p))
    out.ack = True
    return out


def rest_products(states: Iterable[ProductState], query: dict[str, list[str]]) -> bytes:
    """``GET /api/v3/brokerage/market/products`` (public): ``{"products": [...], ...}``.

    Honours ``product_ids`` (repeated), ``limit`` and ``offset`` like the real endpoint.
    """
    items = list(states)
    wanted = query.get("product_ids")
    if wanted:
        keep = set(wanted)
        items = [s for s in items if s.pid in keep]
    offset = _int(query, "offset", 0)
    limit = _int(query, "limit", 0)
    total = len(items)
    items = items[offset:offset + limit] if limit > 0 else items[offset:]
    products = []
    for st in items:
        base, _, quote = st.pid.partition("-")
        inc = _incr(st.price_dec)
        products.append({
            "product_id": st.pid, "price": st.px(st.last_price).decode(),
            "price_percentage_change_24h": "1.2", "volume_24h": f"{st.volume_24h:.8f}",
            "volume_percentage_change_24h": "-3.4", "base_increment": _incr(st.size_dec),
            "quote_increment": inc, "quote_min_size": "1", "quote_max_size": "50000000",
            "base_min_size": _incr(st.size_dec), "base_max_size": "10000",
            "base_name": base, "quote_name": quote, "watched": False, "is_disabled": False,
            "new": False, "status": "online", "cancel_only": False, "limit_only": False,
            "post_only": False, "trading_disabled": False, "auction_mode": False,
            "product_type": "SPOT", "quote_currency_id": quote, "base_currency_id": base,
            "fcm_trading_session_details": None,
            "mid_market_price": "", "alias": "", "alias_to": [], "base_display_symbol": base,
            "quote_display_symbol": quote, "view_only": False, "price_increment": inc,
            "display_name": f"{base}-{quote}", "product_venue": "CBE",
            "approximate_quote_24h_volume": f"{st.volume_24h * st.last_price:.2f}",
        })
    return orjson.dumps({"products": products, "num_products": total,
                         "pagination": {"prev_cursor": "", "next_cursor": "",
                                        "has_next": offset + len(products) < total,
                                        "has_prev": offset > 0}})


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return max(0, int(query.get(key, [str(default)])[0]))
    except ValueError:
        return default


def _incr(dec: int) -> str:
    return "1" if dec == 0 else "0." + "0" * (dec - 1) + "1"
