"""Segment format v1: the byte codec for the segment header and columnar record batches.

docs/FORMAT.md is the normative description; this module is its only implementation of the
bytes. A batch is *columnar* (all timestamps, then all lengths, then all kinds, then the payloads
concatenated) and protected by ONE CRC32C, so encoding 1 000 records is a handful of C-level
calls (``array``, ``bytes.join``, one ``google_crc32c.value``) instead of a Python loop.
All integers are little-endian.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import NamedTuple

import google_crc32c

from storage.layout import validate_name
from storage.records import Record

__all__ = [
    "BATCH_ALIGN",
    "BATCH_HEADER_SIZE",
    "BATCH_MAGIC",
    "FLAG_SEALED",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "INDEX_CAPACITY",
    "INDEX_ENTRY_SIZE",
    "INDEX_OFFSET",
    "MAGIC",
    "OFF_COMMITTED_LEN",
    "OFF_FLAGS",
    "OFF_INDEX_COUNT",
    "OFF_INDEX_STEP",
    "OFF_STATS",
    "BatchInfo",
    "CorruptSegment",
    "EncodedBatch",
    "ForeignFile",
    "SegmentHeader",
    "batch_records",
    "batch_size",
    "check_batch",
    "decode_header",
    "decode_index",
    "encode_batch",
    "encode_header",
    "encode_joined",
    "encode_parts",
    "iter_batch_records",
    "pack_committed_len",
    "pack_flags",
    "pack_index_count",
    "pack_index_entry",
    "pack_stats",
    "read_batch",
    "scan_batches",
]

MAGIC = b"CBLOGSEG"
FORMAT_VERSION = 1
HEADER_SIZE = 4096
FLAG_SEALED = 1

# Segment header field offsets (see docs/FORMAT.md).
OFF_FLAGS = 12
OFF_COMMITTED_LEN = 16
OFF_STATS = 24  # record_count u64, first_ts_ns i64, last_ts_ns i64
OFF_STATIC_CRC = 192
OFF_INDEX_COUNT = 196
OFF_INDEX_STEP = 200
INDEX_OFFSET = 256
INDEX_ENTRY_SIZE = 16
INDEX_CAPACITY = (HEADER_SIZE - INDEX_OFFSET) // INDEX_ENTRY_SIZE  # 240

_PREFIX = struct.Struct("<8sHHI")  # magic, version, header_size, flags
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_STATS = struct.Struct("<Qqq")
_STATIC = struct.Struct("<qHBBI64s64s")  # created_ns, year, month, day, number, product, channel
_INDEX_ENTRY = struct.Struct("<Qq")

BATCH_MAGIC = b"CBB1"
BATCH_HEADER_SIZE = 40
BATCH_ALIGN = 8
# magic, crc32c, total_len, count, min_ts, max_ts, payload_len, reserved
_BATCH_HEAD = struct.Struct("<4sIIIqqII")
_BATCH_TAIL = struct.Struct("<IIqqII")  # the header after magic + crc: what the CRC covers first
_BIG_ENDIAN = sys.byteorder == "big"
_PAD = bytes(BATCH_ALIGN)
MAX_BATCH_BYTES = 0xFFFF_FFF8


class CorruptSegment(ValueError):
    """Bytes that claim to be segment data but fail validation, with the file offset."""

    def __init__(self, message: str, offset: int, path: object = None) -> None:
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{message} at offset {offset}")
        self.offset = offset
        self.path = path


class ForeignFile(ValueError):
    """A file that is not a segment of a format version this code reads."""


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The fixed 4 096-byte header at the start of every segment file.

    ``first_ts_ns``/``last_ts_ns`` are the smallest and largest record timestamps (0 when
    ``record_count`` is 0). ``committed_len`` is the file offset just past the last committed
    batch: the commit point. ``index`` holds sparse time-index entries
    ``(batch_offset, max_ts_before)``: every record before ``batch_offset`` has a timestamp
    ``<= max_ts_before``; an entry is added for a batch that starts at least ``index_step``
    bytes after the previous entry (or after the header).
    """

    product: str
    channel: str
    day: dt.date
    number: int
    created_ns: int
    committed_len: int = HEADER_SIZE
    record_count: int = 0
    first_ts_ns: int = 0
    last_ts_ns: int = 0
    sealed: bool = False
    index: tuple[tuple[int, int], ...] = ()
    index_step: int = 0
    version: int = FORMAT_VERSION


def _static_bytes(h: SegmentHeader) -> bytes:
    product = validate_name(h.product, "product").encode("ascii")
    channel = validate_name(h.channel, "channel").encode("ascii")
    return _STATIC.pack(
        h.created_ns, h.day.year, h.day.month, h.day.day, h.number, product, channel
    )


