"""A scripted WebSocket server on 127.0.0.1 for connection-shell tests.

Raw asyncio + hand-written frames, so a test can send what a well-behaved library never would:
binary and fragmented messages, broken JSON, oversize frames, an HTTP 429 instead of the
upgrade, or silence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((b0, n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


def at_frame(seq: int, channel: str = "ticker", product: str = "BTC-USD") -> bytes:
    wire = "l2_data" if channel == "level2" else channel
    return (b'{"channel":"%s","timestamp":"2026-01-01T00:00:00Z","sequence_num":%d,'
            b'"events":[{"type":"update","tickers":[{"type":"ticker","product_id":"%s",'
            b'"price":"1"}]}]}' % (wire.encode(), seq, product.encode()))


def at_ack(seq: int, subs: dict[str, list[str]]) -> bytes:
    import json

    return (b'{"channel":"subscriptions","timestamp":"2026-01-01T00:00:00Z","sequence_num":%d,'
            b'"events":[{"subscriptions":%s}]}' % (seq, json.dumps(subs).encode()))


Script = Callable[["Session"], Awaitable[None]]


@dataclass
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: list[bytes] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def read_frame(self, timeout: float = 5.0) -> bytes:
        """One client frame's payload (client frames are masked)."""
        h = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        mask = await self.reader.readexactly(4) if h[1] & 0x80 else b"\0\0\0\0"
        data = bytearray(await self.reader.readexactly(n))
        for i in range(n):
            data[i] ^= mask[i % 4]
        self.received.append(bytes(data))
        return bytes(data)

    def close_tcp(self) -> None:
        self.writer.close()


class ScriptedServer:
    """Each accepted connection runs the next script (the last one repeats)."""

    def __init__(self, scripts: list[Script], reject_first: int = 0) -> None:
        self.scripts = scripts
        self.reject_first = reject_first
        self.accepted = 0
        self.rejected = 0
        self.sessions: list[Session] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for s in self.sessions:
            s.writer.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await reader.readuntil(b"\r\n\r\n")
        if self.rejected < self.reject_first:
            self.rejected += 1
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 27\r\n"
                         b"Connection: close\r\n\r\nYou are connecting too fast")
            await writer.drain()
            writer.close()
            return
        key = b""
        for line in req.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        s = Session(reader, writer)
        self.sessions.append(s)
        script = self.scripts[min(self.accepted, len(self.scripts) - 1)]
        self.accepted += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            await script(s)
