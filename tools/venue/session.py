"""One client connection of the venue: HTTP/upgrade handling, framing, the send path, faults.

`VenueProtocol` is the asyncio protocol of every accepted socket. It answers plain HTTP
(REST products) and the WebSocket upgrade, then hands text messages to the venue
(`Simulator` or `ReplayServer`, both `Venue`). `Session` is the upgraded connection: frames are
appended to a list and written with one ``transport.write`` per batch (`flush`), each frame
numbered (``i``) and, when a ledger is kept, hashed into it. Faults scheduled for the
connection fire from the send path when the frame index reaches them.
"""

from __future__ import annotations

import asyncio
import collections
import time
import urllib.parse
from collections.abc import Iterable
from typing import Protocol, cast

from tools.venue import dialect_at, dialect_exchange, wsframe
from tools.venue.events import Event
from tools.venue.faults import FaultSchedule, FaultSpec, fault_frame, frame_faults
from tools.venue.ledger import Ledger
from tools.venue.limits import CONNECTING_TOO_FAST, Limits
from tools.venue.product import ProductState, Stamp
from tools.venue.subs import Subs

_text_header = wsframe.text_header
#: text-frame headers for payload lengths up to 8 KiB (most frames), built once (hot path)
_HDR = {n: wsframe.text_header(n) for n in range(1 << 13)}
#: 256 pings of 125 bytes (the largest control payload), written at once by ``ping_flood``
_PING_BURST = (wsframe.header(wsframe.OP_PING, 125) + b"p" * 125) * 256


def rest_path(dialect: str) -> str:
    """The products endpoint a client of ``dialect`` asks (the venue's ``rest_url``)."""
    return dialect_at.REST_PATH if dialect == "advanced_trade" else dialect_exchange.REST_PATH


def rest_products(path: str, states: Iterable[ProductState],
                  query: dict[str, list[str]]) -> bytes | None:
    """Either dialect's product list, whichever the venue speaks; None: not a products path."""
    if path.rstrip("/") == dialect_at.REST_PATH:
        return dialect_at.rest_products(states, query)
    if path.rstrip("/") == dialect_exchange.REST_PATH:
        return dialect_exchange.rest_products(states, query)
    return None


