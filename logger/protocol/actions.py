"""What the protocol core asks the I/O shell to do; the shell drains ``FeedState.actions``.

Actions are plain immutable tuples so the shell can pattern-match on their type and log them
as they are. They are produced only on the rare paths (acks, errors, gaps, connects), never
per ordinary data message.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple


class MarkerKind(enum.Enum):
    """Marker record kinds; each member's name is the matching ``storage.RecordKind`` name."""

    GAP = "GAP"
    DISCONNECT = "DISCONNECT"
    RECONNECT = "RECONNECT"
    SUBSCRIBE = "SUBSCRIBE"
    DROPPED = "DROPPED"
    NOTE = "NOTE"
    STOP = "STOP"


class Marker(NamedTuple):
    """Write one marker record (``kind``, JSON ``payload``) into stream (product, channel)."""

    product: str
    channel: str
    kind: MarkerKind
    payload: bytes


class Send(NamedTuple):
    """Send these frames now, in order (e.g. unsubscribe + subscribe for fresh snapshots)."""

    frames: tuple[bytes, ...]
    reason: str


class Reconnect(NamedTuple):
    """Close this connection and open it again (backoff is the shell's business)."""

    reason: str


class Acknowledged(NamedTuple):
    """The server's cumulative ack changed for ``channel``: products added and removed."""

    channel: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


class Refused(NamedTuple):
    """The server refused or left out a subscription; ``product`` is None if not named."""

    channel: str | None
    product: str | None
    reason: str


class ServerError(NamedTuple):
    """An ``error`` frame from the server (already stored raw in the connection's stream)."""

    message: str
    reason: str


class Settled(NamedTuple):
    """Every subscribe/unsubscribe sent so far is answered (or timed out).

    ``acknowledged`` is the server's view per channel; ``missing`` lists, per channel, products
    asked for that the server did not acknowledge.
    """

    acknowledged: Mapping[str, frozenset[str]]
    missing: Mapping[str, frozenset[str]]


class RetrySubscribe(NamedTuple):
    """Subscribe again to what the venue did not acknowledge: send ``frames`` through the
    paced path (they count against the venue's message limit like any other).

    ``missing`` is channel → products retried (a channel without products maps to
    ``(channel,)``); ``attempt`` is this connection's retry round, from 1.
    """

    frames: tuple[bytes, ...]
    missing: Mapping[str, tuple[str, ...]]
    attempt: int


class SubscribeRecovered(NamedTuple):
    """A retry worked: ``products`` of ``channel`` are acknowledged after ``retries``
    retries (the most any of them needed)."""

    channel: str
    products: tuple[str, ...]
    retries: int


class SubscribeGivenUp(NamedTuple):
    """``products`` of ``channel`` are still not acknowledged after every retry; a NOTE marker
    says so in each of their streams. Nothing more is tried until a reconnect or refresh."""

    channel: str
    products: tuple[str, ...]
    retries: int


Action = (Marker | Send | Reconnect | Acknowledged | Refused | ServerError | Settled
          | RetrySubscribe | SubscribeRecovered | SubscribeGivenUp)
