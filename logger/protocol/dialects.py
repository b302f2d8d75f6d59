"""The two Coinbase WebSocket dialects behind one interface: channels, URLs, subscribe frames.

Advanced Trade (the default) takes one channel per subscribe message and needs ``heartbeats``
on every connection, or quiet channels are closed after 60–90 s; it caps ``level2`` at 30
products held per connection. Exchange takes a list of channel objects with the products inside
each object (a root-level ``product_ids`` next to object channels has been seen to fail) and has
no documented per-connection cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import orjson

ProductsByChannel = Mapping[str, Sequence[str]]
"""Subscribe-channel name → product ids (empty for channels that take none)."""

SUBSCRIBE_FRAME_MAX_BYTES = 8192
"""Largest subscribe/unsubscribe frame we send; longer product lists are split over frames.

Coinbase documents a disconnect for "Message too big" (Exchange) without a number. 8 KiB
holds about 700 product ids (the whole Advanced Trade list in one frame per channel), is far
below common WebSocket server read limits (the simulator closes at 64 KiB) and costs at most
a frame or two more than an unbounded frame would on the largest lists."""


def _chunks(products: Sequence[str], fixed: int, budget: int) -> list[list[str]]:
    """Split ``products`` so that ``fixed`` bytes plus each chunk's JSON list fit ``budget``.

    ``fixed`` is the frame's size with an empty list. A single id longer than the budget gets
    a frame of its own (ids are at most 64 characters: never in practice).
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    size = fixed
    for product in products:
        item = len(orjson.dumps(product)) + (1 if current else 0)
        if current and size + item > budget:
            chunks.append(current)
            current, size = [], fixed
            item -= 1
        current.append(product)
        size += item
    if current:
        chunks.append(current)
    return chunks


class Dialect(Protocol):
    """What the rest of the logger needs to know about one Coinbase WebSocket dialect."""

    @property
    def name(self) -> str:
        """Config name: ``"advanced_trade"`` or ``"exchange"``."""
        ...

    @property
    def channels(self) -> tuple[str, ...]:
        """Public channels subscribed by default, in subscribe order."""
        ...

    @property
    def keepalive_channel(self) -> str:
        """Channel that is always subscribed on every connection."""
        ...

    @property
    def shared_channels(self) -> frozenset[str]:
        """Channels whose messages are not about one product (stored per connection)."""
        ...

    @property
    def level2_channel(self) -> str:
        """The public order-book channel."""
        ...

    @property
    def level2_cap(self) -> int | None:
        """Most level2 products one connection may hold, or None without a limit."""
        ...

    @property
    def wire_channels(self) -> Mapping[str, str]:
        """Channel names in server frames → subscribe names (Advanced Trade's ``channel``)."""
        ...

    @property
    def ack_aliases(self) -> Mapping[str, str]:
        """Channel names the server uses in acks → the names we subscribe with."""
        ...

    @property
    def default_ws_url(self) -> str:
        """The public market-data WebSocket URL."""
        ...

    @property
    def default_rest_url(self) -> str:
        """The public REST products-list URL."""
        ...

    def subscribe_frames(self, products_by_channel: ProductsByChannel,
                         max_bytes: int = SUBSCRIBE_FRAME_MAX_BYTES) -> list[bytes]:
        """Frames subscribing to every (channel, products) given, in order, each at most
        ``max_bytes`` long (a product list is split over frames where needed)."""
        ...

    def unsubscribe_frames(self, products_by_channel: ProductsByChannel,
                           max_bytes: int = SUBSCRIBE_FRAME_MAX_BYTES) -> list[bytes]:
        """Frames unsubscribing from every (channel, products) given, in order."""
        ...


def _check_channels(dialect: Dialect, products_by_channel: ProductsByChannel) -> None:
    for channel in products_by_channel:
        if channel not in dialect.channels:
            raise ValueError(
                f"{dialect.name}: unknown channel {channel!r}; "
                f"expected one of {', '.join(dialect.channels)}"
            )


class AdvancedTradeDialect:
    """Advanced Trade market-data feed (``wss://advanced-trade-ws.coinbase.com``), no JWT."""

    name = "advanced_trade"
    channels: tuple[str, ...] = (
        "heartbeats", "candles", "status", "ticker", "ticker_batch", "level2", "market_trades",
    )
    keepalive_channel = "heartbeats"
    shared_channels = frozenset({"heartbeats", "status"})
    level2_channel = "level2"
    level2_cap: int | None = 30
    default_ws_url = "wss://advanced-trade-ws.coinbase.com"
    default_rest_url = "https://api.coinbase.com/api/v3/brokerage/market/products"

    wire_channels: Mapping[str, str] = {
        "heartbeats": "heartbeats", "candles": "candles", "status": "status",
        "ticker": "ticker", "ticker_batch": "ticker_batch", "l2_data": "level2",
        "market_trades": "market_trades", "subscriptions": "subscriptions",
    }
    """Channel as written in server frames → subscribe-channel name (``l2_data`` → level2)."""
    ack_aliases: Mapping[str, str] = {"l2_data": "level2"}
    """Acks use subscribe names; accept the frame name too, in case."""

    def _frames(self, op: str, products_by_channel: ProductsByChannel,
                max_bytes: int) -> list[bytes]:
        _check_channels(self, products_by_channel)
        frames = []
        for channel, products in products_by_channel.items():
            if channel == self.keepalive_channel and not products:
                frames.append(orjson.dumps({"type": op, "channel": channel}))
            elif products:
                fixed = len(orjson.dumps({"type": op, "product_ids": [], "channel": channel}))
                frames.extend(
                    orjson.dumps({"type": op, "product_ids": chunk, "channel": channel})
                    for chunk in _chunks(list(dict.fromkeys(products)), fixed, max_bytes))
        return frames

    def subscribe_frames(self, products_by_channel: ProductsByChannel,
                         max_bytes: int = SUBSCRIBE_FRAME_MAX_BYTES) -> list[bytes]:
        """One frame per channel (the venue accepts one channel per message), more for a
        product list longer than ``max_bytes``."""
        return self._frames("subscribe", products_by_channel, max_bytes)

    def unsubscribe_frames(self, products_by_channel: ProductsByChannel,
                           max_bytes: int = SUBSCRIBE_FRAME_MAX_BYTES) -> list[bytes]:
        """One frame per channel; ``heartbeats`` without products drops the whole channel."""
        return self._frames("unsubscribe", products_by_channel, max_bytes)


