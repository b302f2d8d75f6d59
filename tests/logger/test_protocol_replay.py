"""Whole streams through the router: the simulator's generator, the shared real captures, noise.

The generator cross-check pins the contract between the simulator's ledger/``stream_of`` and
the daemon's routing: both must name the same stream for every frame, or an end-to-end
"everything stored exactly once, in order per stream" check could not hold.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logger.protocol import ADVANCED_TRADE, EXCHANGE, Dialect, FeedState, Marker
from logger.protocol.names import is_valid_name

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "coinbase"


def full_feed(dialect: Dialect, products: list[str]) -> FeedState:
    channels = {}
    for channel in dialect.channels:
        shared = channel in dialect.shared_channels
        no_products = shared and (channel == dialect.keepalive_channel or dialect is EXCHANGE)
        channels[channel] = [] if no_products else products
    fs = FeedState(dialect, "0", channels)
    fs.on_connect()
    fs.opening_frames()
    return fs


@pytest.mark.parametrize("dialect", [ADVANCED_TRADE, EXCHANGE], ids=lambda d: d.name)
def test_router_agrees_with_the_simulator_on_every_frame(dialect: Dialect) -> None:
    generator = pytest.importorskip("tools.venue.generator")
    model = generator.MarketModel(11, 30, dialect.name)
    fs = full_feed(dialect, list(model.products))
    count = 0
    for product, channel, raw in model.day_of_messages(20_000):
        assert fs.on_message(raw) == (product, channel), raw[:200]
        count += 1
    assert count == 20_000
    c = fs.counters
    assert (c.unrouted, c.gaps, c.late) == (0, 0, 0)


def _lines(name: str) -> list[bytes]:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared Coinbase reference files are optional)")
    return [line for line in path.read_bytes().splitlines() if line]


def test_real_2021_exchange_capture_routes_without_loss_or_false_gaps() -> None:
    lines = _lines("exchange_stream_2021-04-17.jsonl")
    products = sorted({orjson.loads(line)["product_id"] for line in lines
                       if b'"product_id"' in line[:60]})
    fs = FeedState(EXCHANGE, "0", {"level2_batch": products, "ticker": products,
                                   "matches": products})
    streams: dict[tuple[str, str], int] = {}
    for line in lines:
        route = fs.on_message(line)
        streams[route] = streams.get(route, 0) + 1
    assert fs.counters.unrouted == 0
    assert fs.counters.gaps == 0  # trade ids are contiguous in this capture
    assert streams[("_conn0", "subscriptions")] >= 1
    assert {ch for _, ch in streams} >= {"level2_batch", "ticker", "matches"}
    assert sum(streams.values()) == len(lines)


@pytest.mark.parametrize(("name", "dialect"), [("advanced_trade.jsonl", ADVANCED_TRADE),
                                               ("exchange.jsonl", EXCHANGE)])
def test_reference_samples_route_somewhere_valid(name: str, dialect: Dialect) -> None:
    lines = _lines(name)
    fs = full_feed(dialect, ["BTC-USD", "ETH-USD", "BTC-PERP-INTX", "ETH-PERP-INTX"])
    for line in lines:
        product, channel = fs.on_message(line)
        assert is_valid_name(product) and is_valid_name(channel)
    assert fs.counters.messages == len(lines)


def _valid_routes(fs: FeedState, raw: bytes) -> None:
    product, channel = fs.on_message(raw)
    assert is_valid_name(product) and is_valid_name(channel)
    for action in fs.drain():
        if isinstance(action, Marker):
            assert is_valid_name(action.product) and is_valid_name(action.channel)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_router_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    for dialect in (ADVANCED_TRADE, EXCHANGE):
        _valid_routes(full_feed(dialect, ["BTC-USD"]), raw)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "channel", "product_id", "sequence_num", "sequence",
                         "trade_id", "last_trade_id", "events", "tickers", "subscriptions",
                         "channels", "name", "product_ids", "message", "reason", "x"]),
        inner, max_size=6),
    max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json, st.sampled_from(["l2_data", "ticker", "subscriptions", "heartbeats", "match",
                               "heartbeat", "subscriptions", "error", "ticker", "snapshot"]))
def test_router_never_raises_on_hostile_json(body: object, kind: str) -> None:
    frames = [orjson.dumps(body)]
    if isinstance(body, dict):
        frames.append(orjson.dumps({"channel": kind, "timestamp": "t", "sequence_num": 0,
                                    **body}))
        frames.append(orjson.dumps({"type": kind, **body}))
        frames.append(orjson.dumps({"channel": kind, "timestamp": "t", "sequence_num": 0,
                                    "events": [body]}))
    for dialect in (ADVANCED_TRADE, EXCHANGE):
        fs = full_feed(dialect, ["BTC-USD"])
        for raw in frames:
            _valid_routes(fs, raw)
