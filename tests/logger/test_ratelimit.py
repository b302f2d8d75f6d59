"""The connection-open limiter: concurrent reservations, never more than N per window."""

from __future__ import annotations

import asyncio
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from logger.ratelimit import SlidingWindowLimiter


def test_fourteen_opens_start_as_eight_then_six() -> None:
    lim = SlidingWindowLimiter(8, 1.0, margin_s=0.0)
    slots = [lim.reserve(now=100.0) for _ in range(14)]
    assert slots[:8] == [100.0] * 8
    assert slots[8:] == [101.0] * 6


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 10), st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=60))
def test_no_window_holds_more_than_the_limit(limit: int, arrivals: list[float]) -> None:
    lim = SlidingWindowLimiter(limit, 1.0, margin_s=0.0)
    pairs = [(t, lim.reserve(now=t)) for t in sorted(arrivals)]
    assert all(slot >= t for t, slot in pairs)  # nobody starts before asking
    slots = sorted(slot for _, slot in pairs)
    for i in range(len(slots) - limit):
        assert slots[i + limit] - slots[i] >= 1.0 - 1e-9


def test_penalty_blocks_every_caller() -> None:
    lim = SlidingWindowLimiter(8)
    lim.penalize(0.3)
    assert lim.reserve() >= time.monotonic() + 0.25


def test_acquire_waits_for_its_slot() -> None:
    async def go() -> list[float]:
        lim = SlidingWindowLimiter(2, 0.2, margin_s=0.0)
        t0 = time.monotonic()
        starts: list[float] = []

        async def one() -> None:
            await lim.acquire()
            starts.append(time.monotonic() - t0)

        await asyncio.gather(*(one() for _ in range(5)))
        return sorted(starts)

    starts = asyncio.run(go())
    # lower bounds only: a sleep never ends early, a loaded machine may make it end late
    assert starts[2] >= 0.19 and starts[4] >= 0.39
