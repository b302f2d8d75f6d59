"""When a connection may open and send: its part of the venue's per-IP limits.

Why a unit of its own: pacing is the one part of a connection that is about time rather than
bytes. The venue allows 8 opens/s and 8 messages/s per IP, and closes a connection that has
not subscribed within 5 s, so the socket opens only when a subscribe frame can follow at
once, and every frame leaves at a slot reserved on the shared message limiter
(``logger.ratelimit``). ``Connection`` owns one ``Pacer`` and asks it to wait for the open and
to send frames; the pool plans the first open of every connection at once (``plan_opening``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

from picows import WSMsgType, WSTransport

from logger.ratelimit import DataPhase, OpeningSlots, SlidingWindowLimiter, plan_startup

log = logging.getLogger("logger.connection")

_TEXT = WSMsgType.TEXT


class Backoff:
    """When a connection that went down opens again: exponential backoff (doubling from
    ``initial_s``, capped at ``max_s``) with ± ``jitter`` random spread, so connections that
    fell together do not all come back in the same instant."""

    def __init__(self, initial_s: float, max_s: float, jitter: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.attempt = 0

    def next(self) -> float:
        """Seconds to wait before the next attempt; each call counts one attempt."""
        d = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return float(max(0.0, d * (1.0 + random.uniform(-self.jitter, self.jitter))))

    def reset(self) -> None:
        """A connection that stayed up long enough: the next backoff starts from the beginning."""
        self.attempt = 0


class Pacer:
    """Open and message pacing of one connection (see module docstring)."""

    def __init__(self, conn_id: str, limiter: SlidingWindowLimiter,
                 message_limiter: SlidingWindowLimiter | None,
                 stopping: Callable[[], bool],
                 transport: Callable[[], WSTransport | None]) -> None:
        self.conn_id = conn_id
        self.limiter = limiter
        self.message_limiter = message_limiter
        self._stopping = stopping
        self._transport = transport  # the connection's current socket (None between them)
        self._tasks: set[asyncio.Task[None]] = set()
        self._planned: OpeningSlots | None = None
        """The pool's schedule for the first connection attempt; reconnects reserve their
        own slots."""
        self._phase: DataPhase | None = None
        """The startup's data phase the keepalive frames wait for (``plan_opening``)."""

    def plan_opening(self, slots: OpeningSlots, phase: DataPhase | None) -> None:
        """Use ``slots`` (from ``ratelimit.plan_startup``) for the first connection attempt."""
        self._planned = slots
        self._phase = phase

    async def await_open(self, opening_counts: tuple[int, int]) -> OpeningSlots | None:
        """Take an open slot and one message slot per opening frame; sleep until the open.

        The open and the first subscribe frame share one instant, so the socket opens only
        when a subscribe can follow at once (the venue closes a connection that has not
        subscribed within 5 s) and concurrent connections are paced by the limits alone.
        Market-data frames take the first slots, keepalive the last ones. At startup the
        pool has planned this for every connection at once (``Pool.start``).
        """
        planned, self._planned = self._planned, None
        if planned is None and self.message_limiter is not None:
            planned = plan_startup([opening_counts], self.limiter,
                                   self.message_limiter, time.monotonic())[0]
        await self.sleep_until(planned.open_at if planned is not None
                               else self.limiter.reserve())
        # the window over completed opens (a slow handshake pushes the next window's opens)
        while not self._stopping() and \
                (delay := self.limiter.gate_delay(time.monotonic())) > 0:
            await asyncio.sleep(delay)
        return planned

    def give_up_phase(self, frames: int) -> None:
        """This attempt will not send ``frames`` startup data frames: stop waiting for them."""
        phase, self._phase = self._phase, None
        if phase is not None:
            phase.sent(frames)

    async def sleep_until(self, when: float) -> None:
        while not self._stopping():
            delay = when - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(min(delay, 0.25))

    def send_opening(self, transport: WSTransport, frames: list[bytes],
                     opening: OpeningSlots | None) -> None:
        """Send a new socket's subscribe frames at the slots ``await_open`` reserved (or new
        ones, if the plan changed meanwhile: a refresh)."""
        phase, self._phase = self._phase, None
        if opening is not None and len(opening.frames) == len(frames):
            self._spawn(frames, list(opening.frames), opening.data_frames, phase)
            return
        if phase is not None and opening is not None:
            phase.sent(opening.data_frames)
        if self.message_limiter is not None:
            self._spawn(frames, [self.message_limiter.reserve() for _ in frames])
        else:
            for frame in frames:
                transport.send(_TEXT, frame)

    def send(self, frames: Sequence[bytes], reason: str) -> None:
        """Send frames through the shared message limiter (resubscribe, refresh)."""
        if not frames:
            return
        if self.message_limiter is None:
            t = self._transport()
            if t is not None and not t.is_disconnected:
                for f in frames:
                    t.send(_TEXT, f)
            return
        self._spawn(list(frames), [self.message_limiter.reserve() for _ in frames])
        log.info("event=send conn=%s frames=%d reason=%r", self.conn_id, len(frames), reason)

    def _spawn(self, frames: list[bytes], slots: list[float], data_frames: int = 0,
               phase: DataPhase | None = None) -> None:
        """Send ``frames`` at their reserved ``slots`` in a task the pacer keeps a reference
        to (the loop holds tasks only weakly)."""
        task = asyncio.get_running_loop().create_task(
            self._send_at(frames, slots, data_frames, phase))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_at(self, frames: list[bytes], slots: list[float], data_frames: int = 0,
                       phase: DataPhase | None = None) -> None:
        """Send each frame at its slot, in order. With a startup ``phase``, the first
        ``data_frames`` are counted off it as they leave, and the frames after them (the
        keepalive; after the first frame in any case) wait until every connection's data
        frames have left."""
        transport = self._transport()
        lim = self.message_limiter
        counted = 0
        try:
            for i, (f, at) in enumerate(zip(frames, slots, strict=True)):
                if phase is not None and i >= max(1, data_frames):
                    await phase.wait()
                await self.sleep_until(at)
                if lim is not None:  # late frames must not bunch up with punctual ones
                    while (delay := lim.gate_delay(time.monotonic())) > 0:
                        await asyncio.sleep(delay)
                if transport is None or transport.is_disconnected or \
                        self._transport() is not transport:
                    return  # the reconnect resubscribes everything anyway
                transport.send(_TEXT, f)
                if lim is not None:
                    lim.record(time.monotonic())
                if phase is not None and i < data_frames:
                    phase.sent()
                    counted += 1
        finally:
            if phase is not None:
                phase.sent(data_frames - counted)
