"""The engine end to end on real files: buffer, commit, read back, day routing, sealing,
rotation, commit policy and input validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from segment_fixtures import DAY_NS, NOON_NS, read_all

from storage import (
    Engine,
    EngineConfig,
    InvalidStreamName,
    RecordKind,
    SegmentReader,
    iter_segments,
)
from storage.format import HEADER_SIZE


def test_extend_append_commit_close_round_trip(config: EngineConfig) -> None:
    eng = Engine(config)
    assert eng.backend_name == "mmap"
    s = eng.stream("BTC-USD", "level2")
    assert eng.stream("BTC-USD", "level2") is s
    eng.extend(s, [NOON_NS + i for i in range(100)], [b"m%d" % i for i in range(100)])
    eng.append(s, NOON_NS + 100, b'{"gap": 1}', RecordKind.GAP)
    assert eng.pending_records == 101
    res = eng.commit(now_ns=NOON_NS + 200)
    assert (res.records, res.errors) == (101, [])
    assert eng.pending_records == 0
    # committed records are readable while the segment is live
    live = read_all(config.root)
    assert live[-1] == (NOON_NS + 100, RecordKind.GAP, b'{"gap": 1}')
    assert live[:100] == [(NOON_NS + i, 0, b"m%d" % i) for i in range(100)]
    eng.extend(s, [NOON_NS + 300], [b"last"])
    closing = eng.close()
    assert closing.records == 1 and len(closing.sealed) == 1
    [ref] = iter_segments(config.root)
    with SegmentReader.open(ref.path) as r:
        h = r.header
        assert h.sealed and h.record_count == 102
        assert (h.first_ts_ns, h.last_ts_ns) == (NOON_NS, NOON_NS + 300)
        assert ref.path.stat().st_size == h.committed_len  # trimmed when sealed
    assert read_all(config.root)[-1] == (NOON_NS + 300, 0, b"last")


def test_uncommitted_records_are_not_visible(config: EngineConfig) -> None:
    eng = Engine(config)
    s = eng.stream("BTC-USD", "level2")
    eng.extend(s, [NOON_NS], [b"a"])
    eng.commit(now_ns=NOON_NS)
    eng.extend(s, [NOON_NS + 1], [b"b"])
    assert read_all(config.root) == [(NOON_NS, 0, b"a")]
    eng.close()


def test_records_go_to_their_own_utc_day_and_past_days_are_sealed(config: EngineConfig) -> None:
    eng = Engine(config)
    s = eng.stream("BTC-USD", "level2")
    before, after = NOON_NS + DAY_NS // 2 - 5, NOON_NS + DAY_NS // 2 + 5  # around midnight
    eng.extend(s, [before, after, before + 1], [b"d1", b"d2", b"d1b"])
    res = eng.commit(now_ns=after)
    assert res.records == 3 and not res.errors
    refs = list(iter_segments(config.root))
    assert [str(r.day) for r in refs] == ["2026-11-24", "2026-11-25"]
    assert res.sealed == [refs[0].path]  # the earlier day is sealed at this commit
    with SegmentReader.open(refs[0].path) as r:
        assert r.header.sealed
        assert [x.payload for x in r.records()] == [b"d1", b"d1b"]
    with SegmentReader.open(refs[1].path) as r:
        assert not r.header.sealed
        assert [x.payload for x in r.records()] == [b"d2"]
    # a late record for the sealed day opens the next segment number of that day
    eng.append(s, before + 2, b"late")
    eng.commit(now_ns=after + 1)
    refs = list(iter_segments(config.root, day=refs[0].day))
    assert [r.number for r in refs] == [0, 1]
    with SegmentReader.open(refs[1].path) as r:
        assert r.header.sealed and [x.payload for x in r.records()] == [b"late"]
    eng.close()


def test_day_roll_seals_idle_streams_too(config: EngineConfig) -> None:
    eng = Engine(config)
    a, b = eng.stream("BTC-USD", "level2"), eng.stream("ETH-USD", "level2")
    eng.append(a, NOON_NS, b"a")
    eng.append(b, NOON_NS, b"b")
    eng.commit(now_ns=NOON_NS)
    eng.append(a, NOON_NS + DAY_NS, b"a2")
    res = eng.commit(now_ns=NOON_NS + DAY_NS)
    assert sorted(p.parts[-3] for p in res.sealed) == ["BTC-USD", "ETH-USD"]
    eng.close()


def test_rotation_at_size_cap_seals_full_segments(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", segment_max_bytes=64 << 10,
                       max_batch_bytes=8 << 10, seal_stale_on_open=False)
    eng = Engine(cfg)
    s = eng.stream("BTC-USD", "level2")
    payloads = [os.urandom(200) + b"%d" % i for i in range(1000)]
    for i in range(0, 1000, 100):
        eng.extend(s, [NOON_NS + j for j in range(i, i + 100)], payloads[i : i + 100])
        res = eng.commit(now_ns=NOON_NS)
        assert not res.errors
    eng.close()
    refs = list(iter_segments(root))
    assert len(refs) >= 3
    for ref in refs:
        with SegmentReader.open(ref.path) as r:
            assert r.header.sealed
            assert r.header.committed_len <= 64 << 10
            assert ref.path.stat().st_size == r.header.committed_len
    assert [p for _, _, p in read_all(root)] == payloads


def test_oversized_record_gets_its_own_batch_and_segment(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", segment_max_bytes=16 << 10,
                       max_batch_bytes=4096, seal_stale_on_open=False)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        big = os.urandom(40_000)
        eng.extend(s, [NOON_NS, NOON_NS + 1, NOON_NS + 2], [b"small", big, b"after"])
        assert not eng.commit(now_ns=NOON_NS).errors
    assert [p for _, _, p in read_all(root)] == [b"small", big, b"after"]


def test_commit_due_policy(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", commit_records=10, commit_interval_s=5.0,
                       seal_stale_on_open=False)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        t0 = 1000.0
        assert not eng.commit_due(t0 + 100)  # nothing pending: never due
        eng.extend(s, [NOON_NS] * 9, [b"x"] * 9)
        eng._last_commit = t0
        assert not eng.commit_due(t0 + 1)
        assert eng.commit_due(t0 + 5.0)  # interval elapsed
        eng.append(s, NOON_NS, b"x")
        assert eng.commit_due(t0 + 1)  # count reached
        eng.commit(now_ns=NOON_NS)
        assert not eng.commit_due()


def test_bad_input_raises_and_buffers_nothing(config: EngineConfig) -> None:
    with Engine(config) as eng:
        s = eng.stream("BTC-USD", "level2")
        with pytest.raises(ValueError):
            eng.extend(s, [1, 2], [b"a"])
        with pytest.raises(TypeError):
            eng.extend(s, [1, 2], [b"a", "b"])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            eng.extend(s, [1, 1 << 64], [b"a", b"b"])
        with pytest.raises(TypeError):
            eng.extend(s, [1, "2"], [b"a", b"b"])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            eng.append(s, 1, bytearray(b"x"))  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            eng.append(s, 1, b"x", 99)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            eng.append(s, 1 << 63, b"x")
        assert eng.pending_records == 0 and s.pending == 0
        assert eng.commit(now_ns=NOON_NS).records == 0


@pytest.mark.parametrize("product", ["../escape", "/abs", "a/b", "BTC\0USD", "x" * 65,
                                     "BTC-ÜSD", "..", ".hidden"])
def test_hostile_product_ids_write_nothing_outside_root(tmp_path: Path, product: str) -> None:
    root = tmp_path / "inner" / "data"
    with Engine(EngineConfig(root=root, backend="mmap")) as eng:
        with pytest.raises(InvalidStreamName):
            eng.stream(product, "level2")
        with pytest.raises(InvalidStreamName):
            eng.stream("BTC-USD", product)
        ok = eng.stream("BTC-USD", "level2")
        eng.append(ok, NOON_NS, b"fine")
    outside = [p for p in tmp_path.rglob("*") if root not in p.parents and p != root]
    assert sorted(str(p.relative_to(tmp_path)) for p in outside) == ["inner"]
    assert [r.product for r in iter_segments(root)] == ["BTC-USD"]


def test_one_engine_per_root(config: EngineConfig) -> None:
    with Engine(config), pytest.raises(RuntimeError, match="in use"):
        Engine(config)
    Engine(config).close()  # released on close


def test_worker_engines_share_a_root_under_the_parents_lock(config: EngineConfig) -> None:
    """A daemon with worker processes holds ``.lock``; each worker engine its ``.lock.<w>``:
    two workers run side by side, a plain engine (or a second daemon) is refused, and so is a
    second engine for the same worker share."""
    import dataclasses

    from storage.rootlock import RootInUse, RootLock

    w0 = dataclasses.replace(config, lock_name=".lock.w0")
    w1 = dataclasses.replace(config, lock_name=".lock.w1")
    with RootLock(config.root), Engine(w0), Engine(w1):
        with pytest.raises(RootInUse, match="in use"):
            Engine(config)
        with pytest.raises(RootInUse, match=r"\.lock\.w0"):
            Engine(w0)
    for bad in ("../x", ".lock/x", "lock", ".lock.", ".lock.a/b"):
        with pytest.raises(ValueError, match="lock name"):
            dataclasses.replace(config, lock_name=bad)


def test_commit_after_close_is_an_error(config: EngineConfig) -> None:
    eng = Engine(config)
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.commit()


def test_empty_segment_header_only(config: EngineConfig) -> None:
    """A segment's live file starts with a small extent and its header says: nothing yet."""
    eng = Engine(config)
    s = eng.stream("BTC-USD", "level2")
    eng.append(s, NOON_NS, b"x")
    eng.commit(now_ns=NOON_NS)
    [ref] = iter_segments(config.root)
    assert ref.path.stat().st_size == config.first_extent_bytes
    with SegmentReader.open(ref.path) as r:
        assert r.header.committed_len > HEADER_SIZE
    eng.close()


