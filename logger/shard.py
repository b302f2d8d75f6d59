"""Products → connections: as few subscribe frames and connections as the venue allows.

Startup is paced by the venue's subscribe-message limit (8 messages/s per IP), so the plan
minimises frames. Advanced Trade takes one channel per subscribe message and caps only
``level2`` at 30 products per connection; every other channel takes any number of products
in one message. Hence, on Advanced Trade:

- ``level2`` is spread over ceil(N / 30) connections, each carrying ``level2`` and the
  keepalive ``heartbeats``: two frames per connection;
- every other channel (candles, status, ticker, ticker_batch, market_trades) rides, for ALL
  products, on one more connection placed first (``_conn0``): one frame per channel (more
  only when a frame would exceed ``SUBSCRIBE_FRAME_MAX_BYTES``, see ``logger.protocol.dialects``)
  plus its ``heartbeats``.

400 products then need 14 × 2 + 6 = 34 frames instead of 14 × 7 = 98. A sequence gap still
concerns exactly one connection: a level2 connection's gap marks and resubscribes its level2
products; a gap on the first connection marks and resubscribes its channels for all products.

Exchange takes every channel in one subscribe message, so frames already equal connections
there; its products keep all their channels on one connection, bounded by the same per
connection product count (configurable) to keep any one socket's message rate moderate, and
``status`` (no products) goes on the first connection only.

Products are spread by their 24 h quote volume, heaviest first onto the least loaded
connection with room (ties broken by product id and connection index), so the plan is
deterministic for a given input.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence

from logger.protocol.dialects import Dialect

Plan = list[dict[str, list[str]]]
"""One ``channel → products`` mapping per connection, in the dialect's channel order."""


def connections_needed(n_products: int, per_connection: int) -> int:
    """ceil(n_products / per_connection), and 0 for no products."""
    if per_connection < 1:
        raise ValueError(f"per_connection must be positive, got {per_connection}")
    return math.ceil(n_products / per_connection) if n_products > 0 else 0


def assign(products: Sequence[str], per_connection: int,
           weights: Mapping[str, float] | None = None) -> list[list[str]]:
    """Split ``products`` over the fewest connections, balancing total weight.

    Greedy longest-processing-time: products by descending weight go to the connection with
    the least weight so far among those below ``per_connection``. Each group is sorted by id.
    """
    unique = list(dict.fromkeys(products))
    count = connections_needed(len(unique), per_connection)
    if count == 0:
        return []
    weight = weights or {}
    order = sorted(unique, key=lambda p: (-max(0.0, weight.get(p, 0.0)), p))
    groups: list[list[str]] = [[] for _ in range(count)]
    heap = [(0.0, 0, index) for index in range(count)]
    for product in order:
        load, size, index = heapq.heappop(heap)
        groups[index].append(product)
        if size + 1 < per_connection:
            heapq.heappush(heap, (load + max(0.0, weight.get(product, 0.0)), size + 1, index))
    return [sorted(group) for group in groups]


def plan_connections(products: Sequence[str], channels: Sequence[str], dialect: Dialect,
                     per_connection: int | None = None,
                     weights: Mapping[str, float] | None = None) -> Plan:
    """The subscription plan of every connection (see the module docstring for the rules)."""
    cap = dialect.level2_cap
    limit = per_connection if per_connection is not None else (cap or 30)
    if cap is not None and dialect.level2_channel in channels and limit > cap:
        raise ValueError(f"{dialect.name} allows at most {cap} {dialect.level2_channel}"
                         f" products per connection, asked for {limit}")
    for channel in channels:
        if channel not in dialect.channels:
            raise ValueError(f"{dialect.name}: unknown channel {channel!r}")
    wanted = set(channels) | {dialect.keepalive_channel}
    ordered = [ch for ch in dialect.channels if ch in wanted]
    every = sorted(dict.fromkeys(products))
    if not every:
        return []
    if cap is not None:
        return _plan_level2_apart(every, ordered, dialect, limit, weights)
    groups = assign(products, limit, weights)
    plan: Plan = []
    for index, group in enumerate(groups):
        shard: dict[str, list[str]] = {}
        for channel in ordered:
            if channel == dialect.keepalive_channel and channel in dialect.shared_channels:
                shard[channel] = []
            elif channel in dialect.shared_channels:
                if index == 0:
                    shard[channel] = every if channel_takes_products(dialect, channel) else []
            else:
                shard[channel] = list(group)
        plan.append(shard)
    return plan


def _plan_level2_apart(every: list[str], ordered: list[str], dialect: Dialect, limit: int,
                       weights: Mapping[str, float] | None) -> Plan:
    """Advanced Trade: level2 (+ keepalive) over capped connections, the rest on one."""
    keepalive = dialect.keepalive_channel
    level2 = dialect.level2_channel
    plan: Plan = []
    broad = [ch for ch in ordered if ch not in (keepalive, level2)]
    if broad or level2 not in ordered:
        shard: dict[str, list[str]] = {keepalive: []}
        for channel in broad:
            shard[channel] = list(every) if channel_takes_products(dialect, channel) else []
        plan.append(shard)
    if level2 in ordered:
        plan.extend({keepalive: [], level2: group} for group in assign(every, limit, weights))
    return plan


def channel_takes_products(dialect: Dialect, channel: str) -> bool:
    """Whether ``channel``'s subscribe message names products (Exchange ``status`` does not)."""
    return not (channel in dialect.shared_channels
                and (channel == dialect.keepalive_channel or dialect.name == "exchange"))
