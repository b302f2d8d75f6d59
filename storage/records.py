"""Record kinds: raw venue data, and the markers that tell a reader where data may be missing."""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["POSSIBLE_LOSS", "Record", "RecordKind"]


class RecordKind(enum.IntEnum):
    """Stored as one byte per record; markers carry small JSON payloads written by the ingest."""

    DATA = 0
    GAP = 1
    DISCONNECT = 2
    RECONNECT = 3
    SUBSCRIBE = 4
    DROPPED = 5
    NOTE = 6
    RESTART = 7
    """The previous run ended without closing the stream (crash, kill -9, power loss):
    records received after the last committed one and before the restart may be missing."""
    STOP = 8
    """A clean, deliberate stop of a connection or of the recorder: nothing was lost, the
    stream simply ends here until the next start (unlike DISCONNECT, a lost connection)."""


POSSIBLE_LOSS = frozenset({RecordKind.GAP, RecordKind.DISCONNECT, RecordKind.DROPPED,
                           RecordKind.RESTART})
"""Marker kinds that say messages may be missing here (a reader must also treat kinds it does
not know as possible losses)."""


class Record(NamedTuple):
    """One stored record as read back.

    ``offset`` is the absolute file offset of the payload's first byte: unique per record and
    stable, so tools can point at a record.
    """

    ts_ns: int
    kind: int
    payload: bytes
    offset: int
