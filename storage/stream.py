"""A stream's handle with its pending records (as columns), and the UTC day of a timestamp.

Pending records are kept as columns (timestamps and lengths as arrays, payloads as a list
joined once at commit), so a commit encodes them without a per-record Python step. A commit
too big for one step holds the tail of a stream back (:func:`hold_back`) and returns it after
(:func:`give_back`), so each step commits a prefix, as a crash between two commits would.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from array import array
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from storage.segment import Segment

__all__ = ["EPOCH", "NS_PER_DAY", "DayCache", "Held", "Stream", "day_of", "give_back",
           "hold_back"]

NS_PER_DAY = 86_400 * 1_000_000_000
EPOCH = dt.date(1970, 1, 1)


def day_of(ts_ns: int) -> dt.date:
    """The UTC day of a timestamp in nanoseconds since the epoch."""
    return EPOCH + dt.timedelta(days=ts_ns // NS_PER_DAY)


class DayCache(dict[int, dt.date]):
    """Day number since the epoch → its date, one ``timedelta`` per day: the commit path asks
    once per stream (``cache.get(d) or cache.date(d)`` stays a C-level lookup)."""

    __slots__ = ()

    def date(self, d: int) -> dt.date:
        day = self.get(d)
        if day is None:
            if len(self) > 1024:
                self.clear()
            day = self[d] = EPOCH + dt.timedelta(days=d)
        return day


class Stream:
    """A validated (product, channel) handle with its pending records and open segments."""

    __slots__ = (
        "channel", "hi", "lens", "lo", "markers", "nbytes", "next_number", "payloads",
        "product", "segments", "ts",
    )

    def __init__(self, product: str, channel: str) -> None:
        self.product = product
        self.channel = channel
        self.ts: array[int] = array("q")
        self.lens: array[int] = array("I")
        self.payloads: list[bytes] = []
        self.markers: list[tuple[int, int]] = []  # (position in pending, kind) for non-DATA
        self.lo = self.hi = 0  # smallest and largest pending timestamp (when any pending)
        self.nbytes = 0  # pending payload bytes (= sum(lens), kept so a commit need not sum)
        self.segments: dict[dt.date, Segment] = {}
        self.next_number: dict[dt.date, int] = {}

    @property
    def pending(self) -> int:
        return len(self.lens)

    def __repr__(self) -> str:
        return f"Stream({self.product!r}, {self.channel!r}, pending={len(self.lens)})"

    def kinds_column(self) -> bytes | None:
        """The pending records' kinds, one byte each, or None when all are DATA (the usual
        case: markers are rare, so only their positions are kept until a commit)."""
        if not self.markers:
            return None
        kb = bytearray(len(self.lens))
        for pos, k in self.markers:
            kb[pos] = k
        return bytes(kb)

    def clear_pending(self) -> None:
        self.ts = array("q")
        self.lens = array("I")
        self.payloads = []
        self.markers = []
        self.nbytes = 0


class Held(NamedTuple):
    """The part of a stream's pending records held back from one step of a commit."""

    ts: array[int]
    lens: array[int]
    payloads: list[bytes]
    markers: list[tuple[int, int]]
    nbytes: int


def hold_back(stream: Stream, limit: int) -> Held | None:
    """Leave pending only the longest prefix of at most ``limit`` payload bytes (at least one
    record) and return the rest, or None when everything fits."""
    cum = list(itertools.accumulate(stream.lens))
    k = max(1, bisect.bisect_right(cum, limit))
    if k >= len(cum):
        return None
    rest = Held(stream.ts[k:], stream.lens[k:], stream.payloads[k:],
                [(p - k, kind) for p, kind in stream.markers if p >= k],
                stream.nbytes - cum[k - 1])
    stream.ts, stream.lens, stream.payloads = stream.ts[:k], stream.lens[:k], stream.payloads[:k]
    stream.markers = [(p, kind) for p, kind in stream.markers if p < k]
    stream.nbytes = cum[k - 1]
    stream.lo, stream.hi = min(stream.ts), max(stream.ts)
    return rest


def give_back(stream: Stream, rest: Held) -> None:
    """Append held-back records after whatever is still pending (the order is kept)."""
    base = len(stream.lens)
    if rest.markers:
        stream.markers += [(p + base, kind) for p, kind in rest.markers]
    lo, hi = min(rest.ts), max(rest.ts)
    if base:
        lo, hi = min(lo, stream.lo), max(hi, stream.hi)
    stream.ts += rest.ts
    stream.lens += rest.lens
    stream.payloads += rest.payloads
    stream.nbytes += rest.nbytes
    stream.lo, stream.hi = lo, hi
