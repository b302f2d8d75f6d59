"""The venue's documented limits, as values the simulator enforces (and tests can shrink).

Defaults are Coinbase's (``PROTOCOL.md``): 30 level2 products held per Advanced Trade
connection, 8 connection opens per second per IP (excess answered with HTTP 429 "You are
connecting too fast"), subscribe within 5 s or be closed. The inbound frame cap and the
slow-consumer thresholds are not published; the values here are the simulator's and say so in
``docs/SIMULATOR.md``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

TOO_MANY_L2 = "too many L2 streams requested in a single session"
CONNECTING_TOO_FAST = "You are connecting too fast"


@dataclass(frozen=True)
class Limits:
    """``enabled=False`` turns every check off (a venue that only streams)."""

    enabled: bool = True
    l2_products_per_conn: int = 30
    opens_per_second: int = 8
    subscribe_timeout_s: float = 5.0
    max_inbound_bytes: int = 64 * 1024
    #: a connection whose unsent backlog exceeds this is dropped as a slow consumer
    send_buffer_bytes: int = 32 * 1024 * 1024
    #: ... or whose backlog stays above the write high-water mark this long
    slow_consumer_s: float = 10.0


class OpenRateLimiter:
    """Sliding one-second window over accepted connection opens."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._opens: collections.deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        """Record an open at `now` (monotonic seconds) if the window has room."""
        opens = self._opens
        while opens and now - opens[0] >= 1.0:
            opens.popleft()
        if len(opens) >= self.per_second:
            return False
        opens.append(now)
        return True
