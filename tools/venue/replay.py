"""Replay: serve what the daemon recorded as a live Coinbase feed, byte for byte.

A client connects to ``ws_url`` as it would to Coinbase and subscribes in the chosen dialect.
The server answers with the recorded DATA records of the streams it subscribed to — product
streams ``(product, channel)``, the ``_multi`` streams of that channel (``_multi-w<i>`` too,
for a recording made with worker processes), and for shared channels
(``heartbeats``, ``status``, ``heartbeat``) the ``_conn*`` streams — merged in receive-time
order. Pacing: the original gaps between receive times (``speed=1``), divided by a factor
(``speed=10``), or none (``speed=None``, "max").

Two modes. ``venue=True`` (the default, ``tools/simulate replay``) answers like the venue, so
a recorder — this project's daemon included — can record the replay again and get the same
data: every subscribe is acknowledged in the dialect's words (Advanced Trade ``subscriptions``,
Exchange ``type: subscriptions``), each connection numbers its own Advanced Trade
``sequence_num`` from 0 (the recorded values belong to the recorded connections, whose
frames are merged here: kept as they are they would look like gaps), each subscribed stream is
served whole even when its subscribe comes late (a recorder paces its subscribes over
seconds), and a shared channel (``heartbeats``, ``status``) is served from one recorded
connection, not from all of them at once. Everything else is the stored payload.

``venue=False`` (``--exact``) sends exactly the stored payloads: no acks (only error replies
to invalid requests), the recorded ``sequence_num`` values, every recorded connection's
shared streams, and subscriptions arriving within ``settle_s`` of the first one start
together while later ones join at the current replay time.

Either way markers (GAP, DISCONNECT, ...) are not venue frames and are skipped. When every
stream is exhausted the server closes
the connection with 1000 "end of replay" after ``linger_s`` of silence (some clients, e.g.
coinbase-advanced-py, stop delivering buffered messages once a close frame arrives), or keeps
it open with ``at_end="hold"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from storage import CorruptSegment, RecordKind, SegmentRef, iter_segments, open_any
from storage.source import is_remote, list_remote_segments
from tools.venue import dialect_at, dialect_exchange
from tools.venue.frames_at import ATFrames
from tools.venue.frames_exchange import ExchangeFrames
from tools.venue.ledger import Ledger
from tools.venue.limits import Limits
from tools.venue.product import ProductState, build_product
from tools.venue.session import Inbox, Listening, Session, rest_products
from tools.venue.streams import is_conn_stream, is_multi_stream, is_shared_stream
from tools.venue.subs import subs_view

_SHARED = {"heartbeats", "status", "heartbeat"}
_DATA = int(RecordKind.DATA)


def parse_speed(text: str) -> float | None:
    """``max`` → None (no pacing); otherwise a positive factor (``1``, ``10``, ``x10``)."""
    t = text.strip().lower().lstrip("x")
    if t == "max":
        return None
    try:
        v = float(t)
    except ValueError:
        raise ValueError(f"--speed takes 1, 10, any positive factor or max, not {text!r}") from None
    if v <= 0:
        raise ValueError(f"--speed must be positive, not {text!r}")
    return v


@dataclass
class ReplayConfig:
    root: Path
    day: str | dt.date | None = None
    products: list[str] | None = None
    #: pacing factor; None = as fast as the client reads
    speed: float | None = 1.0
    dialect: str = "advanced_trade"
    host: str = "127.0.0.1"
    port: int = 0
    ledger: bool = True
    ledger_path: Path | None = None
    settle_s: float = 0.25
    #: after the last record: "close" (1000 "end of replay", after `linger_s` of silence, so
    #: clients that stop reading at a close frame have drained) or "hold" (stay open, silent)
    at_end: str = "close"
    linger_s: float = 2.0
    #: answer like the venue (acks, per-connection sequence_num, whole streams); False: the
    #: stored bytes exactly (see the module docstring)
    venue: bool = True


_SEQ_KEY = b'"sequence_num":'


def _split_sequence_num(payload: bytes) -> tuple[bytes, bytes] | None:
    """(bytes up to and including ``"sequence_num":``, bytes after its digits) of an
    Advanced Trade envelope, or None when the frame has none (errors, malformed frames)."""
    i = payload.find(_SEQ_KEY)
    if i < 0:
        return None
    start = j = i + len(_SEQ_KEY)
    while j < len(payload) and payload[j] in b"0123456789":
        j += 1
    if j == start:
        return None
    return payload[:start], payload[j:]


def _send(s: Session, key: tuple[str, str], payload: bytes, renumber: bool) -> None:
    """Queue one recorded payload; with ``renumber``, under this connection's own
    ``sequence_num`` (the session numbers it, as the venue does)."""
    product, channel = key
    products = () if is_shared_stream(product) else (product,)
    parts = _split_sequence_num(payload) if renumber else None
    if parts is not None:
        s.send_event((channel, channel, products, parts[0], parts[1], None))
    else:
        s.send_raw(payload, channel, products)


class _Stream:
    """One recorded stream: its segments in order, read lazily one at a time. Damage costs
    this stream the damaged range only (the readers resynchronise; a file that cannot be
    opened at all is skipped): each is told to ``report`` with the file's name."""

    def __init__(self, refs: list[SegmentRef], from_ns: int | None,
                 report: Callable[[str], None] | None = None) -> None:
        self.refs = refs
        self.from_ns = from_ns
        self.report = report or (lambda line: print(f"replay: {line}", file=sys.stderr))

    def records(self) -> Iterator[tuple[int, bytes]]:
        for ref in self.refs:
            try:
                reader = open_any(ref.path)
            except (CorruptSegment, OSError, ValueError) as e:
                self.report(f"skipped unreadable {ref.path}: {e}")
                continue
            for d in reader.damage:
                self.report(f"damaged: {d}")
            reader.on_damage = lambda d: self.report(f"damaged: {d}")
            try:
                for rec in reader.records(self.from_ns):
                    if rec.kind == _DATA:
                        yield rec.ts_ns, rec.payload
            finally:
                reader.close()


