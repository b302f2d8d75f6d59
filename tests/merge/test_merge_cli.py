"""cbl-merge as a command: usage errors, a normal output root, the report, filters."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from storage import Engine, EngineConfig, RecordKind
from storage.archive_verify import verify_file
from storage.layout import iter_segments
from storage.reader import SegmentReader
from tools.merge_cli import main

T0 = 1_796_601_600 * 1_000_000_000  # 2026-12-07T00:00:00Z
S = 1_000_000_000


def msg(n: int, product: str = "BTC-USD") -> bytes:
    return (b'{"type":"match","trade_id":%d,"sequence":%d,"product_id":"%s","time":"t%d"}'
            % (n, 1000 + n, product.encode(), n))


def record(root: Path, items: list[tuple[int, int, bytes]], product: str = "BTC-USD",
           dialect: str = "exchange") -> None:
    eng = Engine(EngineConfig(root=root, backend="pwrite", seal_stale_on_open=False))
    s = eng.stream(product, "matches")
    for ts, kind, payload in items:
        eng.append(s, ts, payload, RecordKind(kind))
    eng.close()
    (root / ".coinbase-logger.json").write_text(json.dumps({"dialect": dialect}))


def read(root: Path) -> list[tuple[int, int, bytes]]:
    out = []
    for ref in iter_segments(root):
        r = SegmentReader.open(ref.path)
        try:
            out += [(x.ts_ns, x.kind, x.payload) for x in r.records()]
        finally:
            r.close()
    return out


D, G, SUB = int(RecordKind.DATA), int(RecordKind.GAP), int(RecordKind.SUBSCRIBE)


def test_fills_a_hole_and_marks_what_nobody_has(tmp_path: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    # A misses 10..19 (a GAP marker), B misses 15..24 (a DISCONNECT): 15..19 nobody has
    a = [(T0, SUB, b"{}")] + [(T0 + n * S, D, msg(n)) for n in range(1, 40) if not 10 <= n < 20]
    a.insert(10, (T0 + 19 * S + 1, G, b'{"missed":10}'))
    b = [(T0, SUB, b"{}")] + [(T0 + n * S + 7, D, msg(n)) for n in range(1, 40)
                              if not 15 <= n < 25]
    b.insert(15, (T0 + 24 * S, int(RecordKind.DISCONNECT), b"{}"))
    record(tmp_path / "a", sorted(a))
    record(tmp_path / "b", sorted(b))
    out = tmp_path / "m"
    code = main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--json"])
    stdout, err = capfd.readouterr()
    assert code == 0, err
    recs = read(out)
    data = [p for _, k, p in recs if k == D]
    assert data == [msg(n) for n in range(1, 40) if not 15 <= n < 20]
    gaps = [(ts, orjson.loads(p)) for ts, k, p in recs if k == G]
    assert len(gaps) == 1
    ts, gap = gaps[0]
    assert gap["from_ns"] == T0 + 14 * S + 7 and gap["to_ns"] == T0 + 20 * S
    before = [t for t, k, _ in recs if k == D and t < ts]
    assert max(before) == T0 + 14 * S + 7  # right after the last message anyone has
    report = orjson.loads(stdout)
    assert report["stream"] == "BTC-USD/matches" and report["gaps_remaining"] == 1
    assert [i["messages"] for i in report["inputs"]] == [29, 29]
    assert report["messages_out"] == 34 and report["duplicates_dropped"] == 24
    assert "1 gap(s) remaining (marked)" in err
    # the output is a normal root: sealed segments that verify clean, with its dialect
    assert all(not verify_file(r.path).problems for r in iter_segments(out))
    assert json.loads((out / ".coinbase-logger.json").read_text())["dialect"] == "exchange"


def test_filters_select_products(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        record(tmp_path / name, [(T0 + n * S, D, msg(n)) for n in range(5)])
        record(tmp_path / name, [(T0 + n * S, D, msg(n, "ETH-USD")) for n in range(5)],
               product="ETH-USD")
    code = main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m"),
                 "-p", "ETH-USD", "--day", "2026-12-07"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert [r.product for r in iter_segments(tmp_path / "m")] == ["ETH-USD"]
    assert "ETH-USD/matches: #1 5 read/5 kept, #2 5 read/0 kept" in out


@pytest.mark.parametrize("argv, message", [
    (["a", "--out", "m"], "at least two INPUT roots"),
    (["a", "b", "--out", "a/m"], "must not be inside input"),
    (["a", "b", "--out", "full"], "exists and is not an empty folder"),
    (["a", "nowhere", "--out", "m"], "not a data root"),
    (["a", "other", "--out", "m"], "cannot tell the inputs' dialect"),
    (["a", "b", "--out", "m", "--dialect", "advanced_trade"], "but the inputs say exchange"),
    (["a", "b", "--out", "m", "--day", "2020-01-01"], "no segments selected"),
    (["a", "b", "--out", "s3://bucket/m"], "--out must be a local folder"),
    (["a", "b", "--out", "m", "--window-s", "0"], "--window-s > 0"),
])
def test_usage_errors_are_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                   message: str) -> None:
    for name in ("a", "b"):
        record(tmp_path / name, [(T0, D, msg(1))])
    record(tmp_path / "other", [(T0, D, msg(1))], dialect="advanced_trade")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    _, err = capfd.readouterr()
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists()


def test_a_damaged_input_range_is_a_hole_filled_from_the_other(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        record(tmp_path / name, [(T0 + n * S, D, msg(n)) for n in range(50)])
    seg = next(iter_segments(tmp_path / "b")).path
    data = bytearray(seg.read_bytes())
    data[-40] ^= 0xFF  # inside the last batch: its CRC no longer matches
    seg.write_bytes(bytes(data))
    code = main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    _, err = capfd.readouterr()
    # the damaged range is said once, with its file, and the merge exits 1 at the end...
    damaged = [line for line in err.splitlines() if line.startswith("cbl-merge: damaged: ")]
    assert code == 1 and len(damaged) == 1 and str(seg) in damaged[0]
    assert "Traceback" not in err
    # ...but the output still holds every message: input a had what b lost
    out = [payload for _, kind, payload in read(tmp_path / "m") if kind == D]
    assert out == [msg(n) for n in range(50)]


def test_an_unreadable_input_file_stops_with_one_line(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        record(tmp_path / name, [(T0 + n * S, D, msg(n)) for n in range(50)])
    seg = next(iter_segments(tmp_path / "b")).path
    seg.write_bytes(b"\x00" * 100)  # no header, nothing readable
    code = main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    _, err = capfd.readouterr()
    assert code == 1 and err.startswith("cbl-merge: cannot read ") and str(seg) in err
    assert err.count("\n") == 1 and "Traceback" not in err
