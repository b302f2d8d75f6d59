"""Whole batches as columns: times, kinds, lengths and the payload bytes in one piece.

`records()` hands out one `Record` (and one payload copy) per record, which is most of the
cost of reading for a consumer that treats thousands of records at once (the columnar export).
`RecordBatch` keeps a verified batch as it is stored: the payloads stay one contiguous byte
string, described by the per-record arrays. Readers give verified batches through their
`batch_blobs()`; this module only decodes them and knows nothing of what the payloads hold.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from storage.format import BATCH_HEADER_SIZE, BatchInfo, CorruptSegment
from storage.records import Record

_BIG_ENDIAN = sys.byteorder == "big"
_U32 = struct.Struct("<I")  # the batch header's payload_len sits at byte 32


class BatchSource(Protocol):
    def batch_blobs(self) -> Iterator[tuple[BatchInfo, bytes]]: ...


@dataclass(frozen=True)
class RecordBatch:
    """One stored batch: record i has time `ts[i]`, kind `kinds[i]` and the payload
    `payloads[starts[i]:starts[i + 1]]`; `offset` is the payloads' file offset."""

    ts: array[int]
    kinds: bytes
    payloads: bytes
    starts: list[int]
    offset: int

    def __len__(self) -> int:
        return len(self.ts)

    def all_data(self) -> bool:
        """No marker among the records (every kind is DATA, 0)."""
        return not any(self.kinds)

    def records(self) -> Iterator[Record]:
        """The records one by one, as the readers' `records()` give them."""
        p, s, off = self.payloads, self.starts, self.offset
        for i, (t, k) in enumerate(zip(self.ts, self.kinds, strict=True)):
            yield Record(t, k, p[s[i]:s[i + 1]], off + s[i])


def decode(info: BatchInfo, blob: bytes) -> RecordBatch:
    """A verified batch (`blob` as `read_batch` returns it) as a RecordBatch."""
    n = info.count
    ts = array("q")
    ts.frombytes(blob[BATCH_HEADER_SIZE:BATCH_HEADER_SIZE + 8 * n])
    lens = array("I")
    lens.frombytes(blob[BATCH_HEADER_SIZE + 8 * n:BATCH_HEADER_SIZE + 12 * n])
    if _BIG_ENDIAN:
        ts.byteswap()
        lens.byteswap()
    (payload_len,) = _U32.unpack_from(blob, 32)
    if sum(lens) != payload_len:
        raise CorruptSegment("record lengths disagree with the batch payload length",
                             info.offset)
    first = BATCH_HEADER_SIZE + 13 * n
    return RecordBatch(ts, blob[BATCH_HEADER_SIZE + 12 * n:first], blob[first:first + payload_len],
                       list(accumulate(lens, initial=0)), info.offset + first)


def batches(reader: BatchSource) -> Iterator[RecordBatch]:
    """Every batch of a segment or archive reader, in file order (errors as `records()`)."""
    for info, blob in reader.batch_blobs():
        yield decode(info, blob)
