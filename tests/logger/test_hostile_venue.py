"""The connection shell against hostile WebSocket servers on 127.0.0.1 (real sockets).

A venue that floods pings and never reads the pongs, breaks the protocol (reserved opcodes,
oversize frames, close codes that may not be sent), accepts TCP and never upgrades, or keeps a
close from finishing: memory stays bounded, each ends in one log line and one DISCONNECT marker
naming the cause, the connection comes back, and nothing hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from runtime_support import data_only, markers, read_streams
from wsserver import ScriptedServer, Session, at_ack, at_frame, frame

from logger.connection import Connection, ConnSettings, close_code_value, reply_close_code
from logger.protocol import ADVANCED_TRADE, FeedState
from logger.ratelimit import SlidingWindowLimiter
from logger.sink import Sink
from storage import Engine, EngineConfig, RecordKind

TICKER = ("BTC-USD", "ticker")
FAST = ConnSettings(backoff_initial_s=0.05, backoff_max_s=0.2, watchdog_s=30, ack_timeout_s=5)
PING = frame(b"p" * 125, opcode=9)


async def _subscribed(s: Session) -> int:
    subs: dict[str, list[str]] = {}
    for i in range(2):
        msg = json.loads(await s.read_frame())
        subs[msg["channel"]] = msg.get("product_ids", [msg["channel"]])
        s.send(frame(at_ack(i, subs)))
    return 2


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def _until(cond: Callable[[], bool], timeout: float, tick: Callable[[], None]) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        tick()
        await asyncio.sleep(0.02)


Stored = dict[tuple[str, str], list[tuple[int, int, bytes]]]


def _run(tmp: Path, scripts: list[Callable[[Session], object]],
         done: Callable[[Connection, ScriptedServer], bool],
         settings: ConnSettings = FAST, timeout: float = 15.0,
         ) -> tuple[Connection, ScriptedServer, Stored, int, float]:
    """Run a connection until ``done``; also the peak RSS growth and how long ``stop`` took."""
    sink = Sink(lambda: Engine(EngineConfig(root=tmp, backend="pwrite")), commit_records=50)
    sink.start()
    feed = FeedState(ADVANCED_TRADE, "0", {"ticker": ["BTC-USD"]},
                     retry=settings.retry_policy())
    base = _rss()
    peak = [base]

    def sample() -> None:
        peak[0] = max(peak[0], _rss())

    async def go() -> tuple[Connection, ScriptedServer, float]:
        async with ScriptedServer(scripts) as srv:  # type: ignore[arg-type]
            conn = Connection("0", srv.url, feed, sink, SlidingWindowLimiter(8), settings)
            conn.start()
            try:
                await _until(lambda: done(conn, srv), timeout, sample)
            finally:
                t0 = time.monotonic()
                await conn.stop()
                stop_s = time.monotonic() - t0
            return conn, srv, stop_s

    conn, srv, stop_s = asyncio.run(go())
    sink.close()
    gc.collect()  # an unretrieved future exception would be logged now
    return conn, srv, read_streams(tmp), peak[0] - base, stop_s


async def _ping_flood(s: Session) -> None:
    """Subscribe, one data frame, then pings as fast as the socket takes them; the pongs are
    never read (the server's reader stops at its buffer limit)."""
    seq = await _subscribed(s)
    s.send(frame(at_frame(seq)))
    burst = PING * 512
    while True:
        s.send(burst)
        await s.drain()


async def _healthy(s: Session) -> None:
    seq = await _subscribed(s)
    s.send(frame(at_frame(seq)))
    await s.drain()
    await asyncio.sleep(30)


def _reasons(got: Stored) -> list[str]:
    return [json.loads(p)["reason"] for p in markers(got[TICKER], RecordKind.DISCONNECT)]


def test_ping_flood_is_dropped_at_the_write_limit_and_reconnected(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = ConnSettings(backoff_initial_s=0.05, max_write_buffer_bytes=256 << 10,
                            ack_timeout_s=5)
    conn, _srv, got, grew, _ = _run(
        tmp_path, [_ping_flood, _ping_flood, _healthy],
        lambda c, srv: srv.accepted == 3 and c.stats.messages >= 9, settings)
    reasons = _reasons(got)
    assert len(reasons) >= 2
    assert all("outgoing buffer over 262144 bytes" in r and "ping flood" in r
               for r in reasons[:2]), reasons
    assert conn.stats.reconnects == 2
    assert len(data_only(got[TICKER])) == 3
    # the bound: 256 KiB of pongs per connection plus kernel buffers; unbounded queueing
    # grew by hundreds of MB per second here
    assert grew < 64 << 20, grew
    assert "never retrieved" not in caplog.text


def test_stop_during_a_ping_flood_is_bounded_by_the_close_timeout(tmp_path: Path) -> None:
    """A graceful close waits for the outgoing buffer; a venue that never reads it must not
    hold the shutdown: the socket is aborted after ``close_timeout_s``."""
    settings = ConnSettings(backoff_initial_s=0.05, max_write_buffer_bytes=1 << 30,
                            close_timeout_s=0.5, ack_timeout_s=5)
    started = time.monotonic()

    def flooded(c: Connection, srv: ScriptedServer) -> bool:
        t = c.transport
        return (t is not None and t.underlying_transport.get_write_buffer_size() > 1 << 20) \
            or time.monotonic() - started > 8

    conn, _, got, _, stop_s = _run(tmp_path, [_ping_flood], flooded, settings)
    assert conn.pings > 1000
    assert stop_s < 2.5, stop_s
    assert _reasons(got) == []  # a stop on request is not a lost connection...
    stops = [json.loads(p)["reason"] for p in markers(got[TICKER], RecordKind.STOP)]
    assert stops == ["shutdown"]  # ...but a clean STOP, even with the socket aborted


def _close_script(code: int, reason: bytes = b"") -> Callable[[Session], object]:
    """Close with ``code`` (and ``reason``); keep the client's answer in ``received``."""
    async def script(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        s.send(frame(struct.pack("!H", code) + reason, opcode=8))
        await s.drain()
        s.received.clear()
        await s.read_frame()  # the client's close answer
        await asyncio.sleep(30)
    return script


@pytest.mark.parametrize(("code", "answer"), [
    (1006, 1000),   # reserved for reporting: never on the wire
    (5000, 1000),   # past the registered range
    (4999, 4999),   # private use: echoed
    (1001, 1001),
])
def test_server_close_codes_are_named_and_invalid_ones_never_echoed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, code: int, answer: int) -> None:
    caplog.set_level(logging.INFO)
    _conn, srv, got, _, _ = _run(
        tmp_path, [_close_script(code, b"bye"), _healthy],
        lambda c, srv: srv.accepted == 2 and c.stats.messages >= 6)
    sent = srv.sessions[0].received[-1]
    assert struct.unpack("!H", sent[:2])[0] == answer
    assert _reasons(got)[0] == f"server close {code} 'bye'"
    assert "never retrieved" not in caplog.text
    lines = [r for r in caplog.records if "event=disconnected" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]


@pytest.mark.parametrize(("name", "bad", "reason"), [
    ("reserved opcode", frame(b"x", opcode=3), "invalid opcode"),
    ("bad close code", frame(struct.pack("!H", 1004), opcode=8), "invalid close code"),
    ("oversize frame", frame(b'{"a":"' + b"x" * (80 << 10) + b'"}'), "1009"),
])
def test_protocol_errors_log_one_line_and_name_the_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, bad: bytes,
        reason: str) -> None:
    caplog.set_level(logging.DEBUG)

    async def hostile(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        s.send(bad)
        await s.drain()
        await asyncio.sleep(30)

    settings = ConnSettings(backoff_initial_s=0.05, max_frame_bytes=64 << 10, ack_timeout_s=5)
    _conn, _srv, got, _, _ = _run(tmp_path, [hostile, _healthy],
                                lambda c, srv: srv.accepted == 2 and c.stats.messages >= 6,
                                settings)
    first = _reasons(got)[0]
    assert first.startswith("protocol error: closed with"), first
    assert reason in first, first
    assert "never retrieved" not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith(("logger", "picows"))
                and (r.exc_info or r.levelno >= logging.ERROR)]
    lines = [r for r in caplog.records if "event=disconnected" in r.getMessage()]
    assert len(lines) == 1
    assert len(data_only(got[TICKER])) == 2


def test_a_close_without_a_code_is_named_1005_and_answered_1000(tmp_path: Path) -> None:
    async def bare_close(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        s.send(frame(b"", opcode=8))
        await s.drain()
        await s.read_frame()
        await asyncio.sleep(30)

    _, srv, got, _, _ = _run(tmp_path, [bare_close, _healthy],
                             lambda c, srv: srv.accepted == 2 and c.stats.messages >= 6)
    assert _reasons(got)[0] == "server close 1005 ''"
    assert struct.unpack("!H", srv.sessions[0].received[-1][:2])[0] == 1000


def test_reply_close_code_never_sends_a_reserved_code() -> None:
    for code in (0, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535):
        assert close_code_value(reply_close_code(code)) == 1000
    for code in (1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999):
        assert close_code_value(reply_close_code(code)) == code


def test_a_venue_that_never_upgrades_fails_each_attempt_within_the_deadline(
        tmp_path: Path) -> None:
    """TCP accepted, the upgrade request read, no answer: every attempt ends at
    ``connect_timeout_s`` and the next one follows (the run is not stuck in ``connect``)."""
    accepted: list[float] = []

    async def go() -> None:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(time.monotonic())
            await asyncio.sleep(30)

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="pwrite")))
        sink.start()
        feed = FeedState(ADVANCED_TRADE, "0", {"ticker": ["BTC-USD"]})
        settings = ConnSettings(connect_timeout_s=0.5, backoff_initial_s=0.05,
                                backoff_max_s=0.1)
        conn = Connection("0", f"ws://127.0.0.1:{port}/", feed, sink,
                          SlidingWindowLimiter(8), settings)
        conn.start()
        await asyncio.sleep(2.2)
        t0 = time.monotonic()
        await conn.stop()
        assert time.monotonic() - t0 < 1.0
        server.close()
        sink.close()

    asyncio.run(go())
    assert 3 <= len(accepted) <= 5, accepted


