"""Per-message cost of counting messages and bytes per (connection, channel) on the hot path.

Why: ``cbl_messages_total{conn,channel}`` / ``cbl_bytes_total{conn,channel}`` are counted in
``_Listener.on_ws_frame`` (one dict lookup by the route's channel, two slot-int increments),
in place of the per-connection byte count that was there before. The receive path must stay
cheap, so this measures what the change adds, on the project generator's live mix of both
dialects routed by the real ``FeedState``:

  isolated   the counting statements alone, each as a method called once per message like
             ``on_ws_frame``, over the real routes: ``floor`` (an empty method), ``before``
             (``self._stats.bytes += len(raw)``), ``after`` (the code now in the hot path).
             after − before is the added cost per message.
  in context the whole ``on_ws_frame`` — now vs the previous one (a copy of it below) — with
             the real ``FeedState`` and ``Sink.add`` (storage thread not started, no flush),
             fed fake picows frames. The difference is the same cost, inside the noise of a
             ~1–2 µs call on a shared machine: read it as a sanity check, not a measurement.

Thread CPU time (a preempted pass is not charged), passes interleaved so that load changes
hit every variant alike; printed: the best pass of each variant, and for the added cost both
the difference of the best passes and the median of the per-round differences.
Run: ``.venv/bin/python bench/metrics_cost.py [--quick]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # before bench/storage.py

from routing import _channels

from logger.connection import _TEXT, Connection, _Listener
from logger.metrics import ChannelCount, ConnStats
from logger.protocol import ADVANCED_TRADE, EXCHANGE, Dialect, FeedCounters, FeedState
from logger.ratelimit import SlidingWindowLimiter
from logger.sink import Sink
from storage.engine import Engine, EngineConfig
from tools.venue.generator import MarketModel

Route = tuple[str, str]


class _OldStats:
    def __init__(self) -> None:
        self.bytes = 0


class Isolated:
    """The counting statements as they sit in ``on_ws_frame`` (attribute loads on self)."""

    def __init__(self) -> None:
        self._stats = ConnStats("0", FeedCounters())
        self._old = _OldStats()
        self._chan = self._stats.channels

    def floor(self, route: Route, raw: bytes) -> None:
        return

    def before(self, route: Route, raw: bytes) -> None:
        self._old.bytes += len(raw)

    def after(self, route: Route, raw: bytes) -> None:
        try:
            c = self._chan[route[1]]
        except KeyError:
            c = self._stats.channel(route[1])
        c.messages += 1
        c.bytes += len(raw)


class _Frame:
    __slots__ = ("fin", "msg_type", "raw")

    def __init__(self, raw: bytes) -> None:
        self.msg_type = _TEXT
        self.fin = True
        self.raw = raw

    def get_payload_as_bytes(self) -> bytes:
        return self.raw


class _BeforeListener(_Listener):
    """``on_ws_frame`` as it was before per-(conn, channel) counting (per-conn bytes only)."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._old = _OldStats()

    def on_ws_frame(self, transport: object, frame: _Frame) -> None:  # type: ignore[override]
        ts = time.time_ns()
        mt = frame.msg_type
        if mt is _TEXT and frame.fin and self._frag is None:
            raw = frame.get_payload_as_bytes()
            self._old.bytes += len(raw)
            try:
                route = self._on_message(raw)
            except Exception:
                route = self._route_failed(raw)
            self._sink.add(route, ts, raw, self._unrouted)
            if self._feed.actions:
                self.conn.run_actions()
            return
        raise AssertionError("only whole text frames here")


def _listener(kind: type[_Listener], dialect: Dialect, products: Sequence[str]) -> _Listener:
    sink = Sink(lambda: Engine(EngineConfig(root=Path("/nonexistent"))), commit_records=1 << 40,
                max_pending_bytes=1 << 40)  # never flushes: the storage thread is not started
    feed = FeedState(dialect, "0", _channels(dialect, products))
    conn = Connection("0", "ws://127.0.0.1:1/", feed, sink, SlidingWindowLimiter(8))
    return kind(conn)


