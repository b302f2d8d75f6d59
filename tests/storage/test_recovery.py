"""Crash recovery: a crash at any byte of a commit's writes loses no committed record and
exposes nothing uncommitted; torn tails are overwritten; a corrupt middle starts a new segment."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_fixtures import DAY_NS, NOON_NS, read_all

from storage import Engine, EngineConfig, SegmentReader, iter_segments
from storage.backends import MmapBackend, WriteOp
from storage.format import HEADER_SIZE, batch_records, decode_header, encode_header, read_batch
from storage.recovery import recover_buffer

#: These tests read back exactly what recovery keeps; the RESTART markers a restart after a
#: crash adds (``mark_unclean``, the default) are tested in test_unclean.py.
Cfg = functools.partial(EngineConfig, backend="mmap", mark_unclean=False)


class RecordingBackend(MmapBackend):
    """The real mmap backend, also remembering every (path fd, offset, bytes) it wrote."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, int, bytes]]] = []

    def write(self, ops: Sequence[WriteOp]) -> None:
        self.calls.append([(op.fd, op.offset, bytes(op.data)) for op in ops])
        super().write(ops)


def _records_in(image: bytes) -> list[tuple[int, int, bytes]]:
    rec = recover_buffer(image)
    assert rec.corrupt_at is None
    out: list[tuple[int, int, bytes]] = []
    off = HEADER_SIZE
    while off < rec.end:
        info, blob = read_batch(image, off, rec.end)
        out += [(r.ts_ns, r.kind, r.payload) for r in batch_records(blob, off)]
        off += info.length
    assert rec.record_count == len(out)
    return out


COMMITS = st.lists(
    st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=120)), min_size=1, max_size=30),
    min_size=1, max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(COMMITS, st.data())
def test_crash_at_any_byte_of_a_commit_recovers_exactly_the_committed_records(
    commits: list[list[tuple[int, bytes]]], data: st.DataObject
) -> None:
    crash_commit = data.draw(st.integers(0, len(commits) - 1))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        backend = RecordingBackend()
        eng = Engine(Cfg(root=root, first_extent_bytes=8192,
                                  max_batch_bytes=4096, seal_stale_on_open=False), backend)
        s = eng.stream("BTC-USD", "level2")
        expected: list[tuple[int, int, bytes]] = []
        before = b""
        for i, commit in enumerate(commits):
            for j, (kind, payload) in enumerate(commit):
                eng.append(s, NOON_NS + i * 100 + j, payload, kind)  # type: ignore[arg-type]
            [ref] = iter_segments(root) if i else [None]
            before = ref.path.read_bytes() if ref is not None else b""
            n_calls = len(backend.calls)
            assert not eng.commit(now_ns=NOON_NS).errors
            if i == crash_commit:
                break
            expected += [(NOON_NS + i * 100 + j, k, p) for j, (k, p) in enumerate(commit)]
        [ref] = iter_segments(root)
        after = ref.path.read_bytes()
        ops = [op for call in backend.calls[n_calls:] for op in call]
        eng.close()
    # replay the commit's writes onto the pre-commit image, stopping at a random byte
    data_ops, commit_op = ops[:-1], ops[-1]
    total = sum(len(d) for _, _, d in data_ops)
    cut = data.draw(st.integers(0, total))
    if not before:  # the commit created the file: start from its fresh header
        fresh = dataclasses.replace(decode_header(after), committed_len=HEADER_SIZE,
                                    record_count=0, first_ts_ns=0, last_ts_ns=0, index=())
        before = encode_header(fresh)
    image = bytearray(before.ljust(len(after), b"\0"))
    done = 0
    for _, off, d in data_ops:
        take = max(0, min(len(d), cut - done))
        image[off : off + take] = d[:take]
        done += len(d)
    assert _records_in(bytes(image)) == expected  # commit point not yet moved
    _, off, d = commit_op
    image[off : off + len(d)] = d
    if cut == total:  # every byte in place, then the commit point: the commit happened
        new = [(NOON_NS + crash_commit * 100 + j, k, p)
               for j, (k, p) in enumerate(commits[crash_commit])]
        assert _records_in(bytes(image)) == expected + new


