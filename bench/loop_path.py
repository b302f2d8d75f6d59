"""What the daemon's event-loop thread costs per message, against the bare WebSocket floor.

A raw-socket server in its own process writes one connection's worth of pre-encoded Advanced
Trade frames (the project's generator: acks, snapshots, then the live mix of 30 products on
every public channel, with consecutive ``sequence_num``). Two clients read it with picows, in
the same run:

- **floor**: stamp + payload ``bytes`` + two list appends per frame — what any recorder pays;
- **daemon**: the daemon's own receive path — ``logger.connection._Listener`` on a real
  ``Connection`` with its ``FeedState`` (routing, sequence tracking, acks) and ``Sink``
  (per-stream batching, per-channel counting, the 10 000-message hand-over). The hand-over
  queue drops what it gets, so the storage thread's cost (``bench/storage.py``) and GIL sharing
  are not in this figure.

- **compiled**: the same, through the compiled listener (``logger/_listen.pyx``, a Cython
  ``WSListener`` that runs the common frame's path without a Python frame; where it is built).

Printed: CPU µs per message of each (best of ``--rounds``), and the daemon's extra cost over
the floor, which is what the loop-side code adds.

    .venv/bin/python bench/loop_path.py [--frames 300000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import multiprocessing.connection as mpc
import resource
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ws_client import _frame_header, run_picows, serve_blob

PRODUCTS = 30
CHANNELS = ("heartbeats", "candles", "status", "ticker", "ticker_batch", "level2",
            "market_trades")


def build(frames: int) -> tuple[bytes, int, list[str]]:
    from tools.venue.generator import MarketModel

    model = MarketModel(11, PRODUCTS, "advanced_trade")
    raws = [raw for _p, _c, raw in model.day_of_messages(frames)]
    return b"".join(_frame_header(len(r)) + r for r in raws), len(raws), list(model.products)


def _serve(conn: mpc.Connection, frames: int) -> None:
    blob, count, products = build(frames)
    serve_blob(conn, blob, (count, products))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_floor(url: str) -> int:
    """The floor is ``bench/ws_client.py``'s picows client: stamp + bytes + two appends."""
    n, _nbytes = await run_picows(url)
    return n


async def run_daemon(url: str, products: list[str], compiled: bool) -> int:
    from picows import ws_connect

    from logger import listen
    from logger.connection import Connection, _Listener
    from logger.protocol import FeedState, get_dialect
    from logger.ratelimit import SlidingWindowLimiter
    from logger.sink import Batch, Sink

    got: list[int] = []

    class Discard:
        """Hand-over queue that keeps nothing: the loop side is what is measured."""

        depth = 0
        nbytes = 0

        def try_put(self, batch: Batch) -> bool:
            got.append(batch.records)
            return True

    dialect = get_dialect("advanced_trade")
    feed = FeedState(dialect, "0", {ch: ([] if ch in ("heartbeats", "status") else products)
                                    for ch in CHANNELS})
    sink = Sink(lambda: None)  # type: ignore[arg-type, return-value]
    sink.queue = Discard()  # type: ignore[assignment]
    conn = Connection("0", url, feed, sink, SlidingWindowLimiter(8, 1.0))
    feed.on_connect()
    feed.opening_frames()  # the acks in the blob answer these
    def make() -> object:
        slow = _Listener(conn)
        return listen.FastListener(slow) if compiled and listen.FastListener else slow

    transport, _ = await ws_connect(make, url, max_frame_size=64 << 20,  # type: ignore[arg-type]
                                    enable_auto_ping=False)
    await transport.wait_disconnected()
    sink.flush()
    return conn.stats.messages


@dataclass
class Result:
    name: str
    messages: int
    cpu_s: float


def measure(name: str, url: str, products: list[str]) -> Result:
    c0 = _cpu()
    run = run_floor(url) if name == "floor" else run_daemon(url, products,
                                                             name == "compiled")
    n = asyncio.run(run)
    return Result(name, n, _cpu() - c0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 000 frames, 1 round")
    a = ap.parse_args()
    logging.disable(logging.WARNING)  # the blob's acks differ from what is asked: quiet
    if a.quick:
        a.frames, a.rounds = 30_000, 1
    parent, child = mp.Pipe()
    proc = mp.Process(target=_serve, args=(child, a.frames), daemon=True)
    proc.start()
    port, count, products = parent.recv()
    url = f"ws://127.0.0.1:{port}/"
    best: dict[str, Result] = {}
    from logger import listen

    names = ["floor", "daemon"] + (["compiled"] if listen.available() else [])
    for _ in range(a.rounds):
        for name in names:
            r = measure(name, url, products)
            if r.messages != count:
                print(f"{name}: got {r.messages} of {count} frames")
                return 1
            if name not in best or r.cpu_s < best[name].cpu_s:
                best[name] = r
    socket.create_connection(("127.0.0.1", port)).close()
    proc.join(5)
    print(f"{count} Advanced Trade frames ({PRODUCTS} products × every public channel) on one "
          f"connection; best of {a.rounds} rounds by client CPU")
    for r in best.values():
        print(f"  {r.name:<7} {r.cpu_s / r.messages * 1e6:6.2f} µs CPU/msg")
    f = best["floor"]
    for name in names[1:]:
        d = best[name]
        extra = (d.cpu_s - f.cpu_s) / count * 1e6
        print(f"  {name}: the daemon's loop path adds {extra:.2f} µs/msg over the floor "
              f"(ratio to the floor {d.cpu_s / f.cpu_s:.2f}×)")
    if "compiled" in best:
        print(f"  compiled listener (logger/_listen.pyx) vs Python listener: "
              f"{best['daemon'].cpu_s / best['compiled'].cpu_s:.2f}× less CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
