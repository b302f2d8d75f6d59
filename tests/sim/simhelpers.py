"""Helpers for simulator tests: run a venue, subscribe, read until closed (real sockets)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tools.venue.ledger import Ledger
from tools.venue.server import SimConfig, Simulator


@asynccontextmanager
async def venue(**kw: Any) -> AsyncIterator[Simulator]:
    kw.setdefault("start_ns", 1_767_312_000 * 10**9)
    sim = Simulator(SimConfig(**kw))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def at_sub(channel: str, products: list[str] | None = None, kind: str = "subscribe") -> str:
    msg: dict[str, Any] = {"type": kind, "channel": channel}
    if products is not None:
        msg["product_ids"] = products
    return orjson.dumps(msg).decode()


async def read_n(ws: ClientConnection, n: int, timeout: float = 20.0) -> list[bytes]:
    out: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            msg = await ws.recv(decode=False)
            assert isinstance(msg, bytes)
            out.append(msg)
    return out


async def read_until(ws: ClientConnection, pred: Callable[[Any], bool],
                     timeout: float = 20.0) -> list[Any]:
    """Parsed messages up to and including the first for which `pred` is true."""
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        while not out or not pred(out[-1]):
            out.append(orjson.loads(await ws.recv(decode=False)))
    return out


def is_ack(o: Any) -> bool:
    return isinstance(o, dict) and (o.get("channel") == "subscriptions"
                                    or o.get("type") == "subscriptions")


def is_error(o: Any) -> bool:
    return isinstance(o, dict) and o.get("type") == "error"


async def read_until_closed(ws: ClientConnection, timeout: float = 20.0) -> list[bytes]:
    out: list[bytes] = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                msg = await ws.recv(decode=False)
                assert isinstance(msg, bytes)
                out.append(msg)
        except ConnectionClosed:
            pass
    return out


def client(url: str, **kw: Any) -> Any:
    kw.setdefault("max_size", None)
    kw.setdefault("compression", None)
    kw.setdefault("close_timeout", 2)
    return connect(url, **kw)


async def close_draining(ws: ClientConnection) -> list[bytes]:
    """Close while reading: websockets stops reading the socket when its queue is full, so
    a plain close() would wait for the server's close frame behind unread frames."""
    drain = asyncio.ensure_future(read_until_closed(ws))
    await ws.close()
    return await drain


def assert_ledger_prefix(ledger: Ledger | None, conn: int, received: list[bytes]) -> None:
    """The client's frames, in order, are exactly the ledger's first frames of `conn`."""
    assert ledger is not None
    frames = ledger.frames(conn)
    assert len(frames) >= len(received)
    for k, (entry, raw) in enumerate(zip(frames, received, strict=False)):
        assert entry.i == k
        assert entry.len == len(raw), k
        assert entry.sha256 == hashlib.sha256(raw).hexdigest(), k