class Listening:
    """The addresses a venue serves on once started (``host`` from its config, the bound
    ``port``) and the listening socket behind them: shared by the live simulator and the
    replay server, which are ``Venue``s."""

    host: str
    port: int
    dialect: str
    ledger: Ledger | None
    _server: asyncio.Server | None = None

    async def listen(self, host: str, port: int) -> None:
        """Serve ``VenueProtocol`` on ``host:port``; ``port`` becomes the bound one (0: any)."""
        venue = cast(Venue, self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: VenueProtocol(venue), host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """Stop serving and close the ledger (the caller ends its connections first)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self.ledger is not None:
            self.ledger.close()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}{rest_path(self.dialect)}"


class Venue(Protocol):
    """What `VenueProtocol` needs from the server behind it."""

    limits: Limits
    ledger: Ledger | None
    dialect: str
    inbox: Inbox

    def allow_open(self) -> bool: ...
    def open_session(self, transport: asyncio.Transport) -> Session: ...
    def rest(self, path: str, query: dict[str, list[str]]) -> bytes | None: ...
    def rest_delay(self) -> float | None: ...
    def on_text(self, s: Session, data: bytes) -> None: ...
    def on_closed(self, s: Session) -> None: ...
    def fault_product(self, s: Session) -> str: ...


class Session:
    """An upgraded WebSocket connection and its per-connection counters."""

    def __init__(self, venue: Venue, conn_id: int, transport: asyncio.Transport,
                 faults: list[FaultSpec]) -> None:
        self.venue = venue
        self.id = conn_id
        self.transport = transport
        self.at = venue.dialect == "advanced_trade"
        self.ledger = venue.ledger
        self.i = 0
        self.seq = 0
        self.subs: Subs = {}
        self.parts: list[bytes] = []
        self.faults = FaultSchedule(frame_faults(faults), conn_id)
        self._flood: asyncio.Task[None] | None = None
        self.next_fault = self.faults.next_at
        self.blocked = False
        self.closed = False
        self.subscribed = False
        self.drop_seq = 0
        self.paused_since: float | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.timer: asyncio.TimerHandle | None = None
        #: when the bytes being handled were read off the socket (the message-rate clock)
        self.read_at = 0.0
        self._stamp = Stamp()

    # -- send path ------------------------------------------------------------------------
    def send_event(self, ev: Event) -> None:
        """Queue one generated frame (hot path: a few bytes operations, no syscall)."""
        if self.blocked:
            return
        if self.i >= self.next_fault and self._fire_faults():
            return
        if self.at:
            # No payload concatenation: header, head, number and tail go to the write list
            # and are joined once per flush.
            seq = self.seq
            self.seq = seq + 1
            sq = b"%d" % seq
            head, tail = ev[3], ev[4]
            n = len(head) + len(sq) + len(tail)
            self.parts += (_HDR.get(n) or _text_header(n), head, sq, tail)
            if self.ledger is not None:
                self.ledger.frame_parts(self.id, self.i, ev[1], ev[2], seq, (head, sq, tail), n)
            self.i += 1
            return
        payload = ev[3]
        eseq = ev[5]
        if self.drop_seq and eseq is not None:
            self.drop_seq -= 1
            if self.ledger is not None:
                self.ledger.fault(self.id, "seq_skip", self.i, product=ev[2][0],
                                  channel=ev[1], seq=eseq)
            return
        n = len(payload)
        self.parts += (_HDR.get(n) or _text_header(n), payload)
        if self.ledger is not None:
            self.ledger.frame(self.id, self.i, ev[1], ev[2], eseq, payload)
        self.i += 1

    def send_raw(self, payload: bytes, channel: str, products: tuple[str, ...] = (),
                 seq: int | None = None, opcode: int = wsframe.OP_TEXT) -> None:
        """Queue a frame that is not a generated event (errors, fault frames, replay)."""
        if self.blocked:
            return
        self.parts.append(wsframe.header(opcode, len(payload)))
        self.parts.append(payload)
        if self.ledger is not None:
            self.ledger.frame(self.id, self.i, channel, products, seq, payload)
        self.i += 1

    def flush(self) -> None:
        """Write everything queued with one syscall; enforce the send-buffer limit."""
        if not self.parts:
            return
        if self.closed:
            self.parts.clear()
            return
        self.transport.write(b"".join(self.parts))
        self.parts.clear()
        lim = self.venue.limits
        if lim.enabled and self.transport.get_write_buffer_size() > lim.send_buffer_bytes:
            self.drop_slow()

    def drop_slow(self) -> None:
        """The venue's answer to a client that stopped reading: drop the connection."""
        if self.closed:
            return
        if self.ledger is not None:
            self.ledger.event(self.id, "slow_consumer", self.i,
                              unsent_bytes=self.transport.get_write_buffer_size())
        self.closed = self.blocked = True
        self.transport.abort()

    def close(self, code: int, reason: str = "") -> None:
        """Send pending frames and a close frame, then close the TCP connection."""
        if self.closed:
            return
        self.parts.append(wsframe.close_frame(code, reason))
        self.flush()
        self.closed = self.blocked = True
        self.transport.close()

    # -- faults ---------------------------------------------------------------------------
    def _fire_faults(self) -> bool:
        """Fire the faults due at the current index; True if the frame must not be sent."""
        # A fault that sends a frame advances `i`, which may make the next fault due.
        while self.i >= self.faults.next_at and not self.blocked:
            for spec in self.faults.due(self.i):
                if not self._fire(spec):
                    break
        self.next_fault = self.faults.next_at
        return self.blocked

    def _fire(self, spec: FaultSpec) -> bool:
        """Fire one fault; False once the connection is closed or stalled."""
        led = self.ledger
        i = self.i
        kind = spec.kind
        if kind == "seq_skip":
            n = int(spec.arg or 1)
            if self.at:
                if led is not None:
                    led.fault(self.id, kind, i, skipped_from=self.seq, skipped_to=self.seq + n - 1)
                self.seq += n
            else:
                self.drop_seq += n  # one fault line per frame actually withheld
        elif kind == "close":
            code = int(spec.arg or 1000)
            if led is not None:
                led.fault(self.id, kind, i, code=code)
            self.close(code)
        elif kind == "abnormal_close":
            if led is not None:
                led.fault(self.id, kind, i)
            self.flush()
            self.closed = self.blocked = True
            self.transport.close()  # TCP FIN after the buffered frames, no close frame: 1006
        elif kind == "ping_flood":
            secs = float(spec.arg or 10.0)
            if led is not None:
                led.fault(self.id, kind, i, seconds=secs)
            if self._flood is None or self._flood.done():
                self._flood = asyncio.get_running_loop().create_task(self._ping_flood(secs))
        elif kind == "stall":
            secs = float(spec.arg or 2.0)
            if led is not None:
                led.fault(self.id, kind, i, seconds=secs)
            self.flush()
            self.blocked = True
            asyncio.get_running_loop().call_later(secs, self._unstall)
        else:
            ff = fault_frame(spec, self.venue.dialect, self.seq, self._stamp.ns(time.time_ns()),
                             self.venue.fault_product(self))
            if led is not None:
                led.fault(self.id, kind, i, arg=spec.arg, len=len(ff.payload),
                          products=list(ff.products))
            if self.at and ff.seq is not None:
                self.seq += 1
            self.send_raw(ff.payload, ff.channel, ff.products, ff.seq, ff.opcode)
        return not self.blocked

    def _unstall(self) -> None:
        if not self.closed:
            self.blocked = False

    async def _ping_flood(self, seconds: float) -> None:
        """Pings as fast as the client takes them, for ``seconds``, not reading its pongs
        (a venue that never drains them: the client's outgoing buffer is what grows). The
        data frames keep flowing between the bursts, each frame whole."""
        burst = _PING_BURST
        end = time.monotonic() + seconds
        self.transport.pause_reading()
        try:
            while not self.closed and time.monotonic() < end:
                await self.writable.wait()
                if _is_closed(self):  # closed while waiting
                    break
                self.flush()
                self.transport.write(burst)
                await asyncio.sleep(0)
        finally:
            if not _is_closed(self):
                self.transport.resume_reading()


def _is_closed(s: Session) -> bool:
    """A call, not an attribute read, because handlers called just before may close `s`."""
    return s.closed


_PROTOCOL_ERROR = -1
"""``Inbox`` op of an unparsable client stream (the payload is the error)."""


class Inbox:
    """Client frames of all of a venue's connections, handled one per loop iteration.

    Why: handling one subscribe can take tens of milliseconds (a level2 snapshot per book).
    Handled as soon as read, it would hold back the reading of every other socket, and a
    message arriving meanwhile would be stamped late: the per-IP message rate would then
    count the venue's own slowness against the client. Here frames are read and stamped at
    once (``VenueProtocol._ws_data``) and handled in arrival order, one per event-loop
    iteration (a timer: the loop reads ready sockets before running due timers), so every
    stamp is within one handler of the frame's arrival.
    """

    def __init__(self) -> None:
        self._items: collections.deque[
            tuple[VenueProtocol, float, int, bytes | wsframe.WSProtocolError]] = \
            collections.deque()
        self._scheduled = False

    def put(self, proto: VenueProtocol, read_at: float, op: int,
            payload: bytes | wsframe.WSProtocolError) -> None:
        self._items.append((proto, read_at, op, payload))
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._items:
            self._scheduled = True
            asyncio.get_running_loop().call_later(0, self._next)

    def _next(self) -> None:
        self._scheduled = False
        try:
            proto, read_at, op, payload = self._items.popleft()
            proto.handle(read_at, op, payload)
        finally:
            self._schedule()


class VenueProtocol(asyncio.Protocol):
    """HTTP until the upgrade, then WebSocket frames, for one accepted socket."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self._broken = False
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self._head = bytearray()
        self._parser = wsframe.FrameParser(venue.limits.max_inbound_bytes
                                           if venue.limits.enabled else 1 << 40)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self._ws_data(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > wsframe.MAX_REQUEST_BYTES:
                self._http(431, "Request Header Fields Too Large", b"")
            return
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4:])
        self._head.clear()
        try:
            req = wsframe.parse_request(head)
        except wsframe.WSProtocolError as e:
            self._http(400, "Bad Request", e.reason.encode())
            return
        if wsframe.is_upgrade(req):
            session = self._upgrade(req)
            if rest and session is not None:
                self._ws_data(rest)
            return
        url = urllib.parse.urlsplit(req.target)
        body = self.venue.rest(url.path, urllib.parse.parse_qs(url.query))
        if req.method != "GET" or body is None:
            self._http(404, "Not Found", b'{"message":"not found"}')
        elif (delay := self.venue.rest_delay()) is not None:
            self._trickle(wsframe.http_response(200, "OK", body), delay)
        else:
            self._http(200, "OK", body)

    def _trickle(self, answer: bytes, delay: float) -> None:
        """``slow_rest``: the head at once, then one body byte every ``delay`` seconds."""
        assert self.transport is not None
        start = answer.index(b"\r\n\r\n") + 4
        self.transport.write(answer[:start])
        self._drip(answer, start, delay)

    def _drip(self, answer: bytes, at: int, delay: float) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if at >= len(answer):
            t.close()
            return
        t.write(answer[at:at + 1])
        asyncio.get_running_loop().call_later(delay, self._drip, answer, at + 1, delay)

    def _http(self, status: int, reason: str, body: bytes) -> None:
        assert self.transport is not None
        ctype = "text/plain" if status == 429 else "application/json"
        self.transport.write(wsframe.http_response(status, reason, body, ctype))
        self.transport.close()

    def _upgrade(self, req: wsframe.Request) -> Session | None:
        assert self.transport is not None
        venue = self.venue
        if venue.limits.enabled and not venue.allow_open():
            if venue.ledger is not None:
                venue.ledger.event(-1, "connect_refused", 0, reason=CONNECTING_TOO_FAST)
            self._http(429, "Too Many Requests", CONNECTING_TOO_FAST.encode())
            return None
        try:
            answer = wsframe.handshake_response(req)
        except wsframe.WSProtocolError as e:
            self._http(400, "Bad Request", e.reason.encode())
            return None
        self.transport.write(answer)
        self.session = venue.open_session(self.transport)
        return self.session

    def _ws_data(self, data: bytes) -> None:
        """Read and stamp every frame now; handle them through the venue's ``Inbox``."""
        s = self.session
        assert s is not None
        if s.closed or self._broken:
            return
        now = time.monotonic()
        inbox = self.venue.inbox
        try:
            for op, payload in self._parser.feed(data):
                inbox.put(self, now, op, payload)
        except wsframe.WSProtocolError as e:
            self._broken = True  # the stream cannot be parsed past this point
            inbox.put(self, now, _PROTOCOL_ERROR, e)

    def handle(self, read_at: float, op: int, payload: bytes | wsframe.WSProtocolError) -> None:
        """One client frame, in arrival order (called by the ``Inbox``)."""
        s = self.session
        if s is None or _is_closed(s):
            return
        if isinstance(payload, wsframe.WSProtocolError):
            if s.ledger is not None and payload.code == 1009:
                s.ledger.event(s.id, "inbound_too_big", s.i, limit=self._parser.max_size)
            s.close(payload.code, payload.reason)
        elif op == wsframe.OP_TEXT or op == wsframe.OP_BINARY:
            # Some clients (websockets given bytes) send JSON in binary frames.
            s.read_at = read_at
            self.venue.on_text(s, payload)
        elif op == wsframe.OP_PING:
            s.parts.append(wsframe.header(wsframe.OP_PONG, len(payload)) + payload)
            s.flush()
        elif op == wsframe.OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if s.ledger is not None:
                s.ledger.event(s.id, "client_close", s.i, code=code)
            s.close(1000 if code == 1005 else code)

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.paused_since = time.monotonic()
            self.session.writable.clear()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.paused_since = None
            self.session.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        s = self.session
        if s is not None:
            s.closed = s.blocked = True
            if s.timer is not None:
                s.timer.cancel()
            s.writable.set()
            self.venue.on_closed(s)
