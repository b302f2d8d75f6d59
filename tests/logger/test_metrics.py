"""/metrics on 127.0.0.1: the families a dashboard needs, read from live counters."""

from __future__ import annotations

import urllib.request

from logger.metrics import ConnStats, Metrics
from logger.protocol import FeedCounters
from logger.sink import SinkStats


def test_metrics_endpoint_serves_live_counters() -> None:
    feed = FeedCounters(messages=10, unrouted=2, gaps=1)
    c = ConnStats("3", feed)
    c.bytes, c.reconnects, c.connected, c.raw_frames = 1234, 2, True, 1
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
        'cbl_messages_total{conn="3"} 11.0', 'cbl_bytes_total{conn="3"} 1234.0',
        'cbl_gaps_total{conn="3"} 1.0', 'cbl_reconnects_total{conn="3"} 2.0',
        'cbl_unrouted_total{conn="3"} 3.0', 'cbl_connected{conn="3"} 1.0',
        'cbl_channel_messages_total{channel="level2"} 9.0',
        'cbl_channel_bytes_total{channel="level2"} 900.0',
        "cbl_queue_depth 4.0", "cbl_dropped_records_total 5.0",
        "cbl_committed_records_total 7.0", "cbl_commit_seconds_count 1.0",
        'cbl_last_message_age_seconds{conn="3"}', "cbl_message_rate",
    ]
    for line in expect:
        assert line in body, line


def test_status_line_is_one_structured_line() -> None:
    feed = FeedCounters(messages=100)
    m = Metrics(lambda: [ConnStats("0", feed)], SinkStats(), lambda: 0, lambda: 0)
    line = m.status_line()
    assert "\n" not in line
    fields = dict(kv.split("=", 1) for kv in line.split())
    assert fields["event"] == "status" and fields["messages"] == "100"
    assert {"rate", "gaps", "reconnects", "dropped", "queue_depth"} <= fields.keys()
