"""The venue's documented limits, as values the simulator enforces (and tests can shrink).

Defaults are Coinbase's (``PROTOCOL.md``): 30 level2 products held per Advanced Trade
connection, 8 connection opens per second per IP (excess answered with HTTP 429 "You are
connecting too fast"), subscribe within 5 s or be closed, and client messages per second per
IP: 8 on Advanced Trade ([ATrl] "unauthenticated messages"), 100 on Exchange (its current
rate-limits page). What the venue does with an excess message is not published: the answers
here (``refusal_for``) are the simulator's, as are the inbound frame cap and the slow-consumer
thresholds, and ``docs/SIMULATOR.md`` says so.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

TOO_MANY_L2 = "too many L2 streams requested in a single session"
CONNECTING_TOO_FAST = "You are connecting too fast"
#: Advanced Trade's answer to a client message over the per-IP rate (simulator's text)
AT_RATE_LIMITED = b'{"type":"error","message":"rate limit exceeded"}'
#: Exchange's: its documented disconnect reason for a client sending too many messages
EXCHANGE_RATE_LIMITED = (b'{"type":"error","message":"ErrSlowRead",'
                         b'"reason":"client sends too many messages"}')
#: documented client messages per second per IP, by dialect
MESSAGES_PER_SECOND = {"advanced_trade": 8, "exchange": 100}


@dataclass(frozen=True)
class Limits:
    """``enabled=False`` turns every check off (a venue that only streams)."""

    enabled: bool = True
    l2_products_per_conn: int = 30
    opens_per_second: int = 8
    #: client messages (subscribe, unsubscribe, anything but control frames) per second per
    #: IP, over a sliding 1 s window; None = the dialect's documented value, 0 = unchecked
    messages_per_second: int | None = None
    subscribe_timeout_s: float = 5.0
    max_inbound_bytes: int = 64 * 1024
    #: a connection whose unsent backlog exceeds this is dropped as a slow consumer
    send_buffer_bytes: int = 32 * 1024 * 1024
    #: ... or whose backlog stays above the write high-water mark this long
    slow_consumer_s: float = 10.0

    def message_rate(self, dialect: str) -> int:
        """Client messages allowed per second per IP on ``dialect`` (0: unchecked)."""
        if not self.enabled:
            return 0
        if self.messages_per_second is not None:
            return self.messages_per_second
        return MESSAGES_PER_SECOND.get(dialect, 0)


def refusal_for(dialect: str) -> tuple[bytes, bool]:
    """The error frame for a client message over the rate, and whether the socket is closed.

    Advanced Trade (simulator's choice, undocumented): the message is dropped and answered
    with an ``error`` frame, the socket stays open (as after its level2-cap refusal).
    Exchange: its docs name ``ErrSlowRead`` ("client sends too many messages") among the
    disconnect reasons and say most failures send an error message first: error, then close.
    """
    if dialect == "exchange":
        return EXCHANGE_RATE_LIMITED, True
    return AT_RATE_LIMITED, False


class OpenRateLimiter:
    """Sliding one-second window over accepted events (connection opens, client messages)."""

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
