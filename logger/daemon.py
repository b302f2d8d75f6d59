"""The ingest daemon: config → products → pool of connections → sink → storage, until a signal.

Why it is shaped like this: the storage engine, which can block, is kept off the event loop
(the sink's storage thread), so the loop only does network I/O; REST discovery runs on the loop
without blocking it, under a deadline, cancellable by a stop (``logger.discovery``).
Shutdown is ordered so nothing received is lost: stop reading (each connection writes its
DISCONNECT markers), then hand every pending record to the storage
thread, commit, seal, and exit 0. The UTC day roll needs no code here: every record goes to the
segment of its own day, and each commit (at least every ``commit_interval_s``) passes the wall
clock, which seals the segments of past days — ingest never pauses.

``Ingest`` is that machinery for one process; ``Daemon`` wraps it with discovery, refresh and
signals. With ``ingest.workers`` > 1, ``logger.supervisor`` runs one ``Ingest`` per worker
process (``logger.worker``) instead, each with its ``Share`` of the products and limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from logger.config import Config
from logger.connection import Connection, ConnSettings
from logger.discovery import discover, refetch, report_validation, validate
from logger.logfmt import JsonFormatter
from logger.metrics import Metrics
from logger.pool import Plan, Pool, StartupReport
from logger.products import Product
from logger.protocol import Dialect, get_dialect
from logger.protocol.names import multi_stream
from logger.provenance import Claim, DataDirError, Venue, claim, release
from logger.shard import plan_connections
from logger.sink import Sink
from storage import LOCK_NAME, Engine, EngineConfig, RootInUse, RootLock

log = logging.getLogger("logger.daemon")

EXIT_RECORDS_LOST = 3
"""Exit status after a shutdown that could not write every record (docs/RUNTIME.md)."""


def venue_of(cfg: Config) -> Venue:
    return Venue(cfg.venue.dialect, cfg.venue.ws_url, cfg.venue.rest_url)


def claim_data_dir(root: Path, venue: Venue, *, allow_venue_change: bool = False) -> Claim:
    """Refuse a root held by a running recorder, of another dialect or (unless allowed) of
    another venue; then record this run in it (``logger.provenance``, ``storage.provenance``).
    A previous run that did not stop cleanly is logged as a possible loss."""
    c = claim(root, venue, allow_venue_change=allow_venue_change)
    if c.unclean_previous is not None:
        p = c.unclean_previous
        log.warning("event=unclean_stop_detected root=%s previous_host=%s previous_pid=%s "
                    "previous_started_ns=%s unclean_stops=%d", root, p.get("host"),
                    p.get("pid"), p.get("started_ns"), c.unclean_stops)
    return c


def stop_on_signals(request_stop: Callable[[str], None]) -> None:
    """SIGTERM and SIGINT call ``request_stop(<signal name>)`` on the running loop: every
    process kind (single daemon, supervisor, worker) stops the same ordered way."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)


class StopSignal:
    """The one stop signal of a process (daemon, supervisor, worker): signals
    (``stop_on_signals``), timers and failures call ``request_stop(why)``; the first call is
    logged and sets ``stop_event``, which every part of the process waits on."""

    def __init__(self) -> None:
        self.stop_event = asyncio.Event()

    #: the process's logger (``logger.daemon``, ``logger.supervisor``, ``logger.worker``)
    log: logging.Logger = log

    def request_stop(self, why: str = "stop") -> None:
        if not self.stop_event.is_set():
            self.log.info("event=stopping signal=%s", why)
            self.stop_event.set()


