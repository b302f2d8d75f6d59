"""Subscribe retries: when to send again what the venue did not acknowledge, and when to stop.

Why: the venue can drop a subscribe frame (its 8 messages/s per IP limit answers an excess
frame with an error and forgets it) or leave products out of its ack without saying why. Left
alone, those products would not be recorded until the connection happens to reconnect,
possibly hours later. So after each settle (every frame answered, or the ack timeout), the
(channel, product) pairs still missing are subscribed again, on a per-connection schedule with
exponential backoff (``RetryPolicy.delay``: 2, 4, 8, 16, 32 s, capped at 60 s by default),
each pair at most ``RetryPolicy.attempts`` times. A refusal that will never change is not
retried: a product the venue names as delisted or invalid (the product refresh deals with
those), and the level2 cap on this connection (the same frame would be refused again).

``RetryState`` is sans-I/O bookkeeping only: ``FeedState`` feeds it settles, refusals and the
shell's clock, and turns its answers into frames, markers and actions. A pair is keyed
``(channel, product)``; a channel subscribed without products (``heartbeats``, ``status``) is
keyed ``(channel, channel)``, as ``FeedState`` reports it missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

Pair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one connection re-subscribes what was not acknowledged."""

    attempts: int = 5
    """Subscribe retries per (channel, product) per connection; 0 = never retry."""
    base_s: float = 2.0
    """Wait before the first retry after a settle; doubles per retry round."""
    max_s: float = 60.0
    """Longest wait between retry rounds."""
    ack_timeout_s: float = 10.0
    """Frames not answered by then are settled as missing (as the startup ack timer does)."""

    def delay(self, round_: int) -> float:
        """Seconds to wait before retry round ``round_`` (0-based)."""
        return float(min(self.max_s, self.base_s * 2.0 ** min(round_, 60)))


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """What one settle means for the retries (each pair reported once per connection)."""

    recovered: dict[str, list[str]]
    """channel → products acknowledged after at least one retry."""
    given_up: dict[str, list[str]]
    """channel → products still missing after their last retry."""
    attempts: dict[Pair, int]
    """How many retries each recovered or given-up pair had."""


class RetryState:
    """Attempts per pair, final refusals, and the connection's next retry time."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.round = 0
        self.attempts: dict[Pair, int] = {}
        self.given_up: set[Pair] = set()
        self.final_products: set[str] = set()
        self.final_channels: set[str] = set()
        self._wait: float | None = None  # armed by a settle; becomes _at on the next tick
        self._at: float | None = None

    def reset(self) -> None:
        """A new connection subscribes everything again: start from scratch."""
        self.round = 0
        self.attempts.clear()
        self.given_up.clear()
        self.final_products.clear()
        self.final_channels.clear()
        self._wait = self._at = None

    @property
    def next_at(self) -> float | None:
        """Monotonic time of the next retry round (None: none armed, or not stamped yet)."""
        return self._at

    @property
    def armed(self) -> bool:
        """A retry round is waiting (stamped or not)."""
        return self._wait is not None or self._at is not None

    def refused(self, channel: str | None, product: str | None) -> None:
        """The venue refused in words: a named product (delisted, invalid) on every channel,
        or a whole channel of this connection (the level2 cap). Neither is retried."""
        if product is not None:
            self.final_products.add(product)
        elif channel is not None:
            self.final_channels.add(channel)

    def is_final(self, pair: Pair) -> bool:
        return pair[0] in self.final_channels or pair[1] in self.final_products

    def forget(self, still_requested: Callable[[Pair], bool]) -> None:
        """A product refresh dropped some pairs: their attempts no longer matter."""
        for pair in [p for p in self.attempts if not still_requested(p)]:
            del self.attempts[pair]
            self.given_up.discard(pair)

    def settled(self, missing: Iterable[Pair]) -> SettleOutcome:
        """Every frame is answered (or timed out) and ``missing`` is what is not acknowledged.

        Pairs retried before and no longer missing are recovered; missing pairs with every
        attempt used are given up; if any retryable pair is left, the next round is armed
        (``tick`` stamps it), else the schedule starts over for whatever fails next.
        """
        missing_set = set(missing)
        recovered: dict[str, list[str]] = {}
        given_up: dict[str, list[str]] = {}
        counts: dict[Pair, int] = {}
        for pair in sorted(self.attempts):
            if pair not in missing_set:
                n = self.attempts.pop(pair)
                self.given_up.discard(pair)
                recovered.setdefault(pair[0], []).append(pair[1])
                counts[pair] = n
        retryable = False
        limit = self.policy.attempts
        if limit > 0:
            for pair in sorted(missing_set):
                if self.is_final(pair) or pair in self.given_up:
                    continue
                n = self.attempts.get(pair, 0)
                if n >= limit:
                    self.given_up.add(pair)
                    given_up.setdefault(pair[0], []).append(pair[1])
                    counts[pair] = n
                else:
                    retryable = True
        self._at = None
        if retryable:
            self._wait = self.policy.delay(self.round)
        else:
            self._wait = None
            self.round = 0
        return SettleOutcome(recovered, given_up, counts)

    def tick(self, now: float) -> bool:
        """The shell's clock: stamp an armed round; True when it is due now."""
        if self._wait is not None:
            self._at = now + self._wait
            self._wait = None
        return self._at is not None and now >= self._at

    def take(self, missing: Iterable[Pair]) -> list[Pair]:
        """Start the due round: the pairs to subscribe again (each counted one attempt)."""
        self._at = None
        out = [p for p in sorted(set(missing))
               if not self.is_final(p) and p not in self.given_up
               and self.attempts.get(p, 0) < self.policy.attempts]
        for pair in out:
            self.attempts[pair] = self.attempts.get(pair, 0) + 1
        if out:
            self.round += 1
        return out


def by_channel(pairs: Iterable[Pair]) -> Mapping[str, list[str]]:
    """Pairs grouped per channel, in order."""
    out: dict[str, list[str]] = {}
    for channel, product in pairs:
        out.setdefault(channel, []).append(product)
    return out
