"""Gap rules: AT per-connection sequence_num, Exchange trade ids and heartbeat last_trade_id."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_frames import (
    at_ack,
    at_heartbeat,
    at_l2,
    ex_heartbeat,
    ex_match,
)

from logger.protocol import (
    ADVANCED_TRADE,
    EXCHANGE,
    FeedState,
    Marker,
    MarkerKind,
    Reconnect,
    Send,
)
from logger.protocol.sequence import SeqGap, SequenceTracker, TradeGap, TradeIdTracker

PRODUCTS = ["BTC-USD", "ETH-USD"]


def at_feed(**kwargs: object) -> FeedState:
    fs = FeedState(ADVANCED_TRADE, "1", {"level2": PRODUCTS, "ticker": PRODUCTS,
                                         "market_trades": PRODUCTS}, **kwargs)  # type: ignore[arg-type]
    fs.on_connect()
    fs.opening_frames()
    return fs


def markers(actions: list[object], kind: MarkerKind) -> list[Marker]:
    return [a for a in actions if isinstance(a, Marker) and a.kind is kind]


def test_at_gap_marks_every_stream_of_the_connection_and_resubscribes() -> None:
    fs = at_feed()
    fs.on_message(at_l2("BTC-USD", 0))
    fs.on_message(at_l2("BTC-USD", 1))
    assert fs.drain() == []
    assert fs.on_message(at_l2("ETH-USD", 5)) == ("ETH-USD", "level2")
    actions = fs.drain()
    gaps = markers(actions, MarkerKind.GAP)
    streams = {(m.product, m.channel) for m in gaps}
    expected = {(p, ch) for p in PRODUCTS for ch in ("level2", "ticker", "market_trades")}
    expected |= {("_conn1", "heartbeats"), ("_conn1", "subscriptions")}
    expected |= {("_multi", ch) for ch in ("level2", "ticker", "market_trades")}
    assert streams == expected
    payload = orjson.loads(gaps[0].payload)
    assert payload["first_missing_sequence_num"] == 2
    assert payload["last_missing_sequence_num"] == 4
    assert payload["missing_frames"] == 3
    sends = [a for a in actions if isinstance(a, Send)]
    assert len(sends) == 1
    frames = [orjson.loads(f) for f in sends[0].frames]
    assert [(f["type"], f["channel"]) for f in frames] == [
        ("unsubscribe", "level2"), ("unsubscribe", "market_trades"),
        ("subscribe", "level2"), ("subscribe", "market_trades")]
    assert fs.counters.gaps == 1 and fs.counters.missing == 3
    assert fs.pending_acks == 4 + 4  # heartbeats, level2, ticker, market_trades + resubscribe


def test_second_gap_while_resubscribing_asks_for_a_reconnect() -> None:
    fs = at_feed()
    fs.on_message(at_l2("BTC-USD", 3))
    assert any(isinstance(a, Send) for a in fs.drain())
    fs.on_message(at_l2("BTC-USD", 9))
    actions = fs.drain()
    assert any(isinstance(a, Reconnect) for a in actions)
    assert not any(isinstance(a, Send) for a in actions)
    assert fs.counters.reconnects_requested == 1


def test_reconnect_gap_policy() -> None:
    fs = at_feed(gap_policy="reconnect")
    fs.on_message(at_l2("BTC-USD", 1))
    actions = fs.drain()
    assert [a for a in actions if not isinstance(a, Marker)] == [
        Reconnect("sequence_num gap: 1 frame(s) missing before 1")]


def test_sequence_restarts_at_zero_on_each_connection() -> None:
    fs = at_feed()
    for seq in range(4):
        fs.on_message(at_heartbeat(seq))
    fs.on_disconnect("abnormal close 1006")
    disconnects = markers(fs.drain(), MarkerKind.DISCONNECT)
    assert disconnects and orjson.loads(disconnects[0].payload)["last_sequence_num"] == 3
    fs.on_connect()
    reconnects = markers(fs.drain(), MarkerKind.RECONNECT)
    assert {(m.product, m.channel) for m in reconnects} == {
        (m.product, m.channel) for m in disconnects}
    fs.opening_frames()
    fs.on_message(at_heartbeat(0))
    assert fs.counters.gaps == 0 and fs.counters.late == 0


def test_first_frame_not_zero_is_a_gap() -> None:
    fs = at_feed()
    fs.on_message(at_ack(2, {"heartbeats": ["heartbeats"]}))
    assert fs.counters.gaps == 1 and fs.counters.missing == 2


def test_exchange_trade_id_gap_marks_the_product_matches_stream() -> None:
    fs = FeedState(EXCHANGE, "2", {"matches": PRODUCTS, "heartbeat": PRODUCTS})
    fs.on_message(ex_match("BTC-USD", 100, "last_match"))
    fs.on_message(ex_match("BTC-USD", 101))
    fs.on_message(ex_match("ETH-USD", 7, "last_match"))
    fs.on_message(ex_match("BTC-USD", 104))
    gaps = markers(fs.drain(), MarkerKind.GAP)
    assert [(m.product, m.channel) for m in gaps] == [("BTC-USD", "matches")]
    payload = orjson.loads(gaps[0].payload)
    assert (payload["first_missing_trade_id"], payload["last_missing_trade_id"]) == (102, 103)
    assert payload["detected_by"] == "trade_id"


def test_exchange_heartbeat_reveals_lost_tail_trades_after_one_heartbeat_of_grace() -> None:
    fs = FeedState(EXCHANGE, "2", {"matches": PRODUCTS, "heartbeat": PRODUCTS})
    fs.on_message(ex_match("BTC-USD", 100, "last_match"))
    fs.on_message(ex_heartbeat("BTC-USD", 101))  # 101 may still be in flight
    assert fs.drain() == []
    fs.on_message(ex_match("BTC-USD", 101))
    fs.on_message(ex_heartbeat("BTC-USD", 101))
    assert fs.drain() == []  # 101 arrived within the grace; nothing owed any more
    fs.on_message(ex_heartbeat("BTC-USD", 102))  # 102 traded, may be in flight
    assert fs.drain() == []
    fs.on_message(ex_heartbeat("BTC-USD", 102))  # a heartbeat later, 102 never came
    gaps = markers(fs.drain(), MarkerKind.GAP)
    assert len(gaps) == 1
    payload = orjson.loads(gaps[0].payload)
    assert (payload["first_missing_trade_id"], payload["last_missing_trade_id"]) == (102, 102)
    assert payload["detected_by"] == "heartbeat last_trade_id"
    fs.on_message(ex_match("BTC-USD", 103))
    assert fs.drain() == [] and fs.counters.gaps == 1


def test_exchange_trades_lost_while_disconnected_are_named_after_reconnect() -> None:
    fs = FeedState(EXCHANGE, "2", {"matches": PRODUCTS})
    fs.on_connect()
    fs.on_message(ex_match("BTC-USD", 100, "last_match"))
    fs.on_disconnect("close 1000")
    fs.on_connect()
    fs.drain()
    fs.on_message(ex_match("BTC-USD", 140, "last_match"))
    gaps = markers(fs.drain(), MarkerKind.GAP)
    payload = orjson.loads(gaps[0].payload)
    assert (payload["first_missing_trade_id"], payload["last_missing_trade_id"]) == (101, 139)


def test_exchange_duplicate_trade_is_a_note_not_a_gap() -> None:
    fs = FeedState(EXCHANGE, "2", {"matches": PRODUCTS})
    fs.on_message(ex_match("BTC-USD", 100))
    fs.on_message(ex_match("BTC-USD", 100))
    notes = markers(fs.drain(), MarkerKind.NOTE)
    assert len(notes) == 1 and fs.counters.late == 1 and fs.counters.gaps == 0


def _with_gaps(steps: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """Turn step sizes into a sequence; a step > 1 is an injected gap."""
    seqs, gaps, cur = [], [], -1
    for step in steps:
        if step > 1:
            gaps.append((cur + 1, cur + step - 1))
        cur += step
        seqs.append(cur)
    return seqs, gaps


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=200))
def test_sequence_tracker_flags_exactly_the_injected_gaps(steps: list[int]) -> None:
    seqs, injected = _with_gaps(steps)
    tracker = SequenceTracker()
    found = [r for r in map(tracker.observe, seqs) if isinstance(r, SeqGap)]
    assert [(g.first, g.last) for g in found] == injected
    assert tracker.missing == sum(b - a + 1 for a, b in injected)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=120), st.data())
def test_feed_flags_exactly_the_injected_sequence_gaps(steps: list[int],
                                                       data: st.DataObject) -> None:
    seqs, injected = _with_gaps(steps)
    fs = FeedState(ADVANCED_TRADE, "9", {"level2": PRODUCTS}, gap_policy="reconnect")
    fs.on_connect()
    found = []
    for seq in seqs:
        product = data.draw(st.sampled_from(PRODUCTS))
        assert fs.on_message(at_l2(product, seq)) == (product, "level2")
        for action in fs.drain():
            if isinstance(action, Marker) and action.kind is MarkerKind.GAP and (
                    action.product, action.channel) == ("BTC-USD", "level2"):
                p = orjson.loads(action.payload)
                found.append((p["first_missing_sequence_num"], p["last_missing_sequence_num"]))
    assert found == injected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=200), st.integers(0, 10**12))
def test_trade_tracker_flags_exactly_the_injected_gaps(steps: list[int], base: int) -> None:
    ids, injected = _with_gaps(steps)
    tracker = TradeIdTracker()
    tracker.on_trade("X", base)
    found = [r for r in (tracker.on_trade("X", base + 1 + i) for i in ids)
             if isinstance(r, TradeGap)]
    assert [(g.first - base - 1, g.last - base - 1) for g in found] == injected


def test_exchange_last_match_repeating_the_last_trade_is_expected() -> None:
    fs = FeedState(EXCHANGE, "2", {"matches": PRODUCTS, "ticker": PRODUCTS,
                                   "ticker_batch": PRODUCTS})
    fs.on_connect()
    fs.on_message(ex_match("BTC-USD", 100, "last_match"))
    fs.on_message(ex_match("BTC-USD", 101))
    fs.on_disconnect("close 1000")
    fs.on_connect()
    fs.drain()
    assert fs.on_message(ex_match("BTC-USD", 101, "last_match")) == ("BTC-USD", "matches")
    assert fs.drain() == [] and fs.counters.late == 0 and fs.counters.gaps == 0
    fs.on_message(ex_match("BTC-USD", 101))  # a plain match repeating a trade is late
    assert fs.counters.late == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PRODUCTS), st.integers(1, 3)), min_size=1,
                max_size=150))
def test_feed_flags_exactly_the_injected_trade_gaps(steps: list[tuple[str, int]]) -> None:
    fs = FeedState(EXCHANGE, "2", {"matches": PRODUCTS})
    last = {p: 1000 for p in PRODUCTS}
    injected = []
    for product in PRODUCTS:
        fs.on_message(ex_match(product, last[product], "last_match"))
    for product, step in steps:
        if step > 1:
            injected.append((product, last[product] + 1, last[product] + step - 1))
        last[product] += step
        assert fs.on_message(ex_match(product, last[product])) == (product, "matches")
    found = []
    for action in fs.drain():
        assert isinstance(action, Marker) and action.kind is MarkerKind.GAP
        p = orjson.loads(action.payload)
        found.append((action.product, p["first_missing_trade_id"], p["last_missing_trade_id"]))
    assert found == injected


def test_exchange_heartbeat_suspicion_pending_at_disconnect_is_reported_as_a_gap() -> None:
    fs = FeedState(EXCHANGE, "2", {"matches": PRODUCTS, "heartbeat": PRODUCTS})
    fs.on_connect()
    fs.on_message(ex_match("BTC-USD", 100, "last_match"))
    fs.on_message(ex_match("ETH-USD", 7, "last_match"))
    fs.on_message(ex_heartbeat("BTC-USD", 103))  # 101..103 may still be in flight
    fs.on_message(ex_heartbeat("ETH-USD", 7))  # nothing owed on ETH-USD
    assert fs.drain() == []
    fs.on_disconnect("connection lost")  # ... and now they never will come on this socket
    gaps = markers(fs.drain(), MarkerKind.GAP)
    assert [(m.product, m.channel) for m in gaps] == [("BTC-USD", "matches")]
    payload = orjson.loads(gaps[0].payload)
    assert (payload["first_missing_trade_id"], payload["last_missing_trade_id"]) == (101, 103)
    assert payload["missing_trades"] == 3
    assert "disconnect" in payload["detected_by"]
    assert fs.counters.gaps == 1 and fs.counters.missing == 3
    # reported once: the last_match after the reconnect names only the trades after 103
    fs.on_connect()
    fs.drain()
    fs.on_message(ex_match("BTC-USD", 105, "last_match"))
    gaps = markers(fs.drain(), MarkerKind.GAP)
    assert [(orjson.loads(g.payload)["first_missing_trade_id"],
             orjson.loads(g.payload)["last_missing_trade_id"]) for g in gaps] == [(104, 104)]
    fs.on_disconnect("connection lost")
    assert markers(fs.drain(), MarkerKind.GAP) == []  # nothing was owed any more
