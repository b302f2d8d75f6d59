"""The venue's limits, enforced over real sockets: 31st level2 product refused, 9th open in a
second refused with HTTP 429, 9th client message in a second (per IP) refused, no subscribe →
closed, oversized inbound → 1009, slow consumer dropped; and all of them off with
``limits=False``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from simhelpers import (
    at_sub,
    client,
    close_draining,
    is_ack,
    is_error,
    read_n,
    read_until,
    read_until_closed,
    venue,
)
from websockets.exceptions import InvalidStatus

from tools.venue.generator import default_products
from tools.venue.limits import Limits


def test_31st_level2_product_is_refused_with_the_real_error_text() -> None:
    ids = default_products(40)

    async def main() -> None:
        async with venue(dialect="advanced_trade", products=ids, rate_msgs_per_s=20) as sim:
            async with client(sim.ws_url) as ws:
                await ws.send(at_sub("level2", ids[:20]))
                first = await read_until(ws, is_ack)
                assert first[-1]["events"][0]["subscriptions"]["level2"] == ids[:20]
                await ws.send(at_sub("level2", ids[20:31]))  # 20 + 11 = 31 held: refused
                got = await read_until(ws, lambda o: is_error(o) or is_ack(o))
                assert got[-1] == {"type": "error",
                                   "message": "too many L2 streams requested in a single session"}
                await ws.send(at_sub("level2", ids[20:30]))  # exactly 30: accepted
                got = await read_until(ws, lambda o: is_error(o) or is_ack(o))
                assert got[-1]["events"][0]["subscriptions"]["level2"] == ids[:30]
                # an unsubscribe frees room (the cap counts products held, not ever held)
                await ws.send(at_sub("level2", ids[:1], "unsubscribe"))
                got = await read_until(ws, lambda o: is_error(o) or is_ack(o))
                assert got[-1]["events"][0]["subscriptions"]["level2"] == ids[1:30]
                await ws.send(at_sub("level2", ids[30:31]))
                got = await read_until(ws, lambda o: is_error(o) or is_ack(o))
                assert got[-1]["events"][0]["subscriptions"]["level2"] == ids[1:31]
            assert sim.ledger is not None
            refused = [e for e in sim.ledger.events(0) if e["event"] == "l2_cap_refused"]
            assert len(refused) == 1
            assert refused[0]["requested"] == 11 and refused[0]["held"] == 20
            # the event points at the error frame the client got
            assert sim.ledger.frames(0)[refused[0]["at_i"]].channel == "error"
    asyncio.run(main())


def test_ninth_open_in_a_second_is_refused_with_429() -> None:
    async def main() -> None:
        async with venue(dialect="advanced_trade", products=2) as sim:
            conns = [await client(sim.ws_url) for _ in range(8)]
            with pytest.raises(InvalidStatus) as e:
                await client(sim.ws_url)
            assert e.value.response.status_code == 429
            assert e.value.response.body == b"You are connecting too fast"
            for c in conns:
                await c.send(at_sub("heartbeats"))
                await c.close()
            assert sim.ledger is not None
            assert [ev["event"] for ev in sim.ledger.events(-1)] == ["connect_refused"]
            assert sim.connections_opened == 8
    asyncio.run(main())


def test_no_subscribe_within_the_deadline_closes_the_connection() -> None:
    async def main() -> None:
        lim = Limits(subscribe_timeout_s=0.3)
        async with venue(dialect="exchange", products=2, limits=lim) as sim:
            async with client(sim.ws_url) as ws:
                await read_until_closed(ws, timeout=10)
                assert ws.protocol.close_code == 1008
            async with client(sim.ws_url) as ws2:  # a subscriber within the deadline stays
                await ws2.send('{"type":"subscribe","channels":["status"]}')
                await asyncio.sleep(0.6)
                assert ws2.protocol.close_code is None
            assert sim.ledger is not None
            assert [e["event"] for e in sim.ledger.events(0)] == ["subscribe_timeout"]
            assert all(e["event"] != "subscribe_timeout" for e in sim.ledger.events(1))
    asyncio.run(main())


def test_oversized_inbound_message_closes_with_1009() -> None:
    async def main() -> None:
        lim = Limits(max_inbound_bytes=4096)
        async with venue(dialect="advanced_trade", products=2, limits=lim) as sim:
            async with client(sim.ws_url) as ws:
                await ws.send(at_sub("level2", ["BTC-USD"] * 1000))
                await read_until_closed(ws, timeout=10)
                assert ws.protocol.close_code == 1009
            assert sim.ledger is not None
            assert sim.ledger.events(0)[0]["event"] == "inbound_too_big"
    asyncio.run(main())


async def _raw_subscriber(port: int, sub: bytes) -> tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]:
    """A client that subscribes and then never reads (tiny receive buffer)."""
    import socket
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    r, w = await asyncio.open_connection(sock=sock)
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await r.readuntil(b"\r\n\r\n")
    w.write(bytes((0x81, 0x80 | len(sub))) + b"\0\0\0\0" + sub)
    return r, w


@pytest.mark.parametrize("rate", [0.0, 40_000.0], ids=["max-rate", "paced"])
def test_slow_consumer_is_disconnected(rate: float) -> None:
    async def main() -> None:
        lim = Limits(send_buffer_bytes=1 << 20, slow_consumer_s=0.5)
        async with venue(dialect="advanced_trade", products=3, rate_msgs_per_s=rate,
                         limits=lim) as sim:
            r, w = await _raw_subscriber(sim.port, at_sub("level2", ["BTC-USD", "ETH-USD"])
                                         .encode())
            async with asyncio.timeout(30):
                while sim.sessions:  # the venue drops us while we are not reading
                    await asyncio.sleep(0.05)
            assert sim.ledger is not None
            ev = sim.ledger.events(0)
            assert ev[0]["event"] == "slow_consumer" and ev[0]["unsent_bytes"] > 0
            # what the client still gets is what the kernel held; then the stream ends
            # (EOF or reset) without a close frame
            tail = b""
            async with asyncio.timeout(10):
                try:
                    while chunk := await r.read(1 << 16):
                        tail = (tail + chunk)[-4:]
                except ConnectionError:
                    pass
            assert tail != b"\x88\x02\x03\xe8"
            w.close()
    asyncio.run(main())


def test_limits_off_accepts_what_limits_on_refuse() -> None:
    ids = default_products(35)

    async def main() -> None:
        async with venue(dialect="advanced_trade", products=ids, limits=False) as sim:
            conns = [await client(sim.ws_url) for _ in range(10)]
            await conns[0].send(at_sub("level2", ids))
            got = [orjson.loads(m) for m in await read_n(conns[0], 36)]
            assert got[-1]["events"][0]["subscriptions"]["level2"] == ids
            assert all(m.get("type") != "error" for m in got)
            await close_draining(conns[0])
            for c in conns[1:]:
                await c.close()
    asyncio.run(main())


async def _answers(ws: Any, n: int) -> list[Any]:
    """The next ``n`` answers (acks or errors) on ``ws``, snapshots skipped."""
    out: list[Any] = []
    for _ in range(n):
        out.append((await read_until(ws, lambda o: is_error(o) or is_ack(o)))[-1])
    return out


def test_ninth_message_in_a_second_per_ip_is_refused() -> None:
    ids = default_products(9)

    async def main() -> None:
        async with venue(dialect="advanced_trade", products=ids) as sim:
            async with client(sim.ws_url) as a, client(sim.ws_url) as b:
                for p in ids[:5]:  # the limit is per IP: both connections count
                    await a.send(at_sub("ticker", [p]))
                for p in ids[5:]:
                    await b.send(at_sub("ticker", [p]))
                got = await _answers(a, 5) + await _answers(b, 4)
                assert sum(map(is_ack, got)) == 8
                assert [o for o in got if is_error(o)] == [
                    {"type": "error", "message": "rate limit exceeded"}]
                assert is_error(got[-1])  # the 9th, on b
                # the socket stays open; the refused subscribe was not applied
                await asyncio.sleep(1.1)
                await b.send(at_sub("ticker", ids[8:]))
                again = await _answers(b, 1)
                assert sorted(again[0]["events"][0]["subscriptions"]["ticker"]) == sorted(ids[5:])
            assert sim.ledger is not None
            refused = [e for c in sim.ledger.conns() for e in sim.ledger.events(c)
                       if e["event"] == "message_rate_refused"]
            assert [(e["conn"], e["limit"], e["closed"]) for e in refused] == [(1, 8, False)]
            assert sim.ledger.frames(1)[refused[0]["at_i"]].channel == "error"
    asyncio.run(main())


def test_eight_messages_per_second_are_accepted() -> None:
    ids = default_products(16)

    async def main() -> None:
        async with venue(dialect="advanced_trade", products=ids) as sim:
            async with client(sim.ws_url) as ws:
                for burst in (ids[:8], ids[8:]):
                    for p in burst:
                        await ws.send(at_sub("ticker", [p]))
                    got = await _answers(ws, 8)
                    assert all(map(is_ack, got))
                    await asyncio.sleep(1.1)  # never more than 8 in any second
                assert sorted(got[-1]["events"][0]["subscriptions"]["ticker"]) == sorted(ids)
            assert sim.ledger is not None
            assert not [e for c in sim.ledger.conns() for e in sim.ledger.events(c)
                        if e["event"] == "message_rate_refused"]
    asyncio.run(main())


def test_exchange_message_rate_error_then_close_and_the_switches() -> None:
    assert Limits().message_rate("advanced_trade") == 8
    assert Limits().message_rate("exchange") == 100
    assert Limits(enabled=False).message_rate("advanced_trade") == 0
    assert Limits(messages_per_second=0).message_rate("advanced_trade") == 0  # unchecked

    async def main() -> None:
        async with venue(dialect="exchange", products=2,
                         limits=Limits(messages_per_second=2)) as sim:
            async with client(sim.ws_url) as ws:
                for _ in range(3):
                    await ws.send('{"type":"subscribe","channels":["status"]}')
                got = [orjson.loads(m) for m in await read_until_closed(ws, timeout=10)]
                assert ws.protocol.close_code == 1008
                assert [o for o in got if is_error(o)] == [
                    {"type": "error", "message": "ErrSlowRead",
                     "reason": "client sends too many messages"}]
                assert sum(map(is_ack, got)) == 2
            assert sim.ledger is not None
            assert [(e["event"], e["closed"]) for e in sim.ledger.events(0)] == [
                ("message_rate_refused", True)]
        # limits off: 12 at once, all answered
        async with venue(dialect="advanced_trade", products=ids, limits=False) as sim, \
                client(sim.ws_url) as ws:
            for p in ids:
                await ws.send(at_sub("ticker", [p]))
            assert all(map(is_ack, await _answers(ws, 12)))

    ids = default_products(12)
    asyncio.run(main())
