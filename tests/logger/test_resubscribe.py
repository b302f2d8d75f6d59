"""Subscribe retries: what the venue did not acknowledge is subscribed again, paced and
bounded, instead of staying unrecorded until a reconnect.

The ``FeedState`` tests drive the core's clock explicitly (``poll(now)``, no sleeping); the
last test runs the pool against the simulator over real sockets with the venue's message
limit set below what the client sends, so the venue drops subscribe frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest
from runtime_support import data_only, markers, read_streams
from test_protocol_frames import at_ack, at_error, ex, ex_ack

from logger.config import load_config
from logger.connection import ConnSettings
from logger.daemon import conn_settings
from logger.metrics import Metrics
from logger.pool import Pool
from logger.products import fetch_products
from logger.protocol import (
    ADVANCED_TRADE,
    EXCHANGE,
    Action,
    FeedState,
    Marker,
    MarkerKind,
    Refused,
    Settled,
)
from logger.protocol.actions import RetrySubscribe, SubscribeGivenUp, SubscribeRecovered
from logger.protocol.retry import RetryPolicy
from logger.sink import Sink, SinkStats
from storage import Engine, EngineConfig
from storage.records import RecordKind
from tools.venue.limits import Limits
from tools.venue.server import SimConfig, Simulator


class AtFeed:
    """An Advanced Trade ``FeedState`` driven as the shell drives it: it polls the core with
    the current time (``now``, moved by ``poll``) after every frame, as ``run_actions`` does."""

    def __init__(self, plan: dict[str, list[str]], policy: RetryPolicy | None = None) -> None:
        self.fs = FeedState(ADVANCED_TRADE, "0", plan, retry=policy or RetryPolicy())
        self.seq = 0
        self.now = 0.0
        self.connect()

    def connect(self) -> None:
        self.fs.on_connect()
        self.seq = 0
        self.now = 0.0
        self.fs.opening_frames()
        self.fs.poll(self.now)  # the shell polls right after sending the opening frames

    def ack(self, subs: dict[str, list[str]]) -> list[Action]:
        self.fs.on_message(at_ack(self.seq, subs))
        self.seq += 1
        self.fs.poll(self.now)
        return self.fs.drain()

    def error(self, message: str) -> list[Action]:
        self.fs.on_message(at_error(message))  # error frames carry no sequence_num
        self.fs.poll(self.now)
        return self.fs.drain()

    def poll(self, now: float) -> list[Action]:
        self.now = now
        self.fs.poll(now)
        return self.fs.drain()


def retries(actions: list[Action]) -> list[RetrySubscribe]:
    return [a for a in actions if isinstance(a, RetrySubscribe)]


def frames(retry: RetrySubscribe) -> list[dict[str, object]]:
    return [orjson.loads(f) for f in retry.frames]


def run_clock(feed: AtFeed, start: float, end: float, step: float = 0.5
              ) -> list[tuple[float, Action]]:
    """Poll every ``step`` s from ``start`` to ``end`` (the shell's tick), nothing answered."""
    out: list[tuple[float, Action]] = []
    t = start
    while t <= end:
        out.extend((t, a) for a in feed.poll(t))
        t += step
    return out


HB = {"heartbeats": ["heartbeats"]}


def test_no_ack_retries_exactly_the_missing_pairs_on_the_backoff_schedule() -> None:
    feed = AtFeed({"level2": ["A-USD", "B-USD"], "ticker": ["A-USD"]})
    feed.ack({"level2": ["A-USD", "B-USD"]})
    feed.ack({"level2": ["A-USD", "B-USD"], **HB})  # the ticker frame is never answered
    assert feed.fs.pending_acks == 1
    assert feed.poll(9.5) == []
    actions = feed.poll(10.0)  # ack timeout: settled as missing, retry round armed
    assert Refused("ticker", "A-USD", "not acknowledged within the ack timeout") in actions
    assert isinstance(actions[-1], Settled) and not retries(actions)
    assert feed.fs.next_retry_at == 12.0
    assert feed.poll(11.5) == []
    [retry] = retries(feed.poll(12.0))
    assert frames(retry) == [{"type": "subscribe", "product_ids": ["A-USD"],
                              "channel": "ticker"}]
    assert retry.missing == {"ticker": ("A-USD",)} and retry.attempt == 1
    assert feed.fs.pending_acks == 1 and feed.fs.counters.subscribe_retries == 1
    # still no answer: each retry times out after 10 s, the next waits 4, 8, 16, 32 s
    sent = [t for t, a in run_clock(feed, 12.5, 200.0) if isinstance(a, RetrySubscribe)]
    assert sent == [22.0 + 4, 36.0 + 8, 54.0 + 16, 80.0 + 32]
    assert feed.fs.counters.subscribe_retries == 5


def test_partial_ack_retries_only_the_rest_and_reports_recovery() -> None:
    feed = AtFeed({"level2": ["A-USD", "B-USD", "C-USD"]})
    feed.ack({"level2": ["A-USD"]})
    actions = feed.ack({"level2": ["A-USD"], **HB})  # every frame answered: settle now
    missing = next(a for a in actions if isinstance(a, Settled)).missing
    assert missing == {"level2": frozenset({"B-USD", "C-USD"})}
    [retry] = retries(feed.poll(2.0))
    assert frames(retry) == [{"type": "subscribe", "product_ids": ["B-USD", "C-USD"],
                              "channel": "level2"}]
    actions = feed.ack({"level2": ["A-USD", "B-USD"], **HB})
    assert SubscribeRecovered("level2", ("B-USD",), 1) in actions
    assert Marker("B-USD", "level2", MarkerKind.SUBSCRIBE, orjson.dumps({
        "channel": "level2", "conn": "0", "event": "subscribed",
        "note": "acknowledged by the server; a snapshot follows where the channel has one"},
        option=orjson.OPT_SORT_KEYS)) in actions
    assert feed.poll(5.5) == []  # the second round waits 4 s from this settle (at 2 s)
    [retry] = retries(feed.poll(6.0))
    assert frames(retry) == [{"type": "subscribe", "product_ids": ["C-USD"],
                              "channel": "level2"}]
    assert retry.attempt == 2
    actions = feed.ack({"level2": ["A-USD", "B-USD", "C-USD"], **HB})
    assert SubscribeRecovered("level2", ("C-USD",), 2) in actions  # its second retry
    assert feed.fs.all_acknowledged and feed.fs.next_retry_at is None
    assert run_clock(feed, 7.0, 300.0, step=5.0) == []
    c = feed.fs.counters
    assert (c.subscribe_retries, c.subscribe_recovered, c.subscribe_given_up) == (2, 2, 0)


def test_rate_limit_error_answers_the_dropped_frame_and_is_retried() -> None:
    feed = AtFeed({"level2": ["A-USD"], "ticker": ["A-USD"]})
    feed.ack({"level2": ["A-USD"]})
    feed.error("rate limit exceeded")  # the venue dropped the ticker frame
    actions = feed.ack({"level2": ["A-USD"], **HB})
    # no ack timeout needed: the dropped frame was answered by the error
    assert next(a for a in actions if isinstance(a, Settled)).missing == {
        "ticker": frozenset({"A-USD"})}
    assert feed.poll(1.5) == []
    [retry] = retries(feed.poll(2.0))
    assert frames(retry) == [{"type": "subscribe", "product_ids": ["A-USD"],
                              "channel": "ticker"}]
    actions = feed.ack({"level2": ["A-USD"], "ticker": ["A-USD"], **HB})
    assert SubscribeRecovered("ticker", ("A-USD",), 1) in actions
    assert feed.fs.all_acknowledged


@pytest.mark.parametrize("reason", ["YFI-USD is delisted", "YFI-USD is not a valid product"])
def test_a_product_the_venue_names_as_unknown_is_not_retried(reason: str) -> None:
    fs = FeedState(EXCHANGE, "1", {"level2_batch": ["BTC-USD", "ETH-USD", "YFI-USD"],
                                   "matches": ["BTC-USD", "YFI-USD"]})
    fs.on_connect()
    fs.opening_frames()
    for _channel in ("heartbeat", "level2_batch", "matches"):
        fs.on_message(ex("error", message="Failed to subscribe", reason=reason))
    # ETH-USD is left out without a word: that one is retried
    fs.on_message(ex_ack({"heartbeat": ["BTC-USD"], "level2_50": ["BTC-USD"],
                          "matches": ["BTC-USD"]}))
    actions = fs.drain()
    assert Refused(None, "YFI-USD", reason) in actions
    fs.poll(0.0)
    fs.poll(2.0)
    [retry] = retries(fs.drain())
    assert retry.missing == {"heartbeat": ("ETH-USD",), "level2_batch": ("ETH-USD",)}
    assert [orjson.loads(f) for f in retry.frames] == [{"type": "subscribe", "channels": [
        {"name": "heartbeat", "product_ids": ["ETH-USD"]},
        {"name": "level2_batch", "product_ids": ["ETH-USD"]}]}]
    fs.on_message(ex_ack({"heartbeat": ["BTC-USD", "ETH-USD"],
                          "level2_50": ["BTC-USD", "ETH-USD"], "matches": ["BTC-USD"]}))
    assert sum(isinstance(a, SubscribeRecovered) for a in fs.drain()) == 2
    for t in range(3, 400, 5):
        fs.poll(float(t))
    after = fs.drain()
    assert retries(after) == [] and not any(isinstance(a, SubscribeGivenUp) for a in after)
    assert fs.counters.subscribe_retries == 1


def test_level2_cap_refusal_is_not_retried() -> None:
    feed = AtFeed({"level2": ["A-USD"], "ticker": ["A-USD"]})
    feed.error("too many L2 streams requested in a single session")
    feed.ack({"ticker": ["A-USD"]})
    feed.ack({"ticker": ["A-USD"], **HB})
    timeline = run_clock(feed, 0.5, 200.0)  # the level2 frame is never answered either
    assert [(t, type(a)) for t, a in timeline] == [(10.0, Refused), (10.0, Settled)]


def test_retries_are_bounded_then_given_up_with_a_note_in_each_stream() -> None:
    feed = AtFeed({"ticker": ["A-USD", "B-USD"]}, RetryPolicy(attempts=2, base_s=1.0))
    timeline = run_clock(feed, 0.5, 100.0)  # nothing is ever acknowledged
    sent = [(t, a.missing) for t, a in timeline if isinstance(a, RetrySubscribe)]
    both = {"heartbeats": ("heartbeats",), "ticker": ("A-USD", "B-USD")}
    assert sent == [(11.0, both), (21.0 + 2, both)]
    given = [(t, a) for t, a in timeline if isinstance(a, SubscribeGivenUp)]
    assert given == [(33.0, SubscribeGivenUp("heartbeats", ("heartbeats",), 2)),
                     (33.0, SubscribeGivenUp("ticker", ("A-USD", "B-USD"), 2))]
    notes = {(a.product, a.channel): orjson.loads(a.payload) for _t, a in timeline
             if isinstance(a, Marker) and a.kind is MarkerKind.NOTE}
    assert set(notes) == {("A-USD", "ticker"), ("B-USD", "ticker"), ("_conn0", "heartbeats")}
    assert notes[("A-USD", "ticker")]["event"] == "subscribe_given_up"
    assert notes[("A-USD", "ticker")]["retries"] == 2
    assert feed.fs.counters.subscribe_given_up == 3
    # a late ack after giving up is still welcome: reported as recovered
    assert SubscribeRecovered("ticker", ("A-USD",), 2) in feed.ack({"ticker": ["A-USD"]})
    assert run_clock(feed, 101.0, 300.0) == []


def test_zero_retries_means_never() -> None:
    feed = AtFeed({"ticker": ["A-USD"]}, RetryPolicy(attempts=0))
    timeline = run_clock(feed, 0.5, 300.0)
    assert any(isinstance(a, Settled) for _t, a in timeline)
    assert not any(isinstance(a, RetrySubscribe | SubscribeGivenUp) for _t, a in timeline)


def test_a_reconnect_resets_the_retry_state() -> None:
    feed = AtFeed({"level2": ["A-USD"]}, RetryPolicy(attempts=1, base_s=2.0))
    feed.ack(HB)
    feed.error("too many L2 streams requested in a single session")  # not retried ...
    assert retries([a for _t, a in run_clock(feed, 0.5, 100.0)]) == []
    feed.fs.on_disconnect("close 1006")
    feed.fs.drain()
    feed.connect()  # ... on this connection only
    feed.ack(HB)
    timeline = run_clock(feed, 0.5, 12.0)
    assert [t for t, a in timeline if isinstance(a, RetrySubscribe)] == [12.0]  # 10 + 2
    assert [t for t, a in run_clock(feed, 12.5, 40.0) if isinstance(a, SubscribeGivenUp)] \
        == [22.0]
    feed.fs.on_disconnect("close 1006")
    feed.fs.drain()
    feed.connect()  # attempts and schedule start over: one more retry, after 2 s again
    feed.ack(HB)
    assert [t for t, a in run_clock(feed, 0.5, 12.0) if isinstance(a, RetrySubscribe)] \
        == [12.0]


def test_nothing_times_out_or_retries_while_disconnected() -> None:
    feed = AtFeed({"ticker": ["A-USD"]})
    assert feed.poll(5.0) == []
    feed.fs.on_disconnect("close 1006")  # frames still pending, nothing acknowledged
    assert all(isinstance(a, Marker) for a in feed.fs.drain())
    assert run_clock(feed, 5.5, 300.0) == []
    assert feed.fs.next_retry_at is None


def test_a_due_round_waits_for_frames_in_flight() -> None:
    feed = AtFeed({"level2": ["A-USD", "B-USD"]})
    feed.ack({"level2": ["A-USD"]})
    feed.ack({"level2": ["A-USD"], **HB})
    assert feed.fs.next_retry_at == 2.0
    feed.fs.update_subscriptions({"level2": ["A-USD", "B-USD", "C-USD"]})  # a refresh
    assert retries(feed.poll(3.0)) == []  # the refresh's frame is not answered yet
    feed.ack({"level2": ["A-USD", "C-USD"], **HB})  # settles: the round is armed again
    assert feed.fs.next_retry_at == 5.0
    [retry] = retries(feed.poll(4.5) + feed.poll(5.0))
    assert frames(retry) == [{"type": "subscribe", "product_ids": ["B-USD"],
                              "channel": "level2"}]


def test_the_config_key_reaches_the_connection_feed(tmp_path: Path) -> None:
    settings = conn_settings(load_config(None, {"connections.subscribe_retries": 2,
                                                "connections.ack_timeout_s": 4.0}))
    pool = Pool(ADVANCED_TRADE, "ws://127.0.0.1:1", Sink(lambda: Engine(EngineConfig(
        root=tmp_path))), settings)
    conn = pool._new_connection({"ticker": ["A-USD"]})  # the daemon's wiring, not started
    assert conn.feed.retry_policy == RetryPolicy(attempts=2, base_s=2.0, max_s=60.0,
                                                 ack_timeout_s=4.0)
    assert load_config(None).connections.subscribe_retries == 5


# ---------------------------------------------------------------------- over real sockets

def test_venue_dropping_subscribe_frames_ends_with_everything_recorded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The venue takes 1 client message/s, the client's pacing lets 2 leave together: the
    venue drops subscribe frames (``rate limit exceeded``). The retries, paced by the client's
    limiter, get every channel acknowledged, and the data of every product and channel is
    stored after its SUBSCRIBE marker. (Retry rounds come at least 0.5 s, later 1 s, after
    the settle before them, so the venue's 1 s window has room for the later rounds.)"""
    caplog.set_level(logging.INFO, logger="logger.connection")

    async def go() -> None:
        sim = Simulator(SimConfig(dialect="advanced_trade", products=3, rate_msgs_per_s=200,
                                  limits=Limits(messages_per_second=1)))
        await sim.start()
        sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="pwrite")))
        sink.start()
        try:
            ids = [p.product_id for p in
                   await fetch_products(sim.rest_url, "advanced_trade")]
            settings = ConnSettings(ack_timeout_s=3, retry_base_s=0.5, retry_max_s=1.0,
                                    subscribe_retries=5)
            # the client believes it may send 2 messages/s (1.1 s windows): its pacing lets
            # two frames go at once and the venue drops one of each such pair
            pool = Pool(ADVANCED_TRADE, sim.ws_url, sink, settings, messages_per_second=2)
            pool.start([{"level2": ids, "ticker": ids}])
            [conn] = pool.connections.values()
            end = time.monotonic() + 20
            while time.monotonic() < end and not conn.feed.all_acknowledged:
                await asyncio.sleep(0.05)
            assert conn.feed.all_acknowledged
            assert conn.feed.acknowledged == {"heartbeats": frozenset({"heartbeats"}),
                                              "level2": frozenset(ids),
                                              "ticker": frozenset(ids)}
            c = conn.feed.counters
            assert c.subscribe_retries >= 1 and c.subscribe_recovered >= 1
            assert c.subscribe_given_up == 0 and c.connects == 1
            scraped = generate_latest(Metrics(lambda: [conn.stats], SinkStats(), lambda: 0,
                                              lambda: 0).registry).decode()
            assert f'cbl_subscribe_retries_total{{conn="0"}} {c.subscribe_retries}.0' in scraped
            assert 'cbl_subscribe_given_up_total{conn="0"} 0.0' in scraped
            await asyncio.sleep(0.5)  # some ticker data after the late subscription
            assert sim.ledger is not None
            refused = [e for e in sim.ledger.events(0) if e["event"] == "message_rate_refused"]
            assert refused  # the venue did drop subscribe frames
            await pool.stop()
        finally:
            await sim.stop()
            await asyncio.to_thread(sink.close)
        streams = read_streams(tmp_path)
        for p in ids:
            for ch in ("level2", "ticker"):
                recs = streams[(p, ch)]
                assert markers(recs, RecordKind.SUBSCRIBE), (p, ch)
                assert data_only(recs), (p, ch)
        assert not any(markers(recs, RecordKind.NOTE) for recs in streams.values())

    asyncio.run(go())
    text = caplog.text
    assert "event=subscribe_retry conn=0" in text
    assert "event=subscribe_recovered conn=0" in text
    assert "event=subscribe_given_up" not in text
