"""cbl-merge reads s3:// roots of shipped archives like local ones."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from storage import Engine, EngineConfig, RecordKind
from storage.compact import compact_segment
from storage.layout import iter_segments
from storage.reader import SegmentReader
from tools.merge_cli import main as merge
from tools.ship_cli import main as ship

T0 = 1_796_601_600 * 1_000_000_000  # 2026-12-07T00:00:00Z
S = 1_000_000_000


def recording(root: Path, missing: range) -> None:
    eng = Engine(EngineConfig(root=root, backend="pwrite", seal_stale_on_open=False))
    s = eng.stream("BTC-USD", "matches")
    for n in range(40):
        if n in missing:
            continue
        if n == missing.stop:
            eng.append(s, T0 + n * S - 1, b'{"missed":1}', RecordKind.GAP)
        eng.append(s, T0 + n * S, b'{"type":"match","trade_id":%d,"sequence":%d}' % (n, n))
    eng.close()
    for ref in iter_segments(root):
        compact_segment(ref.path, today=ref.day + dt.timedelta(days=1))
    (root / ".coinbase-logger.json").write_text(json.dumps({"dialect": "exchange"}))


def data(root: Path) -> list[bytes]:
    out: list[bytes] = []
    for ref in iter_segments(root):
        r = SegmentReader.open(ref.path)
        try:
            out += [x.payload for x in r.records() if x.kind == RecordKind.DATA]
        finally:
            r.close()
    return out


def test_merge_of_remote_roots_equals_the_local_merge(
        tmp_path: Path, bucket: str, capfd: pytest.CaptureFixture[str]) -> None:
    recording(tmp_path / "a", range(10, 20))
    recording(tmp_path / "b", range(25, 30))
    for name in ("a", "b"):
        assert ship([str(tmp_path / name), f"s3://{bucket}/{name}"]) == 0
    assert merge([str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                  str(tmp_path / "local")]) == 0
    assert merge([f"s3://{bucket}/a", f"s3://{bucket}/b", "--out", str(tmp_path / "remote"),
                  "--dialect", "exchange"]) == 0
    _, err = capfd.readouterr()
    assert data(tmp_path / "remote") == data(tmp_path / "local")
    assert len(data(tmp_path / "remote")) == 40 and "0 gap(s) remaining" in err
    # without a local .coinbase-logger.json the dialect must be given
    assert merge([f"s3://{bucket}/a", f"s3://{bucket}/b", "--out", str(tmp_path / "x")]) == 2
    assert "give --dialect" in capfd.readouterr()[1]
