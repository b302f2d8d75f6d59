"""Unclean shutdown and loss at close, engine level: the live journal, RESTART markers at the
time of the last committed record, the loss ledger turned into DROPPED markers at the next
open, a worker's files consumed by its supervisor's marking pass, and commits written in
bounded steps that fail part-way."""

from __future__ import annotations

import errno
import json
from collections.abc import Sequence
from pathlib import Path

from segment_fixtures import NOON_NS, read_all

from storage import Engine, EngineConfig, RecordKind
from storage.backends import MmapBackend, WriteOp


def _crash(eng: Engine) -> None:
    """What kill -9 leaves: files as the page cache has them, nothing sealed or removed."""
    for stream in eng._streams.values():
        for seg in stream.segments.values():
            seg.close()
    eng._lock.release()


def _cfg(root: Path, **kw: object) -> EngineConfig:
    return EngineConfig(root=root, backend="mmap", seal_stale_on_open=False, **kw)  # type: ignore[arg-type]


class FailingBackend(MmapBackend):
    """The real mmap backend; every write fails with ENOSPC while ``full``, or only the
    ``fail_at``-th write call."""

    def __init__(self) -> None:
        self.full = False
        self.calls = 0
        self.fail_at = 0

    def write(self, ops: Sequence[WriteOp]) -> None:
        self.calls += 1
        if self.full or self.calls == self.fail_at:
            raise OSError(errno.ENOSPC, "injected full disk")
        super().write(ops)


def _markers(root: Path, kind: RecordKind) -> list[tuple[int, dict[str, object]]]:
    return [(ts, json.loads(p)) for ts, k, p in read_all(root) if k == kind]


def test_crash_gets_a_restart_marker_right_after_the_last_committed_record(root: Path) -> None:
    eng = Engine(_cfg(root))
    a, b = eng.stream("BTC-USD", "level2"), eng.stream("ETH-USD", "ticker")
    eng.extend(a, [NOON_NS + 1, NOON_NS + 2], [b"a1", b"a2"])
    eng.extend(b, [NOON_NS + 3], [b"b1"])
    eng.commit(now_ns=NOON_NS)
    eng.extend(a, [NOON_NS + 4], [b"lost"])  # pending at the kill
    assert (root / ".live").read_bytes().split(b"\0")[0] == b"BTC-USD\tlevel2\nETH-USD\tticker\n"
    _crash(eng)
    eng = Engine(_cfg(root))
    assert eng.pending_records == 2  # one RESTART marker per stream, not yet committed
    assert not eng.commit(now_ns=NOON_NS).errors
    eng.close()
    got = read_all(root, "BTC-USD")
    assert [(ts, k) for ts, k, _ in got] == [
        (NOON_NS + 1, 0), (NOON_NS + 2, 0), (NOON_NS + 2, RecordKind.RESTART)]
    marker = json.loads(got[-1][2])
    assert marker["reason"] == "unclean_shutdown" and marker["from_ts_ns"] == NOON_NS + 2
    assert marker["to_ts_ns"] > NOON_NS + 2
    assert [ts for ts, _ in _markers(root, RecordKind.RESTART)] == [NOON_NS + 2, NOON_NS + 3]
    assert not (root / ".live").exists() and not list(root.glob(".loss*"))
    Engine(_cfg(root)).close()  # a clean close before: nothing more to mark
    assert len(_markers(root, RecordKind.RESTART)) == 2


def test_a_stream_that_never_committed_is_marked_from_the_start(root: Path) -> None:
    eng = Engine(_cfg(root))
    eng.extend(eng.stream("SOL-USD", "level2"), [NOON_NS], [b"never committed"])
    _crash(eng)
    eng = Engine(_cfg(root))
    eng.close()
    [(ts, marker)] = _markers(root, RecordKind.RESTART)
    assert marker["from_ts_ns"] is None and ts == marker["to_ts_ns"]


def test_unsealed_segments_without_a_journal_are_marked_too(root: Path) -> None:
    """A root left by a crash of an engine that kept no journal (an older version)."""
    eng = Engine(_cfg(root))
    eng.extend(eng.stream("BTC-USD", "level2"), [NOON_NS], [b"x"])
    eng.commit(now_ns=NOON_NS)
    _crash(eng)
    (root / ".live").unlink()
    Engine(_cfg(root)).close()
    assert [ts for ts, _ in _markers(root, RecordKind.RESTART)] == [NOON_NS]


