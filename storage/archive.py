"""Segment archives (`.seg.zst`): a sealed segment as seekable zstd, read like the segment.

An archive's content, decompressed end to end, is byte for byte the source segment's header
and committed batches. Frame 0 holds the header alone (so opening an archive reads a few hundred
bytes); every further frame holds ~1 MiB of whole batches, and the seek table keeps each frame's
time bounds and marker counts, so `records(from_ns=...)` decompresses only the frames that can
hold such records, and `records(kinds=...)` for markers only the frames that hold markers.
Offsets in records and batches are the source segment's file offsets, so a record is addressed
the same way before and after compaction.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from storage.archive_format import (
    ArchiveFormatError,
    ContainerWriter,
    CountingFile,
    FrameEntry,
    SeekTable,
    make_decompressor,
    read_dictionary,
    read_frame,
    read_table,
)
from storage.format import (
    HEADER_SIZE,
    BatchInfo,
    CorruptSegment,
    SegmentHeader,
    batch_records,
    decode_header,
    read_batch,
)
from storage.layout import ARCHIVE_SUFFIX
from storage.markers import MarkerCounts, batch_kinds, holds_kinds, markers_of
from storage.reader import SegmentReader
from storage.records import Record, RecordKind

FRAME_TARGET_BYTES = 1 << 20
DEFAULT_LEVEL = 3


class CorruptArchive(CorruptSegment):
    """An archive whose table, frames or batches are damaged; carries the archive file offset."""


def plan_frames(
    batches: list[BatchInfo], target: int = FRAME_TARGET_BYTES
) -> list[list[BatchInfo]]:
    """Group consecutive whole batches into frames of about `target` bytes (never split one)."""
    frames: list[list[BatchInfo]] = []
    current: list[BatchInfo] = []
    size = 0
    for b in batches:
        if current and size + b.length > target:
            frames.append(current)
            current, size = [], 0
        current.append(b)
        size += b.length
    if current:
        frames.append(current)
    return frames


def write_archive(
    buf: memoryview,
    batches: list[BatchInfo],
    out: BinaryIO,
    level: int = DEFAULT_LEVEL,
    dictionary: bytes | None = None,
    frame_target: int = FRAME_TARGET_BYTES,
) -> tuple[FrameEntry, ...]:
    """Compress a segment's header and batches (slices of `buf`, its memory map) into `out`.

    The batches must be contiguous from HEADER_SIZE; the compressor reads straight from the
    map, so no copy of the segment is made in Python memory.
    """
    pos = HEADER_SIZE
    for b in batches:
        if b.offset != pos:
            raise ValueError(f"batches are not contiguous: expected offset {pos}, got {b.offset}")
        pos += b.length
    zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True, dict_data=zdict)
    writer = ContainerWriter(out)
    writer.add_frame(cctx.compress(buf[:HEADER_SIZE]), HEADER_SIZE, 0, 0, 0)
    for group in plan_frames(batches, frame_target):
        start = group[0].offset
        end = group[-1].offset + group[-1].length
        writer.add_frame(
            cctx.compress(buf[start:end]), end - start,
            min(b.first_ts_ns for b in group), max(b.last_ts_ns for b in group),
            sum(b.count for b in group), markers_of(batch_kinds(buf, b.offset) for b in group),
        )
    writer.finish(dictionary)
    return writer.frames


class ArchiveReader:
    """Reads a `.seg.zst` with the same surface as `SegmentReader` (header, batches, records)."""

    def __init__(self, path: Path, src: CountingFile, table: SeekTable, header: SegmentHeader,
                 dctx: zstandard.ZstdDecompressor) -> None:
        self.path = path
        self._src = src
        self.table = table
        self.header = header
        self._dctx = dctx

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ArchiveReader:
        p = Path(path)
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            src = CountingFile(fd, os.fstat(fd).st_size)
            try:
                table = read_table(src)
                if not table.frames or table.frames[0].uncompressed_size != HEADER_SIZE:
                    raise ArchiveFormatError("archive does not start with a segment header frame")
                dctx = make_decompressor(read_dictionary(src, table))
                header = decode_header(read_frame(src, table.frames[0], dctx))
            except ArchiveFormatError as exc:
                raise CorruptArchive(exc.reason, exc.offset or 0, p) from None
            return cls(p, src, table, header, dctx)
        except BaseException:
            os.close(fd)
            raise

    @property
    def bytes_read(self) -> int:
        """Bytes fetched from the archive file so far (trailer, table, frames)."""
        return self._src.bytes_read

    @property
    def data_frames(self) -> tuple[FrameEntry, ...]:
        return self.table.frames[1:]

    @property
    def marker_counts(self) -> MarkerCounts | None:
        """Records of each marker kind, from the seek table alone (None: a version-1 archive,
        whose table does not keep them)."""
        return self.table.marker_counts

    def frame_content(self, entry: FrameEntry) -> bytes:
        """One frame's decompressed bytes (source offsets entry.uncompressed_offset onwards)."""
        try:
            return read_frame(self._src, entry, self._dctx)
        except ArchiveFormatError as exc:
            raise CorruptArchive(exc.reason, exc.offset or 0, self.path) from None

    def frame_batches(self, entry: FrameEntry, content: bytes) -> list[tuple[BatchInfo, bytes]]:
        """The frame's batches (at source offsets) with their bytes, each CRC-checked; the
        frame must hold nothing but whole valid batches."""
        base = entry.uncompressed_offset
        out: list[tuple[BatchInfo, bytes]] = []
        off, end = 0, len(content)
        while off < end:
            try:
                info, blob = read_batch(content, off, end)
            except CorruptSegment as exc:
                reason = str(exc).rsplit(" at offset", 1)[0]
                raise CorruptArchive(
                    f"frame holds an invalid batch at segment offset {base + off} ({reason})",
                    entry.compressed_offset, self.path,
                ) from None
            out.append((BatchInfo(base + off, info.length, info.count, info.first_ts_ns,
                                  info.last_ts_ns), blob))
            off += info.length
        return out

    def batches(self) -> Iterator[BatchInfo]:
        """Every batch, each CRC-checked; CorruptArchive at the first damaged frame."""
        for entry in self.data_frames:
            for info, _ in self.frame_batches(entry, self.frame_content(entry)):
                yield info

    def batch_blobs(self) -> Iterator[tuple[BatchInfo, bytes]]:
        """Every batch with its bytes (source offsets), each CRC-checked, as
        `SegmentReader.batch_blobs`; CorruptArchive at the first damaged frame."""
        for entry in self.data_frames:
            yield from self.frame_batches(entry, self.frame_content(entry))

    def _frames_for(
        self, from_ns: int | None, to_ns: int | None, kinds: frozenset[int] | None = None,
    ) -> Iterator[FrameEntry]:
        """Frames that may hold records in [from_ns, to_ns) of the given kinds, chosen from the
        seek table alone."""
        frames = self.data_frames
        # suffix minimum of min_ts: once every later frame starts at or after to_ns, stop
        suffix_min = [1 << 63] * (len(frames) + 1)
        for i in range(len(frames) - 1, -1, -1):
            f = frames[i]
            low = f.min_ts_ns if f.record_count else 1 << 63
            suffix_min[i] = min(low, suffix_min[i + 1])
        for i, f in enumerate(frames):
            if to_ns is not None and suffix_min[i] >= to_ns:
                return
            if f.record_count == 0:
                continue
            if from_ns is not None and f.max_ts_ns < from_ns:
                continue
            if to_ns is not None and f.min_ts_ns >= to_ns:
                continue
            if kinds is not None and f.markers is not None and not _may_hold(f, kinds):
                continue
            yield f

    def records(
        self, from_ns: int | None = None, to_ns: int | None = None,
        kinds: frozenset[int] | None = None,
    ) -> Iterator[Record]:
        """Records with ``from_ns <= ts_ns < to_ns`` (either bound optional) in file order,
        as `SegmentReader.records`; only frames whose time bounds overlap are read. With
        ``kinds``, only records of those kinds, and frames the seek table says hold none of
        them are not read at all (so listing the markers of a day reads little)."""
        lo = -(1 << 63) if from_ns is None else from_ns
        hi = 1 << 63 if to_ns is None else to_ns
        for entry in self._frames_for(from_ns, to_ns, kinds):
            for info, blob in self.frame_batches(entry, self.frame_content(entry)):
                if info.last_ts_ns < lo or info.first_ts_ns >= hi:
                    continue
                if kinds is not None:
                    if holds_kinds(batch_kinds(blob), kinds):
                        yield from (rec for rec in batch_records(blob, info.offset)
                                    if rec.kind in kinds and lo <= rec.ts_ns < hi)
                elif lo <= info.first_ts_ns and info.last_ts_ns < hi:
                    yield from batch_records(blob, info.offset)
                else:
                    yield from (rec for rec in batch_records(blob, info.offset)
                                if lo <= rec.ts_ns < hi)

    def records_in_batch(self, batch: BatchInfo) -> list[Record]:
        """The records of one batch returned by `batches()` (source offsets)."""
        for entry in self.data_frames:
            if entry.uncompressed_offset <= batch.offset < entry.uncompressed_end:
                for info, blob in self.frame_batches(entry, self.frame_content(entry)):
                    if info.offset == batch.offset:
                        return list(batch_records(blob, info.offset))
        raise ValueError(f"{self.path}: no batch at segment offset {batch.offset}")

    def follow(self, poll_s: float = 0.2) -> Iterator[Record]:
        """An archive is sealed: following it is reading it to the end."""
        del poll_s
        yield from self.records()

    def close(self) -> None:
        if self._src.fd >= 0:
            os.close(self._src.fd)
            self._src.fd = -1

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _may_hold(frame: FrameEntry, kinds: frozenset[int]) -> bool:
    """Whether a frame can hold records of ``kinds``, from its seek-table counts."""
    markers = frame.markers
    assert markers is not None
    if RecordKind.DATA in kinds and frame.record_count > markers.total:
        return True
    slots = {min(k, len(markers)) - 1 for k in kinds if k != RecordKind.DATA}
    return any(markers[i] for i in slots)


def is_archive(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIX)


def open_any(path: str | os.PathLike[str]) -> SegmentReader | ArchiveReader:
    """Open a live/sealed `.seg` or an archived `.seg.zst`, chosen by the file name."""
    if is_archive(path):
        return ArchiveReader.open(path)
    return SegmentReader.open(Path(path))