def test_gap_marker_precedes_the_frame_that_revealed_it(tmp_path: Path) -> None:
    async def script(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        s.send(frame(at_frame(seq + 3)))  # seq+1, seq+2 lost before this frame
        s.send(frame(at_frame(seq + 4)))
        await s.drain()
        await asyncio.sleep(30)

    _, _, got, _, _ = _run(tmp_path, [script], lambda c, srv: c.stats.messages >= 5)
    stream = got[TICKER]
    kinds = [k for k, _, _ in stream if k in (RecordKind.DATA, RecordKind.GAP)]
    assert kinds == [RecordKind.DATA, RecordKind.GAP, RecordKind.DATA, RecordKind.DATA]
    gap_at = next(i for i, (k, _, _) in enumerate(stream) if k == RecordKind.GAP)
    assert stream[gap_at + 1][2] == at_frame(5)
    stamps = [ts for _, ts, _ in stream]
    assert stamps == sorted(stamps)
    assert stream[gap_at][1] == stream[gap_at + 1][1]  # the revealing frame's receive time


def test_simulator_ping_flood_drops_and_reconnects_the_real_connection(tmp_path: Path) -> None:
    """The simulator's ``ping_flood`` fault (no pong read while it lasts) against the
    project's connection: dropped at its write limit, DISCONNECT named, reconnected, and the
    data before and after stored."""
    from tools.venue.server import SimConfig, Simulator

    async def go() -> tuple[Connection, Simulator]:
        sim = Simulator(SimConfig(dialect="advanced_trade", products=2, rate_msgs_per_s=2000,
                                  faults="ping_flood:30@c0/4", ledger=True))
        await sim.start()
        sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="pwrite")),
                    commit_records=50)
        sink.start()
        settings = ConnSettings(backoff_initial_s=0.05, max_write_buffer_bytes=256 << 10,
                                ack_timeout_s=5)
        feed = FeedState(ADVANCED_TRADE, "0", {"ticker": ["BTC-USD"], "heartbeats": []},
                         retry=settings.retry_policy())
        conn = Connection("0", sim.ws_url, feed, sink, SlidingWindowLimiter(8), settings)
        conn.start()
        try:
            await _until(lambda: conn.stats.reconnects >= 1 and conn.stats.messages > 60,
                         30, lambda: None)
        finally:
            await conn.stop()
            await sim.stop()
            sink.close()
        return conn, sim

    conn, sim = asyncio.run(go())
    assert conn.stats.reconnects >= 1
    got = read_streams(tmp_path)
    first = _reasons(got)[0]
    assert "outgoing buffer over 262144 bytes" in first and "ping flood" in first, first
    assert sim.ledger is not None
    assert [f["fault"] for f in sim.ledger.faults(0)] == ["ping_flood"]
    assert markers(got[TICKER], RecordKind.RECONNECT)


