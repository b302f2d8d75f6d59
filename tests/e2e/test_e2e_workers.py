"""The sharded daemon (``ingest.workers=2``) and the simulator as real processes on loopback.

Each test checks the ledger against storage (every frame stored exactly once, byte for byte,
in order per stream), and that the workers never shared a stream: every stream's markers name
connections of one worker only (``w<i>-<n>``), and the multi-product streams are the
per-worker ``_multi-w<i>``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from e2e_harness import (
    REPO,
    DaemonProc,
    Stored,
    check_exactly_once,
    check_order_per_stream,
    check_prefix_per_connection,
    ledger_frames,
    read_stored,
    sha,
    start_daemon,
    start_sim,
    stop_all,
)

from storage.records import RecordKind
from tools.venue.ledger import FrameEntry

pytestmark = pytest.mark.slow

WORKERS = ("ingest.workers=2",)

AT_FAULTS = ",".join([
    "seq_skip:3@c1/150",         # a sequence gap → GAP marker naming the lost range
    "abnormal_close@c2/120",      # TCP reset → DISCONNECT, reconnect, RECONNECT
    "malformed:bad_json@c0/60",   # kept raw in that connection's _unrouted stream
])


def _parent_line(d: DaemonProc, event: str, timeout: float) -> str:
    """The supervisor's own line for ``event`` (worker lines carry ``worker=``)."""
    end = time.monotonic() + timeout
    while True:
        for line in d.log().splitlines():
            if f"event={event}" in line and "logger.supervisor" in line:
                return line
        if time.monotonic() > end or d.proc.poll() is not None:
            raise AssertionError(f"supervisor never logged {event}; log:\n{d.log()}")
        time.sleep(0.1)


def _worker_pids(d: DaemonProc) -> dict[int, int]:
    pids = {}
    for m in re.finditer(r"event=worker_started worker=(\d+) pid=(\d+)", d.log()):
        pids[int(m.group(1))] = int(m.group(2))
    return pids


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: its parent may be gone and nobody reaps it here)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def check_one_writer_per_stream(stored: Stored) -> set[str]:
    """Every stream written by one worker; returns the workers seen."""
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key, recs in stored.streams.items():
        product = key[0]
        if product.startswith("_conn"):
            owners[key].add(product[len("_conn"):].split("-")[0])
        if product.startswith("_multi"):
            assert re.fullmatch(r"_multi-w\d+", product), product
            owners[key].add(product.rsplit("-", 1)[1])
        for kind, payload in recs:
            if kind != RecordKind.DATA:
                conn = json.loads(payload).get("conn")
                if conn is not None:
                    owners[key].add(str(conn).split("-")[0])
    shared = {k: v for k, v in owners.items() if len(v) != 1}
    assert not shared, f"streams written by several workers: {list(shared.items())[:5]}"
    assert all(k in owners for k in stored.streams), "a stream without any marker"
    return {w for ws in owners.values() for w in ws}


def check_prefix_per_stream(frames: list[FrameEntry], stored: Stored) -> int:
    """Per venue connection and stream, what is stored is a prefix of what was sent (no
    hole, no duplicate, nothing the venue never sent); the number of frames stored.

    A stream is told by the frame's (channel, products): on one connection, frames alike in
    both go to one stream.
    """
    got = Counter(sha(p) for _, p in stored.data())
    groups: dict[tuple[int, str, tuple[str, ...]], list[FrameEntry]] = defaultdict(list)
    for f in frames:
        groups[(f.conn, f.channel, tuple(f.products))].append(f)
    total = 0
    for key, fs in groups.items():
        fs.sort(key=lambda f: f.i)
        n = 0
        while n < len(fs) and got[fs[n].sha256] > 0:
            got[fs[n].sha256] -= 1
            n += 1
        rest = [f for f in fs[n:] if got[f.sha256] > 0]
        assert not rest, f"{key}: {len(rest)} frames stored after a hole at {n}"
        total += n
    leftover = +got
    assert not leftover, f"{sum(leftover.values())} stored records the venue never sent"
    return total


def test_two_workers_advanced_trade_with_faults(tmp_path: Path, data_root: Path) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=80, rate=1200, duration=6,
                    faults=AT_FAULTS)
    d = start_daemon(sim, data_root, dialect="advanced_trade", sets=WORKERS)
    try:
        acked = _parent_line(d, "all_acknowledged", 30)
        assert sim.wait(40) == 0  # the venue ends the session (close 1001)
        assert d.terminate() == 0, d.log()
    finally:
        stop_all(d, sim)
    assert "products=80" in acked and "missing=0" in acked and "workers=2" in acked, acked
    log = d.log()
    assert re.search(r"worker=0 .*event=status", log) and re.search(r"worker=1 .*event=status",
                                                                     log)
    frames, faults = ledger_frames(sim.ledger)
    stored = read_stored(data_root)
    check_exactly_once(frames, stored)
    check_prefix_per_connection(frames, stored)
    assert check_order_per_stream(frames, stored) > 0.9 * len(frames)
    assert check_one_writer_per_stream(stored) == {"w0", "w1"}
    multi = {k[0] for k in stored.streams if k[0].startswith("_multi")}
    assert multi <= {"_multi-w0", "_multi-w1"} and multi, multi
    # markers where the faults were injected
    fired = {str(f["fault"]) for f in faults}
    assert fired == {"seq_skip", "abnormal_close", "malformed"}, fired
    gaps = stored.markers(RecordKind.GAP)
    for f in faults:
        if f["fault"] == "seq_skip":
            want = (f["skipped_from"], f["skipped_to"])
            assert any((m.get("first_missing_sequence_num"), m.get("last_missing_sequence_num"))
                       == want for _, m in gaps), (want, gaps[:3])
    reasons = {str(m.get("reason")) for _, m in stored.markers(RecordKind.DISCONNECT)}
    assert any(r != "shutdown" for r in reasons), reasons
    assert stored.markers(RecordKind.RECONNECT)
    assert any(k[1] == "_unrouted" for k in stored.streams)