def encode_header(h: SegmentHeader) -> bytes:
    """The full 4 096 header bytes for ``h``."""
    if len(h.index) > INDEX_CAPACITY:
        raise ValueError(f"index has {len(h.index)} entries, capacity {INDEX_CAPACITY}")
    prefix = MAGIC + struct.pack("<HH", FORMAT_VERSION, HEADER_SIZE)
    static = _static_bytes(h)
    buf = bytearray(HEADER_SIZE)
    buf[0:16] = _PREFIX.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE, FLAG_SEALED if h.sealed else 0)
    buf[16:48] = _U64.pack(h.committed_len) + _STATS.pack(
        h.record_count, h.first_ts_ns, h.last_ts_ns
    )
    buf[48:192] = static
    buf[192:196] = _U32.pack(google_crc32c.value(prefix + static))
    buf[196:200] = _U32.pack(len(h.index))
    buf[200:204] = _U32.pack(h.index_step)
    for i, (off, ts) in enumerate(h.index):
        buf[INDEX_OFFSET + i * 16 : INDEX_OFFSET + i * 16 + 16] = _INDEX_ENTRY.pack(off, ts)
    return bytes(buf)


def decode_header(buf: bytes) -> SegmentHeader:
    """Decode and check a segment header; ForeignFile or CorruptSegment on anything wrong."""
    if len(buf) < 16 or buf[:8] != MAGIC:
        raise ForeignFile("not a coinbase-logger segment (bad magic)")
    _, version, header_size, flags = _PREFIX.unpack_from(buf, 0)
    if version != FORMAT_VERSION or header_size != HEADER_SIZE:
        raise ForeignFile(f"unsupported segment format version {version} (header {header_size})")
    if len(buf) < HEADER_SIZE:
        raise CorruptSegment(f"truncated header ({len(buf)} bytes)", 0)
    static = bytes(buf[48:192])
    (crc,) = _U32.unpack_from(buf, OFF_STATIC_CRC)
    if google_crc32c.value(bytes(buf[0:12]) + static) != crc:
        raise CorruptSegment("segment header CRC mismatch", OFF_STATIC_CRC)
    created_ns, year, month, day, number, product_b, channel_b = _STATIC.unpack(static)
    try:
        product = validate_name(product_b.rstrip(b"\0").decode("ascii"), "product")
        channel = validate_name(channel_b.rstrip(b"\0").decode("ascii"), "channel")
        the_day = dt.date(year, month, day)
    except ValueError as e:
        raise CorruptSegment(f"bad header field: {e}", 48) from e
    (committed_len,) = _U64.unpack_from(buf, OFF_COMMITTED_LEN)
    record_count, first_ts, last_ts = _STATS.unpack_from(buf, OFF_STATS)
    (index_step,) = _U32.unpack_from(buf, OFF_INDEX_STEP)
    return SegmentHeader(
        product=product,
        channel=channel,
        day=the_day,
        number=number,
        created_ns=created_ns,
        committed_len=committed_len,
        record_count=record_count,
        first_ts_ns=first_ts,
        last_ts_ns=last_ts,
        sealed=bool(flags & FLAG_SEALED),
        index=tuple(decode_index(buf)),
        index_step=index_step,
        version=version,
    )


def decode_index(buf: bytes) -> list[tuple[int, int]]:
    """The sparse time-index entries stored in a header (hints only: readers re-check them)."""
    (count,) = _U32.unpack_from(buf, OFF_INDEX_COUNT)
    count = min(count, INDEX_CAPACITY)
    return [
        _INDEX_ENTRY.unpack_from(buf, INDEX_OFFSET + i * INDEX_ENTRY_SIZE) for i in range(count)
    ]


def pack_committed_len(n: int) -> bytes:
    """The commit point field (8 bytes at OFF_COMMITTED_LEN, an aligned single store)."""
    return _U64.pack(n)


def pack_stats(record_count: int, first_ts_ns: int, last_ts_ns: int) -> bytes:
    """record_count, first_ts_ns, last_ts_ns (24 bytes at OFF_STATS)."""
    return _STATS.pack(record_count, first_ts_ns, last_ts_ns)


def pack_flags(sealed: bool) -> bytes:
    """The flags field (4 bytes at OFF_FLAGS)."""
    return _U32.pack(FLAG_SEALED if sealed else 0)


def pack_index_count(n: int) -> bytes:
    """The index entry count (4 bytes at OFF_INDEX_COUNT)."""
    return _U32.pack(n)


