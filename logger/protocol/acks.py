"""The server's control replies: ``subscriptions`` acks and ``error`` frames, parsed to facts.

Acks are cumulative (each lists every current subscription), so parsing returns the whole
acknowledged state, channel → products, under the names we subscribe with (Exchange acks
``level2_batch`` as ``level2_50``). Errors become a ``ServerError`` and, when the text says
what was refused, a ``Refused``. These frames are rare, so they are parsed fully with orjson;
anything of the wrong shape yields an empty state or a bare error, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from logger.protocol.actions import Refused, ServerError

AckState = dict[str, frozenset[str]]

_DELISTED = re.compile(r"^(\S+) is delisted$")
_INVALID = re.compile(r"^(\S+) is not a valid product$")
_RATE_LIMITED = ("rate limit", "ratelimit", "too many requests", "errslowread",
                 "too many messages")


def _strings(value: object) -> frozenset[str]:
    return frozenset(v for v in value if isinstance(v, str)) if isinstance(value, list) \
        else frozenset()


def parse_at_ack(obj: Mapping[str, Any], aliases: Mapping[str, str]) -> AckState:
    """Advanced Trade: ``{"channel":"subscriptions",…,"events":[{"subscriptions":{…}}]}``."""
    state: AckState = {}
    events = obj.get("events")
    for event in events if isinstance(events, list) else ():
        subs = event.get("subscriptions") if isinstance(event, dict) else None
        if isinstance(subs, dict):
            for channel, products in subs.items():
                if isinstance(products, list):
                    state[aliases.get(channel, channel)] = _strings(products)
    return state


def parse_exchange_ack(obj: Mapping[str, Any], aliases: Mapping[str, str]) -> AckState:
    """Exchange: ``{"type":"subscriptions","channels":[{"name":…,"product_ids":[…]}, …]}``."""
    state: AckState = {}
    channels = obj.get("channels")
    for item in channels if isinstance(channels, list) else ():
        if isinstance(item, str):
            state[aliases.get(item, item)] = frozenset()
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            state[aliases.get(item["name"], item["name"])] = _strings(item.get("product_ids"))
    return state


def classify_error(obj: Mapping[str, Any], level2_channel: str
                   ) -> tuple[ServerError, Refused | None]:
    """The error as reported, and what it refused if the text says so.

    Recognised: Advanced Trade ``too many L2 streams requested in a single session`` (the
    level2 cap), Exchange ``<product> is delisted`` and ``<product> is not a valid product``
    (one per requested channel), and other ``… subscribe`` failures (nothing named). A
    refusal naming a product or channel is final (``RetryState.refused``); a rate-limit
    error is not a refusal (``is_rate_limited``): what it dropped is retried.
    """
    message = obj.get("message")
    reason = obj.get("reason")
    message = message if isinstance(message, str) else ""
    reason = reason if isinstance(reason, str) else ""
    error = ServerError(message, reason)
    named = _DELISTED.match(reason) or _INVALID.match(reason)
    if "too many L2 streams" in message:
        return error, Refused(level2_channel, None, message)
    if named is not None:
        return error, Refused(None, named.group(1), reason)
    if "subscribe" in message.lower():
        return error, Refused(None, None, reason or message)
    return error, None


def is_rate_limited(error: ServerError) -> bool:
    """The venue dropped a client message for its message rate (Advanced Trade: the
    simulator's ``rate limit exceeded``, text undocumented; Exchange: ``ErrSlowRead``, which
    also closes the socket). Such a frame is never acknowledged."""
    text = f"{error.message} {error.reason}".lower()
    return any(k in text for k in _RATE_LIMITED)
