"""Sliding-window admission for the venue's connection-open limit (8 opens per second per IP).

Why a sliding window and not a token bucket with a burst: a bucket refilling at 8/s with a
burst of 8 admits 15 opens in the first second, which a server counting per 1 s window refuses
(HTTP 429). Here slot k may start no earlier than slot k-limit + window, so every window of
that length holds at most ``limit`` opens, and up to ``limit`` callers start at once: 14
connections open as 8 at t=0 and 6 at t=1 s. Callers reserve slots without a lock (asyncio
runs them one at a time), so concurrent opens are paced only by the limit itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class SlidingWindowLimiter:
    """At most ``limit`` acquisitions in any ``window_s`` (plus ``margin_s`` of safety)."""

    def __init__(self, limit: int, window_s: float = 1.0, margin_s: float = 0.02) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.window_s = window_s + margin_s
        self._slots: deque[float] = deque(maxlen=limit)
        self._blocked_until = 0.0

    def reserve(self, now: float | None = None) -> float:
        """Reserve the next slot; returns its monotonic start time (may be in the past)."""
        now = time.monotonic() if now is None else now
        slot = max(now, self._blocked_until)
        if len(self._slots) == self.limit:
            slot = max(slot, self._slots[0] + self.window_s)
        self._slots.append(slot)
        return slot

    async def acquire(self) -> None:
        """Wait for a slot of our own."""
        slot = self.reserve()
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def penalize(self, seconds: float) -> None:
        """The venue said "too fast" (HTTP 429): nobody opens for ``seconds``."""
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
