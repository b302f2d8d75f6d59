"""Per-stream batches on the event loop → one bounded queue → one storage thread owning the Engine.

Why this shape: the socket reader must never wait for a disk. The loop side only appends the
raw bytes object the WebSocket library already created (plus its receive stamp) to two plain
lists of the stream's buffer — no per-message object, no syscall. Every ``commit_records``
messages or ``commit_interval_s`` seconds the buffers are swapped for fresh lists and the full
ones travel as ONE ``Batch`` through a bounded queue to the storage thread, which hands each
stream's lists to the engine (``Engine.write_trusted``: committed on the way in where they can
be, else buffered) and commits once per batch.

If the storage thread falls behind, batches stay pending on the loop side (the buffers keep
growing) until ``max_pending_bytes``; only then is the pending data dropped, counted per
stream, and a ``DROPPED`` marker written at the head of that stream's next batch, so a reader
knows exactly which interval is missing. Nothing is ever lost silently.

The storage thread bounds the engine in the same way: while commits fail (ENOSPC, EIO) the
engine keeps the records pending and retries them at every commit; once those pending bytes
reach ``max_backlog_bytes`` the thread stops handing the engine more, counts what it drops per
stream, and when a commit succeeds again (space is back) writes one ``DROPPED`` marker
``{"reason":"storage_commit_failing","records":N,"first_ts_ns":…,"last_ts_ns":…,"errno":E}``
into each affected stream, before its next records. Commit errors are logged once per distinct
(stream, errno) while they last, and their end once.

Every DROPPED marker carries the time of what it describes (its receive time is the first
dropped record's), so it sits where the loss is, never before records received earlier.

At shutdown with commits still failing, the storage thread retries them for
``shutdown_retry_s``; what is still not written after that is counted as dropped, logged at
ERROR and listed by the engine's close in the root's loss ledger, which the next start turns
into DROPPED markers (``storage.unclean``); ``Sink.close`` returns that count (the daemon exits
3 when it is not 0).
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from logger.protocol.actions import MarkerKind, marker_payload
from storage import CommitPolicy, Engine, InvalidStreamName, RecordKind, Stream, validate_name

log = logging.getLogger("logger.sink")

StreamKey = tuple[str, str]

#: the commit thresholds' defaults and rule belong to storage (one owner: ``CommitPolicy``)
_COMMIT = CommitPolicy()


class Counts(Protocol):
    """Where a receive step counts messages and bytes (a connection's per-channel counters,
    ``logger.metrics.ChannelCount``)."""

    messages: int
    bytes: int


class _Uncounted:
    __slots__ = ("bytes", "messages")

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0


_NOWHERE = _Uncounted()


def _uncounted(channel: str) -> Counts:
    """The counters of ``Sink.add``, which nobody reads."""
    return _NOWHERE


Receive = Callable[[StreamKey, int, bytes], None]
"""``receive(key, ts_ns, raw)``: one message into its stream (``Sink.receiver``)."""


class StreamBuf:
    """The pending records of one stream; persistent, its lists are swapped at each flush."""

    __slots__ = (
        "channel", "drop_first_ns", "drop_last_ns", "dropped", "marks", "payloads", "product",
        "ts",
    )

    def __init__(self, product: str, channel: str) -> None:
        self.product = product
        self.channel = channel
        self.ts: list[int] = []
        self.payloads: list[bytes] = []
        # (index into ts/payloads, RecordKind) for the few marker records among the data
        self.marks: list[tuple[int, int]] = []
        self.dropped = 0
        self.drop_first_ns = 0
        self.drop_last_ns = 0


@dataclass(slots=True)
class StreamChunk:
    product: str
    channel: str
    ts: list[int]
    payloads: list[bytes]
    marks: list[tuple[int, int]]


@dataclass(slots=True)
class Batch:
    """One commit's worth of records, handed over as a single object."""

    chunks: list[StreamChunk]
    records: int
    nbytes: int
    made_monotonic: float
    final: bool = False


