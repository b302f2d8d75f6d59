"""Column builders: rows appended as plain Python values, turned into typed Arrow columns at once.

Why this shape: per message the parsers only append the venue's own strings to lists (no
Decimal, no datetime objects: those cost microseconds each); the conversion to exact
decimal128 or float64, and of ISO exchange times to timestamps, then runs vectorised inside
Arrow once per row group. A value Arrow cannot convert (a malformed number, a decimal with more
than 12 fractional digits) becomes null and is counted in `unconverted`, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

#: exact decimals: 26 integer digits and 12 fractional digits, enough for every Coinbase
#: price, size and volume (quote increments reach 1e-10, sizes 1e-8); 12, not more, so that
#: price * size (scale 24) still fits 38 digits in DuckDB and Polars
DECIMAL = pa.decimal128(38, 12)
TIMESTAMP = pa.timestamp("ns", tz="UTC")

# column kinds
TS = "ts"        # int ns since the epoch -> timestamp[ns, UTC]
TSX = "tsx"      # ISO 8601 string from the venue -> timestamp[ns, UTC] (null if absent)
DEC = "dec"      # decimal string -> decimal128(38, 12), or float64 with floats=True
STR = "str"      # string
CAT = "cat"      # short repeated string -> dictionary<int32, string>
INT = "int"      # int64
BOOL = "bool"    # bool

_PLAIN = {STR: pa.string(), INT: pa.int64(), BOOL: pa.bool_()}


def arrow_type(kind: str, floats: bool) -> pa.DataType:
    if kind in (TS, TSX):
        return TIMESTAMP
    if kind == DEC:
        return pa.float64() if floats else DECIMAL
    if kind == CAT:
        return pa.dictionary(pa.int32(), pa.string())
    return _PLAIN[kind]


def schema_of(columns: Sequence[tuple[str, str]], floats: bool) -> pa.Schema:
    return pa.schema([pa.field(name, arrow_type(kind, floats)) for name, kind in columns])


@dataclass
class Columns:
    """Append-only rows of one dataset; `take()` returns them as a table and starts afresh.

    Rows are kept as tuples (one append per row, the cheapest thing Python does) and turned
    into columns once per row group. A dataset whose last column is `marker` gets it filled
    here: null, or the marker names set with `mark()` since the previous row.
    """

    spec: Sequence[tuple[str, str]]
    floats: bool = False
    rows: list[tuple[Any, ...]] = field(init=False, default_factory=list)
    unconverted: int = 0
    pending: str | None = None

    def __post_init__(self) -> None:
        self.has_marker = self.spec[-1][0] == "marker"

    def __len__(self) -> int:
        return len(self.rows)

    def mark(self, name: str) -> None:
        self.pending = name if self.pending is None else f"{self.pending},{name}"

    def add(self, *values: Any) -> None:
        if not self.has_marker:
            self.rows.append(values)
        elif self.pending is None:
            self.rows.append((*values, None))
        else:
            self.rows.append((*values, self.pending))
            self.pending = None

    def take(self) -> pa.Table:
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(self.spec)
        self.rows = []
        arrays = [self._convert(kind, list(col)) for (_, kind), col in zip(self.spec, columns,
                                                                           strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema_of(self.spec, self.floats))

    def _convert(self, kind: str, values: list[Any]) -> pa.Array:
        try:
            return _vectorised(kind, values, self.floats)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            return self._one_by_one(kind, values)

    def _one_by_one(self, kind: str, values: list[Any]) -> pa.Array:
        """The slow path after a failed vectorised conversion: each value alone, bad ones null."""
        out: list[Any] = []
        for v in values:
            try:
                out.append(_vectorised(kind, [v], self.floats)[0].as_py())
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                    OverflowError):
                self.unconverted += 1
                out.append(None)
        arr = pa.array(out, arrow_type(kind, self.floats) if kind != CAT else pa.string())
        return arr.dictionary_encode() if kind == CAT else arr


def _vectorised(kind: str, values: list[Any], floats: bool) -> pa.Array:
    if kind == TS:
        return pa.array(values, pa.int64()).cast(TIMESTAMP)
    if kind in (TSX, DEC):
        return pa.array(values, pa.string()).cast(arrow_type(kind, floats))
    if kind == CAT:
        return pa.array(values, pa.string()).dictionary_encode()
    return pa.array(values, _PLAIN[kind])
