"""``ingest.cpus``: each recording process, with every one of its threads, on one CPU.

Real daemon processes against the simulator; the affinity is read back from /proc for every
thread (the loop, the storage thread, the metrics server, the sealing pool), which is what
proves the pin happened before any thread started.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from e2e_harness import start_daemon, start_sim, stop_all

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                reason="needs 2 CPUs to tell a pin from no pin")


def _thread_cpus(pid: int) -> dict[str, set[int]]:
    """Each thread's allowed CPUs (``Cpus_allowed_list``), by thread id."""
    out: dict[str, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "status").read_text()
        m = re.search(r"^Cpus_allowed_list:\s*(\S+)", text, re.M)
        assert m is not None
        cpus: set[int] = set()
        for part in m.group(1).split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
        out[task.name] = cpus
    return out


def test_single_process_and_all_its_threads_run_on_the_chosen_cpu(
    tmp_path: Path, data_root: Path,
) -> None:
    cpu = max(os.sched_getaffinity(0))
    sim = start_sim(tmp_path, dialect="advanced_trade", products=20, rate=300, duration=30)
    d = start_daemon(sim, data_root, dialect="advanced_trade", sets=(f"ingest.cpus=[{cpu}]",))
    try:
        d.wait_for("event=all_acknowledged", 30)
        threads = _thread_cpus(d.proc.pid)
        assert len(threads) >= 3  # loop, storage thread, metrics server at least
        assert all(cpus == {cpu} for cpus in threads.values()), threads
        assert f"event=cpu_pinned cpu={cpu}" in d.log()
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        stop_all(d, sim)


def test_each_worker_on_its_own_cpu_supervisor_unpinned(tmp_path: Path, data_root: Path) -> None:
    a, b = sorted(os.sched_getaffinity(0))[:2]
    sim = start_sim(tmp_path, dialect="advanced_trade", products=20, rate=300, duration=30)
    d = start_daemon(sim, data_root, dialect="advanced_trade",
                     sets=("ingest.workers=2", f"ingest.cpus={b},{a}"))
    try:
        d.wait_for("event=all_acknowledged", 30)
        pids = {int(w): int(p) for w, p in
                re.findall(r"event=worker_started worker=(\d+) pid=(\d+)", d.log())}
        assert sorted(pids) == [0, 1], d.log()
        for worker, want in ((0, b), (1, a)):
            threads = _thread_cpus(pids[worker])
            assert all(cpus == {want} for cpus in threads.values()), (worker, threads)
        assert len(set().union(*_thread_cpus(d.proc.pid).values())) >= 2  # not pinned
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        stop_all(d, sim)