def _crashed_root(root: Path, commits: int) -> tuple[Path, list[bytes]]:
    """A root whose single segment holds ``commits`` commits, left unsealed (as by kill -9)."""
    backend = RecordingBackend()
    eng = Engine(Cfg(root=root, seal_stale_on_open=False), backend)
    s = eng.stream("BTC-USD", "level2")
    payloads = []
    for i in range(commits):
        p = [os.urandom(50) + b"%d" % (i * 10 + j) for j in range(10)]
        eng.extend(s, [NOON_NS + i * 10 + j for j in range(10)], p)
        eng.commit(now_ns=NOON_NS)
        payloads += p
    [ref] = iter_segments(root)
    image = ref.path.read_bytes()
    eng.close()
    ref.path.write_bytes(image)  # back to the unsealed, preallocated state
    return ref.path, payloads


def test_reopen_after_crash_continues_and_overwrites_a_torn_tail(root: Path) -> None:
    path, payloads = _crashed_root(root, 3)
    with SegmentReader.open(path) as r:
        end = r.header.committed_len
    with open(path, "r+b") as f:  # a torn, uncommitted batch after the commit point
        f.seek(end)
        f.write(b"CBB1" + os.urandom(300))
    eng = Engine(Cfg(root=root, seal_stale_on_open=False))
    s = eng.stream("BTC-USD", "level2")
    eng.append(s, NOON_NS + 999, b"after-restart")
    assert not eng.commit(now_ns=NOON_NS).errors
    assert [r.number for r in iter_segments(root)] == [0]  # same segment continued
    eng.close()
    assert [p for _, _, p in read_all(root)] == [*payloads, b"after-restart"]


def test_uncommitted_complete_batch_after_commit_point_is_not_recovered(root: Path) -> None:
    path, payloads = _crashed_root(root, 2)
    image = bytearray(path.read_bytes())
    committed = int.from_bytes(image[16:24], "little")
    first_batch_end = HEADER_SIZE + read_batch(bytes(image), HEADER_SIZE, committed)[0].length
    image[16:24] = first_batch_end.to_bytes(8, "little")  # crash before the 2nd commit point
    rec = recover_buffer(bytes(image))
    assert rec.corrupt_at is None and rec.tail_ignored and rec.end == first_batch_end
    assert rec.record_count == 10
    path.write_bytes(bytes(image))
    assert [p for _, _, p in read_all(root)] == payloads[:10]


