"""Compaction never loses data: eligibility, refusal of damaged sources, SIGKILL at every step."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from segfiles import DAY, all_records, archive_records, make_batches, write_segment

from storage.compact import CompactError, NotEligible, archive_path_for, compact_segment
from storage.format import HEADER_SIZE

TODAY = DAY + dt.timedelta(days=1)
REPO = Path(__file__).resolve().parents[2]


def test_refuses_today_and_unsealed_and_foreign(tmp_path: Path) -> None:
    batches = make_batches(100, 50)
    today_seg = write_segment(tmp_path, batches, day=TODAY)
    with pytest.raises(NotEligible, match="not over"):
        compact_segment(today_seg, today=TODAY)
    live = write_segment(tmp_path, batches, number=1, sealed=False)
    with pytest.raises(NotEligible, match="not sealed"):
        compact_segment(live, today=TODAY)
    foreign = tmp_path / "notes.seg"
    foreign.write_bytes(b"hello")
    with pytest.raises(NotEligible):
        compact_segment(foreign, today=TODAY)
    for p in (today_seg, live):
        assert p.exists() and not archive_path_for(p).exists()


def test_refuses_a_source_with_a_corrupt_batch(tmp_path: Path) -> None:
    src = write_segment(tmp_path, make_batches(3000, 300))
    data = bytearray(src.read_bytes())
    data[HEADER_SIZE + 30_000] ^= 0xFF  # inside the second or third batch
    src.write_bytes(bytes(data))
    with pytest.raises(CompactError, match="invalid batch at offset"):
        compact_segment(src, today=TODAY)
    assert src.read_bytes() == bytes(data)
    assert list(src.parent.iterdir()) == [src]


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    src = write_segment(tmp_path, make_batches(500, 100))
    res = compact_segment(src, today=TODAY, dry_run=True)
    assert res.action == "dry-run" and res.records == 500
    assert list(src.parent.iterdir()) == [src]


def test_second_run_is_a_no_op_and_stale_tmp_is_replaced(tmp_path: Path) -> None:
    batches = make_batches(2000, 200)
    src = write_segment(tmp_path, batches)
    tmp = archive_path_for(src).with_name(archive_path_for(src).name + ".tmp")
    tmp.write_bytes(b"garbage from a crashed run")
    res = compact_segment(src, today=TODAY)
    assert res.action == "compacted" and not tmp.exists() and not src.exists()
    assert archive_records(res.archive) == all_records(batches)
    with pytest.raises(NotEligible, match="already compacted"):
        compact_segment(src, today=TODAY)
    # a path that never existed is still an error, not a silent skip
    with pytest.raises(FileNotFoundError):
        compact_segment(src.with_name("2026-11-20.0009.seg"), today=TODAY)


def test_existing_bad_archive_is_never_trusted(tmp_path: Path) -> None:
    batches = make_batches(2000, 200)
    src = write_segment(tmp_path, batches)
    archive = archive_path_for(src)
    archive.write_bytes(b"\x28\xb5\x2f\xfd" + b"not really" * 10)
    with pytest.raises(CompactError, match="not a valid archive"):
        compact_segment(src, today=TODAY)
    assert src.exists()  # the source stays until a verified archive exists


_CHILD = textwrap.dedent("""
    import datetime as dt, os, signal, sys
    import storage.archive as archive_mod
    from storage.compact import compact_segment

    path, owner, name, nth, when = sys.argv[1:6]
    target = archive_mod.ContainerWriter if owner == "writer" else os
    original = getattr(target, name)
    calls = [0]

    def hooked(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls[0] == int(nth) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(target, name, hooked)
    compact_segment(path, today=dt.date(2026, 11, 21), frame_target=64 * 1024)
    sys.exit(3)  # the kill point was never reached
""")

# os.fsync call 1: the temporary file; 2: the directory after the rename
KILL_POINTS = [
    ("writer", "add_frame", 1, "before"),
    ("writer", "add_frame", 4, "after"),
    ("os", "fsync", 1, "before"),
    ("os", "fsync", 1, "after"),
    ("os", "replace", 1, "before"),
    ("os", "replace", 1, "after"),
    ("os", "fsync", 2, "before"),
    ("os", "unlink", 1, "before"),
    ("os", "unlink", 1, "after"),
]


@pytest.mark.parametrize(("owner", "name", "nth", "when"), KILL_POINTS)
def test_sigkill_at_every_step_leaves_source_or_verified_archive(
    tmp_path: Path, owner: str, name: str, nth: int, when: str
) -> None:
    batches = make_batches(6000, 250)
    src = write_segment(tmp_path, batches, prealloc=2 << 20)
    original = src.read_bytes()
    archive = archive_path_for(src)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), owner, name, str(nth), when],
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    # the invariant: the untouched source, or a complete verified archive (or both)
    if src.exists():
        assert src.read_bytes() == original
    else:
        assert archive_records(archive) == all_records(batches)
    if archive.exists():
        assert archive_records(archive) == all_records(batches)
    # running again finishes the job, whatever the kill left behind
    res = compact_segment(src, today=TODAY) if src.exists() else None
    assert res is None or res.action in ("compacted", "finished")
    assert not src.exists()
    assert archive_records(archive) == all_records(batches)
    assert sorted(p.name for p in src.parent.iterdir()) == [archive.name]


def test_disk_full_while_writing_keeps_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import storage.archive

    batches = make_batches(3000, 300)
    src = write_segment(tmp_path, batches)
    original = src.read_bytes()
    calls = [0]
    real = storage.archive.ContainerWriter.add_frame

    def full(self: object, *args: object) -> object:
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(storage.archive.ContainerWriter, "add_frame", full)
    with pytest.raises(OSError, match="No space"):
        compact_segment(src, today=TODAY, frame_target=64 << 10)
    assert [p.name for p in src.parent.iterdir()] == [src.name]
    assert src.read_bytes() == original
    monkeypatch.undo()
    assert compact_segment(src, today=TODAY).action == "compacted"
    assert archive_records(archive_path_for(src)) == all_records(batches)
