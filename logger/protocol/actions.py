"""What the protocol core asks the I/O shell to do; the shell drains ``FeedState.actions``.

Actions are small frozen, slotted classes (events in the manner of h11) so the shell can
``match`` on their type and log them as they are. They are produced only on the rare paths
(acks, errors, gaps, connects), never per ordinary data message.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import orjson


class MarkerKind(enum.Enum):
    """Marker record kinds; each member's name is the matching ``storage.RecordKind`` name."""

    GAP = "GAP"
    DISCONNECT = "DISCONNECT"
    RECONNECT = "RECONNECT"
    SUBSCRIBE = "SUBSCRIBE"
    DROPPED = "DROPPED"
    NOTE = "NOTE"
    STOP = "STOP"


def marker_payload(fields: Mapping[str, object]) -> bytes:
    """A marker record's payload: one compact JSON object, keys sorted (docs/RUNTIME.md).

    The recorder's one marker encoder: the protocol core's markers (gaps, disconnects, acks)
    and the sink's DROPPED markers are written by it, so they read the same way."""
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class Marker:
    """Write one marker record (``kind``, JSON ``payload``) into stream (product, channel)."""

    product: str
    channel: str
    kind: MarkerKind
    payload: bytes


@dataclass(frozen=True, slots=True)
class Send:
    """Send these frames now, in order (e.g. unsubscribe + subscribe for fresh snapshots)."""

    frames: tuple[bytes, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Close this connection and open it again (backoff is the shell's business)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The server's cumulative ack changed for ``channel``: products added and removed."""

    channel: str
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused or left out a subscription; ``product`` is None if not named."""

    channel: str | None
    product: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` frame from the server (already stored raw in the connection's stream)."""

    message: str
    reason: str


@dataclass(frozen=True, slots=True)
class Settled:
    """Every subscribe/unsubscribe sent so far is answered (or timed out).

    ``acknowledged`` is the server's view per channel; ``missing`` lists, per channel, products
    asked for that the server did not acknowledge.
    """

    acknowledged: Mapping[str, frozenset[str]]
    missing: Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class RetrySubscribe:
    """Subscribe again to what the venue did not acknowledge: send ``frames`` through the
    paced path (they count against the venue's message limit like any other).

    ``missing`` is channel → products retried (a channel without products maps to
    ``(channel,)``); ``attempt`` is this connection's retry round, from 1.
    """

    frames: tuple[bytes, ...]
    missing: Mapping[str, tuple[str, ...]]
    attempt: int


@dataclass(frozen=True, slots=True)
class SubscribeRecovered:
    """A retry worked: ``products`` of ``channel`` are acknowledged after ``retries``
    retries (the most any of them needed)."""

    channel: str
    products: tuple[str, ...]
    retries: int


@dataclass(frozen=True, slots=True)
class SubscribeGivenUp:
    """``products`` of ``channel`` are still not acknowledged after every retry; a NOTE marker
    says so in each of their streams. Nothing more is tried until a reconnect or refresh."""

    channel: str
    products: tuple[str, ...]
    retries: int


Action = (Marker | Send | Reconnect | Acknowledged | Refused | ServerError | Settled
          | RetrySubscribe | SubscribeRecovered | SubscribeGivenUp)
