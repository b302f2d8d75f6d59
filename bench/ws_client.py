"""Which WebSocket client should the daemon use? picows vs websockets 13.1, measured.

A raw-socket server in its own process does the handshake once and then writes a pre-encoded
blob of frames (many small ~300 B ticker-like text frames plus a few 5 MB snapshot-like frames),
so the server costs almost nothing and the client is the bottleneck. Each client receives every
frame as ``bytes`` (what storage needs), stamps it with ``time.time_ns()`` and appends it to a
list, i.e. what the daemon's receive path does. Printed: messages/s and CPU µs per message of
the client process, and the ratio picows / websockets measured in the same run.

    .venv/bin/python bench/ws_client.py [--small 200000] [--big 4] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import multiprocessing as mp
import multiprocessing.connection as mpc
import resource
import socket
import struct
import sys
import time
from dataclasses import dataclass

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SMALL = (
    b'{"channel":"ticker","timestamp":"2026-09-05T22:10:30.260465255Z","sequence_num":%d,'
    b'"events":[{"type":"update","tickers":[{"type":"ticker","product_id":"BTC-USD",'
    b'"price":"61234.56","volume_24_h":"12345.678","low_24_h":"60000.01","high_24_h":"62000",'
    b'"low_52_w":"15000","high_52_w":"73000","price_percent_chg_24_h":"1.234",'
    b'"best_bid":"61234.55","best_bid_quantity":"0.1","best_ask":"61234.57"}]}]}'
)


def _frame_header(n: int) -> bytes:
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


def build_blob(small: int, big: int, big_size: int) -> tuple[bytes, int, int]:
    """Pre-encode every server frame; returns (blob, frame count, payload bytes)."""
    parts: list[bytes] = []
    total = 0
    big_every = small // (big + 1) if big else 0
    big_payload = b'{"channel":"l2_data","events":[{"updates":[' + b"x" * (big_size - 60) + b"]}]}"
    count = 0
    for i in range(small):
        if big and i and i % big_every == 0 and count < small + big:
            parts.append(_frame_header(len(big_payload)) + big_payload)
            total += len(big_payload)
            count += 1
        p = _SMALL % i
        parts.append(_frame_header(len(p)) + p)
        total += len(p)
        count += 1
    return b"".join(parts), count, total


def handshake_response(request: bytes) -> bytes:
    """The server's 101 answer to a client's WebSocket upgrade request (RFC 6455 accept key)."""
    key = b""
    for line in request.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            key = line.split(b":", 1)[1].strip()
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def serve_blob(conn: mpc.Connection, blob: bytes, info: tuple[object, ...]) -> None:
    """Accept WebSocket clients one after another and write ``blob`` (pre-encoded frames) to
    each, then a close frame; sends ``(port, *info)`` on ``conn`` first. An empty connection
    (no request) ends it. Shared by the benchmarks that need a server costing ~nothing."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conn.send((srv.getsockname()[1], *info))
    while True:
        c, _ = srv.accept()
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = c.recv(4096)
            if not chunk:
                break
            req += chunk
        if not req:
            c.close()
            break  # an empty connection is the stop signal
        c.sendall(handshake_response(req))
        c.sendall(blob)
        c.sendall(b"\x88\x02\x03\xe8")  # close 1000
        try:
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        except OSError:
            pass
        c.close()
    srv.close()


def _serve(conn: mpc.Connection, small: int, big: int, big_size: int) -> None:
    blob, count, total = build_blob(small, big, big_size)
    serve_blob(conn, blob, (count, total))


@dataclass
class Result:
    name: str
    messages: int
    payload_bytes: int
    wall_s: float
    cpu_s: float


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_picows(url: str) -> tuple[int, int]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    stamps: list[int] = []
    payloads: list[bytes] = []
    tns = time.time_ns
    text = WSMsgType.TEXT

    class Listener(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is text:
                stamps.append(tns())
                payloads.append(frame.get_payload_as_bytes())
            elif frame.msg_type is WSMsgType.CLOSE:
                transport.disconnect()

    transport, _ = await ws_connect(Listener, url, max_frame_size=16 << 20)
    await transport.wait_disconnected()
    return len(payloads), sum(map(len, payloads))


async def run_websockets(url: str) -> tuple[int, int]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    stamps: list[int] = []
    payloads: list[bytes] = []
    tns = time.time_ns
    async with connect(url, max_size=16 << 20, compression=None) as ws:
        try:
            while True:
                msg = await ws.recv(decode=False)
                stamps.append(tns())
                payloads.append(msg)  # type: ignore[arg-type]
        except ConnectionClosed:
            pass
    return len(payloads), sum(map(len, payloads))


def measure(name: str, url: str) -> Result:
    fn = run_picows if name == "picows" else run_websockets
    c0, t0 = _cpu(), time.perf_counter()
    n, b = asyncio.run(fn(url))
    return Result(name, n, b, time.perf_counter() - t0, _cpu() - c0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--small", type=int, default=200_000)
    ap.add_argument("--big", type=int, default=4)
    ap.add_argument("--big-size", type=int, default=5 << 20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 000 frames, 1 round")
    a = ap.parse_args()
    if a.quick:
        a.small, a.big, a.rounds = 20_000, 1, 1
    parent, child = mp.Pipe()
    proc = mp.Process(target=_serve, args=(child, a.small, a.big, a.big_size), daemon=True)
    proc.start()
    port, count, total = parent.recv()
    url = f"ws://127.0.0.1:{port}/"
    best: dict[str, Result] = {}
    for _ in range(a.rounds):
        for name in ("websockets", "picows"):
            r = measure(name, url)
            if r.messages != count or r.payload_bytes != total:
                print(f"{name}: received {r.messages}/{count} frames, {r.payload_bytes}/{total} B")
                return 1
            if name not in best or r.cpu_s < best[name].cpu_s:
                best[name] = r
    socket.create_connection(("127.0.0.1", port)).close()
    proc.join(5)
    print(f"frames per run: {count} ({a.small} small, {a.big} × {a.big_size >> 20} MiB), "
          f"{total / 1e6:.1f} MB; best of {a.rounds} rounds by client CPU")
    for r in best.values():
        print(f"  {r.name:<10} {r.messages / r.wall_s:>10,.0f} msg/s  "
              f"{r.cpu_s / r.messages * 1e6:6.2f} µs CPU/msg  wall {r.wall_s:.2f} s")
    w, p = best["websockets"], best["picows"]
    speed = p.messages / p.wall_s / (w.messages / w.wall_s)
    print(f"  ratio picows/websockets: {speed:.2f}× msg/s, "
          f"{w.cpu_s / p.cpu_s:.2f}× less CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
