"""Gap detection: Advanced Trade's per-connection ``sequence_num``, Exchange's trade ids.

Advanced Trade numbers every frame of a connection 0, 1, 2, … across all channels, so a jump
means the connection lost frames of unknown channels and products. Exchange's ``sequence`` is the
product's full-feed counter and skips by design on ``matches``/``ticker``; trades are contiguous
by ``trade_id`` instead, and the 1/s heartbeat's ``last_trade_id`` reveals trades lost at the
tail of a quiet product (no later trade would expose the hole).
"""

from __future__ import annotations

from typing import NamedTuple


def seq_needle(expected: int) -> bytes:
    """The Advanced Trade envelope bytes of ``sequence_num`` = ``expected`` and the comma.

    Past int64 the wire value is not taken (``router.INT_MAX``): a needle that never matches.
    """
    return b'"sequence_num":%d,' % expected if expected < 1 << 63 else b"\x00"


class SeqGap(NamedTuple):
    """Frames with ``sequence_num`` in [first, last] never arrived."""

    first: int
    last: int


class SequenceTracker:
    """Per-connection ``sequence_num`` (Advanced Trade): starts at 0 on every connection."""

    __slots__ = ("expected", "gaps", "late", "missing", "needle")

    def __init__(self) -> None:
        self.expected = 0
        self.needle = b'"sequence_num":0,'
        """``b'"sequence_num":%d,' % expected``: the hot path checks the wire bytes against it
        instead of finding and parsing the number (one C call instead of four)."""
        self.gaps = 0
        self.missing = 0
        self.late = 0

    def reset(self) -> None:
        """A new connection: numbering restarts at 0 (counters are kept)."""
        self.set_expected(0)

    def set_expected(self, expected: int) -> None:
        """Expect ``expected`` next (keeps ``needle`` in step)."""
        self.expected = expected
        self.needle = seq_needle(expected)

    def observe(self, seq: int) -> SeqGap | bool:
        """Record ``seq``; a ``SeqGap`` if frames were skipped, True if in order, False if late.

        A late frame (lower than expected: duplicate or out of order) does not move the
        expectation back, so one reordering is reported once, not as a cascade.
        """
        expected = self.expected
        if seq == expected:
            self.set_expected(seq + 1)
            return True
        if seq > expected:
            self.set_expected(seq + 1)
            self.gaps += 1
            self.missing += seq - expected
            return SeqGap(expected, seq - 1)
        self.late += 1
        return False


class TradeGap(NamedTuple):
    """Trades ``first``..``last`` (inclusive trade ids) of ``product`` were not received."""

    product: str
    first: int
    last: int


class TradeIdTracker:
    """Per-product trade-id continuity (Exchange ``matches``), checked against heartbeats.

    ``on_trade`` flags a jump at once. ``on_heartbeat`` gives in-flight trades one heartbeat
    of grace: the heartbeat may overtake the match it covers, so a shortfall is reported only if
    it is still there at the next heartbeat of that product.
    """

    __slots__ = ("gaps", "last", "late", "missing", "owed")

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.owed: dict[str, int] = {}
        self.gaps = 0
        self.missing = 0
        self.late = 0

    def on_trade(self, product: str, trade_id: int, *, baseline: bool = False) -> TradeGap | bool:
        """Record a trade; a ``TradeGap`` for skipped ids, True if in order, False if late.

        The first trade of a product sets the baseline. ``baseline=True`` marks the
        ``last_match`` the venue sends after each subscription: it repeats the latest trade, so
        an id already seen is expected there, not late. Across a reconnect the baseline is kept,
        so trades missed while disconnected are reported as a gap by that ``last_match``.
        """
        last = self.last.get(product)
        if last is None or trade_id == last + 1:
            self.last[product] = trade_id
            return True
        if baseline and trade_id <= last:
            return True
        if trade_id > last:
            self.last[product] = trade_id
            self.gaps += 1
            self.missing += trade_id - last - 1
            return TradeGap(product, last + 1, trade_id - 1)
        self.late += 1
        return False

    def on_heartbeat(self, product: str, last_trade_id: int) -> TradeGap | None:
        """Compare the heartbeat's ``last_trade_id`` with the trades seen; a gap if short."""
        last = self.last.get(product)
        if last is None:
            return None
        gap = None
        owed = self.owed.pop(product, None)
        if owed is not None and last < owed:
            gap = TradeGap(product, last + 1, owed)
            self.last[product] = last = owed
            self.gaps += 1
            self.missing += gap.last - gap.first + 1
        if last_trade_id > last:
            self.owed[product] = last_trade_id
        return gap

    def flush_owed(self) -> list[TradeGap]:
        """The connection is gone: every suspicion still in its grace becomes a gap now.

        The trades a heartbeat announced and no match delivered can no longer arrive on this
        socket (they may have been lost with it). Each is reported once: the baseline moves to
        the owed id, so the ``last_match`` after the reconnect names only trades after it.
        """
        gaps = []
        for product, owed in sorted(self.owed.items()):
            last = self.last.get(product)
            if last is None or last >= owed:
                continue
            gap = TradeGap(product, last + 1, owed)
            self.last[product] = owed
            self.gaps += 1
            self.missing += owed - last
            gaps.append(gap)
        self.owed.clear()
        return gaps
