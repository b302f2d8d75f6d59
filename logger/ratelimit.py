"""Sliding-window admission for the venue's per-IP limits (8 opens/s, 8 messages/s), and the
startup send schedule built on it.

Why a sliding window and not a token bucket with a burst: a bucket refilling at 8/s with a
burst of 8 admits 15 opens in the first second, which a server counting per 1 s window refuses
(HTTP 429). Here slot k may start no earlier than slot k-limit + window, so every window of
that length holds at most ``limit`` opens, and up to ``limit`` callers start at once: 14
connections open as 8 at t=0 and 6 at t=1 s. Callers reserve slots without a lock (asyncio
runs them one at a time), so concurrent opens are paced only by the limit itself.

Reservations are first come, first served (a later reservation never gets an earlier slot),
which is what lets ``plan_startup`` give the market-data frames of every connection the first
slots and the keepalive frames the ones after. A reservation is a plan; a frame may leave
later than its slot (its socket was still opening), so callers also pass the window over
*actual* instants (``gate_delay``/``record``) before acting: late frames then never bunch up
with the next window's punctual ones at the venue. Opens are recorded when the handshake
completes (the venue counted the open somewhere between start and completion), so the next
window's opens start at least a window after the venue counted the last ones.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


class SlidingWindowLimiter:
    """At most ``limit`` acquisitions in any ``window_s`` (plus ``margin_s`` of safety)."""

    def __init__(self, limit: int, window_s: float = 1.0, margin_s: float = 0.02) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.window_s = window_s + margin_s
        self._slots: deque[float] = deque(maxlen=limit)
        self._done: deque[float] = deque(maxlen=limit)  # actual instants, in order
        self._blocked_until = 0.0

    def earliest(self, now: float | None = None) -> float:
        """The slot ``reserve(now)`` would return, without taking it."""
        now = time.monotonic() if now is None else now
        slot = max(now, self._blocked_until)
        if self._slots:
            slot = max(slot, self._slots[-1])  # first come, first served
            if len(self._slots) == self.limit:
                slot = max(slot, self._slots[0] + self.window_s)
        return slot

    def reserve(self, now: float | None = None) -> float:
        """Reserve the next slot; returns its monotonic start time (may be in the past)."""
        slot = self.earliest(now)
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

    def gate_delay(self, now: float) -> float:
        """Seconds to wait before acting now keeps ``limit`` actual acts per window."""
        if len(self._done) < self.limit:
            return 0.0
        return max(0.0, self._done[0] + self.window_s - now)

    def record(self, now: float) -> None:
        """An act (a frame handed to a socket, an open completed) happened at ``now``."""
        self._done.append(now)


@dataclass(frozen=True)
class OpeningSlots:
    """When one connection opens and sends each of its opening frames.

    ``frames[0] == open_at`` (the first subscribe leaves as soon as the socket is up, well
    within the venue's 5 s); the first ``data_frames`` slots are market data, the rest
    keepalive.
    """

    open_at: float
    frames: tuple[float, ...]
    data_frames: int


def plan_startup(frame_counts: Sequence[tuple[int, int]], opens: SlidingWindowLimiter,
                 messages: SlidingWindowLimiter, now: float) -> list[OpeningSlots]:
    """Reserve, for connections with ``(data frames, keepalive frames)`` each, every open and
    every opening frame: market data of ALL connections before any keepalive.

    Why: the venue takes 8 subscribe messages per second per IP, and on Advanced Trade every
    connection's ``heartbeats`` costs a message of its own (15 of the 34 for 400 products).
    Keepalive is only needed before a quiet channel would be closed (60-90 s), so the data
    subscriptions of all products go first and are answered about ceil(data frames / 8) s in,
    not ceil(all frames / 8) s.

    Order of reservations: (1) each connection's first frame together with its open (both
    at the same instant, so a socket never waits for its first subscribe), in plan order;
    (2) every connection's other data frames; (3) every keepalive frame. A connection with
    no data frames opens with its keepalive frame. Pure apart from the limiters it fills:
    with fresh limiters and a fixed ``now`` the schedule is deterministic.
    """
    firsts: list[float] = []
    rest: list[list[float]] = []
    for data, keep in frame_counts:
        if data + keep == 0:
            raise ValueError("a connection needs at least one opening frame")
        at = max(opens.earliest(now), messages.earliest(now))
        opens.reserve(at)
        firsts.append(messages.reserve(at))
        rest.append([])
    for (data, _keep), later in zip(frame_counts, rest, strict=True):
        later.extend(messages.reserve(now) for _ in range(data - 1))
    for (data, keep), later in zip(frame_counts, rest, strict=True):
        later.extend(messages.reserve(now) for _ in range(keep - (0 if data else 1)))
    return [OpeningSlots(first, (first, *later), data)
            for first, later, (data, _keep) in zip(firsts, rest, frame_counts, strict=True)]


class DataPhase:
    """The startup's market-data frames not yet sent; keepalive frames wait until none are.

    Why a count and not the slots alone: a frame leaves later than its slot when its socket
    is still opening, so a keepalive slotted in the same window as the last data frames
    would otherwise overtake them. Every data frame is counted off once: sent, or given up
    (its connection failed to open or closed first). ``deadline`` bounds the wait, so a
    bookkeeping slip can delay keepalive, never withhold it.
    """

    def __init__(self, frames: int, deadline: float) -> None:
        self._left = frames
        self.deadline = deadline
        self._done = asyncio.Event()
        if frames <= 0:
            self._done.set()

    @property
    def left(self) -> int:
        return self._left

    def sent(self, frames: int = 1) -> None:
        """``frames`` data frames left (or will never leave)."""
        self._left -= frames
        if self._left <= 0:
            self._done.set()

    async def wait(self) -> None:
        """Until every data frame has left, or the deadline passes."""
        if self._done.is_set():
            return
        timeout = max(0.0, self.deadline - time.monotonic())
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            return