def pin_cpu(cfg: Config, index: int) -> int | None:
    """Pin this recording process (index 0 for the single process, worker i for i) to one
    CPU of ``ingest.cpus``; returns it, or None when the list is empty.

    Why one CPU: the loop thread and the storage thread share the GIL, and handing it over
    between two CPUs costs far more than on one (``bench/ingest.py`` pinned vs unpinned).
    Called before any thread starts, so every later thread inherits the mask.
    """
    cpus = cfg.ingest.cpus
    if not cpus:
        return None
    cpu = cpus[index % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    log.info("event=cpu_pinned cpu=%d", cpu)
    return cpu


def conn_settings(cfg: Config) -> ConnSettings:
    c = cfg.connections
    return ConnSettings(
        max_frame_bytes=c.max_frame_bytes,
        watchdog_s=c.watchdog_s,
        ack_timeout_s=c.ack_timeout_s,
        subscribe_retries=c.subscribe_retries,
        backoff_initial_s=c.backoff_base_s,
        backoff_max_s=c.backoff_max_s,
        backoff_jitter=c.backoff_jitter,
        receive_buffer_bytes=c.receive_buffer_bytes,
        max_write_buffer_bytes=c.max_write_buffer_bytes,
    )


@dataclass(frozen=True, slots=True)
class Share:
    """Which part of the daemon one process is: all of it, or worker ``index`` of ``count``.

    Everything that must differ between worker processes of one data root follows from this
    one value, so the single-process path (``Share()``) is the worker path with every
    difference switched off: connection ids ``w<i>-<n>``, the multi-product stream
    ``_multi-w<i>``, the engine lock ``.lock.w<i>`` (the supervisor holds ``.lock``), stale
    past-day segments sealed by worker 0 only, and the venue's per-IP limits split evenly.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} of {self.count}")

    @property
    def is_worker(self) -> bool:
        return self.count > 1

    @property
    def conn_id_prefix(self) -> str:
        return f"w{self.index}-" if self.is_worker else ""

    @property
    def multi_name(self) -> str:
        return multi_stream(self.index if self.is_worker else None)

    @property
    def lock_name(self) -> str:
        return f"{LOCK_NAME}.w{self.index}" if self.is_worker else LOCK_NAME

    @property
    def seals_stale(self) -> bool:
        """One process seals the past-day segments an earlier run left unsealed."""
        return self.index == 0

    def rate(self, per_second: float) -> float:
        """This process's part of a per-IP venue limit (all workers share one IP)."""
        return per_second / self.count


def engine_config(cfg: Config, share: Share) -> EngineConfig:
    st = cfg.storage
    return EngineConfig(
        root=Path(st.data_dir), backend=st.backend, commit_records=st.commit_records,
        commit_interval_s=st.commit_interval_s, fsync_interval_s=st.fsync_interval,
        segment_max_bytes=st.segment_max_bytes, lock_name=share.lock_name,
        seal_stale_on_open=share.seals_stale,
        # a worker's streams are marked by its supervisor's pass, before any worker starts
        mark_unclean=not share.is_worker,
    )


def mark_unclean_end(cfg: Config) -> None:
    """The sharded daemon's pass over what an earlier run left (``EngineConfig.mark_unclean``):
    one short-lived engine, under a lock of its own next to the supervisor's ``.lock``, writes
    the RESTART and DROPPED markers into whichever streams they belong to, and seals them."""
    ecfg = dataclasses.replace(engine_config(cfg, Share()), lock_name=f"{LOCK_NAME}.mark",
                               seal_stale_on_open=False, mark_unclean=True)
    Engine(ecfg).close()


async def wait_for_old_workers(root: Path, stop_event: asyncio.Event, timeout: float) -> bool:
    """Wait until no worker of an earlier sharded run holds its ``.lock.w<i>``; False (logged)
    after ``timeout`` or when stopped.

    Why: after a ``kill -9`` of a supervisor its workers stop on their own, but sealing takes
    a moment, and they hold only their own locks (the dead supervisor's ``.lock`` is free):
    their streams must be closed before a new daemon, sharded or not, opens any of them.
    """
    deadline = time.monotonic() + timeout
    logged = False
    for path in sorted(root.glob(f"{LOCK_NAME}.w*")):
        while True:
            try:
                RootLock(root, path.name).release()
                break
            except ValueError:
                break  # not a lock name of ours
            except RootInUse:
                if not logged:
                    log.warning("event=waiting_for_old_workers lock=%s", path.name)
                    logged = True
                if time.monotonic() > deadline:
                    log.error("event=old_workers_still_running lock=%s timeout_s=%.0f",
                              path.name, timeout)
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), 0.2)
                if stop_event.is_set():
                    return False
    return True


