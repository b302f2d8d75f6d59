"""The columnar fast path: `book_l2` and `trades` rows of a run of frames, parsed inside Arrow.

When no book-derived dataset is asked for, `book_l2` and `trades` rows depend on one stream
alone, so a run of its frames (between two markers) can be parsed by Arrow's JSON reader with
an explicit schema and flattened with list kernels: no Python object per level. The rows are
the ones the Python path (parse.py → rows.py) produces, in the same order; a run that does
not fit the schema, or that needs the Python path's judgement (AT trade snapshots and Exchange
`last_match` repeat earlier trades), returns None and goes through the Python path instead.
"""

from __future__ import annotations

import io
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from storage import RecordBatch
from tools.normalize import datasets as D
from tools.normalize import scan
from tools.normalize.columns import schema_of

_S = pa.string()
_LEVELS = pa.list_(pa.list_(_S))
_AT_L2 = pa.schema([
    ("channel", _S), ("timestamp", _S), ("sequence_num", pa.int64()),
    ("events", pa.list_(pa.struct([
        ("type", _S), ("product_id", _S),
        ("updates", pa.list_(pa.struct([("side", _S), ("event_time", _S),
                                        ("price_level", _S), ("new_quantity", _S)])))])))])
_EX_L2 = pa.schema([("type", _S), ("product_id", _S), ("time", _S), ("bids", _LEVELS),
                    ("asks", _LEVELS), ("changes", _LEVELS)])
_AT_TRADES = pa.schema([
    ("channel", _S), ("sequence_num", pa.int64()),
    ("events", pa.list_(pa.struct([
        ("type", _S),
        ("trades", pa.list_(pa.struct([("product_id", _S), ("trade_id", _S), ("price", _S),
                                       ("size", _S), ("time", _S), ("side", _S)])))])))])
_EX_TRADES = pa.schema([("type", _S), ("trade_id", pa.int64()), ("side", _S), ("size", _S),
                        ("price", _S), ("product_id", _S), ("sequence", pa.int64()),
                        ("time", _S)])
_AGGRESSOR_FROM = pa.array(["buy", "sell", "BUY", "SELL"])
_AGGRESSOR_TO = pa.array(["sell", "buy", "sell", "buy"])


def _read(payloads: list[bytes], schema: pa.Schema) -> pa.Table:
    data = b"\n".join(payloads) + b"\n"
    opts = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore",
                           newlines_in_values=False)
    # blocks of ~1 MiB (Arrow parses blocks in parallel); a block must hold the longest line
    block = max(1 << 20, max(map(len, payloads)) + 1)
    return pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=block),
                        parse_options=opts).combine_chunks()


def _flat(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, pa.Array]:
    """(flattened values, index of each value's parent row)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return pc.list_flatten(arr), pc.list_parent_indices(arr)


def _finish(cols: dict[str, Any], spec: tuple[tuple[str, str], ...], floats: bool
            ) -> pa.Table:
    schema = schema_of(spec, floats)
    arrays = []
    for f in schema:
        a = cols[f.name]
        if pa.types.is_dictionary(f.type):
            a = a.cast(_S).dictionary_encode()
        arrays.append(a.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def book_l2(payloads: list[bytes], ts: list[int], product: str, floats: bool
            ) -> pa.Table | None:
    """`book_l2` rows of a run of level2 frames of `product`, or None (use the Python path)."""
    try:
        return _book_l2(scan.frames(payloads), np.asarray(ts, np.int64), product, floats)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def book_l2_batches(batches: list[RecordBatch], product: str, floats: bool
                    ) -> pa.Table | None:
    """`book_l2` as `book_l2`, for stored batches holding level2 frames only."""
    bases = np.cumsum([0] + [len(b.payloads) for b in batches])
    offsets = np.concatenate([np.zeros(1, np.int64), *(
        np.asarray(b.starts[1:], np.int64) + base for b, base in zip(batches, bases[:-1],
                                                                     strict=True))])
    ts = np.concatenate([np.frombuffer(b.ts, np.int64) for b in batches])
    try:
        frames = scan.frames_of(b"".join(b.payloads for b in batches), offsets)
        return _book_l2(frames, ts, product, floats)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _book_l2(frames: tuple[pa.StringArray, np.ndarray, np.ndarray], ts: np.ndarray,
             product: str, floats: bool) -> pa.Table | None:
    """Frames of the common shape are scanned positionally (scan.py); the others, in
    stretches, go through Arrow's JSON reader; the rows are concatenated in frame order."""
    arr, buf, offsets = frames
    at = bytes(buf[:10]) == b'{"channel"'
    native = scan.AtScan(scan.native_at_l2, buf, offsets) if (
        at and scan.native_at_l2 is not None) else None
    ok = native.mask if native is not None else scan.fits(
        arr, scan.AT_L2 if at else scan.EX_L2UPDATE)
    tables = []
    for lo, hi, fit in _stretches(ok):
        tss = pa.array(ts[lo:hi])
        if fit:
            offs = offsets[lo:hi + 1]
            t = (_at_rows(_at_scanned(native.fields(lo, hi) if native is not None
                                      else scan.at_l2(buf, offs)), tss, product, floats) if at
                 else _ex_scanned(scan.ex_l2update(buf, offs), tss, product, floats))
        else:
            payloads = [bytes(buf[offsets[i]:offsets[i + 1]]) for i in range(lo, hi)]
            t = (_at_l2(_read(payloads, _AT_L2), tss, product, floats) if at
                 else _ex_l2(_read(payloads, _EX_L2), tss, product, floats))
        if t is None:
            return None
        tables.append(t)
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables).unify_dictionaries()


