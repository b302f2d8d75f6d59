"""The engine's write-through (``Engine.write_trusted``, storage/through.py) writes what a commit
would have written, only sooner.

Shown here: the compiled ``commit_lists`` (storage/_stage.c) and the pure one write the same
bytes and give the same answers for any lists, room and limits, refusals included; the engine
leaves byte-identical files through write-through and through buffering for the sink's shape of
calls (one call per stream and commit), and the same records for any history of calls, markers,
crashes and restarts; records written through are committed at once (a reader sees them, a
``kill -9`` keeps them) and the next commit counts them; a stream with records pending, a day
without an open segment, a batch that would fill the segment or is due an index entry, and a
backend other than the engine's own mmap all take the usual way.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_fixtures import DAY_NS, NOON_NS, read_all
from test_fast_path import OPS, STEADY, _run

from storage import Engine, EngineConfig, fastpath
from storage.format import HEADER_SIZE
from storage.records import RecordKind

REPO = Path(__file__).resolve().parents[2]
needs_compiled = pytest.mark.skipif(not fastpath.available(),
                                    reason=f"storage._stage not built: {fastpath.PATH}")
PATHS = [False, True] if fastpath.available() else [False]


# -- the kernel: compiled and pure agree ---------------------------------------------------------

_TS = st.integers(NOON_NS - 5, NOON_NS + 5) | st.integers(-(1 << 63), (1 << 63) - 1)
_PAYLOAD = st.binary(max_size=300)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TS, _PAYLOAD), max_size=40),
       st.integers(HEADER_SIZE, HEADER_SIZE + 4000).map(lambda n: n & ~7),  # off
       st.integers(0, 20_000),  # room
       st.integers(0, 20_000),  # cap_end
       st.integers(0, 12_000),  # max_total
       st.integers(0, 3), st.integers(NOON_NS - 9, NOON_NS + 9),
       st.integers(NOON_NS - 9, NOON_NS + 9), st.booleans())
def test_compiled_and_pure_commit_lists_agree(
    records: list[tuple[int, bytes]], off: int, room: int, cap_end: int, max_total: int,
    count: int, first: int, last: int, odd: bool,
) -> None:
    from storage import _stage
    ts = [t for t, _ in records]
    payloads: list[object] = [p for _, p in records]
    if odd and payloads:  # the refusals: a bytearray payload, a float time
        payloads[len(payloads) // 2] = bytearray(b"x")
        ts[0] = float(ts[0])  # type: ignore[call-overload]
    args = (off, room, cap_end, max_total, NOON_NS - 3, NOON_NS + 4, count, first, last,
            ts, payloads)
    size = 28_000
    a, b = mmap.mmap(-1, size), mmap.mmap(-1, size)
    for m in (a, b):
        m[:] = bytes(range(256)) * (size // 256) + bytes(size % 256)
    got = _stage.commit_lists(a, *args)
    want = fastpath.pure_commit_lists(b, *args)
    assert got == want
    assert a[:] == b[:]
    if type(want) is tuple:
        end, n, lo, hi, nbytes = want
        assert end <= min(room, cap_end) and end - off <= max_total
        assert n == count + len(records) and nbytes == sum(len(p) for _, p in records)
        assert lo == min([t for t, _ in records] + ([first] if count else []))
        assert hi == max([t for t, _ in records] + ([last] if count else []))
    elif type(want) is int:
        assert want > room and a[:] == bytes(range(256)) * (size // 256) + bytes(size % 256)


@needs_compiled
def test_commit_lists_refuses_a_mapping_too_small() -> None:
    from storage import _stage
    with pytest.raises(ValueError):
        _stage.commit_lists(mmap.mmap(-1, 4096), HEADER_SIZE, 1 << 20, 1 << 20, 1 << 20,
                            0, 1 << 62, 0, 0, 0, [1], [b"x"])


# -- the engine: same files, same records --------------------------------------------------


def _sink_shaped(ops: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """The calls the sink's storage thread makes: per stream and commit one call of data,
    markers before it (they are in the same chunk and buffered) but none after, and a commit
    after them before anything else (a crash after a write-through keeps what it wrote,
    where buffered records would be lost: another history)."""
    out: list[tuple[object, ...]] = []
    done: set[object] = set()
    for op in ops:
        if op[0] in ("extend", "marker"):
            if op[1] in done:
                continue
            if op[0] == "extend":
                done.add(op[1])
        elif op[0] != "commit" and out and out[-1][0] in ("extend", "marker"):
            out.append(("commit", 0))
        if op[0] != "extend" and op[0] != "marker":
            done.clear()
        out.append(op)
    return out


def _same(runs: list[list[dict[str, bytes]]]) -> None:
    for snaps in runs[1:]:
        assert len(snaps) == len(runs[0])
        for i, (got, want) in enumerate(zip(snaps, runs[0], strict=True)):
            assert got.keys() == want.keys(), f"other files after commit {i}"
            for name in want:
                assert got[name] == want[name], f"{name} differs after commit {i}"


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_write_through_writes_the_bytes_of_a_commit(ops: list[tuple[object, ...]]) -> None:
    ops = _sink_shaped(ops + STEADY)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        runs.append(_run(Path(tmp) / "buffered", "mmap", True, "extend_trusted", ops))
        for compiled in PATHS:
            fastpath.select(compiled)
            try:
                runs.append(_run(Path(tmp) / f"through-{compiled}", "mmap", True,
                                 "write_trusted", ops))
            finally:
                fastpath.select()
    _same(runs)


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_write_through_keeps_every_record_in_order(ops: list[tuple[object, ...]]) -> None:
    """Any history (two calls for a stream between commits: two batches instead of one):
    the same records, kinds and order as buffering."""
    with tempfile.TemporaryDirectory() as tmp:
        roots = [Path(tmp) / "buffered", Path(tmp) / "through"]
        _run(roots[0], "mmap", True, "extend_trusted", ops)
        _run(roots[1], "mmap", True, "write_trusted", ops)
        for product in ("BTC-USD", "ETH-EUR"):
            assert read_all(roots[1], product) == read_all(roots[0], product)


def _engine(root: Path, backend: str = "mmap", **kw: object) -> Engine:
    return Engine(EngineConfig(root=root, backend=backend, seal_stale_on_open=False,
                               precreate_s=0, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("compiled", PATHS)
def test_written_through_records_are_committed_at_once(tmp_path: Path, compiled: bool,
                                                       paths: None) -> None:
    fastpath.select(compiled)
    eng = _engine(tmp_path)
    s = eng.stream("BTC-USD", "level2")
    eng.extend(s, [NOON_NS], [b"first"])
    assert eng.commit(now_ns=NOON_NS).records == 1  # the day's segment is open now
    assert eng.write_trusted(s, [NOON_NS + 2, NOON_NS + 1], [b"ab", b"cde"]) == 5
    assert eng.pending_records == 0  # not buffered: committed
    assert read_all(tmp_path) == [(NOON_NS, 0, b"first"), (NOON_NS + 2, 0, b"ab"),
                                  (NOON_NS + 1, 0, b"cde")]
    result = eng.commit(now_ns=NOON_NS)
    assert (result.records, result.bytes > 0) == (2, True)  # reported by the next commit
    assert eng.commit(now_ns=NOON_NS).records == 0
    seg = next(iter(s.segments.values()))
    assert (seg.count, seg.first_ts, seg.last_ts) == (3, NOON_NS, NOON_NS + 2)
    eng.close()
    assert read_all(tmp_path)[-2:] == [(NOON_NS + 2, 0, b"ab"), (NOON_NS + 1, 0, b"cde")]


def test_the_usual_way_where_write_through_cannot_go(tmp_path: Path) -> None:
    eng = _engine(tmp_path, segment_max_bytes=16 << 10, first_extent_bytes=8192,
                  max_extent_bytes=8192)
    s = eng.stream("BTC-USD", "level2")
    assert eng.write_trusted(s, [NOON_NS], [b"a"]) == 1  # no segment open yet: buffered
    assert eng.pending_records == 1
    eng.commit(now_ns=NOON_NS)
    eng.append(s, NOON_NS + 1, b"{}", RecordKind.NOTE)
    eng.write_trusted(s, [NOON_NS + 2], [b"b"])  # after a pending marker: buffered, in order
    assert eng.pending_records == 2
    eng.commit(now_ns=NOON_NS)
    eng.write_trusted(s, [NOON_NS + DAY_NS], [b"tomorrow"])  # no segment of that day
    eng.write_trusted(eng.stream("ETH-USD", "level2"), [NOON_NS, NOON_NS + DAY_NS],
                      [b"x", b"y"])  # new stream, and two days
    assert eng.pending_records == 3
    eng.commit(now_ns=NOON_NS)
    eng.write_trusted(s, [NOON_NS + 3], [os.urandom(13_000)])  # fills the segment: rotates
    assert eng.pending_records == 1
    eng.commit(now_ns=NOON_NS)
    eng.close()
    got = [(t, k, p) for t, k, p in read_all(tmp_path, "BTC-USD") if len(p) < 100]
    assert got == [(NOON_NS, 0, b"a"), (NOON_NS + 1, int(RecordKind.NOTE), b"{}"),
                   (NOON_NS + 2, 0, b"b"), (NOON_NS + DAY_NS, 0, b"tomorrow")]
    assert len(list(tmp_path.rglob("BTC-USD/level2/*"))) >= 3  # rotated: a second file today


def test_other_backends_buffer(tmp_path: Path) -> None:
    eng = _engine(tmp_path, backend="pwrite")
    s = eng.stream("BTC-USD", "level2")
    eng.extend(s, [NOON_NS], [b"a"])
    eng.commit(now_ns=NOON_NS)
    assert eng.write_trusted == eng.extend_trusted
    eng.write_trusted(s, [NOON_NS + 1], [b"b"])
    assert eng.pending_records == 1
    eng.close()


def test_bad_columns_are_refused_as_by_extend_trusted(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    s = eng.stream("BTC-USD", "level2")
    eng.extend(s, [NOON_NS], [b"a"])
    eng.commit(now_ns=NOON_NS)
    with pytest.raises(ValueError):
        eng.write_trusted(s, [1, 2], [b"a"])
    with pytest.raises(ValueError):
        eng.write_trusted(s, [NOON_NS, 1 << 63], [b"a", b"b"])
    with pytest.raises(TypeError):
        eng.write_trusted(s, [NOON_NS, "2"], [b"a", b"b"])  # type: ignore[list-item]
    assert eng.write_trusted(s, [], []) == 0
    assert eng.pending_records == 0
    eng.close()
    assert read_all(tmp_path) == [(NOON_NS, 0, b"a")]


_KILLED_CHILD = textwrap.dedent(r"""
    import os, signal, sys
    from storage import Engine, EngineConfig
    eng = Engine(EngineConfig(root=sys.argv[1], backend="mmap", seal_stale_on_open=False,
                              precreate_s=0, commit_records=10**9, commit_interval_s=3600))
    s = eng.stream("BTC-USD", "level2")
    t = int(sys.argv[2])
    eng.extend(s, [t], [b"committed"])
    eng.commit(now_ns=t)
    for i in range(50):
        eng.write_trusted(s, [t + 1 + i, t + 1 + i], [b"through-%d" % i, b"x" * i])
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_9_after_write_through_keeps_the_records(tmp_path: Path) -> None:
    """No commit after the writes: a real SIGKILL, then a new engine recovers them all."""
    root = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(root), str(NOON_NS)],
                         env=env, capture_output=True, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr.decode()
    eng = Engine(EngineConfig(root=root, backend="mmap", mark_unclean=False,
                              seal_stale_on_open=True))
    eng.close()
    want = [(NOON_NS, 0, b"committed")]
    for i in range(50):
        want += [(NOON_NS + 1 + i, 0, b"through-%d" % i), (NOON_NS + 1 + i, 0, b"x" * i)]
    assert read_all(root) == want