class ExchangeDialect:
    """Exchange market-data feed (``wss://ws-feed.exchange.coinbase.com``), public channels."""

    name = "exchange"
    channels: tuple[str, ...] = (
        "heartbeat", "status", "ticker", "ticker_batch", "level2_batch", "matches", "auctionfeed",
    )
    keepalive_channel = "heartbeat"
    shared_channels = frozenset({"status"})
    level2_channel = "level2_batch"
    level2_cap: int | None = None
    default_ws_url = "wss://ws-feed.exchange.coinbase.com"
    default_rest_url = "https://api.exchange.coinbase.com/products"

    ack_aliases: Mapping[str, str] = {"level2_50": "level2_batch", "ticker_1000": "ticker_batch"}
    """Channel names the server uses in acks → the name we subscribed with."""
    wire_channels: Mapping[str, str] = {}
    """Exchange frames have a ``type``, not a channel; routing maps types in the feed."""

    def _frames(self, op: str, products_by_channel: ProductsByChannel,
                max_bytes: int) -> list[bytes]:
        _check_channels(self, products_by_channel)
        envelope = len(orjson.dumps({"type": op, "channels": []}))
        budget = max_bytes - envelope
        objects: list[dict[str, object]] = []
        for channel, products in products_by_channel.items():
            if products:
                fixed = len(orjson.dumps({"name": channel, "product_ids": []}))
                objects.extend({"name": channel, "product_ids": chunk} for chunk in
                               _chunks(list(dict.fromkeys(products)), fixed, budget))
            elif channel in self.shared_channels:
                objects.append({"name": channel})
        frames: list[bytes] = []
        batch: list[dict[str, object]] = []
        size = 0
        for obj in objects:  # pack channel objects into as few frames as the budget allows
            item = len(orjson.dumps(obj)) + (1 if batch else 0)
            if batch and size + item > budget:
                frames.append(orjson.dumps({"type": op, "channels": batch}))
                batch, size = [], 0
                item -= 1
            batch.append(obj)
            size += item
        if batch:
            frames.append(orjson.dumps({"type": op, "channels": batch}))
        return frames

    def subscribe_frames(self, products_by_channel: ProductsByChannel,
                         max_bytes: int = SUBSCRIBE_FRAME_MAX_BYTES) -> list[bytes]:
        """One frame with a channel object per channel, products inside each object; more
        frames only if that one would exceed ``max_bytes``."""
        return self._frames("subscribe", products_by_channel, max_bytes)

    def unsubscribe_frames(self, products_by_channel: ProductsByChannel,
                           max_bytes: int = SUBSCRIBE_FRAME_MAX_BYTES) -> list[bytes]:
        """One frame; a channel object without products drops the whole channel."""
        return self._frames("unsubscribe", products_by_channel, max_bytes)


def split_opening_frames(dialect: Dialect, products_by_channel: ProductsByChannel
                         ) -> tuple[list[bytes], list[bytes]]:
    """A connection's subscribe frames as (market data, keepalive): send them in that order.

    Why apart: the venue takes 8 messages per second per IP, and keepalive is only needed
    before quiet channels would be closed (60-90 s), so the pool sends every connection's
    market-data frames before any keepalive frame (``logger.ratelimit.plan_startup``). Where
    the keepalive channel costs no frame of its own (Exchange: every channel in one message)
    it stays in the one frame, first, and the keepalive part is empty; so it is for a
    connection carrying nothing but keepalive.
    """
    keepalive = dialect.keepalive_channel
    data = {ch: ps for ch, ps in products_by_channel.items() if ch != keepalive}
    together = {**({keepalive: products_by_channel[keepalive]}
                   if keepalive in products_by_channel else {}), **data}
    every = dialect.subscribe_frames(together)
    if keepalive not in products_by_channel or not data:
        return every, []
    data_frames = dialect.subscribe_frames(data)
    if len(every) <= len(data_frames):
        return every, []
    return data_frames, dialect.subscribe_frames({keepalive: products_by_channel[keepalive]})


ADVANCED_TRADE = AdvancedTradeDialect()
EXCHANGE = ExchangeDialect()
DIALECTS: Mapping[str, Dialect] = {ADVANCED_TRADE.name: ADVANCED_TRADE, EXCHANGE.name: EXCHANGE}


def get_dialect(name: str) -> Dialect:
    """The dialect called ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(
            f"unknown dialect {name!r}; expected one of {', '.join(DIALECTS)}"
        ) from None
