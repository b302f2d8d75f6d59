"""Codec-level pieces of the venue: client-frame parsing (property-tested), the HTTP request
parser, the fault spec grammar and schedule, the open-rate window, the ledger file format."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.venue import wsframe
from tools.venue.faults import (
    FaultSchedule,
    FaultSpec,
    FaultSpecError,
    frame_faults,
    parse_faults,
    rest_faults,
)
from tools.venue.ledger import Ledger, digest
from tools.venue.limits import OpenRateLimiter


def _client_frame(op: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


@settings(max_examples=60, deadline=None)
@given(messages=st.lists(st.binary(max_size=70_000), min_size=1, max_size=4),
       cuts=st.lists(st.integers(1, 200_000), max_size=6), frag=st.booleans())
def test_parser_returns_every_message_whatever_the_chunking(
        messages: list[bytes], cuts: list[int], frag: bool) -> None:
    wire = b""
    for m in messages:
        if frag and len(m) > 1:
            half = len(m) // 2
            wire += _client_frame(wsframe.OP_TEXT, m[:half], fin=False)
            wire += _client_frame(wsframe.OP_PING, b"x")
            wire += _client_frame(wsframe.OP_CONT, m[half:])
        else:
            wire += _client_frame(wsframe.OP_TEXT, m)
    parser = wsframe.FrameParser(1 << 20)
    got: list[tuple[int, bytes]] = []
    pos = 0
    for c in [*sorted(set(cuts)), len(wire)]:
        got.extend(parser.feed(wire[pos:c]))
        pos = max(pos, min(c, len(wire)))
    texts = [p for op, p in got if op == wsframe.OP_TEXT]
    assert texts == messages


def test_parser_refuses_oversized_unmasked_and_reserved_frames() -> None:
    with pytest.raises(wsframe.WSProtocolError) as e:
        list(wsframe.FrameParser(100).feed(_client_frame(wsframe.OP_TEXT, b"x" * 101)))
    assert e.value.code == 1009 and e.value.reason == "Message too big"
    with pytest.raises(wsframe.WSProtocolError, match="masked"):
        list(wsframe.FrameParser(100).feed(bytes((0x81, 2)) + b"hi"))
    bad = bytearray(_client_frame(wsframe.OP_TEXT, b"hi"))
    bad[0] |= 0x40
    with pytest.raises(wsframe.WSProtocolError, match="reserved"):
        list(wsframe.FrameParser(100).feed(bytes(bad)))
    with pytest.raises(wsframe.WSProtocolError, match="continuation"):
        list(wsframe.FrameParser(100).feed(_client_frame(wsframe.OP_CONT, b"hi")))


def test_request_parser_and_handshake() -> None:
    req = wsframe.parse_request(
        b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13")
    assert req.method == "GET" and req.target == "/x?y=1" and wsframe.is_upgrade(req)
    # RFC 6455 §1.3 example key → accept value
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in wsframe.handshake_response(req)
    with pytest.raises(wsframe.WSProtocolError):
        wsframe.parse_request(b"garbage")
    with pytest.raises(wsframe.WSProtocolError):
        wsframe.handshake_response(wsframe.parse_request(b"GET / HTTP/1.1\r\nUpgrade: websocket"))


def test_fault_spec_grammar() -> None:
    specs = parse_faults("seq_skip@100, stall:1.5@c2/30,malformed:binary@*500,close:4000@7,"
                         "hostile_product:long@9,oversize:2000@3,error_reply:boom@1,"
                         "abnormal_close@c0/50")
    assert specs[0] == FaultSpec("seq_skip", 100)
    assert specs[1] == FaultSpec("stall", 30, None, 2, "1.5")
    assert specs[2] == FaultSpec("malformed", 500, 500, None, "binary")
    assert specs[7] == FaultSpec("abnormal_close", 50, None, 0, None)
    assert parse_faults("") == [] and parse_faults(None) == []
    for bad, msg in [("nope@1", "unknown fault kind"), ("seq_skip", "cannot parse"),
                     ("seq_skip:0@1", "bad argument"), ("stall:-1@1", "bad argument"),
                     ("malformed:weird@1", "one of"), ("hostile_product:x@1", "one of"),
                     ("close:12@1", "bad argument"), ("seq_skip@*0", "period"),
                     ("abnormal_close:1@1", "no argument"), ("ping_flood:0@1", "bad argument"),
                     ("slow_rest:x@1", "bad argument"), ("slow_rest@c1/0", "REST requests")]:
        with pytest.raises(FaultSpecError, match=msg):
            parse_faults(bad)


def test_hostile_venue_fault_kinds_parse_and_split_by_what_they_count() -> None:
    specs = parse_faults("ping_flood:3@c0/100,slow_rest:5@0,slow_rest@*2,ping_flood@*1000")
    assert specs[0] == FaultSpec("ping_flood", 100, None, 0, "3")
    assert specs[1] == FaultSpec("slow_rest", 0, None, None, "5")
    assert [s.kind for s in frame_faults(specs)] == ["ping_flood", "ping_flood"]
    rest = FaultSchedule(rest_faults(specs), 0)
    fired = {i: [f.arg for f in rest.due(i)] for i in range(7) if i >= rest.next_at}
    assert fired == {0: ["5"], 2: [None], 4: [None], 6: [None]}


def test_fault_schedule_fires_once_periodically_and_per_connection() -> None:
    specs = parse_faults("seq_skip@5,stall@c1/3,malformed@*4")
    s0 = FaultSchedule(specs, 0)
    fired = {i: [f.kind for f in s0.due(i)] for i in range(13) if i >= s0.next_at}
    assert fired == {4: ["malformed"], 5: ["seq_skip"], 8: ["malformed"], 12: ["malformed"]}
    s1 = FaultSchedule(specs, 1)
    assert [f.kind for f in s1.due(3)] == ["stall"]


def test_open_rate_window() -> None:
    lim = OpenRateLimiter(8)
    assert all(lim.allow(10.0 + k * 0.01) for k in range(8))
    assert not lim.allow(10.5)
    assert lim.allow(11.001)  # the first open left the window


def test_ledger_file_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    led = Ledger(path)
    led.frame(0, 0, "l2_data", ("BTC-USD",), 5, b"abc")
    led.frame(0, 1, "ticker", ("../x", "é"), None, b"")
    led.fault(0, "stall", 2, seconds=1.0)
    led.event(-1, "connect_refused", 0)
    with pytest.raises(ValueError, match="unknown fault"):
        led.fault(0, "nope", 1)
    led.close()
    back = Ledger.load(path)
    frames = back.frames()
    assert frames[0].sha256 == digest(b"abc") and frames[0].seq == 5 and frames[0].len == 3
    assert frames[1].products == ["../x", "é"] and frames[1].seq is None
    assert back.faults() == [{"conn": 0, "fault": "stall", "at_i": 2, "seconds": 1.0}]
    assert back.events()[0]["event"] == "connect_refused"
    assert back.conns() == [0]
