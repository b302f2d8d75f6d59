"""The real 2021 Exchange capture (../shared/coinbase) through cbl-export and the book rebuild.

Optional by design: the shared reference files are not part of the repository. When they are
absent the test is skipped and says why.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from exportdata import naive_book, top, write_root

from tools.export_cli import main as export_main
from tools.normalize import api

# ../shared/coinbase next to the repository (or next to a folder holding its worktrees)
SHARED = next((a / "shared" / "coinbase" for a in Path(__file__).resolve().parents[3:5]
               if (a / "shared" / "coinbase").is_dir()),
              Path(__file__).resolve().parents[3] / "shared" / "coinbase")
CAPTURE = SHARED / "exchange_stream_2021-04-17.jsonl"
STAMPS = SHARED / "exchange_stream_2021-04-17.recv_ts.txt"

pytestmark = pytest.mark.skipif(
    not (CAPTURE.exists() and STAMPS.exists()),
    reason=f"shared Coinbase capture not found at {SHARED} (optional reference files)",
)
CHANNEL = {"snapshot": "level2", "l2update": "level2", "ticker": "ticker",
           "match": "matches", "last_match": "matches"}


def test_real_capture_export_counts_decimals_and_book(tmp_path: Path) -> None:
    lines = CAPTURE.read_bytes().splitlines()
    stamps = [int(float(s) * 1e9) for s in STAMPS.read_text().split()]
    recs = []
    expect: Counter[tuple[str, str]] = Counter()
    frames: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for raw, ts in zip(lines, stamps, strict=True):
        msg = json.loads(raw)
        ch = CHANNEL.get(msg.get("type"))
        if ch is None:
            recs.append(("_conn0", "subscriptions", ts, 0, raw))
            continue
        p = msg["product_id"]
        recs.append((p, ch, ts, 0, raw))
        if ch == "level2":
            frames[p].append((ts, raw))
            n = len(msg.get("changes", [])) + len(msg.get("bids", [])) + len(msg.get("asks", []))
            expect[(p, "book_l2")] += n
        elif ch == "matches":
            expect[(p, "trades")] += 1
        else:
            expect[(p, "ticker")] += 1
    root = write_root(tmp_path / "data", recs)
    out = tmp_path / "out"
    assert export_main([str(root), "-o", str(out), "-q"]) == 0
    day = dt.datetime.fromtimestamp(stamps[0] / 1e9, dt.UTC).date()
    for (p, ds), n in expect.items():
        f = out / f"dataset={ds}" / f"date={day}" / f"product={p}" / "part-0.parquet"
        t = pq.read_table(f, partitioning=None)
        assert t.num_rows == n, (p, ds)
        assert all(m is None for m in t["marker"].to_pylist())
    # exact decimals: every price of one product's level changes, re-rendered, equals the text
    p = max(frames, key=lambda k: len(frames[k]))
    texts = []
    for _, raw in frames[p]:
        msg = json.loads(raw)
        texts += ([c[1] for c in msg["changes"]] if "changes" in msg
                  else [b[0] for b in msg["bids"]] + [a[0] for a in msg["asks"]])
    got = pq.read_table(out / "dataset=book_l2" / f"date={day}" / f"product={p}" /
                        "part-0.parquet", partitioning=None)["price"].to_pylist()
    assert [f"{d:.{len(s.split('.')[1])}f}" for d, s in zip(got, texts, strict=True)] == texts
    # the rebuilt book at the last frame equals a plain one, for every product with a book
    for p, fr in frames.items():
        at = fr[-1][0]
        bids, asks = naive_book((f for ts, f in fr if ts <= at), p)
        book = api.book(root, p, at, depth=50)
        assert book["valid"], p
        assert [(Decimal(a), Decimal(b)) for a, b in book["bids"]] == top(bids, 50, True)
        assert [(Decimal(a), Decimal(b)) for a, b in book["asks"]] == top(asks, 50, False)
    rep = {r["product"]: r for r in api.integrity(root)}
    assert all(r["book_valid_pct"] == 100.0 for r in rep.values() if r["snapshots"])
