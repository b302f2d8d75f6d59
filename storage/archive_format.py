"""Seekable zstd container: independent zstd frames, an embedded dictionary, a seek table.

The container is generic over bytes: the caller decides the frame boundaries (for segment
archives, ~1 MiB of whole batches each) and gives each frame its time bounds, record count
and marker counts (records of each marker kind: `inspect ls` shows them from the table alone).
The file stays a valid zstd stream — `zstd -d` yields the concatenated frame contents, because
the dictionary and the seek table live in *skippable* frames — and a reader finds the seek table
from the fixed-size trailer at the very end, so jumping to a time costs one small read for the
trailer, one for the table and one per frame actually needed. docs/ARCHIVE_FORMAT.md describes
the bytes for readers in other languages and why this is not the zstd "seekable format" table.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c
import zstandard

from storage.markers import MARKER_SLOTS, NO_MARKERS, MarkerCounts

SKIPPABLE_DICT_MAGIC = 0x184D2A5D
SKIPPABLE_TABLE_MAGIC = 0x184D2A5C
TRAILER_MAGIC = b"CBLSEEK1"
VERSION = 3  # 3: RESTART and STOP counts appended; 2: per-frame marker counts; 1: none
READ_VERSIONS = (1, 2, 3)

# compressed_offset, compressed_size, uncompressed_offset, uncompressed_size,
# min_ts_ns, max_ts_ns, record_count
ENTRY_V1 = struct.Struct("<QIQIqqI")
# ... then u32 counts of GAP, DISCONNECT, RECONNECT, SUBSCRIBE, DROPPED, NOTE, kinds 7..255
ENTRY_V2 = struct.Struct("<QIQIqqI7I")
# ... then u32 counts of RESTART (7) and STOP (8): appended, and also still inside the kinds
# 7..255 count, so a version-2 reader of a version-3 file hides none of them
ENTRY = struct.Struct("<QIQIqqI7I2I")
_ENTRY_BY_VERSION = {1: ENTRY_V1, 2: ENTRY_V2, 3: ENTRY}
assert MARKER_SLOTS == 9, "ENTRY: the six named kinds, 7..255, then RESTART and STOP"
# dict_offset, dict_size, frame_count, entry_size, version, crc32c, magic
TRAILER = struct.Struct("<QIIHHI8s")
SKIPPABLE_HEADER = struct.Struct("<II")

ENTRY_SIZE = ENTRY.size
TRAILER_SIZE = TRAILER.size


class ArchiveFormatError(ValueError):
    """The bytes are not a valid archive; `offset` is where in the file the problem was seen."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.reason = message
        self.offset = offset


class UnsupportedArchive(ArchiveFormatError):
    """An intact archive of a version this code does not know: refused, never guessed at."""


@dataclass(frozen=True, slots=True)
class FrameEntry:
    """One zstd frame: where it is, what it decompresses to, which records it holds."""

    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    min_ts_ns: int
    max_ts_ns: int
    record_count: int
    # records of each marker kind in the frame; None for a version-1 archive (not recorded)
    markers: MarkerCounts | None = NO_MARKERS

    @property
    def compressed_end(self) -> int:
        return self.compressed_offset + self.compressed_size

    @property
    def uncompressed_end(self) -> int:
        return self.uncompressed_offset + self.uncompressed_size


@dataclass(frozen=True, slots=True)
class SeekTable:
    """The parsed index of an archive file; `table_offset` is where its skippable frame starts."""

    frames: tuple[FrameEntry, ...]
    dict_offset: int
    dict_size: int
    table_offset: int
    file_size: int

    @property
    def uncompressed_size(self) -> int:
        return self.frames[-1].uncompressed_end if self.frames else 0

    @property
    def record_count(self) -> int:
        return sum(f.record_count for f in self.frames)

    @property
    def marker_counts(self) -> MarkerCounts | None:
        """Markers of the whole archive, from the table alone; None if the archive predates
        per-frame counts (version 1)."""
        total = NO_MARKERS
        for f in self.frames:
            if f.markers is None:
                return None
            total = total.plus(f.markers)
        return total


def _u32(value: int, what: str) -> int:
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{what} {value} does not fit the archive's 32-bit field")
    return value


def encode_table(frames: Sequence[FrameEntry], dict_offset: int, dict_size: int) -> bytes:
    """The complete trailing skippable frame: header, entries, trailer (CRC32C covers both)."""
    body = bytearray()
    for f in frames:
        if f.markers is None or len(f.markers) != MARKER_SLOTS:
            raise ValueError(f"frame at {f.compressed_offset} has no marker counts")
        body += ENTRY.pack(
            f.compressed_offset, _u32(f.compressed_size, "frame size"), f.uncompressed_offset,
            _u32(f.uncompressed_size, "frame content size"), f.min_ts_ns, f.max_ts_ns,
            _u32(f.record_count, "frame record count"),
            *(_u32(c, "frame marker count") for c in _on_disk(f.markers)),
        )
    head = TRAILER.pack(dict_offset, dict_size, len(frames), ENTRY_SIZE, VERSION, 0, TRAILER_MAGIC)
    crc = google_crc32c.value(bytes(body) + head[:-12])
    trailer = TRAILER.pack(
        dict_offset, dict_size, len(frames), ENTRY_SIZE, VERSION, crc, TRAILER_MAGIC
    )
    payload = bytes(body) + trailer
    return SKIPPABLE_HEADER.pack(SKIPPABLE_TABLE_MAGIC, len(payload)) + payload


