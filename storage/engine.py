"""The storage engine: streams, pending records, the commit policy, day roll and rotation.

Records are buffered per stream in plain lists/arrays (no syscall, no per-record object) and
made durable at a commit in two backend writes: first every stream's batch bytes and header
hints, then every touched segment's commit point. Records of a stream whose segment cannot be
grown (ENOSPC) stay pending and are retried at the next commit; nothing half-written is ever
behind a commit point, so nothing half-written is ever read back.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import errno as errno_mod
import itertools
import json
import logging
import os
import resource
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from storage.backends import Backend, WriteOp, make_backend
from storage.format import (
    BATCH_ALIGN,
    BATCH_HEADER_SIZE,
    FORMAT_VERSION,
    HEADER_SIZE,
    INDEX_CAPACITY,
    CorruptSegment,
    ForeignFile,
    batch_size,
    encode_parts,
)
from storage.layout import (
    SegmentRef,
    iter_segments,
    parse_segment_path,
    segment_path,
    validate_name,
)
from storage.records import RecordKind
from storage.rootlock import LOCK_NAME, RootLock, check_lock_name
from storage.segment import ExtentPolicy, Segment, read_segment_header
from storage.unclean import (
    Carried,
    LossEntry,
    ReservedFile,
    last_committed_ts,
    live_name,
    loss_name,
    read_loss,
    read_streams,
    restart_payload,
    unclean_files,
    unsealed_streams,
)

__all__ = ["CommitError", "CommitResult", "Engine", "EngineConfig", "Stream", "day_of"]

log = logging.getLogger("storage.engine")

NS_PER_DAY = 86_400 * 1_000_000_000
_EPOCH = dt.date(1970, 1, 1)
_BYTES_ONLY = frozenset({bytes})


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


def day_of(ts_ns: int) -> dt.date:
    """The UTC day of a timestamp in nanoseconds since the epoch."""
    return _EPOCH + dt.timedelta(days=ts_ns // NS_PER_DAY)


@dataclasses.dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine settings. Extent sizes bound the disk reserved but not yet used: a stream starts
    with ``first_extent_bytes`` and grows by doubling up to ``max_extent_bytes`` per step.
    ``max_batch_bytes`` caps one batch (bigger commits are split); ``seals_per_commit`` and
    ``seal_budget_s`` bound how many past-day segments one commit seals and how long it may
    spend on it (the rest follow at the next commits). ``io_threads`` threads seal (trim) files
    in parallel — at close, and in waves within that budget — and create the next UTC day's
    segments of the active streams during the last ``precreate_s`` seconds of a day (within
    the same budget per commit), so midnight does not create 2 800 files in one commit."""

    root: Path
    backend: str = "auto"
    commit_records: int = 10_000
    commit_interval_s: float = 5.0
    fsync_interval_s: float | None = None
    segment_max_bytes: int = 1 << 30
    first_extent_bytes: int = 64 << 10
    max_extent_bytes: int = 64 << 20
    max_batch_bytes: int = 16 << 20
    seal_stale_on_open: bool = True
    seals_per_commit: int = 256
    seal_budget_s: float = 0.05
    io_threads: int = 4
    precreate_s: float = 600.0
    lock_name: str = LOCK_NAME
    """``.lock`` (the whole root) or ``.lock.<worker>`` for one of a daemon's worker engines,
    which then owns only the streams it writes (``storage.rootlock``)."""
    mark_unclean: bool = True
    """At open, turn what earlier runs left (live journals of runs that did not close, loss
    ledgers of closes that could not commit everything, unsealed segments) into RESTART and
    DROPPED markers (``storage.unclean``). Only an engine that owns every stream those may
    name does this: a daemon's worker engines leave it to one pass of their supervisor."""
    commit_chunk_bytes: int = 32 << 20
    """A commit of more pending payload bytes than this (the catch-up after a full disk) is
    written in steps of about this size, each step's encoded copy freed before the next, so
    memory stays near the pending bytes instead of three times them."""

    def __post_init__(self) -> None:
        check_lock_name(self.lock_name)
        if self.commit_records < 1:
            raise ValueError(f"commit_records must be >= 1, got {self.commit_records}")
        if self.commit_interval_s <= 0:
            raise ValueError(f"commit_interval_s must be > 0, got {self.commit_interval_s}")
        if self.fsync_interval_s is not None and self.fsync_interval_s < 0:
            raise ValueError(f"fsync_interval_s must be >= 0, got {self.fsync_interval_s}")
        if self.segment_max_bytes < 2 * HEADER_SIZE:
            raise ValueError(f"segment_max_bytes too small: {self.segment_max_bytes}")
        if self.first_extent_bytes < 1 or self.max_extent_bytes < 1:
            raise ValueError("extent sizes must be positive")
        if self.seals_per_commit < 1:
            raise ValueError(f"seals_per_commit must be >= 1, got {self.seals_per_commit}")
        if self.io_threads < 1:
            raise ValueError(f"io_threads must be >= 1, got {self.io_threads}")
        if self.max_batch_bytes < 4096:
            raise ValueError(f"max_batch_bytes too small: {self.max_batch_bytes}")
        if self.commit_chunk_bytes < 1:
            raise ValueError(f"commit_chunk_bytes must be >= 1, got {self.commit_chunk_bytes}")


class _DayGroup(NamedTuple):
    """One UTC day's share of a stream's pending records, as columns."""

    day: dt.date
    ts: array[int]
    kinds: bytes | None
    lens: array[int]
    blob: bytes
    bounds: tuple[int, int]


_KINDS = frozenset(k.value for k in RecordKind)


def _loss_time(e: LossEntry | Carried) -> int:
    return e.ts_ns if isinstance(e, Carried) else e.first_ts_ns


class _Held(NamedTuple):
    """The part of a stream's pending records held back from one step of a commit."""

    ts: array[int]
    lens: array[int]
    payloads: list[bytes]
    markers: list[tuple[int, int]]
    nbytes: int


