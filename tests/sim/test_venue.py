"""The venue over real sockets: both dialects' subscribe/ack/error behaviour, REST products,
per-connection / per-product sequence numbers, ping, and the ledger matching received bytes."""

from __future__ import annotations

import asyncio
import urllib.request

import orjson
import pytest
from simhelpers import (
    assert_ledger_prefix,
    at_sub,
    client,
    close_draining,
    read_n,
    read_until_closed,
    venue,
)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_rest_products_in_both_shapes() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=12) as sim:
            st, body = await asyncio.to_thread(_get, sim.rest_url)
            assert st == 200
            doc = orjson.loads(body)
            assert doc["num_products"] == 12 and doc["products"][0]["product_id"] == "BTC-USD"
            assert doc["products"][0]["status"] == "online"
            st, body = await asyncio.to_thread(_get, sim.rest_url + "?limit=5&offset=10")
            page = orjson.loads(body)
            assert len(page["products"]) == 2 and page["pagination"]["has_prev"]
            base = sim.rest_url.split("/api/")[0]
            st, body = await asyncio.to_thread(_get, base + "/products")
            arr = orjson.loads(body)
            assert isinstance(arr, list) and arr[1]["id"] == "ETH-USD"
            assert "trading_disabled" in arr[1]
            st, _ = await asyncio.to_thread(_get, base + "/nothing")
            assert st == 404
    asyncio.run(main())


def test_advanced_trade_snapshot_ack_and_sequence_per_connection() -> None:
    async def main() -> None:
        async with (venue(dialect="advanced_trade", products=6, rate_msgs_per_s=3000) as sim,
                    client(sim.ws_url) as ws):
            await ws.send(at_sub("level2", ["BTC-USD", "NOT-REAL"]))
            await ws.send(at_sub("heartbeats"))
            await ws.send(at_sub("market_trades", ["ETH-USD"]))
            got = await read_n(ws, 400)
            await close_draining(ws)
        objs = [orjson.loads(g) for g in got]
        assert [o["sequence_num"] for o in objs] == list(range(len(objs)))  # per connection
        assert objs[0]["channel"] == "l2_data" and objs[0]["events"][0]["type"] == "snapshot"
        assert objs[1]["channel"] == "subscriptions"
        # unknown ids are silently left out of the cumulative ack
        assert objs[1]["events"][0]["subscriptions"] == {"level2": ["BTC-USD"]}
        acks = [o for o in objs if o["channel"] == "subscriptions"]
        assert acks[-1]["events"][0]["subscriptions"] == {
            "level2": ["BTC-USD"], "heartbeats": ["heartbeats"], "market_trades": ["ETH-USD"]}
        chans = {o["channel"] for o in objs}
        assert chans <= {"l2_data", "subscriptions", "heartbeats", "market_trades"}
        for o in objs:
            if o["channel"] == "l2_data":
                assert o["events"][0]["product_id"] == "BTC-USD"
        assert_ledger_prefix(sim.ledger, 0, got)
    asyncio.run(main())


def test_advanced_trade_error_replies() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=3) as sim, client(sim.ws_url) as ws:
            await ws.send(at_sub("user", ["BTC-USD"]))
            await ws.send('{"type":"subscribe","channels":["level2"]}')
            await ws.send("not json")
            got = [orjson.loads(m) for m in await read_n(ws, 3)]
        assert got == [{"type": "error", "message": "authentication failure"},
                       {"type": "error", "message": "failure to subscribe"},
                       {"type": "error", "message": "failure to subscribe"}]
    asyncio.run(main())


def test_advanced_trade_unsubscribe_stops_the_stream() -> None:
    async def main() -> None:
        async with (venue(dialect="advanced_trade", products=3, rate_msgs_per_s=2000) as sim,
                    client(sim.ws_url) as ws):
            await ws.send(at_sub("level2", ["BTC-USD", "ETH-USD", "SOL-USD"]))
            await read_n(ws, 50)
            await ws.send(at_sub("level2", ["BTC-USD", "ETH-USD"], "unsubscribe"))
            seen_ack = False
            after: list[dict[str, object]] = []
            async with asyncio.timeout(10):
                while len(after) < 100:
                    o = orjson.loads(await ws.recv(decode=False))
                    if o["channel"] == "subscriptions":
                        assert o["events"][0]["subscriptions"] == {"level2": ["SOL-USD"]}
                        seen_ack = True
                    elif seen_ack:
                        after.append(o)
        assert {e["product_id"] for o in after for e in o["events"]} == {"SOL-USD"}  # type: ignore[attr-defined]
    asyncio.run(main())