def pack_index_entry(batch_offset: int, max_ts_before: int) -> bytes:
    """One time-index entry (16 bytes at INDEX_OFFSET + 16 * i)."""
    return _INDEX_ENTRY.pack(batch_offset, max_ts_before)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchInfo:
    """Where a valid batch sits in a file, its record count and timestamp range (min, max)."""

    offset: int
    length: int
    count: int
    first_ts_ns: int
    last_ts_ns: int


def batch_size(count: int, payload_len: int) -> int:
    """Total encoded size of a batch of ``count`` records carrying ``payload_len`` bytes."""
    raw = BATCH_HEADER_SIZE + 13 * count + payload_len
    return (raw + BATCH_ALIGN - 1) & ~(BATCH_ALIGN - 1)


def encode_batch(
    ts_ns: Sequence[int], kinds: bytes | Sequence[int] | None, payloads: Sequence[bytes]
) -> bytes:
    """Encode one batch of records. ``kinds=None`` means every record is DATA.

    Raises ValueError on empty input, mismatched lengths, kinds outside 0..255, timestamps that
    do not fit an i64, or a batch larger than 4 GiB; TypeError for non-bytes payloads.
    """
    n = len(payloads)
    if len(ts_ns) != n:
        raise ValueError(f"{len(ts_ns)} timestamps for {n} payloads")
    try:
        ts_arr = array("q", ts_ns)
    except OverflowError as e:
        raise ValueError(f"timestamp outside i64: {e}") from e
    if not set(map(type, payloads)) <= {bytes}:
        raise TypeError("payloads must be bytes")
    kinds_b = None if kinds is None else bytes(kinds)
    lens = array("I", map(len, payloads))
    return b"".join(encode_parts(ts_arr, kinds_b, lens, [b"".join(payloads)]).parts)


class EncodedBatch(NamedTuple):
    """A batch as pieces to write at consecutive offsets, with what the header needs."""

    parts: list[bytes]
    length: int
    records: int
    first_ts_ns: int
    last_ts_ns: int


def encode_parts(
    ts: array[int],
    kinds: bytes | None,
    lengths: array[int],
    chunks: Sequence[bytes],
    bounds: tuple[int, int] | None = None,
) -> EncodedBatch:
    """Encode one batch as a list of byte strings whose concatenation is the batch; the
    payloads are given as ``chunks`` whose concatenation is every payload in order.

    This is the engine's hot path: a fixed number of C-level calls per batch, one CRC32C
    computed incrementally over the pieces, and no copy of the payload bytes at all (the
    backend writes the pieces at consecutive offsets). ``bounds`` passes ``(min(ts),
    max(ts))`` when the caller already has them.
    """
    n = len(lengths)
    if n == 0:
        raise ValueError("a batch holds at least one record")
    if len(ts) != n or (kinds is not None and len(kinds) != n):
        raise ValueError(f"column lengths differ: {len(ts)} ts, {n} lengths")
    payload_len = sum(map(len, chunks))
    total = batch_size(n, payload_len)
    if total > MAX_BATCH_BYTES:
        raise ValueError(f"batch of {total} bytes exceeds the 4 GiB frame limit")
    pad = _PAD[: total - (BATCH_HEADER_SIZE + 13 * n + payload_len)]
    first, last = (min(ts), max(ts)) if bounds is None else bounds
    tail = _BATCH_TAIL.pack(total, n, first, last, payload_len, 0)
    if _BIG_ENDIAN:
        ts, lengths = array("q", ts), array("I", lengths)
        ts.byteswap()
        lengths.byteswap()
    kinds_b = bytes(n) if kinds is None else kinds
    columns = b"".join([tail, ts.tobytes(), lengths.tobytes(), kinds_b])
    crc = google_crc32c.value(columns)
    for chunk in chunks:
        crc = google_crc32c.extend(crc, chunk)
    if pad:
        crc = google_crc32c.extend(crc, pad)
    out = [BATCH_MAGIC + _U32.pack(crc) + columns]
    out += chunks
    if pad:
        out.append(pad)
    return EncodedBatch(out, total, n, first, last)


_HEAD8 = struct.Struct("<4sI")  # batch magic + crc