def encode_dict_frame(dictionary: bytes) -> bytes:
    """The dictionary, embedded so the archive can always be read without any outside file."""
    return SKIPPABLE_HEADER.pack(SKIPPABLE_DICT_MAGIC, len(dictionary)) + dictionary


class CountingFile:
    """Positional reads on a file descriptor that count the bytes they fetch.

    Counting is how tests (and `inspect cat --from -v`) show a seek reads only the frames it
    needs; `pread` keeps reads independent of any shared file position.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.bytes_read = 0
        self.reads = 0

    def pread(self, size: int, offset: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ArchiveFormatError(
                f"read of {size} bytes past the end of the {self.size}-byte file", offset
            )
        data = os.pread(self.fd, size, offset)
        self.bytes_read += len(data)
        self.reads += 1
        if len(data) != size:
            raise ArchiveFormatError("file shrank while reading", offset + len(data))
        return data


def read_table(src: CountingFile) -> SeekTable:
    """Find and check the seek table from the end of the file; never guesses past damage."""
    size = src.size
    if size < TRAILER_SIZE + SKIPPABLE_HEADER.size:
        raise ArchiveFormatError(f"too short to be an archive ({size} bytes)")
    trailer = src.pread(TRAILER_SIZE, size - TRAILER_SIZE)
    dict_offset, dict_size, count, entry_size, version, crc, magic = TRAILER.unpack(trailer)
    if magic != TRAILER_MAGIC:
        raise ArchiveFormatError("no archive seek table at the end of the file", size - 8)
    entry = _ENTRY_BY_VERSION.get(version)
    if entry is None:
        if not _table_crc_ok(src, trailer, count * entry_size, crc):
            raise ArchiveFormatError(f"seek table damaged (version field {version}, CRC "
                                     "mismatch)", size - TRAILER_SIZE)
        raise UnsupportedArchive(
            f"unsupported archive version {version} (this reader knows versions "
            f"{', '.join(map(str, READ_VERSIONS))}; a newer cbl-inspect may read it)",
            size - TRAILER_SIZE)
    if entry_size < entry.size:
        raise ArchiveFormatError(f"bad seek table entry size {entry_size}", size - TRAILER_SIZE)
    body_size = count * entry_size
    table_offset = size - TRAILER_SIZE - body_size - SKIPPABLE_HEADER.size
    if table_offset < 0:
        raise ArchiveFormatError(f"seek table of {count} frames is larger than the file")
    raw = src.pread(size - TRAILER_SIZE - table_offset, table_offset)
    magic_, payload_size = SKIPPABLE_HEADER.unpack_from(raw, 0)
    if magic_ != SKIPPABLE_TABLE_MAGIC or payload_size != body_size + TRAILER_SIZE:
        raise ArchiveFormatError("seek table frame header does not match its trailer", table_offset)
    body = raw[SKIPPABLE_HEADER.size:SKIPPABLE_HEADER.size + body_size]
    if google_crc32c.value(body + trailer[:-12]) != crc:
        raise ArchiveFormatError("seek table CRC mismatch", table_offset)
    frames = tuple(_entry(version, body, i * entry_size) for i in range(count))
    _check_layout(frames, dict_offset, dict_size, table_offset)
    return SeekTable(frames, dict_offset, dict_size, table_offset, size)


def _on_disk(m: MarkerCounts) -> tuple[int, ...]:
    """The entry's nine counts: kinds 1..6, kinds 7..255 (RESTART + STOP + other), then
    RESTART and STOP again on their own."""
    return (*m[:6], m.restart + m.stop + m.other, m.restart, m.stop)


def _table_crc_ok(src: CountingFile, trailer: bytes, body_size: int, crc: int) -> bool:
    """Whether a table of ``body_size`` entry bytes before ``trailer`` matches ``crc``: tells a
    newer version (intact, refused) from a damaged version field (read by walking frames)."""
    start = src.size - TRAILER_SIZE - body_size
    if body_size < 0 or start < SKIPPABLE_HEADER.size:
        return False
    return bool(google_crc32c.value(src.pread(body_size, start) + trailer[:-12]) == crc)


def _entry(version: int, body: bytes, offset: int) -> FrameEntry:
    fields = _ENTRY_BY_VERSION[version].unpack_from(body, offset)
    c_off, c_size, u_off, u_size, lo, hi, count = fields[:7]
    markers: MarkerCounts | None = None
    if version >= 2:
        gap, disc, reconnect, subscribe, dropped, note, kinds7 = fields[7:14]
        restart, stop = fields[14:16] if version >= 3 else (0, 0)
        if restart + stop > kinds7:
            raise ArchiveFormatError("seek table entry counts more RESTART and STOP markers "
                                     "than kinds 7..255", offset)
        markers = MarkerCounts(gap, disc, reconnect, subscribe, dropped, note, restart, stop,
                               kinds7 - restart - stop)
    return FrameEntry(c_off, c_size, u_off, u_size, lo, hi, count, markers)


def _check_layout(
    frames: Sequence[FrameEntry], dict_offset: int, dict_size: int, table_offset: int
) -> None:
    """Frames must tile the file and the content without overlap, before the dictionary/table."""
    pos = 0
    upos = 0
    for i, f in enumerate(frames):
        if f.compressed_offset != pos:
            raise ArchiveFormatError(
                f"seek table frame {i} starts at {f.compressed_offset}, expected {pos}", pos
            )
        if f.uncompressed_offset != upos:
            raise ArchiveFormatError(
                f"seek table frame {i} content offset {f.uncompressed_offset}, expected {upos}",
                pos,
            )
        if f.compressed_size == 0 or (f.record_count and f.min_ts_ns > f.max_ts_ns) or (
                f.markers is not None and f.markers.total > f.record_count):
            raise ArchiveFormatError(f"seek table frame {i} is malformed", pos)
        pos = f.compressed_end
        upos = f.uncompressed_end
    end = pos
    if dict_size:
        if dict_offset != pos:
            raise ArchiveFormatError("dictionary frame is not after the last data frame", pos)
        end = dict_offset + SKIPPABLE_HEADER.size + dict_size
    if end != table_offset:
        raise ArchiveFormatError(
            f"data ends at {end} but the seek table starts at {table_offset}", end
        )


def read_dictionary(src: CountingFile, table: SeekTable) -> bytes | None:
    """The embedded dictionary's bytes, or None when the frames were compressed without one."""
    if not table.dict_size:
        return None
    raw = src.pread(SKIPPABLE_HEADER.size + table.dict_size, table.dict_offset)
    magic, size = SKIPPABLE_HEADER.unpack_from(raw, 0)
    if magic != SKIPPABLE_DICT_MAGIC or size != table.dict_size:
        raise ArchiveFormatError("dictionary frame header is damaged", table.dict_offset)
    return raw[SKIPPABLE_HEADER.size:]


