"""Markers and damage in the export: a gap invalidates the book until the next snapshot, and
every row after a marker says so; malformed frames and damaged files become markers too."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from exportdata import write_root

from storage import RecordKind
from tools.export_cli import main as export_main
from tools.inspect_cli import main as inspect_main
from tools.normalize import api

S = 1_000_000_000
T0 = 1_767_312_000 * S  # 2026-01-02T00:00:00Z
P = "XBT-USD"
GAP, DISC, DATA = int(RecordKind.GAP), int(RecordKind.DISCONNECT), int(RecordKind.DATA)


def _l2(changes: list[tuple[str, str, str]]) -> bytes:
    return json.dumps({"type": "l2update", "product_id": P, "changes": changes,
                       "time": "2026-01-02T00:00:01.000000Z"}).encode()


def _snap(bids: list[list[str]], asks: list[list[str]]) -> bytes:
    return json.dumps({"type": "snapshot", "product_id": P, "bids": bids,
                       "asks": asks}).encode()


def _match(tid: int, side: str = "sell") -> bytes:
    return json.dumps({"type": "match", "trade_id": tid, "side": side, "size": "0.5",
                       "price": "100.25", "product_id": P, "sequence": 10 + tid,
                       "time": "2026-01-02T00:00:01.000000Z"}).encode()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    l2, mt = "level2_batch", "matches"
    return write_root(tmp_path / "data", [
        (P, l2, T0 + 1 * S, DATA, _snap([["100.00", "1"]], [["101.00", "2"]])),
        (P, mt, T0 + 1 * S + 1, DATA, _match(1)),
        (P, l2, T0 + 2 * S, DATA, _l2([("buy", "100.50", "3")])),
        (P, mt, T0 + 2 * S + 1, DATA, _match(2, "buy")),
        (P, l2, T0 + 3 * S, GAP, b'{"conn":"0","event":"gap"}'),
        (P, mt, T0 + 3 * S, DISC, b'{"conn":"0","event":"disconnect"}'),
        (P, l2, T0 + 4 * S, DATA, _l2([("sell", "101.00", "0"), ("sell", "100.80", "1")])),
        (P, mt, T0 + 4 * S + 1, DATA, _match(5)),
        (P, l2, T0 + 6 * S, DATA, _snap([["99.00", "5"]], [["102.00", "1"]])),
        (P, l2, T0 + 7 * S, DATA, _l2([("buy", "99.50", "1")])),
        (P, l2, T0 + 7 * S + S // 2, DATA, b'{"type":"l2update","product_id":"XBT-USD",'
                                           b'"changes":[["buy"]]}'),
        (P, l2, T0 + 8 * S, DATA, _l2([("buy", "99.60", "1")])),
    ])


def _levels(side: list[tuple[str, str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(p), Decimal(s)) for p, s in side]


def test_gap_invalidates_book_until_next_snapshot(root: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    ok = api.book(root, P, T0 + 2 * S + S // 2)
    assert ok["valid"] and _levels(ok["bids"]) == [(Decimal("100.50"), 3), (Decimal("100"), 1)]
    hole = api.book(root, P, T0 + 5 * S)
    assert not hole["valid"] and hole["invalid_reason"] == "gap"
    after = api.book(root, P, T0 + 6 * S + S // 2)
    assert after["valid"] and _levels(after["bids"]) == [(Decimal(99), 5)]
    assert _levels(after["asks"]) == [(Decimal(102), 1)]
    bad = api.book(root, P, T0 + 7 * S + S // 2)
    assert not bad["valid"] and bad["invalid_reason"] == "malformed"
    capfd.readouterr()
    assert inspect_main(["book", str(root), "-p", P, "--at", str(T0 + 5 * S)]) == 1
    out = capfd.readouterr()[0]
    assert "INVALID" in out and "gap" in out
    assert inspect_main(["book", str(root), "-p", P, "--at", str(T0 + 6 * S + 1)]) == 0


def test_export_rows_carry_markers_and_validity(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export_main([str(root), "-o", str(out), "-q"]) == 0

    def ds(name: str) -> list[dict]:
        f = next(out.glob(f"dataset={name}/date=2026-01-02/product={P}/part-0.parquet"))
        return pq.read_table(f, partitioning=None).to_pylist()

    snaps = {int(r["ts_recv"].timestamp()) - T0 // S: r["valid"] for r in ds("book_snapshot_25")}
    assert snaps == {2: True, 3: False, 4: False, 5: False, 6: False, 7: True, 8: False}
    l2 = ds("book_l2")
    first_after_gap = next(r for r in l2 if r["ts_recv"].timestamp() >= (T0 + 4 * S) / S)
    assert first_after_gap["marker"] == "gap"
    assert [r["marker"] for r in l2].count("gap") == 1
    trades = ds("trades")
    assert [(r["trade_id"], r["side"], r["marker"]) for r in trades] == [
        ("1", "buy", None), ("2", "sell", None), ("5", "buy", "disconnect")]
    quotes = ds("quotes")
    assert [q["valid"] for q in quotes].count(False) == 2  # the gap, the malformed frame
    kinds = [r["kind"] for r in ds("markers")]
    assert sorted(kinds[:2]) == ["disconnect", "gap"] and kinds[2:] == ["malformed"]  # by time


def test_integrity_counts_gaps_valid_time_and_missing_trades(
        root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert inspect_main(["integrity", str(root), "--json"]) == 0
    rep = orjson.loads(capfd.readouterr()[0])
    assert rep["snapshots"] == 2 and rep["gaps"] == 1
    assert rep["book_invalidations"] == 2
    # valid 1 s..3 s and 6 s..7.5 s of the 1 s..8 s span: 3.5 / 7
    assert rep["book_valid_pct"] == 50.0
    assert (rep["trades"], rep["trade_id_gaps"], rep["trades_missing"]) == (3, 1, 2)
    assert rep["markers"] == {"disconnect": 1, "gap": 1, "malformed": 1}
    assert inspect_main(["integrity", str(root)]) == 0
    table = capfd.readouterr()[0].splitlines()
    assert table[0].split()[:3] == ["PRODUCT", "DATE", "SNAPS"] and P in table[1]


def test_crossed_book_is_counted(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    root = write_root(tmp_path / "data", [
        (P, "level2_batch", T0 + S, DATA, _snap([["100", "1"]], [["101", "1"]])),
        (P, "level2_batch", T0 + 2 * S, DATA, _l2([("buy", "101", "1")])),      # locked
        (P, "level2_batch", T0 + 3 * S, DATA, _l2([("buy", "102", "1")])),      # crossed
        (P, "level2_batch", T0 + 4 * S, DATA, _l2([("buy", "102", "0"), ("buy", "101", "0")])),
    ])
    capfd.readouterr()
    assert inspect_main(["integrity", str(root), "--json"]) == 0
    rep = orjson.loads(capfd.readouterr()[0])
    assert (rep["locked_moments"], rep["crossed_moments"]) == (1, 1)


def test_damaged_file_becomes_a_marker_not_a_crash(root: Path, tmp_path: Path) -> None:
    seg = next((root / P / "matches").glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[4096 + 40] ^= 0xFF  # inside the first batch: its CRC no longer matches
    seg.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert export_main([str(root), "-o", str(out), "-q", "-d", "trades,markers"]) == 0
    f = next(out.glob(f"dataset=markers/date=*/product={P}/*.parquet"))
    rows = pq.read_table(f, partitioning=None).to_pylist()
    damaged = [r for r in rows if r["kind"] == "damaged"]
    assert len(damaged) == 1 and "matches" in damaged[0]["payload"]
    assert damaged[0]["channel"] == "matches"
    raw = [r.kind for r in api.records(root, [P], ["matches"])]
    assert raw == ["damaged"]


def test_channel_selection_limits_datasets(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export_main([str(root), "-o", str(out), "-q", "-c", "matches"]) == 0
    assert sorted(p.name for p in out.glob("dataset=*")) == ["dataset=markers",
                                                             "dataset=trades"]
    assert export_main([str(root), "-o", str(out), "-q", "-c", "heartbeats"]) == 2


def test_live_segments_are_read_and_their_day_is_exported_again(tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]
                                                                ) -> None:
    import time

    from storage import Engine, EngineConfig

    eng = Engine(EngineConfig(root=tmp_path / "data", backend="pwrite"))
    try:
        s = eng.stream(P, "matches")
        now = time.time_ns()
        eng.append(s, now, _match(1))
        eng.append(s, now + 1, _match(2))
        eng.commit()  # today's segment, committed, not sealed: the recorder is writing it
        out = tmp_path / "out"
        capfd.readouterr()
        assert export_main([str(tmp_path / "data"), "-o", str(out), "-d", "trades"]) == 0
        assert export_main([str(tmp_path / "data"), "-o", str(out), "-d", "trades"]) == 0
        err = capfd.readouterr()[1]
        assert err.count("1 product-days exported, 0 already done") == 2
        f = next(out.glob("dataset=trades/date=*/product=*/part-0.parquet"))
        assert pq.read_table(f, partitioning=None).num_rows == 2
    finally:
        eng.close()


def test_a_pre_created_empty_next_day_is_not_a_day_of_data(tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]
                                                           ) -> None:
    """In the last minutes of a day the engine pre-creates tomorrow's segments: an export run
    then must not export (and mark done) an empty tomorrow."""
    import datetime as dt

    from storage import Engine, EngineConfig, iter_segments

    late = int(dt.datetime(2026, 1, 5, 23, 55, tzinfo=dt.UTC).timestamp()) * 10**9
    eng = Engine(EngineConfig(root=tmp_path / "data", backend="pwrite"))
    try:
        s = eng.stream(P, "matches")
        eng.append(s, late, _match(1))
        eng.commit(now_ns=late)
        days = {r.day for r in iter_segments(tmp_path / "data", P, "matches")}
        assert days == {dt.date(2026, 1, 5), dt.date(2026, 1, 6)}  # tomorrow pre-created
        out = tmp_path / "out"
        capfd.readouterr()
        assert export_main([str(tmp_path / "data"), "-o", str(out), "-d", "trades"]) == 0
        assert "1 product-days exported, 0 already done" in capfd.readouterr()[1]
        assert [p.name for p in out.glob("dataset=trades/date=*")] == ["date=2026-01-05"]
        assert not list((out / "_export").rglob("2026-01-06.json"))
    finally:
        eng.close()


def _at_l2(seq: int, events: list[tuple[str, str, list[tuple[str, str, str]]]]) -> bytes:
    return json.dumps({"channel": "l2_data", "timestamp": "2026-01-02T00:00:01.5Z",
                       "sequence_num": seq, "events": [
                           {"type": kind, "product_id": pid, "updates": [
                               {"side": s, "event_time": "2026-01-02T00:00:01.5Z",
                                "price_level": p, "new_quantity": q} for s, p, q in ups]}
                           for kind, pid, ups in events]}, separators=(",", ":")).encode()


def test_multi_product_frames_feed_each_product(tmp_path: Path) -> None:
    """AT frames naming several products live in _multi/<channel>: each product gets its own
    events, in receive order with its own stream's frames."""
    a_snap = [("bid", "10", "1"), ("offer", "11", "1")]
    b_snap = [("bid", "20", "1"), ("offer", "21", "1")]
    both = [("update", "A-USD", [("bid", "10.5", "2")]),
            ("update", "B-USD", [("offer", "21", "0")])]
    root = write_root(tmp_path / "data", [
        ("A-USD", "level2", T0 + S, DATA, _at_l2(0, [("snapshot", "A-USD", a_snap)])),
        ("B-USD", "level2", T0 + S + 1, DATA, _at_l2(1, [("snapshot", "B-USD", b_snap)])),
        ("_multi", "level2", T0 + 2 * S, DATA, _at_l2(2, both)),
        ("A-USD", "level2", T0 + 3 * S, DATA,
         _at_l2(3, [("update", "A-USD", [("bid", "10", "0")])])),
    ])
    a = api.book(root, "A-USD", T0 + 4 * S)
    assert a["valid"] and a["bids"] == [("10.5", "2")] and a["asks"] == [("11", "1")]
    b = api.book(root, "B-USD", T0 + 4 * S)
    assert b["valid"] and b["asks"] == [] and b["bids"] == [("20", "1")]
    rows = api.table(root, "book_l2", ["A-USD"]).to_pylist()
    assert [(r["sequence"], r["side"], r["price"]) for r in rows] == [
        (0, "bid", Decimal(10)), (0, "ask", Decimal(11)), (2, "bid", Decimal("10.5")),
        (3, "bid", Decimal(10))]


