"""Routing cost per message: the protocol core's byte scan against a full ``orjson.loads``.

Why: the daemon routes every frame (target: a few µs including the sequence check) and some
frames are multi-megabyte level2 snapshots. This prints, for realistic frame mixes from the
project's generator and for large snapshots built here, the time per message of

  pure   ``FeedState.on_message`` with the pure-Python hot paths (byte scan + sequence/trade-id
         checks; what the daemon runs with ``CBL_PURE=1`` or without the extension)
  C      the same with the compiled hot paths (``logger.protocol._route``, the default where
         built; ``-`` where not)
  orjson a router that parses the whole frame with orjson and reads the same fields
  floor  calling ``len`` on each frame: the loop's own cost, for calibration

and the ratios pure/C and orjson/scan (the daemon's scan: C where built; > 1 means the scan is
faster). Figures are noisy on a shared machine: read the ratios.
Run: ``.venv/bin/python bench/routing.py [--quick]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from logger.protocol import ADVANCED_TRADE, EXCHANGE, Dialect, FeedState, native


def _channels(dialect: Dialect, products: Sequence[str]) -> dict[str, list[str]]:
    channels: dict[str, list[str]] = {}
    for channel in dialect.channels:
        shared = channel in dialect.shared_channels
        bare = shared and (channel == dialect.keepalive_channel or dialect is EXCHANGE)
        channels[channel] = [] if bare else list(products)
    return channels


def _feed(dialect: Dialect, products: Sequence[str], compiled: bool = native.COMPILED
          ) -> FeedState:
    saved, native.COMPILED = native.COMPILED, compiled
    try:
        return FeedState(dialect, "0", _channels(dialect, products))
    finally:
        native.COMPILED = saved


def orjson_router(dialect: Dialect) -> Callable[[bytes], tuple[str, str]]:
    """The baseline: parse everything, then read channel, sequence and product ids."""
    expected = [0]
    at = dialect is ADVANCED_TRADE

    def route(raw: bytes) -> tuple[str, str]:
        obj: Any = orjson.loads(raw)
        if at:
            seq = obj.get("sequence_num")
            if seq is not None:
                expected[0] = seq + 1
            products = {p for e in obj.get("events", ()) for p in
                        ([e["product_id"]] if "product_id" in e else
                         [i["product_id"] for k in ("tickers", "trades", "candles")
                          for i in e.get(k, ())])}
            channel = obj.get("channel", "")
        else:
            products = {obj["product_id"]} if "product_id" in obj else set()
            if obj.get("type") == "match":
                expected[0] = obj["trade_id"] + 1
            channel = obj.get("type", "")
        return (products.pop() if len(products) == 1 else "_conn0", channel)

    return route


def _pass_ns(make: Callable[[], Callable[[bytes], object]], frames: Sequence[bytes]) -> float:
    fn = make()
    start = time.perf_counter()
    for raw in frames:
        fn(raw)
    return (time.perf_counter() - start) / len(frames) * 1e9


def compare(makers: Sequence[Callable[[], Callable[[bytes], object]]], frames: Sequence[bytes],
            min_seconds: float) -> list[float]:
    """Best single in-order pass of each router (fresh state per pass), passes interleaved
    so that load changes on a shared machine hit every router alike."""
    best = [float("inf")] * len(makers)
    deadline = time.perf_counter() + min_seconds
    rounds = 0
    while rounds < 3 or time.perf_counter() < deadline:
        for index, make in enumerate(makers):
            best[index] = min(best[index], _pass_ns(make, frames))
        rounds += 1
    return best


def at_snapshot(product: str, levels: int, seq: int = 0) -> bytes:
    level = (b'{"side":"bid","event_time":"2026-09-07T01:57:58.894355Z","price_level":"%d.01",'
             b'"new_quantity":"1.5"}')
    updates = b",".join(level % (100000 - i) for i in range(levels))
    return (b'{"channel":"l2_data","client_id":"","timestamp":"2026-09-07T01:57:58.894355Z",'
            b'"sequence_num":%d,"events":[{"type":"snapshot","product_id":"%s","updates":[%s]}]}'
            % (seq, product.encode(), updates))


def at_snapshots(product: str, levels: int, count: int) -> list[bytes]:
    """``count`` snapshots in sequence on one connection (steady state, not a first call)."""
    return [at_snapshot(product, levels, seq) for seq in range(count)]


def ex_snapshot(product: str, levels: int) -> bytes:
    side = b",".join(b'["%d.01","1.5"]' % (100000 - i) for i in range(levels))
    return (b'{"type":"snapshot","product_id":"%s","asks":[%s],"bids":[%s]}'
            % (product.encode(), side, side))


def mixes(quick: bool) -> list[tuple[str, Dialect, list[str], list[bytes]]]:
    out: list[tuple[str, Dialect, list[str], list[bytes]]] = []
    n = 5_000 if quick else 30_000
    try:
        from tools.venue.generator import MarketModel
    except ImportError:  # the generator is another team's module; the snapshots still run
        MarketModel = None  # type: ignore[assignment,misc]
    for dialect in (ADVANCED_TRADE, EXCHANGE):
        if MarketModel is not None:
            model = MarketModel(3, 30, dialect.name)
            frames = [raw for _, _, raw in model.day_of_messages(n)][n // 5:]  # live mix
            out.append((f"{dialect.name} live mix", dialect, list(model.products), frames))
    out.append(("advanced_trade l2 snapshot 1 MB", ADVANCED_TRADE, ["BTC-USD"],
                at_snapshots("BTC-USD", 9_500, 8)))
    out.append(("advanced_trade l2 snapshot 5 MB", ADVANCED_TRADE, ["BTC-USD"],
                at_snapshots("BTC-USD", 48_000, 4)))
    out.append(("exchange snapshot 1 MB", EXCHANGE, ["BTC-USD"],
                [ex_snapshot("BTC-USD", 30_000)] * 8))
    return out


def main(argv: Sequence[str]) -> int:
    quick = "--quick" in argv
    seconds = 0.3 if quick else 1.0
    built = native.COMPILED
    print(f"compiled hot paths: {'built' if built else 'absent or CBL_PURE set'}")
    print(f"{'frames':34} {'avg bytes':>10} {'floor ns':>9} {'pure ns/msg':>12}"
          f" {'C ns/msg':>9} {'orjson ns/msg':>14} {'pure/C':>7} {'orjson/scan':>12}")
    for name, dialect, products, frames in mixes(quick):
        def make_pure(dialect: Dialect = dialect, products: list[str] = products
                      ) -> Callable[[bytes], object]:
            return _feed(dialect, products, False).on_message

        def make_c(dialect: Dialect = dialect, products: list[str] = products
                   ) -> Callable[[bytes], object]:
            return _feed(dialect, products, True).on_message

        def make_json(dialect: Dialect = dialect) -> Callable[[bytes], object]:
            return orjson_router(dialect)

        def make_floor() -> Callable[[bytes], object]:
            return len

        makers = [make_pure, make_json, make_floor] + ([make_c] if built else [])
        pure_ns, json_ns, floor_ns, *rest = compare(makers, frames, seconds)
        avg = sum(map(len, frames)) / len(frames)
        c = f"{rest[0]:9.0f}" if rest else f"{'-':>9}"
        ratio = f"{pure_ns / rest[0]:7.2f}" if rest else f"{'-':>7}"
        scan_ns = rest[0] if rest else pure_ns
        print(f"{name:34} {avg:10.0f} {floor_ns:9.0f} {pure_ns:12.0f} {c}"
              f" {json_ns:14.0f} {ratio} {json_ns / scan_ns:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