class ReplayServer(Listening):
    """Serves a data root's recorded streams to any number of clients, each from the start."""

    def __init__(self, config: ReplayConfig) -> None:
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the replay server binds loopback only, not {config.host!r}")
        if config.dialect not in ("advanced_trade", "exchange"):
            raise ValueError(f"unknown dialect {config.dialect!r}")
        if config.at_end not in ("close", "hold"):
            raise ValueError(f"at_end is close or hold, not {config.at_end!r}")
        self.config = config
        self.dialect = config.dialect
        self.limits = Limits(enabled=False)
        self.inbox = Inbox()  # client frames, handled in arrival order
        self.ledger: Ledger | None = Ledger(config.ledger_path) if config.ledger else None
        day = config.day
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        self.streams = self._index(Path(config.root), day, config.products)
        if not self.streams:
            raise ValueError(f"no recorded segments under {config.root}"
                             f"{f' for {day}' if day else ''}"
                             f"{f' for {config.products}' if config.products else ''}")
        self.products = sorted({p for p, _ in self.streams if not is_shared_stream(p)})
        self._handle = (dialect_at.handle if self.dialect == "advanced_trade"
                        else dialect_exchange.handle)
        self._frames: ATFrames | ExchangeFrames = (
            ATFrames() if self.dialect == "advanced_trade" else ExchangeFrames())
        self._shared = self._one_shared_stream_per_channel() if config.venue else None
        self._states: list[ProductState] | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._changed: dict[int, asyncio.Event] = {}
        self._next_id = 0
        self.host = config.host
        self.port = 0

    def _one_shared_stream_per_channel(self) -> dict[str, tuple[str, str]]:
        """Shared channel → the one recorded ``_conn*`` stream a venue-like replay serves:
        each recorded connection has its own heartbeats, and a connection of the replay
        should get one connection's worth, as from the venue."""
        out: dict[str, tuple[str, str]] = {}
        for p, c in sorted(self.streams):
            if c in _SHARED and is_conn_stream(p) and c not in out:
                out[c] = (p, c)
        return out

    @staticmethod
    def _index(root: Path, day: dt.date | None,
               products: list[str] | None) -> dict[tuple[str, str], list[SegmentRef]]:
        """(product, channel) → segments in order, a `.seg` preferred over its archive."""
        chosen: dict[tuple[str, str, dt.date, int], SegmentRef] = {}
        refs = (list_remote_segments(root, day=day) if is_remote(root)
                else iter_segments(root, day=day))  # an s3:// root: its archives, ranged reads
        for ref in refs:
            if (products is not None and not is_shared_stream(ref.product)
                    and ref.product not in products):
                continue
            key = (ref.product, ref.channel, ref.day, ref.number)
            if key not in chosen or chosen[key].archived:
                chosen[key] = ref
        out: dict[tuple[str, str], list[SegmentRef]] = {}
        for (p, c, _, _), ref in sorted(chosen.items()):
            out.setdefault((p, c), []).append(ref)
        return out

    async def start(self) -> None:
        cfg = self.config
        await self.listen(cfg.host, cfg.port)

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.stop_listening()

    # -- Venue protocol -------------------------------------------------------------------
    def allow_open(self) -> bool:
        return True

    def open_session(self, transport: asyncio.Transport) -> Session:
        s = Session(self, self._next_id, transport, [])
        self._next_id += 1
        transport.set_write_buffer_limits(high=4 << 20)
        return s

    def rest(self, path: str, query: dict[str, list[str]]) -> bytes | None:
        if self._states is None:
            rng = random.Random(0)
            self._states = [build_product(p, k, rng) for k, p in enumerate(self.products)]
        return rest_products(path, self._states, query)

    def rest_delay(self) -> None:
        """Replay has no REST faults: every answer at once."""
        return None

    def on_text(self, s: Session, data: bytes) -> None:
        out = self._handle(s.subs, data, self.products, self.limits)
        for err in out.errors:
            s.send_raw(err, "error")
        if out.ack and self.config.venue:
            s.send_event(self._frames.subscriptions(time.time_ns(), subs_view(s.subs)))
        s.flush()
        if not out.ack:
            return
        if s.id not in self._tasks:
            self._changed[s.id] = asyncio.Event()
            self._tasks[s.id] = asyncio.create_task(self._serve(s), name=f"replay-{s.id}")
        else:
            self._changed[s.id].set()

    def on_closed(self, s: Session) -> None:
        task = self._tasks.pop(s.id, None)
        self._changed.pop(s.id, None)
        if task is not None:
            task.cancel()

    def fault_product(self, s: Session) -> str:
        return self.products[0] if self.products else "BTC-USD"

    # -- the replay loop ------------------------------------------------------------------
    def _wanted(self, s: Session) -> set[tuple[str, str]]:
        want: set[tuple[str, str]] = set()
        alias = {"level2_50": "level2_batch"}
        for ch, ps in s.subs.items():
            ch = alias.get(ch, ch)
            for p in ps:
                if (p, ch) in self.streams:
                    want.add((p, ch))
            if self._shared is not None and ch in self._shared:
                want.add(self._shared[ch])
                continue
            for p, c in self.streams:
                if c == ch and (is_multi_stream(p) or (ch in _SHARED and is_conn_stream(p))):
                    want.add((p, c))
        return want

    def _damaged(self, s: Session, line: str) -> None:
        """A damaged range or unreadable file in one replayed stream: that part is skipped,
        the rest of the session goes on; said on stderr and in the ledger, naming the file."""
        print(f"replay: {line}", file=sys.stderr)
        if self.ledger is not None:
            self.ledger.event(s.id, "replay_damage", s.i, error=line)

    async def _serve(self, s: Session) -> None:
        """Replay to one client; a damaged file ends it with close 1011 naming the file."""
        try:
            await self._replay(s)
        except (CorruptSegment, OSError, ValueError) as e:
            print(f"replay: {e}", file=sys.stderr)
            if self.ledger is not None:
                self.ledger.event(s.id, "replay_error", s.i, error=str(e))
            s.close(1011, f"replay failed: {type(e).__name__}")

    async def _replay(self, s: Session) -> None:
        await asyncio.sleep(self.config.settle_s)
        speed = self.config.speed
        heap: list[tuple[int, int, bytes, tuple[str, str], Iterator[tuple[int, bytes]]]] = []
        active: set[tuple[str, str]] = set()
        order = 0
        last_ts: int | None = None
        wall0 = ts0 = 0.0

        def add_streams(wanted: set[tuple[str, str]]) -> None:
            nonlocal order
            for key in sorted(wanted - active):
                active.add(key)
                # venue mode: a stream subscribed late is still served whole
                from_ns = None if last_ts is None or venue else last_ts + 1
                it = _Stream(self.streams[key], from_ns, partial(self._damaged, s)).records()
                first = next(it, None)
                if first is not None:
                    heapq.heappush(heap, (first[0], order, first[1], key, it))
                    order += 1

        venue = self.config.venue
        renumber = venue and self.dialect == "advanced_trade"
        changed = self._changed[s.id]
        wanted = self._wanted(s)
        add_streams(wanted)
        sent_since_yield = 0
        while heap and not s.closed:
            if changed.is_set():
                changed.clear()
                wanted = self._wanted(s)
                add_streams(wanted)
            ts, n, payload, key, it = heapq.heappop(heap)
            if key not in wanted:
                active.discard(key)  # unsubscribed; a new subscribe rejoins at replay time
                continue
            if speed is not None:
                if last_ts is None:
                    wall0, ts0 = time.monotonic(), float(ts)
                delay = wall0 + (ts - ts0) / speed / 1e9 - time.monotonic()
                if delay > 0:
                    s.flush()
                    await asyncio.sleep(delay)
            last_ts = max(ts, last_ts or ts)
            _send(s, key, payload, renumber)
            nxt = next(it, None)
            if nxt is not None:
                heapq.heappush(heap, (nxt[0], n, nxt[1], key, it))
            sent_since_yield += 1
            if sent_since_yield >= 256:
                sent_since_yield = 0
                s.flush()
                await s.writable.wait()
                await asyncio.sleep(0)
        s.flush()
        if self.config.at_end == "close" and not s.closed:
            await asyncio.sleep(self.config.linger_s)
            s.close(1000, "end of replay")
