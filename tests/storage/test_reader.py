"""Reading segments: time ranges through the sparse index, tail-follow, and clear errors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from segment_fixtures import NOON_NS

from storage import (
    CorruptSegment,
    Engine,
    EngineConfig,
    ForeignFile,
    SegmentReader,
    iter_segments,
)
from storage.format import HEADER_SIZE, OFF_INDEX_COUNT


def _fill(root: Path, n_commits: int, per_commit: int, ts_step: int = 1000) -> list[int]:
    cfg = EngineConfig(root=root, backend="mmap", segment_max_bytes=1 << 20,
                       seal_stale_on_open=False)
    ts_all: list[int] = []
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        for c in range(n_commits):
            ts = [NOON_NS + (c * per_commit + i) * ts_step for i in range(per_commit)]
            eng.extend(s, ts, [os.urandom(100) for _ in ts])
            assert not eng.commit(now_ns=NOON_NS).errors
            ts_all += ts
    return ts_all


def test_records_time_range_uses_the_index(root: Path) -> None:
    ts_all = _fill(root, n_commits=200, per_commit=40)
    [ref] = iter_segments(root)
    with SegmentReader.open(ref.path) as r:
        assert len(r.header.index) > 10  # 1 MiB cap -> an entry every ~5 KiB
        for lo_i, hi_i in [(0, 10), (3999, 4100), (7990, 8000), (5000, 5000)]:
            lo, hi = ts_all[lo_i], ts_all[hi_i] if hi_i < len(ts_all) else None
            got = [x.ts_ns for x in r.records(from_ns=lo, to_ns=hi)]
            assert got == ts_all[lo_i:hi_i]
        assert [x.ts_ns for x in r.records(from_ns=ts_all[-1] + 1)] == []
        assert len(list(r.records(to_ns=ts_all[0]))) == 0
        # the index really skips: starting late, fewer batches are visited
        start = r._start_for(ts_all[7000], r.header.committed_len)
        assert start > HEADER_SIZE
        assert start <= next(b.offset for b in r.batches() if b.last_ts_ns >= ts_all[7000])


def test_damaged_index_is_only_a_hint(root: Path) -> None:
    ts_all = _fill(root, n_commits=100, per_commit=40)
    [ref] = iter_segments(root)
    with open(ref.path, "r+b") as f:  # sealed file: scribble over the index entries
        f.seek(OFF_INDEX_COUNT + 60)
        f.write(os.urandom(512))
    with SegmentReader.open(ref.path) as r:
        got = [x.ts_ns for x in r.records(from_ns=ts_all[2000])]
    assert got == ts_all[2000:]


def test_out_of_order_timestamps_are_still_found(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", segment_max_bytes=1 << 20,
                       seal_stale_on_open=False)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        for c in range(100):
            ts = [NOON_NS + c * 1000 + i for i in range(40)]
            if c == 60:
                ts[5] = NOON_NS + 10  # a clock step back: an early record late in the file
            eng.extend(s, ts, [os.urandom(100) for _ in ts])
            eng.commit(now_ns=NOON_NS)
    [ref] = iter_segments(root)
    with SegmentReader.open(ref.path) as r:
        everything = [x.ts_ns for x in r.records()]
        window = [x.ts_ns for x in r.records(from_ns=NOON_NS + 5, to_ns=NOON_NS + 20)]
    assert window == [t for t in everything if NOON_NS + 5 <= t < NOON_NS + 20]
    assert NOON_NS + 10 in window


def test_follow_yields_commits_as_they_happen_and_ends_at_seal(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", first_extent_bytes=8192,
                       seal_stale_on_open=False)
    eng = Engine(cfg)
    s = eng.stream("BTC-USD", "level2")
    eng.append(s, NOON_NS, b"first")
    eng.commit(now_ns=NOON_NS)
    [ref] = iter_segments(root)
    reader = SegmentReader.open(ref.path)
    seen: list[bytes] = []
    got_first = threading.Event()

    def consume() -> None:
        for rec in reader.follow(poll_s=0.01):
            seen.append(rec.payload)
            got_first.set()

    t = threading.Thread(target=consume)
    t.start()
    assert got_first.wait(10)
    big = [os.urandom(3000) for _ in range(20)]  # grows the file past the reader's mapping
    eng.extend(s, [NOON_NS + 1 + i for i in range(20)], big)
    eng.commit(now_ns=NOON_NS)
    eng.append(s, NOON_NS + 50, b"uncommitted-until-close")
    eng.close()
    t.join(10)
    assert not t.is_alive()
    assert seen == [b"first", *big, b"uncommitted-until-close"]
    reader.close()


def test_open_errors_are_clear(tmp_path: Path) -> None:
    empty = tmp_path / "empty.seg"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.seg"
    foreign.write_bytes(b"PK\x03\x04" + bytes(5000))
    for p in (empty, foreign):
        with pytest.raises(ForeignFile, match=p.name):
            SegmentReader.open(p)


def test_corrupt_committed_batch_costs_that_batch_only(root: Path) -> None:
    _fill(root, n_commits=3, per_commit=10)
    [ref] = iter_segments(root)
    with SegmentReader.open(ref.path) as r:
        second = list(r.batches())[1]
    with open(ref.path, "r+b") as f:
        f.seek(second.offset + 100)
        f.write(b"\xff\xff")
    with SegmentReader.open(ref.path) as r:
        got = list(r.records())
        assert len(got) == 20  # the batches before and after the damaged one
        assert [d.offset for d in r.damage] == [second.offset]
        assert r.damage[0].length == second.length and r.damage[0].records == 10
        assert str(ref.path) in str(r.damage[0]) and f"@{second.offset}" in str(r.damage[0])


def test_truncated_file_keeps_its_valid_batches(root: Path) -> None:
    _fill(root, n_commits=3, per_commit=10)
    [ref] = iter_segments(root)
    size = ref.path.stat().st_size
    with open(ref.path, "r+b") as f:
        f.truncate(size - 10)
    with SegmentReader.open(ref.path) as r:
        assert len(list(r.records())) == 20
        assert any("shorter" in d.reason for d in r.damage)
    with open(ref.path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptSegment):
        SegmentReader.open(ref.path)
