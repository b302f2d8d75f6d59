"""Per product and UTC day: how complete the book and trade streams are (`inspect integrity`).

Runs the export's own rebuild (`ProductRows` with no datasets) over the level2 and trade
channels, so the valid-time figure here is exactly the one behind the export's `valid` column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tools.normalize import datasets as D
from tools.normalize.replay import DEFAULT_LOOKBACK_DAYS, day_start, run_days, warm_up
from tools.normalize.rows import Counters, ProductRows
from tools.normalize.source import product_days, products

CHANNELS = ("level2", "level2_batch", "market_trades", "matches")


def _report(product: str, day: dt.date, rows: ProductRows) -> dict[str, Any]:
    last = rows.tracker.stats.last_ns
    st = rows.tracker.close_span(last if last is not None else day_start(day))
    c = rows.counters
    rows.counters = Counters()
    return {
        "product": product, "date": str(day),
        "snapshots": st.snapshots, "updates": st.updates, "levels": st.levels,
        "gaps": c.by_kind.get("gap", 0), "markers": dict(sorted(c.by_kind.items())),
        "book_invalidations": st.invalidations,
        "crossed_moments": st.crossed_moments, "locked_moments": st.locked_moments,
        "book_valid_pct": st.valid_pct() if st.snapshots or st.updates else None,
        "trades": c.trades, "trade_id_gaps": c.trade_gaps, "trades_missing": c.trades_missing,
        "malformed": c.malformed,
    }


def integrity(root: Path, product_sel: list[str] | None = None,
              first: dt.date | None = None, last: dt.date | None = None,
              lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> Iterator[dict[str, Any]]:
    """One report per (product, day) with level2 or trade data, products in name order."""
    for p in product_sel or products(root):
        days = [d for d in product_days(root, p, CHANNELS)
                if (first is None or d >= first) and (last is None or d <= last)]
        if not days:
            continue
        rows = ProductRows(p)
        book = [c for c in D.BOOK_CHANNELS if product_days(root, p, [c])]
        if book:
            warm_up(rows, root, book, day_start(days[0]), lookback_days)
        out: list[dict[str, Any]] = []

        def done(day: dt.date, r: ProductRows, out: list[dict[str, Any]] = out) -> None:
            out.append(_report(r.product, day, r))

        run_days(rows, root, list(CHANNELS), days, done)
        yield from out