def test_exchange_acks_errors_and_per_product_counters() -> None:
    async def main() -> None:
        async with (venue(dialect="exchange", products=5, rate_msgs_per_s=4000) as sim,
                    client(sim.ws_url) as ws):
            await ws.send(orjson.dumps({
                "type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD", "YFI-USD"],
                "channels": ["level2_batch", "matches", "heartbeat", "ticker", "level2",
                             {"name": "status"}]}).decode())
            got = [orjson.loads(m) for m in await read_n(ws, 1500)]
            await ws.send('{"type":"subscribe","channels":[]}')
            await ws.send('{"type":"subscribe","channels":["heartbeat"]}')
            tail: list[dict[str, object]] = []
            async with asyncio.timeout(10):
                while len(tail) < 2:
                    o = orjson.loads(await ws.recv(decode=False))
                    if o["type"] == "error":
                        tail.append(o)
            await close_draining(ws)
        errors = [o for o in got if o["type"] == "error"]
        # one error per channel for the unknown product, and the auth error for level2
        assert sum(o["reason"] == "YFI-USD is not a valid product" for o in errors) == 4
        assert any(o["reason"].startswith("level2, level3, and full channels now require")
                   for o in errors)
        ack = next(o for o in got if o["type"] == "subscriptions")
        names = [c["name"] for c in ack["channels"]]
        assert names == ["level2_50", "matches", "heartbeat", "ticker", "status"]
        assert ack["channels"][0]["product_ids"] == ["BTC-USD", "ETH-USD"]
        kinds = [o["type"] for o in got]
        assert kinds.index("subscriptions") < kinds.index("snapshot")
        assert "last_match" in kinds and "status" in kinds
        trade: dict[str, int] = {}
        for o in got:
            if o["type"] in ("match", "last_match"):
                if o["product_id"] in trade:
                    assert o["trade_id"] == trade[o["product_id"]] + 1
                trade[o["product_id"]] = o["trade_id"]
        assert tail[0]["reason"] == "No channels provided"
        assert tail[1]["reason"] == ("You need to specify at least one product ID for "
                                     "channel heartbeat")
    asyncio.run(main())


def test_ping_is_answered_and_client_close_is_recorded() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=2, rate_msgs_per_s=50) as sim:
            async with client(sim.ws_url) as ws:
                await ws.send(at_sub("heartbeats"))
                pong = await ws.ping(b"abc")
                async with asyncio.timeout(5):
                    await pong
            await asyncio.sleep(0.05)
            assert sim.ledger is not None
            assert sim.ledger.events(0)[-1]["event"] == "client_close"
    asyncio.run(main())


@pytest.mark.parametrize("dialect", ["advanced_trade", "exchange"])
def test_every_received_frame_is_in_the_ledger_in_order(dialect: str) -> None:
    async def main() -> None:
        async with venue(dialect=dialect, products=8, rate_msgs_per_s=5000) as sim:
            async with client(sim.ws_url) as ws:
                if dialect == "advanced_trade":
                    for ch in ("level2", "ticker", "market_trades", "candles"):
                        await ws.send(at_sub(ch, ["BTC-USD", "SOL-USD", "XRP-USD"]))
                    await ws.send(at_sub("heartbeats"))
                else:
                    await ws.send(orjson.dumps({
                        "type": "subscribe", "product_ids": ["BTC-USD", "SOL-USD"],
                        "channels": ["level2_batch", "matches", "ticker", "heartbeat"]}).decode())
                got = await read_n(ws, 2000)
                await close_draining(ws)
            assert_ledger_prefix(sim.ledger, 0, got)
            assert sim.ledger is not None
            frames = sim.ledger.frames(0)
            for f, raw in zip(frames, got, strict=False):
                o = orjson.loads(raw)
                assert f.channel == (o["channel"] if dialect == "advanced_trade" else o["type"])
                if dialect == "advanced_trade":
                    assert f.seq == o["sequence_num"]
                else:
                    assert f.seq == o.get("sequence")
    asyncio.run(main())


def test_read_until_closed_on_stop() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=2, rate_msgs_per_s=100) as sim:
            ws = await client(sim.ws_url)
            await ws.send(at_sub("heartbeats"))
            await read_n(ws, 1)
        await read_until_closed(ws)
        assert ws.protocol.close_code == 1001  # going away on stop
    asyncio.run(main())


def test_tape_mode_keeps_sequence_contiguous_across_cycles() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=3, rate_msgs_per_s=0,
                         tape_events=300) as sim, client(sim.ws_url) as ws:
            await ws.send(at_sub("level2", ["BTC-USD", "ETH-USD", "SOL-USD"]))
            got = await read_n(ws, 1500)  # several cycles of a 300-event tape
            await close_draining(ws)
        seqs = [orjson.loads(g)["sequence_num"] for g in got]
        assert seqs == list(range(len(got)))
        bodies = [g.split(b'"events":', 1)[1] for g in got[10:]]
        assert len(set(bodies)) < len(bodies)  # the tape repeats
    asyncio.run(main())


def test_bad_configurations_are_refused() -> None:
    from tools.venue.server import SimConfig, Simulator

    with pytest.raises(ValueError, match="loopback"):
        Simulator(SimConfig(host="0.0.0.0"))
    with pytest.raises(ValueError, match="Advanced Trade only"):
        Simulator(SimConfig(dialect="exchange", tape_events=10))
    with pytest.raises(ValueError, match=">= 0"):
        Simulator(SimConfig(rate_msgs_per_s=-1))


def test_a_failing_pump_closes_every_connection_with_1011(
        capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> int | None:
        async with (venue(dialect="advanced_trade", products=2, rate_msgs_per_s=100) as sim,
                    client(sim.ws_url) as ws):
            await ws.send(at_sub("level2", ["BTC-USD"]))
            await read_n(ws, 2)
            assert sim.model is not None

            def broken(n: int, until_ns: int) -> list[object]:
                raise RuntimeError("generator exploded")
            sim.model.generate = broken  # type: ignore[assignment,method-assign]
            await read_until_closed(ws, timeout=10)
            return ws.protocol.close_code

    assert asyncio.run(main()) == 1011
    assert "generator exploded" in capsys.readouterr().err
