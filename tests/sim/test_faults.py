"""Every fault kind is delivered at its scheduled frame index, and the ledger says exactly what
was sent and which gaps were injected (the client's bytes hash to the ledger's)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from typing import Any

import orjson
import pytest
from simhelpers import assert_ledger_prefix, at_sub, client, close_draining, venue
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

SPEC = ("seq_skip:3@20,malformed:bad_json@30,malformed:truncated@35,malformed:binary@40,"
        "hostile_product:dotdot@45,hostile_product:long@46,hostile_product:nonascii@47,"
        "error_reply:boom@50,oversize:200000@55,stall:0.6@60,close:4000@70")


async def _recv_all(ws: Any) -> tuple[list[bytes | str], list[float]]:
    msgs: list[bytes | str] = []
    stamps: list[float] = []
    async with asyncio.timeout(30):
        try:
            while True:
                msgs.append(await ws.recv())  # str for text frames, bytes for binary
                stamps.append(time.monotonic())
        except ConnectionClosed:
            pass
    return msgs, stamps


def _raw(m: bytes | str) -> bytes:
    return m.encode() if isinstance(m, str) else m


def test_advanced_trade_faults_arrive_where_scheduled_and_ledger_is_exact() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=4, rate_msgs_per_s=4000,
                         faults=SPEC) as sim:
            async with client(sim.ws_url) as ws:
                await ws.send(at_sub("level2", ["BTC-USD", "ETH-USD"]))
                await ws.send(at_sub("heartbeats"))
                msgs, stamps = await _recv_all(ws)
                assert ws.protocol.close_code == 4000
            led = sim.ledger
            assert led is not None
            assert len(msgs) == 70  # closed before frame 70
            assert_ledger_prefix(led, 0, [_raw(m) for m in msgs])
            assert len(led.frames(0)) == 70

            def seq(i: int) -> int:
                return int(orjson.loads(msgs[i])["sequence_num"])

            assert seq(20) - seq(19) == 4  # three numbers skipped
            for i in (30, 35):
                assert isinstance(msgs[i], str)
                with pytest.raises(orjson.JSONDecodeError):
                    orjson.loads(msgs[i])
            assert isinstance(msgs[40], bytes)  # a binary frame
            assert seq(31) == seq(29) + 1  # malformed frames consume no sequence number
            products = [orjson.loads(msgs[i])["events"][0]["tickers"][0]["product_id"]
                        for i in (45, 46, 47)]
            assert products == ["../x", "X" * 300 + "-USD", "BTC-ÜSD€"]
            assert seq(46) == seq(45) + 1
            assert orjson.loads(msgs[50]) == {"type": "error", "message": "boom"}
            big = orjson.loads(msgs[55])
            assert len(_raw(msgs[55])) >= 200_000 and big["channel"] == "l2_data"
            assert stamps[60] - stamps[59] >= 0.5  # silence without close (lower bound)

            faults = {(f["fault"], f["at_i"]) for f in led.faults(0)}
            assert faults == {("seq_skip", 20), ("malformed", 30), ("malformed", 35),
                              ("malformed", 40), ("hostile_product", 45),
                              ("hostile_product", 46), ("hostile_product", 47),
                              ("error_reply", 50), ("oversize", 55), ("stall", 60),
                              ("close", 70)}
            skip = next(f for f in led.faults(0) if f["fault"] == "seq_skip")
            assert (skip["skipped_from"], skip["skipped_to"]) == (seq(19) + 1, seq(19) + 3)
    asyncio.run(main())


def test_exchange_seq_skip_withholds_sequenced_frames_and_ledgers_each_gap() -> None:
    async def main() -> None:
        async with venue(dialect="exchange", products=3, rate_msgs_per_s=4000,
                         faults="seq_skip:2@5,close@400") as sim:
            async with client(sim.ws_url) as ws:
                await ws.send(orjson.dumps({"type": "subscribe", "product_ids": ["BTC-USD"],
                                            "channels": ["matches", "level2_batch"]}).decode())
                msgs, _ = await _recv_all(ws)
            led = sim.ledger
            assert led is not None
            raws = [_raw(m) for m in msgs]
            assert_ledger_prefix(led, 0, raws)
            gaps = led.faults(0)
            assert len(gaps) == 3 and [g["fault"] for g in gaps] == ["seq_skip"] * 2 + ["close"]
            got_matches = [orjson.loads(r) for r in raws
                           if b'"type":"match"' in r or b'"type":"last_match"' in r]
            sent = {(m["product_id"], m["sequence"]) for m in got_matches}
            for g in gaps[:2]:
                assert g["channel"] == "match" and (g["product"], g["seq"]) not in sent
            ids = [m["trade_id"] for m in got_matches]
            missing = {a + 1 for a, b in itertools.pairwise(ids) if b != a + 1}
            assert len(missing) >= 1  # the trade_id gap a daemon must detect
            assert sum(b - a - 1 for a, b in itertools.pairwise(ids)) == 2
    asyncio.run(main())


def test_abnormal_close_delivers_every_ledgered_frame_then_1006() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=2, rate_msgs_per_s=3000,
                         faults="abnormal_close@c0/300") as sim:
            async with client(sim.ws_url) as ws:
                await ws.send(at_sub("level2", ["BTC-USD", "ETH-USD"]))
                got: list[bytes] = []
                with pytest.raises(ConnectionClosedError):
                    async with asyncio.timeout(20):
                        while True:
                            got.append(await ws.recv(decode=False))
                assert ws.protocol.close_code == 1006
            assert sim.ledger is not None
            assert len(got) == 300 == len(sim.ledger.frames(0))
            assert_ledger_prefix(sim.ledger, 0, got)
    asyncio.run(main())


def test_faults_target_one_connection_and_repeat_on_a_period() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=2, rate_msgs_per_s=3000,
                         faults="close@c1/10,error_reply@*25") as sim:
            async with client(sim.ws_url) as a, client(sim.ws_url) as b:
                for ws in (a, b):
                    await ws.send(at_sub("level2", ["BTC-USD", "ETH-USD"]))
                b_msgs, _ = await _recv_all(b)
                a_msgs: list[bytes] = []
                async with asyncio.timeout(20):
                    while len(a_msgs) < 80:
                        a_msgs.append(await a.recv(decode=False))
                await close_draining(a)
            assert len(b_msgs) == 10 and b.protocol.close_code == 1000
            errors = [i for i, m in enumerate(a_msgs) if b'"type":"error"' in m]
            assert errors == [25, 50, 75]
            assert sim.ledger is not None
            assert [f["at_i"] for f in sim.ledger.faults(0)][:3] == [25, 50, 75]
            digests = [f.sha256 for f in sim.ledger.frames(0)[:80]]
            assert digests == [hashlib.sha256(m).hexdigest() for m in a_msgs]
    asyncio.run(main())


def test_slow_rest_trickles_the_scheduled_requests_and_ledgers_them() -> None:
    """``slow_rest:S@INDEX`` counts REST requests: the first answer trickles one byte every
    S seconds (a per-read timeout never trips), the next ones come at once."""
    from logger.products import ProductsError, fetch_products

    async def main() -> None:
        async with venue(dialect="advanced_trade", products=3, rate_msgs_per_s=10,
                         faults="slow_rest:0.5@0") as sim:
            t0 = time.monotonic()
            with pytest.raises(ProductsError, match=r"no complete product list within 1\.5 s"):
                await fetch_products(sim.rest_url, "advanced_trade", 1.5)
            assert 1.4 < time.monotonic() - t0 < 3.0
            got = await fetch_products(sim.rest_url, "advanced_trade", 5)
            assert len(got) == 3
            assert sim.rest_requests == 2
            assert sim.ledger is not None
            assert sim.ledger.faults(-1) == [{"conn": -1, "fault": "slow_rest", "at_i": 0,
                                              "seconds": 0.5}]
    asyncio.run(main())


def test_ping_flood_sends_pings_without_reading_then_resumes() -> None:
    """Pings as fast as the client reads them, the client's pongs unread meanwhile; the
    data frames keep arriving whole, in ledger order."""
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=2, rate_msgs_per_s=2000,
                         faults="ping_flood:0.5@c0/20") as sim:
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Version: 13\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            sub = at_sub("level2", ["BTC-USD", "ETH-USD"]).encode()
            writer.write(bytes((0x81, 0x80 | len(sub))) + b"\0\0\0\0" + sub)
            pings = 0
            texts: list[bytes] = []
            async with asyncio.timeout(20):
                while len(texts) < 200:
                    h = await reader.readexactly(2)
                    n = h[1] & 0x7F
                    if n == 126:
                        n = int.from_bytes(await reader.readexactly(2), "big")
                    elif n == 127:
                        n = int.from_bytes(await reader.readexactly(8), "big")
                    payload = await reader.readexactly(n)
                    if h[0] & 0x0F == 0x9:
                        pings += 1
                    else:
                        texts.append(payload)
            writer.close()
            assert pings > 1000
            assert sim.ledger is not None
            assert [f["fault"] for f in sim.ledger.faults(0)] == ["ping_flood"]
            digests = [f.sha256 for f in sim.ledger.frames(0)[:200]]
            assert digests == [hashlib.sha256(m).hexdigest() for m in texts]
    asyncio.run(main())
