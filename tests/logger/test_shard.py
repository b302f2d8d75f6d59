"""Sharding products over connections: fewest connections, level2 cap, balance, determinism."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logger.protocol import ADVANCED_TRADE, EXCHANGE, FeedState
from logger.shard import assign, connections_needed, plan_connections

PRODUCTS = [f"P{i:03d}-USD" for i in range(407)]


def test_fewest_connections_under_the_level2_cap() -> None:
    plan = plan_connections(PRODUCTS, ADVANCED_TRADE.channels, ADVANCED_TRADE)
    assert len(plan) == math.ceil(407 / 30) == 14
    assert all(len(shard["level2"]) <= 30 for shard in plan)
    held = [p for shard in plan for p in shard["level2"]]
    assert sorted(held) == PRODUCTS
    for shard in plan:  # every product channel follows the product
        for channel in ("candles", "ticker", "ticker_batch", "market_trades"):
            assert shard[channel] == shard["level2"]
        assert shard["heartbeats"] == []
        FeedState(ADVANCED_TRADE, "0", shard)  # each shard is a valid connection
    assert plan[0]["status"] == PRODUCTS
    assert all("status" not in shard for shard in plan[1:])


def test_exchange_plan_places_status_once_without_products() -> None:
    plan = plan_connections(PRODUCTS[:100], EXCHANGE.channels, EXCHANGE, per_connection=50)
    assert len(plan) == 2
    assert plan[0]["status"] == [] and "status" not in plan[1]
    assert plan[1]["heartbeat"] == plan[1]["level2_batch"]
    frames = FeedState(EXCHANGE, "0", plan[0]).opening_frames()
    assert len(frames) == 1 and b'{"name":"status"}' in frames[0]


def test_keepalive_is_always_planned() -> None:
    plan = plan_connections(["A-USD"], ["level2"], ADVANCED_TRADE)
    assert plan == [{"heartbeats": [], "level2": ["A-USD"]}]


def test_limits_are_enforced() -> None:
    with pytest.raises(ValueError, match="at most 30"):
        plan_connections(PRODUCTS, ["level2"], ADVANCED_TRADE, per_connection=31)
    with pytest.raises(ValueError, match="unknown channel"):
        plan_connections(PRODUCTS, ["matches"], ADVANCED_TRADE)
    with pytest.raises(ValueError, match="positive"):
        connections_needed(3, 0)
    assert plan_connections([], ADVANCED_TRADE.channels, ADVANCED_TRADE) == []


def test_heavy_products_are_spread() -> None:
    weights = {p: (1e9 if i < 4 else 1.0) for i, p in enumerate(PRODUCTS[:120])}
    groups = assign(PRODUCTS[:120], 30, weights)
    assert len(groups) == 4
    assert [sum(1 for p in g if weights[p] > 1) for g in groups] == [1, 1, 1, 1]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[A-Z]{2,5}-USD", fullmatch=True),
                          st.floats(0, 1e9)), max_size=200),
       st.integers(1, 40))
def test_assignment_is_a_partition_within_the_cap_and_deterministic(
        items: list[tuple[str, float]], cap: int) -> None:
    weights = dict(items)
    products = list(weights)
    groups = assign(products, cap, weights)
    assert len(groups) == connections_needed(len(products), cap)
    assert sorted(p for g in groups for p in g) == sorted(products)
    assert all(0 < len(g) <= cap for g in groups)
    assert assign(list(reversed(products)), cap, weights) == groups
    if groups:  # LPT bound: no group exceeds the average by more than the heaviest item
        loads = [sum(weights[p] for p in g) for g in groups]
        if all(len(g) < cap for g in groups):  # the cap never constrained the greedy choice
            assert max(loads) <= sum(loads) / len(loads) + max(weights.values()) + 1e-6