def _hold_back(stream: Stream, limit: int) -> _Held | None:
    """Leave pending only the longest prefix of at most ``limit`` payload bytes (at least one
    record) and return the rest, or None when everything fits."""
    cum = list(itertools.accumulate(stream.lens))
    k = max(1, bisect.bisect_right(cum, limit))
    if k >= len(cum):
        return None
    rest = _Held(stream.ts[k:], stream.lens[k:], stream.payloads[k:],
                 [(p - k, kind) for p, kind in stream.markers if p >= k],
                 stream.nbytes - cum[k - 1])
    stream.ts, stream.lens, stream.payloads = stream.ts[:k], stream.lens[:k], stream.payloads[:k]
    stream.markers = [(p, kind) for p, kind in stream.markers if p < k]
    stream.nbytes = cum[k - 1]
    stream.lo, stream.hi = min(stream.ts), max(stream.ts)
    return rest


def _give_back(stream: Stream, rest: _Held) -> None:
    """Append held-back records after whatever is still pending (the order is kept)."""
    base = len(stream.lens)
    if rest.markers:
        stream.markers += [(p + base, kind) for p, kind in rest.markers]
    lo, hi = min(rest.ts), max(rest.ts)
    if base:
        lo, hi = min(lo, stream.lo), max(hi, stream.hi)
    stream.ts += rest.ts
    stream.lens += rest.lens
    stream.payloads += rest.payloads
    stream.nbytes += rest.nbytes
    stream.lo, stream.hi = lo, hi


class CommitError(NamedTuple):
    """Why some records were not committed (they stay pending and are retried)."""

    product: str
    channel: str
    errno: int | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(slots=True)
class CommitResult:
    """What one commit made durable, how long it took, what failed and what got sealed."""

    records: int = 0
    bytes: int = 0
    seconds: float = 0.0
    errors: list[CommitError] = dataclasses.field(default_factory=list)
    sealed: list[Path] = dataclasses.field(default_factory=list)
    lost: int = 0
    """Only from :meth:`Engine.close`: records it could not commit (written to the root's
    loss ledger, marked DROPPED by the next engine)."""


@dataclasses.dataclass(slots=True)
class CommitPlan:
    """What one commit step writes, built by the two staging paths (``Engine._stage_fast``,
    ``Engine._stage``) and written as one (``writes``): every staged batch and header hint in
    one backend call, then the commit points, those of full segments being retired first (a
    crash in between leaves a prefix even if a backend reorders one call)."""

    data_ops: list[WriteOp] = dataclasses.field(default_factory=list)
    head_ops: list[WriteOp] = dataclasses.field(default_factory=list)
    commit_ops: list[WriteOp] = dataclasses.field(default_factory=list)
    """The fast path's commit points (the general path's come from ``touched``)."""
    fast: list[Segment] = dataclasses.field(default_factory=list)
    """Segments staged by the fast path."""
    touched: list[Segment] = dataclasses.field(default_factory=list)
    """Segments staged by the general path."""
    retiring: list[Segment] = dataclasses.field(default_factory=list)
    """Full segments whose successors take the rest of their streams' records."""
    staged: list[Stream] = dataclasses.field(default_factory=list)
    nbytes: int = 0

    def segments(self) -> Iterator[Segment]:
        return itertools.chain(self.touched, self.fast)

    def writes(self) -> Iterator[list[WriteOp]]:
        """The backend calls in order (each built only once the previous one is written)."""
        head_ops = self.head_ops
        for seg in self.touched:
            head_ops += seg.header_ops()
        yield self.data_ops + head_ops if self.data_ops else head_ops
        if self.retiring:
            yield [seg.commit_op() for seg in self.retiring]
        rest = [seg.commit_op() for seg in self.touched if seg not in self.retiring]
        rest += self.commit_ops
        if rest:
            yield rest


class Stream:
    """A validated (product, channel) handle with its pending records and open segments.

    Pending records are kept as columns (timestamps and lengths as arrays, payloads as a list
    joined once at commit), so a commit encodes them without a per-record Python step.
    """

    __slots__ = (
        "channel", "hi", "lens", "lo", "markers", "nbytes", "next_number", "payloads",
        "product", "segments", "ts",
    )

    def __init__(self, product: str, channel: str) -> None:
        self.product = product
        self.channel = channel
        self.ts: array[int] = array("q")
        self.lens: array[int] = array("I")
        self.payloads: list[bytes] = []
        self.markers: list[tuple[int, int]] = []  # (position in pending, kind) for non-DATA
        self.lo = self.hi = 0  # smallest and largest pending timestamp (when any pending)
        self.nbytes = 0  # pending payload bytes (= sum(lens), kept so a commit need not sum)
        self.segments: dict[dt.date, Segment] = {}
        self.next_number: dict[dt.date, int] = {}

    @property
    def pending(self) -> int:
        return len(self.lens)

    def __repr__(self) -> str:
        return f"Stream({self.product!r}, {self.channel!r}, pending={len(self.lens)})"

    def kinds_column(self) -> bytes | None:
        """The pending records' kinds, one byte each, or None when all are DATA (the usual
        case: markers are rare, so only their positions are kept until a commit)."""
        if not self.markers:
            return None
        kb = bytearray(len(self.lens))
        for pos, k in self.markers:
            kb[pos] = k
        return bytes(kb)

    def clear_pending(self) -> None:
        self.ts = array("q")
        self.lens = array("I")
        self.payloads = []
        self.markers = []
        self.nbytes = 0


def _seal_each(segs: list[Segment], fsync: bool) -> dict[Segment, BaseException]:
    """Seal ``segs`` one after the other (in an I/O thread); the ones that failed, and why."""
    failed: dict[Segment, BaseException] = {}
    for seg in segs:
        try:
            seg.seal(fsync=fsync)
        except Exception as e:  # reported by the engine's thread, after the others
            failed[seg] = e
    return failed


