"""The live simulated venue: a WebSocket + HTTP server on 127.0.0.1 fed by `MarketModel`.

One asyncio task (the pump) advances the market in ticks: it generates the events due since
the last tick (``rate_msgs_per_s`` market events per second, or as many as the clients drain
when the rate is 0), routes each to the connections holding its (channel, product) through an
index rebuilt only when subscriptions change, and writes every connection's frames with one
syscall per tick. The virtual clock follows the wall clock from ``start_ns``.

    sim = Simulator(SimConfig(dialect="advanced_trade", products=50, rate_msgs_per_s=2000))
    await sim.start(); print(sim.ws_url, sim.rest_url); ...; await sim.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from tools.venue import dialect_at, dialect_exchange
from tools.venue.events import Event
from tools.venue.faults import FaultSchedule, FaultSpec, parse_faults, rest_faults
from tools.venue.generator import Dialect, MarketModel
from tools.venue.ledger import Ledger
from tools.venue.limits import Limits, OpenRateLimiter, refusal_for
from tools.venue.session import Inbox, Listening, Session, rest_products
from tools.venue.subs import subs_view

_SHARED = frozenset({"heartbeats", "status"})


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 0
    dialect: Dialect = "advanced_trade"
    products: int | list[str] = 20
    #: market events per second across all products; 0 = as fast as the clients drain
    rate_msgs_per_s: float = 200.0
    seed: int = 0
    #: a ``--faults`` spec string or parsed specs
    faults: str | list[FaultSpec] | None = None
    #: True/False toggles every limit; a `Limits` sets them individually
    limits: Limits | bool = True
    #: virtual clock at start; None = the wall clock when `start()` runs
    start_ns: int | None = None
    #: keep a ledger (in memory, or streamed to `ledger_path`)
    ledger: bool = True
    ledger_path: Path | None = None
    tick_s: float = 0.01
    #: events generated per step when the rate is 0 (max)
    max_batch: int = 2048
    #: > 0: pre-generate this many market events at start and cycle through them instead of
    #: generating live ("tape" mode, Advanced Trade only): the venue then costs a few bytes
    #: operations per frame, far beyond any Python client. sequence_num stays contiguous per
    #: connection; envelope timestamps and trade ids repeat each cycle, and level2 snapshots
    #: sent on subscribe are not the book the tape's updates build.
    tape_events: int = 0


class Simulator(Listening):
    """A Coinbase-like venue speaking one dialect on 127.0.0.1."""

    def __init__(self, config: SimConfig) -> None:
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the simulator binds loopback only, not {config.host!r}")
        if config.rate_msgs_per_s < 0:
            raise ValueError("rate_msgs_per_s must be >= 0 (0 = max)")
        if config.tape_events and config.dialect != "advanced_trade":
            raise ValueError("tape mode is Advanced Trade only: Exchange frames carry their "
                             "sequence and trade_id, which would repeat each cycle")
        self.config = config
        self.dialect: str = config.dialect
        lim = config.limits
        self.limits = lim if isinstance(lim, Limits) else Limits(enabled=bool(lim))
        self.faults = (parse_faults(config.faults) if not isinstance(config.faults, list)
                       else config.faults)
        self.ledger: Ledger | None = Ledger(config.ledger_path) if config.ledger else None
        self._rest_faults = FaultSchedule(rest_faults(self.faults), 0)
        self.rest_requests = 0
        self._handle = (dialect_at.handle if config.dialect == "advanced_trade"
                        else dialect_exchange.handle)
        self._opens = OpenRateLimiter(self.limits.opens_per_second)
        self.inbox = Inbox()  # client frames, handled in arrival order
        self._message_rate = self.limits.message_rate(config.dialect)
        self._messages: dict[str, OpenRateLimiter] = {}  # client IP → its message window
        self.sessions: dict[int, Session] = {}
        self._routes: dict[str, dict[str, list[Session]]] = {}
        self._next_id = 0
        self._pump_task: asyncio.Task[None] | None = None
        self.host = config.host
        self.port = 0
        self.model: MarketModel | None = None
        self.sent_events = 0
        self._tape_pos = 0

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        start_ns = cfg.start_ns if cfg.start_ns is not None else time.time_ns()
        self.model = MarketModel(cfg.seed, cfg.products, cfg.dialect, start_ns=start_ns)
        self._tape: list[Event] = []
        if cfg.tape_events > 0:
            # timestamps spread at 10 000 events per virtual second
            self._tape = self.model.generate(
                cfg.tape_events, start_ns + cfg.tape_events * 100_000)
        self._t0 = time.monotonic()
        await self.listen(cfg.host, cfg.port)
        self._pump_task = asyncio.create_task(self._pump(), name="sim-pump")
        self._pump_task.add_done_callback(self._pump_done)

    def _pump_done(self, task: asyncio.Task[None]) -> None:
        """A venue whose pump died must not look alive: report and close every connection."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        traceback.print_exception(exc, file=sys.stderr)
        for s in list(self.sessions.values()):
            s.close(1011, "simulator error")

    @property
    def connections_opened(self) -> int:
        return self._next_id

    async def stop(self) -> None:
        """Close every connection with 1001 (going away), stop serving, close the ledger."""
        if self._pump_task is not None:
            if not self._pump_task.done():  # a failed pump was already reported
                self._pump_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump_task
            self._pump_task = None
        for s in list(self.sessions.values()):
            s.close(1001, "going away")
        await self.stop_listening()

    # -- Venue protocol (called by sessions) ----------------------------------------------
    def allow_open(self) -> bool:
        return self._opens.allow(time.monotonic())

    def open_session(self, transport: asyncio.Transport) -> Session:
        s = Session(self, self._next_id, transport, self.faults)
        self._next_id += 1
        self.sessions[s.id] = s
        lim = self.limits
        transport.set_write_buffer_limits(high=4 << 20)
        if lim.enabled:
            s.timer = asyncio.get_running_loop().call_later(
                lim.subscribe_timeout_s, self._subscribe_deadline, s)
        return s

    def _subscribe_deadline(self, s: Session) -> None:
        if not s.subscribed and not s.closed:
            if self.ledger is not None:
                self.ledger.event(s.id, "subscribe_timeout", s.i,
                                  seconds=self.limits.subscribe_timeout_s)
            s.close(1008, "subscribe timeout")

    def rest(self, path: str, query: dict[str, list[str]]) -> bytes | None:
        assert self.model is not None
        return rest_products(path, self.model.states.values(), query)

    def rest_delay(self) -> float | None:
        """Seconds between the body bytes of this REST answer (``slow_rest``), or None."""
        n = self.rest_requests
        self.rest_requests = n + 1
        if n < self._rest_faults.next_at:
            return None
        fired = self._rest_faults.due(n)
        if not fired:
            return None
        secs = float(fired[-1].arg or 5.0)
        if self.ledger is not None:
            self.ledger.fault(-1, "slow_rest", n, seconds=secs)
        return secs

    def _allow_message(self, s: Session) -> bool:
        """The per-IP client message rate; an excess message is refused and not handled."""
        rate = self._message_rate
        if not rate:
            return True
        peer = s.transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        window = self._messages.get(ip)
        if window is None:
            window = self._messages[ip] = OpenRateLimiter(rate)
        if window.allow(s.read_at):
            return True
        frame, close = refusal_for(self.dialect)
        if self.ledger is not None:
            self.ledger.event(s.id, "message_rate_refused", s.i, limit=rate, closed=close)
        s.send_raw(frame, "error")
        if close:
            s.close(1008, "ErrSlowRead")
        else:
            s.flush()
        return False

    def on_text(self, s: Session, data: bytes) -> None:
        model = self.model
        assert model is not None
        if not self._allow_message(s):
            return
        out = self._handle(s.subs, data, model.states, self.limits)
        if out.l2_refused and self.ledger is not None:
            self.ledger.event(s.id, "l2_cap_refused", s.i, requested=out.l2_refused,
                              held=len(s.subs.get("level2", ())))
        for err in out.errors:
            s.send_raw(err, "error")
        if out.ack:
            if not s.subscribed:
                s.subscribed = True
                if s.timer is not None:
                    s.timer.cancel()
            snaps: list[Event] = []
            for ch, pid in out.added:
                snaps.extend(model.snapshots(ch, pid))
            for ch in out.added_channels:
                if ch == "status":
                    snaps.append(model.status_event())
            ack = model.subscriptions(subs_view(s.subs))
            # AT sends the snapshot before the ack (2026 capture); Exchange the ack first.
            ordered = [*snaps, ack] if s.at else [ack, *snaps]
            for ev in ordered:
                s.send_event(ev)
            self._reindex()
        s.flush()

    def on_closed(self, s: Session) -> None:
        self.sessions.pop(s.id, None)
        self._reindex()

    def fault_product(self, s: Session) -> str:
        for ps in s.subs.values():
            for p in ps:
                return p
        assert self.model is not None
        return self.model.products[0]

    # -- routing and the pump -------------------------------------------------------------
    def _reindex(self) -> None:
        routes: dict[str, dict[str, list[Session]]] = {}
        for s in self.sessions.values():
            if s.closed:
                continue
            for ch, ps in s.subs.items():
                by_product = routes.setdefault(ch, {})
                keys = [""] if ch in _SHARED or not ps else list(ps)
                for p in keys:
                    by_product.setdefault(p, []).append(s)
        self._routes = routes

    def _dispatch(self, events: list[Event]) -> None:
        routes = self._routes
        shared = _SHARED
        for ev in events:
            r = routes.get(ev[0])
            if r is None:
                continue
            prods = ev[2]
            targets = r.get("" if ev[0] in shared or not prods else prods[0])
            if targets is None:
                continue
            for s in targets:
                s.send_event(ev)
        self.sent_events += len(events)
        for s in list(self.sessions.values()):
            s.flush()

    async def _pump(self) -> None:
        cfg = self.config
        model = self.model
        assert model is not None
        rate = cfg.rate_msgs_per_s
        tick = cfg.tick_s
        t0 = self._t0
        start_ns = model.start_ns
        carry = 0.0
        last = time.monotonic()
        while True:
            if rate > 0:
                await asyncio.sleep(tick)
                now = time.monotonic()
                due = rate * (now - last) + carry
                last = now
                n = min(int(due), max(1, int(rate * tick * 10)))
                carry = min(due - n, rate * tick * 10)
            else:
                if not self._routes:
                    await asyncio.sleep(tick)
                    continue
                await asyncio.sleep(0)
                now = time.monotonic()
                n = cfg.max_batch
            if self._tape:
                events = self._from_tape(n)
            else:
                until = max(model.now_ns, start_ns + int((now - t0) * 1e9))
                events = model.generate(n, until)
            self._dispatch(events)
            await self._backpressure()

    def _from_tape(self, n: int) -> list[Event]:
        tape = self._tape
        pos = self._tape_pos
        out = tape[pos:pos + n]
        while len(out) < n:
            out += tape[:n - len(out)]
        self._tape_pos = (pos + n) % len(tape)
        return out

    async def _backpressure(self) -> None:
        """Wait for connections over the write high-water mark; drop slow consumers."""
        lim = self.limits
        max_mode = self.config.rate_msgs_per_s == 0
        for s in list(self.sessions.values()):
            if s.paused_since is None or s.closed:
                continue
            if lim.enabled and time.monotonic() - s.paused_since > lim.slow_consumer_s:
                s.drop_slow()
                continue
            if max_mode:
                timeout = (lim.slow_consumer_s - (time.monotonic() - s.paused_since)
                           if lim.enabled else None)
                try:
                    await asyncio.wait_for(s.writable.wait(), timeout)
                except TimeoutError:
                    s.drop_slow()
