"""The Advanced Trade router: one frame in, its stream out; sequence gaps become markers.

Advanced Trade numbers every frame of a connection (``sequence_num``), across channels and
products, so a gap says "something of this connection may be missing" and is marked on every
stream it feeds, then recovered by resubscribing (``FeedState.recover``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from logger.protocol.acks import parse_at_ack
from logger.protocol.actions import Marker, MarkerKind, marker_payload
from logger.protocol.names import SUBSCRIPTIONS_CHANNEL
from logger.protocol.native import AtHotPath, use_compiled
from logger.protocol.router import (
    AT_PREFIX,
    AT_PREFIX_LEN,
    INT_MAX,
    PRODUCT_KEY,
    PRODUCT_KEY_LEN,
    SEQ_KEY,
    SEQ_KEY_LEN,
    only_product,
    parse_slow,
    product_needle,
)
from logger.protocol.routes import Entry, Route, RouteTable, Wire
from logger.protocol.sequence import SeqGap, SequenceTracker

if TYPE_CHECKING:
    from logger.protocol.feed import FeedState

_SNAPSHOT_BYTES = 16384
"""Frames above this are scanned without copying (``_after_seq``) rather than split."""



class AdvancedTradeRouter:
    """Routes Advanced Trade frames of one connection (``Router``).

    ``on_message`` (built by ``_hot_path``) has fast paths for frames in the venue's layout
    whose ``sequence_num`` is the expected one; everything else goes through ``full``. Per
    ``l2_data`` frame (the bulk of the feed) it costs one C call per step and parses no
    number: the prefix, the closing bytes, the expected ``"sequence_num":N,`` bytes
    (``tracker.needle``) where they were in the previous frame (else one ``find`` of the key),
    then one ``split`` on ``"product_id":"``, which yields the id and tells whether it is the
    only one (and after the number) in a single pass: cheaper than the three ``find`` calls it
    replaces. In the venue's layout ``sequence_num`` occurs once, before ``events``, so the
    results are those of ``full``; anything else (several product ids, an unknown one, a gap)
    is decided by the same code as there. A property test also feeds reordered keys, which
    take the full path. Tuples are indexed there (``entry[0]`` is ``entry.route``, ``wire[1]``
    ``wire.shared``): cheaper than attribute access.
    """

    multi_streams = True

    def __init__(self, feed: FeedState, table: RouteTable) -> None:
        self._feed = feed
        self._table = table
        self.seq = SequenceTracker()
        self._late_expected = 0
        dialect = feed.dialect
        self._wires: dict[bytes, Wire] = {}
        for wire, channel in dialect.wire_channels.items():
            shared = channel in dialect.shared_channels or channel == SUBSCRIPTIONS_CHANNEL
            self._wires[wire.encode()] = Wire(channel, shared, table.known.get(channel, {}))
        self.on_message: Callable[[bytes], Route] = (
            self._compiled_hot_path() if use_compiled() else self._hot_path())

    def on_connect(self) -> None:
        self.seq.reset()

    def disconnect_fields(self) -> dict[str, object]:
        return {"last_sequence_num": self.seq.expected - 1}

    def after_disconnect(self) -> None:
        """Nothing is owed: a sequence gap is only seen on the next frame."""

    def _hot_path(self) -> Callable[[bytes], Route]:
        """The per-frame route function (one replaceable callable: the class docstring says
        how its fast paths decide; anything else goes to ``full``)."""
        counters = self._feed.counters
        tracker = self.seq
        at_wire = self._wires
        l2_wire = at_wire[b"l2_data"]
        l2_known = l2_wire.known  # the level2 routes, mutated in place by RouteTable.add
        full, after_seq = self.full, self._after_seq
        l2_head = b'{"channel":"l2_data",'
        l2_head_len = len(l2_head)
        seq_key, pkey = SEQ_KEY, PRODUCT_KEY
        prefix, prefix_len = AT_PREFIX, AT_PREFIX_LEN
        at = l2_head_len  # where the l2_data sequence key was last time (timestamps keep size)

        def on_at(raw: bytes) -> Route:
            nonlocal at
            counters.messages += 1
            if raw.startswith(l2_head):
                if raw[-1] == 125 and raw[-2] == 93:  # ends with ]} (cheaper than endswith)
                    needle = tracker.needle
                    if not raw.startswith(needle, at):
                        i = raw.find(seq_key, l2_head_len)
                        if i < 0 or not raw.startswith(needle, i):
                            return full(raw)
                        at = i
                    e = tracker.expected + 1
                    tracker.expected = e
                    tracker.needle = b'"sequence_num":%d,' % e if e < 1 << 63 else b"\x00"
                    k = at + len(needle)
                    if len(raw) > _SNAPSHOT_BYTES:  # a snapshot: scan it without copying
                        return after_seq(raw, k - 1, l2_wire)
                    parts = raw.split(pkey)  # one C pass: the id, and whether it is alone
                    if len(parts) == 2 and len(parts[0]) >= k:
                        entry = l2_known.get(parts[1].partition(b'"')[0])
                        if entry is not None:
                            return entry[0]
                    return after_seq(raw, k - 1, l2_wire)
            elif raw.startswith(prefix) and raw[-1] == 125 and raw[-2] == 93:
                j = raw.find(b'"', prefix_len)
                wire = at_wire.get(raw[prefix_len:j])
                if wire is not None:
                    i = raw.find(seq_key, j)
                    needle = tracker.needle
                    if i >= 0 and raw.startswith(needle, i):
                        e = tracker.expected + 1
                        tracker.expected = e
                        tracker.needle = b'"sequence_num":%d,' % e if e < 1 << 63 else b"\x00"
                        k = i + len(needle)
                        if not wire[1] and len(raw) <= _SNAPSHOT_BYTES:  # ticker, trades, ...
                            parts = raw.split(pkey)
                            if len(parts) == 2 and len(parts[0]) >= k:
                                entry = wire[2].get(parts[1].partition(b'"')[0])
                                if entry is not None:
                                    return entry[0]
                        return after_seq(raw, k - 1, wire)
            return full(raw)

        return on_at

    def _compiled_hot_path(self) -> Callable[[bytes], Route]:
        """``_hot_path`` compiled (``native``): the same decisions and side effects on the same
        objects, several times cheaper per frame (bench/routing.py)."""
        return AtHotPath(self._feed.counters, self.seq, self._wires,
                         self._wires[b"l2_data"], self.full, self._after_seq)

    def _after_seq(self, raw: bytes, k: int, wire: Wire) -> Route:
        """Route an in-layout frame whose sequence number ended at offset ``k``."""
        if wire.shared:
            return self._shared(wire.channel, raw)
        p = raw.find(PRODUCT_KEY, k)
        if p < 0:
            return self._table.shared(wire.channel)
        p += PRODUCT_KEY_LEN  # inline of _product_at: this path is warm (snapshots, batches)
        q = raw.find(b'"', p)
        pid = raw[p:q]
        entry = wire.known.get(pid)
        if entry is not None and raw.find(PRODUCT_KEY, q) < 0:
            return entry.route
        return self._product(raw, q, wire.channel, pid, entry)

    def _shared(self, channel: str, raw: bytes) -> Route:
        route = self._table.shared(channel)
        if channel == SUBSCRIPTIONS_CHANNEL:
            self._ack(raw)
        return route

    def _product_at(self, raw: bytes, p: int, wire: Wire) -> Route:
        """The stream of a frame whose first ``product_id`` key starts at ``p``."""
        p += PRODUCT_KEY_LEN
        q = raw.find(b'"', p)
        pid = raw[p:q]
        entry = wire.known.get(pid)
        if entry is not None and raw.find(PRODUCT_KEY, q) < 0:
            return entry.route
        return self._product(raw, q, wire.channel, pid, entry)

    def full(self, raw: bytes) -> Route:
        """Every Advanced Trade frame the fast paths decline (any layout, any sequence)."""
        # envelope prefix, channel, sequence_num, first product id.
        if not (raw.startswith(AT_PREFIX) and raw.endswith(b"]}")):
            return self._slow(raw)
        j = raw.find(b'"', AT_PREFIX_LEN)
        i = raw.find(SEQ_KEY, j)
        if i < 0:
            return self._slow(raw)
        i += SEQ_KEY_LEN
        k = raw.find(b",", i)
        try:
            seq = int(raw[i:k])
        except ValueError:
            return self._slow(raw)
        if not 0 <= seq <= INT_MAX:
            return self._slow(raw)
        tracker = self.seq
        late = False
        if seq == tracker.expected:
            tracker.set_expected(seq + 1)
        else:
            late = self._seq_anomaly(seq)
        wire = self._wires.get(raw[AT_PREFIX_LEN:j])
        if wire is None:
            route = self._table.unroutable(unknown=True)
        elif wire.shared:
            route = self._shared(wire.channel, raw)
        else:
            p = raw.find(PRODUCT_KEY, k)
            route = (self._table.shared(wire.channel) if p < 0
                     else self._product_at(raw, p, wire))
        if late:
            self._note_late(route, seq)
        return route

    def _product(self, raw: bytes, end: int, channel: str, pid: bytes,
                 entry: Entry | None) -> Route:
        """Several product ids in the frame, or an unknown one (the uncommon cases)."""
        if not only_product(raw, end, entry.needle if entry is not None else product_needle(pid)):
            return self._table.multi(channel)
        if entry is not None:
            return entry.route
        return self._table.reject(pid)

    def _slow(self, raw: bytes) -> Route:
        parsed = parse_slow(raw, "channel", "sequence_num")
        table = self._table
        if parsed is None:
            return table.unroutable(malformed=True)
        if parsed.channel is None:
            if parsed.obj.get("type") == "error":
                self._feed.error_frame(parsed.obj)
                return table.error
            return table.unroutable(unknown=True)
        late = parsed.seq is not None and self._observe(parsed.seq)
        wire = self._wires.get(parsed.channel.encode())
        if wire is None:
            route = table.unroutable(unknown=True)
        elif wire.shared:
            route = table.shared(wire.channel)
            if wire.channel == SUBSCRIPTIONS_CHANNEL:
                self._ack_obj(parsed.obj)
        else:
            route = table.products(wire.channel, parsed.products)
        if late and parsed.seq is not None:
            self._note_late(route, parsed.seq)
        return route

    def _observe(self, seq: int) -> bool:
        """Advance past ``seq``; True if the frame is late (a gap is marked, never late)."""
        tracker = self.seq
        if seq == tracker.expected:
            tracker.set_expected(seq + 1)
            return False
        return self._seq_anomaly(seq)

    def _seq_anomaly(self, seq: int) -> bool:
        """Handle an out-of-line ``sequence_num``; True if the frame is late (not a gap)."""
        expected = self.seq.expected
        result = self.seq.observe(seq)
        feed = self._feed
        if result is False:
            feed.counters.late += 1
            self._late_expected = expected
            return True
        if isinstance(result, SeqGap):
            missing = result.last - result.first + 1
            feed.counters.gaps += 1
            feed.counters.missing += missing
            feed.mark_all(MarkerKind.GAP, marker_payload({
                "event": "gap", "conn": feed.conn_id, "dialect": feed.dialect.name,
                "scope": "connection", "first_missing_sequence_num": result.first,
                "last_missing_sequence_num": result.last, "missing_frames": missing,
                "note": "the lost frames may belong to any channel and product of this"
                        " connection",
            }))
            feed.recover(f"sequence_num gap: {missing} frame(s) missing before {seq}")
        return False

    def _note_late(self, route: Route, seq: int) -> None:
        self._feed.actions.append(Marker(route[0], route[1], MarkerKind.NOTE, marker_payload({
            "event": "late", "conn": self._feed.conn_id, "sequence_num": seq,
            "expected_sequence_num": self._late_expected,
            "note": "frame arrived after a later one: duplicate or out of order",
        })))

    def _ack(self, raw: bytes) -> None:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._feed.counters.malformed += 1
            return
        if isinstance(obj, dict):
            self._ack_obj(obj)

    def _ack_obj(self, obj: dict[str, Any]) -> None:
        self._feed.apply_ack(parse_at_ack(obj, self._feed.dialect.ack_aliases))
