"""Segment format v2 (and v1, still read): the byte codec for the header and record batches.

docs/FORMAT.md is the normative description; this module is its only implementation of the
bytes. A batch is *columnar* (all timestamps, then all lengths, then all kinds, then the payloads
concatenated) and protected by ONE CRC32C, so encoding 1 000 records is a handful of C-level
calls (``array``, ``bytes.join``, one ``google_crc32c.value``) instead of a Python loop.
All integers are little-endian.

Version 2 makes damage local and never silent: a batch's CRC32C is seeded with its file offset
(a batch copied to another place fails), the header's hints (commit point, record count, time
bounds) and its time index carry their own CRC32C, and :func:`scan_spans` resynchronises after a
damaged batch by searching the next batch magic at 8-byte aligned offsets (every candidate must
pass the full, position-bound CRC). Version-1 files are still read by everything.
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
    "BATCH_MAGIC_V1",
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
    "READ_VERSIONS",
    "BatchInfo",
    "CorruptSegment",
    "EncodedBatch",
    "ForeignFile",
    "SegmentHeader",
    "Skipped",
    "batch_records",
    "batch_size",
    "check_batch",
    "crc_seed",
    "decode_header",
    "decode_index",
    "encode_batch",
    "encode_header",
    "encode_joined",
    "encode_parts",
    "hinted_commit_point",
    "iter_batch_records",
    "next_batch",
    "pack_committed_len",
    "pack_flags",
    "pack_index_count",
    "pack_index_entry",
    "pack_index_head",
    "pack_stats",
    "read_batch",
    "scan_batches",
    "scan_spans",
]

MAGIC = b"CBLOGSEG"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
HEADER_SIZE = 4096
FLAG_SEALED = 1

# Segment header field offsets (see docs/FORMAT.md).
OFF_FLAGS = 12
OFF_COMMITTED_LEN = 16
OFF_STATS = 24  # record_count u64, first_ts_ns i64, last_ts_ns i64
OFF_STATIC_CRC = 192
OFF_INDEX_COUNT = 196
OFF_INDEX_STEP = 200
OFF_INDEX_CRC = 204  # v2: CRC32C of bytes [196, 204) + the index entries in use
OFF_HINTS_CRC = 24  # v2: CRC32C of committed_len [16, 24) + bytes [28, 48)
MAX_HINT_COUNT = 0xFFFF_FFFF  # v2 keeps record_count in a u32 (saturates; then count batches)
INDEX_OFFSET = 256
INDEX_ENTRY_SIZE = 16
INDEX_CAPACITY = (HEADER_SIZE - INDEX_OFFSET) // INDEX_ENTRY_SIZE  # 240

_PREFIX = struct.Struct("<8sHHI")  # magic, version, header_size, flags
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_STATS = struct.Struct("<Qqq")  # v1: record_count u64, first_ts, last_ts
_HINTS = struct.Struct("<QIqq")  # v2: what hints_crc covers: committed_len, count, first, last
_HINTS_OUT = struct.Struct("<IIqq")  # v2 bytes [24, 48): hints_crc, count, first, last
_STATIC = struct.Struct("<qHBBI64s64s")  # created_ns, year, month, day, number, product, channel
_INDEX_ENTRY = struct.Struct("<Qq")

BATCH_MAGIC = b"CBB2"  # v2: CRC seeded with the batch's file offset
BATCH_MAGIC_V1 = b"CBB1"  # v1: CRC of the batch bytes alone
_MAGIC_VERSION = {BATCH_MAGIC: 2, BATCH_MAGIC_V1: 1}
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

    ``hints_ok``/``index_ok`` say whether the hints (commit point, count, time bounds) and the
    index passed their CRC32C (version 2). Version 1 has no such checksums: both are False, and
    readers must not skip anything on them (they scan instead).
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
    hints_ok: bool = True
    index_ok: bool = True


def _static_bytes(h: SegmentHeader) -> bytes:
    product = validate_name(h.product, "product").encode("ascii")
    channel = validate_name(h.channel, "channel").encode("ascii")
    return _STATIC.pack(
        h.created_ns, h.day.year, h.day.month, h.day.day, h.number, product, channel
    )


def encode_header(h: SegmentHeader) -> bytes:
    """The full 4 096 header bytes for ``h`` in ``h.version`` (2 unless writing a v1 file)."""
    if len(h.index) > INDEX_CAPACITY:
        raise ValueError(f"index has {len(h.index)} entries, capacity {INDEX_CAPACITY}")
    if h.version not in READ_VERSIONS:
        raise ValueError(f"cannot write segment format version {h.version}")
    prefix = MAGIC + struct.pack("<HH", h.version, HEADER_SIZE)
    static = _static_bytes(h)
    buf = bytearray(HEADER_SIZE)
    buf[0:16] = _PREFIX.pack(MAGIC, h.version, HEADER_SIZE, FLAG_SEALED if h.sealed else 0)
    buf[16:24] = _U64.pack(h.committed_len)
    buf[24:48] = pack_stats(h.record_count, h.first_ts_ns, h.last_ts_ns, h.committed_len,
                            h.version)
    buf[48:192] = static
    buf[192:196] = _U32.pack(google_crc32c.value(prefix + static))
    entries = b"".join(_INDEX_ENTRY.pack(off, ts) for off, ts in h.index)
    buf[INDEX_OFFSET : INDEX_OFFSET + len(entries)] = entries
    buf[196:208] = pack_index_head(len(h.index), h.index_step, entries, h.version)
    return bytes(buf)


def decode_header(buf: bytes) -> SegmentHeader:
    """Decode and check a segment header; ForeignFile or CorruptSegment on anything wrong.

    The hints and index checksums (v2) do not make a header invalid: they only decide whether
    the hints may be trusted (``hints_ok``/``index_ok``); the batches are the truth."""
    if len(buf) < 16 or buf[:8] != MAGIC:
        raise ForeignFile("not a coinbase-logger segment (bad magic)")
    _, version, header_size, flags = _PREFIX.unpack_from(buf, 0)
    if version not in READ_VERSIONS or header_size != HEADER_SIZE:
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
    (index_step,) = _U32.unpack_from(buf, OFF_INDEX_STEP)
    index = decode_index(buf)
    if version == 1:
        record_count, first_ts, last_ts = _STATS.unpack_from(buf, OFF_STATS)
        hints_ok = index_ok = False
    else:
        hints_crc, record_count, first_ts, last_ts = _HINTS_OUT.unpack_from(buf, OFF_STATS)
        hints_ok = hints_crc == google_crc32c.value(bytes(buf[16:24]) + bytes(buf[28:48]))
        (index_crc,) = _U32.unpack_from(buf, OFF_INDEX_CRC)
        (count,) = _U32.unpack_from(buf, OFF_INDEX_COUNT)
        entries = bytes(buf[INDEX_OFFSET : INDEX_OFFSET + INDEX_ENTRY_SIZE * len(index)])
        index_ok = count <= INDEX_CAPACITY and index_crc == google_crc32c.value(
            bytes(buf[196:204]) + entries)
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
        index=tuple(index),
        index_step=index_step,
        version=version,
        hints_ok=hints_ok,
        index_ok=index_ok,
    )


def decode_index(buf: bytes) -> list[tuple[int, int]]:
    """The sparse time-index entries stored in a header (hints: see ``index_ok``)."""
    (count,) = _U32.unpack_from(buf, OFF_INDEX_COUNT)
    count = min(count, INDEX_CAPACITY)
    return [
        _INDEX_ENTRY.unpack_from(buf, INDEX_OFFSET + i * INDEX_ENTRY_SIZE) for i in range(count)
    ]


def pack_committed_len(n: int) -> bytes:
    """The commit point field (8 bytes at OFF_COMMITTED_LEN, an aligned single store)."""
    return _U64.pack(n)


def pack_stats(record_count: int, first_ts_ns: int, last_ts_ns: int,
               committed_len: int = HEADER_SIZE, version: int = FORMAT_VERSION) -> bytes:
    """The 24 hint bytes at OFF_STATS. v2: hints_crc, record_count (u32, saturating),
    first_ts_ns, last_ts_ns, the CRC binding them to the ``committed_len`` they describe (the
    writer stores these before that commit point, so they match once it is written). v1:
    record_count u64, first_ts_ns, last_ts_ns."""
    if version == 1:
        return _STATS.pack(record_count, first_ts_ns, last_ts_ns)
    count = min(record_count, MAX_HINT_COUNT)
    crc = google_crc32c.value(_HINTS.pack(committed_len, count, first_ts_ns, last_ts_ns))
    return _HINTS_OUT.pack(crc, count, first_ts_ns, last_ts_ns)


def pack_flags(sealed: bool) -> bytes:
    """The flags field (4 bytes at OFF_FLAGS)."""
    return _U32.pack(FLAG_SEALED if sealed else 0)


def pack_index_count(n: int) -> bytes:
    """The index entry count (4 bytes at OFF_INDEX_COUNT)."""
    return _U32.pack(n)


def pack_index_head(count: int, step: int, entries: bytes, version: int = FORMAT_VERSION) -> bytes:
    """Bytes [196, 208): index_count, index_step and (v2) index_crc over those two fields and
    ``entries``, the ``count`` packed entries in use (v1: that field stays 0)."""
    head = _U32.pack(count) + _U32.pack(step)
    crc = google_crc32c.value(head + entries) if version >= 2 else 0
    return head + _U32.pack(crc)


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
    ts_ns: Sequence[int], kinds: bytes | Sequence[int] | None, payloads: Sequence[bytes],
    offset: int = HEADER_SIZE, version: int = FORMAT_VERSION,
) -> bytes:
    """Encode one batch of records to be stored at file ``offset`` (v2 binds its CRC to it).
    ``kinds=None`` means every record is DATA.

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
    return b"".join(encode_parts(ts_arr, kinds_b, lens, [b"".join(payloads)], None, offset,
                                 version).parts)