def _stretches(ok: Any) -> list[tuple[int, int, bool]]:
    """[lo, hi) runs of equal values of a boolean mask."""
    cuts = [0, *(int(i) + 1 for i in (ok[1:] != ok[:-1]).nonzero()[0]), len(ok)]
    return [(lo, hi, bool(ok[lo])) for lo, hi in pairwise(cuts) if hi > lo]


def _at_scanned(f: dict[str, Any]) -> dict[str, Any] | None:
    rec = f["rec"]
    return {"product": f["product_id"], "timestamp": f["timestamp"],
            "sequence": f["sequence"].cast(pa.int64()), "rec": rec,
            "type": pc.take(f["type"], rec), "side": f["side"], "event_time": f["event_time"],
            "price": f["price"], "size": f["size"]}


def _at_l2(t: pa.Table, ts: pa.Array, product: str, floats: bool) -> pa.Table | None:
    if pc.any(pc.not_equal(t["channel"], "l2_data")).as_py():
        return None
    ev, ev_rec = _flat(t["events"])
    up, up_ev = _flat(ev.field("updates"))
    return _at_rows({
        "product": ev.field("product_id"), "timestamp": t["timestamp"],
        "sequence": t["sequence_num"], "rec": pc.take(ev_rec, up_ev),
        "type": pc.take(ev.field("type"), up_ev), "side": up.field("side"),
        "event_time": up.field("event_time"), "price": up.field("price_level"),
        "size": up.field("new_quantity")}, ts, product, floats)


def _at_rows(f: dict[str, Any] | None, ts: pa.Array, product: str, floats: bool
             ) -> pa.Table | None:
    if f is None or pc.any(pc.not_equal(f["product"], product)).as_py():
        return None  # another product's event: the Python path filters it
    rec, et, side = f["rec"], f["event_time"], f["side"]
    zero = pc.starts_with(pc.fill_null(et, "1970-01-01T00:00:00"), "1970-01-01T00:00:00")
    tsx = pc.if_else(zero, pc.take(f["timestamp"], rec), et)
    if pc.any(pc.invert(pc.is_in(side, pa.array(["bid", "offer"])))).as_py():
        return None
    return _finish({
        "ts_recv": pc.take(ts, rec).cast(pa.timestamp("ns", tz="UTC")),
        "ts_exchange": tsx.cast(pa.timestamp("ns", tz="UTC")),
        "is_snapshot": pc.fill_null(pc.equal(f["type"], "snapshot"), False),
        "side": pc.if_else(pc.equal(side, "bid"), "bid", "ask"),
        "price": _dec(f["price"], floats), "size": _dec(f["size"], floats),
        "sequence": pc.take(f["sequence"], rec),
        "marker": pa.nulls(len(rec), _S)}, D.BOOK_L2, floats)


def _ex_scanned(f: dict[str, Any], ts: pa.Array, product: str, floats: bool
                ) -> pa.Table | None:
    if pc.any(pc.not_equal(f["product_id"], product)).as_py():
        return None
    rec = f["rec"]
    n = len(rec)
    return _finish({
        "ts_recv": pc.take(ts, rec).cast(pa.timestamp("ns", tz="UTC")),
        "ts_exchange": pc.take(f["time"], rec).cast(pa.timestamp("ns", tz="UTC")),
        "is_snapshot": pa.repeat(pa.scalar(False), n),
        "side": pc.if_else(pc.equal(f["side"], "buy"), "bid", "ask"),
        "price": _dec(f["price"], floats), "size": _dec(f["size"], floats),
        "sequence": pa.nulls(n, pa.int64()), "marker": pa.nulls(n, _S)}, D.BOOK_L2, floats)


def _dec(strings: pa.Array, floats: bool) -> pa.Array:
    return strings.cast(pa.float64() if floats else pa.decimal128(38, 12))


