"""The sharded daemon (``ingest.workers`` = N > 1): one supervisor, N worker processes.

Why processes: one Python process reads its sockets on one core. Sharding the *products*
over worker processes (``logger.worker``) multiplies that, and keeps the storage rule of one
writer per stream: each worker has its own connections (ids ``w<i>-<n>``), its own
multi-product stream (``_multi-w<i>``), its own storage engine (lock ``.lock.w<i>``), so no
two processes ever write the same file.

The supervisor does what must happen once per data root and per IP:

- it claims the data dir and holds ``<root>/.lock`` for its whole life (a second daemon on the
  root is refused, exit 2), and waits for workers of an earlier run that are still sealing;
- it discovers the products (same retry as the single process), splits them into N groups
  balanced by expected load (``partition``), hands each worker its group, and on each product
  refresh gives new listings to the least-loaded worker and delistings to their holder;
- it serves the one ``/metrics`` endpoint, scraping each worker's private endpoint
  (127.0.0.1, any port) and adding a ``worker`` label to every series;
- it logs one ``event=all_acknowledged`` line over all workers (the same fields as the
  single process's), timed from the moment it handed out the products to the last worker's
  answer (each worker reports when its pool started; CLOCK_MONOTONIC is system-wide).

Workers are started with ``python -m logger worker`` (a fresh interpreter: no fork after
the event loop) and controlled over their stdin/stdout (JSON lines, see ``logger.worker``).
The venue's per-IP limits (``connections.opens_per_second`` and ``messages_per_second``) are
split evenly over the workers, so the whole daemon stays within them.

Failure policy: SIGTERM/SIGINT → forwarded to every worker → each stops reading, commits,
seals and exits 0 → the supervisor releases the lock and exits 0. A worker that exits on
its own (crash, kill -9, any code) is logged (``event=worker_died worker=i code=c``), the
others are stopped cleanly and the supervisor exits 1, for the service manager to restart
the whole daemon; what was committed is kept. If the supervisor itself is killed, each worker
gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``) or end-of-file on its control pipe, and
stops cleanly on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

import logger
from logger.config import Config, config_values
from logger.daemon import (
    EXIT_RECORDS_LOST,
    DataDirError,
    StopSignal,
    claim_data_dir,
    mark_unclean_end,
    report_fields,
    stop_on_signals,
    venue_of,
    wait_for_old_workers,
)
from logger.discovery import discover, refetch, report_validation, validate
from logger.metrics import RootCollector
from logger.pool import StartupReport
from logger.products import Product
from logger.provenance import release
from logger.worker import decode, encode
from storage import LOCK_NAME, RootInUse, RootLock

log = logging.getLogger("logger.supervisor")

STOP_TIMEOUT_S = 45.0
"""How long a stopping worker may take to commit and seal before it is killed (exit 1);
inside the 60 s the systemd unit (deploy/) allows the whole daemon to stop."""
SIGNAL_GRACE_S = 1.0
"""A worker that exited 0 unasked is a clean stop if our own stop signal follows this soon."""
READY_TIMEOUT_S = 60.0
"""How long a new worker may take to start its storage before the daemon gives up."""
OLD_WORKERS_TIMEOUT_S = 120.0
"""How long to wait for workers of an earlier run (still sealing) to release their locks
(a daemon started in their place exits 1 after that, to be restarted)."""
SCRAPE_TIMEOUT_S = 5.0

Group = dict[str, float]
"""One worker's products: id → 24 h volume, in the venue's order."""


# ---------------------------------------------------------------------------- partitioning
def _loads(products: Mapping[str, float]) -> dict[str, float]:
    """Expected load of each product: half by its share of the 24 h volume (busy books send
    more updates), half flat (every product has its heartbeats, candles, ticker and book
    snapshot whatever it trades), so zero-volume listings are spread too."""
    n = len(products)
    if not n:
        return {}
    total = sum(max(v, 0.0) for v in products.values())
    if total <= 0:
        return dict.fromkeys(products, 1.0 / n)
    return {p: 0.5 * max(v, 0.0) / total + 0.5 / n for p, v in products.items()}


def partition(products: Mapping[str, float], workers: int,
              current: Sequence[Mapping[str, float]] | None = None) -> list[Group]:
    """Split ``products`` (id → volume) over ``workers`` groups balanced by expected load.

    With ``current`` (the groups now running), a product keeps its worker, one no longer in
    ``products`` is dropped from it, and each new one goes to the least-loaded worker (the
    heaviest first): a refresh moves no product between processes.
    """
    loads = _loads(products)
    owner: dict[str, int] = {}
    for i, group in enumerate(current or ()):
        for p in group:
            if p in products and p not in owner:
                owner[p] = i
    load = [0.0] * workers
    count = [0] * workers
    for p, i in owner.items():
        load[i] += loads[p]
        count[i] += 1
    for p in sorted((p for p in products if p not in owner), key=lambda p: -loads[p]):
        i = min(range(workers), key=lambda w: (load[w], count[w], w))
        owner[p] = i
        load[i] += loads[p]
        count[i] += 1
    groups: list[Group] = [{} for _ in range(workers)]
    for p, v in products.items():
        groups[owner[p]][p] = v
    return groups


def volumes(products: Sequence[Product]) -> dict[str, float]:
    return {p.product_id: p.volume_24h for p in products}


# ---------------------------------------------------------------------------- metrics
class WorkersCollector(Collector):
    """Scrapes each worker's private /metrics at scrape time and adds the ``worker`` label."""

    def __init__(self, endpoints: Callable[[], list[tuple[int, int | None, bool]]],
                 workers: int) -> None:
        self._endpoints = endpoints
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily("cbl_worker_up", "1 while the worker process runs and answers "
                               "its metrics scrape", labels=["worker"])
        for index, port, alive in self._endpoints():
            ok = False
            if alive and port:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=SCRAPE_TIMEOUT_S) as r:
                        text = r.read().decode("utf-8")
                    for fam in text_string_to_metric_families(text):
                        out = merged.get(fam.name)
                        if out is None:
                            out = merged[fam.name] = Metric(fam.name, fam.documentation,
                                                            fam.type, fam.unit)
                        for s in fam.samples:
                            out.add_sample(s.name, {**s.labels, "worker": str(index)},
                                           s.value, s.timestamp, s.exemplar)
                    ok = True
                except (OSError, ValueError) as e:
                    log.warning("event=worker_scrape_failed worker=%d error=%r", index, str(e))
            up.add_metric([str(index)], 1.0 if ok else 0.0)
        yield from merged.values()
        yield up
        yield GaugeMetricFamily("cbl_workers", "worker processes configured (ingest.workers)",
                                value=float(self._workers))


