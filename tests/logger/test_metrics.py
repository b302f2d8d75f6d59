"""/metrics on 127.0.0.1: the families a dashboard needs, read from live counters."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from wsserver import Script, ScriptedServer, Session, at_ack, at_frame, frame

from logger.connection import Connection, ConnSettings
from logger.metrics import ConnStats, Metrics
from logger.protocol import ADVANCED_TRADE, FeedCounters, FeedState
from logger.ratelimit import SlidingWindowLimiter
from logger.sink import Sink, SinkStats
from storage import Engine, EngineConfig


def test_metrics_endpoint_serves_live_counters() -> None:
    feed = FeedCounters(messages=10, unrouted=2, gaps=1)
    c = ConnStats("3", feed)
    c.reconnects, c.connected, c.raw_frames = 2, True, 1
    c.channel("level2").messages, c.channel("level2").bytes = 9, 1200
    c.channel("_unrouted").messages, c.channel("_unrouted").bytes = 2, 34
    sink = SinkStats(committed_records=7, records_dropped=5)
    sink.channel_records["level2"] = 9
    sink.channel_bytes["level2"] = 900
    m = Metrics(lambda: [c], sink, lambda: 4, lambda: 4096)
    port = m.serve("127.0.0.1", 0)
    try:
        m.observe_commit(0.003, 100)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
    finally:
        m.stop()
    expect = [
        'cbl_messages_total{channel="level2",conn="3"} 9.0',
        'cbl_bytes_total{channel="level2",conn="3"} 1200.0',
        'cbl_messages_total{channel="_unrouted",conn="3"} 2.0',
        'cbl_bytes_total{channel="_unrouted",conn="3"} 34.0',
        'cbl_gaps_total{conn="3"} 1.0', 'cbl_reconnects_total{conn="3"} 2.0',
        'cbl_unrouted_total{conn="3"} 3.0', 'cbl_connected{conn="3"} 1.0',
        'cbl_stored_records_total{channel="level2"} 9.0',
        'cbl_stored_bytes_total{channel="level2"} 900.0',
        "cbl_queue_depth 4.0", "cbl_dropped_records_total 5.0",
        "cbl_committed_records_total 7.0", "cbl_commit_seconds_count 1.0",
        'cbl_last_message_age_seconds{conn="3"}', "cbl_message_rate",
    ]
    for line in expect:
        assert line in body, line
    assert c.messages == 11 and c.bytes == 1234


def test_status_line_is_one_structured_line() -> None:
    feed = FeedCounters(messages=100)
    m = Metrics(lambda: [ConnStats("0", feed)], SinkStats(), lambda: 0, lambda: 0)
    line = m.status_line()
    assert "\n" not in line
    fields = dict(kv.split("=", 1) for kv in line.split())
    assert fields["event"] == "status" and fields["messages"] == "100"
    assert {"rate", "gaps", "reconnects", "dropped", "queue_depth"} <= fields.keys()


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.02)


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def test_messages_and_bytes_per_connection_and_channel_equal_what_was_sent(
    tmp_path: Path,
) -> None:
    """Two real connections against scripted servers on 127.0.0.1, /metrics over HTTP: every
    (conn, channel) count and byte total equals what the servers sent, frame kinds mixed."""
    sent: dict[tuple[str, str], list[bytes]] = defaultdict(list)  # (conn, channel) → payloads

    def script(conn: str, product: str, extra: list[tuple[str, bytes, int]]) -> Script:
        async def run(s: Session) -> None:
            subs: dict[str, list[str]] = {}
            for seq in range(2):  # heartbeats, then ticker: ack each
                msg = json.loads(await s.read_frame())
                subs[msg["channel"]] = msg.get("product_ids", [msg["channel"]])
                ack = at_ack(seq, subs)
                sent[(conn, "subscriptions")].append(ack)
                s.send(frame(ack))
            seq = 2
            for channel, payload, opcode in extra:
                if payload == b"TICKER":
                    payload = at_frame(seq, "ticker", product)
                    seq += 1
                elif payload == b"HEARTBEAT":
                    payload = at_frame(seq, "heartbeats", product)
                    seq += 1
                elif payload == b"FRAGMENTED":
                    payload = at_frame(seq, "ticker", product)
                    seq += 1
                    s.send(frame(payload[:40], opcode=1, fin=False))
                    s.send(frame(payload[40:90], opcode=0, fin=False))
                    s.send(frame(payload[90:], opcode=0, fin=True))
                    sent[(conn, channel)].append(payload)
                    continue
                elif payload == b"STRANGER":
                    payload = at_frame(seq, "ticker", "DOGE-USD")  # not asked for
                    seq += 1
                sent[(conn, channel)].append(payload)
                s.send(frame(payload, opcode=opcode))
            await s.drain()
            await asyncio.sleep(30)
        return run

    plans = {
        "0": ("BTC-USD", [("ticker", b"TICKER", 1)] * 5 + [("heartbeats", b"HEARTBEAT", 1)] * 3
              + [("_unrouted", b"\x00\x01binary", 2), ("ticker", b"FRAGMENTED", 1),
                 ("_unrouted", b'{"channel":"ticker", broken', 1)]),
        "1": ("ETH-USD", [("ticker", b"TICKER", 1)] * 2 + [("_unrouted", b"STRANGER", 1)]
              + [("heartbeats", b"HEARTBEAT", 1)] * 4),
    }
    sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="pwrite")),
                commit_records=7)
    sink.start()
    conns: list[Connection] = []
    metrics = Metrics(lambda: [c.stats for c in conns], sink.stats, lambda: sink.queue.depth,
                      lambda: sink.queue.nbytes)
    port = metrics.serve("127.0.0.1", 0)

    async def go() -> None:
        async with ScriptedServer([script("0", *plans["0"])]) as s0, \
                ScriptedServer([script("1", *plans["1"])]) as s1:
            for cid, srv in (("0", s0), ("1", s1)):
                settings = ConnSettings(ack_timeout_s=5)
                feed = FeedState(ADVANCED_TRADE, cid, {"ticker": [plans[cid][0]]},
                                 retry=settings.retry_policy())
                conns.append(Connection(cid, srv.url, feed, sink, SlidingWindowLimiter(8),
                                        settings))
            for c in conns:
                c.start()
            try:
                await _until(lambda: all(
                    c.stats.messages == 2 + len(plans[c.conn_id][1]) for c in conns))
            finally:
                for c in conns:
                    await c.stop()

    try:
        asyncio.run(go())
        sink.close()
        got = _scrape(port)
    finally:
        metrics.stop()

    per_conn_channel = {
        (dict(labels)["conn"], dict(labels)["channel"]): value
        for (name, labels), value in got.items() if name == "cbl_messages_total"}
    assert per_conn_channel == {k: float(len(v)) for k, v in sent.items()}
    per_conn_channel_bytes = {
        (dict(labels)["conn"], dict(labels)["channel"]): value
        for (name, labels), value in got.items() if name == "cbl_bytes_total"}
    assert per_conn_channel_bytes == {k: float(sum(map(len, v))) for k, v in sent.items()}
    assert per_conn_channel[("0", "ticker")] == 6 and per_conn_channel[("1", "_unrouted")] == 1
    for c in conns:  # the per-connection totals are the sums over channels
        assert c.stats.messages == sum(len(v) for k, v in sent.items() if k[0] == c.conn_id)
        assert c.stats.bytes == sum(sum(map(len, v)) for k, v in sent.items()
                                    if k[0] == c.conn_id)
    stored = {dict(labels)["channel"]: value for (name, labels), value in got.items()
              if name == "cbl_stored_records_total"}
    data_sent = sum(len(v) for k, v in sent.items() if k[1] == "ticker")
    assert stored["ticker"] >= data_sent  # data plus SUBSCRIBE/DISCONNECT markers
