"""Segment archives (`.seg.zst`): a sealed segment as seekable zstd, read like the segment.

An archive's content, decompressed end to end, is byte for byte the source segment's header
and committed batches. Frame 0 holds the header alone (so opening an archive reads a few hundred
bytes); every further frame holds ~1 MiB of whole batches, and the seek table keeps each frame's
time bounds and marker counts, so `records(from_ns=...)` decompresses only the frames that can
hold such records, and `records(kinds=...)` for markers only the frames that hold markers.
Offsets in records and batches are the source segment's file offsets, so a record is addressed
the same way before and after compaction.

Damage stays local, as in segments: a frame that fails its zstd checksum (or a damaged batch
inside one) is skipped and recorded in ``ArchiveReader.damage`` with the frame's file offset,
size and record count, and reading goes on with the next frame (frames are independent). A
damaged seek table is replaced by walking the frames from the start of the file (each zstd
frame header gives its size), a damaged header frame by the names in the path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from storage.archive_format import (
    ArchiveFormatError,
    ContainerWriter,
    CountingFile,
    FrameEntry,
    SeekTable,
    UnsupportedArchive,
    make_decompressor,
    read_dictionary,
    read_frame,
    read_table,
)
from storage.damage import Damage, estimate_records
from storage.format import (
    HEADER_SIZE,
    BatchInfo,
    CorruptSegment,
    ForeignFile,
    SegmentHeader,
    Skipped,
    batch_records,
    decode_header,
    scan_spans,
)
from storage.layout import ARCHIVE_SUFFIX, SEGMENT_OPEN_FLAGS, parse_segment_path
from storage.markers import MarkerCounts, batch_kinds, holds_kinds, markers_of
from storage.reader import SegmentReader
from storage.records import Record, RecordKind
from storage.source import is_remote, open_remote

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
    """Reads a `.seg.zst` with the same surface as `SegmentReader` (header, batches, records,
    ``damage``, ``on_damage``)."""

    def __init__(self, path: Path, src: CountingFile, table: SeekTable, header: SegmentHeader,
                 dctx: zstandard.ZstdDecompressor, damage: list[Damage] | None = None,
                 walked: bool = False) -> None:
        self.path = path
        self._src = src
        self.table = table
        self.header = header
        self._dctx = dctx
        self.damage: list[Damage] = []
        self.on_damage: Callable[[Damage], None] | None = None
        self._seen: set[tuple[int, str]] = set()
        self._walked = walked  # the table was rebuilt from the frames: it holds no hints
        salvaged = any(d.offset == 0 and "header frame" in d.reason for d in damage or [])
        self._version: int | None = None if salvaged else header.version
        for d in damage or []:
            self._note(d)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ArchiveReader:
        """Open a local archive, or a remote one named `s3://bucket/key` (storage.source)."""
        p = Path(path)
        if is_remote(p):
            return cls.from_source(p, open_remote(p))
        fd = os.open(p, os.O_RDONLY | SEGMENT_OPEN_FLAGS)
        try:
            return cls.from_source(p, CountingFile(fd, os.fstat(fd).st_size))
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def from_source(cls, p: Path, src: CountingFile) -> ArchiveReader:
        """An archive over any byte source: a local file or an S3 object (storage.source).

        A damaged seek table is rebuilt by walking the frames (reported as damage), so one bad
        byte in the table never hides the archive's intact frames."""
        damage: list[Damage] = []
        walked = False
        try:
            try:
                table = read_table(src)
                dctx = make_decompressor(read_dictionary(src, table))
            except UnsupportedArchive:
                raise
            except ArchiveFormatError as exc:
                dctx = make_decompressor(None)
                table = walk_frames(src, dctx)
                if not table.frames:
                    raise
                walked = True
                damage.append(Damage(p, exc.offset or 0, 0, 0,
                                     f"seek table damaged ({exc.reason}); frames found by "
                                     "walking the file"))
            if table.frames[0].uncompressed_size != HEADER_SIZE:
                raise ArchiveFormatError("archive does not start with a segment header frame")
            header = _header_of(p, src, table, dctx, damage)
        except ArchiveFormatError as exc:
            raise CorruptArchive(exc.reason, exc.offset or 0, p) from None
        return cls(p, src, table, header, dctx, damage, walked)

    def _note(self, d: Damage) -> None:
        key = (d.offset, d.reason)
        if key not in self._seen:
            self._seen.add(key)
            self.damage.append(d)
            if self.on_damage is not None:
                self.on_damage(d)

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
        whose table does not keep them, or a table rebuilt after damage)."""
        return None if self._walked else self.table.marker_counts

    def frame_content(self, entry: FrameEntry) -> bytes:
        """One frame's decompressed bytes (source offsets entry.uncompressed_offset onwards)."""
        try:
            return read_frame(self._src, entry, self._dctx)
        except ArchiveFormatError as exc:
            raise CorruptArchive(exc.reason, exc.offset or 0, self.path) from None

    def frame_batches(self, entry: FrameEntry, content: bytes) -> list[tuple[BatchInfo, bytes]]:
        """The frame's valid batches (at source offsets) with their bytes, each CRC-checked;
        a damaged range inside the frame is skipped and noted in ``damage``."""
        out: list[tuple[BatchInfo, bytes]] = []
        base = entry.uncompressed_offset
        for span in scan_spans(content, 0, len(content), base, self._version):
            if isinstance(span, Skipped):
                self._note(Damage(self.path, entry.compressed_offset, span.length,
                                  estimate_records(span.length, len(content),
                                                   max(entry.record_count, 1)),
                                  f"frame holds an invalid batch at segment offset "
                                  f"{span.offset}"))
            else:
                out.append(span)
        return out

    @property
    def table_rebuilt(self) -> bool:
        """The stored seek table was damaged and rebuilt by walking the frames (no counts)."""
        return self._walked

    def frames_content(self, frames: Iterator[FrameEntry] | tuple[FrameEntry, ...],
                       ) -> Iterator[tuple[FrameEntry, bytes]]:
        """Each frame's content; a damaged frame is noted and skipped (frames are
        independent, so the next one reads as usual)."""
        for entry in frames:
            try:
                content = read_frame(self._src, entry, self._dctx)
            except ArchiveFormatError as exc:
                self._note(Damage(self.path, entry.compressed_offset, entry.compressed_size,
                                  entry.record_count, exc.reason))
                continue
            yield entry, content

    def batches(self) -> Iterator[BatchInfo]:
        """Every valid batch, each CRC-checked; damaged frames are skipped (``damage``)."""
        for entry, content in self.frames_content(self.data_frames):
            for info, _ in self.frame_batches(entry, content):
                yield info

    def batch_blobs(self) -> Iterator[tuple[BatchInfo, bytes]]:
        """Every valid batch with its bytes (source offsets), each CRC-checked, as
        `SegmentReader.batch_blobs`; damaged frames are skipped and noted in ``damage``."""
        for entry, content in self.frames_content(self.data_frames):
            yield from self.frame_batches(entry, content)

    def _frames_for(
        self, from_ns: int | None, to_ns: int | None, kinds: frozenset[int] | None = None,
    ) -> Iterator[FrameEntry]:
        """Frames that may hold records in [from_ns, to_ns) of the given kinds, chosen from the
        seek table alone."""
        frames = self.data_frames
        if self._walked:  # a rebuilt table has no time bounds or counts: read every frame
            yield from frames
            return
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
        for entry, content in self.frames_content(self._frames_for(from_ns, to_ns, kinds)):
            for info, blob in self.frame_batches(entry, content):
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