# ---------------------------------------------------------------------------- workers
@dataclass
class WorkerHandle:
    """The supervisor's view of one worker process."""

    index: int
    proc: asyncio.subprocess.Process
    group: Group = field(default_factory=dict)
    metrics_port: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    report: StartupReport | None = None
    started_monotonic: float = 0.0
    exit_code: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    async def send(self, msg: Mapping[str, object]) -> None:
        """Best effort: a worker that is gone is handled by its exit watcher."""
        stdin = self.proc.stdin
        if stdin is None or not self.alive:
            return
        with contextlib.suppress(OSError, RuntimeError):
            stdin.write(encode(msg))
            await stdin.drain()

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


def _worker_env() -> dict[str, str]:
    """The worker must import this very ``logger`` package, wherever the daemon was started."""
    env = dict(os.environ)
    here = str(Path(logger.__file__).resolve().parents[1])
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def aggregate(reports: Sequence[tuple[StartupReport, float]], t0: float) -> StartupReport:
    """One report over the workers' ``(report, started_monotonic)``: counts summed, each time
    (a float field: seconds since that worker's pool started) turned into the supervisor's
    time from ``t0`` to the last worker's, so the line reads as the single process's does."""
    values: dict[str, Any] = {}
    for f in fields(StartupReport):
        vals = [(getattr(r, f.name), started) for r, started in reports]
        if vals and isinstance(vals[0][0], float):
            values[f.name] = max(0.0, max(started + v for v, started in vals) - t0)
        else:
            values[f.name] = sum(v for v, _ in vals)
    return StartupReport(**values)


