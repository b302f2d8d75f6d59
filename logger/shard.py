"""Products → connections: as few connections as the venue allows, balanced by expected load.

Advanced Trade refuses a 31st level2 product on one connection, so N products need
ceil(N / 30) connections; the same per-connection bound is applied on Exchange (configurable)
to keep any one socket's message rate moderate. Every product's channels (level2, ticker,
trades, candles, Exchange heartbeat …) follow the product onto the same connection: a product
then depends on one socket only, a sequence gap or reconnect concerns exactly the products
whose streams get the marker, and the level2 bound is the only one that matters.

Channels that are not per product (Advanced Trade ``status``, Exchange ``status``) are placed
on the first connection only, with all products, so each status message is stored once; the
keepalive channel (``heartbeats``) is on every connection. Products are spread by their 24 h
quote volume, heaviest first onto the least loaded connection with room (ties broken by
product id and connection index), so the plan is deterministic for a given input.
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
    groups = assign(products, limit, weights)
    every = sorted(dict.fromkeys(products))
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


def channel_takes_products(dialect: Dialect, channel: str) -> bool:
    """Whether ``channel``'s subscribe message names products (Exchange ``status`` does not)."""
    return not (channel in dialect.shared_channels
                and (channel == dialect.keepalive_channel or dialect.name == "exchange"))
