"""Marker records (GAP, DISCONNECT, DROPPED, RESTART, ...) found without reading payloads.

A batch stores its record kinds as one byte per record in a column of its own (docs/FORMAT.md),
so the markers of a segment can be counted, and the batches holding them found, by reading each
batch's 40-byte header and its kinds column through the memory map: the timestamps, lengths and
payloads are never touched. That is what keeps `inspect ls` quick on live and sealed segments
and lets `inspect cat --markers-only` decode only the batches that hold markers. Archives keep
the same counts per zstd frame in their seek table (docs/ARCHIVE_FORMAT.md).

The walk here checks each batch's structure (magic, sizes, bounds) but not its CRC, which would
mean reading the payloads: counts are what the committed bytes say; records handed out by
:meth:`SegmentScan.records` come from CRC-checked batches only (`inspect verify` checks all).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from storage.format import (
    BATCH_HEADER_SIZE,
    BATCH_MAGIC,
    BATCH_MAGIC_V1,
    HEADER_SIZE,
    CorruptSegment,
    SegmentHeader,
    batch_size,
    decode_header,
    iter_batch_records,
)
from storage.records import Record, RecordKind

__all__ = [
    "MARKER_SLOTS",
    "NO_MARKERS",
    "BatchHead",
    "MarkerCounts",
    "SegmentScan",
    "batch_kinds",
    "count_kinds",
    "holds_kinds",
    "markers_of",
    "segment_marker_counts",
    "walk_batch_heads",
]

# magic, crc, length, n, min_ts, max_ts, payload_len, reserved (docs/FORMAT.md, "Batch")
_BATCH_HEAD = struct.Struct("<4sIIIqqII")
_ZERO = b"\x00"


class MarkerCounts(NamedTuple):
    """How many records of each marker kind; ``other`` counts kinds this code does not know
    (9..255), so a record of a future kind is never silently left out of a total."""

    gap: int = 0
    disconnect: int = 0
    reconnect: int = 0
    subscribe: int = 0
    dropped: int = 0
    note: int = 0
    restart: int = 0
    stop: int = 0
    other: int = 0

    def plus(self, other: Iterable[int]) -> MarkerCounts:
        """Element-wise sum (``+`` on a tuple would concatenate)."""
        return MarkerCounts(*(a + b for a, b in zip(self, other, strict=True)))

    @property
    def total(self) -> int:
        return sum(self)

    @property
    def possible_loss(self) -> int:
        """Markers saying messages may be missing (``records.POSSIBLE_LOSS``, and kinds not
        known here); a clean STOP, a RECONNECT, SUBSCRIBE or NOTE is not one."""
        return self.gap + self.disconnect + self.dropped + self.restart + self.other

    def as_dict(self) -> dict[str, int]:
        return dict(self._asdict())


MARKER_SLOTS = len(MarkerCounts._fields)  # 9: kinds 1..8, then "other"
NO_MARKERS = MarkerCounts()
_LAST_KNOWN = max(RecordKind)
assert _LAST_KNOWN == MARKER_SLOTS - 1 and int(RecordKind.GAP) == 1, "MarkerCounts = RecordKind"


def count_kinds(kinds: bytes) -> MarkerCounts:
    """Count the markers in a kinds column (one byte per record, 0 = DATA). Market data is
    almost all DATA: the zeros are dropped in C first, so a batch without markers costs one
    pass over its kinds and no Python loop."""
    rest = kinds.translate(None, _ZERO)
    if not rest:
        return NO_MARKERS
    counts = [0] * MARKER_SLOTS
    for k in rest:
        counts[min(k, MARKER_SLOTS) - 1] += 1
    return MarkerCounts(*counts)


def markers_of(columns: Iterable[bytes]) -> MarkerCounts:
    """The summed marker counts of several kinds columns (e.g. the batches of one frame)."""
    total = NO_MARKERS
    for column in columns:
        found = count_kinds(column)
        if found is not NO_MARKERS:
            total = total.plus(found)
    return total


def holds_kinds(column: bytes, kinds: frozenset[int]) -> bool:
    """Whether a kinds column holds at least one record of ``kinds``."""
    markers = column.translate(None, _ZERO)
    if RecordKind.DATA in kinds and len(markers) < len(column):
        return True
    return not kinds.isdisjoint(markers)


def batch_kinds(blob: bytes | memoryview, offset: int = 0) -> bytes:
    """The kinds column of the batch at ``offset`` in ``blob`` (its header is trusted: call
    this on a validated batch or after :func:`walk_batch_heads` checked its structure)."""
    (n,) = struct.unpack_from("<I", blob, offset + 12)
    start = offset + BATCH_HEADER_SIZE + 12 * n
    return bytes(blob[start:start + n])


_MAGICS = (BATCH_MAGIC, BATCH_MAGIC_V1)  # format v2 and v1 batches


class BatchHead(NamedTuple):
    """One batch as seen from its header and kinds column (payloads unread, CRC unchecked)."""

    offset: int
    length: int
    records: int
    first_ts_ns: int
    last_ts_ns: int
    kinds: bytes


def walk_batch_heads(
    buf: mmap.mmap | bytes, start: int, end: int, path: object = None
) -> Iterator[BatchHead]:
    """Batches from ``start`` to ``end`` read from their headers and kinds columns only.

    Raises CorruptSegment at a batch whose magic, sizes or bounds are wrong (the CRC is not
    checked here; see the module docstring).
    """
    off = start
    unpack = _BATCH_HEAD.unpack_from
    while off < end:
        if off + BATCH_HEADER_SIZE > end:
            raise CorruptSegment("truncated batch header", off, path)
        magic, _, length, n, lo, hi, payload_len, _ = unpack(buf, off)
        # batch_size(n, payload_len) inlined: this loop runs once per batch of a whole root
        if magic not in _MAGICS or n == 0 or length != (
                BATCH_HEADER_SIZE + 13 * n + payload_len + 7) & ~7 or off + length > end:
            _invalid(magic, n, length, payload_len, off, end, path)
        k = off + BATCH_HEADER_SIZE + 12 * n
        yield BatchHead(off, length, n, lo, hi, buf[k:k + n])
        off += length


def _invalid(magic: bytes, n: int, length: int, payload_len: int, off: int, end: int,
             path: object) -> None:
    if magic not in _MAGICS:
        raise CorruptSegment("bad batch magic", off, path)
    if n == 0 or length != batch_size(n, payload_len):
        raise CorruptSegment(f"inconsistent batch sizes (len {length}, count {n})", off, path)
    raise CorruptSegment(f"batch of {length} bytes runs past the end ({end})", off, path)


class SegmentScan:
    """A ``.seg`` (live or sealed) opened for walking its batch headers up to the commit point
    read at open time. Not thread-safe; cheap to open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            # the commit point first, then the map: a writer grows the file before it moves
            # the commit point, so the map always covers every committed batch
            self.header: SegmentHeader = decode_header(os.pread(fd, HEADER_SIZE, 0))
            size = os.fstat(fd).st_size
            self.end = self.header.committed_len
            if self.end < HEADER_SIZE or self.end > size:
                raise CorruptSegment(
                    f"commit point {self.end} outside the file ({size} bytes)", 16, path)
            self._mm = mmap.mmap(fd, self.end, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def heads(self) -> Iterator[BatchHead]:
        return walk_batch_heads(self._mm, HEADER_SIZE, self.end, self.path)

    def marker_counts(self) -> MarkerCounts:
        """Markers of every committed batch: the walk of :meth:`heads` without building a
        record of each batch (this runs for every batch of every segment `ls` lists)."""
        mm, off, end = self._mm, HEADER_SIZE, self.end
        unpack = _BATCH_HEAD.unpack_from
        found = bytearray()
        while off < end:
            if off + BATCH_HEADER_SIZE > end:
                raise CorruptSegment("truncated batch header", off, self.path)
            magic, _, length, n, _, _, payload_len, _ = unpack(mm, off)
            if magic not in _MAGICS or n == 0 or length != (
                    BATCH_HEADER_SIZE + 13 * n + payload_len + 7) & ~7 or off + length > end:
                _invalid(magic, n, length, payload_len, off, end, self.path)
            k = off + BATCH_HEADER_SIZE + 12 * n
            found += mm[k:k + n].translate(None, _ZERO)  # markers are rare: usually nothing
            off += length
        return count_kinds(bytes(found))

    def records(
        self, kinds: frozenset[int], from_ns: int | None = None, to_ns: int | None = None,
    ) -> Iterator[Record]:
        """Records of the given kinds with ``from_ns <= ts_ns < to_ns``, in file order. Only
        batches whose kinds column and time bounds can match are decoded, each CRC-checked
        first; CorruptSegment at a damaged one."""
        lo = -(1 << 63) if from_ns is None else from_ns
        hi = 1 << 63 if to_ns is None else to_ns
        for head in self.heads():
            if head.last_ts_ns < lo or head.first_ts_ns >= hi:
                continue
            if not holds_kinds(head.kinds, kinds):
                continue
            try:
                batch = iter_batch_records(self._mm, head.offset)
            except CorruptSegment as exc:
                raise CorruptSegment(str(exc).rsplit(" at offset", 1)[0], head.offset,
                                     self.path) from None
            for rec in batch:
                if rec.kind in kinds and lo <= rec.ts_ns < hi:
                    yield rec

    def close(self) -> None:
        self._mm.close()

    def __enter__(self) -> SegmentScan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def segment_marker_counts(path: str | os.PathLike[str]) -> MarkerCounts:
    """Marker counts of a ``.seg`` from its batch headers and kinds columns only."""
    with SegmentScan(Path(path)) as scan:
        return scan.marker_counts()
