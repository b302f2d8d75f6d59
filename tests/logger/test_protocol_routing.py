"""Routing of raw frames to (product, channel) streams, both dialects, good and bad input."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_frames import (
    at,
    at_ack,
    at_candles,
    at_error,
    at_heartbeat,
    at_l2,
    at_status,
    at_ticker,
    at_trades,
    ex,
    ex_ack,
    ex_heartbeat,
    ex_match,
    ex_ticker,
)

from logger.protocol import (
    ADVANCED_TRADE,
    EXCHANGE,
    FeedState,
    Marker,
    MarkerKind,
    Refused,
    ServerError,
)

PRODUCTS = ["BTC-USD", "ETH-USD"]


def at_feed() -> FeedState:
    fs = FeedState(ADVANCED_TRADE, "7", {ch: PRODUCTS for ch in ADVANCED_TRADE.channels
                                         if ch != "heartbeats"})
    fs.on_connect()
    fs.opening_frames()
    return fs


def ex_feed() -> FeedState:
    fs = FeedState(EXCHANGE, "3", {ch: ([] if ch == "status" else PRODUCTS)
                                   for ch in EXCHANGE.channels})
    fs.on_connect()
    fs.opening_frames()
    return fs


def test_at_product_channels_route_to_subscribe_channel_names() -> None:
    fs = at_feed()
    assert fs.on_message(at_l2("BTC-USD", 0, "snapshot", 50)) == ("BTC-USD", "level2")
    assert fs.on_message(at_l2("ETH-USD", 1)) == ("ETH-USD", "level2")
    assert fs.on_message(at_ticker(["ETH-USD"], 2)) == ("ETH-USD", "ticker")
    assert fs.on_message(at_ticker(["BTC-USD"], 3, "ticker_batch")) == ("BTC-USD", "ticker_batch")
    assert fs.on_message(at_trades(["ETH-USD", "ETH-USD"], 4)) == ("ETH-USD", "market_trades")
    assert fs.on_message(at_candles("BTC-USD", 5)) == ("BTC-USD", "candles")
    assert fs.counters.unrouted == 0 and fs.counters.gaps == 0


def test_at_shared_frames_go_to_the_connection_stream() -> None:
    fs = at_feed()
    assert fs.on_message(at_heartbeat(0)) == ("_conn7", "heartbeats")
    assert fs.on_message(at_status(1)) == ("_conn7", "status")
    assert fs.on_message(at_ack(2, {"heartbeats": ["heartbeats"]})) == ("_conn7", "subscriptions")
    assert fs.on_message(at_error("failure to subscribe")) == ("_conn7", "error")
    assert fs.counters.unrouted == 0 and fs.counters.errors == 1


def test_at_frame_naming_several_products_goes_to_multi() -> None:
    fs = at_feed()
    assert fs.on_message(at_ticker(["BTC-USD", "ETH-USD"], 0)) == ("_multi", "ticker")
    assert fs.on_message(at_trades(["ETH-USD", "BTC-USD"], 1)) == ("_multi", "market_trades")
    assert fs.on_message(at_trades(["ETH-USD", "SOL-USD"], 2)) == ("_multi", "market_trades")


def test_at_frame_naming_no_product_goes_to_the_connection_stream() -> None:
    fs = at_feed()
    frame = at("market_trades", 0, [{"type": "update", "trades": []}])
    assert fs.on_message(frame) == ("_conn7", "market_trades")


@pytest.mark.parametrize("frame", [
    b"", b"not json", b"{", b"[1,2,3]", b"null", b'"text"', b"\xff\xfe\x00",
    at_l2("BTC-USD", 0)[:-1],  # truncated: framing check fails, orjson refuses it
    at_l2("BTC-USD", 0)[:40],
])
def test_at_malformed_frames_are_unrouted_and_counted(frame: bytes) -> None:
    fs = at_feed()
    assert fs.on_message(frame) == ("_conn7", "_unrouted")
    assert fs.counters.unrouted == 1


def test_at_unknown_channel_is_unrouted_but_still_counts_in_the_sequence() -> None:
    fs = at_feed()
    assert fs.on_message(at("user", 0, [{"type": "snapshot", "orders": []}])) == (
        "_conn7", "_unrouted")
    assert fs.counters.unknown == 1
    assert fs.on_message(at_heartbeat(1)) == ("_conn7", "heartbeats")
    assert fs.counters.gaps == 0


@pytest.mark.parametrize("product", ["../../etc", "_conn7", "_multi", "A" * 65, ".hidden",
                                     "a..b", "BTC/USD", "", "BTC USD"])
def test_hostile_product_ids_never_become_streams(product: str) -> None:
    fs = at_feed()
    assert fs.on_message(at_l2(product, 0)) == ("_conn7", "_unrouted")
    assert fs.counters.invalid_product == 1
    efs = ex_feed()
    assert efs.on_message(ex_match(product, 5)) == ("_conn3", "_unrouted")
    assert efs.counters.invalid_product == 1


def test_products_not_subscribed_on_this_connection_are_unrouted() -> None:
    fs = at_feed()
    assert fs.on_message(at_l2("SOL-USD", 0)) == ("_conn7", "_unrouted")
    assert fs.counters.unexpected_product == 1
    efs = ex_feed()
    assert efs.on_message(ex("l2update", product_id="SOL-USD", changes=[])) == (
        "_conn3", "_unrouted")
    assert efs.counters.unexpected_product == 1


def test_products_acknowledged_but_never_asked_for_stay_unroutable() -> None:
    fs = at_feed()
    fs.on_message(at_ack(0, {"level2": ["BTC-USD", "ETH-USD", "SOL-USD"]}))
    assert fs.counters.unexpected_product == 1
    assert not [a for a in fs.drain() if isinstance(a, Marker) and a.product == "SOL-USD"]
    assert fs.on_message(at_l2("SOL-USD", 1)) == ("_conn7", "_unrouted")


def test_reordered_or_spaced_frames_take_the_slow_path_with_the_same_result() -> None:
    fs = at_feed()
    canonical = at_l2("ETH-USD", 0)
    obj = orjson.loads(canonical)
    reordered = orjson.dumps({"events": obj["events"], "sequence_num": 1,
                              "channel": "l2_data", "timestamp": "t"})
    spaced = orjson.dumps({**obj, "sequence_num": 2}, option=orjson.OPT_INDENT_2) + b"\n"
    assert fs.on_message(canonical) == ("ETH-USD", "level2")
    assert fs.on_message(reordered) == ("ETH-USD", "level2")
    assert fs.on_message(spaced) == ("ETH-USD", "level2")
    assert fs.counters.gaps == 0 and fs.counters.unrouted == 0
    efs = ex_feed()
    assert efs.on_message(b'{ "product_id": "BTC-USD", "type": "l2update", "changes": [] }') == (
        "BTC-USD", "level2_batch")


def test_string_values_cannot_spoof_keys() -> None:
    fs = at_feed()
    sneaky = at("l2_data", 0, [{"type": "update", "note": '"product_id":"SOL-USD"',
                                "product_id": "BTC-USD", "updates": []}])
    assert fs.on_message(sneaky) == ("BTC-USD", "level2")


def test_exchange_types_route_to_their_channels() -> None:
    fs = ex_feed()
    cases = [
        (ex("snapshot", product_id="BTC-USD", bids=[["1", "2"]], asks=[]), ("BTC-USD",
                                                                          "level2_batch")),
        (ex("l2update", product_id="ETH-USD", changes=[["buy", "1", "0"]], time="t"),
         ("ETH-USD", "level2_batch")),
        (ex_match("BTC-USD", 10, "last_match"), ("BTC-USD", "matches")),
        (ex_match("BTC-USD", 11), ("BTC-USD", "matches")),
        (ex_heartbeat("BTC-USD", 11), ("BTC-USD", "heartbeat")),
        (ex("auction", product_id="ETH-USD", sequence=1, auction_state="collection"),
         ("ETH-USD", "auctionfeed")),
        (ex("status", products=[], currencies=[]), ("_conn3", "status")),
        (ex("error", message="error message"), ("_conn3", "error")),
        (ex_ack({"heartbeat": PRODUCTS}), ("_conn3", "subscriptions")),
        (ex("received", product_id="BTC-USD", sequence=3), ("_conn3", "_unrouted")),
        (b'["open","BTC-USD","57560479456"]', ("_conn3", "_unrouted")),
    ]
    for frame, stream in cases:
        assert fs.on_message(frame) == stream, frame
    assert fs.counters.unrouted == 2 and fs.counters.unknown == 2 and fs.counters.gaps == 0


def test_exchange_message_key_first_order_is_accepted() -> None:
    fs = ex_feed()
    frame = b'{"message":"Failed to subscribe","reason":"No channels provided","type":"error"}'
    assert fs.on_message(frame) == ("_conn3", "error")
    assert ServerError("Failed to subscribe", "No channels provided") in fs.drain()


def test_exchange_ticker_and_ticker_batch_are_told_apart_by_trade_id() -> None:
    fs = ex_feed()
    assert fs.on_message(ex_ticker("BTC-USD", 100, trade_id=7)) == ("BTC-USD", "ticker")
    assert fs.on_message(ex_ticker("BTC-USD", 105, trade_id=8)) == ("BTC-USD", "ticker")
    # the batch repeats the latest state; the book moved the sequence on meanwhile
    assert fs.on_message(ex_ticker("BTC-USD", 190, trade_id=8)) == ("BTC-USD", "ticker_batch")
    assert fs.on_message(ex_ticker("BTC-USD", 200, trade_id=9)) == ("BTC-USD", "ticker")
    assert fs.on_message(ex_ticker("ETH-USD", 1, trade_id=9)) == ("ETH-USD", "ticker")
    only_batch = FeedState(EXCHANGE, "4", {"ticker_batch": ["BTC-USD"]})
    assert only_batch.on_message(ex_ticker("BTC-USD", 1)) == ("BTC-USD", "ticker_batch")
    only_ticker = FeedState(EXCHANGE, "5", {"ticker": ["BTC-USD"]})
    assert only_ticker.on_message(ex_ticker("BTC-USD", 1)) == ("BTC-USD", "ticker")
    assert only_ticker.on_message(ex_ticker("BTC-USD", 1)) == ("BTC-USD", "ticker")


def test_exchange_delisted_product_error_is_a_refusal() -> None:
    fs = ex_feed()
    frame = ex("error", message="Failed to subscribe", reason="YFI-USD is delisted")
    assert fs.on_message(frame) == ("_conn3", "error")
    actions = fs.drain()
    assert Refused(None, "YFI-USD", "YFI-USD is delisted") in actions
    assert fs.counters.refused == 1 and fs.counters.errors == 1


def test_at_too_many_level2_streams_error_is_a_level2_refusal() -> None:
    fs = at_feed()
    fs.on_message(at_error("too many L2 streams requested in a single session"))
    actions = fs.drain()
    assert Refused("level2", None, "too many L2 streams requested in a single session") in actions


def test_late_frame_gets_a_note_in_its_own_stream() -> None:
    fs = at_feed()
    fs.on_message(at_l2("BTC-USD", 0))
    fs.on_message(at_l2("BTC-USD", 1))
    fs.drain()
    assert fs.on_message(at_l2("ETH-USD", 1)) == ("ETH-USD", "level2")
    notes = [a for a in fs.drain() if isinstance(a, Marker)]
    assert len(notes) == 1 and notes[0].kind is MarkerKind.NOTE
    assert (notes[0].product, notes[0].channel) == ("ETH-USD", "level2")
    assert orjson.loads(notes[0].payload)["sequence_num"] == 1
    assert fs.counters.late == 1 and fs.counters.gaps == 0


_POOL = [*PRODUCTS, "SOL-USD", "../x", "_conn7"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["l2_data", "ticker", "ticker_batch", "market_trades", "candles",
                     "heartbeats", "status", "user"]),
    st.lists(st.sampled_from(_POOL), max_size=3),
    st.integers(0, 2)), min_size=1, max_size=40))
def test_byte_scan_and_full_parse_agree(frames: list[tuple[str, list[str], int]]) -> None:
    """The hot path (venue layout) and the slow path (reordered keys) route identically."""
    fast, slow = at_feed(), at_feed()
    seq = 0
    for channel, products, step in frames:
        seq += step
        events = [{"type": "update", "product_id": p, "updates": []} for p in products]
        canonical = at(channel, seq, events)
        reordered = orjson.dumps(dict(reversed(list(orjson.loads(canonical).items()))))
        assert fast.on_message(canonical) == slow.on_message(reordered)
        assert fast.drain() == slow.drain()
    assert fast.counters == slow.counters


def test_absurd_numbers_never_break_markers() -> None:
    fs = at_feed()
    huge = b"9" * 40
    frame = (b'{"channel":"l2_data","timestamp":"t","sequence_num":%s,"events":[{"type":"update",'
             b'"product_id":"BTC-USD","updates":[]}]}' % huge)
    assert fs.on_message(frame) == ("BTC-USD", "level2")
    assert fs.on_message(frame.replace(huge, b"-" + huge)) == ("BTC-USD", "level2")
    fs.drain()
    efs = ex_feed()
    for kind, key in ((b"match", b"trade_id"), (b"last_match", b"trade_id"),
                      (b"heartbeat", b"last_trade_id"), (b"ticker", b"trade_id")):
        for value in (huge, b'"' + huge + b'"', b"-" + huge, b"1e400"):
            raw = b'{"type":"%s","%s":%s,"product_id":"BTC-USD"}' % (kind, key, value)
            assert efs.on_message(raw)[0] == "BTC-USD"
            reordered = b'{"product_id":"BTC-USD","%s":%s,"type":"%s"}' % (key, value, kind)
            # orjson refuses 1e400 (infinite as a double): malformed, so unrouted
            expected = "_conn3" if value == b"1e400" else "BTC-USD"
            assert efs.on_message(reordered)[0] == expected
    for action in fs.drain() + efs.drain():
        if isinstance(action, Marker):
            assert orjson.loads(action.payload)["event"]
