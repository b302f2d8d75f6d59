"""The real engine records generated market data over a day boundary; the tools take over."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from storage.engine import Engine, EngineConfig
from storage.records import RecordKind
from tools.compact_cli import main as compact_main
from tools.inspect_cli import main as inspect_main
from tools.venue.generator import MarketModel

DAY1_END_NS = int(dt.datetime(2026, 11, 21, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def test_engine_day_compact_inspect_round_trip(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    model = MarketModel(3, 4, "advanced_trade")
    written: dict[tuple[str, str], list[tuple[int, int, bytes]]] = defaultdict(list)
    start = DAY1_END_NS - 2_000_000_000  # two seconds before midnight UTC
    with Engine(EngineConfig(root=root, backend="pwrite", commit_records=500)) as eng:
        for i, (product, channel, raw) in enumerate(model.day_of_messages(6000)):
            ts = start + i * 1_000_000  # 1 ms apart: the last 4000 fall on the next day
            stream = eng.stream(product, channel)
            kind = RecordKind.GAP if i % 1500 == 7 else RecordKind.DATA
            payload = b'{"reason":"test"}' if kind else raw
            eng.append(stream, ts, payload, kind)
            written[(product, channel)].append((ts, int(kind), payload))
            if eng.commit_due():
                eng.commit(now_ns=ts)
    # compact day one as if it were the 21st
    code = compact_main(["--today", "2026-11-21", "-q", str(root)])
    _, err = capfd.readouterr()
    assert code == 0, err
    assert list(root.rglob("2026-11-20.*.seg.zst")) and not list(root.rglob("2026-11-20.*.seg"))
    assert list(root.rglob("2026-11-21.*.seg"))
    assert inspect_main(["verify", str(root)]) == 0
    capfd.readouterr()
    # every record comes back, archived day and live day alike, through the same command
    assert inspect_main(["cat", str(root), "--format", "jsonl"]) == 0
    out, _ = capfd.readouterr()
    got: dict[tuple[str, str], list[tuple[int, int, bytes]]] = defaultdict(list)
    for line in out.splitlines():
        rec = orjson.loads(line)
        kind = int(RecordKind[rec["kind"].upper()])
        got[(rec["product"], rec["channel"])].append((rec["ts_ns"], kind, orjson.dumps(rec["msg"])))
    assert got.keys() == written.keys()
    for key, recs in written.items():
        assert [(t, k) for t, k, _ in got[key]] == [(t, k) for t, k, _ in recs], key
        assert [orjson.loads(p) for _, _, p in got[key]] == [orjson.loads(p) for _, _, p in recs]
    # and --from across the day boundary starts exactly there
    assert inspect_main(["cat", str(root), "--format", "jsonl", "--merge",
                         "--from", str(DAY1_END_NS - 5_000_000), "--to",
                         str(DAY1_END_NS + 5_000_000)]) == 0
    out, _ = capfd.readouterr()
    ts = [orjson.loads(line)["ts_ns"] for line in out.splitlines()]
    assert ts == [DAY1_END_NS + d * 1_000_000 for d in range(-5, 5)]