def test_book_carries_across_days_and_incremental_holes(tmp_path: Path) -> None:
    day = 86_400 * S
    l2 = "level2_batch"
    root = write_root(tmp_path / "data", [
        (P, l2, T0 + S, DATA, _snap([["100", "1"]], [["101", "1"]])),
        (P, l2, T0 + 2 * S, DATA, _l2([("buy", "100.5", "1")])),
        (P, l2, T0 + day + S, DATA, _l2([("buy", "100.6", "1")])),
        (P, l2, T0 + day + 3 * S, DATA, _l2([("buy", "100.7", "1")])),
        (P, l2, T0 + 2 * day + S, DATA, _l2([("buy", "100.8", "1")])),
        (P, l2, T0 + 2 * day + 3 * S, DATA, _l2([("buy", "100.9", "1")])),
    ])
    out = tmp_path / "out"

    def samples(d: str) -> list[tuple[int, bool, Decimal]]:
        f = out / "dataset=book_snapshot_25" / f"date={d}" / f"product={P}" / "part-0.parquet"
        return [(int(r["ts_recv"].timestamp()), r["valid"], r["bid_price_0"])
                for r in pq.read_table(f, partitioning=None).to_pylist()]

    # day 2 alone: the book is warmed up from day 1's snapshot
    assert export_main([str(root), "-o", str(out), "-q", "-d", "book_snapshot",
                        "--from", "2026-01-03", "--to", "2026-01-03"]) == 0
    d2 = samples("2026-01-03")
    assert d2 == [(T0 // S + 86_400 + 2, True, Decimal("100.6")),
                  (T0 // S + 86_400 + 3, True, Decimal("100.6"))]
    # then everything: days 1 and 3 are exported, day 2 skipped; day 3 has no samples of day 2
    assert export_main([str(root), "-o", str(out), "-q", "-d", "book_snapshot"]) == 0
    assert samples("2026-01-03") == d2
    d3 = samples("2026-01-04")
    assert [t for t, _, _ in d3] == [T0 // S + 2 * 86_400 + 2, T0 // S + 2 * 86_400 + 3]
    assert all(v for _, v, _ in d3) and d3[-1][2] == Decimal("100.8")
    # no snapshot within the lookback: invalid, never guessed
    out2 = tmp_path / "out2"
    assert export_main([str(root), "-o", str(out2), "-q", "-d", "book_snapshot",
                        "--from", "2026-01-04", "--lookback-days", "1"]) == 0
    f = next(out2.glob("dataset=book_snapshot_25/date=2026-01-04/*/*.parquet"))
    assert not any(pq.read_table(f, partitioning=None)["valid"].to_pylist())


def test_unconvertible_values_are_null_and_counted(tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    bad = json.dumps({"type": "match", "trade_id": 3, "side": "buy", "size": "1",
                      "price": "0.0000000000001", "product_id": P, "sequence": 1,
                      "time": "2026-01-02T00:00:01.000000Z"}).encode()
    root = write_root(tmp_path / "data", [(P, "matches", T0 + S, DATA, _match(1)),
                                          (P, "matches", T0 + 2 * S, DATA, bad)])
    capfd.readouterr()
    assert export_main([str(root), "-o", str(tmp_path / "out"), "-d", "trades"]) == 0
    assert "1 values could not be converted" in capfd.readouterr()[1]
    f = next((tmp_path / "out").glob("dataset=trades/*/*/*.parquet"))
    assert pq.read_table(f, partitioning=None)["price"].to_pylist() == [Decimal("100.25"), None]
