"""No silent loss across a real ``kill -9`` of the daemon and a shutdown on a full disk.

The simulator runs with a ledger; the daemon is a real process. After each scenario every
ledger frame that is not stored lies in its stream where a marker says data may be missing
(``tools.venue.coverage``): RESTART markers written at the next start after the kill, DROPPED
markers for what the full disk and the failed shutdown lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import REPO, Sim, start_daemon, start_sim, stop_all

from storage.records import RecordKind
from tools.venue.coverage import check_coverage, read_streams

pytestmark = pytest.mark.slow


def _inspect(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tools.inspect_cli", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    return out.stdout


def _markers(root: Path, kind: RecordKind) -> list[dict[str, object]]:
    from storage.layout import iter_segments
    from storage.reader import SegmentReader
    out = []
    for ref in iter_segments(root):
        with SegmentReader.open(ref.path) as r:
            out += [json.loads(x.payload) for x in r.records() if x.kind == kind]
    return out


def _kill_and_restart(tmp_path: Path, data_root: Path, *, kill_after_s: float,
                      sets: tuple[str, ...] = (), nothing_committed: bool = False) -> Sim:
    """Record, ``kill -9`` the daemon ``kill_after_s`` after every subscription is
    acknowledged, start it again on the same root (it must mark the unclean end), stop it
    cleanly; the simulator, stopped, with its ledger."""
    sim = start_sim(tmp_path, dialect="advanced_trade", products=20, rate=3000, duration=60)
    d = start_daemon(sim, data_root, dialect="advanced_trade", sets=sets)
    try:
        d.wait_for("event=all_acknowledged", 30)
        time.sleep(kill_after_s)
        if nothing_committed:
            assert sum(map(_header_records, data_root.rglob("*.seg"))) == 0
        d.proc.kill()
        assert d.proc.wait(10) == -9
        time.sleep(1.0)  # the venue keeps sending into the dead socket meanwhile
        d = start_daemon(sim, data_root, dialect="advanced_trade")
        d.wait_for("event=all_acknowledged", 30)
        d.wait_for("marking an unclean end of the previous run", 5)
        time.sleep(2.0)
        assert d.terminate() == 0, d.log()
    finally:
        stop_all(d, sim)
    return sim


def test_kill_9_hole_is_marked_at_restart(tmp_path: Path, data_root: Path) -> None:
    sim = _kill_and_restart(tmp_path, data_root, kill_after_s=3.5)  # mid commit window (5 s)
    cov = check_coverage(sim.ledger, data_root)
    assert cov.missing > 0, "the kill lost nothing: the test did not test"
    assert cov.covered == cov.missing, f"uncovered: {cov.uncovered[:5]}"
    assert cov.backward_steps == 0
    restarts = _markers(data_root, RecordKind.RESTART)
    assert restarts and all(m["reason"] == "unclean_shutdown" for m in restarts)
    for m in restarts:
        start, end = m["from_ts_ns"], m["to_ts_ns"]
        assert isinstance(start, int) and isinstance(end, int) and start < end, m
    listing = _inspect("ls", str(data_root))
    totals, possible = listing.splitlines()[-2:]
    assert f"{len(restarts)} restart" in totals
    assert possible.startswith("possible loss: ") and "restart" in possible
    cat = _inspect("cat", str(data_root), "--markers-only", "--format", "jsonl")
    assert sum(json.loads(line)["kind"] == "restart" for line in cat.splitlines()) == len(
        restarts)
    assert not list(data_root.glob(".live*"))  # the clean stop removed the journal
    _inspect("verify", "--strict", str(data_root))  # no damage, no "time goes back" warning


def test_kill_9_before_the_first_commit_is_marked_at_restart(tmp_path: Path,
                                                             data_root: Path) -> None:
    """Nothing was committed yet when the daemon dies (a long commit window): every stream
    that had received frames must still get its RESTART marker at the next start, since the
    receive path names each stream in the live journal the moment its first frame arrives."""
    window = ("storage.commit_interval_s=600", "storage.commit_records=10000000")
    sim = _kill_and_restart(tmp_path, data_root, kill_after_s=2.0, sets=window,
                            nothing_committed=True)
    cov = check_coverage(sim.ledger, data_root)
    assert cov.missing > 1000, "the kill lost little: the test did not test"
    assert cov.covered == cov.missing, f"uncovered: {len(cov.uncovered)} {cov.uncovered[:3]}"
    restarts = _markers(data_root, RecordKind.RESTART)
    assert len(restarts) >= 20 and all(m["from_ts_ns"] is None for m in restarts)


def _header_records(path: Path) -> int:
    from storage.format import HEADER_SIZE, decode_header
    return decode_header(path.read_bytes()[:HEADER_SIZE]).record_count


def _mount_tmpfs(path: Path, size: str) -> str | None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "needs root and mount(8) to mount a small tmpfs"
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    return None if out.returncode == 0 else f"mount -t tmpfs refused: {out.stderr.strip()}"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    why = _mount_tmpfs(mnt, "6m")
    if why is not None:
        pytest.skip(why)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_shutdown_on_a_full_disk_counts_logs_and_marks_what_it_loses(
    tmp_path: Path, small_disk: Path, workers: int
) -> None:
    """With two workers the supervisor exits 3 when one of them did, and its marking pass
    at the next start turns the workers' loss ledgers into markers."""
    root = small_disk / "data"
    sim = start_sim(tmp_path, dialect="advanced_trade", products=10, rate=6000, duration=90)
    sets = ("storage.shutdown_retry_s=1.5", "storage.max_backlog_bytes=1048576",
            "storage.commit_interval_s=1.0", f"ingest.workers={workers}")
    d = start_daemon(sim, root, dialect="advanced_trade", sets=sets)
    try:
        d.wait_for("event=all_acknowledged", 30)
        d.wait_for("event=commit_error", 60)
        time.sleep(2.0)  # full: the backlog fills, then batches are dropped and counted
        t0 = time.monotonic()
        code = d.terminate(30)
        stop_s = time.monotonic() - t0
        log = d.log()
        assert code == 3, log
        assert stop_s < 1.5 + 10, stop_s
        assert "event=shutdown_commit_retry" in log and "event=records_lost_at_shutdown" in log
        status = [line for line in log.splitlines() if " dropped=" in line][-1]
        assert int(status.split(" dropped=")[1].split()[0]) > 0, status
        ledgers = list(root.glob(".loss*"))
        assert ledgers and any(p.read_bytes().strip(b"\0") for p in ledgers)
        subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
        d = start_daemon(sim, root, dialect="advanced_trade", sets=sets)
        d.wait_for("event=all_acknowledged", 30)
        time.sleep(2.0)
        assert d.terminate() == 0, d.log()
    finally:
        stop_all(d, sim)
    assert not list(root.glob(".loss*")), "the loss ledger outlived its markers"
    drops = _markers(root, RecordKind.DROPPED)
    reasons = {m["reason"] for m in drops}
    assert "lost_at_shutdown" in reasons, reasons
    cov = check_coverage(sim.ledger, root)
    assert cov.missing > 0
    assert cov.covered == cov.missing, f"uncovered: {cov.uncovered[:5]}"
    assert cov.backward_steps == 0
    assert read_streams(root)
    _inspect("verify", "--strict", str(root))  # no damage, no "time goes back" warning
