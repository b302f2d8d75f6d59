"""The segment codec: header and batch bytes round-trip, and every kind of damage is caught."""

from __future__ import annotations

import datetime as dt
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.format import (
    BATCH_HEADER_SIZE,
    HEADER_SIZE,
    CorruptSegment,
    ForeignFile,
    SegmentHeader,
    batch_size,
    check_batch,
    decode_header,
    encode_batch,
    encode_header,
    iter_batch_records,
    scan_batches,
)
from storage.reader import decode_batches

I64 = st.integers(-(1 << 63), (1 << 63) - 1)
RECORDS = st.lists(
    st.tuples(I64, st.integers(0, 255), st.binary(max_size=300)), min_size=1, max_size=60
)


def _header(**kw: object) -> SegmentHeader:
    base: dict[str, object] = dict(product="BTC-USD", channel="level2",
                                   day=dt.date(2026, 11, 24), number=3, created_ns=123)
    base.update(kw)
    return SegmentHeader(**base)  # type: ignore[arg-type]


def test_header_round_trip() -> None:
    h = _header(committed_len=9000, record_count=5, first_ts_ns=-4, last_ts_ns=77, sealed=True,
                index=((5000, 10), (8000, 20)), index_step=4096)
    raw = encode_header(h)
    assert len(raw) == HEADER_SIZE
    assert decode_header(raw) == h


def test_header_foreign_and_corrupt() -> None:
    raw = bytearray(encode_header(_header()))
    with pytest.raises(ForeignFile, match="magic"):
        decode_header(b"PK\x03\x04" + bytes(raw[4:]))
    with pytest.raises(ForeignFile, match="version"):
        decode_header(bytes(raw[:8]) + struct.pack("<H", 3) + bytes(raw[10:]))
    with pytest.raises(CorruptSegment, match="truncated"):
        decode_header(bytes(raw[:100]))
    raw[70] ^= 1  # inside the product name: covered by the static CRC
    with pytest.raises(CorruptSegment, match="CRC"):
        decode_header(bytes(raw))


@settings(max_examples=150, deadline=None)
@given(RECORDS)
def test_batch_round_trip(records: list[tuple[int, int, bytes]]) -> None:
    ts = [r[0] for r in records]
    kinds = bytes(r[1] for r in records)
    payloads = [r[2] for r in records]
    raw = encode_batch(ts, kinds, payloads, offset=0)
    assert len(raw) == batch_size(len(records), sum(map(len, payloads)))
    assert len(raw) % 8 == 0
    info = check_batch(raw, 0, len(raw))
    assert (info.count, info.first_ts_ns, info.last_ts_ns) == (len(ts), min(ts), max(ts))
    got = list(iter_batch_records(raw, 0))
    assert [(r.ts_ns, r.kind, r.payload) for r in got] == records
    for r in got:
        assert raw[r.offset : r.offset + len(r.payload)] == r.payload


@settings(max_examples=100, deadline=None)
@given(RECORDS, st.data())
def test_any_single_bit_flip_is_detected(
    records: list[tuple[int, int, bytes]], data: st.DataObject
) -> None:
    raw = bytearray(encode_batch([r[0] for r in records], bytes(r[1] for r in records),
                                 [r[2] for r in records], offset=0))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(CorruptSegment):
        check_batch(bytes(raw), 0, len(raw))


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        encode_batch([], None, [])
    with pytest.raises(ValueError, match="timestamps"):
        encode_batch([1, 2], None, [b"a"])
    with pytest.raises(ValueError, match="i64"):
        encode_batch([1 << 63], None, [b"a"])
    with pytest.raises(TypeError):
        encode_batch([1], None, ["text"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="column lengths"):
        encode_batch([1], b"\0\0", [b"a"])


def test_scan_stops_at_torn_batch_and_reports_offsets() -> None:
    a = encode_batch([1, 2], None, [b"x", b"yy"], offset=0)
    b = encode_batch([3], None, [b"z" * 50], offset=len(a))
    buf = a + b + b[: len(b) - 3]
    infos = list(scan_batches(buf, 0, len(buf)))
    assert [(i.offset, i.length, i.count) for i in infos] == [(0, len(a), 2),
                                                              (len(a), len(b), 1)]
    with pytest.raises(CorruptSegment) as e:
        check_batch(buf, len(a) + len(b), len(buf))
    assert e.value.offset == len(a) + len(b)


def test_decode_batches_uses_base_offset_and_raises_clearly() -> None:
    a = encode_batch([1, 2], bytes([0, 3]), [b"x", b"yy"])
    recs = list(decode_batches(a, 4096))
    assert [(r.ts_ns, r.kind, r.payload) for r in recs] == [(1, 0, b"x"), (2, 3, b"yy")]
    assert recs[0].offset == 4096 + BATCH_HEADER_SIZE + 13 * 2
    with pytest.raises(CorruptSegment) as e:
        list(decode_batches(a + b"\xff" * 8, 4096))
    assert e.value.offset == 4096 + len(a)
