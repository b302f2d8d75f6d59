"""One WebSocket connection: the I/O shell around a sans-I/O ``FeedState``.

Why picows: ``bench/ws_client.py`` measures it against websockets 13.1 on this load (many
small frames plus 5 MB snapshots); picows delivers each frame to a callback with no per-frame
future, task or queue, at several times less CPU per message. The choice stays behind this
module and its compiled fast path (``logger.listen``, which wraps ``_Listener`` in a Cython
subclass of picows' ``WSListener`` where built): nothing else imports picows.

The hot path (``_Listener.on_ws_frame``) does, per text frame: one ``time.time_ns()``, one
``bytes`` copy of the payload (the object storage keeps), ``FeedState.on_message`` for the
route, and the sink's receive step (``Sink.receiver``: one dict lookup by the route, two list
appends, two slot-int increments of this connection's counters of the channel, read by
metrics at scrape time, and two int increments). The sink is the one owner of buffering: no
buffer or storage type is touched here. Everything else — actions (markers, resubscribe,
reconnect), the watchdog, the ack timer, backoff — runs on rare events or on a 1 s timer. The
watchdog compares message counts between ticks instead of stamping each message with a clock.

Nothing a venue does makes a connection hold more than a bounded amount of memory or wait
without a deadline (docs/RUNTIME.md, Memory a venue can make one connection use): frames and
reassembled messages stop at ``max_frame_bytes``; pings are answered here (not by picows'
auto-pong) into an outgoing buffer whose high-water mark is ``max_write_buffer_bytes``, and
passing it drops the connection; connect and close each have a deadline. Protocol errors,
closes and drops end in one log line and a DISCONNECT marker naming the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from logger import listen
from logger.metrics import ConnStats
from logger.pacing import Backoff, Pacer
from logger.protocol import (
    UNROUTED,
    Acknowledged,
    Action,
    FeedState,
    Marker,
    Reconnect,
    Refused,
    Send,
    ServerError,
    Settled,
    conn_stream,
)
from logger.protocol.actions import (
    MarkerKind,
    RetrySubscribe,
    SubscribeGivenUp,
    SubscribeRecovered,
)
from logger.protocol.dialects import split_opening_frames
from logger.protocol.retry import RetryPolicy
from logger.ratelimit import DataPhase, OpeningSlots, SlidingWindowLimiter
from logger.sink import Sink

log = logging.getLogger("logger.connection")

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONT = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_PING = WSMsgType.PING
_time_ns = time.time_ns

_RETRY = RetryPolicy()
"""The subscribe-retry defaults are the protocol core's (one owner)."""


@dataclass(frozen=True)
class ConnSettings:
    """Per-connection knobs (from the config; defaults suit the real venue)."""

    max_frame_bytes: int = 64 << 20  # the config default (connections.max_frame_bytes)
    """Largest frame/message accepted: >4 MB snapshots fit, a hostile server cannot make us
    buffer more than this per connection (picows closes with 1009 above it)."""
    watchdog_s: float = 30.0
    """No message for this long (heartbeats arrive every second) → reconnect."""
    ack_timeout_s: float = _RETRY.ack_timeout_s
    """Subscriptions not acknowledged by then are settled as refused/missing."""
    subscribe_retries: int = _RETRY.attempts
    """Times each unacknowledged (channel, product) is subscribed again; 0 = never."""
    retry_base_s: float = _RETRY.base_s
    """Wait before the first subscribe retry round; doubles per round up to ``retry_max_s``."""
    retry_max_s: float = _RETRY.max_s
    """Longest wait between subscribe retry rounds."""
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.5
    backoff_reset_s: float = 60.0
    """A connection that stayed up this long starts the next backoff from the beginning."""
    rate_limited_pause_s: float = 2.0
    """HTTP 429 on connect: nobody opens for this long (shared limiter)."""
    receive_buffer_bytes: int = 8 << 20
    max_write_buffer_bytes: int = 4 << 20
    """Largest outgoing backlog (pongs, subscribe frames) kept in user space: a peer that
    floods pings and does not read the pongs is dropped past it (bounded memory)."""
    close_timeout_s: float = 2.0
    """A graceful close not finished by then is aborted (a peer that does not read)."""

    def retry_policy(self) -> RetryPolicy:
        """The protocol core's subscribe-retry policy from these settings: the ``retry`` of
        the connection's ``FeedState``, which is fixed when the feed is built."""
        return RetryPolicy(self.subscribe_retries, self.retry_base_s, self.retry_max_s,
                           self.ack_timeout_s)


