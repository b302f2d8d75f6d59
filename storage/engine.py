"""The storage engine's façade: one object per data root that the recorder and the tools use.

Records are buffered per stream in plain lists/arrays (no syscall, no per-record object) and
made durable at a commit in two backend writes: first every stream's batch bytes and header
hints, then every touched segment's commit point. The work is done by small rooms, each with
one job, which the engine wires together and calls in order:

- ``storage.pending``   the records buffered and not committed (``extend``, ``append``);
- ``storage.through``   write-through of the sink's lists, committed on the way in;
- ``storage.commit``    a commit: stage, write, apply or discard, account;
- ``storage.staging``   encoding each stream's records into its segments (fast/general path);
- ``storage.lifecycle`` each stream's day segments: open, continue, pre-create, seal;
- ``storage.opener``    segment files on disk: list, recover, create;
- ``storage.syncer``    periodic fdatasync;
- ``storage.journal``   the live journal and loss ledger (unclean shutdown markers);
- ``storage.policy``    when to commit (``commit_due``, and the daemon's sink).
"""

from __future__ import annotations

import datetime as dt
import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from storage.backends import Backend, make_backend
from storage.commit import Committer
from storage.engine_config import EngineConfig
from storage.format import HEADER_SIZE
from storage.journal import RunJournal
from storage.layout import SegmentRef, validate_name
from storage.lifecycle import Lifecycle, SealBudget
from storage.opener import SegmentOpener
from storage.pending import Pending
from storage.records import RecordKind
from storage.results import CommitError, CommitResult
from storage.rootlock import RootLock
from storage.segment import Segment
from storage.staging import CommitPlan, Stager
from storage.stream import DayCache, Stream, day_of
from storage.syncer import Syncer
from storage.through import WriteThrough

__all__ = ["CommitError", "CommitResult", "Engine", "EngineConfig", "Stream", "day_of"]

log = logging.getLogger("storage.engine")


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return it: every open segment holds
    a descriptor, and 400 products x 7 channels is far above the usual soft limit of 1 024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %d: %s", soft, e)
    return soft


