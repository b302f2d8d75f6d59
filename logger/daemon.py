"""The ingest daemon: config → products → pool of connections → sink → storage, until a signal.

Why it is shaped like this: everything that can block (REST discovery, the storage engine) is
kept off the event loop (a thread for the one, the sink's storage thread for the other), so the
loop only reads sockets. Shutdown is ordered so nothing received is lost: stop reading (each
connection writes its DISCONNECT markers), then hand every pending record to the storage
thread, commit, seal, and exit 0. The UTC day roll needs no code here: every record goes to the
segment of its own day, and each commit (at least every ``commit_interval_s``) passes the wall
clock, which seals the segments of past days — ingest never pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from logger.config import Config
from logger.connection import Connection, ConnSettings
from logger.metrics import Metrics
from logger.pool import Plan, Pool, StartupReport
from logger.products import Product, ProductsError, fetch_products, select_products
from logger.protocol import Dialect, get_dialect
from logger.shard import plan_connections
from logger.sink import Sink
from storage import Engine, EngineConfig

log = logging.getLogger("logger.daemon")

DATA_DIR_META = ".coinbase-logger.json"
"""Marker file at the data root recording which dialect the directory holds."""


class DataDirError(RuntimeError):
    """The data directory belongs to another dialect (or cannot be claimed)."""


def claim_data_dir(root: Path, dialect: str) -> None:
    """Record the dialect in ``root``; refuse a directory that holds the other dialect.

    The two feeds use different shapes for the same stream names (``ticker`` exists in both),
    so mixing them in one tree would leave a reader unable to tell which shape a file holds.
    """
    root.mkdir(parents=True, exist_ok=True)
    meta = root / DATA_DIR_META
    if meta.exists():
        try:
            held = json.loads(meta.read_text()).get("dialect")
        except (OSError, ValueError, AttributeError) as e:
            raise DataDirError(f"{meta}: unreadable ({e}); fix or remove it") from e
        if held != dialect:
            raise DataDirError(
                f"data dir {root} holds dialect {held!r}, refusing to record {dialect!r} into it"
                " (use another --data-dir)")
        return
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps({"dialect": dialect, "created_ns": time.time_ns()}) + "\n")
    tmp.replace(meta)


def conn_settings(cfg: Config) -> ConnSettings:
    c = cfg.connections
    return ConnSettings(
        max_frame_bytes=c.max_frame_bytes,
        watchdog_s=c.watchdog_s,
        ack_timeout_s=c.ack_timeout_s,
        backoff_initial_s=c.backoff_base_s,
        backoff_max_s=c.backoff_max_s,
        backoff_jitter=c.backoff_jitter,
        receive_buffer_bytes=c.receive_buffer_bytes,
    )


@dataclass
class RunResult:
    exit_code: int
    startup: StartupReport | None = None


class Daemon:
    """One ingest process: one event loop thread, one storage thread (docs/RUNTIME.md)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.dialect: Dialect = get_dialect(cfg.venue.dialect)
        self.root = Path(cfg.storage.data_dir)
        self.stop_event = asyncio.Event()
        self.sink: Sink | None = None
        self.pool: Pool | None = None
        self.metrics: Metrics | None = None
        self.startup: StartupReport | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ products and plan
    async def discover(self) -> list[Product] | None:
        """Fetch the product list, retrying with backoff until it works or we are stopped."""
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                chosen = await self._fetch_chosen()
                if chosen:
                    return chosen
                msg = "no recordable product in the venue's list"
            except ProductsError as e:
                msg = str(e)
            log.warning("event=products_unavailable retry_in_s=%.0f error=%r", delay, msg)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), delay)
            delay = min(60.0, delay * 2)
        return None

    async def _fetch_chosen(self) -> list[Product]:
        """The venue's products the config selects; the REST call blocks, so it runs in a
        worker thread. Raises ProductsError."""
        v = self.cfg.venue
        available = await asyncio.to_thread(fetch_products, v.rest_url, v.dialect,
                                            v.rest_timeout_s)
        return select_products(available, v.products, v.exclude_products)

    def plan(self, products: Sequence[Product]) -> Plan:
        return plan_connections(
            [p.product_id for p in products], self.cfg.venue.channels, self.dialect,
            per_connection=self.cfg.connections.level2_products_per_connection,
            weights={p.product_id: p.volume_24h for p in products},
        )

    # ------------------------------------------------------------------ main
    async def run(self) -> RunResult:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        try:
            claim_data_dir(self.root, self.dialect.name)
        except (DataDirError, OSError) as e:
            log.error("event=data_dir_refused error=%r", str(e))
            return RunResult(2)
        st = cfg.storage
        engine_cfg = EngineConfig(
            root=self.root, backend=st.backend, commit_records=st.commit_records,
            commit_interval_s=st.commit_interval_s, fsync_interval_s=st.fsync_interval,
            segment_max_bytes=st.segment_max_bytes,
        )
        metrics_ref: list[Metrics] = []
        sink = self.sink = Sink(
            lambda: Engine(engine_cfg),
            commit_records=st.commit_records, commit_interval_s=st.commit_interval_s,
            queue_batches=cfg.ingest.queue_max_batches,
            on_commit=lambda s, n: metrics_ref[0].observe_commit(s, n) if metrics_ref else None,
        )
        sink.start()
        pool = self.pool = Pool(
            self.dialect, cfg.venue.ws_url, sink, conn_settings(cfg),
            opens_per_second=cfg.connections.opens_per_second,
            messages_per_second=cfg.connections.messages_per_second,
            gap_policy=cfg.connections.on_gap,
            level2_per_connection=cfg.connections.level2_products_per_connection,
        )
        metrics = self.metrics = Metrics(
            lambda: [c.stats for c in pool.connections.values()], sink.stats,
            lambda: sink.queue.depth, lambda: sink.queue.nbytes,
        )
        metrics_ref.append(metrics)
        if cfg.metrics.enabled:
            try:
                port = metrics.serve(cfg.metrics.host, cfg.metrics.port)
                log.info("event=metrics_listening host=%s port=%d", cfg.metrics.host, port)
            except OSError as e:
                log.error("event=metrics_unavailable host=%s port=%d error=%r",
                          cfg.metrics.host, cfg.metrics.port, str(e))
        self._tasks.append(loop.create_task(self._tick(), name="sink-tick"))
        exit_code = 0
        try:
            products = await self.discover()
            if products is not None:
                plan = self.plan(products)
                log.info("event=starting products=%d connections=%d dialect=%s url=%s",
                         len(products), len(plan), self.dialect.name, cfg.venue.ws_url)
                pool.start(plan)
                self._tasks.append(loop.create_task(self._status(), name="status"))
                self._tasks.append(loop.create_task(self._startup_report(), name="startup"))
                if cfg.venue.product_refresh_s > 0:
                    self._tasks.append(loop.create_task(self._refresh(), name="refresh"))
                await self.stop_event.wait()
        finally:
            exit_code = await self._shutdown()
        return RunResult(exit_code, self.startup)

    def request_stop(self, why: str = "stop") -> None:
        if not self.stop_event.is_set():
            log.info("event=stopping signal=%s", why)
            self.stop_event.set()

    async def _shutdown(self) -> int:
        t0 = time.monotonic()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.pool is not None:
            await self.pool.stop()
        log.info("event=connections_closed seconds=%.2f", time.monotonic() - t0)
        code = 0
        if self.sink is not None:
            try:
                await asyncio.to_thread(self.sink.close)
                log.info("event=storage_closed seconds=%.2f", time.monotonic() - t0)
            except RuntimeError as e:
                log.error("event=storage_failed error=%r", repr(e.__cause__ or e))
                code = 1
        if self.metrics is not None:
            log.info("%s", self.metrics.status_line())
            self.metrics.stop()
        log.info("event=stopped seconds=%.2f exit=%d", time.monotonic() - t0, code)
        return code

    # ------------------------------------------------------------------ background loops
    async def _tick(self) -> None:
        """Time-based commits; a dead storage thread stops the daemon (exit 1)."""
        sink = self.sink
        assert sink is not None
        while True:
            await asyncio.sleep(0.25)
            sink.tick(time.monotonic())
            if sink.writer_error is not None or not sink.writer_alive:
                log.error("event=storage_thread_dead error=%r", repr(sink.writer_error))
                self.request_stop("storage_failure")
                return

    async def _status(self) -> None:
        assert self.metrics is not None
        while True:
            await asyncio.sleep(self.cfg.log.status_interval_s)
            log.info("%s", self.metrics.status_line())

    async def _startup_report(self) -> None:
        assert self.pool is not None
        pool = self.pool
        timeout = max(30.0, math.ceil(len(pool.connections) / 8) + 20.0)
        self.startup = r = await pool.wait_started(timeout)
        log.info("event=all_acknowledged connections=%d products=%d seconds=%.2f settled=%d "
                 "missing=%d", r.connections, r.products, r.seconds, r.settled, r.missing)

    async def _refresh(self) -> None:
        """Periodic product refresh: new listings subscribed, delisted dropped, no restart."""
        v = self.cfg.venue
        assert self.pool is not None
        while True:
            await asyncio.sleep(v.product_refresh_s)
            try:
                chosen = await self._fetch_chosen()
            except ProductsError as e:
                log.warning("event=refresh_failed error=%r", str(e))
                continue
            if not chosen:
                log.warning("event=refresh_empty note=keeping_current_products")
                continue
            by_id = {p.product_id: p for p in chosen}

            def plan_new(ids: list[str], by_id: dict[str, Product] = by_id) -> Plan:
                return self.plan([by_id[i] for i in ids])

            self.pool.update_products([p.product_id for p in chosen], plan_new)


def configure_logging(level: str, fmt: str) -> None:
    """Structured logs: ``key=value`` messages, as text lines or one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        text = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s",
                                 "%Y-%m-%dT%H:%M:%S")
        text.converter = time.gmtime  # UTC, on this formatter only
        handler.setFormatter(text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("picows").setLevel(logging.WARNING)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


__all__ = ["Connection", "Daemon", "DataDirError", "RunResult", "claim_data_dir",
           "configure_logging"]
