"""Server-side WebSocket (RFC 6455) and HTTP/1.1 primitives, hand-rolled for the venue.

Why not the `websockets` server: the venue must write pre-encoded frames in bulk (one
``transport.write`` per batch, not one coroutine step per frame), answer an upgrade with a plain
HTTP 429, send deliberately broken frames (truncated, binary, oversized) and drop a connection
without a close frame. A few dozen lines of framing over asyncio transports do all of that;
``bench/simulator.py`` measures it against the `websockets` server.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterator
from typing import NamedTuple

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
#: requests larger than this without a blank line are refused (not a WebSocket client)
MAX_REQUEST_BYTES = 16 * 1024


class WSProtocolError(Exception):
    """A client broke the protocol; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def header(opcode: int, n: int) -> bytes:
    """Header of one unmasked, final server frame carrying `n` payload bytes."""
    b0 = 0x80 | opcode
    if n < 126:
        return bytes((b0, n))
    if n < 65536:
        return _H16.pack(b0, 126, n)
    return _H64.pack(b0, 127, n)


def text_header(n: int) -> bytes:
    return header(OP_TEXT, n)


def close_frame(code: int, reason: str = "") -> bytes:
    body = struct.pack("!H", code) + reason.encode()[:123]
    return header(OP_CLOSE, len(body)) + body


class Request(NamedTuple):
    method: str
    target: str
    headers: dict[str, str]


def parse_request(head: bytes) -> Request:
    """Parse an HTTP/1.1 request head (up to the blank line); header names lower-cased."""
    try:
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        method, target, version = lines[0].split(" ", 2)
    except ValueError as e:
        raise WSProtocolError(1002, "malformed HTTP request line") from e
    if not version.startswith("HTTP/1."):
        raise WSProtocolError(1002, f"unsupported HTTP version {version!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise WSProtocolError(1002, f"malformed header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers)


def is_upgrade(req: Request) -> bool:
    return (req.headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in req.headers.get("connection", "").lower())


def handshake_response(req: Request) -> bytes:
    """The 101 answer to a valid upgrade request (no extensions: frames go out verbatim)."""
    key = req.headers.get("sec-websocket-key")
    if not key or req.headers.get("sec-websocket-version") != "13":
        raise WSProtocolError(1002, "missing Sec-WebSocket-Key or version != 13")
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def http_response(status: int, reason: str, body: bytes,
                  content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _unmask(mask: bytes, data: bytes) -> bytes:
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class FrameParser:
    """Incremental parser of client → server frames (masked), with a size cap.

    Yields complete messages as (opcode, payload); fragmented text/binary messages are joined.
    Raises `WSProtocolError` (1009 for an oversized message, 1002 for protocol errors).
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._frag_op = -1
        self._frags: list[bytes] = []

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        while True:
            if len(buf) < 2:
                return
            b0, b1 = buf[0], buf[1]
            fin, op, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if not masked:
                raise WSProtocolError(1002, "client frames must be masked")
            if b0 & 0x70:
                raise WSProtocolError(1002, "reserved bits set (no extension negotiated)")
            pending = sum(map(len, self._frags))
            if n + pending > self.max_size:
                raise WSProtocolError(1009, "Message too big")
            if len(buf) < pos + 4 + n:
                return
            mask = bytes(buf[pos:pos + 4])
            payload = _unmask(mask, bytes(buf[pos + 4:pos + 4 + n]))
            del buf[:pos + 4 + n]
            if op >= 0x8:  # control frames: never fragmented, may interleave
                if not fin or n > 125:
                    raise WSProtocolError(1002, "invalid control frame")
                yield op, payload
                continue
            if op == OP_CONT:
                if self._frag_op < 0:
                    raise WSProtocolError(1002, "continuation without a message")
                self._frags.append(payload)
                if fin:
                    msg, op = b"".join(self._frags), self._frag_op
                    self._frags, self._frag_op = [], -1
                    yield op, msg
                continue
            if op not in (OP_TEXT, OP_BINARY):
                raise WSProtocolError(1002, f"unknown opcode {op}")
            if self._frag_op >= 0:
                raise WSProtocolError(1002, "new message inside a fragmented one")
            if fin:
                yield op, payload
            else:
                self._frag_op, self._frags = op, [payload]
