"""Replay: recorded segments and archives served as a live feed, received byte for byte by a
real client (the official coinbase-advanced-py WSClient, and a websockets client)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from pathlib import Path

import orjson
import pytest
from simhelpers import client, read_until_closed

from storage import Engine, EngineConfig, RecordKind
from storage.compact import compact_segment
from storage.layout import iter_segments
from tools.venue.generator import MarketModel
from tools.venue.replay import ReplayConfig, ReplayServer, parse_speed

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "coinbase"
T0 = 1_767_312_000 * 10**9 + 3600 * 10**9  # 2026-01-02T01:00Z, a past UTC day
STEP = 200_000  # 0.2 ms between records: every timestamp distinct


def record(root: Path, n: int = 6000, dialect: str = "advanced_trade",
           products: int = 4) -> dict[tuple[str, str], list[tuple[int, bytes]]]:
    """Record `n` generated frames into `root` with the real engine; GAP markers too."""
    streams: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    model = MarketModel(21, products, dialect)  # type: ignore[arg-type]
    with Engine(EngineConfig(root=root, backend="mmap")) as eng:
        for k, (product, channel, raw) in enumerate(model.day_of_messages(n)):
            ts = T0 + k * STEP
            eng.append(eng.stream(product, channel), ts, raw)
            streams.setdefault((product, channel), []).append((ts, raw))
            if k % 1000 == 999:  # markers are not venue frames: replay must skip them
                eng.append(eng.stream(product, channel), ts + 1, b'{"reason":"test"}',
                           RecordKind.GAP)
    return streams


def expected(streams: dict[tuple[str, str], list[tuple[int, bytes]]],
             keys: list[tuple[str, str]]) -> list[bytes]:
    merged = sorted((ts, raw) for key in keys for ts, raw in streams.get(key, []))
    return [raw for _, raw in merged]


def test_parse_speed() -> None:
    assert parse_speed("max") is None and parse_speed("1") == 1.0 and parse_speed("x10") == 10.0
    for bad in ("0", "-2", "fast"):
        with pytest.raises(ValueError, match="speed"):
            parse_speed(bad)


def test_empty_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no recorded segments"):
        ReplayServer(ReplayConfig(root=tmp_path))


def test_official_coinbase_client_receives_the_recording_byte_for_byte(tmp_path: Path) -> None:
    from coinbase.websocket import WSClient

    streams = record(tmp_path)
    want = expected(streams, [("BTC-USD", "level2"), ("ETH-USD", "level2"),
                              ("_conn0", "heartbeats")])
    got: list[str] = []
    done = threading.Event()

    def on_message(msg: str) -> None:
        got.append(msg)
        if len(got) >= len(want):
            done.set()

    async def main() -> None:
        srv = ReplayServer(ReplayConfig(root=tmp_path, venue=False, speed=None, at_end="hold"))
        await srv.start()
        try:
            def run_client() -> None:
                c = WSClient(base_url=srv.ws_url, on_message=on_message, retry=False)
                c.open()
                c.subscribe(product_ids=["BTC-USD", "ETH-USD"], channels=["level2", "heartbeats"])
                done.wait(30)
                c.close()
            await asyncio.to_thread(run_client)
        finally:
            await srv.stop()
        assert srv.ledger is not None
        assert len(srv.ledger.frames(0)) == len(want)

    asyncio.run(main())
    assert len(got) == len(want) > 1000
    assert [g.encode() for g in got] == want


def test_archives_replay_like_segments_and_pacing_keeps_order(tmp_path: Path) -> None:
    streams = record(tmp_path, n=3000, dialect="exchange", products=3)
    refs = list(iter_segments(tmp_path, product="ETH-USD", channel="level2_batch"))
    assert refs and not refs[0].archived
    compact_segment(refs[0].path, today=dt.date(2026, 1, 3))
    refs = list(iter_segments(tmp_path, product="ETH-USD", channel="level2_batch"))
    assert [r.archived for r in refs] == [True]
    keys = [("ETH-USD", "level2_batch"), ("BTC-USD", "level2_batch"), ("BTC-USD", "matches")]
    want = expected(streams, keys)
    span_s = (max(ts for k in keys for ts, _ in streams[k])
              - min(ts for k in keys for ts, _ in streams[k])) / 1e9

    async def main(speed: float | None) -> tuple[list[bytes], float]:
        srv = ReplayServer(ReplayConfig(root=tmp_path, venue=False, speed=speed,
                                        dialect="exchange",
                                        linger_s=0.1, products=["ETH-USD", "BTC-USD"]))
        await srv.start()
        try:
            async with client(srv.ws_url) as ws:
                await ws.send(orjson.dumps({
                    "type": "subscribe", "product_ids": ["ETH-USD", "BTC-USD"],
                    "channels": ["level2_batch",
                                 {"name": "matches", "product_ids": ["BTC-USD"]}]}).decode())
                t = time.monotonic()
                got = await read_until_closed(ws, timeout=60)
                return got, time.monotonic() - t
        finally:
            await srv.stop()

    fast, _ = asyncio.run(main(None))
    assert fast == want
    paced, took = asyncio.run(main(4.0))
    assert paced == want
    assert took >= span_s / 4.0 * 0.9  # paced by the recorded receive times (lower bound)


def test_unknown_products_and_channels_get_the_dialect_errors(tmp_path: Path) -> None:
    record(tmp_path, n=500)

    async def main() -> list[dict[str, str]]:
        srv = ReplayServer(ReplayConfig(root=tmp_path, venue=False, speed=None,
                                        dialect="exchange"))
        await srv.start()
        try:
            async with client(srv.ws_url) as ws:
                await ws.send('{"type":"subscribe","product_ids":["NOPE-USD"],'
                              '"channels":["ticker","full"]}')
                return [orjson.loads(await ws.recv()) for _ in range(2)]
        finally:
            await srv.stop()

    errors = asyncio.run(main())
    assert errors[0]["reason"] == "NOPE-USD is not a valid product"
    assert errors[1]["reason"].startswith("level2, level3, and full channels now require")


@pytest.mark.skipif(not (SHARED / "exchange_stream_2021-04-17.jsonl").exists(),
                    reason="../shared/coinbase/ (the real 2021 capture) is not available")
def test_real_2021_capture_recorded_then_replayed_byte_for_byte(tmp_path: Path) -> None:
    lines = (SHARED / "exchange_stream_2021-04-17.jsonl").read_bytes().splitlines()
    stamps = (SHARED / "exchange_stream_2021-04-17.recv_ts.txt").read_text().split()
    channel_of = {"snapshot": "level2_batch", "l2update": "level2_batch", "ticker": "ticker",
                  "match": "matches", "last_match": "matches"}
    products: set[str] = set()
    with Engine(EngineConfig(root=tmp_path, backend="mmap")) as eng:
        for k, (raw, ts) in enumerate(zip(lines, stamps, strict=True)):
            obj = orjson.loads(raw)
            if obj["type"] == "subscriptions":
                continue
            products.add(obj["product_id"])
            # receive times are µs-resolution and may repeat: make them strictly increasing
            ts_ns = int(float(ts) * 1e6) * 1000 + k
            eng.append(eng.stream(obj["product_id"], channel_of[obj["type"]]), ts_ns, raw)
    want = [raw for raw in lines if b'"type":"subscriptions"' not in raw]

    async def main() -> list[bytes]:
        srv = ReplayServer(ReplayConfig(root=tmp_path, venue=False, speed=None,
                                        dialect="exchange",
                                        linger_s=0.1))
        await srv.start()
        try:
            async with client(srv.ws_url) as ws:
                await ws.send(orjson.dumps({
                    "type": "subscribe", "product_ids": sorted(products),
                    "channels": ["level2_batch", "ticker", "matches"]}).decode())
                return await read_until_closed(ws, timeout=60)
        finally:
            await srv.stop()

    assert asyncio.run(main()) == want


@pytest.mark.parametrize("damage", ["unreadable_file", "one_batch"])
def test_damage_costs_that_stream_its_damaged_range_only_and_names_the_file(
    tmp_path: Path, damage: str
) -> None:
    streams: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    model = MarketModel(21, 4, "advanced_trade")
    with Engine(EngineConfig(root=tmp_path, backend="mmap", commit_records=40)) as eng:
        for k, (product, channel, raw) in enumerate(model.day_of_messages(1500)):
            eng.append(eng.stream(product, channel), T0 + k * STEP, raw)
            streams.setdefault((product, channel), []).append((T0 + k * STEP, raw))
            eng.commit_due() and eng.commit(now_ns=T0)
    victim = next(iter_segments(tmp_path, product="BTC-USD", channel="level2")).path
    btc = [raw for _, raw in streams[("BTC-USD", "level2")]]
    if damage == "unreadable_file":
        victim.write_bytes(b"this is not a segment" * 100)
    else:
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x04  # one byte inside one batch
        victim.write_bytes(bytes(data))

    async def main() -> tuple[int | None, list[bytes], list[dict[str, object]]]:
        srv = ReplayServer(ReplayConfig(root=tmp_path, venue=False, speed=None, linger_s=0.2))
        await srv.start()
        try:
            async with client(srv.ws_url) as ws:
                await ws.send('{"type":"subscribe","channel":"level2",'
                              '"product_ids":["BTC-USD","ETH-USD"]}')
                got = await read_until_closed(ws, timeout=30)
                code = ws.protocol.close_code
            assert srv.ledger is not None
            return code, got, srv.ledger.events(0)
        finally:
            await srv.stop()

    code, got, events = asyncio.run(main())
    assert code == 1000  # the session ran to its normal end
    eth = [raw for _, raw in streams[("ETH-USD", "level2")]]
    assert [m for m in got if m in set(eth)] == eth  # the other stream is whole
    btc_got = [m for m in got if m in set(btc)]
    if damage == "unreadable_file":
        assert btc_got == []
    else:  # one batch of <= 40 commits' worth of BTC records lost, the rest in order
        assert len(btc) - 40 <= len(btc_got) < len(btc)
        assert btc_got == [m for m in btc if m in set(btc_got)]
    [event] = [e for e in events if e["event"] == "replay_damage"]
    assert victim.name in str(event["error"])


def test_multi_product_streams_of_every_worker_are_replayed(tmp_path: Path) -> None:
    """A day recorded with ``ingest.workers = 2`` keeps frames naming several products in
    ``_multi-w0`` / ``_multi-w1``: a subscriber of the channel gets them, merged in receive
    order with the product streams; other ``_``-streams and other channels stay out."""
    multi = [b'{"channel":"ticker","events":[{"type":"update","tickers":['
             b'{"product_id":"BTC-USD"},{"product_id":"ETH-USD"}]}],"n":%d}' % i
             for i in range(4)]
    own = [b'{"channel":"ticker","events":[{"tickers":[{"product_id":"BTC-USD"}]}],"n":%d}' % i
           for i in range(3)]
    with Engine(EngineConfig(root=tmp_path, backend="mmap")) as eng:
        for i, raw in enumerate(multi):
            eng.append(eng.stream(f"_multi-w{i % 2}", "ticker"), T0 + (2 * i + 1) * STEP, raw)
        for i, raw in enumerate(own):
            eng.append(eng.stream("BTC-USD", "ticker"), T0 + 2 * i * STEP, raw)
        eng.append(eng.stream("_multi-wx", "ticker"), T0, b'{"not":"a worker stream"}')
        eng.append(eng.stream("_multi-w0", "candles"), T0, b'{"channel":"candles"}')

    async def main() -> list[bytes]:
        srv = ReplayServer(ReplayConfig(root=tmp_path, venue=False, speed=None,
                                        dialect="advanced_trade",
                                        linger_s=0.1, products=["BTC-USD", "ETH-USD"]))
        await srv.start()
        try:
            async with client(srv.ws_url) as ws:
                await ws.send('{"type":"subscribe","channel":"ticker","product_ids":["BTC-USD"]}')
                return await read_until_closed(ws, timeout=30)
        finally:
            await srv.stop()

    got = asyncio.run(main())
    assert got == [own[0], multi[0], own[1], multi[1], own[2], multi[2], multi[3]]
