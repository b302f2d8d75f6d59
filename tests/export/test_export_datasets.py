"""cbl-export on generated data of both dialects: counts, exact decimals, DuckDB/Polars, tardis.

The data roots are recorded from the project's seeded simulator through the real storage
engine; counts are checked against `inspect stats` on the same root, the book against a plain
Decimal-dict book built in exportdata.py.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from exportdata import generated_root, naive_book, top

from tools.compact_cli import main as compact_main
from tools.export_cli import main as export_main
from tools.inspect_cli import main as inspect_main
from tools.normalize import api
from tools.venue.generator import DEFAULT_START_NS

DIALECTS = ("advanced_trade", "exchange")
N = 12_000


@pytest.fixture(scope="module", params=DIALECTS)
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, Path, Path]:
    base = tmp_path_factory.mktemp(request.param)
    root = generated_root(base / "data", request.param, N)
    out = base / "out"
    assert export_main([str(root), "-o", str(out), "-q"]) == 0
    return request.param, root, out


def _ds(out: Path, name: str, product: str | None = None) -> pa.Table:
    part = "" if name == "status" else f"{'product=' + product if product else '*'}/"
    files = sorted(out.glob(f"dataset={name}/date=*/{part}*.parquet"))
    assert files, name
    return pa.concat_tables(pq.read_table(f, partitioning=None) for f in files)


def _stats(root: Path, capfd: pytest.CaptureFixture[str]) -> dict[tuple[str, str], dict]:
    capfd.readouterr()
    assert inspect_main(["stats", str(root), "--json"]) == 0
    docs = [orjson.loads(x) for x in capfd.readouterr()[0].splitlines()]
    return {(d["product"], d["channel"]): d for d in docs}


def test_row_counts_equal_inspect_stats(recorded: tuple[str, Path, Path],
                                        capfd: pytest.CaptureFixture[str]) -> None:
    dialect, root, out = recorded
    stats = _stats(root, capfd)
    at = dialect == "advanced_trade"
    products = sorted({p for p, _ in stats if not p.startswith("_")})
    assert len(products) == 2
    for p in products:
        l2 = stats[(p, "level2" if at else "level2_batch")]
        book = _ds(out, "book_l2", p)
        # one l2 frame per receive time: the distinct times are the frames
        assert len(pc.unique(book["ts_recv"])) == l2["messages"]
        assert book.num_rows > l2["messages"]
        trades = _ds(out, "trades", p)
        ts = stats[(p, "market_trades" if at else "matches")]["types"]
        expected = (ts.get("market_trades/update", 0) + _snapshot_trades(root, p) if at
                    else ts.get("match", 0) + ts.get("last_match", 0))
        assert trades.num_rows == expected > 0
        tick = sum(stats[(p, c)]["messages"] for c in ("ticker", "ticker_batch")
                   if (p, c) in stats)
        assert _ds(out, "ticker", p).num_rows == tick
        if at:
            assert _ds(out, "candles", p).num_rows == stats[(p, "candles")]["messages"]
    status_frames = sum(d["messages"] for (p, c), d in stats.items() if c == "status")
    status = _ds(out, "status")
    assert status.num_rows >= status_frames > 0


def _snapshot_trades(root: Path, product: str) -> int:
    """AT: trades the subscription snapshot repeats (the sim's frames hold one trade each)."""
    n = 0
    for r in api.records(root, [product], ["market_trades"]):
        if r.kind == "data":
            n += sum(len(ev["trades"]) for ev in json.loads(r.payload)["events"]
                     if ev["type"] == "snapshot")
    return n


def _l2_strings(root: Path, product: str) -> list[tuple[str, str]]:
    """(price, size) strings of every level change, in file order, read without our code."""
    out: list[tuple[str, str]] = []
    for r in api.records(root, [product], ["level2", "level2_batch"]):
        if r.kind != "data":
            continue
        msg = json.loads(r.payload)
        if "events" in msg:
            for ev in msg["events"]:
                out += [(u["price_level"], u["new_quantity"]) for u in ev["updates"]]
        elif msg["type"] == "snapshot":
            out += [(p, s) for p, s in msg["bids"]] + [(p, s) for p, s in msg["asks"]]
        else:
            out += [(p, s) for _, p, s in msg["changes"]]
    return out


def _places(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


def test_exact_decimals_round_trip(recorded: tuple[str, Path, Path]) -> None:
    _, root, out = recorded
    product = "BTC-USD"
    book = _ds(out, "book_l2", product)
    assert book.schema.field("price").type == pa.decimal128(38, 12)
    original = _l2_strings(root, product)
    prices = book["price"].to_pylist()
    sizes = book["size"].to_pylist()
    assert len(original) == len(prices)
    for (p, s), dp, ds in zip(original, prices, sizes, strict=True):
        assert f"{dp:.{_places(p)}f}" == p and Decimal(p) == dp
        assert f"{ds:.{_places(s)}f}" == s and Decimal(s) == ds


def test_float_flag_gives_float64(recorded: tuple[str, Path, Path], tmp_path: Path) -> None:
    _, root, _ = recorded
    assert export_main([str(root), "-o", str(tmp_path), "-q", "-d", "trades", "--float"]) == 0
    t = _ds(tmp_path, "trades")
    assert t.schema.field("price").type == pa.float64()


def test_book_equals_a_plain_independent_book(recorded: tuple[str, Path, Path]) -> None:
    _, root, _ = recorded
    frames = [(r.ts_ns, r.payload) for r in api.records(root, ["BTC-USD"],
                                                         ["level2", "level2_batch"])]
    for k in (200, len(frames) // 2, len(frames) - 1):
        at = frames[k][0]
        bids, asks = naive_book((f for ts, f in frames if ts <= at), "BTC-USD")
        got = api.book(root, "BTC-USD", at, depth=40)
        assert got["valid"]
        assert [(Decimal(p), Decimal(s)) for p, s in got["bids"]] == top(bids, 40, True)
        assert [(Decimal(p), Decimal(s)) for p, s in got["asks"]] == top(asks, 40, False)


def test_book_snapshot_rows_equal_the_book_at_their_time(recorded: tuple[str, Path, Path]
                                                         ) -> None:
    _, root, out = recorded
    snaps = _ds(out, "book_snapshot_25", "ETH-USD").to_pylist()
    assert len(snaps) >= 4 and all(r["valid"] for r in snaps)
    row = snaps[3]
    at = int(row["ts_recv"].timestamp() * 1e9)
    got = api.book(root, "ETH-USD", at - 1, depth=25)  # samples show the book before T
    assert [(Decimal(p), Decimal(s)) for p, s in got["asks"]][:3] == [
        (row[f"ask_price_{i}"], row[f"ask_size_{i}"]) for i in range(3)]
    assert [(Decimal(p), Decimal(s)) for p, s in got["bids"]][:3] == [
        (row[f"bid_price_{i}"], row[f"bid_size_{i}"]) for i in range(3)]


def test_duckdb_and_polars_agree_on_counts_and_sums(recorded: tuple[str, Path, Path]) -> None:
    _, _, out = recorded
    glob = str(out / "dataset=trades" / "**" / "*.parquet")
    con = duckdb.connect()
    duck = con.execute(
        "SELECT product, count(*), sum(price * size), sum(size) FROM read_parquet(?, "
        "hive_partitioning = true) GROUP BY product ORDER BY product", [glob]).fetchall()
    pol = (pl.scan_parquet(glob, hive_partitioning=True)
           .group_by("product").agg(pl.len(), (pl.col("price") * pl.col("size")).sum(),
                                    pl.col("size").sum())
           .sort("product").collect().rows())
    assert len(duck) == len(pol) == 2
    for d, p in zip(duck, pol, strict=True):
        assert d[0] == p[0] and d[1] == p[1] > 0
        assert Decimal(d[3]) == Decimal(p[3])
        assert abs(Decimal(d[2]) - Decimal(p[2])) < Decimal("1e-9")
        exact = _ds(out, "trades", d[0])
        assert sum(exact["size"].to_pylist()) == Decimal(d[3])


TARDIS = {  # docs.tardis.dev, Downloadable CSV files, Data types
    "trades": "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
    "book_l2": "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount",
    "quotes": "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,"
              "bid_amount",
}


def test_tardis_csv_header_order_and_rows(recorded: tuple[str, Path, Path],
                                          tmp_path: Path) -> None:
    _, root, out = recorded
    assert export_main([str(root), "-o", str(tmp_path), "-q", "--format", "csv", "-d",
                        "trades,book_l2,quotes,book_snapshot", "--depth", "5"]) == 0
    for ds, head in TARDIS.items():
        f = next(tmp_path.glob(f"dataset={ds}/date=*/product=BTC-USD/part-0.csv.gz"))
        lines = gzip.decompress(f.read_bytes()).decode().splitlines()
        assert lines[0] == head
        first = lines[1].split(",")
        assert first[:2] == ["coinbase", "BTC-USD"] and first[2].isdigit()
        if ds != "quotes":
            assert len(lines) - 1 == _ds(out, ds, "BTC-USD").num_rows
    snap = next(tmp_path.glob("dataset=book_snapshot_5/date=*/product=BTC-USD/*.csv.gz"))
    head = gzip.decompress(snap.read_bytes()).decode().splitlines()[0].split(",")
    assert head[:8] == ["exchange", "symbol", "timestamp", "local_timestamp",
                        "asks[0].price", "asks[0].amount", "bids[0].price", "bids[0].amount"]
    assert head[-4:] == ["asks[4].price", "asks[4].amount", "bids[4].price", "bids[4].amount"]
    rows = gzip.decompress(next(tmp_path.glob(
        "dataset=book_l2/date=*/product=BTC-USD/*.csv.gz")).read_bytes()).decode()
    sides = Counter(line.split(",")[5] for line in rows.splitlines()[1:])
    assert set(sides) == {"bid", "ask"}


def test_incremental_skip_force_and_parallel_same_output(
        recorded: tuple[str, Path, Path], tmp_path: Path,
        capfd: pytest.CaptureFixture[str]) -> None:
    _, root, out = recorded
    capfd.readouterr()
    assert export_main([str(root), "-o", str(out)]) == 0
    assert "0 product-days exported, 3 already done" in capfd.readouterr()[1]
    assert export_main([str(root), "-o", str(tmp_path), "-q", "-j", "2"]) == 0
    for f in out.glob("dataset=*/date=*/**/*.parquet"):
        twin = tmp_path / f.relative_to(out)
        assert pq.read_table(twin, partitioning=None).equals(pq.read_table(f, partitioning=None))
    assert export_main([str(root), "-o", str(out), "--force", "-p", "BTC-USD"]) == 0
    assert "1 product-days exported" in capfd.readouterr()[1]


def test_archives_export_like_live_segments(recorded: tuple[str, Path, Path],
                                            tmp_path: Path) -> None:
    _dialect, root, out = recorded
    import shutil
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    assert compact_main(["--today", "2026-01-05", "-q", str(copy)]) == 0
    assert not list(copy.rglob("*.seg")) and list(copy.rglob("*.seg.zst"))
    assert export_main([str(copy), "-o", str(tmp_path / "out"), "-q"]) == 0
    for f in out.glob("dataset=*/date=*/**/*.parquet"):
        twin = tmp_path / "out" / f.relative_to(out)
        assert pq.read_table(twin, partitioning=None).equals(pq.read_table(f, partitioning=None))


def test_usage_errors_are_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                   recorded: tuple[str, Path, Path]) -> None:
    _, root, _ = recorded
    cases = [([str(tmp_path / "nope"), "-o", str(tmp_path / "o")], "no such data root"),
             ([str(root), "-o", str(root / "x")], "must not be inside the data root"),
             ([str(root), "-o", str(tmp_path / "o"), "-d", "bogus"], "unknown dataset"),
             ([str(root), "-o", str(tmp_path / "o"), "-p", "NOPE-USD"], "nothing recorded"),
             ([str(root), "-o", str(tmp_path / "o"), "--depth", "0"], "positive integer")]
    for argv, text in cases:
        capfd.readouterr()
        assert export_main(argv) == 2
        err = capfd.readouterr()[1]
        assert text in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (root / "x").exists()


def test_notebook_api_tables_and_time_window(recorded: tuple[str, Path, Path]) -> None:
    _, root, out = recorded
    t0 = DEFAULT_START_NS + 2_000_000_000
    t = api.table(root, "trades", ["BTC-USD"], start=t0, end=t0 + 2_000_000_000)
    ts = t["ts_recv"].cast(pa.int64()).to_pylist()
    assert ts and all(t0 <= x < t0 + 2_000_000_000 for x in ts)
    assert set(t["product"].to_pylist()) == {"BTC-USD"}
    full = api.table(root, "book_l2", ["ETH-USD"])
    assert full.drop_columns(["product"]).equals(_ds(out, "book_l2", "ETH-USD"))
    df = api.dataframe(root, "quotes", ["ETH-USD"])
    assert len(df) == _ds(out, "quotes", "ETH-USD").num_rows
    with pytest.raises(ValueError, match="unknown dataset"):
        api.table(root, "nope")