def test_a_tcp_connect_that_never_completes_ends_at_the_deadline(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A listening socket whose accept backlog is full drops every further SYN: the TCP
    connect itself hangs (picows times only the upgrade after it). The connection's own
    deadline ends each attempt and the next one follows."""
    caplog.set_level(logging.WARNING, logger="logger.connection")
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the backlog
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)

    async def go() -> float:
        sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="pwrite")))
        sink.start()
        feed = FeedState(ADVANCED_TRADE, "0", {"ticker": ["BTC-USD"]})
        settings = ConnSettings(connect_timeout_s=0.5, backoff_initial_s=0.05,
                                backoff_max_s=0.1)
        conn = Connection("0", f"ws://127.0.0.1:{port}/", feed, sink,
                          SlidingWindowLimiter(8), settings)
        conn.start()
        await asyncio.sleep(1.8)
        t0 = time.monotonic()
        await conn.stop()
        sink.close()
        return time.monotonic() - t0

    try:
        assert asyncio.run(go()) < 1.0
    finally:
        for c in fillers:
            c.close()
        srv.close()
    failed = [r.getMessage() for r in caplog.records if "event=connect_failed" in r.getMessage()]
    assert len(failed) >= 2, failed
    assert all("no connection within 0.5 s" in m for m in failed), failed
