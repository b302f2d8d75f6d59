"""A minimal asyncio HTTP/1.1 GET with one overall deadline, for the REST product list.

Why not urllib in a thread: its timeout is per socket read, so a server that sends one byte
every few seconds holds the call forever, and a thread blocked in a read cannot be interrupted
(SIGTERM would wait for it at interpreter exit). Here the whole request — DNS, connect, TLS,
head, body — runs on the event loop under ``asyncio.timeout``: the deadline ends it, and so
does a cancellation (shutdown). The response head is parsed by a pure function
(``parse_head``), tested without sockets; bodies are read by Content-Length, chunked transfer
coding or until the connection closes, never past ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 << 10
"""Largest response head (status line and headers) accepted."""
MAX_REDIRECTS = 3


class HttpError(Exception):
    """The GET failed: no answer within the deadline, a broken response, or a non-200 status.
    The message says which, in words."""


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    reason: str
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""


def parse_head(raw: bytes) -> Head:
    """The status line and headers of a response (``raw`` without the blank line)."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(f"bad response header line: {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return Head(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


def request_bytes(url: urllib.parse.SplitResult) -> bytes:
    """The GET request for ``url`` (one request per connection: ``Connection: close``)."""
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    host = url.hostname or ""
    if url.port is not None:
        host = f"{host}:{url.port}"
    return (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
            f"Accept-Encoding: identity\r\nUser-Agent: coinbase-logger\r\n"
            f"Connection: close\r\n\r\n").encode("ascii")


async def _read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            return bytes(body)
        if len(body) + size > max_bytes:
            raise HttpError(f"response larger than {max_bytes} bytes")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _read_body(reader: asyncio.StreamReader, head: Head, max_bytes: int) -> bytes:
    if "chunked" in head.headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, max_bytes)
    length = head.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise HttpError(f"bad Content-Length {length!r}")
        if int(length) > max_bytes:
            raise HttpError(f"response larger than {max_bytes} bytes")
        return await reader.readexactly(int(length))
    body = await reader.read(max_bytes + 1)
    while len(body) <= max_bytes and (more := await reader.read(max_bytes + 1 - len(body))):
        body += more
    if len(body) > max_bytes:
        raise HttpError(f"response larger than {max_bytes} bytes")
    return body


async def _get_once(url: urllib.parse.SplitResult, max_bytes: int) -> tuple[Head, bytes]:
    secure = url.scheme == "https"
    port = url.port or (443 if secure else 80)
    reader, writer = await asyncio.open_connection(
        url.hostname, port, ssl=ssl.create_default_context() if secure else None,
        limit=MAX_HEAD_BYTES)
    try:
        writer.write(request_bytes(url))
        await writer.drain()
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(f"response head longer than {MAX_HEAD_BYTES} bytes") from None
        head = parse_head(raw[:-4])
        body = b"" if head.status in (204, 304) or 300 <= head.status < 400 else \
            await _read_body(reader, head, max_bytes)
        return head, body
    finally:
        writer.transport.abort()  # nothing more to read; no close handshake to wait for


async def http_get(url: str, deadline_s: float, max_bytes: int) -> bytes:
    """The body of a 200 answer to GET ``url``, all of it within ``deadline_s`` seconds.

    Follows up to ``MAX_REDIRECTS`` redirects (within the same deadline). Raises
    ``HttpError`` on anything else; a cancellation (shutdown) ends it at once.
    """
    parts = urllib.parse.urlsplit(url)
    try:
        async with asyncio.timeout(deadline_s):
            for _ in range(MAX_REDIRECTS + 1):
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise HttpError("not an http(s) URL")
                head, body = await _get_once(parts, max_bytes)
                location = head.headers.get("location")
                if 300 <= head.status < 400 and location:
                    parts = urllib.parse.urlsplit(urllib.parse.urljoin(parts.geturl(), location))
                    continue
                if head.status != 200:
                    raise HttpError(f"HTTP {head.status} {head.reason}".rstrip())
                return body
            raise HttpError(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise HttpError(f"no complete answer within {deadline_s:g} s") from None
    except asyncio.IncompleteReadError:
        raise HttpError("connection closed in the middle of the response") from None
    except asyncio.LimitOverrunError:
        raise HttpError("response line too long") from None
    except (OSError, ssl.SSLError, UnicodeError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise HttpError(reason or type(e).__name__) from None