class ContainerWriter:
    """Appends compressed frames to an open binary file and finishes with dictionary + table.

    The caller compresses (so it can pick level, threads and dictionary) and hands over each
    frame's compressed bytes with the metadata the seek table keeps.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._frames: list[FrameEntry] = []
        self._pos = 0
        self._upos = 0

    @property
    def frames(self) -> tuple[FrameEntry, ...]:
        return tuple(self._frames)

    def add_frame(
        self, compressed: bytes, uncompressed_size: int, min_ts_ns: int, max_ts_ns: int,
        record_count: int, markers: MarkerCounts = NO_MARKERS,
    ) -> FrameEntry:
        """Append one compressed frame; ``markers`` counts its records of each marker kind."""
        entry = FrameEntry(
            self._pos, len(compressed), self._upos, uncompressed_size, min_ts_ns, max_ts_ns,
            record_count, MarkerCounts(*markers),
        )
        self._out.write(compressed)
        self._frames.append(entry)
        self._pos += len(compressed)
        self._upos += uncompressed_size
        return entry

    def finish(self, dictionary: bytes | None = None) -> int:
        """Write the dictionary frame (if any) and the seek table; returns the total size."""
        dict_offset = self._pos if dictionary else 0
        if dictionary:
            frame = encode_dict_frame(dictionary)
            self._out.write(frame)
            self._pos += len(frame)
        table = encode_table(self._frames, dict_offset, len(dictionary or b""))
        self._out.write(table)
        self._pos += len(table)
        return self._pos


def make_decompressor(dictionary: bytes | None) -> zstandard.ZstdDecompressor:
    """A decompressor for this archive's frames (with its embedded dictionary, if any)."""
    if dictionary is None:
        return zstandard.ZstdDecompressor()
    return zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(dictionary))


def read_frame(
    src: CountingFile, entry: FrameEntry, dctx: zstandard.ZstdDecompressor
) -> bytes:
    """Read and decompress one frame; its zstd checksum and the table's size must both agree."""
    raw = src.pread(entry.compressed_size, entry.compressed_offset)
    try:
        data: bytes = dctx.decompress(raw, max_output_size=entry.uncompressed_size)
    except zstandard.ZstdError as exc:
        raise ArchiveFormatError(f"zstd frame is damaged: {exc}", entry.compressed_offset) from exc
    if len(data) != entry.uncompressed_size:
        raise ArchiveFormatError(
            f"frame decompressed to {len(data)} bytes, the seek table says "
            f"{entry.uncompressed_size}", entry.compressed_offset,
        )
    return data