def _ex_l2(t: pa.Table, ts: pa.Array, product: str, floats: bool) -> pa.Table | None:
    kinds = t["type"]
    ok = pc.or_(pc.equal(kinds, "snapshot"), pc.equal(kinds, "l2update"))
    if not pc.all(ok).as_py() or pc.any(pc.not_equal(t["product_id"], product)).as_py():
        return None
    parts = []
    for order, name in enumerate(("bids", "asks", "changes")):
        lv, rec = _flat(t[name])
        if name == "changes":
            side = pc.if_else(pc.equal(pc.list_element(lv, 0), "buy"), "bid", "ask")
            price, size = pc.list_element(lv, 1), pc.list_element(lv, 2)
        else:
            side = pa.array(["bid" if name == "bids" else "ask"] * len(lv), _S)
            price, size = pc.list_element(lv, 0), pc.list_element(lv, 1)
        parts.append(pa.table({"rec": rec, "order": pa.array([order] * len(lv), pa.int8()),
                               "side": side, "price": price, "size": size}))
    rows = pa.concat_tables(parts)
    rows = rows.take(pc.sort_indices(rows, [("rec", "ascending"), ("order", "ascending")]))
    rec = rows["rec"]
    return _finish({
        "ts_recv": pc.take(ts, rec).cast(pa.timestamp("ns", tz="UTC")),
        "ts_exchange": pc.take(t["time"], rec).cast(pa.timestamp("ns", tz="UTC")),
        "is_snapshot": pc.equal(pc.take(kinds, rec), "snapshot"),
        "side": rows["side"], "price": _dec(rows["price"].combine_chunks(), floats),
        "size": _dec(rows["size"].combine_chunks(), floats),
        "sequence": pa.nulls(rows.num_rows, pa.int64()),
        "marker": pa.nulls(rows.num_rows, _S)}, D.BOOK_L2, floats)


def trades(payloads: list[bytes], ts: list[int], product: str, floats: bool
           ) -> tuple[pa.Table, int | None] | None:
    """`trades` rows of a run of trade frames and the highest numeric trade id, or None."""
    try:
        if payloads and payloads[0].startswith(b'{"channel"'):
            return _at_trades(_read(payloads, _AT_TRADES), pa.array(ts, pa.int64()), product,
                              floats)
        return _ex_trades(_read(payloads, _EX_TRADES), pa.array(ts, pa.int64()), product,
                          floats)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _aggressor(side: pa.Array) -> pa.Array:
    idx = pc.index_in(side, value_set=_AGGRESSOR_FROM)
    return pc.take(_AGGRESSOR_TO, idx)


def _max_id(ids: pa.Array) -> int | None:
    if len(ids) == 0:
        return None
    as_int = ids.cast(pa.int64())  # ArrowInvalid for a non-numeric id: Python path
    return pc.max(as_int).as_py()  # type: ignore[no-any-return]


def _at_trades(t: pa.Table, ts: pa.Array, product: str, floats: bool
               ) -> tuple[pa.Table, int | None] | None:
    if pc.any(pc.not_equal(t["channel"], "market_trades")).as_py():
        return None
    ev, ev_rec = _flat(t["events"])
    if pc.any(pc.not_equal(ev.field("type"), "update")).as_py():
        return None  # snapshots repeat history: the Python path de-duplicates them
    tr, tr_ev = _flat(ev.field("trades"))
    if pc.any(pc.not_equal(tr.field("product_id"), product)).as_py():
        return None
    rec = pc.take(ev_rec, tr_ev)
    ids = tr.field("trade_id")
    if pc.any(pc.is_null(ids)).as_py():
        return None
    table = _finish({
        "ts_recv": pc.take(ts, rec).cast(pa.timestamp("ns", tz="UTC")),
        "ts_exchange": tr.field("time").cast(pa.timestamp("ns", tz="UTC")),
        "trade_id": ids, "side": _aggressor(tr.field("side")),
        "price": _dec(tr.field("price"), floats), "size": _dec(tr.field("size"), floats),
        "sequence": pc.take(t["sequence_num"], rec),
        "marker": pa.nulls(len(tr), _S)}, D.TRADES, floats)
    return table, _max_id(ids)


def _ex_trades(t: pa.Table, ts: pa.Array, product: str, floats: bool
               ) -> tuple[pa.Table, int | None] | None:
    if not pc.all(pc.equal(t["type"], "match")).as_py() \
            or pc.any(pc.not_equal(t["product_id"], product)).as_py() \
            or pc.any(pc.is_null(t["trade_id"])).as_py():
        return None  # last_match repeats a trade: the Python path de-duplicates it
    ids = t["trade_id"].cast(_S)
    table = _finish({
        "ts_recv": ts.cast(pa.timestamp("ns", tz="UTC")),
        "ts_exchange": t["time"].cast(pa.timestamp("ns", tz="UTC")),
        "trade_id": ids, "side": _aggressor(t["side"]),
        "price": _dec(t["price"], floats), "size": _dec(t["size"], floats),
        "sequence": t["sequence"], "marker": pa.nulls(t.num_rows, _S)}, D.TRADES, floats)
    return table, _max_id(t["trade_id"])
