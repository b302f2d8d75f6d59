"""A short seeded slice of ``bench/chaos.py`` (the full run is ``make chaos``): the simulator and
the daemon under kill -9 (one in the first commit window), disconnect storms, sequence gaps, a
ping flood, a trickling REST endpoint and a full tmpfs (when it can be mounted), then every
ledger frame that is not stored lies inside a marker of its stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_short_chaos_run_loses_nothing_silently() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "chaos.py"), "--seconds", "35", "--seed", "3",
         "--interval", "5", "--faults",
         "disconnect_storm,seq_gap,ping_flood,slow_rest,kill9,full_disk"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode in (0, 1), out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["sent"] > 10_000 and r["stored"] > 0.3 * r["sent"], r
    assert r["kills"] >= 1 and r["full_disks"] + r["mount_refused"] >= 1, r["events"]
    first_kill_s = min(float(e.split("s")[0]) for e in r["events"] if e.endswith("kill9"))
    assert first_kill_s < 5.0, r["events"]  # inside the first run's first commit window
    assert r["missing"] > 0, "no fault lost anything: the run did not test the invariant"
    assert r["missing_inside_markers"] == r["missing"], r["uncovered_examples"]
    assert out.returncode == 0
    assert r["time_backward_steps"] == 0
    assert r["verify_problems"] == 0 and r["verify_warnings"] == 0
    assert r["peak_rss_mb"] < r["rss_bound_mb"]
    assert r["longest_sigterm_to_exit_s"] < 10
