"""CSV in tardis.dev's layout for the four datasets tardis publishes.

Layout (docs.tardis.dev, "Downloadable CSV files", Data types): comma-separated, LF, header
row, times in microseconds since the epoch (UTC), `timestamp` the exchange's time and
`local_timestamp` the receive time, `exchange` the venue id (`coinbase`), `symbol` the
instrument as the venue spells it, upper case. Columns, in order:

- trades: exchange,symbol,timestamp,local_timestamp,id,side,price,amount
- incremental_book_L2: exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount
- book_snapshot_N: exchange,symbol,timestamp,local_timestamp, then for i in 0..N-1
  asks[i].price,asks[i].amount,bids[i].price,bids[i].amount
- quotes: exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount

Rows of a book that is not valid (see docs/EXPORT.md) are left out of the book snapshot and
quotes CSVs (tardis has no column to say so); the markers that explain the hole are written
next to them as a `markers` CSV with our own columns.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

EXCHANGE = "coinbase"
TARDIS_NAMES = {"trades": "trades", "book_l2": "incremental_book_L2", "quotes": "quotes",
                "book_snapshot": "book_snapshot_{depth}"}
_HEAD = ["exchange", "symbol", "timestamp", "local_timestamp"]


def header(dataset: str, depth: int) -> list[str]:
    if dataset == "trades":
        return [*_HEAD, "id", "side", "price", "amount"]
    if dataset == "book_l2":
        return [*_HEAD, "is_snapshot", "side", "price", "amount"]
    if dataset == "quotes":
        return [*_HEAD, "ask_amount", "ask_price", "bid_price", "bid_amount"]
    if dataset == "book_snapshot":
        cols = list(_HEAD)
        for i in range(depth):
            cols += [f"asks[{i}].price", f"asks[{i}].amount", f"bids[{i}].price",
                     f"bids[{i}].amount"]
        return cols
    raise ValueError(f"tardis.dev has no layout for {dataset!r}")


def _micros(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.divide(col.cast(pa.int64()), 1000)


def _number(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A decimal as its shortest exact text (61234.500000000000000000 -> 61234.5)."""
    if pa.types.is_floating(col.type):
        return col.cast(pa.string())
    text = col.cast(pa.string())
    text = pc.replace_substring_regex(text, r"(\.\d*?)0+$", r"\1")
    return pc.replace_substring_regex(text, r"\.$", "")


def to_tardis(dataset: str, table: pa.Table, product: str, depth: int) -> pa.Table:
    """Our dataset table → the tardis layout (column names are set by the writer's header)."""
    if dataset in ("quotes", "book_snapshot"):
        table = table.filter(pc.equal(table["valid"], True))
    if dataset == "quotes":  # tardis quotes are the book's top; ticker quotes stay in Parquet
        table = table.filter(pc.equal(table["source"].cast(pa.string()), "book"))
    n = table.num_rows
    local = _micros(table["ts_recv"])
    exch = pc.coalesce(_micros(table["ts_exchange"]), local)
    cols: list[pa.Array | pa.ChunkedArray] = [
        pa.array([EXCHANGE] * n), pa.array([product.upper()] * n), exch, local]
    if dataset == "trades":
        side = pc.coalesce(table["side"].cast(pa.string()), pa.scalar("unknown"))
        cols += [table["trade_id"], side, _number(table["price"]), _number(table["size"])]
    elif dataset == "book_l2":
        snap = pc.if_else(table["is_snapshot"], "true", "false")
        cols += [snap, table["side"].cast(pa.string()), _number(table["price"]),
                 _number(table["size"])]
    elif dataset == "quotes":
        cols += [_number(table[c]) for c in ("ask_size", "ask_price", "bid_price", "bid_size")]
    else:
        for i in range(depth):
            cols += [_number(table[f"{k}_{i}"]) for k in ("ask_price", "ask_size", "bid_price",
                                                           "bid_size")]
    names = header(dataset, depth)
    return pa.Table.from_arrays(cols, names=names)
