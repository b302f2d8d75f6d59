"""Subscribe frames and acks: record what the server acknowledged, report what it refused."""

from __future__ import annotations

import orjson
import pytest
from test_protocol_frames import at_ack, at_l2, ex, ex_ack

from logger.protocol import (
    ADVANCED_TRADE,
    EXCHANGE,
    Acknowledged,
    FeedState,
    Marker,
    MarkerKind,
    Refused,
    Settled,
    get_dialect,
)
from logger.protocol.acks import classify_error, is_rate_limited


def test_advanced_trade_frames_one_channel_per_message_heartbeats_last() -> None:
    fs = FeedState(ADVANCED_TRADE, "0", {"level2": ["BTC-USD", "ETH-USD"],
                                         "ticker": ["BTC-USD"]})
    frames = [orjson.loads(f) for f in fs.opening_frames()]
    assert frames == [  # market data first: keepalive waits (logger.ratelimit.plan_startup)
        {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "ticker"},
        {"type": "subscribe", "channel": "heartbeats"},
    ]
    assert fs.pending_acks == 3
    unsub = ADVANCED_TRADE.unsubscribe_frames({"level2": ["BTC-USD"]})
    assert orjson.loads(unsub[0]) == {"type": "unsubscribe", "product_ids": ["BTC-USD"],
                                      "channel": "level2"}


def test_exchange_frame_puts_products_inside_each_channel_object() -> None:
    fs = FeedState(EXCHANGE, "0", {"level2_batch": ["BTC-USD"], "matches": ["BTC-USD"],
                                   "status": []})
    frames = [orjson.loads(f) for f in fs.opening_frames()]
    assert frames == [{"type": "subscribe", "channels": [
        {"name": "heartbeat", "product_ids": ["BTC-USD"]},
        {"name": "level2_batch", "product_ids": ["BTC-USD"]},
        {"name": "matches", "product_ids": ["BTC-USD"]},
        {"name": "status"},
    ]}]
    assert "product_ids" not in frames[0]


def test_bad_subscription_requests_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="at most 30"):
        FeedState(ADVANCED_TRADE, "0", {"level2": [f"P{i}-USD" for i in range(31)]})
    with pytest.raises(ValueError, match="unknown channel 'level2_batch'"):
        FeedState(ADVANCED_TRADE, "0", {"level2_batch": ["BTC-USD"]})
    with pytest.raises(ValueError, match="invalid product id"):
        FeedState(EXCHANGE, "0", {"matches": ["../x"]})
    with pytest.raises(ValueError, match="invalid connection id"):
        FeedState(EXCHANGE, "a/b", {"matches": ["BTC-USD"]})
    with pytest.raises(ValueError, match="unknown dialect"):
        get_dialect("pro")
    assert get_dialect("exchange") is EXCHANGE
    FeedState(EXCHANGE, "0", {"level2_batch": [f"P{i}-USD" for i in range(100)]})


def test_advanced_trade_omitted_products_are_reported_once_settled() -> None:
    fs = FeedState(ADVANCED_TRADE, "2", {"level2": ["BTC-USD", "NOPE-USD"]})
    fs.on_connect()
    fs.opening_frames()
    fs.on_message(at_ack(0, {"heartbeats": ["heartbeats"]}))
    assert not any(isinstance(a, Settled) for a in fs.drain())
    fs.on_message(at_ack(1, {"heartbeats": ["heartbeats"], "level2": ["BTC-USD"]}))
    actions = fs.drain()
    assert Acknowledged("level2", ("BTC-USD",), ()) in actions
    assert Marker("BTC-USD", "level2", MarkerKind.SUBSCRIBE,
                  actions[1].payload) in actions  # type: ignore[union-attr]
    assert Refused("level2", "NOPE-USD", "not acknowledged by the server") in actions
    settled = [a for a in actions if isinstance(a, Settled)]
    assert settled[0].missing == {"level2": frozenset({"NOPE-USD"})}
    assert fs.acknowledged == {"heartbeats": frozenset({"heartbeats"}),
                               "level2": frozenset({"BTC-USD"})}
    assert fs.pending_acks == 0 and not fs.all_acknowledged
    assert fs.counters.refused == 1
    # an unacknowledged product is not routable; an acknowledged one is
    assert fs.on_message(at_l2("BTC-USD", 2)) == ("BTC-USD", "level2")


def test_all_acknowledged() -> None:
    fs = FeedState(ADVANCED_TRADE, "2", {"level2": ["BTC-USD"]})
    fs.on_connect()
    fs.opening_frames()
    fs.on_message(at_ack(0, {"heartbeats": ["heartbeats"]}))
    fs.on_message(at_ack(1, {"heartbeats": ["heartbeats"], "level2": ["BTC-USD"]}))
    assert fs.all_acknowledged
    assert [a for a in fs.drain() if isinstance(a, Refused)] == []


def test_ack_timeout_settles_with_what_was_acknowledged() -> None:
    fs = FeedState(ADVANCED_TRADE, "2", {"level2": ["BTC-USD"]})
    fs.on_connect()
    fs.opening_frames()
    fs.on_message(at_ack(0, {"heartbeats": ["heartbeats"]}))
    fs.drain()
    fs.ack_timeout()
    actions = fs.drain()
    assert Refused("level2", "BTC-USD", "not acknowledged within the ack timeout") in actions
    assert isinstance(actions[-1], Settled) and fs.pending_acks == 0
    fs.ack_timeout()
    assert fs.drain() == []


