"""Byte-level field extraction for routing: the hot path never parses a whole frame.

Routing needs three or four fields (channel or type, sequence number, product ids, a trade id)
out of frames that can be megabytes long (level2 snapshots). ``bench/routing.py`` measures
``orjson.loads`` of the whole frame against these scans; the scans win by a wide margin on
large frames (8-30x on Advanced Trade snapshots, far more on Exchange ones) and cost about the
same on small ones. They only trust a frame laid out the way the
venue writes it (envelope keys first, in the venue's order, object closed at the end);
anything else takes the slow path, ``parse_slow``, which parses with orjson and applies the
same rules, so a reordered but valid frame is routed the same and a broken one is unrouted.

Inside a JSON document an unescaped ``"`` can only delimit a string, so a needle such as
``"product_id":"`` cannot match inside a string value: it only finds real keys.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

PRODUCT_KEY = b'"product_id":"'
PRODUCT_KEY_LEN = len(PRODUCT_KEY)

AT_PREFIX = b'{"channel":"'
"""Advanced Trade frames as the venue writes them start with the channel ..."""
AT_PREFIX_LEN = len(AT_PREFIX)
SEQ_KEY = b'"sequence_num":'
"""... and carry ``sequence_num`` (before ``events``) and end with the events list: ``]}``."""
SEQ_KEY_LEN = len(SEQ_KEY)

EX_HEAD = b'{"type":"'
EX_HEAD_LEN = len(EX_HEAD)

_INT = re.compile(rb'[ \t]*"?(-?\d{1,19})')

INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
"""Numbers outside int64 are not taken from the wire: marker payloads must stay encodable."""


def int_after(raw: bytes, key: bytes, start: int) -> int | None:
    """The integer (bare or quoted) following the first ``key`` at or after ``start``."""
    i = raw.find(key, start)
    if i < 0:
        return None
    i += len(key)
    k = raw.find(b",", i)
    try:
        value = int(raw[i:k])  # the usual case: a bare integer followed by more keys
    except ValueError:
        m = _INT.match(raw, i)
        if m is None:
            return None
        value = int(m.group(1))
    return value if INT_MIN <= value <= INT_MAX else None


def only_product(raw: bytes, after: int, needle: bytes) -> bool:
    """True if every ``product_id`` after offset ``after`` is the one ``needle`` spells.

    ``needle`` is ``"product_id":"<id>"``. Usually there is no other key at all and one
    ``find`` settles it; otherwise two C-level counts compare all occurrences at once.
    """
    k = raw.find(PRODUCT_KEY, after)
    if k < 0:
        return True
    return raw.count(PRODUCT_KEY, k) == raw.count(needle, k)


def product_needle(product: bytes) -> bytes:
    """The byte pattern of one exact ``product_id`` key/value pair."""
    return PRODUCT_KEY + product + b'"'


class Parsed(NamedTuple):
    """Routing fields of a frame parsed the slow way (``None`` where absent or mistyped)."""

    channel: str | None
    """Advanced Trade ``channel`` or Exchange ``type``."""
    seq: int | None
    """Advanced Trade ``sequence_num`` or Exchange ``sequence``."""
    products: tuple[str, ...]
    """Distinct product ids the frame names, in order of appearance."""
    obj: dict[str, Any]


def _products_of(value: Any, found: dict[str, None], depth: int) -> None:
    if depth > 4:
        return
    if isinstance(value, dict):
        pid = value.get("product_id")
        if isinstance(pid, str):
            found[pid] = None
        for item in value.values():
            if isinstance(item, list | dict):
                _products_of(item, found, depth + 1)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                _products_of(item, found, depth + 1)


def parse_slow(raw: bytes, channel_key: str, seq_key: str) -> Parsed | None:
    """Parse ``raw`` fully with orjson; None if it is not JSON at all.

    Valid JSON that is not an object (e.g. Exchange level3 arrays) yields empty fields.

    Product ids are collected from the top level and from events/arrays nested up to four
    levels (tickers, trades, candles and updates inside ``events``).
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return Parsed(None, None, (), {})
    channel = obj.get(channel_key)
    seq = obj.get(seq_key)
    found: dict[str, None] = {}
    pid = obj.get("product_id")
    if isinstance(pid, str):
        found[pid] = None
    events = obj.get("events")
    if isinstance(events, list):
        _products_of(events, found, 0)
    return Parsed(
        channel if isinstance(channel, str) else None,
        seq if isinstance(seq, int) and not isinstance(seq, bool) and INT_MIN <= seq <= INT_MAX
        else None,
        tuple(found),
        obj,
    )
