"""The pool against the simulator in-process (real sockets): startup within the venue's
limits (market data first, keepalive after) and product refresh."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from logger.connection import ConnSettings
from logger.pool import Pool
from logger.products import fetch_products
from logger.protocol import ADVANCED_TRADE
from logger.shard import plan_connections
from logger.sink import Sink
from storage import Engine, EngineConfig
from tools.venue.server import SimConfig, Simulator
from tools.venue.session import Session

CHANNELS = ("heartbeats", "ticker", "level2")


def _plan(ids: list[str]) -> list[dict[str, list[str]]]:
    return plan_connections(ids, CHANNELS, ADVANCED_TRADE, 30)


def test_startup_and_refresh_without_restart(tmp_path: Path) -> None:
    async def go() -> None:
        sim = Simulator(SimConfig(dialect="advanced_trade", products=70, rate_msgs_per_s=200))
        await sim.start()
        sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="pwrite")))
        sink.start()
        try:
            listed = [p.product_id for p in
                      await fetch_products(sim.rest_url, "advanced_trade")]
            first, later = listed[:50], listed[50:]
            pool = Pool(ADVANCED_TRADE, sim.ws_url, sink, ConnSettings(ack_timeout_s=5))
            pool.start(_plan(first))  # the venue's default 8 subscribe messages/s
            report = await pool.wait_started(20)
            # ticker for all 50 on one connection, level2 on two: 2 + 2 + 2 frames
            assert (report.connections, report.products, report.settled) == (3, 50, 3)
            assert report.missing == 0

            # a refresh: 5 delisted, 20 new listings — existing connections keep running
            gone, wanted = first[:5], first[5:] + later
            added, removed = pool.update_products(wanted, _plan)
            assert sorted(removed) == sorted(gone) and sorted(added) == sorted(later)
            end = time.monotonic() + 15
            while time.monotonic() < end:
                acked = {p for c in pool.connections.values()
                         for p in c.feed.acknowledged.get("level2", ())}
                ticker = [p for c in pool.connections.values()
                          for p in c.feed.acknowledged.get("ticker", ())]
                if acked == set(wanted) and sorted(ticker) == sorted(wanted):
                    break
                await asyncio.sleep(0.05)
            assert acked == set(wanted)
            assert sorted(ticker) == sorted(wanted)  # each product's ticker exactly once
            assert all(len(c.feed.requested.get("level2", ())) <= 30
                       for c in pool.connections.values())
            # 45 kept level2 products + 20 new: the two level2 connections fill up to 30,
            # 5 get a new level2 connection; the ticker connection takes all 20
            assert len(pool.connections) == 4
            assert [set(c.feed.requested) for c in pool.connections.values()] == [
                {"heartbeats", "ticker"}] + [{"heartbeats", "level2"}] * 3
            assert sum(c.stats.reconnects for c in pool.connections.values()) == 0
            await pool.stop()
        finally:
            await sim.stop()
            await asyncio.to_thread(sink.close)

    asyncio.run(go())


def test_400_products_market_data_first_within_the_message_limit(tmp_path: Path) -> None:
    """All channels of 400 products against the venue enforcing 8 opens/s and 8 messages/s
    per IP: nothing refused, every subscription acknowledged, and the venue receives every
    market-data subscribe before any keepalive (``heartbeats``) one."""
    async def go() -> None:
        sim = Simulator(SimConfig(dialect="advanced_trade", products=400, rate_msgs_per_s=200))
        assert sim.limits.message_rate("advanced_trade") == 8  # on by default
        arrived: list[tuple[int, str]] = []  # (venue connection, channel), as handled
        handle = sim.on_text

        def on_text(s: Session, data: bytes) -> None:
            arrived.append((s.id, orjson.loads(data)["channel"]))
            handle(s, data)

        sim.on_text = on_text  # type: ignore[method-assign]
        await sim.start()
        sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="pwrite")))
        sink.start()
        try:
            ids = [p.product_id for p in
                   await fetch_products(sim.rest_url, "advanced_trade")]
            pool = Pool(ADVANCED_TRADE, sim.ws_url, sink, ConnSettings())
            plan = plan_connections(ids, ADVANCED_TRADE.channels, ADVANCED_TRADE)
            pool.start(plan)
            report = await pool.wait_started(60)
            assert (report.connections, report.products, report.settled) == (15, 400, 15)
            assert report.missing == 0
            assert report.data_seconds <= report.seconds  # data answered first
            assert sim.ledger is not None
            assert not [e for c in sim.ledger.conns() for e in sim.ledger.events(c)
                        if "refused" in e["event"]]
            assert sum(c.stats.errors + c.stats.reconnects
                       for c in pool.connections.values()) == 0
            # 19 market-data frames (level2 × 14, five channels × 1), then 15 keepalive
            channels = [ch for _conn, ch in arrived]
            assert len(channels) == 34 and channels.count("heartbeats") == 15
            assert channels[19:] == ["heartbeats"] * 15
            assert sorted(conn for conn, ch in arrived if ch == "heartbeats") == list(range(15))
            await pool.stop()
        finally:
            await sim.stop()
            await asyncio.to_thread(sink.close)

    asyncio.run(go())