def report_fields(r: StartupReport) -> str:
    """``connections=… products=… seconds=… settled=… missing=…``: every field of the report,
    in its order (bench/ingest.py parses ``seconds=``), for both the single process and the
    supervisor's line over its workers."""
    parts = []
    for f in fields(r):
        value = getattr(r, f.name)
        parts.append(f"{f.name}={value:.2f}" if isinstance(value, float) else f"{f.name}={value}")
    return " ".join(parts)


Weights = Mapping[str, float]
"""Product id → expected load (24 h volume), in the order the products are planned."""


class Ingest:
    """The recording machinery of one process: sink + storage thread, pool, metrics, and the
    loops that keep them going (time-based commits, status line). Used whole by the
    single-process ``Daemon`` and by each worker process (``logger.worker``); only ``share``
    differs. ``on_fatal`` is called when the storage thread dies, to stop the owner."""

    def __init__(self, cfg: Config, share: Share, on_fatal: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.share = share
        self.dialect: Dialect = get_dialect(cfg.venue.dialect)
        self._on_fatal = on_fatal
        st = cfg.storage
        ecfg = engine_config(cfg, share)
        metrics_ref: list[Metrics] = []
        policy = ecfg.commit_policy  # the engine's and the sink's commit policy: one value
        self.sink = sink = Sink(
            lambda: Engine(ecfg),
            commit_records=policy.records, commit_interval_s=policy.interval_s,
            queue_batches=cfg.ingest.queue_max_batches,
            max_backlog_bytes=st.max_backlog_bytes, shutdown_retry_s=st.shutdown_retry_s,
            on_commit=lambda s, n: metrics_ref[0].observe_commit(s, n) if metrics_ref else None,
        )
        c = cfg.connections
        self.opens_per_second = share.rate(c.opens_per_second)
        self.pool = pool = Pool(
            self.dialect, cfg.venue.ws_url, sink, conn_settings(cfg),
            opens_per_second=self.opens_per_second,
            messages_per_second=share.rate(c.messages_per_second),
            gap_policy=c.on_gap, level2_per_connection=c.level2_products_per_connection,
            conn_id_prefix=share.conn_id_prefix, multi_name=share.multi_name,
        )
        self.metrics = Metrics(
            lambda: [conn.stats for conn in pool.connections.values()], sink.stats,
            lambda: sink.queue.depth, lambda: sink.queue.nbytes,
        )
        metrics_ref.append(self.metrics)
        self.started = False
        self._tasks: list[asyncio.Task[None]] = []

    def open(self) -> None:
        """Start the storage thread and the commit tick (before any connection)."""
        self.sink.start()
        self._spawn(self._tick(), "sink-tick")

    def serve_metrics(self, host: str, port: int) -> int | None:
        """/metrics on host:port; the bound port, or None (logged) when it cannot listen (the
        daemon then stops with exit 2: a recorder nobody can monitor must not run unnoticed).
        A worker's endpoint is for its supervisor only, and says so in its log line."""
        event = "worker_metrics" if self.share.is_worker else "metrics"
        try:
            bound = self.metrics.serve(host, port)
        except OSError as e:
            log.error("event=%s_unavailable host=%s port=%d error=%r note=%s", event, host, port,
                      e.strerror or str(e), "free the port or set metrics.port (exit 2)")
            return None
        log.info("event=%s_listening host=%s port=%d", event, host, bound)
        return bound

    def plan(self, weights: Weights) -> Plan:
        return plan_connections(
            list(weights), self.cfg.venue.channels, self.dialect,
            per_connection=self.cfg.connections.level2_products_per_connection,
            weights=dict(weights),
        )

    def set_products(self, weights: Weights) -> None:
        """Record exactly these products: the first call opens the connections, later ones
        are product refreshes (new listings subscribed, delisted dropped, no restart)."""
        if not self.started:
            if not weights:
                return  # nothing to record yet (a worker with no share); a refresh may add some
            plan = self.plan(weights)
            log.info("event=starting products=%d connections=%d dialect=%s url=%s",
                     len(weights), len(plan), self.dialect.name, self.cfg.venue.ws_url)
            self.pool.start(plan)
            self.started = True
            self._spawn(self._status(), "status")
            return
        all_weights = dict(weights)

        def plan_new(ids: list[str]) -> Plan:
            return self.plan({i: all_weights[i] for i in ids})

        self.pool.update_products(list(weights), plan_new)

    async def startup_report(self) -> StartupReport:
        """Wait until every subscription is answered (or a timeout that grows with the number
        of connections at this process's open rate)."""
        if not self.started:  # nothing to subscribe: every count 0, every time 0
            zero: dict[str, Any] = {f.name: 0.0 if f.type in ("float", float) else 0
                                    for f in fields(StartupReport)}
            return StartupReport(**zero)
        n = len(self.pool.connections)
        timeout = max(30.0, math.ceil(n / max(self.opens_per_second, 0.1)) + 20.0)
        report = await self.pool.wait_started(timeout)
        # The long-lived heap (modules, config, routes, stream buffers, segments) exists by
        # now: move it out of the collector's reach, so the full collections that ingest's
        # container churn triggers do not walk it again and again (storage thread CPU).
        gc.freeze()
        return report

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` until shutdown (cancelled first thing in ``shutdown``)."""
        self._spawn(coro, name)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def shutdown(self) -> int:
        """Stop reading (each connection writes its DISCONNECT markers), hand every pending
        record to the storage thread, commit, seal; 0, 1 if storage failed, or
        ``EXIT_RECORDS_LOST`` (3) when commits still failed after ``storage.shutdown_retry_s``
        and records were lost (counted, logged, and marked DROPPED at the next start)."""
        t0 = time.monotonic()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.pool.stop()
        log.info("event=connections_closed seconds=%.2f", time.monotonic() - t0)
        code = 0
        try:
            lost = await asyncio.to_thread(self.sink.close)
            log.info("event=storage_closed seconds=%.2f", time.monotonic() - t0)
            if lost:
                log.error("event=records_lost_at_shutdown records=%d exit=%d", lost,
                          EXIT_RECORDS_LOST)
                code = EXIT_RECORDS_LOST
        except RuntimeError as e:
            log.error("event=storage_failed error=%r", repr(e.__cause__ or e))
            code = 1
        log.info("%s", self.metrics.status_line())
        self.metrics.stop()
        log.info("event=stopped seconds=%.2f exit=%d", time.monotonic() - t0, code)
        return code

    async def _tick(self) -> None:
        """Time-based commits; a dead storage thread stops the process (exit 1)."""
        sink = self.sink
        while True:
            await asyncio.sleep(0.25)
            sink.tick(time.monotonic())
            if sink.writer_error is not None or not sink.writer_alive:
                log.error("event=storage_thread_dead error=%r", repr(sink.writer_error))
                self._on_fatal("storage_failure")
                return

    async def _status(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.log.status_interval_s)
            log.info("%s", self.metrics.status_line())


@dataclass
class RunResult:
    exit_code: int
    startup: StartupReport | None = None


class Daemon(StopSignal):
    """One ingest process: one event loop thread, one storage thread (docs/RUNTIME.md).
    With ``ingest.workers`` > 1 the CLI runs ``logger.supervisor.Supervisor`` instead."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.dialect: Dialect = get_dialect(cfg.venue.dialect)
        self.root = Path(cfg.storage.data_dir)
        StopSignal.__init__(self)
        self.ingest: Ingest | None = None
        self.startup: StartupReport | None = None
        self.bad_products = False
        """A fixed product list of which the venue lists nothing: exit 2."""

    async def discover(self) -> list[Product] | None:
        return await discover(self.cfg, self.stop_event)

    # ------------------------------------------------------------------ main
    async def run(self) -> RunResult:
        cfg = self.cfg
        stop_on_signals(self.request_stop)
        try:
            claimed = claim_data_dir(self.root, venue_of(cfg),
                                     allow_venue_change=cfg.storage.allow_venue_change)
        except (DataDirError, RootInUse, OSError) as e:
            log.error("event=data_dir_refused error=%r", str(e))
            return RunResult(2)
        if not await wait_for_old_workers(self.root, self.stop_event, 120.0):
            return RunResult(0 if self.stop_event.is_set() else 1)
        ingest = self.ingest = Ingest(cfg, Share(), self.request_stop)
        ingest.metrics.add_root(self.root, claimed.unclean_stops)
        if cfg.metrics.enabled and ingest.serve_metrics(cfg.metrics.host,
                                                        cfg.metrics.port) is None:
            release(self.root)  # nothing opened yet; the operator frees the port or changes it
            return RunResult(2)
        ingest.open()
        try:
            products = await self.discover()
            if products is not None:
                ingest.set_products({p.product_id: p.volume_24h for p in products})
                ingest.spawn(self._startup_report(), "startup")
                if cfg.venue.products != "all":
                    ingest.spawn(self._validate(), "validate")
                if cfg.venue.product_refresh_s > 0:
                    ingest.spawn(self._refresh(), "refresh")
                await self.stop_event.wait()
        finally:
            exit_code = await ingest.shutdown()
            if exit_code == 0:
                release(self.root)  # a clean stop: the next start is not an unclean one
        if self.bad_products and exit_code == 0:
            exit_code = 2
        return RunResult(exit_code, self.startup)

    async def _startup_report(self) -> None:
        assert self.ingest is not None
        self.startup = r = await self.ingest.startup_report()
        log.info("event=all_acknowledged %s", report_fields(r))

    async def _validate(self) -> None:
        """A fixed list records at once; REST, once it answers, only checks it: none listed
        → stop with exit 2 naming them, some → those are unsubscribed."""
        assert self.ingest is not None
        result = await validate(self.cfg, self.stop_event)
        if result is None:
            return
        if not report_validation(result):
            self.bad_products = True
            self.request_stop("products_unknown")
        elif result.unknown:
            self.ingest.set_products({p.product_id: p.volume_24h for p in result.listed})

    async def _refresh(self) -> None:
        """Periodic product refresh: new listings subscribed, delisted dropped, no restart.
        Each fetch has its deadline (``refetch``); whatever goes wrong with one is logged and
        the next one runs on time."""
        assert self.ingest is not None
        while True:
            await asyncio.sleep(self.cfg.venue.product_refresh_s)
            try:
                chosen = await refetch(self.cfg)
                if chosen is not None:
                    self.ingest.set_products({p.product_id: p.volume_24h for p in chosen})
            except Exception as e:  # a bug must not end the refreshes silently
                log.error("event=refresh_error error=%r", repr(e))


def configure_logging(level: str, fmt: str, *, worker: int | None = None) -> None:
    """Structured logs: ``key=value`` messages, as text lines or one JSON object per line
    whose fields are the messages' keys (``logger.logfmt``).

    A worker process (``ingest.workers`` > 1) writes to the same stderr as its supervisor;
    ``worker=i`` on each of its lines (a field of its own in JSON) tells them apart.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        tag = "" if worker is None else f"worker={worker} "
        text = logging.Formatter(
            f"%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s {tag}%(message)s",
            "%Y-%m-%dT%H:%M:%S")
        text.converter = time.gmtime  # UTC, on this formatter only
        handler.setFormatter(text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("picows").setLevel(logging.WARNING)


__all__ = ["EXIT_RECORDS_LOST", "Claim", "Connection", "Daemon", "DataDirError", "Ingest",
           "RunResult", "Share", "StopSignal", "claim_data_dir", "configure_logging", "discover",
           "engine_config", "mark_unclean_end", "refetch", "report_fields", "venue_of",
           "wait_for_old_workers"]
