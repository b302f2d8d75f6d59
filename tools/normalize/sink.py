"""What the dialect parsers call for each normalized event: the seam between venue JSON and rows.

Parsers know Coinbase shapes and nothing of Arrow; the sink (`ProductRows`) knows datasets and
the book and nothing of JSON. Values are the venue's own strings (exact decimals, ISO times).
"""

from __future__ import annotations

from typing import Any, Protocol


class EventSink(Protocol):
    product: str

    def trade(self, ts: int, tsx: str | None, trade_id: str, side: str | None, price: str,
              size: str, seq: int | None, repeat: bool) -> None:
        """`repeat`: the venue re-sends trades it reported before (AT market_trades snapshot,
        Exchange last_match); the sink keeps only those after the last trade id it has."""

    def book_begin(self, ts: int, is_snapshot: bool) -> None: ...

    def level(self, ts: int, tsx: str | None, is_snapshot: bool, is_bid: bool, price: str,
              size: str, seq: int | None) -> None: ...

    def book_end(self, ts: int, tsx: str | None) -> None: ...

    def ticker(self, ts: int, tsx: str | None, channel: str, is_snapshot: bool,
               values: tuple[Any, ...], seq: int | None) -> None:
        """`values` in the order of datasets.TICKER from `price` to `price_percent_chg_24h`
        without `sequence`."""

    def candle(self, ts: int, tsx: str | None, is_snapshot: bool,
               values: tuple[Any, ...]) -> None:
        """`values`: start (ns), open, high, low, close, volume."""

    def status(self, ts: int, tsx: str | None, values: tuple[Any, ...]) -> None:
        """`values` in the order of datasets.STATUS from `product` to `post_only`."""
