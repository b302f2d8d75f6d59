"""Sharding products over connections: fewest connections, level2 cap, balance, determinism."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logger.protocol import ADVANCED_TRADE, EXCHANGE, FeedState, Marker, MarkerKind, Send
from logger.protocol.dialects import SUBSCRIBE_FRAME_MAX_BYTES
from logger.shard import assign, connections_needed, plan_connections

PRODUCTS = [f"P{i:03d}-USD" for i in range(407)]


def test_level2_apart_and_every_other_channel_on_one_connection() -> None:
    plan = plan_connections(PRODUCTS, ADVANCED_TRADE.channels, ADVANCED_TRADE)
    level2 = plan[1:]
    assert len(level2) == math.ceil(407 / 30) == 14
    assert all(shard == {"heartbeats": [], "level2": shard["level2"]} for shard in level2)
    assert all(len(shard["level2"]) <= 30 for shard in level2)
    assert sorted(p for shard in level2 for p in shard["level2"]) == PRODUCTS
    broad = plan[0]  # first, so status stays on _conn0
    assert broad["heartbeats"] == [] and "level2" not in broad
    for channel in ("candles", "status", "ticker", "ticker_batch", "market_trades"):
        assert broad[channel] == PRODUCTS
    for index, shard in enumerate(plan):  # each shard is a valid connection
        FeedState(ADVANCED_TRADE, str(index), shard)


def test_startup_needs_two_frames_per_level2_connection_plus_one_per_channel() -> None:
    plan = plan_connections(PRODUCTS[:400], ADVANCED_TRADE.channels, ADVANCED_TRADE)
    frames = [FeedState(ADVANCED_TRADE, str(i), shard).opening_frames()
              for i, shard in enumerate(plan)]
    assert [len(f) for f in frames] == [6] + [2] * 14  # was 7 per connection: 98 in all
    assert sum(map(len, frames)) == 34
    assert all(len(f) <= SUBSCRIBE_FRAME_MAX_BYTES for fs in frames for f in fs)
    assert frames[0][-1] == b'{"type":"subscribe","channel":"heartbeats"}'  # keepalive last


def test_long_product_lists_are_split_below_the_frame_cap() -> None:
    products = [f"LONGNAME{i:05d}-USDC" for i in range(3000)]
    for dialect, channels in ((ADVANCED_TRADE, {"ticker": products}),
                              (EXCHANGE, {"ticker": products, "matches": products,
                                          "status": []})):
        for make in (dialect.subscribe_frames, dialect.unsubscribe_frames):
            frames = make(channels, 4096)
            assert len(frames) > 2
            assert all(len(f) <= 4096 for f in frames)
            got: dict[str, list[str]] = {}
            for frame in frames:
                obj = orjson.loads(frame)
                if dialect is ADVANCED_TRADE:
                    got.setdefault(obj["channel"], []).extend(obj["product_ids"])
                else:
                    for ch in obj["channels"]:
                        got.setdefault(ch["name"], []).extend(ch.get("product_ids", []))
            assert got == {k: list(v) for k, v in channels.items()}
    # the default cap holds a realistic full list (400 ids) in one frame per channel
    assert len(ADVANCED_TRADE.subscribe_frames({"ticker": PRODUCTS})) == 1


def test_a_gap_resubscribes_and_marks_exactly_its_own_connection() -> None:
    plan = plan_connections(PRODUCTS[:60], ADVANCED_TRADE.channels, ADVANCED_TRADE)
    assert len(plan) == 3
    feeds = []
    for index, shard in enumerate(plan):
        fs = FeedState(ADVANCED_TRADE, str(index), shard)
        fs.on_connect()
        fs.opening_frames()
        feeds.append(fs)
    l2 = feeds[1]
    l2.on_message(b'{"channel":"heartbeats","client_id":"","timestamp":"t","sequence_num":5,'
                  b'"events":[]}')
    actions = l2.drain()
    gap_streams = {(a.product, a.channel) for a in actions
                   if isinstance(a, Marker) and a.kind is MarkerKind.GAP}
    assert gap_streams == ({(p, "level2") for p in plan[1]["level2"]}
                           | {("_conn1", "heartbeats"), ("_conn1", "subscriptions"),
                              ("_multi", "level2")})
    sends = [a for a in actions if isinstance(a, Send)]
    assert [orjson.loads(f)["channel"] for f in sends[0].frames] == ["level2", "level2"]
    assert orjson.loads(sends[0].frames[1])["product_ids"] == plan[1]["level2"]
    broad = feeds[0]
    broad.on_message(b'{"channel":"heartbeats","client_id":"","timestamp":"t",'
                     b'"sequence_num":3,"events":[]}')
    actions = broad.drain()
    gap_streams = {(a.product, a.channel) for a in actions
                   if isinstance(a, Marker) and a.kind is MarkerKind.GAP}
    assert ("BTC-USD", "level2") not in gap_streams
    assert {(p, "market_trades") for p in PRODUCTS[:60]} <= gap_streams
    assert {(p, "ticker") for p in PRODUCTS[:60]} <= gap_streams
    sends = [a for a in actions if isinstance(a, Send)]
    assert [orjson.loads(f)["channel"] for f in sends[0].frames] == ["market_trades"] * 2


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
