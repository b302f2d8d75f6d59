"""Which recorded messages are the same venue message: the identity rules of `cbl-merge`.

Two recorders subscribed to the same feed each store their own copy of every message. Merging
keeps one copy, so each message needs an identity that is equal for two copies of one venue
message and different for two different messages. The rules, per dialect:

Exchange (`venue.dialect = "exchange"`): the venue sends the same bytes on every connection (no
field is per connection), so the identity is the message's bytes. Exact for everything that
carries the product's `sequence` (ticker, match, last_match, heartbeat, full channel) or a time
stamp: two different messages never have the same bytes. `level2`/`level2_batch` updates carry
no sequence, only a time (microseconds) and the changed levels; two different updates with
the same time and the same changes would be byte-identical. They are not lost: identical
messages are counted, and the merge keeps as many copies as the input that has the most.

Advanced Trade: every message carries `sequence_num`, which counts per connection, so it is
removed before comparing. Then:
- `l2_data` and `market_trades` **updates** are identified by their events alone (the
  `"events":[...]` bytes: product, side, `event_time`, price level and new quantity of every
  level; trade ids, prices, sizes and times of every trade), not by the envelope `timestamp`:
  the same book change or trade is the same message whenever it was stamped. Exact: a
  trade id is unique, and a book update names the matching engine's event time per level;
- everything else (ticker, candles, heartbeats, status, snapshots, subscription acks) is
  identified by its bytes without `sequence_num`, envelope `timestamp` included. Exact when the
  venue stamps a message once and fans it out (the simulator does; a ticker may repeat its
  content unchanged, so its content alone would not be). Where the venue stamps each
  connection's copy separately, such copies are not recognised as one message and both are
  kept: a duplicate, never a loss. Snapshots sent to each connection on subscribe are per
  connection and all kept.

Anything that is not a JSON object of the dialect (malformed frames kept in `_unrouted`) is
identified by its bytes. Identities are 16-byte BLAKE2b digests of the identity bytes (a
collision, ~2^-64 per pair, is the only way two different messages could be taken as one).
"""

from __future__ import annotations

import hashlib
import re

EXCHANGE = "exchange"
ADVANCED_TRADE = "advanced_trade"
DIALECTS = (ADVANCED_TRADE, EXCHANGE)

_SEQ_NUM = re.compile(rb',?"sequence_num":\s*-?\d+')
_EVENTS = b'"events":'
_UPDATE_EVENTS = (b'"events":[{"type":"update"', b'"events": [{"type": "update"')
_CONTENT_CHANNELS = (b'{"channel":"l2_data"', b'{"channel":"market_trades"')


def identity_bytes(dialect: str, payload: bytes) -> bytes:
    """The bytes two copies of one venue message share (see the module docstring)."""
    if dialect == EXCHANGE or not payload.startswith(b'{"channel":'):
        return payload
    if payload.startswith(_CONTENT_CHANNELS):
        at = payload.find(_EVENTS)
        if at >= 0 and payload.startswith(_UPDATE_EVENTS, at):
            channel_end = payload.index(b'"', len(b'{"channel":"'))
            return b"E" + payload[:channel_end] + b"|" + payload[at:]
    return b"B" + _SEQ_NUM.sub(b"", payload, count=1)


def identity(dialect: str, payload: bytes) -> bytes:
    """The message's identity as a 16-byte digest (what the merge compares and remembers)."""
    return hashlib.blake2b(identity_bytes(dialect, payload), digest_size=16).digest()