class Supervisor(StopSignal):
    """Runs ``cfg.ingest.workers`` worker processes over one data root until a signal."""

    log = log

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.count = cfg.ingest.workers
        self.root = Path(cfg.storage.data_dir)
        StopSignal.__init__(self)
        self.workers: list[WorkerHandle] = []
        self.failed = False
        self.bad_products = False
        """A fixed product list of which the venue lists nothing: exit 2."""
        self.records_lost = False  # a worker exited EXIT_RECORDS_LOST
        self.startup: StartupReport | None = None
        self.metrics_port: int | None = None
        self.unclean_stops = 0
        self._server: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ main
    async def run(self) -> int:
        stop_on_signals(self.request_stop)
        t_start = time.monotonic()
        try:
            claimed = claim_data_dir(self.root, venue_of(self.cfg),
                                     allow_venue_change=self.cfg.storage.allow_venue_change)
            lock = RootLock(self.root, LOCK_NAME)
        except (DataDirError, RootInUse, OSError) as e:
            log.error("event=data_dir_refused error=%r", str(e))
            return 2
        self.unclean_stops = claimed.unclean_stops
        if not self._serve_metrics():
            release(self.root)
            lock.release()
            return 2
        try:
            await self._run()
        finally:
            code = await self._shutdown()
            if code == 0:
                release(self.root)
            lock.release()
        if self.bad_products and code == 0:
            code = 2
        log.info("event=stopped seconds=%.2f exit=%d workers=%d",
                 time.monotonic() - t_start, code, self.count)
        return code

    async def _run(self) -> None:
        if not await wait_for_old_workers(self.root, self.stop_event, OLD_WORKERS_TIMEOUT_S):
            if not self.stop_event.is_set():
                self.failed = True
            return
        # what an earlier run's crash or failed shutdown may have lost, marked while no
        # worker writes (any worker may own any stream now)
        await asyncio.to_thread(mark_unclean_end, self.cfg)
        for i in range(self.count):
            await self._spawn(i)
        if not await self._until(self._all(lambda w: w.ready), READY_TIMEOUT_S):
            if not self.stop_event.is_set():
                log.error("event=workers_not_ready timeout_s=%.0f", READY_TIMEOUT_S)
                self.failed = True
            return
        products = await discover(self.cfg, self.stop_event)
        if products is None:
            return
        groups = partition(volumes(products), self.count)
        log.info("event=starting products=%d workers=%d split=%s dialect=%s", len(products),
                 self.count, "/".join(str(len(g)) for g in groups), self.cfg.venue.dialect)
        t0 = time.monotonic()
        for w, group in zip(self.workers, groups, strict=True):
            w.group = group
            await w.send({"op": "products", "products": [[p, v] for p, v in group.items()]})
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._startup_report(t0), name="startup"))
        if self.cfg.venue.products != "all":
            self._tasks.append(loop.create_task(self._validate(), name="validate"))
        if self.cfg.venue.product_refresh_s > 0:
            self._tasks.append(loop.create_task(self._refresh(), name="refresh"))
        await self.stop_event.wait()

    def _serve_metrics(self) -> bool:
        """The one /metrics of the daemon; False (logged) when its port cannot be bound."""
        m = self.cfg.metrics
        if not m.enabled:
            return True
        registry = CollectorRegistry()
        registry.register(WorkersCollector(
            lambda: [(w.index, w.metrics_port, w.alive) for w in self.workers], self.count))
        registry.register(RootCollector(self.root, self.unclean_stops))
        try:
            server, _thread = start_http_server(m.port, addr=m.host, registry=registry)
        except OSError as e:
            log.error("event=metrics_unavailable host=%s port=%d error=%r note=%s", m.host,
                      m.port, e.strerror or str(e), "free the port or set metrics.port (exit 2)")
            return False
        self._server = server
        self.metrics_port = int(server.server_address[1])
        log.info("event=metrics_listening host=%s port=%d", m.host, self.metrics_port)
        return True

    async def _spawn(self, index: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "logger", "worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_worker_env())
        w = WorkerHandle(index, proc)
        self.workers.append(w)
        log.info("event=worker_started worker=%d pid=%d", index, proc.pid)
        await w.send({"op": "init", "index": index, "count": self.count,
                      "parent_pid": os.getpid(), "config": config_values(self.cfg)})
        loop = asyncio.get_running_loop()
        w.tasks.append(loop.create_task(self._read(w), name=f"worker{index}-read"))
        w.tasks.append(loop.create_task(self._watch(w), name=f"worker{index}-exit"))

    async def _read(self, w: WorkerHandle) -> None:
        """The worker's reports, until its end of the pipe closes."""
        assert w.proc.stdout is not None
        while True:
            line = await w.proc.stdout.readline()
            if not line:
                return
            try:
                msg = decode(line)
            except ValueError as e:
                log.error("event=worker_bad_message worker=%d error=%r", w.index, str(e))
                continue
            ev = msg.get("ev")
            if ev == "ready":
                port = msg.get("metrics_port")
                w.metrics_port = port if isinstance(port, int) else None
                w.ready.set()
            elif ev == "started":
                rep = msg.get("report")
                if isinstance(rep, dict):
                    w.report = StartupReport(**{f.name: rep[f.name]
                                                for f in fields(StartupReport)})
                w.started_monotonic = float(msg.get("started_monotonic", time.monotonic()))
                w.started.set()

    async def _watch(self, w: WorkerHandle) -> None:
        code = await w.proc.wait()
        w.exit_code = code
        if code == 0 and not self.stop_event.is_set():
            # systemd (KillMode=control-group) and a terminal's Ctrl-C signal every process
            # at once: a worker may finish stopping before our own signal handler has run
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), SIGNAL_GRACE_S)
        if not self.stop_event.is_set():
            log.error("event=worker_died worker=%d pid=%d code=%d", w.index, w.proc.pid, code)
            self.failed = True
            self.request_stop("worker_died")
        elif code == EXIT_RECORDS_LOST:
            log.error("event=worker_lost_records worker=%d pid=%d code=%d", w.index,
                      w.proc.pid, code)
            self.records_lost = True
        elif code != 0:
            log.error("event=worker_failed worker=%d pid=%d code=%d", w.index, w.proc.pid,
                      code)
            self.failed = True

    def _all(self, event: Callable[[WorkerHandle], asyncio.Event]) -> Callable[[], bool]:
        return lambda: all(event(w).is_set() for w in self.workers)

    async def _until(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``cond()`` holds; False on timeout or stop."""
        end = time.monotonic() + timeout
        while not cond():
            if self.stop_event.is_set() or time.monotonic() > end:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), 0.05)
        return True

    # ------------------------------------------------------------------ background
    async def _startup_report(self, t0: float) -> None:
        await self._until(self._all(lambda w: w.started), float("inf"))
        if self.stop_event.is_set():
            return
        self.startup = r = aggregate([(w.report, w.started_monotonic) for w in self.workers
                                      if w.report is not None], t0)
        log.info("event=all_acknowledged %s workers=%d", report_fields(r), self.count)

    async def _validate(self) -> None:
        """A fixed list records at once; REST, once it answers, only checks it: none listed
        → stop with exit 2 naming them, some → those are dropped."""
        result = await validate(self.cfg, self.stop_event)
        if result is None:
            return
        if not report_validation(result):
            self.bad_products = True
            self.request_stop("products_unknown")
        elif result.unknown:
            await self._regroup(result.listed)

    async def _refresh(self) -> None:
        """New listings to the least-loaded worker, delistings dropped by their holder. Each
        fetch has its deadline; a failed one is logged and the next runs on time."""
        while True:
            await asyncio.sleep(self.cfg.venue.product_refresh_s)
            try:
                chosen = await refetch(self.cfg)
                if chosen is not None:
                    await self._regroup(chosen)
            except Exception as e:  # a bug must not end the refreshes silently
                log.error("event=refresh_error error=%r", repr(e))

    async def _regroup(self, chosen: list[Product]) -> None:
        """Send each worker its share of ``chosen`` where it changed."""
        groups = partition(volumes(chosen), self.count, [w.group for w in self.workers])
        for w, group in zip(self.workers, groups, strict=True):
            if list(group) != list(w.group):
                added = len(set(group) - set(w.group))
                removed = len(set(w.group) - set(group))
                log.info("event=worker_products worker=%d products=%d added=%d removed=%d",
                         w.index, len(group), added, removed)
                w.group = group
                await w.send({"op": "products",
                              "products": [[p, v] for p, v in group.items()]})

    # ------------------------------------------------------------------ shutdown
    async def _shutdown(self) -> int:
        """Forward the stop to every worker, wait for each to commit and seal; 0 if every
        worker stopped cleanly and none died before."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for w in self.workers:
            w.signal(signal.SIGTERM)
        watchers = [t for w in self.workers for t in w.tasks]
        if watchers:
            _done, pending = await asyncio.wait(watchers, timeout=STOP_TIMEOUT_S)
            if pending:
                for w in self.workers:
                    if w.alive:
                        log.error("event=worker_stop_timeout worker=%d timeout_s=%.0f",
                                  w.index, STOP_TIMEOUT_S)
                        w.signal(signal.SIGKILL)
                        self.failed = True
                await asyncio.wait(watchers, timeout=10)
        for w in self.workers:
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        return 1 if self.failed else EXIT_RECORDS_LOST if self.records_lost else 0


__all__ = ["Supervisor", "WorkersCollector", "aggregate", "partition"]
