"""Failures below the engine: a backend write error keeps every record pending and is reported;
the next commit writes them; fsync runs on its interval; the backend name is validated."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

import pytest
from segment_fixtures import NOON_NS, read_all

from storage import Engine, EngineConfig
from storage.backends import MmapBackend, WriteOp, make_backend


class FlakyBackend(MmapBackend):
    """The real mmap backend, failing the next ``fail`` write calls with EIO and counting
    sync calls."""

    def __init__(self) -> None:
        self.fail = 0
        self.synced: list[list[int]] = []

    def write(self, ops: Sequence[WriteOp]) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError(errno.EIO, "injected I/O error")
        super().write(ops)

    def sync(self, fds: Sequence[int]) -> None:
        self.synced.append(list(fds))
        super().sync(fds)


def test_write_error_keeps_records_pending_and_the_retry_commits_them(root: Path) -> None:
    backend = FlakyBackend()
    eng = Engine(EngineConfig(root=root, backend="mmap", seal_stale_on_open=False), backend)
    a, b = eng.stream("BTC-USD", "level2"), eng.stream("ETH-USD", "level2")
    eng.extend(a, [NOON_NS, NOON_NS + 1], [b"a1", b"a2"])
    eng.commit(now_ns=NOON_NS)
    eng.extend(a, [NOON_NS + 2], [b"a3"])
    eng.extend(b, [NOON_NS + 3], [b"b1"])
    backend.fail = 1
    res = eng.commit(now_ns=NOON_NS)  # must not raise
    assert res.records == 0 and len(res.errors) == 1
    assert res.errors[0].errno == errno.EIO and "injected" in str(res.errors[0])
    assert eng.pending_records == 2
    assert read_all(root) == [(NOON_NS, 0, b"a1"), (NOON_NS + 1, 0, b"a2")]
    res = eng.commit(now_ns=NOON_NS)
    assert res.records == 2 and not res.errors
    eng.close()
    assert [p for _, _, p in read_all(root)] == [b"a1", b"a2", b"a3", b"b1"]


def test_commit_point_write_error_exposes_nothing(root: Path) -> None:
    """The batch bytes are written, the commit point write fails: nothing new is visible and
    the retry writes the same records once."""

    class FailSecond(MmapBackend):
        calls = 0

        def write(self, ops: Sequence[WriteOp]) -> None:
            FailSecond.calls += 1
            if FailSecond.calls == 2:
                raise OSError(errno.EIO, "commit point lost")
            super().write(ops)

    eng = Engine(EngineConfig(root=root, backend="mmap", seal_stale_on_open=False),
                 FailSecond())
    s = eng.stream("BTC-USD", "level2")
    eng.append(s, NOON_NS, b"x")
    assert eng.commit(now_ns=NOON_NS).errors
    assert read_all(root) == []
    assert eng.commit(now_ns=NOON_NS).records == 1
    eng.close()
    assert read_all(root) == [(NOON_NS, 0, b"x")]


def test_fsync_interval_syncs_written_segments(root: Path) -> None:
    backend = FlakyBackend()
    cfg = EngineConfig(root=root, backend="mmap", fsync_interval_s=0.0, seal_stale_on_open=False)
    eng = Engine(cfg, backend)
    s = eng.stream("BTC-USD", "level2")
    assert not eng.commit_due()
    eng.append(s, NOON_NS, b"x")
    eng.commit(now_ns=NOON_NS)
    assert len(backend.synced) == 1 and len(backend.synced[0]) == 1
    eng.commit(now_ns=NOON_NS)  # nothing new written: nothing to sync
    assert len(backend.synced) == 1
    eng.close()


def test_without_fsync_interval_nothing_is_synced(root: Path) -> None:
    backend = FlakyBackend()
    eng = Engine(EngineConfig(root=root, backend="mmap", seal_stale_on_open=False), backend)
    eng.append(eng.stream("BTC-USD", "level2"), NOON_NS, b"x")
    eng.commit(now_ns=NOON_NS)
    eng.close()
    assert backend.synced == []


def test_backend_names() -> None:
    assert make_backend("mmap").name == "mmap"
    assert make_backend("auto").name in ("mmap", "uring")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        make_backend("fast")


@pytest.mark.parametrize("bad", [dict(commit_records=0), dict(commit_interval_s=0),
                                 dict(segment_max_bytes=100), dict(fsync_interval_s=-1),
                                 dict(seals_per_commit=0), dict(max_batch_bytes=10)])
def test_config_rejects_nonsense(root: Path, bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        EngineConfig(root=root, **bad)  # type: ignore[arg-type]