class Engine:
    """Owns every open segment under one data root. Single-threaded; one engine per root
    (enforced with an exclusive lock file ``<root>/.lock``), or one per worker share of a root
    whose ``.lock`` the worker's parent holds (``EngineConfig.lock_name``)."""

    extend_trusted: Callable[[Stream, list[int], list[bytes]], int]
    """``extend_trusted(stream, ts_ns, payloads) -> int``: :meth:`extend` for a caller that
    guarantees every payload is ``bytes`` (the sink's storage thread: the WebSocket library
    and the marker encoder hand bytes), without the per-payload type check, and returning the
    payload bytes buffered (the caller counts them, so they are summed once). Still
    ValueError, nothing buffered, for columns of different lengths or a timestamp outside
    i64; the records are the same on disk. It is ``Pending.extend_trusted`` itself, bound at
    open: the hot path (once per stream and batch) pays no façade frame."""

    write_trusted: Callable[[Stream, list[int], list[bytes]], int]
    """``write_trusted(stream, ts_ns, payloads) -> int``: :attr:`extend_trusted` for the
    sink's storage thread, whose lists are the records of one stream in one batch: where the
    stream has nothing pending and its open segment takes them as one batch, they are written
    and committed at once (``storage.through``: the same bytes, one compiled call instead of
    buffering and staging them at the next commit, which reports them); else buffered. With a
    backend other than the engine's own mmap one it is ``extend_trusted`` itself."""

    def __init__(self, config: EngineConfig, backend: Backend | None = None) -> None:
        """Open the data root. ``backend`` overrides ``config.backend`` with a ready instance
        (benchmarks and tests that observe writes); the engine closes it on close."""
        self.config = config
        self.root = Path(config.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.open_file_limit = raise_open_file_limit()
        self._lock = RootLock(self.root, config.lock_name)
        try:
            self._backend: Backend = make_backend(config.backend) if backend is None else backend
        except BaseException:
            self._lock.release()
            raise
        self.backend_name: str = self._backend.name
        self._commit_policy = config.commit_policy
        self._streams: dict[tuple[str, str], Stream] = {}
        self._pending = Pending()
        self.extend_trusted = self._pending.extend_trusted
        self._last_commit = time.monotonic()
        self._closed = False
        self._build_rooms(config, direct=backend is None and self.backend_name == "mmap")
        self._journal = RunJournal(self.root, config.lock_name, config.mark_unclean)
        try:
            self._journal.open(time.time_ns(), self)
            self._lifecycle.adopt_stale(self._journal.unsealed)
        except BaseException:
            self._backend.close()
            self._lock.release()
            raise

    def _build_rooms(self, config: EngineConfig, direct: bool) -> None:
        """The rooms that open, stage, commit, seal and sync segments, wired together.
        ``direct``: the engine's own mmap backend, so the fast path frames batches straight
        into the mapping (one copy) instead of handing the backend ops."""
        days = DayCache()
        opener = SegmentOpener(self.root, config.segment_max_bytes, config.first_extent_bytes,
                               config.max_extent_bytes, populate=self.backend_name == "mmap",
                               durable=config.durable)
        self._syncer = Syncer(self._backend, config.fsync_interval_s)
        budget = SealBudget(config.seals_per_commit, config.seal_budget_s, config.io_threads,
                            config.precreate_s)
        self._lifecycle = Lifecycle(opener, self._streams, days, self._syncer, budget,
                                    config.seal_stale_on_open)
        max_batch = max(4096, min(config.max_batch_bytes, opener.cap - HEADER_SIZE))
        self._stager = Stager(self._lifecycle, days, opener.cap, max_batch, direct)
        # the per-stream fast path writes columns in host order: little-endian hosts only
        self._committer = Committer(self._pending, self._stager, self._lifecycle, self._syncer,
                                    self._backend, config.commit_chunk_bytes,
                                    fast_ok=sys.byteorder == "little")
        self._days = days
        self._through = WriteThrough(self._pending, self._lifecycle, self._syncer, days,
                                     opener.cap, max_batch)
        self._direct = direct
        self._bind_write()

    def _bind_write(self) -> None:
        """``write_trusted``: write-through where the fast path runs into the engine's own
        mapping, else ``extend_trusted``."""
        through = self._direct and self._committer.fast_ok
        self.write_trusted = self._through.write if through else self._pending.extend_trusted

    # -- ingest side -----------------------------------------------------------------------

    def stream(self, product: str, channel: str) -> Stream:
        """The handle for (product, channel); InvalidStreamName if either is unsafe."""
        key = (product, channel)
        s = self._streams.get(key)
        if s is None:
            s = Stream(validate_name(product, "product"), validate_name(channel, "channel"))
            self._streams[key] = s
            self._journal.declare(s.product, s.channel)
        return s

    def declare(self, product: str, channel: str) -> None:
        """Name a stream in this run's live journal before any of its records reach the
        engine. The one engine method that may be called from any thread: a writer that
        buffers records elsewhere first (the logger's receive path) declares each stream when
        it sees it, so a crash before that stream's first commit is still marked RESTART at
        the next start. InvalidStreamName if either name is unsafe; idempotent."""
        validate_name(product, "product")
        validate_name(channel, "channel")
        self._journal.declare(product, channel)

    def extend(self, stream: Stream, ts_ns: Sequence[int], payloads: Sequence[bytes]) -> None:
        """Buffer DATA records (no I/O). TypeError/ValueError on bad input, nothing buffered."""
        self._pending.extend(stream, ts_ns, payloads)

    def append(
        self, stream: Stream, ts_ns: int, payload: bytes, kind: RecordKind = RecordKind.DATA
    ) -> None:
        """Buffer one record of any kind (markers carry small JSON payloads)."""
        self._pending.append(stream, ts_ns, payload, kind)

    @property
    def pending_records(self) -> int:
        return self._pending.records

    @property
    def pending_bytes(self) -> int:
        """Payload bytes buffered and not committed (O(streams with pending records); for
        callers that bound the engine's memory while commits fail)."""
        return self._pending.nbytes

    def commit_due(self, now_monotonic: float | None = None) -> bool:
        """For callers that drive the engine themselves (the daemon's sink decides on its
        own, from the same ``CommitPolicy``): True when ``commit_records`` are pending, or
        records (or segments to seal) have waited ``commit_interval_s``, or unsynced bytes
        ``fsync_interval_s``."""
        policy = self._commit_policy
        pending = self._pending.records
        if policy.count_due(pending):
            return True
        now = time.monotonic() if now_monotonic is None else now_monotonic
        waiting = pending or self._lifecycle.seals_pending
        if waiting and policy.interval_due(now - self._last_commit):
            return True
        return self._syncer.due(now)

    # -- commit ----------------------------------------------------------------------------

    def commit(self, now_ns: int | None = None) -> CommitResult:
        """Make every pending record durable against kill -9. Never raises for I/O errors:
        they are returned in ``errors`` and the affected records stay pending."""
        if self._closed:
            raise RuntimeError("engine is closed")
        t0 = time.perf_counter()
        now = time.time_ns() if now_ns is None else now_ns
        result = CommitResult()
        result.records, result.bytes = self._through.settle()  # committed on the way in
        self._committer.commit(now, result)  # stage, write, apply; seal full segments
        self._lifecycle.after_commit(now, result)  # seal past days, pre-create tomorrow's
        self._syncer.maybe_sync(result)
        self._journal.settle(self._pending.dirty)  # earlier runs' markers durable: files go
        self._last_commit = time.monotonic()
        result.seconds = time.perf_counter() - t0
        return result

    # -- segments --------------------------------------------------------------------------

    @property
    def seals_pending(self) -> int:
        """Segments waiting to be checked or sealed by the next commits: those of past days,
        and those an earlier run left unsealed."""
        return self._lifecycle.seals_pending

    def seal_stale(self, now_ns: int) -> list[Path]:
        """Seal now every unsealed segment of days before ``now_ns``'s day left by an earlier
        run (a crash skips sealing). Corrupt ones are logged and left as they are. (With
        ``seal_stale_on_open`` the engine does this gradually, at commits.)"""
        return self._lifecycle.seal_stale(now_ns)

    # -- shutdown --------------------------------------------------------------------------

    def close(self) -> CommitResult:
        """Commit, seal every open segment and release the data root."""
        if self._closed:
            return CommitResult()
        result = self.commit()
        if self._pending.records:
            log.error("closing with %d records not committed (see errors)",
                      self._pending.records)
            result.lost = self._journal.write_loss(self._pending.dirty,
                                                   self._committer.last_errno)
        sealed_all = self._lifecycle.close(result)
        # every stream sealed: nothing for the next run to mark but what the ledger lists
        self._journal.close(sealed_all)
        self._backend.close()
        self._lock.release()
        self._closed = self._pending.closed = True
        return result

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- white-box views for the tests (tests/storage reach into these) ---------------------

    @property
    def _dirty(self) -> dict[Stream, None]:
        return self._pending.dirty

    @property
    def _to_seal(self) -> dict[tuple[Stream, dt.date], Segment]:
        return self._lifecycle.to_seal

    @property
    def _fast_ok(self) -> bool:
        return self._committer.fast_ok

    @_fast_ok.setter
    def _fast_ok(self, value: bool) -> None:
        self._committer.fast_ok = value
        self._bind_write()

    def _stage_fast(self, stream: Stream, plan: CommitPlan) -> int:
        return self._stager.stage_fast(stream, plan)

    def _day(self, d: int) -> dt.date:
        return self._days.date(d)

    def _day_files(self, stream: Stream, day: dt.date) -> list[SegmentRef]:
        return self._lifecycle.opener.day_files(stream, day)