@dataclass
class SinkStats:
    """Plain counters read by metrics at scrape time (no per-message Prometheus calls)."""

    batches_queued: int = 0
    records_queued: int = 0
    records_dropped: int = 0
    drop_events: int = 0
    invalid_streams: int = 0
    commits: int = 0
    committed_records: int = 0
    commit_errors: int = 0
    backlog_drop_events: int = 0  # batches dropped while commits were failing
    backlog_peak_bytes: int = 0  # most payload bytes the engine held while commits failed
    last_commit_s: float = 0.0
    channel_records: dict[str, int] = field(default_factory=dict)
    channel_bytes: dict[str, int] = field(default_factory=dict)


class BoundedBatchQueue:
    """A FIFO bounded by batch count AND bytes; the loop side never blocks on it."""

    def __init__(self, max_batches: int, max_bytes: int) -> None:
        self.max_batches = max_batches
        self.max_bytes = max_bytes
        self._items: deque[Batch] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    def _full(self, batch: Batch) -> bool:
        """No room for ``batch`` (caller holds the lock); an empty queue takes any batch, so
        one oversized batch can never wedge the hand-over."""
        return bool(self._items) and (
            len(self._items) >= self.max_batches or self._bytes + batch.nbytes > self.max_bytes
        )

    def try_put(self, batch: Batch) -> bool:
        with self._cond:
            if self._full(batch):
                return False
            self._items.append(batch)
            self._bytes += batch.nbytes
            self._cond.notify()
            return True

    def put_wait(self, batch: Batch, alive: Callable[[], bool]) -> None:
        """Blocking put, for shutdown only (the sockets are closed by then).

        Raises RuntimeError instead of waiting forever if the consumer died.
        """
        with self._cond:
            while self._full(batch):
                if not alive():
                    raise RuntimeError("storage thread is gone; batch not handed over")
                self._cond.wait(0.5)
            self._items.append(batch)
            self._bytes += batch.nbytes
            self._cond.notify_all()

    def get(self, timeout: float) -> Batch | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            b = self._items.popleft()
            self._bytes -= b.nbytes
            self._cond.notify_all()
            return b

    @property
    def depth(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes


class Sink:
    """Loop-side batching. Used from the event loop thread only (the queue is the boundary)."""

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        *,
        commit_records: int = _COMMIT.records,
        commit_interval_s: float = _COMMIT.interval_s,
        queue_batches: int = 8,
        queue_bytes: int = 256 << 20,
        max_pending_bytes: int = 128 << 20,
        max_backlog_bytes: int = 256 << 20,
        on_commit: Callable[[float, int], None] | None = None,
        shutdown_retry_s: float = 5.0,
    ) -> None:
        self.policy = CommitPolicy(commit_records, commit_interval_s)  # validated there
        self.commit_records = commit_records
        self.commit_interval_s = commit_interval_s
        self.max_pending_bytes = max_pending_bytes
        self.streams: dict[StreamKey, StreamBuf] = {}
        self.pending = 0
        self.pending_bytes = 0
        self.flush_at = commit_records
        self.last_flush = time.monotonic()
        self.stats = SinkStats()
        self.queue = BoundedBatchQueue(queue_batches, queue_bytes)
        self._writer = StorageWriter(engine_factory, self.queue, self.stats, on_commit,
                                     max_backlog_bytes, shutdown_retry_s)
        self._closed = False
        self._adders: dict[StreamKey, Receive] = {}  # ``add``'s receive step per fallback

    def start(self) -> None:
        """Start the storage thread and wait until its engine is open (before any frame is
        received): from then on every new stream is in the live journal the moment its first
        record is buffered. An engine that cannot be opened surfaces as before: the thread
        is dead (``writer_error``) and ``close`` raises."""
        self._writer.start()
        self._writer.wait_ready()

    # -- hot path -------------------------------------------------------------------------
    def receiver(self, fallback: StreamKey, counts: Callable[[str], Counts]) -> Receive:
        """The receive step of one connection: ``receive(key, ts_ns, raw)`` appends one raw
        message to its stream and counts it on ``counts(channel)``; ``fallback`` (the
        connection's ``_unrouted``) takes it if ``key`` is a name storage refuses.

        The one place that buffers a received message (``add`` and every frame path of the
        connections call it). A closure, not a method: per message it costs one dict lookup
        (route → the stream's buffer and the channel's counters, both looked up once per
        stream), two list appends, two slot-int increments and two int increments here; no
        object is made, no syscall is made."""
        slots: dict[StreamKey, tuple[StreamBuf, Counts]] = {}
        sink = self
        buffer = self.buffer

        def receive(key: StreamKey, ts_ns: int, raw: bytes) -> None:
            try:
                buf, count = slots[key]
            except KeyError:  # the stream's first message from this connection
                buf, count = slots[key] = (buffer(key, fallback), counts(key[1]))
            n = len(raw)
            buf.ts.append(ts_ns)
            buf.payloads.append(raw)
            count.messages += 1
            count.bytes += n
            sink.pending = pending = sink.pending + 1
            sink.pending_bytes = nbytes = sink.pending_bytes + n
            if pending >= sink.flush_at or nbytes >= sink.max_pending_bytes:
                sink.flush()

        return receive

    def add(self, key: StreamKey, ts_ns: int, raw: bytes, fallback: StreamKey) -> None:
        """Append one raw message outside a connection (tests, benchmarks): the same receive
        step, its counts kept nowhere."""
        receive = self._adders.get(fallback)
        if receive is None:
            receive = self._adders[fallback] = self.receiver(fallback, _uncounted)
        receive(key, ts_ns, raw)

    # -- the rest runs once per stream, per marker or per batch -------------------------------
    def buffer(self, key: StreamKey, fallback: StreamKey) -> StreamBuf:
        """The stream's buffer (the same object for the sink's life: only its lists are
        swapped at each hand-over), opened on first use."""
        return self.streams.get(key) or self.open_stream(key, fallback)

    def open_stream(self, key: StreamKey, fallback: StreamKey) -> StreamBuf:
        """Create (or alias) the buffer of a stream the first time it is seen.

        A name the storage layer would refuse (hostile or broken product id) is aliased to the
        fallback stream (the connection's ``_unrouted``), so the raw message is still kept.
        """
        try:
            validate_name(key[0], "product")
            validate_name(key[1], "channel")
        except InvalidStreamName as e:
            self.stats.invalid_streams += 1
            log.warning("event=invalid_stream product=%r channel=%r error=%r", key[0], key[1], e)
            fb = self.streams.get(fallback) or self.open_stream(fallback, fallback)
            self.streams[key] = fb
            return fb
        b = StreamBuf(key[0], key[1])
        self.streams[key] = b
        self._writer.declare(key)
        return b

    def mark(self, key: StreamKey, kind: RecordKind, ts_ns: int, payload: bytes) -> None:
        """Write a marker record into a stream, in order with its data."""
        b = self.streams.get(key)
        if b is None:
            b = self.open_stream(key, ("_invalid", "_markers"))
        b.marks.append((len(b.ts), int(kind)))
        b.ts.append(ts_ns)
        b.payloads.append(payload)
        self.pending += 1
        self.pending_bytes += len(payload)

    def mark_event(self, key: StreamKey, kind: MarkerKind, ts_ns: int, payload: bytes) -> None:
        """A protocol marker (``logger.protocol.MarkerKind``) into a stream: the sink is the
        one place that maps the core's marker kinds to storage's record kinds (same names),
        so no storage type reaches the socket shell."""
        self.mark(key, RecordKind[kind.name], ts_ns, payload)

    def tick(self, now_monotonic: float) -> None:
        """Called by a loop timer: time-based commit (also seals past days when idle)."""
        if self.policy.interval_due(now_monotonic - self.last_flush):
            self.flush()

    def flush(self) -> bool:
        """Hand all pending records to the storage thread as one batch, never waiting.

        Returns False if the queue was full: the records stay pending (the next attempt is at
        the next ``commit_records`` step or tick, not on every message), or, once they exceed
        ``max_pending_bytes``, they are dropped, counted and marked.
        """
        batch = self._build(final=False)
        if not self.queue.try_put(batch):
            if self.pending_bytes >= self.max_pending_bytes:
                self._drop_pending()
            else:
                self.flush_at = self.pending + self.commit_records
            return False
        self._taken(batch)
        return True

    def _build(self, *, final: bool) -> Batch:
        chunks: list[StreamChunk] = []
        seen: set[int] = set()
        records, nbytes = self.pending, self.pending_bytes
        for b in self.streams.values():
            if id(b) in seen:  # aliased (invalid) keys share one buffer
                continue
            seen.add(id(b))
            if b.dropped:
                # the DROPPED marker leads the stream's first batch after the loss
                payload = marker_payload({
                    "reason": "storage_queue_full", "records": b.dropped,
                    "first_ts_ns": b.drop_first_ns, "last_ts_ns": b.drop_last_ns,
                })
                chunks.append(StreamChunk(  # at the time of the first dropped record
                    b.product, b.channel, [b.drop_first_ns, *b.ts], [payload, *b.payloads],
                    [(0, int(RecordKind.DROPPED)), *((p + 1, k) for p, k in b.marks)],
                ))
                records += 1
                nbytes += len(payload)
            elif b.ts:
                chunks.append(StreamChunk(b.product, b.channel, b.ts, b.payloads, b.marks))
        return Batch(chunks, records, nbytes, time.monotonic(), final)

    def _taken(self, batch: Batch) -> None:
        """The batch was queued: give its streams fresh lists, reset the counters."""
        for b in self.streams.values():
            b.dropped = 0
            if b.ts:
                b.ts = []
                b.payloads = []
                b.marks = []
        self.stats.batches_queued += 1
        self.stats.records_queued += batch.records
        self._reset_pending()

    def _drop_pending(self) -> None:
        """The disk is slower than the feed for longer than the buffers hold: drop and mark."""
        dropped = 0
        for b in self.streams.values():
            if not b.ts:
                continue
            n = len(b.ts)
            if not b.dropped:
                b.drop_first_ns = b.ts[0]
            b.dropped += n
            b.drop_last_ns = b.ts[-1]
            dropped += n
            b.ts = []
            b.payloads = []
            b.marks = []
        self.stats.records_dropped += dropped
        self.stats.drop_events += 1
        log.error("event=dropped records=%d reason=storage_queue_full queue_depth=%d",
                  dropped, self.queue.depth)
        self._reset_pending()

    def _reset_pending(self) -> None:
        """Nothing is pending any more (handed over or dropped): restart both commit triggers."""
        self.pending = 0
        self.pending_bytes = 0
        self.flush_at = self.commit_records
        self.last_flush = time.monotonic()

    def close(self, timeout: float = 50.0) -> int:
        """Flush everything (blocking), let the writer commit and close the engine; the
        records that could not be written (see the module docstring), 0 normally."""
        if self._closed:
            return 0
        self._closed = True
        timeout += self._writer.retry_s
        batch = self._build(final=True)
        try:
            self.queue.put_wait(batch, self._writer.is_alive)
        except RuntimeError as e:
            raise RuntimeError("storage thread failed") from (self._writer.error or e)
        self._taken(batch)
        self._writer.join(timeout)
        if self._writer.error is not None:
            raise RuntimeError("storage thread failed") from self._writer.error
        if self._writer.is_alive():
            raise RuntimeError(f"storage thread still committing after {timeout:.0f} s")
        return self._writer.lost

    @property
    def writer_alive(self) -> bool:
        return self._writer.is_alive()

    @property
    def writer_error(self) -> BaseException | None:
        return self._writer.error