_SENDABLE_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                             1013, 1014))
"""Close codes an endpoint may put on the wire (RFC 6455 7.4.1, IANA registry); 1005, 1006
and 1015 are for reporting only, 3000–4999 are registered/private and echoed as well."""


def close_code_value(code: object) -> int:
    """picows hands a ``WSCloseCode`` for known codes and an int for the others; a close
    without a code (picows' ``NO_INFO``, 0) is reported as 1005, as RFC 6455 names it."""
    value = getattr(code, "value", code)
    value = int(value) if isinstance(value, int) else 0
    return value or 1005


def reply_close_code(code: int) -> WSCloseCode:
    """The code echoed to a server's close: its own when that may be sent, else 1000 (a
    missing code, a reserved one such as 1006 or one past 4999 is never sent back)."""
    if code in _SENDABLE_CLOSE:
        return WSCloseCode(code)
    if 3000 <= code <= 4999:  # not enum members; picows' send_close takes the int
        return cast(WSCloseCode, code)
    return WSCloseCode.OK


def _quiet_picows() -> None:
    """picows logs each protocol error (and every disconnect) itself; the connection logs one
    line per disconnect with the reason, so picows' own lines would only repeat it."""
    logging.getLogger("picows").setLevel(logging.CRITICAL)


def handshake_reason(transport: WSTransport | None) -> str:
    """Why a socket went that we did not close ourselves: the close handshake says (a close
    from the venue, or the protocol error picows closed with), else the connection was lost."""
    hs = transport.close_handshake if transport is not None else None
    if hs is not None and hs.recv is not None:
        return f"server close {close_code_value(hs.recv.code)} {hs.recv.reason!r}"
    if hs is not None and hs.sent is not None:
        return (f"protocol error: closed with {close_code_value(hs.sent.code)} "
                f"{hs.sent.reason!r}")
    return "connection lost"


async def _collect(transport: WSTransport) -> None:
    """Await the transport's end and drop its exception: after a protocol error picows sets
    one on a future nobody else awaits, and asyncio would log "Future exception was never
    retrieved" with a traceback; the cause is already in the DISCONNECT marker and log line."""
    with contextlib.suppress(Exception):
        await transport.wait_disconnected()