def _rounds(passes: dict[str, Callable[[], float]], seconds: float
            ) -> dict[str, list[float]]:
    """Every variant once per round, rounds until ``seconds``: per-variant lists of ns/msg."""
    got: dict[str, list[float]] = {name: [] for name in passes}
    deadline = time.perf_counter() + seconds
    while len(got["floor"]) < 5 or time.perf_counter() < deadline:
        for name, run in passes.items():
            got[name].append(run())
    return got


def _added(got: dict[str, list[float]], after: str, before: str) -> tuple[float, float]:
    """(difference of the best passes, median of the per-round differences)."""
    diffs = [a - b for a, b in zip(got[after], got[before], strict=True)]
    return min(got[after]) - min(got[before]), statistics.median(diffs)


def main(argv: Sequence[str]) -> int:
    quick = "--quick" in argv
    seconds = 2.0 if quick else 20.0
    n = 6_000 if quick else 30_000
    print("ns/msg (thread CPU time); added = best after - best before, med = median of the "
          "per-round differences")
    print(f"{'live mix':16} {'floor':>7} {'before':>7} {'after':>7} {'added':>7} {'med':>7}   "
          f"{'ws_before':>7} {'ws_after':>7} {'added':>6} {'med':>6}   {'rounds':>6}")
    for dialect in (ADVANCED_TRADE, EXCHANGE):
        model = MarketModel(3, 30, cast(Literal["advanced_trade", "exchange"], dialect.name))
        frames = [raw for _, _, raw in model.day_of_messages(n)][n // 5:]
        route_of = FeedState(dialect, "0", _channels(dialect, model.products)).on_message
        pairs = [(route_of(raw), raw) for raw in frames]
        wire = [_Frame(raw) for raw in frames]

        def isolated(name: str, pairs: list[tuple[Route, bytes]] = pairs
                     ) -> Callable[[], float]:
            def run() -> float:
                fn = getattr(Isolated(), name)
                t = time.thread_time_ns()
                for route, raw in pairs:
                    fn(route, raw)
                return (time.thread_time_ns() - t) / len(pairs)
            return run

        def in_context(kind: type[_Listener], dialect: Dialect = dialect,
                       products: Sequence[str] = model.products,
                       wire: list[_Frame] = wire) -> Callable[[], float]:
            def run() -> float:
                on_frame = _listener(kind, dialect, products).on_ws_frame
                t = time.thread_time_ns()
                for f in wire:
                    on_frame(None, f)  # type: ignore[arg-type]
                return (time.thread_time_ns() - t) / len(wire)
            return run

        got = _rounds({"floor": isolated("floor"), "before": isolated("before"),
                       "after": isolated("after"), "ctx_before": in_context(_BeforeListener),
                       "ctx_after": in_context(_Listener)}, seconds)
        check = _listener(_Listener, dialect, model.products)
        for f in wire:
            check.on_ws_frame(None, f)  # type: ignore[arg-type]
        counted: dict[str, ChannelCount] = check.conn.stats.channels
        assert sum(c.messages for c in counted.values()) == len(wire)
        assert sum(c.bytes for c in counted.values()) == sum(map(len, frames))
        b = {name: min(v) for name, v in got.items()}
        added, added_med = _added(got, "after", "before")
        ctx, ctx_med = _added(got, "ctx_after", "ctx_before")
        print(f"{dialect.name:16} {b['floor']:7.1f} {b['before']:7.1f} {b['after']:7.1f} "
              f"{added:7.1f} {added_med:7.1f}   {b['ctx_before']:7.0f} {b['ctx_after']:7.0f} "
              f"{ctx:6.0f} {ctx_med:6.0f}   {len(got['floor']):6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