def test_corrupt_middle_starts_a_new_segment_and_says_so(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = _crashed_root(root, 3)
    with open(path, "r+b") as f:
        f.seek(HEADER_SIZE + 60)
        f.write(b"\x00\xff\x00")
    with caplog.at_level(logging.ERROR, logger="storage.engine"):
        eng = Engine(Cfg(root=root, seal_stale_on_open=False))
        s = eng.stream("BTC-USD", "level2")
        eng.append(s, NOON_NS + 999, b"new")
        assert not eng.commit(now_ns=NOON_NS).errors
        eng.close()
    assert any("corrupt" in m and str(path) in m for m in caplog.messages)
    refs = list(iter_segments(root))
    assert [r.number for r in refs] == [0, 1]
    with SegmentReader.open(refs[0].path) as r:
        assert not r.header.sealed  # left as found, for inspection
    with SegmentReader.open(refs[1].path) as r:
        assert [x.payload for x in r.records()] == [b"new"]


def test_stale_unsealed_segments_of_past_days_are_sealed_at_start(root: Path) -> None:
    path, payloads = _crashed_root(root, 2)
    with SegmentReader.open(path) as r:
        assert not r.header.sealed
    eng = Engine(Cfg(root=root, seal_stale_on_open=False))
    assert eng.seal_stale(NOON_NS) == []  # still its day: left live
    assert eng.seal_stale(NOON_NS + DAY_NS) == [path]
    eng.close()
    with SegmentReader.open(path) as r:
        assert r.header.sealed and r.header.record_count == 20
    assert path.stat().st_size == SegmentReader.open(path).header.committed_len
    assert [p for _, _, p in read_all(root)] == payloads


def test_older_unsealed_segment_of_the_day_is_sealed_when_the_stream_reopens(root: Path) -> None:
    path, payloads = _crashed_root(root, 1)
    image = path.read_bytes()
    second = path.with_name(path.name.replace(".0000.", ".0001."))
    renumbered = dataclasses.replace(decode_header(image), number=1)
    second.write_bytes(encode_header(renumbered)[:4096] + image[4096:])
    eng = Engine(Cfg(root=root, seal_stale_on_open=False))
    s = eng.stream("BTC-USD", "level2")
    eng.append(s, NOON_NS + DAY_NS // 4, b"x")
    eng.commit(now_ns=NOON_NS)
    with SegmentReader.open(path) as r:
        assert r.header.sealed  # the older one: sealed
    with SegmentReader.open(second) as r:
        assert not r.header.sealed  # the latest: continued
    eng.close()
    assert [r.number for r in iter_segments(root)] == [0, 1]
    assert [p for _, _, p in read_all(root)] == [*payloads, *payloads, b"x"]


def test_a_segment_whose_header_names_another_place_is_not_continued(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = _crashed_root(root, 1)
    moved = root / "ETH-USD" / "level2" / path.name
    moved.parent.mkdir(parents=True)
    path.rename(moved)
    with caplog.at_level(logging.ERROR, logger="storage.engine"):
        eng = Engine(Cfg(root=root, seal_stale_on_open=False))
        eng.append(eng.stream("ETH-USD", "level2"), NOON_NS, b"eth")
        eng.commit(now_ns=NOON_NS)
        eng.close()
    assert any("not its path" in m for m in caplog.messages)
    assert [r.number for r in iter_segments(root, "ETH-USD")] == [0, 1]
    with SegmentReader.open(moved) as r:
        assert r.header.product == "BTC-USD" and not r.header.sealed  # untouched


def test_engine_start_seals_what_a_crash_left_of_past_days(root: Path) -> None:
    past = int(dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
    eng = Engine(Cfg(root=root, seal_stale_on_open=False))
    eng.append(eng.stream("BTC-USD", "level2"), past, b"old")
    eng.commit(now_ns=past)
    [ref] = iter_segments(root)
    image = ref.path.read_bytes()
    eng.close()
    ref.path.write_bytes(image)  # unsealed, as a kill -9 leaves it
    Engine(Cfg(root=root)).close()  # default: seal stale on open
    with SegmentReader.open(ref.path) as r:
        assert r.header.sealed and [x.payload for x in r.records()] == [b"old"]


def test_stale_segments_are_sealed_gradually_at_commits(root: Path) -> None:
    past = int(dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
    eng = Engine(Cfg(root=root, seal_stale_on_open=False))
    for i in range(3):
        eng.append(eng.stream(f"P{i}-USD", "level2"), past, b"old%d" % i)
    eng.commit(now_ns=past)
    refs = list(iter_segments(root))
    images = [r.path.read_bytes() for r in refs]
    eng.close()
    for ref, image in zip(refs, images, strict=True):
        ref.path.write_bytes(image)  # unsealed, as a kill -9 leaves them
    (root / "P0-USD" / "level2" / "2020-01-01.0007.seg").write_bytes(b"not a segment")
    eng = Engine(Cfg(root=root, seal_budget_s=0.0))
    assert eng.seals_pending == 4  # found at start, nothing read yet
    assert eng.commit_due(eng._last_commit + 5.0)
    assert eng.commit().sealed == [refs[0].path]  # one per commit with a zero budget
    assert eng.seals_pending == 3
    assert eng.commit().sealed == []  # the foreign file: checked, left alone
    assert eng.seals_pending == 2
    eng.close()  # drains the rest; the foreign file is logged and left alone
    for ref in refs:
        with SegmentReader.open(ref.path) as r:
            assert r.header.sealed
    assert (root / "P0-USD" / "level2" / "2020-01-01.0007.seg").read_bytes() == b"not a segment"