def _header_of(path: Path, src: CountingFile, table: SeekTable,
               dctx: zstandard.ZstdDecompressor, damage: list[Damage]) -> SegmentHeader:
    """The archived segment header (frame 0), or, if that frame is damaged, a stand-in with the
    names from the path (batches then carry their own format version in their magic)."""
    try:
        return decode_header(read_frame(src, table.frames[0], dctx))
    except (ArchiveFormatError, CorruptSegment, ForeignFile) as exc:
        try:
            ref = parse_segment_path(path)
        except ValueError:
            raise ArchiveFormatError(f"segment header frame damaged: {exc}", 0) from None
        damage.append(Damage(path, 0, table.frames[0].compressed_size, 0,
                             f"segment header frame damaged ({exc}); read with names from "
                             "the path"))
        return SegmentHeader(ref.product, ref.channel, ref.day, ref.number, 0,
                             table.uncompressed_size, 0, 0, 0, False, (), 0, 2, False, False)


_SKIPPABLE = 0x184D2A50  # skippable frames: magic 0x184D2A50..0x184D2A5F


def walk_frames(src: CountingFile, dctx: zstandard.ZstdDecompressor) -> SeekTable:
    """A seek table rebuilt from the data frames themselves (when the stored one is damaged):
    frames follow each other from offset 0 up to the first skippable frame; each one is
    decompressed once to learn its size. Stops at the first frame that does not decode (the
    offsets of what follows would be guesses)."""
    data = src.pread(src.size, 0)
    frames: list[FrameEntry] = []
    pos = upos = 0
    while pos + 4 <= len(data):
        if int.from_bytes(data[pos:pos + 4], "little") & 0xFFFFFFF0 == _SKIPPABLE:
            break
        dobj = dctx.decompressobj()
        try:
            out = dobj.decompress(data[pos:])
        except zstandard.ZstdError:
            break
        size = len(data) - pos - len(dobj.unused_data)
        if not dobj.eof or size <= 0:
            break
        frames.append(FrameEntry(pos, size, upos, len(out), 0, 0, 0, None))
        pos += size
        upos += len(out)
    return SeekTable(tuple(frames), 0, 0, pos, src.size)


def is_archive(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIX)


def open_any(path: str | os.PathLike[str]) -> SegmentReader | ArchiveReader:
    """Open a live/sealed `.seg` or an archived `.seg.zst`, chosen by the file name."""
    if is_archive(path):
        return ArchiveReader.open(path)
    return SegmentReader.open(Path(path))
