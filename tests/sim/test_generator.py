"""The generator: deterministic, valid JSON of the documented shapes, realistic proportions,
consistent books and per-dialect counters."""

from __future__ import annotations

import collections
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.layout import validate_name
from tools.venue.generator import MarketModel, default_products

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "coinbase"


def test_default_products_are_realistic_distinct_and_valid_stream_names() -> None:
    ids = default_products(400)
    assert ids[:3] == ["BTC-USD", "ETH-USD", "SOL-USD"]
    assert len(set(ids)) == 400
    for pid in ids:
        assert validate_name(pid, "product") == pid
    assert default_products(10) == ids[:10]
    with pytest.raises(ValueError, match="at most"):
        default_products(10_000)
    with pytest.raises(ValueError, match=">= 0"):
        default_products(-1)


def test_bad_arguments_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="dialect"):
        MarketModel(1, 3, "fix")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        MarketModel(1, ["BTC-USD", "BTC-USD"])
    with pytest.raises(ValueError, match="at least one"):
        MarketModel(1, [])
    m = MarketModel(1, 3)
    with pytest.raises(ValueError, match="backwards"):
        m.generate(10, m.now_ns - 1)


@pytest.mark.parametrize("dialect", ["advanced_trade", "exchange"])
def test_same_seed_same_bytes_other_seed_other_bytes(dialect: str) -> None:
    a = list(MarketModel(7, 12, dialect).day_of_messages(3000))  # type: ignore[arg-type]
    b = list(MarketModel(7, 12, dialect).day_of_messages(3000))  # type: ignore[arg-type]
    c = list(MarketModel(8, 12, dialect).day_of_messages(3000))  # type: ignore[arg-type]
    assert a == b
    assert a != c
    assert len(a) == 3000


def test_advanced_trade_frames_parse_and_number_per_connection() -> None:
    msgs = list(MarketModel(3, 8, "advanced_trade").day_of_messages(20_000))
    kinds: collections.Counter[str] = collections.Counter()
    for n, (product, channel, raw) in enumerate(msgs):
        obj = orjson.loads(raw)
        assert obj["sequence_num"] == n  # one connection: +1 per frame across channels
        assert obj["timestamp"].endswith("Z")
        kinds[obj["channel"]] += 1
        ev = obj["events"][0]
        if obj["channel"] == "l2_data":
            assert channel == "level2" and ev["product_id"] == product
            for u in ev["updates"]:
                assert u["side"] in ("bid", "offer")
                float(u["price_level"]), float(u["new_quantity"])
        elif obj["channel"] == "market_trades":
            assert {t["side"] for t in ev["trades"]} <= {"BUY", "SELL"}
        elif obj["channel"] == "heartbeats":
            assert product.startswith("_conn") and isinstance(ev["heartbeat_counter"], int)
        elif obj["channel"] == "ticker":
            assert ev["tickers"][0]["product_id"] == product
    assert set(kinds) == {"subscriptions", "status", "candles", "ticker", "l2_data",
                          "market_trades", "heartbeats", "ticker_batch"}
    assert kinds["l2_data"] / len(msgs) > 0.9  # level2 dominates, as in the real capture


def test_exchange_frames_match_the_capture_proportions_and_counters() -> None:
    msgs = list(MarketModel(5, 10, "exchange").day_of_messages(30_000))
    kinds: collections.Counter[str] = collections.Counter()
    last_trade: dict[str, int] = {}
    last_seq: dict[str, int] = {}
    for product, channel, raw in msgs:
        obj = orjson.loads(raw)
        kinds[obj["type"]] += 1
        if obj["type"] == "match":
            pid = obj["product_id"]
            if pid in last_trade:
                assert obj["trade_id"] == last_trade[pid] + 1  # trade_id +1 per product
            last_trade[pid] = obj["trade_id"]
        if "sequence" in obj and obj["type"] != "last_match":
            pid = obj["product_id"]
            assert obj["sequence"] >= last_seq.get(pid, 0)
            last_seq[pid] = obj["sequence"]
        if obj["type"] == "l2update":
            assert channel == "level2_batch" and product == obj["product_id"]
            assert "sequence" not in obj  # level2 frames carry no sequence (real capture)
    n = len(msgs)
    assert kinds["snapshot"] == 10 and kinds["last_match"] == 10
    assert 0.9 < kinds["l2update"] / n < 0.99
    assert 0.004 < kinds["match"] / n < 0.03 and 0.004 < kinds["ticker"] / n < 0.03


