"""Prometheus `/metrics` and the once-a-minute status line.

Why a custom collector: the hot path only bumps plain ints on a per-connection ``ConnStats``
(and the sink's ``SinkStats``); Prometheus objects are built at scrape time from those ints,
so a scrape costs microseconds per connection and a message costs no Prometheus call at all.
Per message, the connection bumps the two slot ints of its ``ChannelCount`` for the channel
the frame was routed to (one dict lookup by the channel string, whose hash is cached;
``bench/metrics_cost.py`` measures what that costs). Per-connection totals are sums over
those, made at scrape time.
Only the commit-latency histogram is observed directly, once per commit, from the storage
thread (prometheus-client is thread-safe).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from logger.protocol import FeedCounters
from logger.provenance import software_version
from logger.sink import SinkStats
from storage import iter_segments

log = logging.getLogger("logger.metrics")


class ChannelCount:
    """Messages and bytes one connection received on one channel (loop thread writes)."""

    __slots__ = ("bytes", "messages")

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0


class ConnStats:
    """Counters of one connection, written by the loop thread only.

    Message, gap and unrouted counts come from the protocol core's ``FeedCounters`` (it
    already counts every frame it routes); the shell adds what never reaches the core
    (binary or broken fragmented frames) and, per channel, messages and bytes
    (``channels``: the channel each message was routed to, ``_unrouted`` for frames kept
    raw). The label set is bounded: the protocol core routes only to its
    dialect's channels, ``subscriptions``, ``error`` and ``_unrouted``, whatever the wire says.
    """

    def __init__(self, conn_id: str, feed: FeedCounters) -> None:
        self.conn_id = conn_id
        self.feed = feed
        self.channels: dict[str, ChannelCount] = {}
        self.raw_frames = 0
        self.route_errors = 0
        self.reconnects = 0
        self.refused_products = 0
        self.errors = 0
        self.connected = False
        self.last_message_monotonic = 0.0
        self.acked_products = 0

    def channel(self, name: str) -> ChannelCount:
        """The counters of ``name``, created on its first message (rare path)."""
        c = self.channels.get(name)
        if c is None:
            c = self.channels[name] = ChannelCount()
        return c

    def channel_counts(self) -> list[tuple[str, int, int]]:
        """(channel, messages, bytes) now; safe from the scrape thread (a list copy under
        the GIL: the loop thread may add a channel meanwhile)."""
        return [(name, c.messages, c.bytes) for name, c in list(self.channels.items())]

    @property
    def messages(self) -> int:
        """Every frame received (the protocol core's count plus frames kept raw); equals the
        sum of ``channels`` messages."""
        return self.feed.messages + self.raw_frames

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in list(self.channels.values()))

    @property
    def unrouted(self) -> int:
        return self.feed.unrouted + self.raw_frames + self.route_errors

    @property
    def gaps(self) -> int:
        return self.feed.gaps


class IngestCollector(Collector):
    """Builds the metric families from live stats objects at scrape time."""

    def __init__(
        self, conns: Callable[[], Iterable[ConnStats]], sink: SinkStats,
        queue_depth: Callable[[], int], queue_bytes: Callable[[], int],
        rate: Callable[[], float],
    ) -> None:
        self._conns = conns
        self._sink = sink
        self._depth = queue_depth
        self._qbytes = queue_bytes
        self._rate = rate

    def collect(self) -> Iterator[Metric]:
        conns = list(self._conns())
        yield from self._per_channel(conns)
        yield from self._per_connection(conns, time.monotonic())
        yield from self._storage()

    @staticmethod
    def _per_channel(conns: list[ConnStats]) -> Iterator[Metric]:
        msgs = CounterMetricFamily(
            "cbl_messages", "messages received per connection and channel (the channel each "
            "was routed to; _unrouted: kept raw)", labels=["conn", "channel"])
        nbytes = CounterMetricFamily(
            "cbl_bytes", "payload bytes received per connection and channel",
            labels=["conn", "channel"])
        for c in conns:
            for ch, n, b in c.channel_counts():
                msgs.add_metric([c.conn_id, ch], float(n))
                nbytes.add_metric([c.conn_id, ch], float(b))
        yield msgs
        yield nbytes

    @staticmethod
    def _per_connection(conns: list[ConnStats], now: float) -> Iterator[Metric]:
        per_conn: list[tuple[str, str, str, Callable[[ConnStats], float]]] = [
            ("cbl_gaps", "counter", "sequence gaps detected per connection", lambda c: c.gaps),
            ("cbl_reconnects", "counter", "reconnects per connection", lambda c: c.reconnects),
            ("cbl_unrouted", "counter", "messages stored to _unrouted per connection",
             lambda c: c.unrouted),
            ("cbl_refused_products", "counter", "products refused/unacknowledged by the venue",
             lambda c: c.refused_products),
            ("cbl_subscribe_retries", "counter", "subscribe retry rounds for what the venue did"
             " not acknowledge", lambda c: c.feed.subscribe_retries),
            ("cbl_subscribe_given_up", "counter", "(channel, product) subscriptions still not "
             "acknowledged after every retry", lambda c: c.feed.subscribe_given_up),
            ("cbl_connected", "gauge", "1 while the connection is open",
             lambda c: 1.0 if c.connected else 0.0),
            ("cbl_last_message_age_seconds", "gauge", "seconds since the last message",
             lambda c: now - c.last_message_monotonic if c.last_message_monotonic else -1.0),
            ("cbl_acked_products", "gauge", "products acknowledged on the connection",
             lambda c: c.acked_products),
        ]
        for name, kind, doc, get in per_conn:
            fam: Any
            if kind == "counter":
                fam = CounterMetricFamily(name, doc, labels=["conn"])
            else:
                fam = GaugeMetricFamily(name, doc, labels=["conn"])
            for c in conns:
                fam.add_metric([c.conn_id], float(get(c)))
            yield fam

    def _storage(self) -> Iterator[Metric]:
        s = self._sink
        cm = CounterMetricFamily(
            "cbl_stored_records", "records (data and markers) the storage thread wrote, "
            "per channel", labels=["channel"])
        cb = CounterMetricFamily(
            "cbl_stored_bytes", "payload bytes (data and markers) the storage thread wrote, "
            "per channel", labels=["channel"])
        for ch, n in list(s.channel_records.items()):
            cm.add_metric([ch], float(n))
        for ch, n in list(s.channel_bytes.items()):
            cb.add_metric([ch], float(n))
        yield cm
        yield cb
        yield GaugeMetricFamily("cbl_message_rate", "messages/s over the last status interval",
                                value=self._rate())
        yield GaugeMetricFamily("cbl_queue_depth", "batches waiting for the storage thread",
                                value=float(self._depth()))
        yield GaugeMetricFamily("cbl_queue_bytes", "bytes waiting for the storage thread",
                                value=float(self._qbytes()))
        yield CounterMetricFamily("cbl_dropped_records", "records dropped (and marked)",
                                  value=float(s.records_dropped))
        yield CounterMetricFamily("cbl_committed_records", "records committed to storage",
                                  value=float(s.committed_records))
        yield CounterMetricFamily("cbl_commit_errors", "commits that reported errors",
                                  value=float(s.commit_errors))
        yield CounterMetricFamily("cbl_invalid_streams", "stream names refused by storage",
                                  value=float(s.invalid_streams))


BACKLOG_SCAN_S = 300.0
"""How often the archive backlog is counted (a walk of the data root's folders)."""


class RootCollector(Collector):
    """Series about the data root, for the alert rules (deploy/cbl-alerts.yml): free disk
    space, unclean stops so far, and the archive backlog (``.seg`` files of past UTC days,
    which ``cbl-compact`` should have archived).

    Why the backlog is counted here: a failed or never-enabled compaction timer shows only as
    a slowly filling disk; counting it where Prometheus already scrapes turns it into an alert
    days earlier. The walk runs at most every ``BACKLOG_SCAN_S``, in the scrape thread.
    """

    def __init__(self, root: Path, unclean_stops: int, *,
                 scan_every_s: float = BACKLOG_SCAN_S) -> None:
        self._root = root
        self._unclean = unclean_stops
        self._every = scan_every_s
        self._scanned = -math.inf
        self._backlog = (0, 0.0)

    def _scan(self) -> tuple[int, float]:
        """(past-day .seg files, seconds since the end of the oldest such day)."""
        now = time.time()
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        oldest: dt.date | None = None
        count = 0
        for ref in iter_segments(self._root):
            if ref.archived or ref.day >= today:
                continue
            count += 1
            oldest = ref.day if oldest is None else min(oldest, ref.day)
        if oldest is None:
            return 0, 0.0
        end = dt.datetime.combine(oldest + dt.timedelta(days=1), dt.time(), dt.UTC)
        return count, max(0.0, now - end.timestamp())

    def collect(self) -> Iterator[Metric]:
        try:
            st = os.statvfs(self._root)
            free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        except OSError:
            free = size = -1
        yield GaugeMetricFamily("cbl_data_disk_free_bytes", "bytes available to the recorder "
                                "on the data root's filesystem (-1: cannot stat)", value=free)
        yield GaugeMetricFamily("cbl_data_disk_size_bytes", "size of the data root's "
                                "filesystem", value=size)
        yield CounterMetricFamily("cbl_unclean_stops", "runs of this data root that ended "
                                  "without a clean stop (kept in .coinbase-logger.json)",
                                  value=float(self._unclean))
        if time.monotonic() - self._scanned >= self._every:
            with contextlib.suppress(OSError):
                self._backlog = self._scan()
            self._scanned = time.monotonic()
        yield GaugeMetricFamily("cbl_archive_backlog_segments", ".seg files of past UTC days "
                                "not archived yet (cbl-compact)", value=self._backlog[0])
        yield GaugeMetricFamily("cbl_archive_backlog_seconds", "seconds since the end of the "
                                "oldest UTC day with a .seg file not archived (0: none)",
                                value=self._backlog[1])
        info = GaugeMetricFamily("cbl_build_info", "1; labels: software version and host",
                                 labels=["version", "host"])
        info.add_metric([software_version(), socket.gethostname()], 1.0)
        yield info


class Metrics:
    """Owns the registry, the HTTP endpoint and the message-rate estimate."""

    def __init__(
        self, conns: Callable[[], Iterable[ConnStats]], sink: SinkStats,
        queue_depth: Callable[[], int], queue_bytes: Callable[[], int],
    ) -> None:
        self.registry = CollectorRegistry()
        self._conns = conns
        self._sink = sink
        self._depth = queue_depth
        self._last_total = 0
        self._last_t = time.monotonic()
        self.rate = 0.0
        self.commit_latency = Histogram(
            "cbl_commit_seconds", "storage commit latency (one commit per batch)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.registry.register(IngestCollector(conns, sink, queue_depth, queue_bytes,
                                               lambda: self.rate))
        self._server: Any = None
        self.port = 0

    def add_root(self, root: Path, unclean_stops: int) -> None:
        """Serve the data root's series too (the process that owns the root: the single
        daemon; with workers, the supervisor registers its own ``RootCollector``)."""
        self.registry.register(RootCollector(root, unclean_stops))

    def observe_commit(self, seconds: float, records: int) -> None:
        self.commit_latency.observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the bound port (port 0 picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self.port = int(server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def status_line(self) -> str:
        """One structured line: totals, rate, health; updates the rate estimate."""
        conns = list(self._conns())
        total = sum(c.messages for c in conns)
        now = time.monotonic()
        dt = now - self._last_t
        self.rate = (total - self._last_total) / dt if dt > 0 else 0.0
        self._last_total, self._last_t = total, now
        ages = [now - c.last_message_monotonic for c in conns if c.last_message_monotonic]
        s = self._sink
        return (
            f"event=status conns={len(conns)} connected={sum(c.connected for c in conns)} "
            f"messages={total} rate={self.rate:.0f}/s gaps={sum(c.gaps for c in conns)} "
            f"reconnects={sum(c.reconnects for c in conns)} "
            f"unrouted={sum(c.unrouted for c in conns)} committed={s.committed_records} "
            f"dropped={s.records_dropped} queue_depth={self._depth()} "
            f"max_age_s={max(ages) if ages else -1:.1f}"
        )
