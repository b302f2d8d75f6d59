"""The connection shell against a scripted WebSocket server on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from runtime_support import data_only, markers, read_streams
from wsserver import ScriptedServer, Session, at_ack, at_frame, frame

from logger.connection import Connection, ConnSettings
from logger.protocol import ADVANCED_TRADE, FeedState
from logger.protocol.feed import RouterFactory
from logger.protocol.route_at import AdvancedTradeRouter
from logger.protocol.routes import RouteTable
from logger.ratelimit import SlidingWindowLimiter
from logger.sink import Sink
from storage import Engine, EngineConfig, RecordKind

TICKER = ("BTC-USD", "ticker")
UNROUTED = ("_conn0", "_unrouted")
FAST = ConnSettings(backoff_initial_s=0.05, backoff_max_s=0.2, rate_limited_pause_s=0.2,
                    watchdog_s=30, ack_timeout_s=5)


async def _subscribed(s: Session, seq0: int = 0) -> int:
    """Read the two subscribe frames (heartbeats, ticker) and ack them; next sequence_num."""
    subs: dict[str, list[str]] = {}
    for i in range(2):
        msg = json.loads(await s.read_frame())
        assert msg["type"] == "subscribe"
        subs[msg["channel"]] = msg.get("product_ids", [msg["channel"]])
        s.send(frame(at_ack(seq0 + i, subs)))
    return seq0 + 2


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.02)


Stored = dict[tuple[str, str], list[tuple[int, int, bytes]]]


def _run(tmp: Path, scripts: list[Callable[[Session], object]],
         done: Callable[[Connection, ScriptedServer], bool], settings: ConnSettings = FAST,
         reject_first: int = 0, router: RouterFactory | None = None,
         ) -> tuple[Connection, ScriptedServer, Stored]:
    sink = Sink(lambda: Engine(EngineConfig(root=tmp, backend="pwrite")), commit_records=50)
    sink.start()
    feed = FeedState(ADVANCED_TRADE, "0", {"ticker": ["BTC-USD"]},
                     retry=settings.retry_policy(), router=router)

    async def go() -> tuple[Connection, ScriptedServer]:
        async with ScriptedServer(scripts, reject_first) as srv:  # type: ignore[arg-type]
            conn = Connection("0", srv.url, feed, sink, SlidingWindowLimiter(8), settings)
            conn.start()
            try:
                await _until(lambda: done(conn, srv))
            finally:
                await conn.stop()
            return conn, srv

    conn, srv = asyncio.run(go())
    sink.close()
    return conn, srv, read_streams(tmp)


def test_malformed_binary_and_fragmented_frames_are_kept_and_never_crash(tmp_path: Path
                                                                         ) -> None:
    good = [at_frame(2), at_frame(3), at_frame(4)]
    bad_json = b'{"channel":"ticker", this is not json'

    async def script(s: Session) -> None:
        await _subscribed(s)
        s.send(frame(good[0]))
        s.send(frame(b"\x00\x01binary", opcode=2))
        s.send(frame(bad_json))
        third = len(good[1]) // 3
        s.send(frame(good[1][:third], opcode=1, fin=False))
        s.send(frame(b"ping", opcode=9))  # a control frame between fragments is legal
        s.send(frame(good[1][third:2 * third], opcode=0, fin=False))
        s.send(frame(good[1][2 * third:], opcode=0, fin=True))
        s.send(frame(good[2]))
        s.send(frame(b"\x03\xe8", opcode=8))  # close 1000
        await s.drain()
        await asyncio.sleep(5)

    conn, _, got = _run(tmp_path, [script, script],
                        lambda c, srv: c.stats.messages >= 7 and not c.stats.connected)
    assert data_only(got[TICKER]) == good
    assert data_only(got[UNROUTED]) == [b"\x00\x01binary", bad_json]
    assert conn.stats.unrouted == 2
    reasons = [json.loads(p)["reason"] for p in markers(got[TICKER], RecordKind.DISCONNECT)]
    assert reasons[0].startswith("server close 1000")


def test_sequence_gap_writes_gap_marker(tmp_path: Path) -> None:
    async def script(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        s.send(frame(at_frame(seq + 3)))  # two frames lost
        await s.drain()
        await asyncio.sleep(5)

    conn, _, got = _run(tmp_path, [script], lambda c, srv: c.stats.messages >= 4)
    gaps = [json.loads(p) for p in markers(got[TICKER], RecordKind.GAP)]
    assert len(gaps) == 1
    assert (gaps[0]["first_missing_sequence_num"], gaps[0]["last_missing_sequence_num"]) == (3, 4)
    assert conn.stats.gaps == 1


def test_http_429_on_connect_backs_off_and_retries(tmp_path: Path) -> None:
    async def script(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        await s.drain()
        await asyncio.sleep(5)

    conn, srv, got = _run(tmp_path, [script], lambda c, srv: c.stats.messages >= 3,
                          reject_first=2)
    assert srv.rejected == 2 and srv.accepted == 1
    assert data_only(got[TICKER]) == [at_frame(2)]
    assert conn.limiter._blocked_until > 0  # the shared open limiter was paused


def test_silent_connection_is_reconnected_by_the_watchdog(tmp_path: Path) -> None:
    async def silent(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        await s.drain()
        await asyncio.sleep(30)  # connection open, nothing sent

    async def healthy(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq, product="BTC-USD")))
        await s.drain()
        await asyncio.sleep(30)

    settings = ConnSettings(backoff_initial_s=0.05, watchdog_s=1.0, ack_timeout_s=5)
    conn, _, got = _run(tmp_path, [silent, healthy],
                          lambda c, srv: srv.accepted == 2 and c.stats.messages >= 6,
                          settings=settings)
    reasons = [json.loads(p)["reason"] for p in markers(got[TICKER], RecordKind.DISCONNECT)]
    assert reasons[0].startswith("watchdog")
    assert markers(got[TICKER], RecordKind.RECONNECT)
    assert conn.stats.reconnects == 1
    assert len(data_only(got[TICKER])) == 2


def test_oversize_frame_closes_and_reconnects_without_buffering_it(tmp_path: Path) -> None:
    async def huge(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        s.send(frame(b'{"channel":"l2_data",' + b" " * (2 << 20) + b"}"))
        await s.drain()
        await asyncio.sleep(30)

    async def fragmented_huge(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        for _ in range(3):  # each fragment fits, the message does not
            s.send(frame(b" " * (700 << 10), opcode=1 if _ == 0 else 0, fin=False))
        await s.drain()
        await asyncio.sleep(30)

    async def fine(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        await s.drain()
        await asyncio.sleep(30)

    settings = ConnSettings(backoff_initial_s=0.05, max_frame_bytes=1 << 20, ack_timeout_s=5)
    conn, _, got = _run(tmp_path, [huge, fragmented_huge, fine],
                          lambda c, srv: srv.accepted == 3 and c.stats.messages >= 9,
                          settings=settings)
    assert len(data_only(got[TICKER])) == 3
    assert len(markers(got[TICKER], RecordKind.DISCONNECT)) >= 2
    assert conn.stats.reconnects == 2


class _Buggy(AdvancedTradeRouter):
    """A protocol core that raises on one frame: the shell must keep the frame and the socket.
    The real router, its per-frame function wrapped (passed as the feed's ``router``)."""

    def __init__(self, feed: FeedState, table: RouteTable) -> None:
        super().__init__(feed, table)
        route = self.on_message

        def on_message(raw: bytes) -> tuple[str, str]:
            if b"boom" in raw:
                raise RuntimeError("protocol bug")
            return route(raw)

        self.on_message = on_message


def test_a_routing_exception_keeps_the_frame_and_the_connection(tmp_path: Path) -> None:
    boom = b'{"boom":1}'

    async def script(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(boom))
        s.send(frame(at_frame(seq)))
        await s.drain()
        await asyncio.sleep(30)

    conn, srv, got = _run(tmp_path, [script], lambda c, srv: c.stats.messages >= 3,
                          router=_Buggy)
    assert data_only(got[UNROUTED]) == [boom]
    assert data_only(got[TICKER]) == [at_frame(2)]
    assert srv.accepted == 1 and conn.stats.route_errors == 1