def test_day_roll_sealing_is_spread_over_commits(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", seals_per_commit=2, seal_budget_s=60,
                       seal_stale_on_open=False)
    eng = Engine(cfg)
    streams = [eng.stream(f"P{i}-USD", "level2") for i in range(5)]
    for s in streams:
        eng.append(s, NOON_NS, b"day1")
    eng.commit(now_ns=NOON_NS)
    res = eng.commit(now_ns=NOON_NS + DAY_NS)  # midnight passed: 5 to seal, 2 per commit
    assert len(res.sealed) == 2 and eng.seals_pending == 3
    assert eng.commit_due(eng._last_commit + cfg.commit_interval_s)  # seals keep it due
    eng.append(streams[4], NOON_NS + 1, b"late day1")  # its day-1 segment is still queued
    res = eng.commit(now_ns=NOON_NS + DAY_NS)
    assert len(res.sealed) == 2 and eng.seals_pending == 1
    res = eng.commit(now_ns=NOON_NS + DAY_NS)
    assert len(res.sealed) == 1 and eng.seals_pending == 0
    eng.close()
    refs = list(iter_segments(root))
    assert len(refs) == 5  # the late record joined its queued segment, no new number
    for ref in refs:
        with SegmentReader.open(ref.path) as r:
            assert r.header.sealed
    assert [p for _, _, p in read_all(root, "P4-USD")] == [b"day1", b"late day1"]