def _apply(book: dict[str, dict[float, float]], side: str, price: str, size: str) -> None:
    levels = book[side]
    if float(size) == 0:
        levels.pop(float(price), None)
    else:
        levels[float(price)] = float(size)


def test_level2_snapshot_equals_the_book_its_updates_built() -> None:
    m = MarketModel(11, ["BTC-USD", "ETH-EUR"], "advanced_trade")
    snap = orjson.loads(m.snapshots("level2", "ETH-EUR")[0][4][len(b',"events":'):-1])[0]
    book: dict[str, dict[float, float]] = {"bid": {}, "offer": {}}
    for u in snap["updates"]:
        _apply(book, u["side"], u["price_level"], u["new_quantity"])
    for ev in m.generate(20_000, m.now_ns + 10**10):
        if ev[1] == "l2_data" and ev[2] == ("ETH-EUR",):
            body = orjson.loads(b'{"sequence_num":0' + ev[4])
            for u in body["events"][0]["updates"]:
                _apply(book, u["side"], u["price_level"], u["new_quantity"])
    snap2 = orjson.loads(m.snapshots("level2", "ETH-EUR")[0][4][len(b',"events":'):-1])[0]
    rebuilt: dict[str, dict[float, float]] = {"bid": {}, "offer": {}}
    for u in snap2["updates"]:
        _apply(rebuilt, u["side"], u["price_level"], u["new_quantity"])
    assert rebuilt == book
    assert max(book["bid"]) < min(book["offer"])  # never crossed


def test_frames_of_one_subscription_start_with_the_snapshot() -> None:
    it = MarketModel(2, 5, "exchange").frames("level2_batch", "SOL-USD")
    first = orjson.loads(next(it))
    assert first["type"] == "snapshot" and first["product_id"] == "SOL-USD"
    for _ in range(50):
        obj = orjson.loads(next(it))
        assert obj["type"] == "l2update" and obj["product_id"] == "SOL-USD"


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), n_products=st.integers(1, 12),
       dialect=st.sampled_from(["advanced_trade", "exchange"]))
def test_any_seed_gives_valid_frames(seed: int, n_products: int, dialect: str) -> None:
    for product, channel, raw in MarketModel(seed, n_products, dialect).day_of_messages(  # type: ignore[arg-type]
            400):
        obj = orjson.loads(raw)
        assert isinstance(obj, dict)
        assert product and channel


@pytest.mark.skipif(not (SHARED / "exchange_stream_2021-04-17.jsonl").exists(),
                    reason="../shared/coinbase/ (the real 2021 capture) is not available")
def test_sizes_are_close_to_the_real_capture() -> None:
    real: dict[str, list[int]] = collections.defaultdict(list)
    ids: dict[str, None] = {}
    for line in (SHARED / "exchange_stream_2021-04-17.jsonl").read_bytes().splitlines():
        obj = orjson.loads(line)
        real[obj["type"]].append(len(line))
        if "product_id" in obj:
            ids[obj["product_id"]] = None
    ours: dict[str, list[int]] = collections.defaultdict(list)
    for _, _, raw in MarketModel(1, list(ids), "exchange").day_of_messages(20_000):
        ours[orjson.loads(raw)["type"]].append(len(raw))
    for kind in ("l2update", "match", "ticker", "snapshot"):
        r = sum(real[kind]) / len(real[kind])
        o = sum(ours[kind]) / len(ours[kind])
        assert 0.5 < o / r < 2.0, (kind, o, r)


def test_btc_usd_snapshot_exceeds_the_websockets_default_1_mib() -> None:
    m = MarketModel(1, ["BTC-USD", "SKL-GBP"], "advanced_trade")
    big, small = (len(m.snapshots("level2", p)[0][4]) for p in ("BTC-USD", "SKL-GBP"))
    assert big > 1 << 20 > small
