"""Sink → bounded queue → storage thread, against the real Engine and real files."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_support import data_only, markers, read_streams

from logger.sink import BoundedBatchQueue, Sink
from storage import Engine, EngineConfig, RecordKind
from storage.engine import CommitResult

FALLBACK = ("_conn0", "_unrouted")


def _engine(root: Path) -> Engine:
    return Engine(EngineConfig(root=root, backend="pwrite"))


def test_records_land_in_order_per_stream_with_markers(tmp_path: Path) -> None:
    sink = Sink(lambda: _engine(tmp_path), commit_records=7, commit_interval_s=60)
    sink.start()
    sent: dict[tuple[str, str], list[bytes]] = {}
    t = time.time_ns()
    for i in range(100):
        key = (f"P{i % 3}-USD", "ticker" if i % 2 else "level2")
        raw = json.dumps({"i": i}).encode()
        sink.add(key, t + i, raw, FALLBACK)
        sent.setdefault(key, []).append(raw)
        if i == 50:
            sink.mark(key, RecordKind.GAP, t + i, b'{"event":"gap"}')
    sink.close()
    got = read_streams(tmp_path)
    for key, payloads in sent.items():
        assert data_only(got[key]) == payloads
    gap_key = ("P2-USD", "level2")
    kinds = [k for k, _, _ in got[gap_key]]
    assert kinds.count(RecordKind.GAP) == 1
    # the marker sits right after message 50 in its stream
    idx = kinds.index(RecordKind.GAP)
    assert json.loads(got[gap_key][idx - 1][2]) == {"i": 50}
    assert sink.stats.committed_records == 101
    assert sink.stats.records_dropped == 0


def test_invalid_stream_name_is_stored_in_fallback(tmp_path: Path) -> None:
    sink = Sink(lambda: _engine(tmp_path))
    sink.start()
    t = time.time_ns()
    sink.add(("../etc", "ticker"), t, b"hostile", FALLBACK)
    sink.add(("../etc", "ticker"), t + 1, b"hostile2", FALLBACK)
    sink.add(("BTC-USD", "ticker"), t + 2, b"fine", FALLBACK)
    sink.close()
    got = read_streams(tmp_path)
    assert data_only(got[FALLBACK]) == [b"hostile", b"hostile2"]
    assert data_only(got[("BTC-USD", "ticker")]) == [b"fine"]
    assert sink.stats.invalid_streams == 1
    assert not (tmp_path.parent / "etc").exists()


class SlowEngine(Engine):
    """A real engine whose commits wait for a gate: a disk that stalls."""

    gate = threading.Event()

    def commit(self, now_ns: int | None = None) -> CommitResult:
        self.gate.wait(30)
        return super().commit(now_ns)


def test_slow_disk_never_blocks_and_drops_are_counted_and_marked(tmp_path: Path) -> None:
    SlowEngine.gate.clear()
    sink = Sink(lambda: SlowEngine(EngineConfig(root=tmp_path, backend="pwrite")),
                commit_records=10, commit_interval_s=60, queue_batches=2,
                max_pending_bytes=2000)
    sink.start()
    t = time.time_ns()
    key = ("BTC-USD", "level2")
    n = 2000
    for i in range(n):
        sink.add(key, t + i, b"%05d" % i + b"x" * 45, FALLBACK)
    # the disk is still gated shut: a producer that waited for it would still be waiting,
    # and one that buffered without bound would not have dropped anything
    assert sink.queue.depth <= 2
    assert sink.stats.records_dropped > 0
    SlowEngine.gate.set()
    sink.close()
    got = read_streams(tmp_path)[key]
    stored = data_only(got)
    drops = [json.loads(p) for p in markers(got, RecordKind.DROPPED)]
    assert sum(d["records"] for d in drops) == sink.stats.records_dropped
    assert len(stored) + sink.stats.records_dropped == n
    # what survived is in order, and each DROPPED marker covers the interval it replaces
    idx = [int(p[:5]) for p in stored]
    assert idx == sorted(idx)
    for d in drops:
        assert d["reason"] == "storage_queue_full"
        assert d["first_ts_ns"] <= d["last_ts_ns"]
    # each marker carries the time of the first record it replaces, so time never goes back
    assert sorted(ts for _, ts, _ in got) == [ts for _, ts, _ in got]
    assert [ts for k, ts, _ in got if k == RecordKind.DROPPED] == [d["first_ts_ns"]
                                                                   for d in drops]
    assert sink.stats.committed_records == len(got)


def test_storage_thread_failure_surfaces_on_close(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the data root should be")
    sink = Sink(lambda: _engine(tmp_path / "data"))
    sink.start()
    sink.add(("BTC-USD", "ticker"), time.time_ns(), b"x", FALLBACK)
    with pytest.raises(RuntimeError, match="storage thread failed"):
        sink.close()


def test_bounded_queue_respects_count_and_bytes() -> None:
    from logger.sink import Batch

    q = BoundedBatchQueue(max_batches=2, max_bytes=100)
    assert q.try_put(Batch([], 1, 60, 0.0))
    assert not q.try_put(Batch([], 1, 60, 0.0))  # bytes
    assert q.try_put(Batch([], 1, 40, 0.0))
    assert not q.try_put(Batch([], 1, 0, 0.0))  # count
    assert q.get(0.01) is not None
    assert q.depth == 1 and q.nbytes == 40
    q.put_wait(Batch([], 1, 10, 0.0), lambda: True)  # room: no wait
    with pytest.raises(RuntimeError, match="storage thread is gone"):
        q.put_wait(Batch([], 1, 10, 0.0), lambda: False)  # full and nobody consumes


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.binary(min_size=0, max_size=40),
                          st.booleans()), max_size=120),
       st.integers(1, 30))
def test_property_every_record_and_marker_in_order(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[tuple[int, bytes, bool]], commit_records: int,
) -> None:
    root = tmp_path_factory.mktemp("prop")
    sink = Sink(lambda: _engine(root), commit_records=commit_records, commit_interval_s=60)
    sink.start()
    t = time.time_ns()
    expect: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    for i, (s, payload, is_marker) in enumerate(items):
        key = (f"S{s}", "c")
        if is_marker:
            sink.mark(key, RecordKind.NOTE, t + i, payload)
            expect.setdefault(key, []).append((int(RecordKind.NOTE), payload))
        else:
            sink.add(key, t + i, payload, FALLBACK)
            expect.setdefault(key, []).append((int(RecordKind.DATA), payload))
    sink.close()
    got = read_streams(root)
    assert {k: [(kind, p) for kind, _, p in v] for k, v in got.items()} == expect


def test_utc_day_roll_splits_streams_and_seals_the_past_day_while_running(
    tmp_path: Path,
) -> None:
    from storage.layout import iter_segments
    from storage.reader import SegmentReader

    ns_day = 86_400 * 1_000_000_000
    today0 = time.time_ns() // ns_day * ns_day  # this UTC midnight
    # no pre-creation of tomorrow's files (it would add a third, empty day when this runs in
    # the last minutes of a UTC day; test_engine covers pre-creation)
    sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="pwrite", precreate_s=0)),
                commit_records=1000, commit_interval_s=60)
    sink.start()
    key = ("BTC-USD", "level2")
    sink.add(key, today0 - 100_000_000, b"before midnight", FALLBACK)
    sink.add(key, today0 + 100_000_000, b"after midnight", FALLBACK)
    assert sink.flush()
    deadline = time.monotonic() + 30
    while sink.stats.commits < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the batch commit, then an idle commit that seals the past day
    refs = {r.day.toordinal(): r for r in iter_segments(tmp_path, "BTC-USD", "level2")}
    assert len(refs) == 2
    old, new = (refs[k] for k in sorted(refs))
    r_old, r_new = SegmentReader.open(old.path), SegmentReader.open(new.path)
    try:
        assert [bytes(r.payload) for r in r_old.records()] == [b"before midnight"]
        assert [bytes(r.payload) for r in r_new.records()] == [b"after midnight"]
        assert r_old.header.sealed and not r_new.header.sealed  # ingest goes on: no close
    finally:
        r_old.close()
        r_new.close()
    sink.add(key, today0 + 200_000_000, b"still recording", FALLBACK)
    sink.close()
    got = read_streams(tmp_path)[key]
    assert data_only(got) == [b"before midnight", b"after midnight", b"still recording"]


# -- full disk: the storage thread bounds what the engine holds while commits fail ----------


def sink_disk_full_scenario(root: Path, fill: Callable[[], None], free: Callable[[], None],
                            expect_errno: int) -> dict[str, object]:
    """Record into ``root``, make the disk full (``fill``), keep recording far past the
    backlog bound, make room (``free``), record more, close; return what was observed.
    Runs in a child process (a private tmpfs mount, or a lowered RLIMIT_FSIZE)."""
    errors_logged: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "event=commit_error" in record.getMessage():
                errors_logged.append(record.getMessage())

    logging.getLogger("logger.sink").addHandler(Catch())
    bound = 64 << 10
    sink = Sink(lambda: Engine(EngineConfig(root=root, backend="pwrite")), commit_records=50,
                commit_interval_s=60, queue_batches=64, max_backlog_bytes=bound)
    sink.start()
    keys = [(f"P{i}-USD", "level2") for i in range(4)]
    sent: dict[tuple[str, str], list[bytes]] = {k: [] for k in keys}
    t = time.time_ns()
    i = 0

    def feed(n: int) -> None:
        nonlocal i
        for _ in range(n):
            key = keys[i % len(keys)]
            raw = b"%07d" % i + b"x" * 1017
            sink.add(key, t + i, raw, FALLBACK)
            sent[key].append(raw)
            i += 1
            if i % 50 == 0:
                time.sleep(0.002)  # let the storage thread keep up (no queue-full drops)

    def settle() -> None:
        deadline = time.monotonic() + 30
        while sink.queue.depth and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)

    feed(400)
    settle()
    committed_before = sink.stats.committed_records
    fill()
    feed(3000)  # ~3 MB while no commit succeeds: far past the 64 KiB bound
    settle()
    errors_while_full = sink.stats.commit_errors
    dropped_while_full = sink.stats.records_dropped
    free()
    feed(400)
    sink.close()
    got = read_streams(root)
    out: dict[str, object] = {
        "committed_before": committed_before, "errors_while_full": errors_while_full,
        "dropped_while_full": dropped_while_full, "dropped": sink.stats.records_dropped,
        "backlog_peak": sink.stats.backlog_peak_bytes, "bound": bound,
        "errors_logged": errors_logged, "sent": i, "stored": 0, "markers": [],
    }
    stored = 0
    for key in keys:
        recs = got.get(key, [])
        data = data_only(recs)
        stored += len(data)
        idx = [int(p[:7]) for p in data]
        assert idx == sorted(idx), "out of order"
        assert data[-50:] == sent[key][-50:], "records after space came back are missing"
        assert set(data) <= set(sent[key])
        drops = [json.loads(p) for p in markers(recs, RecordKind.DROPPED)]
        # markers at the time of what they describe: time never goes back in the stream
        assert [ts for _, ts, _ in recs] == sorted(ts for _, ts, _ in recs)
        assert [ts for k, ts, _ in recs if k == RecordKind.DROPPED] == [
            d["first_ts_ns"] for d in drops]
        for d in drops:
            assert d["reason"] == "storage_commit_failing" and d["errno"] == expect_errno
            assert d["first_ts_ns"] <= d["last_ts_ns"]
            # the marker sits where the records are missing: before it <= first, after > last
            pos = next(k for k, r in enumerate(recs) if r[0] == RecordKind.DROPPED)
            assert all(ts < d["first_ts_ns"] for kind, ts, _ in recs[:pos] if kind == 0)
            assert all(ts > d["last_ts_ns"] for kind, ts, _ in recs[pos + 1:] if kind == 0)
        out["markers"] = [*out["markers"], *drops]  # type: ignore[misc]
    out["stored"] = stored
    # exact after partly failing commits: what the counter says is what the files hold
    out["committed"] = sink.stats.committed_records
    out["records_on_disk"] = sum(len(recs) for recs in got.values())
    return out


def _check_disk_full_result(r: dict[str, object]) -> None:
    assert r["committed_before"] == 400
    assert r["errors_while_full"] and r["dropped_while_full"]  # full, and the bound held
    # memory stayed bounded: at most the bound plus the one batch that crossed it
    assert r["backlog_peak"] < r["bound"] + 51 * 1024  # type: ignore[operator]
    # every record is either stored or counted as dropped, and the markers say which
    assert r["stored"] + r["dropped"] == r["sent"]  # type: ignore[operator]
    assert sum(d["records"] for d in r["markers"]) == r["dropped"]  # type: ignore[union-attr]
    assert r["committed"] == r["records_on_disk"]
    # logged once per (stream, errno), not once per failing commit
    errs = r["errors_logged"]
    assert 1 <= len(errs) <= 4 < r["errors_while_full"]  # type: ignore[arg-type,operator]


def _tmpfs_refused() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs in a private mount namespace"
    if shutil.which("unshare") is None:
        return "unshare(1) not installed"
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        return "unshare --mount refused"
    return None


_CHILD = """
import json, os, sys
from pathlib import Path
import test_sink
mnt = Path(sys.argv[1]); root = mnt / "data"; ballast = mnt / "ballast"
def fill():
    st = os.statvfs(mnt)
    with open(ballast, "wb") as f:
        f.write(bytes(max(0, st.f_bavail * st.f_frsize - (96 << 10))))
