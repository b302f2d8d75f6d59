"""Find what a segment really holds after a crash: the last valid committed batch.

The header's ``committed_len`` is the commit point (written, as one aligned 8-byte store, only
after the batch bytes are in place), but it is not trusted alone: every batch up to it must
pass its length and CRC32C checks. Bytes after the commit point are a torn or uncommitted tail
and are ignored (the writer overwrites them). A batch that fails *before* the commit point is a
corrupt middle: the valid prefix stays readable and the engine starts a new segment.

Pure functions over a buffer (bytes or mmap), so tests can crash a file at any byte offset.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from storage.format import (
    BATCH_HEADER_SIZE,
    HEADER_SIZE,
    INDEX_CAPACITY,
    SegmentHeader,
    decode_header,
    scan_batches,
)

__all__ = ["Recovered", "index_due", "recover_buffer"]


class _Buffer(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, s: slice, /) -> bytes: ...


def index_due(index: list[tuple[int, int]], offset: int, step: int) -> bool:
    """Whether a batch starting at ``offset`` gets a time-index entry (writer and recovery
    apply the same rule, so recovery rebuilds exactly the index the writer kept)."""
    if step <= 0 or len(index) >= INDEX_CAPACITY:
        return False
    last = index[-1][0] if index else HEADER_SIZE
    return offset >= last + step


@dataclasses.dataclass(frozen=True, slots=True)
class Recovered:
    """What a scan found: the valid end, recomputed statistics and index, and any damage.

    ``corrupt_at`` is the offset of the first invalid batch before the commit point (None when
    the committed region is intact); ``tail_ignored`` says non-zero bytes followed the commit
    point (a torn or uncommitted write that recovery dropped).
    """

    header: SegmentHeader
    end: int
    record_count: int
    first_ts_ns: int
    last_ts_ns: int
    index: list[tuple[int, int]]
    corrupt_at: int | None
    tail_ignored: bool


def recover_buffer(buf: _Buffer) -> Recovered:
    """Scan a whole segment image. Raises ForeignFile/CorruptSegment for a bad header."""
    size = len(buf)
    header = decode_header(buf[0:HEADER_SIZE])
    committed = header.committed_len
    limit = min(max(committed, HEADER_SIZE), size)
    end = HEADER_SIZE
    count = 0
    first = last = 0
    index: list[tuple[int, int]] = []
    for info in scan_batches(buf, HEADER_SIZE, limit, header.version):
        if index_due(index, info.offset, header.index_step):
            index.append((info.offset, last))
        if count == 0:
            first, last = info.first_ts_ns, info.last_ts_ns
        else:
            first = min(first, info.first_ts_ns)
            last = max(last, info.last_ts_ns)
        count += info.count
        end = info.offset + info.length
    corrupt_at = None if end == committed else end
    tail = buf[end : min(end + BATCH_HEADER_SIZE, size)]
    tail_ignored = any(tail)  # preallocated space reads as zeros; anything else was written
    return Recovered(header, end, count, first, last, index, corrupt_at, tail_ignored)
