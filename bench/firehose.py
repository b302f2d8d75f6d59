"""A venue that costs (almost) nothing per frame, for bench/ingest.py.

Real Advanced Trade frames from the project's generator, encoded once by the benchmark (a
``marshal`` file shared by every run, so each recorder is served the very same bytes); each
connection gets the frames of the products it subscribed to, renumbered with its own
``sequence_num``, after its subscription acks. Streaming starts on every connection at once
when the benchmark says ``go`` (after every connection has subscribed and gone quiet), so any
sharding, one process or several workers, is served the same way; later connections are
refused.

Why it answers pings: a recorder that pings (websockets does every 20 s, the daemon's
watchdog may) and gets no pong drops the connection, which a venue that never reads would
turn into a loss the recorder is not to blame for. Frames go out in chunks of whole frames;
between chunks the sender writes the pongs its reader thread queued, so a pong never splits
a data frame.

Two modes: capacity (``rate`` 0: each connection ``sendall``s everything as fast as the
recorder drains) and fixed rate (the frames spread evenly over ``seconds``, each connection
pacing its own share).

Protocol on the pipe (to the benchmark): ``port``; ``("ready", connections)``; the benchmark
answers ``"go"``; ``("started", t_monotonic)`` just before the first data frame;
``("done", t_last_frame_monotonic, pings_answered)``. Per connection a ledger file lists the
sha256 of every payload sent (acks included) and the stored size a line-per-message writer
would produce (for the naive recorder's end observation).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import marshal
import os
import re
import socket
import struct
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from ws_client import handshake_response

CHUNK = 256 << 10
_SEQ = re.compile(rb'"sequence_num":\d+')


def write_frames(path: Path, products: int, messages: int) -> None:
    """Encode the frames once (the generator costs ~18 µs a frame): every run replays these."""
    from tools.venue.generator import MarketModel

    model = MarketModel(5, products, "advanced_trade")
    frames = [(p, c, raw) for p, c, raw in model.day_of_messages(messages)
              if not p.startswith("_")]
    path.write_bytes(marshal.dumps((list(model.products), frames)))


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def read_client_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes] | None:
    """(opcode, unmasked payload) of the next client frame; None at end of stream."""
    def need(k: int) -> bool:
        while len(buf) < k:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            buf.extend(chunk)
        return True

    if not need(2):
        return None
    opcode, n, off = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        if not need(4):
            return None
        n, off = struct.unpack("!H", bytes(buf[2:4]))[0], 4
    elif n == 127:
        if not need(10):
            return None
        n, off = struct.unpack("!Q", bytes(buf[2:10]))[0], 10
    if not need(off + 4 + n):
        return None
    mask = bytes(buf[off:off + 4]) * (n // 4 + 1)
    data = (int.from_bytes(buf[off + 4:off + 4 + n], "big")
            ^ int.from_bytes(mask[:n], "big")).to_bytes(n, "big") if n else b""
    del buf[:off + 4 + n]
    return opcode, data


class Venue:
    """The shared state of one session: frames, the go signal, counters."""

    def __init__(self, frames: list[tuple[str, str, bytes]], rate: float, seconds: float,
                 ledger_dir: str) -> None:
        self.frames = frames
        self.rate = rate
        self.seconds = seconds
        self.ledger_dir = ledger_dir
        self.go = threading.Event()
        self.ready = threading.Semaphore(0)
        self.t0 = 0.0
        self.pings = 0
        self.last_sent = 0.0
        self.lock = threading.Lock()

    def subscribe(self, sock: socket.socket, buf: bytearray) -> tuple[dict[str, list[str]],
                                                                      list[bytes]] | None:
        """Ack subscribe frames until the connection has been quiet for 3 s (or sent all 7
        channels); pings in this phase are answered at once."""
        subs: dict[str, list[str]] = {}
        acks: list[bytes] = []
        sock.settimeout(3.0)
        while len(subs) < 7:
            try:
                frame = read_client_frame(sock, buf)
            except TimeoutError:
                break
            if frame is None:
                return None
            op, data = frame
            if op == 9:
                sock.sendall(ws_frame(data, 10))
                continue
            if op != 1:
                continue
            msg = json.loads(data)
            subs[msg["channel"]] = msg.get("product_ids") or [msg["channel"]]
            ack = (b'{"channel":"subscriptions","timestamp":"2026-01-02T00:00:00Z",'
                   b'"sequence_num":%d,"events":[{"subscriptions":%s}]}'
                   % (len(acks), json.dumps(subs).encode()))
            acks.append(ack)
            sock.sendall(ws_frame(ack))
        sock.settimeout(None)
        return subs, acks

    def serve(self, sock: socket.socket, req: bytes, n: int) -> None:
        sock.sendall(handshake_response(req))
        buf = bytearray()
        got = self.subscribe(sock, buf)
        if got is None:
            self.ready.release()
            return
        subs, payloads = got
        mine = {(p, c) for c, ps in subs.items() for p in ps}  # level2 apart (logger.shard)
        seq = len(payloads)
        parts: list[bytes] = []
        for p, c, raw in self.frames:
            if (p, c) in mine:
                raw = _SEQ.sub(b'"sequence_num":%d' % seq, raw, count=1)
                seq += 1
                payloads.append(raw)
                parts.append(ws_frame(raw))
        Path(self.ledger_dir, f"conn{n}.sha").write_text(
            f"{sum(len(p) + 1 for p in payloads)}\n"
            + "".join(hashlib.sha256(p).hexdigest() + "\n" for p in payloads))
        self.ready.release()
        self.go.wait()
        pongs: deque[bytes] = deque()
        reader = threading.Thread(target=self._read, args=(sock, buf, pongs), daemon=True)
        reader.start()
        self._send(sock, parts, pongs)
        sock.sendall(ws_frame(b"\x03\xe8", 8))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        reader.join()
        sock.close()

    def _read(self, sock: socket.socket, buf: bytearray, pongs: deque[bytes]) -> None:
        """Queue a pong for every ping, until the client closes."""
        try:
            while (frame := read_client_frame(sock, buf)) is not None:
                if frame[0] == 9:
                    pongs.append(ws_frame(frame[1], 10))
                    with self.lock:
                        self.pings += 1
        except OSError:
            pass

    def _send(self, sock: socket.socket, parts: list[bytes], pongs: deque[bytes]) -> None:
        """Whole frames in chunks of ~CHUNK bytes, at once or paced to ``rate``."""
        blob = memoryview(b"".join(parts))
        ends: list[int] = []
        pos = 0
        for p in parts:
            pos += len(p)
            ends.append(pos)
        total = len(parts)
        sent = 0  # frames
        while sent < total:
            if self.rate:
                due = min(total, int(total * (time.monotonic() - self.t0) / self.seconds))
                if due <= sent:
                    time.sleep(0.002)
                    due = sent
            else:
                due = total
            while pongs:
                sock.sendall(pongs.popleft())
            if due > sent:
                start = ends[sent - 1] if sent else 0
                k = max(sent + 1, min(due, bisect.bisect_right(ends, start + CHUNK)))
                sock.sendall(blob[start:ends[k - 1]])
                sent = k
        with self.lock:
            self.last_sent = max(self.last_sent, time.monotonic())


def run(pipe: Any, frames_path: str, ledger_dir: str, cpu: int | None, rate: float,
        seconds: float) -> None:
    """The venue process (see the module docstring for the pipe protocol)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    ids, frames = marshal.loads(Path(frames_path).read_bytes())
    venue = Venue(frames, rate, seconds, ledger_dir)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    pipe.send(srv.getsockname()[1])
    rest = json.dumps({"products": [{"product_id": p, "status": "online"} for p in ids],
                       "num_products": len(ids)}).encode()
    threads = _accept(srv, venue, rest)
    for _ in threads:
        venue.ready.acquire()
    pipe.send(("ready", len(threads)))
    if pipe.recv() != "go":
        return
    venue.t0 = time.monotonic()
    pipe.send(("started", venue.t0))
    venue.go.set()
    for t in threads:
        t.join()
    pipe.send(("done", venue.last_sent, venue.pings))


def _accept(srv: socket.socket, venue: Venue, rest: bytes) -> list[threading.Thread]:
    """Serve the products list and WebSocket upgrades until none has come for 2.5 s."""
    threads: list[threading.Thread] = []
    srv.settimeout(2.5)
    while True:
        try:
            c, _ = srv.accept()
        except TimeoutError:
            if threads:
                break
            continue
        c.settimeout(None)
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = c.recv(65536)
            if not chunk:
                break
            req += chunk
        if b"upgrade: websocket" not in req.lower():
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(rest) + rest)
            c.close()
            continue
        t = threading.Thread(target=venue.serve, args=(c, req, len(threads)), daemon=True)
        t.start()
        threads.append(t)
    srv.close()  # later (re)connects are refused: the session is over
    return threads