def encode_joined(
    ts: array[int],
    kinds: bytes,
    lengths: array[int],
    payloads: Sequence[bytes],
    first: int,
    last: int,
    payload_len: int,
    total: int,
) -> tuple[bytes, bytes]:
    """Encode one batch as ``(head, body)``: ``head`` is the 8 bytes magic + CRC, ``body``
    everything after them (one join of the columns and payloads: one copy of the payload
    bytes, one CRC call). The engine's per-stream fast path for small and medium batches; the
    caller guarantees consistent columns (``first``/``last`` = min/max of ``ts``,
    ``payload_len`` = sum of ``lengths`` = total payload bytes, ``total`` =
    ``batch_size(len(lengths), payload_len)``) and a little-endian host."""
    n = len(lengths)
    parts = [_BATCH_TAIL.pack(total, n, first, last, payload_len, 0), ts.tobytes(),
             lengths.tobytes(), kinds]
    parts += payloads
    pad = total - (BATCH_HEADER_SIZE + 13 * n + payload_len)
    if pad:
        parts.append(_PAD[:pad])
    body = b"".join(parts)
    return _HEAD8.pack(BATCH_MAGIC, google_crc32c.value(body)), body


def _slice(buf: bytes | bytearray | memoryview | object, a: int, b: int) -> bytes:
    s = buf[a:b]  # type: ignore[index]
    return s if isinstance(s, bytes) else bytes(s)


def read_batch(buf: bytes | memoryview | object, offset: int, end: int) -> tuple[BatchInfo, bytes]:
    """Validate the batch at ``offset`` within ``buf[:end]`` and return it with its bytes.

    ``buf`` may be bytes, a memoryview or an mmap. Raises CorruptSegment (magic, bounds,
    sizes, CRC32C) with the offset.
    """
    if offset + BATCH_HEADER_SIZE > end:
        raise CorruptSegment("truncated batch header", offset)
    head = _slice(buf, offset, offset + BATCH_HEADER_SIZE)
    magic, crc, total, count, min_ts, max_ts, payload_len, _ = _BATCH_HEAD.unpack(head)
    if magic != BATCH_MAGIC:
        raise CorruptSegment("bad batch magic", offset)
    if count == 0 or total != batch_size(count, payload_len):
        raise CorruptSegment(f"inconsistent batch sizes (len {total}, count {count})", offset)
    if offset + total > end:
        raise CorruptSegment(f"batch of {total} bytes runs past the end ({end})", offset)
    blob = _slice(buf, offset, offset + total)
    if google_crc32c.value(blob[8:]) != crc:
        raise CorruptSegment("batch CRC32C mismatch", offset)
    return BatchInfo(offset, total, count, min_ts, max_ts), blob


def check_batch(buf: bytes | memoryview | object, offset: int, end: int) -> BatchInfo:
    """Validate the batch at ``offset`` (see :func:`read_batch`) and describe it."""
    return read_batch(buf, offset, end)[0]


def scan_batches(buf: bytes | memoryview | object, start: int, end: int) -> Iterator[BatchInfo]:
    """Valid batches from ``start``; stops silently at ``end`` or at the first invalid batch.

    The caller compares the last batch's end with ``end`` to tell a clean end from a torn or
    corrupt one.
    """
    off = start
    while off < end:
        try:
            info = check_batch(buf, off, end)
        except CorruptSegment:
            return
        yield info
        off += info.length


def iter_batch_records(buf: bytes | memoryview | object, offset: int) -> Iterator[Record]:
    """Decode the records of the batch at ``offset`` in ``buf``, checking it first (CRC
    included), so a caller never gets unverified payloads. Record offsets are positions in
    ``buf`` (file offsets when ``buf`` is a whole file)."""
    end = len(buf)  # type: ignore[arg-type]
    _, blob = read_batch(buf, offset, end)
    return batch_records(blob, offset)


def batch_records(blob: bytes, offset: int) -> Iterator[Record]:
    """Records of one batch already validated by :func:`read_batch`; ``offset`` is where the
    batch starts in its file."""
    (n,) = _U32.unpack_from(blob, 12)
    (payload_len,) = _U32.unpack_from(blob, 32)
    ts = array("q")
    ts.frombytes(blob[BATCH_HEADER_SIZE : BATCH_HEADER_SIZE + 8 * n])
    lens = array("I")
    lens.frombytes(blob[BATCH_HEADER_SIZE + 8 * n : BATCH_HEADER_SIZE + 12 * n])
    if _BIG_ENDIAN:
        ts.byteswap()
        lens.byteswap()
    if sum(lens) != payload_len:
        raise CorruptSegment("record lengths disagree with the batch payload length", offset)
    kinds = blob[BATCH_HEADER_SIZE + 12 * n : BATCH_HEADER_SIZE + 13 * n]
    starts = accumulate(lens, initial=BATCH_HEADER_SIZE + 13 * n)
    return _records(ts, kinds, starts, lens, blob, offset)


def _records(
    ts: array[int], kinds: bytes, starts: Iterator[int], lens: array[int], blob: bytes, base: int
) -> Iterator[Record]:
    for t, k, s, ln in zip(ts, kinds, starts, lens, strict=False):
        yield Record(t, k, blob[s : s + ln], base + s)
