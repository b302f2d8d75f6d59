"""Replay of the real 2021 Exchange capture (../shared/coinbase) through compact and inspect.

Optional by design: the shared reference files are not part of the repository. When they are
absent the test is skipped and says why.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from segfiles import write_segment

from tools.compact_cli import main as compact_main
from tools.inspect_cli import main as inspect_main

SHARED = Path(__file__).resolve().parents[3] / "shared" / "coinbase"
CAPTURE = SHARED / "exchange_stream_2021-04-17.jsonl"
STAMPS = SHARED / "exchange_stream_2021-04-17.recv_ts.txt"

pytestmark = pytest.mark.skipif(
    not (CAPTURE.exists() and STAMPS.exists()),
    reason=f"shared Coinbase capture not found at {SHARED} (optional reference files)",
)


def test_real_capture_round_trip_and_trade_ids(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    lines = CAPTURE.read_bytes().splitlines()
    stamps = [int(float(s) * 1e9) for s in STAMPS.read_text().split()]
    streams: dict[tuple[str, str], list[tuple[int, int, bytes]]] = defaultdict(list)
    trades: dict[str, list[int]] = defaultdict(list)
    for raw, ts in zip(lines, stamps, strict=True):
        msg = json.loads(raw)
        kind = msg.get("type")
        channel = {"snapshot": "level2", "l2update": "level2", "ticker": "ticker",
                   "match": "matches", "last_match": "matches"}.get(kind, "_conn0")
        product = msg["product_id"] if channel != "_conn0" else "_conn0"
        streams[(product, channel)].append((ts, 0, raw))
        if kind in ("match", "last_match"):
            trades[product].append(msg["trade_id"])
    day = dt.datetime.fromtimestamp(stamps[0] / 1e9, dt.UTC).date()
    root = tmp_path / "data"
    for (product, channel), recs in streams.items():
        batches = [recs[i:i + 500] for i in range(0, len(recs), 500)]
        write_segment(root, batches, product=product, channel=channel, day=day)
    assert compact_main(["--today", str(day + dt.timedelta(days=1)), "-q", str(root)]) == 0
    capfd.readouterr()
    assert not list(root.rglob("*.seg"))
    assert inspect_main(["verify", str(root)]) == 0
    capfd.readouterr()
    # the archived bytes are the venue's bytes, line for line
    assert inspect_main(["cat", str(root), "--merge"]) == 0
    out = capfd.readouterr()[0].encode()
    assert sorted(out.splitlines()) == sorted(lines)
    # trade ids: stats finds exactly the jumps a plain walk over the capture finds
    assert inspect_main(["stats", str(root), "-c", "matches", "--json"]) == 0
    stats = [orjson.loads(x) for x in capfd.readouterr()[0].splitlines()]
    for s in stats:
        ids = sorted(trades[s["product"]])
        gaps = sum(1 for a, b in itertools.pairwise(ids) if b > a + 1)
        assert s["trade_id_gaps"][s["product"]]["gaps"] == gaps
        assert s["messages"] == len(ids)
