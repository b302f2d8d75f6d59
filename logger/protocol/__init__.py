"""Sans-I/O Coinbase protocol core: dialects, subscribe frames, routing, sequence and gap rules.

Bytes in, decisions out: no sockets, no asyncio, no clocks. See ``docs/INGEST.md``.
"""

from logger.protocol.actions import (
    Acknowledged,
    Action,
    Marker,
    MarkerKind,
    Reconnect,
    Refused,
    Send,
    ServerError,
    Settled,
)
from logger.protocol.dialects import (
    ADVANCED_TRADE,
    DIALECTS,
    EXCHANGE,
    Dialect,
    ProductsByChannel,
    get_dialect,
)
from logger.protocol.feed import FeedCounters, FeedState, Route
from logger.protocol.names import MULTI, UNROUTED, conn_stream, is_valid_product_id

__all__ = [
    "ADVANCED_TRADE",
    "DIALECTS",
    "EXCHANGE",
    "MULTI",
    "UNROUTED",
    "Acknowledged",
    "Action",
    "Dialect",
    "FeedCounters",
    "FeedState",
    "Marker",
    "MarkerKind",
    "ProductsByChannel",
    "Reconnect",
    "Refused",
    "Route",
    "Send",
    "ServerError",
    "Settled",
    "conn_stream",
    "get_dialect",
    "is_valid_product_id",
]