def test_exchange_ack_aliases_and_delisted_product() -> None:
    fs = FeedState(EXCHANGE, "1", {"level2_batch": ["BTC-USD", "YFI-USD"],
                                   "ticker_batch": ["BTC-USD"]})
    fs.on_connect()
    fs.opening_frames()
    fs.on_message(ex("error", message="Failed to subscribe", reason="YFI-USD is delisted"))
    fs.on_message(ex_ack({"heartbeat": ["BTC-USD"], "level2_50": ["BTC-USD"],
                          "ticker_1000": ["BTC-USD"]}))
    actions = fs.drain()
    assert fs.acknowledged["level2_batch"] == frozenset({"BTC-USD"})
    assert fs.acknowledged["ticker_batch"] == frozenset({"BTC-USD"})
    refusals = [a for a in actions if isinstance(a, Refused)]
    assert Refused(None, "YFI-USD", "YFI-USD is delisted") in refusals
    assert Refused("level2_batch", "YFI-USD", "not acknowledged by the server") in refusals
    assert Refused("heartbeat", "YFI-USD", "not acknowledged by the server") in refusals


def test_update_subscriptions_unsubscribes_first_and_tracks_the_acks() -> None:
    fs = FeedState(ADVANCED_TRADE, "3", {"level2": ["A-USD", "B-USD"], "ticker": ["A-USD"]})
    fs.on_connect()
    fs.opening_frames()
    fs.on_message(at_ack(0, {"heartbeats": ["heartbeats"]}))
    fs.on_message(at_ack(1, {"heartbeats": ["heartbeats"], "level2": ["A-USD", "B-USD"]}))
    fs.on_message(at_ack(2, {"heartbeats": ["heartbeats"], "level2": ["A-USD", "B-USD"],
                             "ticker": ["A-USD"]}))
    fs.drain()
    frames = [orjson.loads(f) for f in fs.update_subscriptions(
        {"level2": ["B-USD", "C-USD"], "ticker": ["A-USD"]})]
    assert frames == [
        {"type": "unsubscribe", "product_ids": ["A-USD"], "channel": "level2"},
        {"type": "subscribe", "product_ids": ["C-USD"], "channel": "level2"},
    ]
    assert fs.pending_acks == 2
    fs.on_message(at_ack(3, {"heartbeats": ["heartbeats"], "level2": ["B-USD"],
                             "ticker": ["A-USD"]}))
    actions = fs.drain()
    assert Marker("A-USD", "level2", MarkerKind.NOTE, orjson.dumps(
        {"channel": "level2", "conn": "3", "event": "unsubscribed"})) in actions
    fs.on_message(at_ack(4, {"heartbeats": ["heartbeats"], "level2": ["B-USD", "C-USD"],
                             "ticker": ["A-USD"]}))
    assert fs.all_acknowledged
    # frames of the dropped product still in flight keep their stream
    assert fs.on_message(at_l2("A-USD", 5)) == ("A-USD", "level2")
    assert fs.on_message(at_l2("C-USD", 6)) == ("C-USD", "level2")
    fs.drain()
    fs.on_disconnect("close 1000")
    marked = {(m.product, m.channel) for m in fs.drain() if isinstance(m, Marker)}
    assert ("A-USD", "level2") not in marked  # unsubscribed: nothing more to miss there
    assert {("A-USD", "ticker"), ("B-USD", "level2"), ("C-USD", "level2")} <= marked
    with pytest.raises(ValueError, match="at most 30"):
        fs.update_subscriptions({"level2": [f"P{i}-USD" for i in range(31)]})


def test_ack_naming_a_hostile_product_does_not_make_it_routable() -> None:
    fs = FeedState(ADVANCED_TRADE, "3", {"level2": ["A-USD"]})
    fs.on_message(at_ack(0, {"level2": ["A-USD", "../../x"]}))
    assert fs.counters.invalid_product == 1
    assert fs.on_message(at_l2("../../x", 1)) == ("_conn3", "_unrouted")


def test_error_texts_that_name_a_product_or_a_rate_limit() -> None:
    """Exchange names the product it will never subscribe (delisted, not valid): a final
    refusal. A rate-limit error refuses nothing for good: what it dropped is retried."""
    for reason in ("YFI-USD is delisted", "YFI-USD is not a valid product"):
        _error, refused = classify_error({"type": "error", "message": "Failed to subscribe",
                                          "reason": reason}, "level2_batch")
        assert refused == Refused(None, "YFI-USD", reason)
    # the root product_ids caveat names no product: nothing final about any product
    _error, refused = classify_error({"type": "error", "message": "Failed to subscribe",
                                      "reason": " is not a valid product"}, "level2_batch")
    assert refused == Refused(None, None, " is not a valid product")
    for obj in ({"type": "error", "message": "rate limit exceeded"},
                {"type": "error", "message": "ErrSlowRead",
                 "reason": "client sends too many messages"}):
        error, refused = classify_error(obj, "level2")
        assert refused is None and is_rate_limited(error)
    error, _refused = classify_error({"type": "error", "message": "failure to subscribe"},
                                     "level2")
    assert not is_rate_limited(error)
