"""docs/FORMAT.md is enough to read a segment: this test is a second, independent reader
written from that page alone (struct + a CRC32C), run against files the engine wrote."""

from __future__ import annotations

import datetime as dt
import os
import struct
from pathlib import Path

import google_crc32c
from segment_fixtures import NOON_NS

from storage import Engine, EngineConfig, RecordKind, iter_segments


def _doc_reader(data: bytes) -> tuple[dict[str, object], list[tuple[int, int, bytes]]]:
    """Decode a segment (version 1 or 2) following docs/FORMAT.md step by step."""
    assert data[0:8] == b"CBLOGSEG"
    version, header_size, flags = struct.unpack_from("<HHI", data, 8)
    assert version in (1, 2) and header_size == 4096
    (committed_len,) = struct.unpack_from("<Q", data, 16)
    if version == 1:
        record_count, first_ts, last_ts = struct.unpack_from("<Qqq", data, 24)
    else:
        hints_crc, record_count, first_ts, last_ts = struct.unpack_from("<IIqq", data, 24)
        assert google_crc32c.value(data[16:24] + data[28:48]) == hints_crc
    (created,) = struct.unpack_from("<q", data, 48)
    year, month, day, number = struct.unpack_from("<HBBI", data, 56)
    product = data[64:128].rstrip(b"\0").decode("ascii")
    channel = data[128:192].rstrip(b"\0").decode("ascii")
    (static_crc,) = struct.unpack_from("<I", data, 192)
    assert google_crc32c.value(data[0:12] + data[48:192]) == static_crc
    index_count, index_step, index_crc = struct.unpack_from("<III", data, 196)
    index = [struct.unpack_from("<Qq", data, 256 + 16 * i) for i in range(index_count)]
    if version == 2:
        entries = data[256 : 256 + 16 * index_count]
        assert google_crc32c.value(data[196:204] + entries) == index_crc
    header = dict(sealed=bool(flags & 1), committed_len=committed_len, count=record_count,
                  first=first_ts, last=last_ts, day=dt.date(year, month, day), number=number,
                  product=product, channel=channel, index=index, step=index_step,
                  created=created, version=version)
    records: list[tuple[int, int, bytes]] = []
    off = 4096
    while off < committed_len:
        magic, crc, length, n, min_ts, max_ts, payload_len, reserved = struct.unpack_from(
            "<4sIIIqqII", data, off)
        assert magic == (b"CBB1" if version == 1 else b"CBB2") and n >= 1 and reserved == 0
        assert length == (40 + 13 * n + payload_len + 7) // 8 * 8
        assert off + length <= committed_len
        seed = b"" if version == 1 else struct.pack("<Q", off)  # v2: the CRC binds the offset
        assert google_crc32c.value(seed + data[off + 8 : off + length]) == crc
        ts = struct.unpack_from(f"<{n}q", data, off + 40)
        lens = struct.unpack_from(f"<{n}I", data, off + 40 + 8 * n)
        kinds = data[off + 40 + 12 * n : off + 40 + 13 * n]
        assert sum(lens) == payload_len and (min(ts), max(ts)) == (min_ts, max_ts)
        p = off + 40 + 13 * n
        for t, k, ln in zip(ts, kinds, lens, strict=True):
            records.append((t, k, data[p : p + ln]))
            p += ln
        assert data[p : off + length] == bytes(off + length - p)  # zero padding
        off += length
    assert off == committed_len
    return header, records


def test_doc_reader_reads_the_v1_fixture() -> None:
    path = Path(__file__).parent.parent / "fixtures/v1/root/BTC-USD/ticker/2026-01-05.0000.seg"
    header, records = _doc_reader(path.read_bytes())
    assert header["version"] == 1 and len(records) == 60 == header["count"]


def test_crc32c_check_value_in_the_doc() -> None:
    assert google_crc32c.value(b"123456789") == 0xE3069283


def test_doc_reader_decodes_what_the_engine_wrote(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", segment_max_bytes=1 << 20,
                       seal_stale_on_open=False)
    expected: list[tuple[int, int, bytes]] = []
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        for c in range(60):
            ts = [NOON_NS + c * 100 + i for i in range(37)]
            pl = [os.urandom((c * 37 + i) % 301) for i in range(37)]
            eng.extend(s, ts, pl)
            expected += [(t, 0, p) for t, p in zip(ts, pl, strict=True)]
            eng.append(s, NOON_NS + c * 100 + 50, b'{"gap": %d}' % c, RecordKind.GAP)
            expected.append((NOON_NS + c * 100 + 50, 1, b'{"gap": %d}' % c))
            eng.commit(now_ns=NOON_NS)
            if c == 30:  # a live, preallocated file reads the same way
                [ref] = iter_segments(root)
                header, records = _doc_reader(ref.path.read_bytes())
                assert not header["sealed"] and records == expected
    [ref] = iter_segments(root)
    data = ref.path.read_bytes()
    header, records = _doc_reader(data)
    assert records == expected
    assert header["sealed"] and header["committed_len"] == len(data)
    assert header["count"] == len(expected)
    assert (header["first"], header["last"]) == (NOON_NS, max(t for t, _, _ in expected))
    assert (header["product"], header["channel"], header["number"]) == ("BTC-USD", "level2", 0)
    assert header["day"] == dt.date(2026, 11, 24) and header["version"] == 2
    index = header["index"]
    assert isinstance(index, list) and index
    prev = 4096
    for off, max_before in index:  # the documented rule and meaning of index entries
        assert off - prev >= header["step"]  # type: ignore[operator]
        assert all(t <= max_before for t, _, _ in _records_before(data, off))
        prev = off


def _records_before(data: bytes, offset: int) -> list[tuple[int, int, bytes]]:
    head = bytearray(data[:4096])
    head[16:24] = offset.to_bytes(8, "little")
    head[24:28] = google_crc32c.value(bytes(head[16:24] + head[28:48])).to_bytes(4, "little")
    return _doc_reader(bytes(head) + data[4096:offset])[1]