def test_two_workers_exchange(tmp_path: Path, data_root: Path) -> None:
    sim = start_sim(tmp_path, dialect="exchange", products=40, rate=600, duration=4,
                    faults="abnormal_close@c1/80")
    d = start_daemon(sim, data_root, dialect="exchange", sets=WORKERS)
    try:
        acked = _parent_line(d, "all_acknowledged", 30)
        assert sim.wait(40) == 0
        assert d.terminate() == 0, d.log()
    finally:
        stop_all(d, sim)
    assert "products=40" in acked and "missing=0" in acked, acked
    frames, _ = ledger_frames(sim.ledger)
    stored = read_stored(data_root)
    check_exactly_once(frames, stored)
    assert check_order_per_stream(frames, stored) > 0.9 * len(frames)
    assert check_one_writer_per_stream(stored) == {"w0", "w1"}
    assert stored.markers(RecordKind.RECONNECT)


def test_sigterm_commits_everything_and_a_second_daemon_is_refused(
    tmp_path: Path, data_root: Path,
) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=60, rate=1000, duration=60)
    d = start_daemon(sim, data_root, dialect="advanced_trade", sets=WORKERS)
    try:
        _parent_line(d, "all_acknowledged", 30)
        # a second daemon on the same root: refused at once, exit 2, whatever its workers
        for sets in (WORKERS, ("ingest.workers=1",)):
            second = start_daemon(sim, data_root, dialect="advanced_trade", sets=sets)
            assert second.proc.wait(30) == 2, second.log()
            assert "is in use" in second.log() and "data_dir_refused" in second.log()
        time.sleep(1.5)
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        stop_all(d, sim)
    assert len(re.findall(r"worker=\d .*event=stopped .*exit=0", d.log())) == 2
    frames, _ = ledger_frames(sim.ledger)
    stored = read_stored(data_root)
    assert sum(check_prefix_per_connection(frames, stored).values()) > 500
    assert stored.markers(RecordKind.DISCONNECT) == []  # a clean stop is not a possible loss
    assert {m.get("reason") for _, m in stored.markers(RecordKind.STOP)} == {"shutdown"}
    check_one_writer_per_stream(stored)


def test_worker_killed_stops_the_daemon_with_exit_1(tmp_path: Path, data_root: Path) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=60, rate=1000, duration=60)
    d = start_daemon(sim, data_root, dialect="advanced_trade", sets=WORKERS)
    try:
        _parent_line(d, "all_acknowledged", 30)
        time.sleep(1)
        pids = _worker_pids(d)
        os.kill(pids[1], signal.SIGKILL)
        assert d.proc.wait(30) == 1, d.log()
    finally:
        stop_all(d, sim)
    log = d.log()
    assert re.search(r"event=worker_died worker=1 pid=\d+ code=-9", log), log
    assert re.search(r"worker=0 .*event=stopped .*exit=0", log), log
    frames, _ = ledger_frames(sim.ledger)
    stored = read_stored(data_root)
    check_one_writer_per_stream(stored)
    # worker 1 lost only what it had not committed yet: per stream a tail, nothing doubled
    # (a commit is atomic per stream, not across the streams it touches, so a kill in the
    # middle of one can leave one stream a batch ahead of another of the same connection)
    assert check_prefix_per_stream(frames, stored) > 300
    verify = subprocess.run([str(REPO / "tools" / "inspect"), "verify", str(data_root)],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_supervisor_killed_workers_stop_on_their_own(tmp_path: Path, data_root: Path) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=60, rate=1000, duration=60)
    d = start_daemon(sim, data_root, dialect="advanced_trade", sets=WORKERS)
    try:
        _parent_line(d, "all_acknowledged", 30)
        time.sleep(1)
        pids = _worker_pids(d)
        assert len(pids) == 2
        d.proc.kill()
        d.proc.wait(10)
        end = time.monotonic() + 30
        while not all(_gone(p) for p in pids.values()) and time.monotonic() < end:
            time.sleep(0.1)
        assert all(_gone(p) for p in pids.values()), "workers outlived their supervisor"
    finally:
        stop_all(d, sim)
    time.sleep(0.5)  # the stderr pump drains the workers' last lines
    log = d.log()
    assert len(re.findall(r"worker=\d .*event=stopped .*exit=0", log)) == 2, log
    frames, _ = ledger_frames(sim.ledger)
    stored = read_stored(data_root)
    assert sum(check_prefix_per_connection(frames, stored).values()) > 500
    assert stored.markers(RecordKind.DISCONNECT) == []  # a clean stop is not a possible loss
    assert {m.get("reason") for _, m in stored.markers(RecordKind.STOP)} == {"shutdown"}
    check_one_writer_per_stream(stored)
    verify = subprocess.run([str(REPO / "tools" / "inspect"), "verify", str(data_root)],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
