"""The hot-path routers agree with the full path on every frame, state and action.

``FeedState.on_message`` takes fast paths for the dominant frames in the venue's layout
(AT ``l2_data`` and one-product frames with the expected ``sequence_num``; Exchange
``l2update``/``snapshot`` and in-order ``match``) and hands everything else to the dialect
router's ``full``, the general path. Here two feeds see the same frames, one through
``on_message`` and one through the full path only, and must return the same streams, queue
the same actions and end with the same counters and sequence state.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol_frames import TS

from logger.protocol import ADVANCED_TRADE, EXCHANGE, Dialect, FeedState
from logger.protocol.route_at import AdvancedTradeRouter
from logger.protocol.route_exchange import ExchangeRouter

PRODUCTS = ["BTC-USD", "ETH-USD"]
POOL = [*PRODUCTS, *PRODUCTS, *PRODUCTS, "SOL-USD", "../x", "_conn7", ""]
"""Mostly products of the connection, so the fast paths are taken often."""


def _feed(dialect: Dialect) -> FeedState:
    channels = {ch: [] if ch in dialect.shared_channels and (
        ch == dialect.keepalive_channel or dialect is EXCHANGE) else PRODUCTS
        for ch in dialect.channels}
    fs = FeedState(dialect, "4", channels)
    fs.on_connect()
    fs.opening_frames()
    return fs


def _full(fs: FeedState) -> Callable[[bytes], tuple[str, str]]:
    router = fs.router
    assert isinstance(router, AdvancedTradeRouter | ExchangeRouter)
    full = router.full

    def route(raw: bytes) -> tuple[str, str]:
        fs.counters.messages += 1
        return full(raw)

    return route


def _same(fast: FeedState, slow: FeedState, frames: list[bytes]) -> None:
    slow_route = _full(slow)
    for raw in frames:
        assert fast.on_message(raw) == slow_route(raw), raw[:160]
        assert fast.drain() == slow.drain(), raw[:160]
    assert fast.counters == slow.counters
    a, b = fast.router, slow.router
    if isinstance(a, AdvancedTradeRouter):  # the connection's sequence state
        assert isinstance(b, AdvancedTradeRouter)
        assert a.seq.expected == b.seq.expected
        assert a.seq.needle == b.seq.needle
    else:  # each product's last trade id
        assert isinstance(a, ExchangeRouter) and isinstance(b, ExchangeRouter)
        assert a.trades.last == b.trades.last


AT_CHANNELS = ["l2_data"] * 4 + ["ticker", "ticker_batch", "market_trades", "candles", "heartbeats",
               "status", "subscriptions", "user"]


@st.composite
def at_frame(draw: st.DrawFn, seq: int) -> bytes:
    channel = draw(st.sampled_from(AT_CHANNELS))
    products = draw(st.lists(st.sampled_from(POOL), min_size=draw(st.sampled_from([0, 1, 1])),
                             max_size=draw(st.sampled_from([1, 1, 3]))))
    kind = draw(st.sampled_from(["update", "snapshot"]))
    if channel in ("ticker", "ticker_batch"):
        events = [{"type": kind, "tickers": [{"type": "ticker", "product_id": p, "price": "1"}
                                             for p in products]}]
    elif channel == "market_trades":
        events = [{"type": kind, "trades": [{"product_id": p, "trade_id": "9"}
                                            for p in products]}]
    elif channel == "subscriptions":
        events = [{"subscriptions": {"level2": products}}]
    else:
        events = [{"type": kind, "product_id": p, "updates": [{"side": "bid"}]}
                  for p in products]
    envelope: dict[str, object] = {"channel": channel}
    if draw(st.booleans()):
        envelope["client_id"] = ""
    envelope["timestamp"] = draw(st.sampled_from([TS, TS[:-4] + "Z", ""]))
    seq_text = draw(st.sampled_from([b"%d" % seq] * 5 + [b'"%d"' % seq, b"0%d" % seq,
                                                         b"%d " % seq]))
    envelope["sequence_num"] = "SEQ"
    envelope["events"] = events
    raw = orjson.dumps(envelope).replace(b'"SEQ"', seq_text)
    big = draw(st.integers(0, 9))
    if big == 0:  # a frame beyond the split limit (snapshot-sized)
        raw = raw.replace(b'"updates":[{"side":"bid"}]',
                          b'"updates":[' + b",".join([b'{"side":"bid"}'] * 1500) + b"]")
    elif big == 1:  # truncated
        raw = raw[: len(raw) // 2]
    return raw


@settings(max_examples=300, deadline=None)
@given(st.data(), st.lists(st.sampled_from([1] * 8 + [-2, -1, 0, 2, 3]), min_size=1,
                          max_size=60))
def test_advanced_trade_fast_paths_agree_with_the_full_router(
        data: st.DataObject, steps: list[int]) -> None:
    fast, slow = _feed(ADVANCED_TRADE), _feed(ADVANCED_TRADE)
    frames, seq = [], -1
    for step in steps:
        seq = max(0, seq + step)
        frames.append(data.draw(at_frame(seq)))
    _same(fast, slow, frames)


def test_advanced_trade_reconnect_restarts_the_fast_sequence_check() -> None:
    fast, slow = _feed(ADVANCED_TRADE), _feed(ADVANCED_TRADE)
    l2 = (b'{"channel":"l2_data","client_id":"","timestamp":"%s","sequence_num":%d,"events":'
          b'[{"type":"update","product_id":"BTC-USD","updates":[]}]}')
    first = [l2 % (TS.encode(), i) for i in range(5)]
    _same(fast, slow, first)
    for fs in (fast, slow):
        fs.on_disconnect("connection lost")
        fs.on_connect()
        fs.drain()
    _same(fast, slow, [l2 % (b"t", i) for i in range(3)] + first[:2])
    assert fast.counters.gaps == 0 and fast.counters.late == 2


EX_TYPES = ["l2update", "snapshot", "match", "last_match", "ticker", "heartbeat", "auction",
            "status", "subscriptions", "error", "open"]


@st.composite
def ex_frame(draw: st.DrawFn, trade: dict[str, int]) -> bytes:
    kind = draw(st.sampled_from(["l2update", "match"] * 3 + EX_TYPES))
    product = draw(st.sampled_from(POOL))
    fields: dict[str, object] = {"type": kind}
    if kind in ("match", "last_match", "ticker"):
        trade[product] = trade.get(product, 100) + draw(st.sampled_from([1] * 6 + [-1, 0, 2]))
        fields["trade_id"] = trade[product]
    if kind == "heartbeat":
        fields["last_trade_id"] = trade.get(product, 100) + draw(st.integers(0, 1))
    if draw(st.integers(0, 4)):
        fields["product_id"] = product
    if kind == "l2update":
        fields["changes"] = [["buy", "1.5", "0"]]
    fields["sequence"] = 7
    if not draw(st.integers(0, 4)):  # keys reordered
        fields = dict(reversed(list(fields.items())))
    raw = orjson.dumps(fields)
    cut = draw(st.integers(0, 9))
    if cut == 0:
        raw = raw[:-3]
    elif cut == 1:
        raw = raw.replace(b'"trade_id":', b'"trade_id":"').replace(b',"maker', b'",')
    return raw


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(1, 80))
def test_exchange_fast_paths_agree_with_the_full_router(data: st.DataObject, n: int) -> None:
    fast, slow = _feed(EXCHANGE), _feed(EXCHANGE)
    trade: dict[str, int] = {}
    _same(fast, slow, [data.draw(ex_frame(trade)) for _ in range(n)])