def _name_os_thread(name: bytes) -> None:
    """Name the OS thread (``top -H``, ``strace -p TID``): Python 3.11 does not."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


class StorageWriter(threading.Thread):
    """The one thread that owns the Engine: extend streams, commit once per batch, close."""

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        queue: BoundedBatchQueue,
        stats: SinkStats,
        on_commit: Callable[[float, int], None] | None,
        max_backlog_bytes: int = 256 << 20,
        shutdown_retry_s: float = 5.0,
    ) -> None:
        super().__init__(name="storage-writer", daemon=True)
        self._max_backlog = max_backlog_bytes
        self.retry_s = shutdown_retry_s
        self.lost = 0  # records the engine's close could not write
        self._failing = False  # the last commit reported errors
        self._logged: set[tuple[str, str, int | None]] = set()  # errors logged, not yet over
        # per stream dropped while commits failed: [records, first_ts_ns, last_ts_ns]
        self._backlog_drops: dict[StreamKey, list[int]] = {}
        self._drop_errno: int | None = None
        self._factory = engine_factory
        self._queue = queue
        self._stats = stats
        self._on_commit = on_commit
        self._handles: dict[StreamKey, Stream] = {}
        self.error: BaseException | None = None
        self.engine: Engine | None = None
        self._ready = threading.Event()  # the engine is open (or the thread failed)
        self._early: list[StreamKey] = []  # declared before the engine was open
        self._early_lock = threading.Lock()

    def declare(self, key: StreamKey) -> None:
        """Name a new stream in the engine's live journal now (called from the loop thread
        once per stream): its records wait in memory until the next commit, and a crash
        meanwhile must still leave a RESTART marker for it at the next start."""
        engine = self.engine
        if engine is None:
            with self._early_lock:
                engine = self.engine
                if engine is None:
                    self._early.append(key)
                    return
        engine.declare(*key)

    def wait_ready(self) -> None:
        """Block until the engine is open or the thread has failed (``error``)."""
        while not self._ready.wait(0.5) and self.is_alive():
            pass

    def run(self) -> None:
        _name_os_thread(b"cbl-storage")
        try:
            engine = self._open()
            while True:
                batch = self._queue.get(timeout=1.0)
                if batch is None:
                    # idle: still commit with the wall clock so past UTC days get sealed
                    self._commit(engine, 0)
                    continue
                backlog = engine.pending_bytes if self._failing else 0
                if backlog > self._stats.backlog_peak_bytes:
                    self._stats.backlog_peak_bytes = backlog
                if backlog >= self._max_backlog:
                    self._drop(batch)
                    if batch.final:
                        self._write_drop_markers(engine)  # tiny: kept if close commits
                    self._commit(engine, 0)
                else:
                    if self._backlog_drops:
                        self._write_drop_markers(engine)
                    self._write(engine, batch)
                    self._commit(engine, batch.records)
                if batch.final:
                    break
            self._close(engine)
        except BaseException as e:  # the daemon notices and exits non-zero
            self.error = e
            log.exception("event=storage_thread_failed")
        finally:
            self._ready.set()  # after ``error``: wait_ready sees the failure

    def _open(self) -> Engine:
        engine = self._factory()
        with self._early_lock:
            self.engine = engine
            early, self._early = self._early, []
        for key in early:
            engine.declare(*key)
        self._ready.set()
        return engine

    def _close(self, engine: Engine) -> None:
        """Retry failing commits up to ``retry_s``, then close: what is still pending is
        lost, and counted, logged and left in the loss ledger by the engine."""
        deadline = time.monotonic() + self.retry_s
        if self._failing and engine.pending_records:
            log.error("event=shutdown_commit_retry pending=%d retry_s=%.1f",
                      engine.pending_records, self.retry_s)
        while self._failing and engine.pending_records and time.monotonic() < deadline:
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            self._commit(engine, 0)
        result = engine.close()
        st = self._stats
        st.committed_records += result.records
        if result.lost:
            self.lost = result.lost
            st.records_dropped += result.lost
            st.drop_events += 1
            log.error("event=dropped records=%d reason=shutdown_commit_failing "
                      "note=listed_in_loss_ledger_marked_at_next_start", result.lost)

    def _stream(self, engine: Engine, product: str, channel: str) -> Stream:
        """The engine's handle for a stream, looked up once per stream, not once per batch."""
        key = (product, channel)
        s = self._handles.get(key)
        if s is None:
            s = self._handles[key] = engine.stream(product, channel)
        return s

    def _write(self, engine: Engine, batch: Batch) -> None:
        """Hand the batch's chunks to the engine. The payloads are bytes by construction
        (WebSocket frames, marker JSON), so the engine's trusted calls take them without a
        per-payload type check and return their byte count for the metrics. A chunk of data
        only (the usual one) goes to ``write_trusted``, which commits it on the way in where
        it can (the commit after the batch then has little left to do); a chunk with markers
        is buffered piece by piece, in order, and committed by that commit."""
        crec = self._stats.channel_records
        cbytes = self._stats.channel_bytes
        handles = self._handles
        extend = engine.extend_trusted
        write = engine.write_trusted
        for c in batch.chunks:
            channel = c.channel
            s = handles.get((c.product, channel))
            if s is None:
                s = self._stream(engine, c.product, channel)
            if c.marks:
                ts, payloads = c.ts, c.payloads
                nbytes = prev = 0
                for pos, kind in c.marks:
                    if pos > prev:
                        nbytes += extend(s, ts[prev:pos], payloads[prev:pos])
                    engine.append(s, ts[pos], payloads[pos], RecordKind(kind))
                    nbytes += len(payloads[pos])
                    prev = pos + 1
                if prev < len(ts):
                    nbytes += extend(s, ts[prev:], payloads[prev:])
            else:
                nbytes = write(s, c.ts, c.payloads)
            crec[channel] = crec.get(channel, 0) + len(c.ts)
            cbytes[channel] = cbytes.get(channel, 0) + nbytes

    def _drop(self, batch: Batch) -> None:
        """Commits are failing and the engine holds ``max_backlog_bytes``: count the batch's
        records per stream instead of buffering them (markers follow when commits work)."""
        drops = self._backlog_drops
        for c in batch.chunks:
            if not c.ts:
                continue
            d = drops.get((c.product, c.channel))
            lo, hi = min(c.ts), max(c.ts)
            if d is None:
                drops[(c.product, c.channel)] = [len(c.ts), lo, hi]
            else:
                d[0] += len(c.ts)
                d[1], d[2] = min(d[1], lo), max(d[2], hi)
        st = self._stats
        st.records_dropped += batch.records
        st.drop_events += 1
        st.backlog_drop_events += 1
        if st.backlog_drop_events == 1 or not st.backlog_drop_events % 100:
            log.error("event=dropped records=%d reason=storage_commit_failing "
                      "backlog_bytes_max=%d drop_events=%d", batch.records, self._max_backlog,
                      st.backlog_drop_events)

    def _write_drop_markers(self, engine: Engine) -> None:
        """One DROPPED marker per stream that lost records while commits were failing, at the
        time of the first of them (after everything the engine kept, which came before)."""
        for (product, channel), (n, lo, hi) in self._backlog_drops.items():
            engine.append(self._stream(engine, product, channel), lo, marker_payload({
                "reason": "storage_commit_failing", "records": n, "first_ts_ns": lo,
                "last_ts_ns": hi, "errno": self._drop_errno}), RecordKind.DROPPED)
        if self._backlog_drops:
            log.warning("event=drop_markers streams=%d records=%d reason=storage_commit_failing",
                        len(self._backlog_drops),
                        sum(d[0] for d in self._backlog_drops.values()))
        self._backlog_drops.clear()

    def _commit(self, engine: Engine, records: int) -> None:
        t0 = time.perf_counter()
        result = engine.commit(time.time_ns())
        dt = time.perf_counter() - t0
        errors = result.errors
        st = self._stats
        st.commits += 1
        st.last_commit_s = dt
        # what the engine made durable, also when other streams failed: this batch, and
        # what earlier failed commits kept
        st.committed_records += result.records
        if errors:
            st.commit_errors += 1
            self._failing = True
            for e in errors:  # once per distinct (stream, errno) while it lasts
                key = (e.product, e.channel, e.errno)
                if key not in self._logged:
                    self._logged.add(key)
                    log.error("event=commit_error stream=%s/%s errno=%s error=%r "
                              "pending_kept=true", e.product, e.channel, e.errno, str(e))
                self._drop_errno = e.errno
        else:
            if self._failing:
                log.warning("event=commit_recovered errors_seen=%d pending=%d",
                            len(self._logged), engine.pending_records)
            self._failing = False
            self._logged.clear()
        if self._on_commit is not None and records:
            self._on_commit(dt, records)
