"""The simulator's own send rate on loopback, so every ingest figure can show it was not the
bottleneck.

The venue (`tools.venue.server.Simulator`, rate 0 = as fast as the client drains, Advanced Trade,
level2 + market_trades + ticker on 30 products) runs in its own process. Clients, in this
process, each for ``--seconds``:

- ``raw``: a minimal reader (socket recv_into + frame-header walk in Python);
- ``websockets``: a `websockets` 13 client (``recv(decode=False)`` loop), the same-run baseline;
- ``picows``: a picows client (C frame parser), what the daemon uses; with ``raw`` it bounds
  the venue's own rate (whichever drains faster was not the limit);
- ``raw+ledger``: the raw reader against a venue that also writes its ledger (sha256 per frame).

And the framing choice: the same raw reader against a `websockets` *server* sending
pre-generated frames of the same mix (no generation cost), versus the hand-rolled venue.
Printed: frames/s and MB/s per case, and ratios against the same-run baselines.

    .venv/bin/python bench/simulator.py [--seconds 3] [--products 30] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from tools.venue.generator import MarketModel, default_products
from tools.venue.limits import Limits
from tools.venue.server import SimConfig, Simulator


@dataclass
class Rate:
    name: str
    frames: int
    payload_bytes: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def mbps(self) -> float:
        return self.payload_bytes / self.seconds / 1e6


def _subscribe_msgs(products: list[str]) -> list[bytes]:
    return [orjson.dumps({"type": "subscribe", "channel": ch, "product_ids": products})
            for ch in ("level2", "market_trades", "ticker")]


# -- servers (own process) -------------------------------------------------------------------
def _sim_process(conn: mpc.Connection, products: int, ledger: str | None, tape: int) -> None:
    async def main() -> None:
        sim = Simulator(SimConfig(products=products, rate_msgs_per_s=0, seed=1, tape_events=tape,
                                  limits=Limits(slow_consumer_s=60, send_buffer_bytes=1 << 30),
                                  ledger=ledger is not None,
                                  ledger_path=Path(ledger) if ledger else None))
        await sim.start()
        conn.send(sim.port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await sim.stop()
    asyncio.run(main())


def _websockets_server_process(conn: mpc.Connection, products: int) -> None:
    """The framing baseline: `websockets` serve() sending pre-generated frames in a loop."""
    from websockets.asyncio.server import ServerConnection, serve

    model = MarketModel(1, products, "advanced_trade")
    wanted = set(default_products(min(30, products)))
    frames: list[bytes] = []
    seq = 0
    while len(frames) < 200_000:
        for ev in model.generate(4096, model.now_ns + 10**9):
            if ev[0] in ("level2", "market_trades", "ticker") and ev[2] and ev[2][0] in wanted:
                frames.append(ev[3] + b"%d" % seq + ev[4])
                seq += 1

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        try:
            while True:
                for f in frames:
                    await ws.send(f.decode())
        except Exception:
            return

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as srv:
            conn.send(srv.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    asyncio.run(main())


# -- clients ---------------------------------------------------------------------------------
def raw_reader(port: int, subs: list[bytes], seconds: float) -> Rate:
    """Handshake, subscribe, then drain: count frames by walking headers, payload bytes."""
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    buf = bytearray(head.split(b"\r\n\r\n", 1)[1])
    for m in subs:
        s.sendall(bytes((0x81, 0x80 | 126)) + len(m).to_bytes(2, "big") + b"\0\0\0\0" + m)
    frames = payload = 0
    chunk = bytearray(1 << 20)
    view = memoryview(chunk)
    t0 = time.perf_counter()
    deadline = t0 + seconds
    pos = 0
    while True:
        n = s.recv_into(view)
        if not n:
            break
        buf += view[:n]
        end = len(buf)
        while end - pos >= 2:  # walk complete frame headers
            ln = buf[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                if end - pos < 4:
                    break
                ln, hl = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif ln == 127:
                if end - pos < 10:
                    break
                ln, hl = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if end - pos < hl + ln:
                break
            pos += hl + ln
            frames += 1
            payload += ln
        del buf[:pos]
        pos = 0
        if time.perf_counter() >= deadline:
            break
    took = time.perf_counter() - t0
    s.close()
    return Rate("raw", frames, payload, took)


async def _websockets_client(port: int, subs: list[bytes], seconds: float) -> Rate:
    from websockets.asyncio.client import connect

    frames = payload = 0
    async with connect(f"ws://127.0.0.1:{port}", max_size=None, compression=None,
                       close_timeout=0.5) as ws:
        for m in subs:
            await ws.send(m.decode())
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            msg = await ws.recv(decode=False)
            frames += 1
            payload += len(msg)
        took = time.perf_counter() - t0
        ws.transport.abort()
    return Rate("websockets", frames, payload, took)


async def _picows_client(port: int, subs: list[bytes], seconds: float) -> Rate:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    count = [0, 0]
    done = asyncio.get_running_loop().create_future()

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: WSTransport) -> None:
            for m in subs:
                transport.send(WSMsgType.TEXT, m)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.TEXT:
                count[0] += 1
                count[1] += len(frame.get_payload_as_bytes())

    transport, _ = await ws_connect(Listener, f"ws://127.0.0.1:{port}",
                                    max_frame_size=64 << 20)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    took = time.perf_counter() - t0
    frames, payload = count
    transport.disconnect()
    del done
    return Rate("picows", frames, payload, took)


def _with_server(target: object, args: tuple[object, ...],
                 run: list[tuple[str, object]]) -> list[Rate]:
    parent, child = mp.Pipe()
    proc = mp.Process(target=target, args=(child, *args), daemon=True)  # type: ignore[arg-type]
    proc.start()
    port = parent.recv()
    out: list[Rate] = []
    try:
        for name, fn in run:
            r = fn(port)  # type: ignore[operator]
            r.name = name
            out.append(r)
            time.sleep(0.3)
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--products", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s per case")
    a = ap.parse_args()
    secs = 1.0 if a.quick else a.seconds
    subs = _subscribe_msgs(default_products(min(30, a.products)))

    def raw(port: int) -> Rate:
        return raw_reader(port, subs, secs)

    def wsc(port: int) -> Rate:
        return asyncio.run(_websockets_client(port, subs, secs))

    def pic(port: int) -> Rate:
        return asyncio.run(_picows_client(port, subs, secs))

    tape = 200_000
    results = _with_server(_sim_process, (a.products, None, 0),
                           [("live → raw", raw), ("live → websockets client", wsc),
                            ("live → picows client", pic)])
    results += _with_server(_sim_process, (a.products, None, tape),
                            [("tape → raw", raw), ("tape → websockets client", wsc),
                             ("tape → picows client", pic)])
    ledger_path = Path(f"/tmp/bench-sim-ledger-{os.getpid()}.jsonl")
    try:
        results += _with_server(_sim_process, (a.products, str(ledger_path), tape),
                                [("tape+ledger → raw", raw)])
    finally:
        ledger_path.unlink(missing_ok=True)
    results += _with_server(_websockets_server_process, (a.products,),
                            [("websockets server → raw", raw)])
    print(f"simulator send rate on loopback, {secs:.1f} s per case, Advanced Trade, level2 + "
          f"market_trades + ticker on {min(30, a.products)} products; live = market model "
          f"generating, tape = {tape:,} pre-generated events cycled")
    for r in results:
        print(f"  {r.name:<26} {r.fps:>11,.0f} frames/s {r.mbps:>8.1f} MB/s "
              f"({r.frames:,} frames, avg {r.payload_bytes / max(r.frames, 1):.0f} B)")
    by = {r.name: r for r in results}
    # The venue's rate is what its fastest reader drained (raw or picows, whichever was not
    # itself the limit); the baseline is a bare websockets client in the same run.
    for mode in ("live", "tape"):
        venue = max(by[f"{mode} → raw"].fps, by[f"{mode} → picows client"].fps)
        wsr = by[f"{mode} → websockets client"].fps
        print(f"  {mode}: venue {venue:,.0f} frames/s = {venue / wsr:.2f}× what a bare "
              f"websockets client takes")
    print(f"  hand-rolled venue (tape → raw) / websockets server sending pre-generated frames "
          f"(→ raw): {by['tape → raw'].fps / by['websockets server → raw'].fps:.2f}× frames/s")
    print(f"  ledger on (tape → raw): {by['tape+ledger → raw'].fps / by['tape → raw'].fps:.2f}× "
          f"the rate without it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