class EncodedBatch(NamedTuple):
    """A batch as pieces to write at consecutive offsets, with what the header needs."""

    parts: list[bytes]
    length: int
    records: int
    first_ts_ns: int
    last_ts_ns: int


def crc_seed(offset: int) -> int:
    """The CRC32C state a v2 batch at file ``offset`` starts from: the CRC of the offset as a
    u64, so identical bytes stored elsewhere (a batch copied over another) do not validate."""
    return int(google_crc32c.value(_U64.pack(offset)))


def encode_parts(
    ts: array[int],
    kinds: bytes | None,
    lengths: array[int],
    chunks: Sequence[bytes],
    bounds: tuple[int, int] | None = None,
    offset: int = HEADER_SIZE,
    version: int = FORMAT_VERSION,
) -> EncodedBatch:
    """Encode one batch, to be stored at file ``offset``, as a list of byte strings whose
    concatenation is the batch; the payloads are given as ``chunks`` whose concatenation is
    every payload in order.

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
    if version == 1:
        crc, magic = google_crc32c.value(columns), BATCH_MAGIC_V1
    else:
        crc, magic = google_crc32c.extend(crc_seed(offset), columns), BATCH_MAGIC
    for chunk in chunks:
        crc = google_crc32c.extend(crc, chunk)
    if pad:
        crc = google_crc32c.extend(crc, pad)
    out = [magic + _U32.pack(crc) + columns]
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
    offset: int,
) -> tuple[bytes, bytes]:
    """Encode one v2 batch for file ``offset`` as ``(head, body)``: ``head`` is the 8 bytes
    magic + CRC, ``body`` everything after them (one join of the columns and payloads: one
    copy of the payload bytes, one CRC call). The engine's per-stream fast path for small and
    medium batches; the caller guarantees consistent columns (``first``/``last`` = min/max of
    ``ts``, ``payload_len`` = sum of ``lengths`` = total payload bytes, ``total`` =
    ``batch_size(len(lengths), payload_len)``) and a little-endian host."""
    n = len(lengths)
    parts = [_BATCH_TAIL.pack(total, n, first, last, payload_len, 0), ts.tobytes(),
             lengths.tobytes(), kinds]
    parts += payloads
    pad = total - (BATCH_HEADER_SIZE + 13 * n + payload_len)
    if pad:
        parts.append(_PAD[:pad])
    body = b"".join(parts)
    crc = google_crc32c.extend(google_crc32c.value(_U64.pack(offset)), body)
    return _HEAD8.pack(BATCH_MAGIC, crc), body


def _slice(buf: bytes | bytearray | memoryview | object, a: int, b: int) -> bytes:
    s = buf[a:b]  # type: ignore[index]
    return s if isinstance(s, bytes) else bytes(s)


def read_batch(
    buf: bytes | memoryview | object, offset: int, end: int, pos: int | None = None,
    version: int | None = None,
) -> tuple[BatchInfo, bytes]:
    """Validate the batch at ``offset`` within ``buf[:end]`` and return it with its bytes.

    ``buf`` may be bytes, a memoryview or an mmap. ``pos`` is the batch's file offset when
    ``buf`` is not the whole file (an archive frame's content): a v2 CRC is seeded with it.
    ``version`` restricts the batch format to that of the file (None: either, chosen by the
    magic). Raises CorruptSegment (magic, bounds, sizes, CRC32C) with ``offset``; the returned
    BatchInfo carries ``pos``.
    """
    if offset + BATCH_HEADER_SIZE > end:
        raise CorruptSegment("truncated batch header", offset)
    head = _slice(buf, offset, offset + BATCH_HEADER_SIZE)
    magic, crc, total, count, min_ts, max_ts, payload_len, _ = _BATCH_HEAD.unpack(head)
    magic_version = _MAGIC_VERSION.get(magic)
    if magic_version is None or (version is not None and magic_version != version):
        raise CorruptSegment("bad batch magic", offset)
    if count == 0 or total != batch_size(count, payload_len):
        raise CorruptSegment(f"inconsistent batch sizes (len {total}, count {count})", offset)
    if offset + total > end:
        raise CorruptSegment(f"batch of {total} bytes runs past the end ({end})", offset)
    blob = _slice(buf, offset, offset + total)
    at = offset if pos is None else pos
    if magic_version == 1:
        actual = google_crc32c.value(blob[8:])
    else:
        actual = google_crc32c.extend(crc_seed(at), blob[8:])
    if actual != crc:
        raise CorruptSegment("batch CRC32C mismatch", offset)
    return BatchInfo(at, total, count, min_ts, max_ts), blob


def check_batch(buf: bytes | memoryview | object, offset: int, end: int,
                version: int | None = None) -> BatchInfo:
    """Validate the batch at ``offset`` (see :func:`read_batch`) and describe it."""
    return read_batch(buf, offset, end, None, version)[0]


def scan_batches(buf: bytes | memoryview | object, start: int, end: int,
                 version: int | None = None) -> Iterator[BatchInfo]:
    """Valid batches from ``start``; stops silently at ``end`` or at the first invalid batch.

    The caller compares the last batch's end with ``end`` to tell a clean end from a torn or
    corrupt one (the writer's recovery: it must append right after the valid prefix).
    Readers use :func:`scan_spans`, which continues past damage.
    """
    off = start
    while off < end:
        try:
            info = check_batch(buf, off, end, version)
        except CorruptSegment:
            return
        yield info
        off += info.length


class Skipped(NamedTuple):
    """Bytes ``[offset, offset + length)`` (file offsets) that hold no valid batch."""

    offset: int
    length: int


def _find(buf: object, sub: bytes, a: int, b: int) -> int:
    """``buf.find`` for bytes and mmap; memoryviews are searched in 1 MiB windows."""
    finder = getattr(buf, "find", None)
    if finder is not None:
        return int(finder(sub, a, b))
    step = 1 << 20
    while a < b:
        hi = min(b, a + step + len(sub) - 1)
        i = _slice(buf, a, hi).find(sub)
        if i >= 0:
            return a + i
        a += step
    return -1


def next_batch(buf: object, start: int, end: int, base: int = 0,
               version: int | None = None) -> tuple[BatchInfo, bytes] | None:
    """The first valid batch at or after ``start`` (buffer offsets) whose file offset
    ``base + off`` is 8-aligned; None if there is none before ``end``. Each candidate found by
    its magic must pass the full position-bound check, so payload bytes that look like a
    magic are never taken for a batch."""
    magic = b"CBB" if version is None else (BATCH_MAGIC if version == 2 else BATCH_MAGIC_V1)
    pos = start
    while pos < end:
        i = _find(buf, magic, pos, end)
        if i < 0:
            return None
        if (base + i) % BATCH_ALIGN:
            pos = i + 1
            continue
        try:
            return read_batch(buf, i, end, base + i, version)
        except CorruptSegment:
            pos = i + BATCH_ALIGN
    return None


def scan_spans(
    buf: object, start: int, end: int, base: int = 0, version: int | None = None,
) -> Iterator[tuple[BatchInfo, bytes] | Skipped]:
    """Every valid batch (with its bytes) from ``start`` to ``end`` of ``buf``, and a
    :class:`Skipped` for each damaged range between them: after a batch that does not
    validate, reading resumes at the next valid batch (resynchronisation). ``base`` is the
    file offset of ``buf[0]``; every offset yielded is a file offset."""
    off = start
    while off < end:
        try:
            found = read_batch(buf, off, end, base + off, version)
        except CorruptSegment:
            nxt = next_batch(buf, off + BATCH_ALIGN, end, base, version)
            stop = end if nxt is None else nxt[0].offset - base
            yield Skipped(base + off, stop - off)
            if nxt is None:
                return
            found, off = nxt, stop
        yield found
        off += found[0].length


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


def hinted_commit_point(buf: object, size: int,
                        version: int | None) -> tuple[int | None, set[int]]:
    """For a v2 header whose ``hints_crc`` does not match its commit point: the end of every
    valid batch from 4096 to ``size`` (resynchronising), and the one the stored hints were
    written for (their CRC binds it), if any. Tells a writer that crashed between storing the
    hints and the commit point (the hints name a later batch end) from a damaged commit point
    (the hints name the real one) from damaged hints (none)."""
    head = _slice(buf, OFF_STATS, 48)
    (crc,) = _U32.unpack_from(head, 0)
    tail = head[4:]
    ends = {HEADER_SIZE}
    match = HEADER_SIZE if google_crc32c.value(_U64.pack(HEADER_SIZE) + tail) == crc else None
    for span in scan_spans(buf, HEADER_SIZE, size, 0, version):
        if isinstance(span, Skipped):
            continue
        end = span[0].offset + span[0].length
        ends.add(end)
        if google_crc32c.value(_U64.pack(end) + tail) == crc:
            match = end
    return match, ends
