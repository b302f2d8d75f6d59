"""The engine's fast paths write exactly what its general path writes.

``Engine._stage_fast`` (one batch per stream and commit, ``Segment.stage_columns`` framing it
through ``storage.fastpath``), ``Engine.extend_trusted`` (the sink's call, without the per-payload
type check) and the mmap backend's zero prefill of pages ahead of the write position
(``Segment._populate``) are optimisations only: the same history of extends, markers, commits,
crashes and restarts must leave byte-identical files — live, preallocated segments included —
whether it runs through them, through the general path alone, or through the pwrite backend.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from segment_fixtures import DAY_NS, NOON_NS, read_all

from storage import Engine, EngineConfig, iter_segments
from storage.backends.base import WriteOp
from storage.backends.mmap_backend import MmapBackend
from storage.records import RecordKind
from storage.segment import Segment
from storage.staging import CommitPlan

STREAMS = [("BTC-USD", "level2"), ("ETH-EUR", "ticker")]

_EXTEND = st.tuples(st.just("extend"), st.integers(0, 1), st.integers(0, 1),
                   # payload sizes: some batches exceed max_batch_bytes, some rotate
                   st.lists(st.sampled_from([0, 1, 7, 140, 600, 3000]), min_size=1,
                            max_size=30))
_COMMIT = st.tuples(st.just("commit"), st.integers(0, 1))
OPS = st.lists(
    st.one_of(
        _EXTEND, _COMMIT, _EXTEND, _COMMIT,  # mostly the steady state, which the fast path takes
        st.tuples(st.just("marker"), st.integers(0, 1), st.integers(0, 1), st.integers(1, 6)),
        st.tuples(st.just("crash")),
        st.tuples(st.just("restart")),
    ),
    min_size=1,
    max_size=30,
)
#: the daemon's steady state: a stream's second and later commits of a day, several records
STEADY = [("extend", 0, 0, [140, 600]), ("commit", 0), ("extend", 0, 0, [140, 7, 7]),
          ("marker", 0, 0, 3), ("commit", 0), ("extend", 0, 0, [1]), ("extend", 1, 0, [3000]),
          ("commit", 0), ("crash",), ("extend", 0, 0, [600, 600]), ("commit", 0),
          ("extend", 0, 0, [600, 0]), ("commit", 0)]

#: (backend, fast path on, extend call): the fast configuration the daemon runs, the general
#: path alone with the validating extend, and the pwrite backend (no prefill, no mapping writes)
VARIANTS = [("mmap", True, "extend_trusted"), ("mmap", False, "extend"),
            ("pwrite", True, "extend")]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _crash(eng: Engine) -> None:
    """What kill -9 leaves: files as the page cache has them, nothing sealed."""
    for stream in eng._streams.values():
        for seg in stream.segments.values():
            seg.close()
    for seg in eng._to_seal.values():
        seg.close()
    eng._lock.release()


def _run(root: Path, backend: str, fast: bool, how: str, ops: list[tuple[object, ...]],
         ) -> list[dict[str, bytes]]:
    cfg = EngineConfig(root=root, backend=backend, segment_max_bytes=24 << 10,
                       first_extent_bytes=8192, max_extent_bytes=8192, max_batch_bytes=4096,
                       seal_stale_on_open=False, precreate_s=0,
                       mark_unclean=False)  # RESTART payloads name the wall clock

    def start() -> Engine:
        eng = Engine(cfg)
        eng._fast_ok = fast
        return eng

    eng = start()
    snaps: list[dict[str, bytes]] = []
    seq = 0
    for op in ops:
        if op[0] in ("extend", "marker"):
            s, day = op[1], op[2]
            assert isinstance(s, int) and isinstance(day, int)
            handle = eng.stream(*STREAMS[s])
            base = NOON_NS + day * DAY_NS + seq
            if op[0] == "extend":
                sizes = op[3]
                assert isinstance(sizes, list)
                ts = [base + (i * 7919) % 1000 for i in range(len(sizes))]  # not sorted
                pl = [bytes([(seq + i) % 251]) * n for i, n in enumerate(sizes)]
                getattr(eng, how)(handle, ts, pl)
                seq += len(sizes)
            else:
                kind = op[3]
                assert isinstance(kind, int)
                eng.append(handle, base, b'{"m":%d}' % seq, RecordKind(kind))
                seq += 1
        elif op[0] == "commit":
            day = op[1]
            assert isinstance(day, int)
            assert not eng.commit(now_ns=NOON_NS + day * DAY_NS).errors
            snaps.append(_snapshot(root))
        elif op[0] == "crash":
            _crash(eng)
            eng = start()
        else:
            eng.commit(now_ns=NOON_NS)  # close commits on the wall clock: not here
            eng.close()
            eng = start()
    eng.commit(now_ns=NOON_NS + DAY_NS)
    assert not eng.close().errors
    snaps.append(_snapshot(root))
    return snaps


@settings(max_examples=40, deadline=None)
@given(OPS)
@example(STEADY)
def test_fast_paths_write_the_same_bytes_as_the_general_path(ops: list[tuple[object, ...]],
                                                              ) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_run(Path(tmp) / f"{b}-{fast}-{how}", b, fast, how, ops)
                for b, fast, how in VARIANTS]
    for variant, snaps in zip(VARIANTS[1:], runs[1:], strict=True):
        assert len(snaps) == len(runs[0])
        for i, (got, want) in enumerate(zip(snaps, runs[0], strict=True)):
            assert got.keys() == want.keys(), f"{variant}: other files after commit {i}"
            for name in want:
                assert got[name] == want[name], f"{variant}: {name} differs after commit {i}"


def _continue_after_crash(root: Path, backend: str) -> dict[str, bytes]:
    """Commit two records, crash, continue the segment with three more; the files at the
    end (before close) and which path each later commit took."""
    cfg = EngineConfig(root=root, backend=backend, seal_stale_on_open=False, precreate_s=0,
                       mark_unclean=False)  # the files compared must not name the wall clock
    eng = Engine(cfg)
    s = eng.stream("BTC-USD", "level2")
    eng.extend_trusted(s, [NOON_NS, NOON_NS + 1], [b"a" * 1000, b"b" * 333])
    eng.commit(now_ns=NOON_NS)
    assert next(iter(s.segments.values())).end % mmap.PAGESIZE != 0  # the case under test
    _crash(eng)
    eng = Engine(cfg)
    s = eng.stream("BTC-USD", "level2")
    sizes: list[int] = []
    for k in range(3):  # the first write of the day takes the general path, then the fast one
        eng.extend_trusted(s, [NOON_NS + 10 + k], [b"c" * (5000 + k)])
        sizes.append(eng._stage_fast(s, CommitPlan()))
        for seg in s.segments.values():
            seg.discard()  # only probed: the commit below stages it for real
        eng.commit(now_ns=NOON_NS)
    assert sizes[0] < 0 and all(size > 0 for size in sizes[1:])
    snap = _snapshot(root)
    want = [(NOON_NS, 0, b"a" * 1000), (NOON_NS + 1, 0, b"b" * 333)]
    want += [(NOON_NS + 10 + k, 0, b"c" * (5000 + k)) for k in range(3)]
    assert read_all(root) == want
    eng.close()
    return snap


def test_fast_path_matches_after_a_crash_mid_page(tmp_path: Path) -> None:
    """A segment continued after a crash ends mid-page: the prefill must start at the next
    page and never zero the committed bytes of the page it shares with them."""
    assert (_continue_after_crash(tmp_path / "mmap", "mmap")
            == _continue_after_crash(tmp_path / "pwrite", "pwrite"))


def test_extend_trusted_buffers_like_extend_and_counts_bytes(tmp_path: Path) -> None:
    cfg = EngineConfig(root=tmp_path, backend="mmap", seal_stale_on_open=False)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        ts, pl = [NOON_NS + 5, NOON_NS + 1], [b"xy", b"abc"]
        assert eng.extend_trusted(s, ts, pl) == 5
        ts.append(0)
        pl.append(b"changed after the call")  # the engine keeps its own list
        assert eng.extend_trusted(s, [NOON_NS + 9], [b""]) == 0
        eng.append(s, NOON_NS + 3, b"{}", RecordKind.NOTE)
        assert eng.extend_trusted(s, [], []) == 0
        assert (s.lo, s.hi, s.pending, eng.pending_bytes) == (NOON_NS + 1, NOON_NS + 9, 4, 7)
        assert eng.commit(now_ns=NOON_NS).records == 4
        assert eng.pending_bytes == 0
    assert read_all(tmp_path) == [(NOON_NS + 5, 0, b"xy"), (NOON_NS + 1, 0, b"abc"),
                                  (NOON_NS + 9, 0, b""), (NOON_NS + 3, int(RecordKind.NOTE),
                                                         b"{}")]


def test_extend_trusted_rejects_bad_columns_and_buffers_nothing(tmp_path: Path) -> None:
    cfg = EngineConfig(root=tmp_path, backend="mmap", seal_stale_on_open=False)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        with pytest.raises(ValueError):
            eng.extend_trusted(s, [1, 2], [b"a"])
        with pytest.raises(ValueError):
            eng.extend_trusted(s, [1, 1 << 63], [b"a", b"b"])
        with pytest.raises(TypeError):
            eng.extend_trusted(s, [1, "2"], [b"a", b"b"])  # type: ignore[list-item]
        assert eng.pending_records == 0 and s.pending == 0 and eng.pending_bytes == 0
        assert eng.commit(now_ns=NOON_NS).records == 0


def test_stream_directory_listing_finds_what_iter_segments_finds(tmp_path: Path) -> None:
    """``_open_day`` lists the stream's directory once instead of ``iter_segments``; same
    segments, and a creation temporary of that day (never committed) is removed."""
    cfg = EngineConfig(root=tmp_path, backend="mmap", seal_stale_on_open=False,
                       segment_max_bytes=16 << 10, first_extent_bytes=8192,
                       max_extent_bytes=8192, precreate_s=0)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        for day in (0, 1):
            for k in range(6):  # rotation: several numbers per day
                eng.extend(s, [NOON_NS + day * DAY_NS + k], [os.urandom(5000)])
                eng.commit(now_ns=NOON_NS + day * DAY_NS)
    chan = tmp_path / "BTC-USD" / "level2"
    day1 = (NOON_NS + DAY_NS) // DAY_NS
    refs = list(iter_segments(tmp_path, "BTC-USD", "level2"))
    assert len({r.day for r in refs}) == 2 and max(r.number for r in refs) >= 2
    first = refs[0].path.name
    (chan / first).rename(chan / (first + ".zst"))  # looks archived (never opened as one)
    (chan / "2026-11-25.0099.seg.tmp").write_bytes(b"torn")
    (chan / "2026-11-24.0098.seg.tmp").write_bytes(b"other day")
    (chan / "notes.txt").write_bytes(b"foreign")
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        for day in (0, 1):
            d = eng._day(day1 - 1 + day)
            want = list(iter_segments(tmp_path, "BTC-USD", "level2", d))
            assert eng._day_files(s, d) == want
    assert not (chan / "2026-11-25.0099.seg.tmp").exists()
    assert not (chan / "2026-11-24.0098.seg.tmp").exists()  # removed by the day-0 listing
    assert (chan / "notes.txt").exists()


def test_mmap_backend_explains_writes_outside_the_mapping(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 8192)
        with mmap.mmap(fd, 8192) as mm:
            backend = MmapBackend()
            backend.write([WriteOp(fd, mm, 8190, b"ab")])
            assert mm[8190:8192] == b"ab"
            with pytest.raises(ValueError, match="beyond mapping"):
                backend.write([WriteOp(fd, mm, 8191, b"ab")])
            with pytest.raises(ValueError, match="needs a mapping"):
                backend.write([WriteOp(fd, None, 0, b"ab")])
    finally:
        os.close(fd)


def test_prefill_stays_inside_the_preallocated_file(tmp_path: Path) -> None:
    """The zero prefill never grows the file nor writes below the staged end."""
    cfg = EngineConfig(root=tmp_path, backend="mmap", seal_stale_on_open=False,
                       first_extent_bytes=16384, max_extent_bytes=16384)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        seg: Segment | None = None
        for k in range(40):
            eng.extend_trusted(s, [NOON_NS + k], [bytes([k + 1]) * 900])
            eng.commit(now_ns=NOON_NS)
            seg = next(iter(s.segments.values()))
            assert seg._populated <= seg.size == os.fstat(seg.fd).st_size
        assert seg is not None
        tail = bytes(seg.mm[seg.end : seg.size])
        assert tail == bytes(len(tail))
    assert read_all(tmp_path) == [(NOON_NS + k, 0, bytes([k + 1]) * 900) for k in range(40)]