def test_seal_time_budget_still_seals_one_per_commit(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", seal_budget_s=0.0, seal_stale_on_open=False)
    with Engine(cfg) as eng:
        for i in range(3):
            eng.append(eng.stream(f"P{i}-USD", "level2"), NOON_NS, b"x")
        eng.commit(now_ns=NOON_NS)
        sealed = [len(eng.commit(now_ns=NOON_NS + DAY_NS).sealed) for _ in range(4)]
        assert sealed == [1, 1, 1, 0]


def test_next_day_segments_are_created_before_midnight_and_used_after(root: Path) -> None:
    """In the last minutes of a day the active streams get the next day's segment in advance
    (off the first commit after midnight); records after midnight land there, none is lost,
    and one never written is removed rather than left as an empty sealed file."""
    cfg = EngineConfig(root=root, backend="mmap", precreate_s=600, io_threads=2,
                       seal_stale_on_open=False)
    midnight = (NOON_NS // DAY_NS + 1) * DAY_NS
    eng = Engine(cfg)
    a, b, c = (eng.stream(p, "level2") for p in ("A-USD", "B-USD", "C-USD"))
    eng.append(a, midnight - 3600 * 10**9, b"a1")
    eng.append(b, midnight - 3600 * 10**9, b"b1")
    eng.commit(now_ns=midnight - 3600 * 10**9)  # an hour before: nothing made in advance
    assert {r.day.isoformat() for r in iter_segments(root)} == {"2026-11-24"}
    eng.append(a, midnight - 300 * 10**9, b"a2")
    eng.commit(now_ns=midnight - 300 * 10**9)  # five minutes before midnight
    made = sorted((r.product, r.day.isoformat(), r.number) for r in iter_segments(root))
    assert made == [("A-USD", "2026-11-24", 0), ("A-USD", "2026-11-25", 0),
                    ("B-USD", "2026-11-24", 0), ("B-USD", "2026-11-25", 0)]
    eng.append(a, midnight + 10**9, b"a3")  # after midnight: lands in the made segment
    eng.append(c, midnight + 10**9, b"c1")  # a stream without one gets it the usual way
    res = eng.commit(now_ns=midnight + 2 * 10**9)
    assert not res.errors and res.records == 2
    assert sorted(p.parts[-3] for p in res.sealed) == ["A-USD", "B-USD"]  # day one
    eng.close()
    refs = list(iter_segments(root))
    assert sorted((r.product, r.day.isoformat(), r.number) for r in refs) == [
        ("A-USD", "2026-11-24", 0), ("A-USD", "2026-11-25", 0), ("B-USD", "2026-11-24", 0),
        ("C-USD", "2026-11-25", 0)]  # B's unused next-day segment was removed
    for ref in refs:
        with SegmentReader.open(ref.path) as r:
            assert r.header.sealed and ref.path.stat().st_size == r.header.committed_len
    assert [p for _, _, p in read_all(root, "A-USD")] == [b"a1", b"a2", b"a3"]
    assert [p for _, _, p in read_all(root, "B-USD")] == [b"b1"]
    assert [p for _, _, p in read_all(root, "C-USD")] == [b"c1"]


def test_close_seals_many_streams_in_parallel_and_keeps_every_record(root: Path) -> None:
    cfg = EngineConfig(root=root, backend="mmap", io_threads=4, seal_stale_on_open=False)
    eng = Engine(cfg)
    streams = [eng.stream(f"P{i:02d}-USD", ch) for i in range(20) for ch in ("level2", "ticker")]
    for k, s in enumerate(streams):
        eng.extend(s, [NOON_NS + j for j in range(k + 1)],
                   [b"%d-%d" % (k, j) for j in range(k + 1)])
    eng.commit(now_ns=NOON_NS)
    for k, s in enumerate(streams):
        eng.append(s, NOON_NS + 100, b"last %d" % k)  # pending: committed by close
    res = eng.close()
    assert not res.errors and res.records == 40 and len(res.sealed) == 40
    refs = list(iter_segments(root))
    assert len(refs) == 40
    for ref in refs:
        with SegmentReader.open(ref.path) as r:
            assert r.header.sealed and ref.path.stat().st_size == r.header.committed_len
    for k, s in enumerate(streams):
        got = [p for _, _, p in read_all(root, s.product) if p.startswith(b"%d-" % k)
               or p == b"last %d" % k]
        assert got == [b"%d-%d" % (k, j) for j in range(k + 1)] + [b"last %d" % k]