class Engine:
    """Owns every open segment under one data root. Single-threaded; one engine per root
    (enforced with an exclusive lock file ``<root>/.lock``), or one per worker share of a root
    whose ``.lock`` the worker's parent holds (``EngineConfig.lock_name``)."""

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
        cap = max(config.segment_max_bytes, HEADER_SIZE * 2)
        self._policy = ExtentPolicy(config.first_extent_bytes, config.max_extent_bytes, cap,
                                    populate=self.backend_name == "mmap")
        self._max_batch = max(4096, min(config.max_batch_bytes, cap - HEADER_SIZE))
        self._cap = cap
        self._index_step = max(64 << 10, cap // (INDEX_CAPACITY - 40))
        self._streams: dict[tuple[str, str], Stream] = {}
        self._dirty: dict[Stream, None] = {}
        self._pending = 0
        self._last_commit = time.monotonic()
        self._last_sync = time.monotonic()
        self._unsynced: dict[Segment, None] = {}
        self._today: dt.date | None = None
        self._past: dict[Stream, None] = {}
        self._to_seal: dict[tuple[Stream, dt.date], Segment] = {}
        self._failing: set[tuple[str, str]] = set()
        self._days: dict[int, dt.date] = {}
        self._pool: ThreadPoolExecutor | None = None  # sealing and pre-creation, lazily
        self._precreated: dict[Segment, None] = {}  # next-day segments not written yet
        # the per-stream fast path writes columns in host order: little-endian hosts only
        self._fast_ok = sys.byteorder == "little"
        # the mmap backend would copy each batch into the mapping anyway: the fast path frames
        # it there directly (one copy); a backend passed in (tests and benchmarks that observe
        # writes) sees every batch as ops
        self._direct = backend is None and self.backend_name == "mmap"
        self._closed = False
        # unsealed-looking segments of past days left by an earlier run: checked and sealed a
        # few per commit (recovering one reads it whole), so a restart after a crash is fast
        self._stale: dict[Path, None] = {}
        if config.seal_stale_on_open:
            today = day_of(time.time_ns())
            self._stale = {r.path: None for r in iter_segments(self.root)
                           if not r.archived and r.day < today}
        self._last_errno: int | None = None
        self._consumed: list[Path] = []  # earlier runs' journals/ledgers, removed once marked
        self._marking: list[Stream] = []  # streams holding those markers
        self._live: ReservedFile | None = None
        self._retired: list[Segment] = []  # full segments committed, sealed after the commit
        self._loss: ReservedFile | None = None
        self._loss_kept = False  # the loss ledger holds what this close could not write
        try:
            self._open_unclean_files(time.time_ns())
        except BaseException:
            self._backend.close()
            self._lock.release()
            raise

    # -- ingest side -----------------------------------------------------------------------

    def stream(self, product: str, channel: str) -> Stream:
        """The handle for (product, channel); InvalidStreamName if either is unsafe."""
        key = (product, channel)
        s = self._streams.get(key)
        if s is None:
            s = Stream(validate_name(product, "product"), validate_name(channel, "channel"))
            self._streams[key] = s
            self._journal(s)
        return s

    # -- unclean shutdown: journals, loss ledgers, RESTART and DROPPED markers ---------------

    def _open_unclean_files(self, now_ns: int) -> None:
        """Read what earlier runs left (when ``mark_unclean``), then start this run's own
        live journal and loss-ledger reserve; mark the streams they name."""
        restart: set[tuple[str, str]] = set()
        losses: list[LossEntry | Carried] = []
        own_loss = self.root / loss_name(self.config.lock_name)
        if self.config.mark_unclean:
            lives, loss_files = unclean_files(self.root)
            for path in lives:
                restart |= read_streams(path)
            restart |= unsealed_streams(self.root)
            for path in loss_files:
                losses += read_loss(path)
            own_live = self.root / live_name(self.config.lock_name)
            self._consumed = [p for p in lives if p != own_live] + loss_files
            if own_loss in loss_files:  # kept under another name until its markers commit
                kept = own_loss.with_name(f"{own_loss.name}.prev-{now_ns}")
                os.replace(own_loss, kept)
                self._consumed[self._consumed.index(own_loss)] = kept
        self._live = ReservedFile(self.root / live_name(self.config.lock_name))
        self._loss = ReservedFile(own_loss)
        for product, channel in sorted(restart):
            s = self.stream(product, channel)
            last = last_committed_ts(self.root, product, channel)
            self.append(s, now_ns if last is None else last, restart_payload(last, now_ns),
                        RecordKind.RESTART)
            self._marking.append(s)
        for e in sorted(losses, key=_loss_time):
            s = self.stream(e.product, e.channel)
            if isinstance(e, Carried):
                # a marker as it was (never DATA: only markers are carried)
                known = e.kind in _KINDS and e.kind != RecordKind.DATA
                self.append(s, e.ts_ns, e.payload,
                            RecordKind(e.kind) if known else RecordKind.NOTE)
            else:
                self.append(s, e.first_ts_ns, json.dumps({
                    "reason": "lost_at_shutdown", "records": e.records,
                    "first_ts_ns": e.first_ts_ns, "last_ts_ns": e.last_ts_ns, "errno": e.errno,
                }, separators=(",", ":"), sort_keys=True).encode(), RecordKind.DROPPED)
            self._marking.append(s)
        if restart or losses:
            lost = sum(e.records for e in losses if isinstance(e, LossEntry))
            log.warning("marking an unclean end of the previous run: %d stream(s) get a "
                        "RESTART marker, %d a DROPPED or carried marker (%d records lost at "
                        "its close)", len(restart), len(losses), lost)
        elif self._consumed:
            self._finish_unclean()

    def _journal(self, s: Stream) -> None:
        """One line per stream and run in the live journal (not per record or commit)."""
        live = self._live
        if live is None:
            return
        try:
            live.append(f"{s.product}\t{s.channel}\n".encode())
        except OSError as e:  # its unsealed segment still names it after a crash
            log.error("cannot add %s/%s to %s: %s", s.product, s.channel, live.path, e)

    def _finish_unclean(self) -> None:
        """The markers of earlier runs are committed: their journals and ledgers go."""
        for path in self._consumed:
            path.unlink(missing_ok=True)
        self._consumed = []
        self._marking = []

    def _write_loss(self) -> int:
        """Record in the loss ledger, fsynced, what this close could not commit: per stream
        the DATA records (count, time range), and each marker verbatim. Returns the DATA
        records lost (markers describe losses counted already)."""
        entries: list[LossEntry | Carried] = []
        lost = 0
        for s in self._dirty:
            if not s.lens:
                continue
            marks = dict(s.markers)
            data_ts = [t for i, t in enumerate(s.ts) if i not in marks] if marks else s.ts
            if data_ts:
                entries.append(LossEntry(s.product, s.channel, len(data_ts), min(data_ts),
                                         max(data_ts), self._last_errno))
                lost += len(data_ts)
            entries += [Carried(s.product, s.channel, k, s.ts[p], s.payloads[p])
                        for p, k in s.markers]
        assert self._loss is not None
        try:
            self._loss.append(b"".join(e.line() for e in entries))
            self._loss.sync()
        except OSError as exc:
            log.error("cannot write the loss ledger %s (%d records lost, unmarked): %s",
                      loss_name(self.config.lock_name), lost, exc)
        else:
            self._loss_kept = True
            self._finish_unclean()  # what earlier runs left is carried in the new ledger
        for x in entries:
            if isinstance(x, LossEntry):
                log.error("lost at close: %s/%s records=%d first_ts_ns=%d last_ts_ns=%d "
                          "errno=%s", x.product, x.channel, x.records, x.first_ts_ns,
                          x.last_ts_ns, x.errno)
        return lost

    def extend(self, stream: Stream, ts_ns: Sequence[int], payloads: Sequence[bytes]) -> None:
        """Buffer DATA records (no I/O). TypeError/ValueError on bad input, nothing buffered."""
        n = len(payloads)
        if len(ts_ns) != n:
            raise ValueError(f"{len(ts_ns)} timestamps for {n} payloads")
        if n == 0:
            return
        try:
            ts = ts_ns if type(ts_ns) is array and ts_ns.typecode == "q" else array("q", ts_ns)
        except OverflowError as e:
            raise ValueError(f"timestamp outside i64: {e}") from e
        if not set(map(type, payloads)) <= _BYTES_ONLY:
            raise TypeError("payloads must be bytes")
        try:
            lens = array("I", map(len, payloads))
        except OverflowError as e:
            raise ValueError(f"payload larger than 4 GiB: {e}") from e
        if self._closed:
            raise RuntimeError("engine is closed")
        lo, hi = min(ts_ns), max(ts_ns)  # cheaper on the caller's list than on the array
        if not stream.lens:
            self._dirty[stream] = None
            stream.lo, stream.hi = lo, hi
        else:
            stream.lo, stream.hi = min(stream.lo, lo), max(stream.hi, hi)
        stream.ts += ts
        stream.lens += lens
        stream.payloads += payloads
        stream.nbytes += sum(lens)
        self._pending += n

    def extend_trusted(self, stream: Stream, ts_ns: list[int], payloads: list[bytes]) -> int:
        """:meth:`extend` for a caller that guarantees every payload is ``bytes`` (the sink's
        storage thread: the WebSocket library and the marker encoder hand bytes), without the
        per-payload type check, and returning the payload bytes buffered (the caller counts
        them, so they are summed once). Still ValueError, nothing buffered, for columns of
        different lengths or a timestamp outside i64; the records are the same on disk."""
        n = len(payloads)
        if len(ts_ns) != n:
            raise ValueError(f"{len(ts_ns)} timestamps for {n} payloads")
        if n == 0:
            return 0
        try:
            ts = array("q", ts_ns)
            lens = array("I", map(len, payloads))
        except OverflowError as e:
            raise ValueError(f"timestamp or payload length out of range: {e}") from e
        if self._closed:
            raise RuntimeError("engine is closed")
        nbytes = sum(lens)
        if stream.lens:
            lo, hi = min(ts_ns), max(ts_ns)
            if lo < stream.lo:
                stream.lo = lo
            if hi > stream.hi:
                stream.hi = hi
            stream.ts += ts
            stream.lens += lens
            stream.payloads += payloads
            stream.nbytes += nbytes
        else:  # the usual case: one call per stream and commit, the columns become the stream's
            self._dirty[stream] = None
            stream.lo, stream.hi = min(ts_ns), max(ts_ns)
            stream.ts = ts
            stream.lens = lens
            stream.payloads = payloads.copy()
            stream.nbytes = nbytes
        self._pending += n
        return nbytes

    def append(
        self, stream: Stream, ts_ns: int, payload: bytes, kind: RecordKind = RecordKind.DATA
    ) -> None:
        """Buffer one record of any kind (markers carry small JSON payloads)."""
        k = RecordKind(kind)
        if type(payload) is not bytes:
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if type(ts_ns) is not int or not -(1 << 63) <= ts_ns < (1 << 63):
            raise ValueError(f"timestamp must be an i64 int: {ts_ns!r}")
        if len(payload) > 0xFFFF_FFFF:
            raise ValueError(f"payload of {len(payload)} bytes is larger than 4 GiB")
        if self._closed:
            raise RuntimeError("engine is closed")
        if not stream.lens:
            self._dirty[stream] = None
            stream.lo = stream.hi = ts_ns
        else:
            stream.lo, stream.hi = min(stream.lo, ts_ns), max(stream.hi, ts_ns)
        if k is not RecordKind.DATA:
            stream.markers.append((len(stream.lens), int(k)))
        stream.ts.append(ts_ns)
        stream.lens.append(len(payload))
        stream.payloads.append(payload)
        stream.nbytes += len(payload)
        self._pending += 1

    @property
    def pending_records(self) -> int:
        return self._pending

    @property
    def pending_bytes(self) -> int:
        """Payload bytes buffered and not committed (O(streams with pending records); for
        callers that bound the engine's memory while commits fail)."""
        return sum(s.nbytes for s in self._dirty)

    def commit_due(self, now_monotonic: float | None = None) -> bool:
        """True when ``commit_records`` are pending, or records (or segments to seal) have
        waited ``commit_interval_s``, or unsynced bytes ``fsync_interval_s``."""
        if self._pending >= self.config.commit_records:
            return True
        now = time.monotonic() if now_monotonic is None else now_monotonic
        waiting = self._pending or self._to_seal or self._stale
        if waiting and now - self._last_commit >= self.config.commit_interval_s:
            return True
        fsync = self.config.fsync_interval_s
        return fsync is not None and bool(self._unsynced) and now - self._last_sync >= fsync

    # -- commit ----------------------------------------------------------------------------

    def commit(self, now_ns: int | None = None) -> CommitResult:
        """Make every pending record durable against kill -9. Never raises for I/O errors:
        they are returned in ``errors`` and the affected records stay pending."""
        if self._closed:
            raise RuntimeError("engine is closed")
        t0 = time.perf_counter()
        now = time.time_ns() if now_ns is None else now_ns
        result = CommitResult()
        dirty = list(self._dirty)
        if self._pending_big(dirty):
            self._commit_in_steps(dirty, now, result)
        else:
            self._commit_streams(dirty, now, result)
        fsync = self.config.fsync_interval_s is not None
        for seg in self._retired:
            self._unsynced.pop(seg, None)
            seg.seal(fsync=fsync)
            result.sealed.append(seg.path)
        self._retired = []
        self._seal_past_days(self._day(now // NS_PER_DAY), result)
        if self.config.precreate_s > 0:
            self._precreate(now)
        self._maybe_sync(result)
        if self._consumed and not any(s in self._dirty for s in self._marking):
            self._finish_unclean()
        self._last_commit = time.monotonic()
        result.seconds = time.perf_counter() - t0
        return result

    def _pending_big(self, dirty: list[Stream]) -> bool:
        """More pending payload bytes than one step may encode (the usual commit: a sum over
        the streams of one batch, no per-record work)."""
        limit = self.config.commit_chunk_bytes
        total = 0
        for stream in dirty:
            total += stream.nbytes
            if total > limit:
                return True
        return False

    def _commit_in_steps(self, dirty: list[Stream], now: int, result: CommitResult) -> None:
        """Commit ``dirty`` in steps of about ``commit_chunk_bytes`` of payload, each step
        written and its encoded copies dropped before the next: the catch-up commit after a
        full disk then needs the pending records plus one step, not three times them. A
        stream with more than a step pending commits a prefix per step (each step is a
        committed prefix, as after a crash between two commits)."""
        limit = self.config.commit_chunk_bytes
        queue = list(dirty)
        failed: set[Stream] = set()
        while queue:
            group: list[Stream] = []
            held: list[tuple[Stream, _Held]] = []
            size = 0
            while queue and (not group or size + queue[0].nbytes <= limit):
                stream = queue.pop(0)
                if stream.nbytes > limit - size:
                    rest = _hold_back(stream, limit - size)
                    if rest is not None:
                        held.append((stream, rest))
                group.append(stream)
                size += stream.nbytes
            self._commit_streams(group, now, result)
            for stream, rest in held:
                if stream.lens:  # this step failed for the stream: all of it stays pending
                    _give_back(stream, rest)
                    failed.add(stream)
                else:
                    _give_back(stream, rest)
                    self._dirty[stream] = None
                    if stream not in failed:
                        queue.insert(0, stream)

    def _commit_streams(self, dirty: list[Stream], now: int, result: CommitResult) -> None:
        """One step of a commit: stage every stream into a plan, write it, apply or discard
        it as one, then account for the streams it committed."""
        plan = self._plan(dirty, now, result)
        if plan.touched or plan.fast:
            self._write(plan, result)
        if plan.staged:
            self._account(plan, result)
        self._retired += plan.retiring

    def _plan(self, dirty: list[Stream], now: int, result: CommitResult) -> CommitPlan:
        """Stage each stream: the fast path where it applies, else the general one; a stream
        that fails (full disk) is reported and stays pending, the others go on."""
        plan = CommitPlan()
        stage_fast = self._stage_fast if self._fast_ok else None
        for stream in dirty:
            try:
                size = -1 if stage_fast is None else stage_fast(stream, plan)
                if size < 0:
                    size = self._stage(stream, now, plan)
            except (OSError, ValueError) as e:
                self._report(result, stream, e)
                continue
            plan.staged.append(stream)
            plan.nbytes += size
        return plan

    def _write(self, plan: CommitPlan, result: CommitResult) -> None:
        """The plan's backend calls, in order; on failure nothing of it counts as committed
        (its segments are discarded, its records stay pending)."""
        try:
            for ops in plan.writes():
                self._backend.write(ops)
        except OSError as e:
            for seg in plan.segments():
                seg.discard()
            plan.staged = []
            log.error("commit write failed, %d records stay pending: %s", self._pending, e)
            self._last_errno = e.errno
            result.errors.append(CommitError("*", "*", e.errno, f"commit write failed: {e}"))
            return
        track = self.config.fsync_interval_s is not None
        for seg in plan.segments():
            seg.apply()
            if track:
                self._unsynced[seg] = None
        if self._precreated:  # written now: an ordinary segment from here on
            for seg in plan.segments():
                self._precreated.pop(seg, None)

    def _account(self, plan: CommitPlan, result: CommitResult) -> None:
        """The plan's streams are committed: clear their pending records and counts."""
        records = 0
        failing = self._failing
        for stream in plan.staged:
            records += len(stream.lens)
            stream.clear_pending()
            if failing and (stream.product, stream.channel) in failing:
                failing.discard((stream.product, stream.channel))
                log.info("stream %s/%s writes again", stream.product, stream.channel)
        if len(plan.staged) == len(self._dirty):
            self._dirty.clear()
        else:
            for stream in plan.staged:
                del self._dirty[stream]
        result.records += records
        result.bytes += plan.nbytes
        self._pending -= records

    def _day(self, d: int) -> dt.date:
        """The date of day number ``d`` since the epoch (cached: one timedelta per day)."""
        day = self._days.get(d)
        if day is None:
            if len(self._days) > 1024:
                self._days.clear()
            day = self._days[d] = _EPOCH + dt.timedelta(days=d)
        return day

    def _stage_fast(self, stream: Stream, plan: CommitPlan) -> int:
        """The common case in a few C-level calls: all pending records of one day, one batch
        (below ``max_batch_bytes``), into the stream's open segment of that day, which has
        room. Returns the batch length, or -1 when the general path (:meth:`_stage`) must
        take the stream (nothing staged then). OSError (full disk) before anything is staged."""
        lo, hi = stream.lo, stream.hi
        d = lo // NS_PER_DAY
        if d != hi // NS_PER_DAY:
            return -1
        seg = stream.segments.get(self._days.get(d) or self._day(d))
        if seg is None:
            return -1
        lens = stream.lens
        n = len(lens)
        payload_len = stream.nbytes
        total = (BATCH_HEADER_SIZE + 13 * n + payload_len + BATCH_ALIGN - 1) & ~(BATCH_ALIGN - 1)
        end = seg.staged_end
        if total > self._max_batch or (end + total > self._cap and end != HEADER_SIZE):
            return -1
        kinds = stream.kinds_column() if stream.markers else None
        seg.stage_columns(self._direct, stream.ts, kinds, lens, stream.payloads, total, lo, hi,
                          payload_len, plan)
        plan.fast.append(seg)
        return total

    def _report(self, result: CommitResult, stream: Stream, e: OSError | ValueError) -> None:
        code = e.errno if isinstance(e, OSError) else None
        what = "disk full" if code == errno_mod.ENOSPC else "error"
        msg = (f"{what} on {stream.product}/{stream.channel}: {e}; "
               f"{stream.pending} records stay pending")
        result.errors.append(CommitError(stream.product, stream.channel, code, msg))
        self._last_errno = code
        key = (stream.product, stream.channel)
        if key not in self._failing:
            self._failing.add(key)
            log.error("%s", msg)

    def _stage(self, stream: Stream, now_ns: int, plan: CommitPlan) -> int:
        """Encode the stream's pending records into batches and place them in segments.
        All-or-nothing per stream: on error every segment touched here is discarded."""
        mine: list[Segment] = []
        nbytes = 0
        try:
            for day, ts, kinds, lens, blob, bounds in self._split_days(stream):
                seg = self._segment_for(stream, day, now_ns)
                ranges = self._chunks(lens, len(blob))
                for lo, hi, a, b in ranges:
                    length = batch_size(hi - lo, b - a)
                    if not seg.empty and seg.staged_end + length > self._policy.cap:
                        if seg not in mine:
                            mine.append(seg)
                        plan.retiring.append(seg)
                        seg = self._new_segment(stream, day, now_ns)
                    # the batch's CRC binds its file offset (format v2), known only now
                    off, version = seg.staged_end, seg.version
                    if len(ranges) == 1:
                        batch = encode_parts(ts, kinds, lens, [blob], bounds, off, version)
                    else:
                        part_kinds = None if kinds is None else kinds[lo:hi]
                        batch = encode_parts(ts[lo:hi], part_kinds, lens[lo:hi], [blob[a:b]],
                                             None, off, version)
                    if seg not in mine:
                        mine.append(seg)
                    plan.data_ops += seg.stage(batch)
                    nbytes += batch.length
        except BaseException:
            for seg in mine:
                seg.discard()
            raise
        plan.touched += mine
        return nbytes

    @staticmethod
    def _split_days(stream: Stream) -> list[_DayGroup]:
        """The pending columns grouped by UTC day (one group, without copying the columns, in
        the usual case where every record falls on the same day)."""
        ts, lens = stream.ts, stream.lens
        kinds = stream.kinds_column()
        first, last = stream.lo, stream.hi
        blob = b"".join(stream.payloads)
        if first // NS_PER_DAY == last // NS_PER_DAY:
            return [_DayGroup(day_of(first), ts, kinds, lens, blob, (first, last))]
        starts = list(itertools.accumulate(lens, initial=0))
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(ts):
            groups.setdefault(t // NS_PER_DAY, []).append(i)
        out: list[_DayGroup] = []
        for d in sorted(groups):
            idx = groups[d]
            day_ts = array("q", [ts[i] for i in idx])
            out.append(_DayGroup(
                _EPOCH + dt.timedelta(days=d),
                day_ts,
                None if kinds is None else bytes(kinds[i] for i in idx),
                array("I", [lens[i] for i in idx]),
                b"".join([blob[starts[i] : starts[i + 1]] for i in idx]),
                (min(day_ts), max(day_ts)),
            ))
        return out

    def _chunks(self, lens: array[int], payload_len: int) -> list[tuple[int, int, int, int]]:
        """Split records into batches of at most ``max_batch_bytes`` (a record larger than
        that gets a batch of its own): (first, end) record and (start, end) byte ranges."""
        n = len(lens)
        if batch_size(n, payload_len) <= self._max_batch:
            return [(0, n, 0, payload_len)]
        out: list[tuple[int, int, int, int]] = []
        lo = a = pos = 0
        size = 0
        for i, ln in enumerate(lens):
            rec = 13 + ln
            if i > lo and BATCH_HEADER_SIZE + BATCH_ALIGN + size + rec > self._max_batch:
                out.append((lo, i, a, pos))
                lo, a, size = i, pos, 0
            size += rec
            pos += ln
        out.append((lo, n, a, pos))
        return out

    # -- segments --------------------------------------------------------------------------

    def _segment_for(self, stream: Stream, day: dt.date, now_ns: int) -> Segment:
        seg = stream.segments.get(day)
        if seg is None:
            seg = self._open_day(stream, day, now_ns)
        return seg

    def _open_day(self, stream: Stream, day: dt.date, now_ns: int) -> Segment:
        """First write to (stream, day) in this process: continue the latest unsealed segment
        after recovering it, seal older unsealed ones, or start the next number."""
        queued = self._to_seal.pop((stream, day), None)
        if queued is not None:  # a late record for a day still waiting to be sealed
            stream.segments[day] = queued
            self._note_day(stream, day, now_ns)
            return queued
        refs = self._day_files(stream, day)
        for ref in refs:
            self._stale.pop(ref.path, None)  # handled here
        next_number = max((r.number for r in refs), default=-1) + 1
        cont: Segment | None = None
        for ref in refs:
            if ref.archived:
                continue
            seg = self._recover(ref.path)
            if seg is None:
                continue
            if ref.number == next_number - 1 and seg.version == FORMAT_VERSION:
                cont = seg  # (a version-1 segment is sealed; new data goes to a v2 one)
            else:
                seg.seal(fsync=self.config.fsync_interval_s is not None)
                log.info("sealed %s left unsealed by an earlier run", ref.path)
        stream.next_number[day] = next_number
        if cont is not None:
            stream.segments[day] = cont
            self._note_day(stream, day, now_ns)
            return cont
        return self._new_segment(stream, day, now_ns)

    def _day_files(self, stream: Stream, day: dt.date) -> list[SegmentRef]:
        """The stream's segments and archives of ``day``, by number, from one listing of its
        directory (the same as ``iter_segments(root, product, channel, day)``, without a
        stat per directory level: this runs for each of 2 800 streams at start and at every
        UTC day roll); temporaries of an interrupted creation are removed on the way."""
        chan_dir = self.root / stream.product / stream.channel
        prefix = day.isoformat() + "."
        try:
            names = [name for name in os.listdir(chan_dir) if name.startswith(prefix)]
        except FileNotFoundError:
            return []
        refs: list[SegmentRef] = []
        for name in names:
            path = chan_dir / name
            if name.endswith(".seg.tmp"):
                path.unlink(missing_ok=True)  # a creation interrupted by a crash: never committed
                continue
            try:
                ref = parse_segment_path(path)
            except ValueError:
                continue
            if path.is_file() or path.is_symlink():  # a symlink keeps its number taken
                refs.append(ref)
        refs.sort(key=lambda r: (r.number, r.archived))
        return refs

    def _recover(self, path: Path) -> Segment | None:
        """Reopen an unsealed segment (None if sealed, foreign or corrupt: left as is)."""
        try:
            ref = parse_segment_path(path)
            header = read_segment_header(path)
            if header.sealed:
                return None
            named = (header.product, header.channel, header.day, header.number)
            if named != (ref.product, ref.channel, ref.day, ref.number):
                raise ForeignFile(f"its header names {named}, not its path")
            seg, rec = Segment.reopen(path, self._policy)
        except (CorruptSegment, ForeignFile) as e:
            log.error("cannot continue %s (%s); leaving it as it is", path, e)
            return None
        except OSError as e:
            if e.errno != errno_mod.ELOOP:
                raise
            log.error("%s is a symbolic link (or under one): skipped, never written through",
                      path)
            return None
        if rec.corrupt_at is not None:
            log.error(
                "corrupt data in %s at offset %d (committed length %d): keeping its %d valid "
                "records readable, leaving it unsealed and starting a new segment",
                path, rec.corrupt_at, rec.header.committed_len, rec.record_count,
            )
            seg.close()
            return None
        if rec.tail_ignored:
            log.warning("recovered %s: ignored an uncommitted tail after offset %d",
                        path, rec.end)
        return seg

    def _new_segment(self, stream: Stream, day: dt.date, now_ns: int) -> Segment:
        number = stream.next_number.get(day, 0)
        path = segment_path(self.root, stream.product, stream.channel, day, number)
        seg = Segment.create(path, stream.product, stream.channel, day, number, now_ns,
                             self._policy, self._index_step,
                             durable=self.config.fsync_interval_s is not None)
        stream.next_number[day] = number + 1
        stream.segments[day] = seg
        self._note_day(stream, day, now_ns)
        return seg

    def _note_day(self, stream: Stream, day: dt.date, now_ns: int) -> None:
        if day < self._day(now_ns // NS_PER_DAY):
            self._past[stream] = None

    def _seal_past_days(self, today: dt.date, result: CommitResult) -> None:
        """Queue segments of days before ``today`` for sealing (all streams when the day
        changed), then seal at most ``seals_per_commit`` of them within ``seal_budget_s``
        (at least one): sealing trims the file, which costs up to ~4 ms on a filesystem
        mounted with ``discard``, and 2 800 streams must not stall the first commit after
        midnight for seconds."""
        if today != self._today:
            self._today = today
            candidates = list(self._streams.values())
        else:
            candidates = list(self._past)
        for stream in candidates:
            if stream.lens:
                self._past[stream] = None  # pending records may still need that segment
                continue
            for day in [d for d in stream.segments if d < today]:
                self._to_seal[(stream, day)] = stream.segments.pop(day)
            self._past.pop(stream, None)
        fsync = self.config.fsync_interval_s is not None
        deadline = time.perf_counter() + self.config.seal_budget_s
        done = 0
        # waves of io_threads parallel seals (trimming a file blocks ~1-4 ms on some disks,
        # mostly waiting, not CPU); a budget of 0 seals one segment per commit
        wave = self.config.io_threads if self.config.seal_budget_s > 0 else 1
        while self._to_seal and done < self.config.seals_per_commit:
            if done and time.perf_counter() > deadline:
                return
            keys = list(itertools.islice(self._to_seal,
                                         min(wave, self.config.seals_per_commit - done)))
            segs = [self._to_seal.pop(key) for key in keys]
            for seg in segs:
                self._unsynced.pop(seg, None)
            self._seal_all(segs, fsync, result)
            done += len(segs)
        while self._stale and done < self.config.seals_per_commit:
            if done and time.perf_counter() > deadline:
                return
            path = next(iter(self._stale))
            del self._stale[path]
            if self._seal_if_stale(path):
                result.sealed.append(path)
            done += 1

    def _io_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.io_threads, thread_name_prefix="cbl-io")
        return self._pool

    def _seal_all(self, segs: list[Segment], fsync: bool, result: CommitResult) -> None:
        """Seal ``segs`` (in parallel when several: the syscalls release the GIL); every one
        is attempted, sealed paths go to ``result``, the first error is raised after all.
        A segment created in advance for a day and never written is removed instead."""
        if self._precreated:
            removed: set[Segment] = set()
            for seg in segs:
                if self._precreated.pop(seg, 0) is None and seg.empty:
                    seg.close()
                    seg.path.unlink(missing_ok=True)
                    removed.add(seg)
            segs = [seg for seg in segs if seg not in removed]
        if not segs:
            return
        if len(segs) == 1 or self.config.io_threads == 1:
            for seg in segs:
                seg.seal(fsync=fsync)
                result.sealed.append(seg.path)
            return
        k = min(self.config.io_threads, len(segs))
        # one job per thread, not per file: 2 800 futures cost more CPU than the seals
        jobs = [self._io_pool().submit(_seal_each, segs[i::k], fsync) for i in range(k)]
        failed: dict[Segment, BaseException] = {}
        for job in jobs:
            failed.update(job.result())
        result.sealed += [seg.path for seg in segs if seg not in failed]
        if failed:
            raise next(iter(failed.values()))

    def _precreate(self, now_ns: int) -> None:
        """In the last ``precreate_s`` seconds of a UTC day, create the next day's segment of
        streams that have one open today, in parallel waves within ``seal_budget_s`` per
        commit, so that the first commit after midnight finds them open."""
        left_s = (NS_PER_DAY - now_ns % NS_PER_DAY) / 1e9
        if left_s > self.config.precreate_s or left_s < 1.0:
            return
        today = self._day(now_ns // NS_PER_DAY)
        tomorrow = self._day(now_ns // NS_PER_DAY + 1)
        deadline = time.perf_counter() + self.config.seal_budget_s
        todo = (s for s in self._streams.values()
                if today in s.segments and tomorrow not in s.segments)
        durable = self.config.fsync_interval_s is not None
        while time.perf_counter() <= deadline:
            wave = list(itertools.islice(todo, self.config.io_threads))
            if not wave:
                return
            jobs = [self._io_pool().submit(
                Segment.create_fresh, self.root, s.product, s.channel, tomorrow, now_ns,
                self._policy, self._index_step, durable) for s in wave]
            for stream, job in zip(wave, jobs, strict=True):
                try:
                    seg = job.result()
                except OSError as e:  # e.g. ENOSPC: the normal path retries after midnight
                    log.warning("could not pre-create %s/%s %s: %s", stream.product,
                                stream.channel, tomorrow, e)
                    return
                if seg is None:  # the day has files already: the normal path opens them
                    continue
                stream.segments[tomorrow] = seg
                stream.next_number[tomorrow] = 1
                self._precreated[seg] = None

    def _seal_if_stale(self, path: Path) -> bool:
        """Recover and seal ``path`` if it is an unsealed segment (not a corrupt one)."""
        try:
            seg = self._recover(path)
        except FileNotFoundError:
            return False  # archived and removed meanwhile (tools/compact takes sealed ones)
        except OSError as e:
            log.error("cannot check %s left by an earlier run: %s", path, e)
            return False
        if seg is None:
            return False
        seg.seal(fsync=self.config.fsync_interval_s is not None)
        log.info("sealed %s left unsealed by an earlier run", path)
        return True

    @property
    def seals_pending(self) -> int:
        """Segments waiting to be checked or sealed by the next commits: those of past days,
        and those an earlier run left unsealed."""
        return len(self._to_seal) + len(self._stale)

    def _maybe_sync(self, result: CommitResult) -> None:
        interval = self.config.fsync_interval_s
        if interval is None or not self._unsynced:
            return
        now = time.monotonic()
        if now - self._last_sync < interval:
            return
        segs = [s for s in self._unsynced if s.fd >= 0]
        try:
            self._backend.sync([s.fd for s in segs])
        except OSError as e:
            result.errors.append(CommitError("*", "*", e.errno, f"fsync failed: {e}"))
            log.error("fsync failed: %s", e)
            return
        self._unsynced.clear()
        self._last_sync = now

    def seal_stale(self, now_ns: int) -> list[Path]:
        """Seal now every unsealed segment of days before ``now_ns``'s day left by an earlier
        run (a crash skips sealing). Corrupt ones are logged and left as they are. (With
        ``seal_stale_on_open`` the engine does this gradually, at commits.)"""
        today = day_of(now_ns)
        sealed: list[Path] = []
        open_paths = {seg.path for s in self._streams.values() for seg in s.segments.values()}
        open_paths |= {seg.path for seg in self._to_seal.values()}
        for ref in iter_segments(self.root):
            if ref.archived or ref.day >= today or ref.path in open_paths:
                continue
            self._stale.pop(ref.path, None)
            if self._seal_if_stale(ref.path):
                sealed.append(ref.path)
        return sealed

    # -- shutdown --------------------------------------------------------------------------

    def close(self) -> CommitResult:
        """Commit, seal every open segment and release the data root."""
        if self._closed:
            return CommitResult()
        result = self.commit()
        if self._pending:
            log.error("closing with %d records not committed (see errors)", self._pending)
            result.lost = self._write_loss()
        fsync = self.config.fsync_interval_s is not None
        segs: list[Segment] = []
        for stream in self._streams.values():
            segs += stream.segments.values()
            stream.segments.clear()
        segs += self._to_seal.values()
        self._to_seal.clear()
        sealed_all = True
        try:
            self._seal_all(segs, fsync, result)
        except OSError as e:
            sealed_all = False
            log.error("sealing at close failed: %s", e)
            result.errors.append(CommitError("*", "*", e.errno, f"seal failed: {e}"))
        for path in list(self._stale):
            if self._seal_if_stale(path):
                result.sealed.append(path)
        self._stale.clear()
        self._unsynced.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        # every stream sealed: nothing for the next run to mark but what the ledger lists
        if self._live is not None:
            self._live.close(remove=sealed_all)
        if self._loss is not None:
            self._loss.close(remove=not self._loss_kept)
        self._backend.close()
        self._lock.release()
        self._closed = True
        return result

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