def test_records_a_close_cannot_write_are_listed_and_marked_dropped_next_time(
    root: Path,
) -> None:
    backend = FailingBackend()
    eng = Engine(_cfg(root), backend)
    s = eng.stream("BTC-USD", "level2")
    eng.extend(s, [NOON_NS], [b"kept"])
    eng.commit(now_ns=NOON_NS)
    backend.full = True
    eng.extend(s, [NOON_NS + 10, NOON_NS + 11, NOON_NS + 12], [b"l1", b"l2", b"l3"])
    # a DROPPED marker of the storage thread, pending too: its records widen the entry
    eng.append(s, NOON_NS + 5, json.dumps({"records": 7, "first_ts_ns": NOON_NS + 5,
                                           "last_ts_ns": NOON_NS + 9}).encode(),
               RecordKind.DROPPED)
    result = eng.close()
    assert result.lost == 3
    lines = (root / ".loss").read_bytes().split(b"\0")[0].splitlines()
    assert [json.loads(line) for line in lines] == [
        {"product": "BTC-USD", "channel": "level2", "records": 3,
         "first_ts_ns": NOON_NS + 10, "last_ts_ns": NOON_NS + 12, "errno": errno.ENOSPC},
        {"product": "BTC-USD", "channel": "level2", "kind": int(RecordKind.DROPPED),
         "ts_ns": NOON_NS + 5, "payload": json.dumps(
             {"records": 7, "first_ts_ns": NOON_NS + 5, "last_ts_ns": NOON_NS + 9})}]
    assert not (root / ".live").exists()  # every segment was sealed: no RESTART needed
    eng = Engine(_cfg(root))
    eng.close()
    got = read_all(root, "BTC-USD")
    assert [(ts, k) for ts, k, _ in got] == [
        (NOON_NS, 0), (NOON_NS + 5, RecordKind.DROPPED), (NOON_NS + 10, RecordKind.DROPPED)]
    assert json.loads(got[1][2])["records"] == 7  # carried as it was
    marker = json.loads(got[-1][2])
    assert marker["reason"] == "lost_at_shutdown" and marker["records"] == 3
    assert (marker["first_ts_ns"], marker["last_ts_ns"]) == (NOON_NS + 10, NOON_NS + 12)
    assert not list(root.glob(".loss*")) and not list(root.glob(".live*"))


def test_loss_ledger_is_kept_until_its_markers_are_committed(root: Path) -> None:
    backend = FailingBackend()
    eng = Engine(_cfg(root), backend)
    eng.extend(eng.stream("BTC-USD", "level2"), [NOON_NS], [b"lost"])
    backend.full = True
    assert eng.close().lost == 1
    eng = Engine(_cfg(root), backend)  # still full: the marker cannot be written
    assert eng.commit(now_ns=NOON_NS).errors
    assert eng.close().lost == 0  # the marker itself is all that is pending
    # the marker is carried into the new ledger, the old one is gone (no double marking)
    assert [p.name for p in root.glob(".loss*")] == [".loss"]
    backend.full = False
    Engine(_cfg(root), backend).close()
    drops = _markers(root, RecordKind.DROPPED)
    assert [m["records"] for _, m in drops] == [1] and drops[0][0] == NOON_NS
    assert not list(root.glob(".loss*"))


def test_worker_files_are_marked_by_the_supervisor_pass(root: Path) -> None:
    worker = Engine(_cfg(root, lock_name=".lock.w0", mark_unclean=False))
    worker.extend(worker.stream("BTC-USD", "level2"), [NOON_NS], [b"w"])
    worker.commit(now_ns=NOON_NS)
    _crash(worker)
    assert (root / ".live.w0").exists()
    again = Engine(_cfg(root, lock_name=".lock.w1", mark_unclean=False))
    assert again.pending_records == 0  # a worker never marks: another may own the stream
    again.close()
    Engine(_cfg(root, lock_name=".lock.mark")).close()
    assert [ts for ts, _ in _markers(root, RecordKind.RESTART)] == [NOON_NS]
    assert not list(root.glob(".live*"))


def test_a_big_commit_in_steps_keeps_order_when_one_step_fails(root: Path) -> None:
    backend = FailingBackend()
    eng = Engine(_cfg(root, commit_chunk_bytes=4000), backend)
    a, b = eng.stream("BTC-USD", "level2"), eng.stream("ETH-USD", "level2")
    pa = [b"%04d" % i + b"a" * 96 for i in range(100)]  # 10 000 bytes: three steps
    pb = [b"%04d" % i + b"b" * 96 for i in range(20)]
    eng.extend(a, [NOON_NS + i for i in range(100)], pa)
    eng.append(a, NOON_NS + 100, b'{"m":1}', RecordKind.GAP)
    eng.extend(b, [NOON_NS + i for i in range(20)], pb)
    backend.fail_at = backend.calls + 3  # the second step's data write
    res = eng.commit(now_ns=NOON_NS)
    assert res.errors and 0 < res.records < 121
    assert eng.pending_records == 121 - res.records
    res2 = eng.commit(now_ns=NOON_NS)
    assert not res2.errors and res.records + res2.records == 121
    eng.close()
    got = read_all(root, "BTC-USD")
    assert [p for _, k, p in got if k == 0] == pa and got[-1][1] == RecordKind.GAP
    assert [p for _, _, p in read_all(root, "ETH-USD")] == pb


def test_a_stream_declared_from_another_thread_gets_a_restart_marker(root: Path) -> None:
    """A writer that buffers records elsewhere declares each stream before its first commit:
    a crash before that commit still leaves the stream named, so the next open marks it."""
    import threading

    import pytest

    from storage import InvalidStreamName

    eng = Engine(_cfg(root))
    workers = [threading.Thread(target=eng.declare, args=("BTC-USD", "level2"))
               for _ in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    with pytest.raises(InvalidStreamName):
        eng.declare("../up", "level2")
    eng.stream("BTC-USD", "level2")  # its handle later: not named twice
    assert (root / ".live").read_bytes().split(b"\0")[0] == b"BTC-USD\tlevel2\n"
    _crash(eng)
    eng = Engine(_cfg(root))
    eng.commit(now_ns=NOON_NS)
    eng.close()
    (_ts, m), = _markers(root, RecordKind.RESTART)
    assert m["from_ts_ns"] is None and m["reason"] == "unclean_shutdown"
