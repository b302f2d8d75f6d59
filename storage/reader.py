"""Read records back from a segment, live or sealed, from the start or from a timestamp.

The reader trusts nothing it has not checked: it reads only up to the header's commit point and
verifies every batch's CRC32C before yielding its records, so a torn or uncommitted tail is
never returned. ``records(from_ns=...)`` starts at the header's sparse time index instead of the
beginning. ``follow()`` polls the commit point and yields records as the writer commits them.
"""

from __future__ import annotations

import bisect
import mmap
import os
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import TracebackType

from storage.format import (
    HEADER_SIZE,
    OFF_COMMITTED_LEN,
    OFF_FLAGS,
    BatchInfo,
    CorruptSegment,
    ForeignFile,
    SegmentHeader,
    batch_records,
    decode_header,
    read_batch,
)
from storage.records import Record

__all__ = ["Record", "SegmentReader", "decode_batches"]


def decode_batches(buf: bytes | memoryview, base_offset: int) -> Iterator[Record]:
    """Records of a buffer that holds whole batches only (e.g. a decompressed archive frame);
    ``base_offset`` is the file offset of ``buf[0]``. CorruptSegment on anything invalid."""
    data = buf if isinstance(buf, bytes) else bytes(buf)
    off, end = 0, len(data)
    while off < end:
        try:
            info, blob = read_batch(data, off, end)
        except CorruptSegment as e:
            raise CorruptSegment(str(e).rsplit(" at offset", 1)[0], base_offset + off) from e
        yield from batch_records(blob, base_offset + off)
        off += info.length


class SegmentReader:
    """A read-only view of one ``.seg`` file. Not thread-safe; cheap to open."""

    def __init__(self, path: Path, fd: int, mm: mmap.mmap) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self._header = decode_header(mm[0:HEADER_SIZE])

    @classmethod
    def open(cls, path: Path | str) -> SegmentReader:
        """Open ``path``; ForeignFile or CorruptSegment (never a bare struct.error) if bad."""
        p = Path(path)
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                decode_header(os.pread(fd, HEADER_SIZE, 0))
                raise CorruptSegment(f"{p}: file shorter than its header", size)
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            try:
                return cls(p, fd, mm)
            except BaseException:
                mm.close()
                raise
        except ForeignFile as e:
            os.close(fd)
            raise ForeignFile(f"{p}: {e}") from None
        except BaseException:
            os.close(fd)
            raise

    @property
    def header(self) -> SegmentHeader:
        """The header as of the last :meth:`refresh` (open, or each read pass)."""
        return self._header

    def refresh(self) -> SegmentHeader:
        """Re-read the header (a live segment's commit point and statistics move)."""
        self._header = decode_header(self._mm[0:HEADER_SIZE])
        return self._header

    def _committed_end(self) -> int:
        """The current commit point, with the mapping grown to cover it."""
        end = int.from_bytes(self._mm[OFF_COMMITTED_LEN : OFF_COMMITTED_LEN + 8], "little")
        if end < HEADER_SIZE:
            raise CorruptSegment(f"{self.path}: commit point {end} inside the header",
                                 OFF_COMMITTED_LEN)
        if end > len(self._mm):
            size = os.fstat(self._fd).st_size
            if end > size:
                raise CorruptSegment(
                    f"{self.path}: file ({size} bytes) shorter than its commit point", end
                )
            self._mm.close()
            self._mm = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        return end

    def _sealed(self) -> bool:
        return bool(int.from_bytes(self._mm[OFF_FLAGS : OFF_FLAGS + 4], "little") & 1)

    def _batches(self, start: int, end: int) -> Iterator[tuple[BatchInfo, bytes]]:
        off = start
        while off < end:
            try:
                info, blob = read_batch(self._mm, off, end)
            except CorruptSegment as e:
                raise CorruptSegment(
                    f"{self.path}: {str(e).rsplit(' at offset', 1)[0]}", off
                ) from e
            yield info, blob
            off += info.length

    def batches(self) -> Iterator[BatchInfo]:
        """Every committed batch, each CRC-checked; CorruptSegment at the first bad one."""
        self.refresh()
        for info, _ in self._batches(HEADER_SIZE, self._committed_end()):
            yield info

    def batch_blobs(self) -> Iterator[tuple[BatchInfo, bytes]]:
        """Every committed batch with its bytes, each CRC-checked, for readers that decode a
        whole batch at once (storage.bulk); CorruptSegment after the valid prefix."""
        self.refresh()
        yield from self._batches(HEADER_SIZE, self._committed_end())

    def _start_for(self, from_ns: int, end: int) -> int:
        """Where to begin for records at or after ``from_ns``: the last index entry whose
        preceding records are all older (entries are hints: checked before use)."""
        index = [e for e in self._header.index if HEADER_SIZE <= e[0] < end]
        keys = [ts for _, ts in index]
        i = bisect.bisect_left(keys, from_ns) - 1
        if i < 0 or any(a[0] >= b[0] or a[1] > b[1] for a, b in pairwise(index)):
            return HEADER_SIZE
        off = index[i][0]
        try:
            read_batch(self._mm, off, end)
        except CorruptSegment:
            return HEADER_SIZE
        return off

    def records(self, from_ns: int | None = None, to_ns: int | None = None) -> Iterator[Record]:
        """Committed records with ``from_ns <= ts_ns < to_ns`` (either bound optional), in
        file order. CorruptSegment after the valid prefix if a committed batch is damaged."""
        self.refresh()
        end = self._committed_end()
        start = HEADER_SIZE if from_ns is None else self._start_for(from_ns, end)
        for info, blob in self._batches(start, end):
            if from_ns is not None and info.last_ts_ns < from_ns:
                continue
            if to_ns is not None and info.first_ts_ns >= to_ns:
                continue
            if (from_ns is None or info.first_ts_ns >= from_ns) and (
                to_ns is None or info.last_ts_ns < to_ns
            ):
                yield from batch_records(blob, info.offset)
                continue
            lo = -(1 << 63) if from_ns is None else from_ns
            hi = 1 << 63 if to_ns is None else to_ns
            for rec in batch_records(blob, info.offset):
                if lo <= rec.ts_ns < hi:
                    yield rec

    def follow(self, poll_s: float = 0.2) -> Iterator[Record]:
        """Every committed record from the start, then new ones as the writer commits them,
        polling every ``poll_s``; ends once the segment is sealed and fully read."""
        off = HEADER_SIZE
        while True:
            sealed = self._sealed()
            end = self._committed_end()
            for info, blob in self._batches(off, end):
                yield from batch_records(blob, info.offset)
                off = info.offset + info.length
            if sealed:
                self.refresh()
                return
            time.sleep(poll_s)

    def close(self) -> None:
        if self._fd >= 0:
            self._mm.close()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
