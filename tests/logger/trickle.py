"""A real trickling HTTP server on 127.0.0.1: it answers any request with a valid head and then
the body one byte every ``interval_s`` seconds, forever (a per-read timeout never trips).

Threads, not asyncio, so it serves a daemon running in another process as well as a test's own
event loop. ``requests`` counts the requests it accepted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TrickleServer:
    def __init__(self, interval_s: float = 1.0, body: bytes = b'{"products":[]}' * 1000) -> None:
        self.interval_s = interval_s
        self.body = body
        self.requests = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v3/brokerage/market/products"

    def __enter__(self) -> TrickleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.requests += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(self.body))
            for i in range(len(self.body)):
                if self._stop.wait(self.interval_s):
                    return
                conn.sendall(self.body[i:i + 1])
        time.sleep(0)
