"""The venue-limit pacing: concurrent reservations never more than N per window, first come
first served; the startup schedule (market data of every connection before any keepalive);
the gate over actual send instants; the data phase keepalive frames wait for."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logger.protocol import ADVANCED_TRADE, FeedState
from logger.protocol.dialects import split_opening_frames
from logger.ratelimit import DataPhase, SlidingWindowLimiter, plan_startup
from logger.shard import plan_connections
from tools.venue.generator import default_products


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


# ---------------------------------------------------------------- the startup schedule


def _counts_400() -> list[tuple[int, int]]:
    """(data frames, keepalive frames) per connection of the real 400-product AT plan."""
    ids = default_products(400)
    plan = plan_connections(ids, ADVANCED_TRADE.channels, ADVANCED_TRADE)
    counts = []
    for i, shard in enumerate(plan):
        data, keep = split_opening_frames(ADVANCED_TRADE,
                                          FeedState(ADVANCED_TRADE, str(i), shard).requested)
        counts.append((len(data), len(keep)))
    return counts


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times)),
               default=0)


def test_400_products_data_frames_fill_the_first_windows_keepalive_after() -> None:
    counts = _counts_400()
    assert counts == [(5, 1)] + [(1, 1)] * 14  # 19 data frames, 15 keepalive: 34
    opens, messages = SlidingWindowLimiter(8, 1.0, 0.0), SlidingWindowLimiter(8, 1.0, 0.0)
    schedule = plan_startup(counts, opens, messages, now=50.0)
    data = [t for s in schedule for t in s.frames[:s.data_frames]]
    keep = [t for s in schedule for t in s.frames[s.data_frames:]]
    assert len(data) == 19 and len(keep) == 15
    # 19 data frames in ceil(19 / 8) = 3 windows: at 0, 1 and 2 s
    assert sorted(data) == [50.0] * 8 + [51.0] * 8 + [52.0] * 3
    assert max(data) <= min(keep)  # every keepalive slot after every data slot
    assert sorted(keep) == [52.0] * 5 + [53.0] * 8 + [54.0] * 2  # the slots left, densely
    every = data + keep
    assert _max_in_window(every, 1.0) == 8  # never more than 8 messages in any 1 s
    assert _max_in_window([s.open_at for s in schedule], 1.0) <= 8
    for s in schedule:  # each socket opens with its first subscribe, frames in order
        assert s.frames[0] == s.open_at
        assert list(s.frames) == sorted(s.frames)
    # the 15 connections open as 8 + 7 (the first frames go first), none waits for data
    assert sorted(s.open_at for s in schedule) == [50.0] * 8 + [51.0] * 7


def test_schedule_keeps_the_margin_and_a_connection_without_data_opens_with_keepalive() -> None:
    opens, messages = SlidingWindowLimiter(8), SlidingWindowLimiter(8)  # 1.02 s windows
    schedule = plan_startup([(0, 1), (2, 1), (1, 0)], opens, messages, now=0.0)
    assert [s.frames for s in schedule] == [(0.0,), (0.0, 0.0, 0.0), (0.0,)]
    assert [s.data_frames for s in schedule] == [0, 2, 1]
    more = plan_startup([(1, 1)] * 3, opens, messages, now=0.5)
    # 5 of the first window's 8 slots were taken: 3 left at t=0.5, then 1.02 s after t=0
    assert [s.frames for s in more] == [(0.5, 1.02), (0.5, 1.02), (0.5, 1.02)]


def test_reservations_are_first_come_first_served() -> None:
    lim = SlidingWindowLimiter(8, 1.0, margin_s=0.0)
    assert lim.reserve(now=10.0) == 10.0
    assert lim.earliest(now=5.0) == 10.0  # a later caller never gets an earlier slot
    assert lim.reserve(now=5.0) == 10.0
    with pytest.raises(ValueError):
        plan_startup([(0, 0)], SlidingWindowLimiter(8), lim, now=0.0)


def test_gate_over_actual_instants() -> None:
    lim = SlidingWindowLimiter(2, 1.0, margin_s=0.0)
    assert lim.gate_delay(0.0) == 0.0
    lim.record(0.3)
    lim.record(0.5)
    assert lim.gate_delay(0.6) == pytest.approx(0.7)  # the 3rd waits for 0.3 + 1.0
    assert lim.gate_delay(1.3) == 0.0
    lim.record(1.3)
    assert lim.gate_delay(1.3) == pytest.approx(0.2)  # now 0.5 + 1.0


def test_data_phase_releases_keepalive_when_every_data_frame_left() -> None:
    async def go() -> tuple[bool, bool, bool]:
        phase = DataPhase(3, deadline=time.monotonic() + 30)
        waiter = asyncio.create_task(phase.wait())
        phase.sent()
        phase.sent(1)
        await asyncio.sleep(0.01)
        before = waiter.done()
        phase.sent()  # the last one (or given up)
        await asyncio.wait_for(waiter, 5)
        late = DataPhase(1, deadline=time.monotonic() + 0.05)  # never counted off
        await asyncio.wait_for(late.wait(), 5)  # the deadline bounds the wait
        return before, waiter.done(), DataPhase(0, 0.0).left == 0
    before, after, empty = asyncio.run(go())
    assert not before and after and empty