def free():
    ballast.unlink()
print(json.dumps(test_sink.sink_disk_full_scenario(root, fill, free, 28)))
"""


@pytest.mark.skipif(_tmpfs_refused() is not None, reason=str(_tmpfs_refused()))
def test_full_disk_bounds_the_backlog_drops_marked_and_resumes_on_tmpfs(tmp_path: Path) -> None:
    """A real 8 MiB tmpfs: filled up while recording, then freed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{here.parents[1]}:{here}"}
    script = 'mount -t tmpfs -o size=8m tmpfs "$1" && exec "$2" -c "$3" "$1"'
    out = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", str(mnt),
                          sys.executable, _CHILD], capture_output=True, env=env, timeout=120)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    _check_disk_full_result(json.loads(out.stdout.decode().strip().splitlines()[-1]))


def test_full_disk_bounds_the_backlog_unprivileged_rlimit_fsize(tmp_path: Path) -> None:
    """RLIMIT_FSIZE in a forked child: growth past the limit fails (EFBIG) as ENOSPC would;
    raising the limit is "space is back"."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

            def fill() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (200 << 10, resource.RLIM_INFINITY))

            def free() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE,
                                   (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

            result = sink_disk_full_scenario(tmp_path / "data", fill, free, errno.EFBIG)
            os.write(w, json.dumps(result).encode())
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data.decode()
    _check_disk_full_result(json.loads(data))
