"""The connection pool: one ``Connection`` per shard, all opened concurrently, paced by limits.

Why pacing by reservation: at start the pool reserves, for all connections at once, one slot
of the venue's connection-open window per connection and one slot of the shared message
window per opening subscribe frame (``ratelimit.plan_startup``), then each connection sleeps
until its slots come. So connections open concurrently (8 at t=0, the next 8 at t≈1 s, …),
nobody waits in a fixed 1-per-second loop, and each socket opens together with its first
subscribe frame (the venue closes one that has not subscribed within 5 s).

Market data first: the venue takes 8 messages per second per IP and on Advanced Trade every
connection's keepalive (``heartbeats``) is a message of its own, 15 of the 34 for 400
products. The market-data frames of every connection take the first slots and the keepalive
frames the ones after (they also wait until the data frames have actually left), so every
product's data is subscribed after about ceil(19 / 8) windows instead of ceil(34 / 8);
keepalive follows within seconds, far inside the 60–90 s after which quiet channels close.
``StartupReport`` gives both instants.

The pool also applies product refreshes without a restart: delisted products are
unsubscribed on the connection holding them; new listings first fill connections with level2
room, and the rest get new connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from logger.connection import Connection, ConnSettings
from logger.protocol import MULTI, Dialect, FeedState, Settled
from logger.ratelimit import DataPhase, SlidingWindowLimiter, plan_startup
from logger.sink import Sink

log = logging.getLogger("logger.pool")

Plan = Sequence[Mapping[str, Sequence[str]]]
"""One ``channel → products`` mapping per connection (from ``logger.shard``)."""


_POLL_S = 0.005
"""How often ``wait_started`` looks whether the market data is answered (its resolution)."""
_MESSAGE_MARGIN_S = 0.1
"""Each message window is this much longer than 1 s. Why more than the opens' 0.02 s: an
open is recorded when its handshake completes, after the venue counted it, but a message
only when it leaves, and the venue counts it on arrival, which jitters. The simulator stamps
a message up to one subscribe's handling late (~40 ms for 30 level2 snapshots, more on a
loaded machine); an excess message is refused for good (its subscription stays missing)."""
_PHASE_GRACE_S = 5.0
"""Keepalive frames wait for the startup's data frames at most this long past the last
data slot (a safety bound: normally the data frames leave on time)."""


@dataclass
class StartupReport:
    connections: int
    products: int
    seconds: float
    """Until every subscription, keepalive included, was answered (``event=all_acknowledged
    ... seconds=``; ``bench/ingest.py`` reads this one)."""
    settled: int
    missing: int
    data_seconds: float
    """Until every market-data subscription was answered (keepalive frames go after them)."""


class Pool:
    """Owns the connections of one ingest process."""

    def __init__(
        self,
        dialect: Dialect,
        url: str,
        sink: Sink,
        settings: ConnSettings,
        *,
        opens_per_second: float = 8.0,
        messages_per_second: float = 8.0,
        gap_policy: str = "resubscribe",
        level2_per_connection: int = 30,
        conn_id_prefix: str = "",
        multi_name: str = MULTI,
    ) -> None:
        self.dialect = dialect
        self.url = url
        self.sink = sink
        self.settings = settings
        self.gap_policy = gap_policy
        self.level2_per_connection = level2_per_connection
        self.open_limiter = _limiter(opens_per_second)
        self.message_limiter = _limiter(messages_per_second, _MESSAGE_MARGIN_S)
        self.connections: dict[str, Connection] = {}
        self._prefix = conn_id_prefix
        self._multi_name = multi_name  # per worker process (logger.protocol.names.multi_stream)
        self._next_id = 0
        self.started_monotonic = 0.0
        self.all_settled = asyncio.Event()
        self.missing: dict[str, dict[str, frozenset[str]]] = {}
        self._startup_data: dict[str, int] = {}  # conn id → its market-data opening frames
        self.on_new_connection: Callable[[Connection], None] | None = None

    # ------------------------------------------------------------------ start / stop
    def start(self, plan: Plan) -> None:
        """Create and start one connection per shard; they open concurrently.

        Every open and opening frame is reserved here, for all connections at once
        (``ratelimit.plan_startup``): the market-data subscribe frames of every connection
        take the first message slots, the keepalive frames the slots after them, and the
        keepalive frames also wait until the data frames have actually left.
        """
        self.started_monotonic = now = time.monotonic()
        conns = [self._new_connection(shard) for shard in plan]
        counts = [c.opening_counts() for c in conns]
        schedule = plan_startup(counts, self.open_limiter, self.message_limiter, now)
        last_data = max((s.frames[s.data_frames - 1] for s in schedule if s.data_frames),
                        default=now)
        phase = DataPhase(sum(s.data_frames for s in schedule), last_data + _PHASE_GRACE_S)
        self._startup_data = {c.conn_id: s.data_frames for c, s in zip(conns, schedule,
                                                                        strict=True)}
        for conn, slots in zip(conns, schedule, strict=True):
            conn.plan_opening(slots, phase)
            conn.start()

    def _add_connection(self, shard: Mapping[str, Sequence[str]]) -> Connection:
        conn = self._new_connection(shard)
        conn.start()
        return conn

    def _new_connection(self, shard: Mapping[str, Sequence[str]]) -> Connection:
        conn_id = f"{self._prefix}{self._next_id}"
        self._next_id += 1
        feed = FeedState(self.dialect, conn_id, shard,
                         gap_policy="reconnect" if self.gap_policy == "reconnect"
                         else "resubscribe", multi_name=self._multi_name,
                         retry=self.settings.retry_policy())
        conn = Connection(conn_id, self.url, feed, self.sink, self.open_limiter,
                          self.settings, on_settled=self._settled,
                          message_limiter=self.message_limiter)
        self.connections[conn_id] = conn
        self.all_settled.clear()
        if self.on_new_connection is not None:
            self.on_new_connection(conn)
        return conn

    def _settled(self, conn: Connection, s: Settled) -> None:
        self.missing[conn.conn_id] = dict(s.missing)
        if all(c.settled.is_set() for c in self.connections.values()):
            self.all_settled.set()

    def _data_answered(self) -> bool:
        """Every startup connection has had each market-data subscribe frame answered.

        Acks come one per subscribe frame, in order, and the data frames go first; a
        connection that settled (every frame answered, or the ack timeout) counts too.
        """
        conns = self.connections
        return all(c.settled.is_set() or c.feed.counters.acks >= n
                   for cid, n in self._startup_data.items() if (c := conns.get(cid)))

    async def wait_started(self, timeout: float) -> StartupReport:
        """Wait until every connection's subscriptions are answered; times since ``start``:
        when the market data was answered (polled every few ms) and when everything was,
        keepalive included."""
        end = time.monotonic() + timeout
        data_at: float | None = None
        while data_at is None and not self.all_settled.is_set() and time.monotonic() < end:
            if self._data_answered():
                data_at = time.monotonic()
                break
            await asyncio.sleep(_POLL_S)
        try:
            await asyncio.wait_for(self.all_settled.wait(), max(0.0, end - time.monotonic()))
        except TimeoutError:
            log.warning("event=startup_incomplete timeout_s=%.1f settled=%d/%d", timeout,
                        sum(c.settled.is_set() for c in self.connections.values()),
                        len(self.connections))
        done = time.monotonic()
        dt = done - self.started_monotonic
        data_dt = (data_at if data_at is not None else done) - self.started_monotonic
        products = {p for c in self.connections.values()
                    for ps in c.feed.requested.values() for p in ps}
        missing = sum(len(ps) for m in self.missing.values() for ps in m.values())
        return StartupReport(len(self.connections), len(products), dt,
                             sum(c.settled.is_set() for c in self.connections.values()), missing,
                             data_dt)

    async def stop(self) -> None:
        """Close every connection (each writes its DISCONNECT markers)."""
        await asyncio.gather(*(c.stop() for c in self.connections.values()))

    # ------------------------------------------------------------------ product refresh
    def products(self) -> set[str]:
        return {p for c in self.connections.values() for ch, ps in c.feed.requested.items()
                if ch not in self.dialect.shared_channels for p in ps}

    def update_products(self, wanted: Sequence[str], plan_new: Callable[[list[str]], Plan]
                        ) -> tuple[list[str], list[str]]:
        """Move to the ``wanted`` product set; returns (added, removed).

        Removed products are unsubscribed where they are held. Added ones fill connections
        with level2 room first (on every product channel of that connection: on Advanced
        Trade that is level2 alone); on Advanced Trade their other channels join the
        connection that already carries those channels for every product; whatever is left
        gets new connections, from ``plan_new`` minus what is already placed.
        """
        want = list(dict.fromkeys(wanted))
        have = self.products()
        removed = sorted(have - set(want))
        added = [p for p in want if p not in have]
        gone = set(removed)
        room_left: list[tuple[Connection, dict[str, list[str]]]] = [
            (conn, {ch: [p for p in ps if p not in gone] for ch, ps in conn.feed.requested.items()})
            for conn in list(self.connections.values())]
        rest = self._place(added, [req for _conn, req in room_left])
        for conn, req in room_left:
            if {ch: tuple(ps) for ch, ps in req.items()} != dict(conn.feed.requested):
                frames = conn.feed.update_subscriptions(req)
                conn.send_paced(frames, "product refresh")
                conn.run_actions()
        if rest:
            self._open_for(rest, [req for _conn, req in room_left], plan_new)
        if added or removed:
            log.info("event=products_refreshed added=%d removed=%d connections=%d",
                     len(added), len(removed), len(self.connections))
        return added, removed

    def _place(self, added: list[str], reqs: list[dict[str, list[str]]]) -> list[str]:
        """Add ``added`` to the existing connections' requests (``reqs``, changed in place)
        where there is room; returns the products that still need a connection."""
        dialect = self.dialect
        l2 = dialect.level2_channel
        shared = dialect.shared_channels
        rest = list(added)
        cap = self.level2_per_connection
        for req in reqs:
            if not rest:
                break
            product_channels = [ch for ch in req if ch not in shared]
            if l2 not in req or not product_channels:
                continue
            while rest and len(req[l2]) < cap:
                p = rest.pop(0)
                for ch in product_channels:
                    req[ch].append(p)
        shared_with_products = [ch for ch in shared if ch != dialect.keepalive_channel]
        for req in reqs:  # e.g. status: on one connection, with every product
            for ch in shared_with_products:
                if req.get(ch):
                    req[ch].extend(p for p in added if p not in req[ch])
        if dialect.level2_cap is not None:  # the connection carrying non-level2 channels
            for req in reqs:
                if l2 in req:
                    continue
                for ch, ps in req.items():
                    if ch not in shared and ps:
                        ps.extend(p for p in added if p not in ps)
        return rest

    def _open_for(self, rest: list[str], reqs: list[dict[str, list[str]]],
                  plan_new: Callable[[list[str]], Plan]) -> None:
        """New connections for ``rest``: ``plan_new``'s shards minus what ``reqs`` hold."""
        keepalive = self.dialect.keepalive_channel
        placed = {(ch, p) for req in reqs for ch, ps in req.items() for p in ps}
        bare = {ch for req in reqs for ch, ps in req.items() if not ps}
        for shard in plan_new(rest):
            keep = {ch: [p for p in ps if (ch, p) not in placed] for ch, ps in shard.items()}
            keep = {ch: ps for ch, ps in keep.items()
                    if ps or (not shard[ch] and (ch not in bare or ch == keepalive))}
            if any(ch != keepalive or ps for ch, ps in keep.items()):
                self._add_connection(keep)

def _limiter(per_second: float, margin_s: float = 0.02) -> SlidingWindowLimiter:
    """``per_second`` as a whole number of slots per window (fractions widen the window)."""
    if per_second >= 1:
        return SlidingWindowLimiter(int(per_second), 1.0 * int(per_second) / per_second,
                                    margin_s)
    return SlidingWindowLimiter(1, 1.0 / per_second, margin_s)
