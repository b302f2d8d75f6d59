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
    """Append-only rows of one dataset; `take()` returns them as a table and starts afresh."""

    spec: Sequence[tuple[str, str]]
    floats: bool = False
    data: list[list[Any]] = field(init=False)
    unconverted: int = 0

    def __post_init__(self) -> None:
        self.data = [[] for _ in self.spec]

    def __len__(self) -> int:
        return len(self.data[0])

    def add(self, *values: Any) -> None:
        for col, v in zip(self.data, values, strict=True):
            col.append(v)

    def take(self) -> pa.Table:
        arrays = [self._convert(kind, col) for (_, kind), col in zip(self.spec, self.data,
                                                                    strict=True)]
        self.data = [[] for _ in self.spec]
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
