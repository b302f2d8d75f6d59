"""The normalized datasets: names and columns, one list per dataset (docs/EXPORT.md explains each).

Every dataset except `status` and `markers` is per product (the product is the hive partition
`product=…`, not a column in the file). Every row-per-event dataset has a `marker` column: null
normally; on the first row after one or more stream markers (gap, disconnect, reconnect,
dropped, restart, …) it names their kinds, comma-separated, so a row whose predecessor may be
missing says so in the row itself. The `markers` dataset holds every marker in full.
"""

from __future__ import annotations

from tools.normalize.columns import BOOL, CAT, DEC, INT, STR, TS, TSX

TRADES = (("ts_recv", TS), ("ts_exchange", TSX), ("trade_id", STR), ("side", CAT),
          ("price", DEC), ("size", DEC), ("sequence", INT), ("marker", STR))

BOOK_L2 = (("ts_recv", TS), ("ts_exchange", TSX), ("is_snapshot", BOOL), ("side", CAT),
           ("price", DEC), ("size", DEC), ("sequence", INT), ("marker", STR))

QUOTES = (("ts_recv", TS), ("ts_exchange", TSX), ("source", CAT), ("valid", BOOL),
          ("bid_price", DEC), ("bid_size", DEC), ("ask_price", DEC), ("ask_size", DEC),
          ("marker", STR))

TICKER = (("ts_recv", TS), ("ts_exchange", TSX), ("channel", CAT), ("is_snapshot", BOOL),
          ("price", DEC), ("best_bid", DEC), ("best_bid_size", DEC), ("best_ask", DEC),
          ("best_ask_size", DEC), ("side", CAT), ("trade_id", STR), ("last_size", DEC),
          ("sequence", INT), ("open_24h", DEC), ("high_24h", DEC), ("low_24h", DEC),
          ("volume_24h", DEC), ("volume_30d", DEC), ("low_52w", DEC), ("high_52w", DEC),
          ("price_percent_chg_24h", DEC), ("marker", STR))

CANDLES = (("ts_recv", TS), ("ts_exchange", TSX), ("is_snapshot", BOOL), ("start", TS),
           ("open", DEC), ("high", DEC), ("low", DEC), ("close", DEC), ("volume", DEC),
           ("marker", STR))

STATUS = (("ts_recv", TS), ("ts_exchange", TSX), ("product", STR), ("status", CAT),
          ("status_message", STR), ("product_type", CAT), ("base_currency", STR),
          ("quote_currency", STR), ("base_increment", STR), ("quote_increment", STR),
          ("min_market_funds", STR), ("display_name", STR), ("trading_disabled", BOOL),
          ("cancel_only", BOOL), ("limit_only", BOOL), ("post_only", BOOL),
          ("marker", STR))

MARKERS = (("ts_recv", TS), ("channel", STR), ("kind", CAT), ("payload", STR))

DEFAULT_DEPTH = 25


def book_snapshot_spec(depth: int) -> tuple[tuple[str, str], ...]:
    """`book_snapshot_<depth>`: levels interleaved as tardis.dev orders them (ask i, bid i)."""
    cols: list[tuple[str, str]] = [("ts_recv", TS), ("ts_exchange", TSX), ("valid", BOOL)]
    for i in range(depth):
        cols += [(f"ask_price_{i}", DEC), (f"ask_size_{i}", DEC),
                 (f"bid_price_{i}", DEC), (f"bid_size_{i}", DEC)]
    cols.append(("marker", STR))
    return tuple(cols)


#: per-product datasets and the recorded channels each is built from
PRODUCT_DATASETS = {
    "trades": ("market_trades", "matches"),
    "book_l2": ("level2", "level2_batch"),
    "book_snapshot": ("level2", "level2_batch"),
    "quotes": ("level2", "level2_batch", "ticker"),
    "ticker": ("ticker", "ticker_batch"),
    "candles": ("candles",),
}
SHARED_DATASETS = ("status", "markers")
ALL_DATASETS = (*PRODUCT_DATASETS, *SHARED_DATASETS)
BOOK_CHANNELS = ("level2", "level2_batch")
