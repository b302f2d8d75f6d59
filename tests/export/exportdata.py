"""Data roots for the export tests, written through the real storage engine.

`generated_root` records the project's seeded market simulator (both dialects) as the daemon
would route it; `write_root` writes hand-made records (markers included) for exact scenarios.
An independent, deliberately plain order book (`naive_book`) checks the export's rebuild.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from storage import Engine, EngineConfig, RecordKind
from tools.venue.generator import DEFAULT_START_NS, MarketModel

STEP_NS = 500_000  # 2 000 frames per second of receive time


def generated_root(root: Path, dialect: str, n: int, products: int = 2) -> Path:
    model = MarketModel(seed=7, products=products, dialect=dialect)  # type: ignore[arg-type]
    eng = Engine(EngineConfig(root=root, backend="pwrite"))
    try:
        for i, (p, c, raw) in enumerate(model.day_of_messages(n)):
            eng.extend(eng.stream(p, c), [DEFAULT_START_NS + i * STEP_NS], [raw])
    finally:
        eng.close()
    return root


def write_root(root: Path, records: Iterable[tuple[str, str, int, int, bytes]]) -> Path:
    """(product, channel, ts_ns, kind, payload) records, in order."""
    eng = Engine(EngineConfig(root=root, backend="pwrite"))
    try:
        for p, c, ts, kind, payload in records:
            eng.append(eng.stream(p, c), ts, payload, RecordKind(kind))
    finally:
        eng.close()
    return root


def naive_book(frames: Iterable[bytes], product: str) -> tuple[dict[Decimal, Decimal],
                                                                dict[Decimal, Decimal]]:
    """Bids and asks after applying `frames` (json + Decimal dicts, no shared code)."""
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}

    def put(side: dict[Decimal, Decimal], price: str, size: str) -> None:
        if Decimal(size) == 0:
            side.pop(Decimal(price), None)
        else:
            side[Decimal(price)] = Decimal(size)

    for raw in frames:
        msg = json.loads(raw)
        if msg.get("channel") == "l2_data":
            for ev in msg["events"]:
                if ev["product_id"] != product:
                    continue
                if ev["type"] == "snapshot":
                    bids.clear()
                    asks.clear()
                for u in ev["updates"]:
                    put(bids if u["side"] == "bid" else asks, u["price_level"],
                        u["new_quantity"])
        elif msg.get("type") == "snapshot" and msg["product_id"] == product:
            bids = {Decimal(p): Decimal(s) for p, s in msg["bids"] if Decimal(s)}
            asks = {Decimal(p): Decimal(s) for p, s in msg["asks"] if Decimal(s)}
        elif msg.get("type") == "l2update" and msg["product_id"] == product:
            for side, price, size in msg["changes"]:
                put(bids if side == "buy" else asks, price, size)
    return bids, asks


def top(side: dict[Decimal, Decimal], n: int, best_high: bool) -> list[tuple[Decimal, Decimal]]:
    return [(p, side[p]) for p in sorted(side, reverse=best_high)[:n]]
