"""Targeted damage: each kind of bad byte costs what it must and no more, is reported with
file@offset, and never yields a wrong record (format v2; v1 fixtures stay readable)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import struct
from pathlib import Path

import orjson
import pytest
from segment_fixtures import NOON_NS

from storage import Engine, EngineConfig, RecordKind, SegmentReader, iter_segments
from storage.archive import open_any
from storage.archive_verify import verify_file
from storage.format import (
    HEADER_SIZE,
    INDEX_OFFSET,
    OFF_COMMITTED_LEN,
    CorruptSegment,
    ForeignFile,
    decode_header,
)
from storage.layout import InvalidStreamName, validate_name
from storage.recovery import recover_buffer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v1" / "root"
Rec = tuple[int, int, int, bytes]


def _write(root: Path, n: int = 400, per_commit: int = 20) -> Path:
    cfg = EngineConfig(root=root, backend="mmap", commit_records=per_commit,
                       seal_stale_on_open=False, segment_max_bytes=1 << 22)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        for i in range(n):
            eng.append(s, NOON_NS + i * 1000, b'{"i":%d,"pad":"%s"}' % (i, b"x" * (i % 50)))
            if i % 97 == 96:
                eng.append(s, NOON_NS + i * 1000 + 1, b'{"reason":"t"}', RecordKind.GAP)
            if eng.commit_due():
                eng.commit(now_ns=NOON_NS)
    [ref] = iter_segments(root)
    return ref.path


def _records(path: Path, **kw: int) -> tuple[list[Rec], list[str]]:
    with open_any(path) as r:
        got = [(x.offset, x.ts_ns, x.kind, x.payload) for x in r.records(**kw)]
        return got, [str(d) for d in r.damage]


@pytest.fixture
def seg(root: Path) -> tuple[Path, list[Rec], list[tuple[int, int, int]]]:
    path = _write(root)
    with SegmentReader.open(path) as r:
        batches = [(b.offset, b.length, b.count) for b in r.batches()]
    recs, damage = _records(path)
    assert not damage and verify_file(path).problems == ()
    return path, recs, batches


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _flip(path: Path, offset: int, mask: int = 0x01) -> None:
    raw = path.read_bytes()
    _patch(path, offset, bytes([raw[offset] ^ mask]))


def _subset(got: list[Rec], orig: list[Rec]) -> None:
    assert set(got) <= set(orig)  # never a record that was not there, at that offset


@pytest.mark.parametrize("where", ["payload", "batch_magic", "batch_length", "batch_count"])
def test_one_damaged_batch_costs_that_batch_only(seg: tuple[Path, list[Rec], list[tuple[
        int, int, int]]], where: str) -> None:
    path, orig, batches = seg
    off, length, count = batches[len(batches) // 2]
    at = {"payload": off + length - 12, "batch_magic": off + 1, "batch_length": off + 9,
          "batch_count": off + 12}[where]
    _flip(path, at, 0x40)
    got, damage = _records(path)
    _subset(got, orig)
    assert len(got) == len(orig) - count
    assert len(damage) == 1 and f"{path}@{off}:" in damage[0]
    report = verify_file(path)
    assert report.problems and report.problems[0].offset == off
    assert f"{length} bytes skipped" in str(report.problems[0])


def test_a_batch_copied_over_another_of_equal_length_is_caught(root: Path) -> None:
    path = _write(root, n=200, per_commit=10)  # equal-sized batches
    with SegmentReader.open(path) as r:
        bs = [(b.offset, b.length, b.count) for b in r.batches()]
    orig, _ = _records(path)
    a, b = next((x, y) for x in bs for y in bs if x != y and x[1] == y[1])
    raw = path.read_bytes()
    _patch(path, b[0], raw[a[0]:a[0] + a[1]])  # every byte of it a valid v1-style batch
    got, damage = _records(path)
    _subset(got, orig)  # the copy is not read as the batch that belongs there
    assert len(got) == len(orig) - b[2] and damage
    assert verify_file(path).problems


def test_damaged_segment_header_reads_with_the_path_names(seg: tuple[Path, list[Rec], list[
        tuple[int, int, int]]]) -> None:
    path, orig, _ = seg
    _flip(path, 70)  # inside the product name: the static CRC fails
    with pytest.raises(CorruptSegment):
        decode_header(path.read_bytes()[:HEADER_SIZE])
    got, damage = _records(path)
    assert got == orig and "segment header damaged" in damage[0] and f"{path}@0" in damage[0]
    assert verify_file(path).problems


def test_damaged_hints_are_never_trusted(seg: tuple[Path, list[Rec], list[tuple[int, int,
                                                                               int]]]) -> None:
    path, orig, _ = seg
    # last_ts_ns claims the file ends an hour early: `cat --from` must not skip it
    last = decode_header(path.read_bytes()[:HEADER_SIZE]).last_ts_ns
    _patch(path, 40, struct.pack("<q", last - 3600 * 10**9))
    h = decode_header(path.read_bytes()[:HEADER_SIZE])
    assert not h.hints_ok
    got, damage = _records(path, from_ns=NOON_NS + 300 * 1000)
    assert got == [r for r in orig if r[1] >= NOON_NS + 300 * 1000] and damage
    assert any("checksum" in str(p) for p in verify_file(path).problems)


def test_commit_point_damage_reads_the_whole_sealed_file(seg: tuple[Path, list[Rec], list[
        tuple[int, int, int]]]) -> None:
    path, orig, _ = seg
    _flip(path, OFF_COMMITTED_LEN + 1, 0x10)  # a smaller commit point
    got, damage = _records(path)
    assert got == orig and damage
    assert verify_file(path).problems


def test_damaged_time_index_falls_back_to_scanning(root: Path) -> None:
    path = _write(root, n=3000, per_commit=50)
    orig, _ = _records(path)
    h = decode_header(path.read_bytes()[:HEADER_SIZE])
    assert len(h.index) >= 2 and h.index_ok
    # an entry pointing past records it claims are older: a naive seek would drop them
    _patch(path, INDEX_OFFSET + 16 * 1 + 8, struct.pack("<q", 1 << 62))
    t = orig[len(orig) // 2][1]
    got, _ = _records(path, from_ns=t)
    assert got == [r for r in orig if r[1] >= t]
    problems = [str(p) for p in verify_file(path).problems]
    assert any("time index" in p for p in problems), problems


def test_truncated_below_the_commit_point_keeps_every_intact_batch(seg: tuple[
        Path, list[Rec], list[tuple[int, int, int]]]) -> None:
    path, orig, batches = seg
    cut = batches[len(batches) // 2][0] + 10
    os.truncate(path, cut)
    got, damage = _records(path)
    assert got == [r for r in orig if r[0] < batches[len(batches) // 2][0]]
    assert any("shorter than its commit point" in d for d in damage)


@pytest.mark.parametrize("content", [b"", os.urandom(10_000), b"\0" * 9000])
def test_empty_random_or_zero_files_are_clear_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "BTC-USD" / "level2" / "2026-11-24.0000.seg"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises((ForeignFile, CorruptSegment)):
        SegmentReader.open(path)
    assert verify_file(path).problems
    with pytest.raises((ForeignFile, CorruptSegment)):
        recover_buffer(content)


def test_scribbled_zero_range_in_the_middle_costs_the_batches_it_covers(seg: tuple[
        Path, list[Rec], list[tuple[int, int, int]]]) -> None:
    path, orig, batches = seg
    a, b = batches[3], batches[5]
    _patch(path, a[0], bytes(b[0] + b[1] - a[0]))  # batches 3, 4 and 5 zeroed
    got, damage = _records(path)
    assert len(got) == len(orig) - a[2] - batches[4][2] - b[2]
    assert len(damage) == 1 and f"{b[0] + b[1] - a[0]} bytes skipped" in damage[0]


def test_v1_fixtures_are_read_by_every_tool(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES, root)
    for ref in iter_segments(root):
        with open_any(ref.path) as r:
            recs = list(r.records())
            assert r.header.version == 1 and len(recs) == 60 and not r.damage
            gaps = [x for x in recs if x.kind == RecordKind.GAP]
            assert len(gaps) == 1
            later = list(r.records(from_ns=recs[35].ts_ns))
            assert later == recs[35:]
        report = verify_file(ref.path)
        assert report.problems == () and report.records == 60


def test_v1_unchecked_index_is_not_trusted_and_verify_catches_it(tmp_path: Path) -> None:
    path = tmp_path / "BTC-USD" / "ticker" / "2026-01-05.0000.seg"
    path.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURES / "BTC-USD/ticker/2026-01-05.0000.seg", path)
    orig, _ = _records(path)
    _patch(path, INDEX_OFFSET + 16 * 2 + 8, struct.pack("<q", 1 << 62))
    assert _records(path, from_ns=orig[25][1])[0] == orig[25:]
    assert any("time index" in str(p) for p in verify_file(path).problems)


def test_stream_names_start_with_a_letter_or_digit() -> None:
    for bad in ("-x", "-", ".hidden", "--help", "a..b"):
        with pytest.raises(InvalidStreamName):
            validate_name(bad, "product")
    for good in ("BTC-USD", "1INCH-USD", "_multi", "_conn3", "level2"):
        assert validate_name(good, "product") == good


def test_engine_writes_format_v2(root: Path) -> None:
    path = _write(root, n=30)
    h = decode_header(path.read_bytes()[:HEADER_SIZE])
    assert h.version == 2 and h.hints_ok and h.index_ok and h.sealed
    assert path.read_bytes()[HEADER_SIZE:HEADER_SIZE + 4] == b"CBB2"
    assert dt.date(2026, 11, 24) == h.day


def test_engine_seals_an_unsealed_v1_segment_and_continues_in_v2(tmp_path: Path) -> None:
    root = tmp_path / "root"
    src = FIXTURES / "BTC-USD/ticker/2026-01-05.0000.seg"
    path = root / "BTC-USD/ticker/2026-01-05.0000.seg"
    path.parent.mkdir(parents=True)
    raw = bytearray(src.read_bytes())
    raw[12:16] = bytes(4)  # as a v1 daemon left it after a crash: not sealed
    path.write_bytes(bytes(raw))
    day_ns = int(dt.datetime(2026, 1, 5, 18, tzinfo=dt.UTC).timestamp()) * 10**9
    with Engine(EngineConfig(root=root, backend="pwrite")) as eng:
        eng.append(eng.stream("BTC-USD", "ticker"), day_ns, b'{"late":1}')
        eng.commit(now_ns=day_ns)
    old = decode_header(path.read_bytes()[:HEADER_SIZE])
    assert old.version == 1 and old.sealed and old.record_count == 60
    assert verify_file(path).problems == ()
    new = path.with_name("2026-01-05.0001.seg")
    assert decode_header(new.read_bytes()[:HEADER_SIZE]).version == 2
    with SegmentReader.open(new) as r:
        records = list(r.records())
    # the unsealed segment is a crash of the previous run: a RESTART marker says what may be
    # missing (issue 10), then the record written now
    assert [x.kind for x in records] == [RecordKind.RESTART, RecordKind.DATA]
    assert orjson.loads(records[0].payload)["reason"] == "unclean_shutdown"
    assert records[1].payload == b'{"late":1}'


def test_live_file_commit_point_damage_is_told_from_a_crash_between_the_two_stores(
        seg: tuple[Path, list[Rec], list[tuple[int, int, int]]]) -> None:
    path, orig, batches = seg
    _patch(path, 12, bytes(4))  # live (not sealed)
    with open(path, "ab") as f:
        f.write(bytes(1 << 16))  # with a preallocated tail of zeros
    _flip(path, OFF_COMMITTED_LEN + 2, 0x01)  # the commit point damaged
    got, damage = _records(path)
    assert got == orig and any("fails its checksum" in d for d in damage)
    # a writer that died between the hints and the commit point: the stored point stands
    last = batches[-1]
    _patch(path, OFF_COMMITTED_LEN, struct.pack("<Q", last[0]))
    got, damage = _records(path)
    assert got == orig[:len(orig) - last[2]] and damage == []
