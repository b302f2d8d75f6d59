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

    def book(self, ts: int, tsx: str | None, is_snapshot: bool,
             levels: list[tuple[bool, str, str]], times: list[str | None] | None,
             seq: int | None) -> None:
        """One whole book message: `levels` as (is_bid, price, size) in the frame's order,
        `times` each level's exchange time (None: every level has `tsx`). Whole, so the
        book applies it in one call (BookTracker.message, compiled where built)."""

    def book_part(self, ts: int, tsx: str | None, is_snapshot: bool,
                  levels: list[tuple[bool, str, str]], times: list[str | None] | None,
                  seq: int | None) -> None:
        """The readable head of a book message that broke off: applied as begun and never
        ended (the frame is then reported malformed)."""

    def ticker(self, ts: int, tsx: str | None, channel: str, is_snapshot: bool,
               values: tuple[Any, ...], seq: int | None) -> None:
        """`values` in the order of datasets.TICKER from `price` to `price_percent_chg_24h`
        without `sequence`."""

    def candle(self, ts: int, tsx: str | None, is_snapshot: bool,
               values: tuple[Any, ...]) -> None:
        """`values`: start (ns), open, high, low, close, volume."""

    def status(self, ts: int, tsx: str | None, values: tuple[Any, ...]) -> None:
        """`values` in the order of datasets.STATUS from `product` to `post_only`."""
