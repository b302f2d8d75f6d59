"""The subscription state machine's explicit state: settled, waiting, resubscribing."""

from __future__ import annotations

from test_protocol_frames import at_ack, at_l2

from logger.protocol import ADVANCED_TRADE, FeedState, Reconnect, Send
from logger.protocol.feed import Link, Phase

PLAN = {"level2": ["BTC-USD"], "heartbeats": []}
ACKED = {"level2": ["BTC-USD"], "heartbeats": ["heartbeats"]}


def test_phase_follows_requests_acks_and_gaps() -> None:
    fs = FeedState(ADVANCED_TRADE, "0", PLAN)
    assert fs.phase is Phase.SETTLED and fs.link is Link.CLOSED
    fs.on_connect()
    assert fs.phase is Phase.SETTLED and fs.link is Link.OPEN
    frames = fs.opening_frames()
    assert fs.phase is Phase.WAITING
    for seq in range(len(frames)):
        fs.on_message(at_ack(seq, ACKED))
    assert fs.phase is Phase.SETTLED and fs.all_acknowledged
    fs.drain()
    fs.on_message(at_l2("BTC-USD", len(frames) + 3))  # a gap: fresh snapshots asked
    assert fs.phase is Phase.RESUBSCRIBING
    assert [a for a in fs.drain() if isinstance(a, Send)]
    fs.on_message(at_l2("BTC-USD", len(frames) + 9))  # another before they came: reconnect
    assert [a for a in fs.drain() if isinstance(a, Reconnect)]
    fs.on_disconnect("test")
    assert fs.link is Link.CLOSED
    fs.on_connect()
    assert fs.phase is Phase.SETTLED
