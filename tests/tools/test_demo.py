"""`make demo` (tools/demo): records into ./demo-data, never ./data, and again into
the same folder on a later run (a new simulator port), but never into a real venue's root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from logger.daemon import claim_data_dir
from logger.provenance import DATA_DIR_META, Venue, release

REPO = Path(__file__).resolve().parents[2]


def _demo(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.demo_cli", "--seconds", "1.5", "--products", "3",
         "--rate", "200", *extra],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def test_demo_records_into_demo_data_and_leaves_data_untouched(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "real.txt").write_text("real data")
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    meta = json.loads((tmp_path / "demo-data" / DATA_DIR_META).read_text())
    assert meta["venue"]["ws_url"].startswith("ws://127.0.0.1:")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["real.txt"]
    assert "BTC-USD" in first.stdout or any((tmp_path / "demo-data").glob("*-USD"))
    second = _demo(tmp_path)  # another simulator port: still the demo's own folder
    assert second.returncode == 0, second.stderr[-2000:]
    runs = json.loads((tmp_path / "demo-data" / DATA_DIR_META).read_text())["runs"]
    assert len(runs) == 2 and runs[0]["ws_url"] != runs[1]["ws_url"]


def test_demo_refuses_a_real_venues_root(tmp_path: Path) -> None:
    real = tmp_path / "data"
    claim_data_dir(real, Venue("advanced_trade", "wss://advanced-trade-ws.coinbase.com",
                               "https://api.coinbase.com/api/v3/brokerage/market/products"))
    release(real)
    done = _demo(tmp_path, "--data-dir", "data")
    assert done.returncode == 2
    assert "refusing to record" in done.stderr
    assert not any(p.is_dir() for p in real.iterdir())  # nothing recorded into it
