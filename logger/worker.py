"""One worker process of a sharded daemon (``ingest.workers`` > 1): ``python -m logger worker``.

Why a process of its own: one Python process reads sockets on one core; a worker records its
share of the products with everything a single-process daemon has (``logger.daemon.Ingest``:
its own connections, sink, storage thread and engine) and shares nothing with the other
workers but the data root, in which it writes only its own streams (one writer per stream).

The supervisor (``logger.supervisor``) talks to it over a pipe, one JSON object per line:

- supervisor → worker, on stdin: ``{"op": "init", "index", "count", "parent_pid", "config"}``
  first, then ``{"op": "products", "products": [[id, volume_24h], ...]}`` (the first one opens
  the connections; later ones are product refreshes) and ``{"op": "stop"}``.
- worker → supervisor, on stdout: ``{"ev": "ready", "metrics_port"}`` once storage runs,
  ``{"ev": "started", "report": {...}, "started_monotonic"}`` once its subscriptions are
  answered (CLOCK_MONOTONIC is system-wide, so the supervisor can time the whole startup),
  ``{"ev": "stopped", "code"}`` at the end.

A worker stops cleanly (stop reading, commit, seal, exit 0) on SIGTERM/SIGINT, on ``stop``,
and when its supervisor is gone: ``PR_SET_PDEATHSIG`` turns the parent's death into SIGTERM,
and end-of-file on stdin catches the same without it. Its log lines carry ``worker=i``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, BinaryIO

from logger.config import Config, ConfigError, load_config
from logger.daemon import (
    Ingest,
    Share,
    StopSignal,
    configure_logging,
    pin_cpu,
    report_fields,
    stop_on_signals,
)

log = logging.getLogger("logger.worker")

PR_SET_PDEATHSIG = 1
CONTROL_LINE_LIMIT = 64 << 20
"""Longest control line (a product list of tens of thousands of products fits)."""


def encode(msg: Mapping[str, object]) -> bytes:
    """One control message: a JSON object on one line."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """A control message; ValueError when the line is not a JSON object."""
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"control line is not a JSON object: {line[:80]!r}")
    return obj


def weights_of(items: object) -> dict[str, float]:
    """``[[product_id, volume_24h], ...]`` → ordered weights; ValueError on another shape."""
    if not isinstance(items, list):
        raise ValueError("products: expected a list")
    out: dict[str, float] = {}
    for item in items:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or isinstance(item[1], bool) or not isinstance(item[1], int | float)):
            raise ValueError(f"products: bad item {item!r}")
        out[item[0]] = float(item[1])
    return out


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux; elsewhere stdin EOF does it)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Worker(StopSignal):
    """Runs one ``Ingest`` with its ``Share`` until stopped; reports over ``out``."""

    log = log

    def __init__(self, cfg: Config, share: Share, parent_pid: int, ctl_in: BinaryIO,
                 out: BinaryIO) -> None:
        self.cfg = cfg
        self.share = share
        self.parent_pid = parent_pid
        self._in = ctl_in
        self._out = out
        StopSignal.__init__(self)

    def send(self, msg: Mapping[str, object]) -> None:
        """Best effort: a supervisor that is gone cannot be told, and the worker stops anyway."""
        with contextlib.suppress(OSError, ValueError):
            self._out.write(encode(msg))
            self._out.flush()

    async def run(self) -> int:
        stop_on_signals(self.request_stop)
        if os.getppid() != self.parent_pid:  # died before PR_SET_PDEATHSIG took effect
            self.request_stop("parent_gone")
        ingest = Ingest(self.cfg, self.share, self.request_stop)
        ingest.open()
        port = None
        if self.cfg.metrics.enabled:
            port = ingest.serve_metrics("127.0.0.1", 0)
        self.send({"ev": "ready", "metrics_port": port, "pid": os.getpid()})
        reader = asyncio.get_running_loop().create_task(self._control(ingest), name="control")
        try:
            await self.stop_event.wait()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            code = await ingest.shutdown()
        self.send({"ev": "stopped", "code": code})
        return code

    async def _control(self, ingest: Ingest) -> None:
        """Apply the supervisor's messages; its end of the pipe closing means it is gone."""
        started = False
        reader = asyncio.StreamReader(limit=CONTROL_LINE_LIMIT)
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._in)
        while True:
            try:
                line = await reader.readline()
            except ValueError as e:  # a line over the limit: the pipe is out of step
                log.error("event=control_bad error=%r", str(e))
                line = b""
            if not line:
                self.request_stop("parent_gone")
                return
            try:
                msg = decode(line)
                op = msg.get("op")
                if op == "stop":
                    self.request_stop("supervisor")
                elif op == "products":
                    ingest.set_products(weights_of(msg.get("products")))
                    if not started:
                        started = True
                        ingest.spawn(self._report(ingest), "startup")
                else:
                    log.warning("event=control_unknown op=%r", op)
            except ValueError as e:
                log.error("event=control_bad error=%r", str(e))

    async def _report(self, ingest: Ingest) -> None:
        r = await ingest.startup_report()
        started = ingest.pool.started_monotonic if ingest.started else time.monotonic()
        log.info("event=worker_acknowledged %s", report_fields(r))
        self.send({"ev": "started", "report": asdict(r), "started_monotonic": started})


def _read_line(fd: int) -> bytes:
    """One line straight from the fd, byte by byte: a buffered read could swallow the start of
    the next message, which the event loop then reads from the same fd (the init line is
    small and read once)."""
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            return b""
        buf += chunk
    return bytes(buf)


def main() -> int:
    """Entry point of ``python -m logger worker`` (started by the supervisor, not by users)."""
    die_with_parent()
    ctl_in = sys.stdin.buffer
    # the control channel is the original stdout; stray prints go to stderr instead
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    line = _read_line(ctl_in.fileno())
    if not line:
        return 1  # the supervisor died before handing over the config
    try:
        init = decode(line)
        if init.get("op") != "init":
            raise ValueError(f"expected init, got {init.get('op')!r}")
        cfg = load_config(None, init["config"])
        share = Share(int(init["index"]), int(init["count"]))
        parent_pid = int(init["parent_pid"])
    except (ValueError, KeyError, TypeError, ConfigError) as e:
        print(f"coinbase-logger worker: bad init message: {e}", file=sys.stderr)
        return 2
    configure_logging(cfg.log.level, cfg.log.format, worker=share.index)
    pin_cpu(cfg, share.index)
    worker = Worker(cfg, share, parent_pid, ctl_in, out)
    return asyncio.run(worker.run())


__all__ = ["Worker", "decode", "die_with_parent", "encode", "main", "weights_of"]