class _Listener(WSListener):
    """picows callbacks; the per-frame path is kept to the minimum."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        feed = conn.feed
        self._on_message = feed.on_message
        self._feed = feed
        self._sink = conn.sink
        self._stats = conn.stats
        self._unrouted = conn.unrouted_key
        # the sink's receive step for this connection: buffers the message in its stream and
        # counts it on this connection's per-channel counters (``Sink.receiver``)
        self._receive = conn.sink.receiver(self._unrouted, conn.stats.channel)
        self._frag: bytearray | None = None
        self._frag_text = True
        self._max = conn.settings.max_frame_bytes

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.conn.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        ts = _time_ns()
        mt = frame.msg_type
        if mt is _TEXT and frame.fin and self._frag is None:
            raw = frame.get_payload_as_bytes()
            try:
                route = self._on_message(raw)
            except Exception:  # a protocol-core bug must not cost the frame or the socket
                route = self._route_failed(raw)
            if self._feed.actions:  # markers this frame revealed (a GAP) go before it
                self.conn.run_actions(ts)
            self._receive(route, ts, raw)
            return
        self._rare_frame(transport, frame, mt, ts)

    def _route_failed(self, raw: bytes) -> tuple[str, str]:
        self._stats.route_errors += 1
        if self._stats.route_errors <= 10:
            log.exception("event=route_error conn=%s len=%d head=%r", self.conn.conn_id,
                          len(raw), raw[:80])
        return self._unrouted

    def _rare_frame(self, transport: WSTransport, frame: WSFrame, mt: WSMsgType, ts: int) -> None:
        """Binary, fragmented and control frames: kept raw, never a crash."""
        if mt is _TEXT or mt is _BINARY:
            if self._frag is not None:  # a new message while one is unfinished: keep both
                self._store_unrouted(bytes(self._frag), ts)
                self._frag = None
            if not frame.fin:
                self._frag = bytearray(frame.get_payload_as_memoryview())
                self._frag_text = mt is _TEXT
                return
            raw = frame.get_payload_as_bytes()
            if mt is _TEXT:
                self._deliver(raw, ts)
            else:
                self._store_unrouted(raw, ts)
        elif mt is _CONT:
            if self._frag is None:
                self._store_unrouted(frame.get_payload_as_bytes(), ts)
                return
            self._frag += frame.get_payload_as_memoryview()
            if len(self._frag) > self._max:
                self._frag = None
                log.warning("event=oversize_message conn=%s limit=%d", self.conn.conn_id,
                            self._max)
                self.conn.close_reason = "oversize message"
                transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
                transport.disconnect()
                return
            if frame.fin:
                raw = bytes(self._frag)
                self._frag = None
                if self._frag_text:
                    self._deliver(raw, ts)
                else:
                    self._store_unrouted(raw, ts)
        elif mt is _CLOSE:
            code = close_code_value(frame.get_close_code())
            message = frame.get_close_message() or b""
            self.conn.close_reason = (f"server close {code} "
                                      f"{message[:123].decode('utf-8', 'replace')!r}")
            transport.send_close(reply_close_code(code))
            transport.disconnect()
        elif mt is _PING and not self.conn.close_reason:  # closing: no more pongs
            self.conn.pings += 1
            transport.send_pong(frame.get_payload_as_bytes())
        # PONG needs nothing

    def pause_writing(self) -> None:
        """asyncio: the outgoing buffer passed ``max_write_buffer_bytes`` (the high-water
        mark set at connect). The venue only ever gets subscribe frames and pongs from us, so
        this is a peer that does not read what it asks for (a ping flood): drop it."""
        self.conn.write_overflow()

    def resume_writing(self) -> None:
        """Nothing to resume: the connection is dropped at the first pause."""

    def _deliver(self, raw: bytes, ts: int) -> None:
        try:
            route = self._on_message(raw)
        except Exception:
            route = self._route_failed(raw)
        if self._feed.actions:
            self.conn.run_actions(ts)
        self._receive(route, ts, raw)

    def _store_unrouted(self, raw: bytes, ts: int) -> None:
        self._stats.raw_frames += 1
        self._receive(self._unrouted, ts, raw)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.conn.on_disconnected()


class Connection:
    """Keeps one feed connection alive until ``stop()``: connect, subscribe, watch, reconnect."""

    def __init__(
        self,
        conn_id: str,
        url: str,
        feed: FeedState,
        sink: Sink,
        limiter: SlidingWindowLimiter,
        settings: ConnSettings | None = None,
        on_settled: Callable[[Connection, Settled], None] | None = None,
        message_limiter: SlidingWindowLimiter | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.url = url
        self.feed = feed
        self.sink = sink
        self.limiter = limiter
        self.message_limiter = message_limiter
        self.pacer = Pacer(conn_id, limiter, message_limiter, self.stopping,
                           lambda: self.transport)
        self.settings = settings or ConnSettings()
        if feed.retry_policy != self.settings.retry_policy():
            raise ValueError(f"conn {conn_id}: the feed's {feed.retry_policy} is not the"
                             f" settings' {self.settings.retry_policy()} (build the FeedState"
                             " with retry=settings.retry_policy())")
        self.stats = ConnStats(conn_id, feed.counters)
        self.unrouted_key = (conn_stream(conn_id), UNROUTED)
        self.transport: WSTransport | None = None
        self.close_reason = ""
        self._logged_gap: bytes | None = None
        self._on_settled = on_settled
        self._closed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        s = self.settings
        self.backoff = Backoff(s.backoff_initial_s, s.backoff_max_s, s.backoff_jitter)
        self._watchers: set[asyncio.Task[None]] = set()
        self.settled = asyncio.Event()
        self.pings = 0
        """Pings answered on the current socket (a flood shows in the disconnect reason)."""
        _quiet_picows()

    # ------------------------------------------------------------------ lifecycle
    def stopping(self) -> bool:
        """A method, not an attribute: the flag changes while ``run`` awaits."""
        return self._stopping

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"conn{self.conn_id}")
        return self._task

    async def stop(self) -> None:
        """Close the socket (writes DISCONNECT markers) and end the run loop.

        Bounded: a graceful close waits for the outgoing buffer to drain, which a peer that
        does not read never lets happen, so after ``close_timeout_s`` the socket is aborted;
        the run loop gets as long again before it is cancelled."""
        self._stopping = True
        t = self.transport
        if t is not None and not t.is_disconnected:
            self.close_reason = "shutdown"
            t.send_close(WSCloseCode.GOING_AWAY)
            t.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.settings.close_timeout_s)
            if not t.is_disconnected:
                log.warning("event=close_timeout conn=%s timeout_s=%.1f", self.conn_id,
                            self.settings.close_timeout_s)
                t.disconnect(graceful=False)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task),
                                       self.settings.close_timeout_s + 1.0)
            except TimeoutError:
                self._task.cancel()

    async def run(self) -> None:
        try:
            while not self.stopping():
                slots = await self.pacer.await_open(self.opening_counts())
                if self.stopping():
                    break
                if await self._connect_once(slots):
                    await self._serve()
                if self.stopping():
                    break
                await self._backoff()
        except asyncio.CancelledError:
            self._abort()
            raise

    def plan_opening(self, slots: OpeningSlots, phase: DataPhase | None) -> None:
        """Use ``slots`` (from ``ratelimit.plan_startup``) for the first connection attempt."""
        self.pacer.plan_opening(slots, phase)

    def opening_counts(self) -> tuple[int, int]:
        """(market-data frames, keepalive frames) of this connection's opening subscribe."""
        data, keepalive = split_opening_frames(self.feed.dialect, self.feed.requested)
        return len(data), len(keepalive)

    def send_paced(self, frames: Sequence[bytes], reason: str) -> None:
        """Send frames through the shared message limiter (resubscribe, refresh)."""
        self.pacer.send(frames, reason)

    async def _connect_once(self, opening: OpeningSlots | None) -> bool:
        s = self.settings
        self._closed.clear()
        self.close_reason = ""
        self.pings = 0
        try:
            # one deadline over DNS, TCP, TLS and the upgrade (picows times the upgrade only)
            async with asyncio.timeout(s.connect_timeout_s):
                transport, _ = await ws_connect(
                    lambda: listen.wrap(_Listener(self)), self.url,
                    max_frame_size=s.max_frame_bytes,
                    websocket_handshake_timeout=s.connect_timeout_s,
                    enable_auto_ping=False,
                    enable_auto_pong=False,
                    logger_name=f"conn{self.conn_id}",
                )
        except WSHandshakeError as e:
            status = getattr(getattr(e, "response", None), "status", None)
            if status is not None and int(status) == 429:
                self.limiter.penalize(s.rate_limited_pause_s)
                log.warning("event=connect_rate_limited conn=%s status=429 pause_s=%.1f",
                            self.conn_id, s.rate_limited_pause_s)
            else:
                log.warning("event=connect_failed conn=%s error=%r", self.conn_id, e)
            self.pacer.give_up_phase(opening.data_frames if opening is not None else 0)
            return False
        except (OSError, TimeoutError, WSError) as e:
            error = (f"no connection within {s.connect_timeout_s:g} s"
                     if isinstance(e, TimeoutError) else repr(e))
            log.warning("event=connect_failed conn=%s error=%s", self.conn_id, error)
            self.pacer.give_up_phase(opening.data_frames if opening is not None else 0)
            return False
        self.limiter.record(time.monotonic())  # the open counted against the window
        self.transport = transport
        self._watch(transport)
        transport.underlying_transport.set_write_buffer_limits(high=s.max_write_buffer_bytes)
        self.stats.connected = True
        self.feed.on_connect()
        if self.feed.counters.connects > 1:
            self.stats.reconnects += 1
        self._set_rcvbuf(transport)
        self.settled.clear()
        frames = self.feed.opening_frames()  # market data first, keepalive last
        self.pacer.send_opening(transport, frames, opening)
        self.run_actions()
        log.debug("event=connected conn=%s url=%s", self.conn_id, self.url)
        return True

    async def _serve(self) -> None:
        """Wait for the socket to close; meanwhile tick the protocol core's clock (ack
        timeout, subscribe retries: ``FeedState.poll`` in ``run_actions``) and the watchdog."""
        s = self.settings
        opened = time.monotonic()
        last_count = self.stats.messages
        last_change = opened
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), 1.0)
            now = time.monotonic()
            count = self.stats.messages
            if count != last_count:
                last_count, last_change = count, now
                self.stats.last_message_monotonic = now
            self.run_actions()
            if now - last_change > s.watchdog_s and not self._closed.is_set():
                log.warning("event=watchdog conn=%s silent_s=%.1f", self.conn_id,
                            now - last_change)
                self.close_reason = f"watchdog: no message for {now - last_change:.1f} s"
                t = self.transport
                if t is not None:
                    t.disconnect(graceful=False)
                await self._closed.wait()
        if time.monotonic() - opened >= s.backoff_reset_s:
            self.backoff.reset()

    def _set_rcvbuf(self, transport: WSTransport) -> None:
        """Large kernel receive buffer: bursts wait in the kernel, not at the venue."""
        sock = transport.underlying_transport.get_extra_info("socket")
        if sock is not None and self.settings.receive_buffer_bytes:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                self.settings.receive_buffer_bytes)
            except OSError as e:
                log.debug("event=rcvbuf_failed conn=%s error=%r", self.conn_id, e)

    def _watch(self, transport: WSTransport) -> None:
        """Collect the disconnect exception picows leaves on the transport (``_collect``)."""
        task = asyncio.get_running_loop().create_task(_collect(transport))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def write_overflow(self) -> None:
        """The outgoing buffer passed its limit: drop the socket now (the reconnect follows)."""
        t = self.transport
        if t is None or t.is_disconnected:
            return
        if self.close_reason:  # already closing (shutdown, watchdog …): keep that reason
            t.disconnect(graceful=False)
            return
        limit = self.settings.max_write_buffer_bytes
        what = f"ping flood, {self.pings} pings answered" if self.pings > 100 else \
            f"{self.pings} pings answered"
        self.close_reason = (f"outgoing buffer over {limit} bytes: the venue does not read"
                             f" ({what})")
        t.disconnect(graceful=False)

    def on_disconnected(self) -> None:
        """picows callback: the socket is gone (any reason). Write DISCONNECT markers."""
        if self._closed.is_set():
            return
        self.stats.connected = False
        reason = self.close_reason or handshake_reason(self.transport)
        self.transport = None
        # closed by stop(): a clean stop (STOP markers), anything else a possible loss
        self.feed.on_disconnect(reason, clean=self._stopping and reason == "shutdown")
        self.run_actions()
        if not self._stopping:
            log.warning("event=disconnected conn=%s reason=%r", self.conn_id, reason)
        self._closed.set()

    def _abort(self) -> None:
        t = self.transport
        if t is not None and not t.is_disconnected:
            t.disconnect(graceful=False)

    async def _backoff(self) -> None:
        await self.pacer.sleep_until(time.monotonic() + self.backoff.next())

    # ------------------------------------------------------------------ feed actions
    def run_actions(self, ts_ns: int = 0) -> None:
        """Tick the protocol core's clock and execute what it asked for, in order (rare
        path: after frames that produced actions, at connect and once a second).

        ``ts_ns``: the receive time of the frame that produced the actions. Its markers
        carry that time and are stored before it (a GAP goes before the frame that revealed
        it, where the missing frames were), so time never goes back in a stream."""
        feed = self.feed
        feed.poll(time.monotonic())
        while actions := feed.drain():
            for a in actions:
                self._run_action(a, ts_ns or _time_ns())
            feed.poll(time.monotonic())  # a settle arms a retry round: stamp it now

    def _run_action(self, a: Action, ts_ns: int) -> None:
        """Execute one of the core's actions (``logger.protocol.actions``), in order."""
        match a:
            case Marker():
                self._write_marker(a, ts_ns)
            case Send(frames=frames, reason=reason):
                self.send_paced(frames, reason)
            case Reconnect(reason=reason):
                log.warning("event=reconnect_requested conn=%s reason=%r", self.conn_id, reason)
                t = self.transport
                self.close_reason = reason
                if t is not None and not t.is_disconnected:
                    t.disconnect(graceful=False)
            case Acknowledged(channel=channel, added=added, removed=removed):
                log.debug("event=ack conn=%s channel=%s added=%d removed=%d", self.conn_id,
                          channel, len(added), len(removed))
            case Refused(channel=channel, product=product, reason=reason):
                self.stats.refused_products += 1
                log.warning("event=refused conn=%s channel=%s product=%s reason=%r",
                            self.conn_id, channel, product, reason)
            case ServerError(message=message, reason=reason):
                self.stats.errors += 1
                log.warning("event=server_error conn=%s message=%r reason=%r", self.conn_id,
                            message, reason)
            case Settled(acknowledged=acknowledged):
                self.stats.acked_products = len({p for ps in acknowledged.values() for p in ps})
                self.settled.set()
                if self._on_settled is not None:
                    self._on_settled(self, a)
            case RetrySubscribe(frames=frames, missing=missing, attempt=attempt):
                products = sum(len(ps) for ps in missing.values())
                log.warning("event=subscribe_retry conn=%s attempt=%d channels=%s products=%d"
                            " frames=%d", self.conn_id, attempt, ",".join(missing),
                            products, len(frames))
                self.send_paced(frames, f"subscribe retry {attempt}")
            case SubscribeRecovered(channel=channel, products=products, retries=retries):
                log.info("event=subscribe_recovered conn=%s channel=%s products=%d retries=%d",
                         self.conn_id, channel, len(products), retries)
            case SubscribeGivenUp(channel=channel, products=products, retries=retries):
                log.warning("event=subscribe_given_up conn=%s channel=%s products=%d"
                            " retries=%d", self.conn_id, channel, len(products), retries)

    def _write_marker(self, a: Marker, ts_ns: int) -> None:
        key = (a.product, a.channel)
        if a.kind is MarkerKind.STOP and key not in self.sink.streams:
            return  # nothing written to it this run: no file just to say "stopped"
        self.sink.mark_event(key, a.kind, ts_ns, a.payload)
        if a.kind is MarkerKind.GAP and a.payload is not self._logged_gap:
            self._log_gap(a)

    def _log_gap(self, a: Marker) -> None:
        """One WARNING per gap (a data loss), not per stream it was marked in: a connection
        gap marks every stream of the connection with the same payload object."""
        self._logged_gap = a.payload
        try:
            info = json.loads(a.payload)
        except ValueError:
            info = {}
        scope = info.get("scope", "product")
        log.warning("event=gap conn=%s scope=%s product=%s channel=%s missing=%s",
                    self.conn_id, scope, a.product if scope == "product" else "*",
                    a.channel if scope == "product" else "*",
                    info.get("missing_frames", info.get("missing_trades")))
