"""One open, writable segment file: preallocated extents, a shared mapping, a commit point.

A commit is staged first (batches placed after the committed end, file grown with
``posix_fallocate`` so a full disk fails here, cleanly, and never as SIGBUS inside the mapping),
then the engine has the backend write the staged bytes, then the new ``committed_len``. Only
after both writes succeed does :meth:`Segment.apply` make the staged state the committed one;
on any failure :meth:`Segment.discard` forgets it and the records stay pending in the engine.

Extents grow with the segment (first extent small, then doubling up to a cap), so thousands of
idle streams reserve little disk while a busy stream grows in few large, contiguous steps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import mmap
import os
import struct
from array import array
from pathlib import Path
from typing import Protocol

import google_crc32c

from storage import fastpath
from storage.backends.base import WriteOp
from storage.format import (
    HEADER_SIZE,
    INDEX_CAPACITY,
    INDEX_ENTRY_SIZE,
    INDEX_OFFSET,
    OFF_COMMITTED_LEN,
    OFF_FLAGS,
    OFF_INDEX_COUNT,
    OFF_STATS,
    EncodedBatch,
    SegmentHeader,
    decode_header,
    encode_header,
    pack_committed_len,
    pack_flags,
    pack_index_entry,
    pack_index_head,
    pack_stats,
)
from storage.layout import SEGMENT_OPEN_FLAGS, refuse_symlinked_dirs, segment_path
from storage.recovery import Recovered, index_due, recover_buffer
from storage.stream import NS_PER_DAY

__all__ = ["BatchColumns", "BatchSpan", "ExtentPolicy", "PhaseOps", "Segment",
           "read_segment_header"]

#: A batch's (length in bytes, records, first_ts_ns, last_ts_ns), as the fast path knows
#: them before framing; a plain tuple: one is built per stream and commit.
BatchSpan = tuple[int, int, int, int]

#: A batch's columns as the engine holds them: (receive times, kinds or None for all DATA,
#: payload lengths, payloads, total payload bytes); a plain tuple, as ``BatchSpan``.
BatchColumns = tuple["array[int]", "bytes | None", "array[int]", "list[bytes]", int]


class PhaseOps(Protocol):
    """Where :meth:`Segment.stage_columns` puts its writes, by phase of a commit (the
    engine's ``staging.CommitPlan``): batches, then header hints (one backend call), then
    commit points."""

    data_ops: list[WriteOp]
    head_ops: list[WriteOp]
    commit_ops: list[WriteOp]

#: ``WriteOp`` without the NamedTuple constructor's Python-level frame (3x cheaper; the
#: fast path makes four ops per stream and commit).
_op = tuple.__new__
_HINTS = struct.Struct("<QIqq")  # format.pack_stats (v2) / pack_committed_len, inlined
_HINTS_OUT = struct.Struct("<IIqq")
_U64 = struct.Struct("<Q")
_crc = google_crc32c.value


def read_segment_header(path: Path) -> SegmentHeader:
    """Decode the header of the segment at ``path`` (ForeignFile/CorruptSegment if bad)."""
    fd = os.open(path, os.O_RDONLY | SEGMENT_OPEN_FLAGS)
    try:
        return decode_header(os.pread(fd, HEADER_SIZE, 0))
    finally:
        os.close(fd)


class ExtentPolicy:
    """How much to preallocate: ``first`` bytes at creation, then grow by the current size
    (doubling) clamped to ``[first, largest]``, never past ``cap`` unless one batch needs it."""

    __slots__ = ("cap", "first", "largest", "populate")

    def __init__(self, first: int, largest: int, cap: int, populate: bool = False) -> None:
        self.first = max(first, HEADER_SIZE + 4096)
        self.largest = max(largest, self.first)
        self.cap = cap
        self.populate = populate

    def grown(self, size: int, needed: int) -> int:
        target = size + min(max(size, self.first), self.largest)
        target = max(min(target, self.cap), needed)
        return (target + 4095) & ~4095


#: How far ahead of the write position pages are prefilled when ``populate`` is on. Kept
#: small because the kernel maps a whole page-cache folio on a write fault (Linux 6.x large
#: folios): a prefilled window ends up resident in the mapping at its first touch. 64 KiB:
#: with ~650 busy streams (400 products) each KiB here is ~0.65 MB of the daemon's RSS, and
#: 64 KiB against 256 KiB made no difference to the engine's CPU per stream-commit within
#: the noise of ``bench/storage.py --ingest`` (docs/STORAGE_BENCH.md, Mapped memory).
POPULATE_WINDOW = 64 << 10

#: Committed bytes a segment keeps mapped in the process before they are unmapped
#: (madvise(MADV_DONTNEED)); see ``Segment.apply``. 64 KiB for the same reason: one madvise
#: per 64 KiB of a stream's data (~2 000/s at 140 MB/s) costs less than the noise.
UNMAP_STEP = 64 << 10
_ZEROS = memoryview(bytes(POPULATE_WINDOW + 2 * mmap.PAGESIZE))


class Segment:
    """A writable segment. Used by the engine's single thread only.

    With ``ExtentPolicy.populate`` (the mmap backend), the pages a window ahead of the write
    position are put in the page cache with one ``pwrite`` of zeros (over preallocated bytes
    that read as zeros anyway, so the file is unchanged): the first store into a fallocated
    page of a shared mapping costs ~5 us of kernel time on ext4 (page fault or
    madvise(MADV_POPULATE_WRITE) alike, the file system's page_mkwrite), a page already in the
    cache ~0.5 us, and a large zero pwrite ~1 us a page. Measured in the storage thread: the
    madvise prefault was ~30 % of its CPU in the ingest-shaped steady state.
    """

    __slots__ = (
        "_committed_index", "_populated", "_s_count", "_s_first", "_s_last", "_unmapped", "count",
        "end", "fd",
        "first_ts", "header", "index", "index_step", "last_ts", "mm", "path", "policy", "size",
        "staged_end", "version",
    )

    def __init__(
        self,
        path: Path,
        fd: int,
        header: SegmentHeader,
        size: int,
        policy: ExtentPolicy,
        recovered: Recovered | None = None,
    ) -> None:
        self.path = path
        self.fd = fd
        self.header = header
        self.size = size
        self.policy = policy
        self.mm = mmap.mmap(fd, size)
        self.index_step = header.index_step
        self.version = header.version  # batches and hints are written in the file's version
        self.end: int = HEADER_SIZE
        self.count: int = 0
        self.first_ts: int = 0
        self.last_ts: int = 0
        self.index: list[tuple[int, int]] = []
        if recovered is not None:
            self.end, self.count = recovered.end, recovered.record_count
            self.first_ts, self.last_ts = recovered.first_ts_ns, recovered.last_ts_ns
            self.index = list(recovered.index)
        self._committed_index = len(self.index)
        self._populated = 0
        self._unmapped = HEADER_SIZE  # committed pages below this are no longer mapped
        self.staged_end: int = self.end  # where the next batch goes (read by the engine)
        self._s_count = self.count
        self._s_first, self._s_last = self.first_ts, self.last_ts

    # -- creation and reopening ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        product: str,
        channel: str,
        day: dt.date,
        number: int,
        created_ns: int,
        policy: ExtentPolicy,
        index_step: int,
        durable: bool = False,
    ) -> Segment:
        """Create a new segment atomically (temp file + rename); OSError (ENOSPC...) leaves
        nothing behind. ``durable`` also fsyncs the file and its directory, so that the new
        name survives a power loss (used when the engine has an fsync interval)."""
        header = SegmentHeader(
            product=product, channel=channel, day=day, number=number,
            created_ns=created_ns, index_step=index_step,
        )
        data = encode_header(header)
        if os.path.lexists(path):
            raise FileExistsError(f"segment already exists: {path}")
        tmp = f"{path}.tmp"
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | SEGMENT_OPEN_FLAGS
        try:
            refuse_symlinked_dirs(path)
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # a new stream: its directories first (not on every file)
            path.parent.mkdir(parents=True, exist_ok=True)
            refuse_symlinked_dirs(path)
            fd = os.open(tmp, flags, 0o644)
        renamed = False
        try:
            os.posix_fallocate(fd, 0, policy.first)
            os.pwrite(fd, data, 0)
            if durable:
                os.fsync(fd)
            os.rename(tmp, path)
            renamed = True
            if durable:
                dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path if renamed else tmp)  # it holds no record yet
            raise
        try:
            return cls(path, fd, header, policy.first, policy)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def create_fresh(
        cls,
        root: Path,
        product: str,
        channel: str,
        day: dt.date,
        created_ns: int,
        policy: ExtentPolicy,
        index_step: int,
        durable: bool = False,
    ) -> Segment | None:
        """Create segment 0 of (product, channel, day) if that day has no file at all yet
        (segments, archives or temporaries); None otherwise. Touches no engine state, so the
        engine runs it in its I/O threads to create the next day's segments in advance."""
        path = segment_path(root, product, channel, day, 0)
        prefix = day.isoformat() + "."
        try:
            if any(name.startswith(prefix) for name in os.listdir(path.parent)):
                return None
        except FileNotFoundError:
            pass
        return cls.create(path, product, channel, day, 0, created_ns, policy, index_step,
                          durable=durable)

    @classmethod
    def reopen(cls, path: Path, policy: ExtentPolicy) -> tuple[Segment, Recovered]:
        """Open an unsealed segment after a restart or crash, recovering its committed state.

        The caller checks ``Recovered.corrupt_at``: a segment with a corrupt middle must not be
        appended to (use :meth:`close` and start a new one).
        """
        refuse_symlinked_dirs(path)
        fd = os.open(path, os.O_RDWR | SEGMENT_OPEN_FLAGS)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                rec = recover_buffer(os.pread(fd, HEADER_SIZE, 0))  # raises the clear error
            with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as ro:
                rec = recover_buffer(ro)
            seg = cls(path, fd, rec.header, size, policy, rec)
        except BaseException:
            os.close(fd)
            raise
        if rec.corrupt_at is None:
            seg._write_state()
        return seg, rec

    # -- staging a commit ------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        return self.staged_end == HEADER_SIZE

    def reserve(self, end: int) -> None:
        """Make sure bytes up to ``end`` are allocated and mapped (OSError on a full disk)."""
        if end <= self.size:
            return
        new_size = self.policy.grown(self.size, end)
        try:
            os.posix_fallocate(self.fd, self.size, new_size - self.size)
        except OSError:
            # A failed fallocate may leave the file longer than the mapping; keep them equal
            # so the mapping never covers unallocated bytes.
            os.ftruncate(self.fd, self.size)
            raise
        self.mm.resize(new_size)
        self.size = new_size

    def stage(self, batch: EncodedBatch) -> list[WriteOp]:
        """Place one encoded batch after the staged end; returns the ops that write it."""
        off = self.staged_end
        end = off + batch.length
        self.reserve(end)
        if self.policy.populate and end > self._populated:
            self._populate(off, end)
        if index_due(self.index, off, self.index_step):
            self.index.append((off, self._s_last))
        if self._s_count == 0:
            self._s_first, self._s_last = batch.first_ts_ns, batch.last_ts_ns
        else:
            self._s_first = min(self._s_first, batch.first_ts_ns)
            self._s_last = max(self._s_last, batch.last_ts_ns)
        self._s_count += batch.records
        self.staged_end = end
        ops = []
        for part in batch.parts:
            ops.append(WriteOp(self.fd, self.mm, off, part))
            off += len(part)
        return ops

    def stage_columns(self, span: BatchSpan, columns: BatchColumns, out: PhaseOps,
                      direct: bool) -> None:
        """:meth:`stage` + :meth:`header_ops` + :meth:`commit_op` in one call, for one batch
        given as columns (the engine's per-stream fast path; the caller guarantees ``span``:
        ``length = batch_size(records, payload bytes)``, first/last = min/max of the times).
        The batch is framed by ``storage.fastpath`` (compiled when built): with ``direct``
        (a backend that would copy it into the mapping anyway, in the same order) straight
        into this segment's mapping now, else as ops in ``out.data_ops``; the hints go to
        ``out.head_ops``, the commit point to ``out.commit_ops``. OSError (full disk) before
        anything is staged."""
        total, count, first, last = span
        ts, kinds, lens, payloads, payload_len = columns
        off = self.staged_end
        end = off + total
        if end > self.size:
            self.reserve(end)
        if self.policy.populate and end > self._populated:
            self._populate(off, end)
        fd, mm = self.fd, self.mm
        if direct:
            fastpath.frame_into(mm, off, off, ts, lens, kinds, payloads, first, last,
                                payload_len, total)
        else:
            at = off
            for part in fastpath.frame_parts(off, ts, lens, kinds, payloads, first, last,
                                             payload_len, total):
                out.data_ops.append(_op(WriteOp, (fd, mm, at, part)))
                at += len(part)
        index = self.index
        step = self.index_step
        if (step > 0 and len(index) < INDEX_CAPACITY
                and off >= (index[-1][0] if index else HEADER_SIZE) + step):
            index.append((off, self._s_last))
        if self._s_count:
            if self._s_first < first:
                first = self._s_first
            if self._s_last > last:
                last = self._s_last
        self._s_first = first
        self._s_last = last
        self._s_count = count = self._s_count + count
        self.staged_end = end
        head_ops = out.head_ops
        if self.version == 2:
            hint = count if count <= 0xFFFF_FFFF else 0xFFFF_FFFF
            crc = _crc(_HINTS.pack(end, hint, first, last))
            head_ops.append(_op(WriteOp, (fd, mm, OFF_STATS,
                                          _HINTS_OUT.pack(crc, hint, first, last))))
        else:
            head_ops.append(_op(WriteOp, (fd, mm, OFF_STATS,
                                          pack_stats(count, first, last, end, 1))))
        if len(index) > self._committed_index:
            head_ops += self._index_ops()
        out.commit_ops.append(_op(WriteOp, (fd, mm, OFF_COMMITTED_LEN, _U64.pack(end))))

    def write_through(self, ts: list[int], payloads: list[bytes], day_lo: int, cap: int,
                      max_batch: int) -> int:
        """Write the sink's lists as one batch after the committed end and commit it now, in
        one ``fastpath.commit_lists`` call (batch, hints, commit point, in that order, into
        the mapping): the engine's write-through for a stream with nothing pending. Returns
        the payload bytes committed, or -1 when the records must take the usual way (nothing
        written): another day than ``day_lo``'s, a batch over ``max_batch`` or one that would
        push a non-empty segment past ``cap``, an index entry due here, an older format
        version, a staged commit in progress, or a full disk while growing the file (the
        usual path reports it)."""
        off = self.staged_end
        index, step = self.index, self.index_step  # recovery.index_due, inlined: per call
        if (off != self.end or self.version != 2 or (step > 0 and len(index) < INDEX_CAPACITY
                and off >= (index[-1][0] if index else HEADER_SIZE) + step)):
            return -1
        cap_end = cap if off != HEADER_SIZE else off + max_batch
        populate = self.policy.populate
        room = min(self.size, self._populated) if populate else self.size
        args = (off, room, cap_end, max_batch, day_lo, day_lo + NS_PER_DAY, self.count,
                self.first_ts, self.last_ts, ts, payloads)
        done = fastpath.commit_lists(self.mm, *args)
        if type(done) is int:  # room first: grow and prefill as the usual path would
            try:
                self.reserve(done)
                if populate and done > self._populated:
                    self._populate(off, done)
            except OSError:
                return -1
            done = fastpath.commit_lists(self.mm, off, min(self.size, self._populated)
                                         if populate else self.size, *args[2:])
        if type(done) is not tuple:
            return -1
        end, count, first, last, nbytes = done
        self.staged_end = self.end = end
        self._s_count = self.count = count
        self._s_first = self.first_ts = first
        self._s_last = self.last_ts = last
        if end - self._unmapped >= UNMAP_STEP:
            self._unmap(end)
        return nbytes

    def _populate(self, off: int, end: int) -> None:
        page = mmap.PAGESIZE
        # pages wholly past ``off`` hold nothing committed or staged (at most an uncommitted
        # tail, which readers ignore): zeros may overwrite them; the page holding ``off`` may
        # hold committed bytes and is left to an ordinary fault
        start = max(self._populated, (off + page - 1) & ~(page - 1))
        # look ahead as far as this segment has already been written (a quiet stream
        # prefills a page, a busy one up to POPULATE_WINDOW): no work for idle space
        ahead = min(POPULATE_WINDOW, max(page, end - HEADER_SIZE))
        stop = min(self.size, (end + ahead + page - 1) & ~(page - 1), start + len(_ZEROS))
        if stop > start:  # OSError (EIO, ENOSPC): raised before anything is staged
            self._populated = start + os.pwrite(self.fd, _ZEROS[: stop - start], start)

    def header_ops(self) -> list[WriteOp]:
        """Phase-1 header writes (statistics, new index entries): hints, written before the
        commit point so that they never claim more than the commit point allows after it."""
        ops = [WriteOp(self.fd, self.mm, OFF_STATS,
                       pack_stats(self._s_count, self._s_first, self._s_last, self.staged_end,
                                  self.version))]
        if len(self.index) > self._committed_index:
            ops += self._index_ops()
        return ops

    def _index_ops(self) -> list[WriteOp]:
        """Writes of the index entries staged since the last commit, then the entry count."""
        ops = []
        for i in range(self._committed_index, len(self.index)):
            off, ts = self.index[i]
            ops.append(WriteOp(self.fd, self.mm, INDEX_OFFSET + i * INDEX_ENTRY_SIZE,
                               pack_index_entry(off, ts)))
        entries = b"".join(pack_index_entry(o, t) for o, t in self.index)
        ops.append(WriteOp(self.fd, self.mm, OFF_INDEX_COUNT,
                           pack_index_head(len(self.index), self.index_step, entries,
                                           self.version)))
        return ops

    def commit_op(self) -> WriteOp:
        """Phase-2 write: the new commit point."""
        return WriteOp(self.fd, self.mm, OFF_COMMITTED_LEN, pack_committed_len(self.staged_end))

    def apply(self) -> None:
        """Both phases are on disk (page cache): the staged state is now committed.

        Every ``UNMAP_STEP`` committed bytes, the pages written so far (below the page that
        holds the end) are dropped from this process's mapping with madvise(MADV_DONTNEED):
        on a shared file mapping that only unmaps them — the data stays in the page cache and
        is written back as usual — so the daemon's RSS stays bounded by about ``UNMAP_STEP`` +
        ``POPULATE_WINDOW`` per active stream instead of growing with the day's data (written
        pages of a mapping count as resident until unmapped). One syscall per ``UNMAP_STEP``
        bytes of a stream.
        """
        end = self.end = self.staged_end
        self.count = self._s_count
        self.first_ts, self.last_ts = self._s_first, self._s_last
        self._committed_index = len(self.index)
        if end - self._unmapped >= UNMAP_STEP:
            self._unmap(end)

    def _unmap(self, end: int) -> None:
        stop = end & ~(mmap.PAGESIZE - 1)
        with contextlib.suppress(OSError, ValueError):  # only memory use depends on it
            self.mm.madvise(mmap.MADV_DONTNEED, self._unmapped, stop - self._unmapped)
        self._unmapped = stop

    def discard(self) -> None:
        """Forget everything staged since the last commit."""
        self.staged_end = self.end
        self._s_count = self.count
        self._s_first, self._s_last = self.first_ts, self.last_ts
        del self.index[self._committed_index :]

    # -- ending ----------------------------------------------------------------------------

    def _write_state(self) -> None:
        """Rewrite every hint (statistics, the whole index and its checksum), then the commit
        point: after recovery the stored hints may be stale or damaged."""
        self._committed_index = 0
        for op in self.header_ops():
            self.mm[op.offset : op.offset + len(op.data)] = op.data
        self._committed_index = len(self.index)
        self.mm[OFF_COMMITTED_LEN : OFF_COMMITTED_LEN + 8] = pack_committed_len(self.end)

    def seal(self, fsync: bool = False) -> None:
        """Mark the segment immutable: trim the file to its committed length, then set the
        sealed flag. Any staged state is discarded first."""
        self.discard()
        self._write_state()
        self.mm.close()
        os.ftruncate(self.fd, self.end)
        os.pwrite(self.fd, pack_flags(True), OFF_FLAGS)
        if fsync:
            os.fdatasync(self.fd)
        os.close(self.fd)
        self.fd = -1

    def close(self) -> None:
        """Release the file without sealing (the engine still owns the stream's day)."""
        if self.fd >= 0:
            self.mm.close()
            os.close(self.fd)
            self.fd = -1
