"""Per-connection protocol state: routes each raw frame to its stream and tracks health.

``FeedState`` is sans-I/O. The shell (``logger/connection.py``) calls ``on_connect``, sends
``opening_frames()``, passes every received frame to ``on_message`` (which returns the
(product, channel) stream to store the frame in, raw and unchanged), calls ``on_disconnect``
when the socket dies, and drains ``actions`` (markers to write, frames to send, reconnects,
ack/refusal reports) after each call. Nothing here raises on wire input: whatever cannot be
routed goes to ``(_conn<id>, _unrouted)`` and is counted.

Routing of product data uses the subscribe-channel name (``l2_data`` → ``level2``) and only
products this connection asked for; any other product id goes to ``_unrouted``, so a hostile or
confused server cannot create streams at will.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from logger.protocol.acks import (
    classify_error,
    is_rate_limited,
    parse_at_ack,
    parse_exchange_ack,
)
from logger.protocol.actions import (
    Acknowledged,
    Action,
    Marker,
    MarkerKind,
    Reconnect,
    Refused,
    RetrySubscribe,
    Send,
    Settled,
    SubscribeGivenUp,
    SubscribeRecovered,
)
from logger.protocol.dialects import (
    ADVANCED_TRADE,
    Dialect,
    ProductsByChannel,
    split_opening_frames,
)
from logger.protocol.names import (
    ERROR_CHANNEL,
    MULTI,
    SUBSCRIPTIONS_CHANNEL,
    UNROUTED,
    check_product_id,
    conn_stream,
    is_valid_name,
    is_valid_product_id,
)
from logger.protocol.retry import Pair, RetryPolicy, RetryState, by_channel
from logger.protocol.router import (
    AT_PREFIX,
    AT_PREFIX_LEN,
    EX_HEAD,
    EX_HEAD_LEN,
    INT_MAX,
    INT_MIN,
    PRODUCT_KEY,
    PRODUCT_KEY_LEN,
    SEQ_KEY,
    SEQ_KEY_LEN,
    int_after,
    only_product,
    parse_slow,
    product_needle,
)
from logger.protocol.sequence import SeqGap, SequenceTracker, TradeGap, TradeIdTracker

Route = tuple[str, str]
GapPolicy = Literal["resubscribe", "reconnect"]

AT_RESUBSCRIBE_CHANNELS = ("level2", "market_trades")
"""Advanced Trade channels re-subscribed after a sequence gap: level2 for a fresh book
snapshot, market_trades because its snapshot repeats recent trades that may have been lost.
The other channels send full state in every message; the next one supersedes a lost one."""

# Exchange message type codes.
(_EX_PLAIN, _EX_MATCH, _EX_LAST_MATCH, _EX_HEARTBEAT, _EX_TICKER,
 _EX_SHARED, _EX_ACK, _EX_ERROR) = range(8)
_EX_TYPES: Mapping[bytes, tuple[int, str]] = {
    b"l2update": (_EX_PLAIN, "level2_batch"),
    b"snapshot": (_EX_PLAIN, "level2_batch"),
    b"match": (_EX_MATCH, "matches"),
    b"last_match": (_EX_LAST_MATCH, "matches"),
    b"ticker": (_EX_TICKER, "ticker"),
    b"heartbeat": (_EX_HEARTBEAT, "heartbeat"),
    b"auction": (_EX_PLAIN, "auctionfeed"),
    b"status": (_EX_SHARED, "status"),
    b"subscriptions": (_EX_ACK, SUBSCRIPTIONS_CHANNEL),
    b"error": (_EX_ERROR, ERROR_CHANNEL),
}
_EX_INT_KEY: Mapping[int, bytes] = {
    _EX_MATCH: b'"trade_id":',
    _EX_LAST_MATCH: b'"trade_id":',
    _EX_HEARTBEAT: b'"last_trade_id":',
    _EX_TICKER: b'"trade_id":',
}
_EX_INT_FIELD: Mapping[int, str] = {
    _EX_MATCH: "trade_id", _EX_LAST_MATCH: "trade_id", _EX_HEARTBEAT: "last_trade_id",
    _EX_TICKER: "trade_id",
}

_Entry = tuple[Route, bytes]
"""A routable product on one channel: its stream and its exact ``product_id`` needle."""


@dataclass(slots=True)
class FeedCounters:
    """Monotonic counters of one connection's protocol health (read by metrics)."""

    messages: int = 0
    unrouted: int = 0
    malformed: int = 0
    unknown: int = 0
    unexpected_product: int = 0
    invalid_product: int = 0
    gaps: int = 0
    missing: int = 0
    late: int = 0
    acks: int = 0
    errors: int = 0
    refused: int = 0
    resubscribes: int = 0
    subscribe_retries: int = 0
    """Retry rounds sent for subscriptions the venue did not acknowledge."""
    subscribe_recovered: int = 0
    """(channel, product) pairs acknowledged after a retry."""
    subscribe_given_up: int = 0
    """(channel, product) pairs still not acknowledged after every retry."""
    reconnects_requested: int = 0
    connects: int = 0
    disconnects: int = 0


def _dumps(obj: Mapping[str, object]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


class FeedState:
    """Protocol state of one WebSocket connection of either dialect (see module docstring)."""

    def __init__(
        self,
        dialect: Dialect,
        conn_id: str,
        products_by_channel: ProductsByChannel,
        *,
        gap_policy: GapPolicy = "resubscribe",
        multi_name: str = MULTI,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.dialect = dialect
        self.conn_id = conn_id
        self.gap_policy: GapPolicy = gap_policy
        self.actions: list[Action] = []
        self.counters = FeedCounters()
        self.acknowledged: dict[str, frozenset[str]] = {}
        self._at = dialect.name == ADVANCED_TRADE.name
        self._conn = conn_stream(conn_id)
        self._unrouted: Route = (self._conn, UNROUTED)
        self._error_route: Route = (self._conn, ERROR_CHANNEL)
        self._subs_route: Route = (self._conn, SUBSCRIPTIONS_CHANNEL)
        self._shared: dict[str, Route] = {}
        self._multi: dict[str, Route] = {}
        self._multi_name = multi_name  # ``_multi``, or ``_multi-w<i>`` in worker i
        self._known: dict[str, dict[bytes, _Entry]] = {}
        self._requested: dict[str, tuple[str, ...]] = {}
        self._reported_missing: set[tuple[str, str]] = set()
        self._pending = 0
        self._waiting_since: float | None = None  # poll's time when frames went pending
        self._retry = RetryState(retry)
        self._resubscribing = False
        self._seq = SequenceTracker()
        self._late_expected = 0
        self._trades = TradeIdTracker()
        self._ticker_trade: dict[bytes, int] = {}
        for channel in dialect.channels:
            if channel not in dialect.shared_channels:
                self._known[channel] = {}
        self._ex_plain: dict[bytes, dict[bytes, _Entry]] = {
            kind: self._known[channel] for kind, (code, channel) in _EX_TYPES.items()
            if code == _EX_PLAIN and channel in self._known}
        """Exchange types routed by product alone (no checks): type → that channel's routes."""
        self._at_wire: dict[bytes, tuple[str, bool, dict[bytes, _Entry]]] = {}
        if self._at:
            for wire, channel in dialect.wire_channels.items():
                shared = channel in dialect.shared_channels or channel == SUBSCRIPTIONS_CHANNEL
                self._at_wire[wire.encode()] = (channel, shared, self._known.get(channel, {}))
        self._set_requested(self._normalise(products_by_channel))
        self.on_message: Callable[[bytes], Route] = (
            self._at_router() if self._at else self._ex_router())
        """``on_message(raw)``: the (product, channel) stream for ``raw``; side effects go to
        ``actions``. A closure over this connection's state (see ``_at_router``), not a
        method: the hot path then reads locals instead of attributes and globals."""

    # ------------------------------------------------------------------ subscriptions

    def _normalise(self, products_by_channel: ProductsByChannel) -> dict[str, tuple[str, ...]]:
        """Validate channels and product ids; add the keepalive channel if it is missing."""
        dialect = self.dialect
        out: dict[str, tuple[str, ...]] = {}
        for channel, products in products_by_channel.items():
            if channel not in dialect.channels:
                raise ValueError(f"{dialect.name}: unknown channel {channel!r}")
            out[channel] = tuple(dict.fromkeys(check_product_id(p) for p in products))
        cap = dialect.level2_cap
        l2 = out.get(dialect.level2_channel, ())
        if cap is not None and len(l2) > cap:
            raise ValueError(
                f"{dialect.name}: {len(l2)} {dialect.level2_channel} products on one connection,"
                f" the venue allows at most {cap}"
            )
        keepalive = dialect.keepalive_channel
        shared_keepalive = keepalive in dialect.shared_channels
        if keepalive not in out or (not shared_keepalive and not out[keepalive]):
            if shared_keepalive:
                out[keepalive] = ()
            else:
                every = (p for ch, ps in out.items() if ch not in dialect.shared_channels
                         for p in ps)
                out[keepalive] = tuple(dict.fromkeys(every))
        return out

    def _set_requested(self, requested: dict[str, tuple[str, ...]]) -> None:
        self._requested = requested
        for channel, products in requested.items():
            if channel in self.dialect.shared_channels:
                continue
            for product in products:
                self._add_known(channel, product)

    def _add_known(self, channel: str, product: str) -> None:
        known = self._known[channel]
        key = product.encode()
        if key not in known:
            known[key] = ((product, channel), product_needle(key))

    @property
    def requested(self) -> Mapping[str, tuple[str, ...]]:
        """What this connection asks for (channel → products), keepalive channel included."""
        return self._requested

    @property
    def pending_acks(self) -> int:
        """Subscribe/unsubscribe frames sent and not yet answered by a ``subscriptions`` ack."""
        return self._pending

    @property
    def all_acknowledged(self) -> bool:
        """Every request answered and nothing asked for is missing from the server's ack."""
        return self._pending == 0 and not self._missing()

    def opening_frames(self) -> list[bytes]:
        """Subscribe frames to send right after connecting (within the venue's 5 s): market
        data first, then the keepalive frame where it is a frame of its own (Advanced Trade;
        ``dialects.split_opening_frames`` says why)."""
        data, keepalive = split_opening_frames(self.dialect, self._requested)
        frames = data + keepalive
        self._pending += len(frames)
        return frames

    def update_subscriptions(self, products_by_channel: ProductsByChannel) -> list[bytes]:
        """Frames moving this connection to a new product set (periodic product refresh).

        Unsubscribes come first so the level2 cap has room for the additions. Products that
        are dropped stay routable: frames already in flight still reach their stream.
        """
        new = self._normalise(products_by_channel)
        old = self._requested
        removed: dict[str, list[str]] = {}
        added: dict[str, list[str]] = {}
        for channel in dict.fromkeys([*old, *new]):
            before, after = old.get(channel, ()), new.get(channel, ())
            if channel == self.dialect.keepalive_channel and not before and not after:
                continue
            before_set, after_set = set(before), set(after)
            gone = [p for p in before if p not in after_set]
            came = [p for p in after if p not in before_set]
            if gone or (channel not in new and channel in old):
                removed[channel] = gone
            if came or (channel in new and channel not in old):
                added[channel] = came
        frames = self.dialect.unsubscribe_frames(removed) + self.dialect.subscribe_frames(added)
        self._set_requested(new)
        self._reported_missing = {(c, p) for c, p in self._reported_missing
                                  if p in new.get(c, ())}
        self._retry.forget(lambda pair: pair[1] in new.get(pair[0], ())
                           or (pair[0] in new and not new[pair[0]]))
        self._pending += len(frames)
        return frames

    def ack_timeout(self) -> None:
        """The shell's ack timer expired: settle with what the server acknowledged so far."""
        if self._pending:
            self._pending = 0
            self._settle("not acknowledged within the ack timeout")

    # -- subscribe retries (``logger.protocol.retry`` says why)

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry.policy

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy) -> None:
        """The shell's settings (``connections.subscribe_retries``, ack timeout)."""
        self._retry.policy = policy

    @property
    def next_retry_at(self) -> float | None:
        """The shell's monotonic time of the next retry round, once ``poll`` has stamped it."""
        return self._retry.next_at

    def poll(self, now: float) -> None:
        """The shell's clock (monotonic seconds): call it about once a second and after
        executing actions. Frames unanswered for ``ack_timeout_s`` since it first saw them
        pending settle as missing (``ack_timeout``); a retry round armed by a settle is
        stamped at the first call after it and, when due and nothing else is in flight,
        subscribes again to exactly the pairs still missing (``RetrySubscribe``). Between
        ``on_disconnect`` and ``on_connect`` nothing is in flight: it does nothing."""
        counters = self.counters
        if counters.connects <= counters.disconnects:
            return
        retry = self._retry
        if self._pending:
            since = self._waiting_since
            if since is None:
                self._waiting_since = now
            elif now - since >= retry.policy.ack_timeout_s:
                self.ack_timeout()
        else:
            self._waiting_since = None
        if self._pending or not retry.tick(now):
            return
        pairs = retry.take(self._missing_pairs())
        if not pairs:
            return
        requested = self._requested
        todo = {ch: tuple(ps) if requested.get(ch) else ()
                for ch, ps in by_channel(pairs).items()}
        frames = self.dialect.subscribe_frames(todo)
        self._pending += len(frames)
        self._waiting_since = now
        self.counters.subscribe_retries += 1
        self.actions.append(RetrySubscribe(
            tuple(frames), {ch: tuple(ps) for ch, ps in by_channel(pairs).items()},
            retry.round))

    def _missing_pairs(self) -> list[Pair]:
        return [(ch, p) for ch, ps in self._missing().items() for p in sorted(ps)]

    def _retry_settled(self, missing: Mapping[str, frozenset[str]]) -> None:
        """Report recoveries and give-ups of this settle; ``RetryState`` arms the next round."""
        outcome = self._retry.settled((ch, p) for ch, ps in missing.items() for p in ps)
        for channel, products in outcome.recovered.items():
            self.counters.subscribe_recovered += len(products)
            self.actions.append(SubscribeRecovered(
                channel, tuple(products), max(outcome.attempts[(channel, p)] for p in products)))
        for channel, products in outcome.given_up.items():
            attempts = max(outcome.attempts[(channel, p)] for p in products)
            self.counters.subscribe_given_up += len(products)
            self.actions.append(SubscribeGivenUp(channel, tuple(products), attempts))
            payload = _dumps({
                "event": "subscribe_given_up", "conn": self.conn_id, "channel": channel,
                "retries": attempts,
                "note": "the venue never acknowledged this subscription on this connection:"
                        " nothing of it is recorded until a reconnect or product refresh"
                        " subscribes it again",
            })
            if not self._requested.get(channel):  # a channel without products
                route = self._shared_route(channel)
                self.actions.append(Marker(route[0], route[1], MarkerKind.NOTE, payload))
            else:
                self.actions.extend(Marker(p, channel, MarkerKind.NOTE, payload)
                                    for p in products)

    def drain(self) -> list[Action]:
        """Take the queued actions (the shell executes them in order)."""
        actions, self.actions = self.actions, []
        return actions

    # ------------------------------------------------------------------ connection events

    def on_connect(self) -> None:
        """A (re)connection is open: sequence numbering and acks restart from scratch."""
        self.counters.connects += 1
        if self.counters.connects > 1:
            self._mark_all(MarkerKind.RECONNECT, _dumps({
                "event": "reconnect", "conn": self.conn_id, "dialect": self.dialect.name,
                "connection": self.counters.connects,
                "note": "resubscribing; fresh snapshots follow the SUBSCRIBE markers",
            }))
        self._seq.reset()
        self._ticker_trade.clear()  # the first ticker after subscribing repeats the last trade
        self.acknowledged = {}
        self._pending = 0
        self._waiting_since = None
        self._retry.reset()  # the opening frames subscribe everything again
        self._resubscribing = False
        self._reported_missing = set()

    def on_disconnect(self, reason: str, *, clean: bool = False) -> None:
        """The socket is gone: every stream of this connection may miss what follows — or,
        when ``clean`` (the recorder closed it on purpose: shutdown), nothing was missed and
        the streams get a STOP marker instead of a DISCONNECT (not a possible loss)."""
        self.counters.disconnects += 1  # the socket is gone either way (poll() stops)
        payload: dict[str, object] = {
            "event": "stop" if clean else "disconnect", "conn": self.conn_id,
            "dialect": self.dialect.name, "reason": reason,
        }
        if self._at:
            payload["last_sequence_num"] = self._seq.expected - 1
        self._mark_all(MarkerKind.STOP if clean else MarkerKind.DISCONNECT, _dumps(payload))
        self._retry.reset()  # the next connection subscribes everything again
        for gap in self._trades.flush_owed():  # Exchange: heartbeat suspicions still in grace
            self._trade_gap(gap, "heartbeat last_trade_id, unmatched at disconnect",
                            "a heartbeat announced these trades and the socket closed before"
                            " their matches came: they may be lost; fetch them from the REST"
                            " trades endpoint")

    def streams(self) -> Iterator[Route]:
        """Every stream this connection feeds now, for markers that concern all of them.

        That is the shared streams of its channels, and each product stream it asked for or
        the server acknowledged (products unsubscribed earlier are no longer included), plus
        ``_multi`` of each Advanced Trade product channel.
        """
        dialect = self.dialect
        for channel in self._requested:
            if channel in dialect.shared_channels:
                yield self._shared_route(channel)
        yield self._subs_route
        acked = self.acknowledged
        for channel, known in self._known.items():
            products = set(self._requested.get(channel, ())) | acked.get(channel, frozenset())
            if not products:
                continue
            for product in sorted(products):
                entry = known.get(product.encode())
                if entry is not None:
                    yield entry[0]
            if self._at:
                yield self._multi_route(channel)

    def _mark_all(self, kind: MarkerKind, payload: bytes) -> None:
        self.actions.extend(Marker(p, c, kind, payload) for p, c in self.streams())

    # ------------------------------------------------------------------ routing

    def _shared_route(self, channel: str) -> Route:
        route = self._shared.get(channel)
        if route is None:
            route = self._shared[channel] = (self._conn, channel)
        return route

    def _multi_route(self, channel: str) -> Route:
        route = self._multi.get(channel)
        if route is None:
            route = self._multi[channel] = (self._multi_name, channel)
        return route

    def _unroutable(self, *, malformed: bool = False, unknown: bool = False) -> Route:
        counters = self.counters
        counters.unrouted += 1
        if malformed:
            counters.malformed += 1
        if unknown:
            counters.unknown += 1
        return self._unrouted

    def _reject_product(self, pid: bytes) -> Route:
        text = pid.decode("utf-8", "replace")
        if is_valid_product_id(text):
            self.counters.unexpected_product += 1
        else:
            self.counters.invalid_product += 1
        return self._unroutable()

    # -- Advanced Trade

    def _at_router(self) -> Callable[[bytes], Route]:
        """The Advanced Trade hot path: fast paths for frames in the venue's layout whose
        ``sequence_num`` is the expected one, everything else through ``_at_full``.

        Per ``l2_data`` frame (the bulk of the feed) it costs one C call per step and parses
        no number: the prefix, the closing bytes, the expected ``"sequence_num":N,`` bytes
        (``tracker.needle``) where they were in the previous frame (else one ``find`` of the
        key), then one ``split`` on ``"product_id":"``, which yields the id and tells whether
        it is the only one (and after the number) in a single pass: cheaper than the three
        ``find`` calls it replaces. In the venue's layout ``sequence_num`` occurs once, before
        ``events``, so the results are those of ``_at_full``; anything else (several product
        ids, an unknown one, a gap) is decided by the same code as there. A property test also
        feeds reordered keys, which take the full path.
        """
        counters = self.counters
        tracker = self._seq
        at_wire = self._at_wire
        l2_wire = at_wire[b"l2_data"]
        l2_known = l2_wire[2]  # the level2 routes, mutated in place by _add_known
        full = self._at_full
        after_seq = self._at_after_seq
        l2_head = b'{"channel":"l2_data",'
        l2_head_len = len(l2_head)
        seq_key = SEQ_KEY
        prefix, prefix_len = AT_PREFIX, AT_PREFIX_LEN
        pkey = PRODUCT_KEY
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
                    if len(raw) > 16384:  # a snapshot: scan it without copying (after_seq)
                        return after_seq(raw, k - 1, l2_wire)
                    parts = raw.split(pkey)  # one C pass: the id, and whether it is alone
                    if len(parts) == 2 and len(parts[0]) >= k:
                        rest = parts[1]
                        entry = l2_known.get(rest.partition(b'"')[0])
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
                        if not wire[1] and len(raw) <= 16384:  # ticker, trades, candles
                            parts = raw.split(pkey)
                            if len(parts) == 2 and len(parts[0]) >= k:
                                rest = parts[1]
                                entry = wire[2].get(rest.partition(b'"')[0])
                                if entry is not None:
                                    return entry[0]
                        return after_seq(raw, k - 1, wire)
            return full(raw)

        return on_at

    def _at_after_seq(self, raw: bytes, k: int,
                      wire: tuple[str, bool, dict[bytes, _Entry]]) -> Route:
        """Route an in-layout frame whose sequence number ended at offset ``k``."""
        if wire[1]:
            route = self._shared_route(wire[0])
            if wire[0] == SUBSCRIPTIONS_CHANNEL:
                self._at_ack(raw)
            return route
        p = raw.find(PRODUCT_KEY, k)
        if p < 0:
            return self._shared_route(wire[0])
        p += PRODUCT_KEY_LEN
        q = raw.find(b'"', p)
        entry = wire[2].get(raw[p:q])
        if entry is not None and raw.find(PRODUCT_KEY, q) < 0:
            return entry[0]
        return self._at_product(raw, q, wire[0], raw[p:q], entry)

    def _at_full(self, raw: bytes) -> Route:
        """Every Advanced Trade frame the fast paths decline (any layout, any sequence)."""
        # envelope prefix, channel, sequence_num, first product id.
        if not (raw.startswith(AT_PREFIX) and raw.endswith(b"]}")):
            return self._at_slow(raw)
        j = raw.find(b'"', AT_PREFIX_LEN)
        i = raw.find(SEQ_KEY, j)
        if i < 0:
            return self._at_slow(raw)
        i += SEQ_KEY_LEN
        k = raw.find(b",", i)
        try:
            seq = int(raw[i:k])
        except ValueError:
            return self._at_slow(raw)
        if not 0 <= seq <= INT_MAX:
            return self._at_slow(raw)
        tracker = self._seq
        late = False
        if seq == tracker.expected:
            tracker.set_expected(seq + 1)
        else:
            late = self._at_seq_anomaly(seq)
        wire = self._at_wire.get(raw[AT_PREFIX_LEN:j])
        if wire is None:
            route = self._unroutable(unknown=True)
        elif wire[1]:
            route = self._shared_route(wire[0])
            if wire[0] == SUBSCRIPTIONS_CHANNEL:
                self._at_ack(raw)
        else:
            p = raw.find(PRODUCT_KEY, k)
            if p < 0:
                route = self._shared_route(wire[0])
            else:
                p += PRODUCT_KEY_LEN
                q = raw.find(b'"', p)
                entry = wire[2].get(raw[p:q])
                if entry is not None and raw.find(PRODUCT_KEY, q) < 0:
                    route = entry[0]
                else:
                    route = self._at_product(raw, q, wire[0], raw[p:q], entry)
        if late:
            self._note_late(route, seq)
        return route

    def _at_product(self, raw: bytes, end: int, channel: str, pid: bytes,
                    entry: _Entry | None) -> Route:
        """Several product ids in the frame, or an unknown one (the uncommon cases)."""
        if not only_product(raw, end, entry[1] if entry is not None else product_needle(pid)):
            return self._multi_route(channel)
        if entry is not None:
            return entry[0]
        return self._reject_product(pid)

    def _at_slow(self, raw: bytes) -> Route:
        parsed = parse_slow(raw, "channel", "sequence_num")
        if parsed is None:
            return self._unroutable(malformed=True)
        if parsed.channel is None:
            if parsed.obj.get("type") == "error":
                self._on_error(parsed.obj)
                return self._error_route
            return self._unroutable(unknown=True)
        late = False
        if parsed.seq is not None:
            tracker = self._seq
            if parsed.seq == tracker.expected:
                tracker.set_expected(parsed.seq + 1)
            else:
                late = self._at_seq_anomaly(parsed.seq)
        wire = self._at_wire.get(parsed.channel.encode())
        if wire is None:
            route = self._unroutable(unknown=True)
        elif wire[1]:
            route = self._shared_route(wire[0])
            if wire[0] == SUBSCRIPTIONS_CHANNEL:
                self._at_ack_obj(parsed.obj)
        else:
            route = self._products_route(wire[0], parsed.products)
        if late and parsed.seq is not None:
            self._note_late(route, parsed.seq)
        return route

    def _products_route(self, channel: str, products: Sequence[str]) -> Route:
        if not products:
            return self._shared_route(channel)
        if len(products) > 1:
            return self._multi_route(channel)
        pid = products[0].encode()
        known = self._known.get(channel)
        entry = known.get(pid) if known is not None else None
        return entry[0] if entry is not None else self._reject_product(pid)

    def _at_seq_anomaly(self, seq: int) -> bool:
        """Handle an out-of-line ``sequence_num``; True if the frame is late (not a gap)."""
        expected = self._seq.expected
        result = self._seq.observe(seq)
        if result is False:
            self.counters.late += 1
            self._late_expected = expected
            return True
        if isinstance(result, SeqGap):
            missing = result.last - result.first + 1
            self.counters.gaps += 1
            self.counters.missing += missing
            self._mark_all(MarkerKind.GAP, _dumps({
                "event": "gap", "conn": self.conn_id, "dialect": self.dialect.name,
                "scope": "connection", "first_missing_sequence_num": result.first,
                "last_missing_sequence_num": result.last, "missing_frames": missing,
                "note": "the lost frames may belong to any channel and product of this"
                        " connection",
            }))
            self._recover(f"sequence_num gap: {missing} frame(s) missing before {seq}")
        return False

    def _recover(self, reason: str) -> None:
        """Ask for fresh snapshots: resubscribe, or reconnect if that is already under way."""
        if self.gap_policy == "reconnect" or self._resubscribing:
            self.counters.reconnects_requested += 1
            self.actions.append(Reconnect(reason))
            return
        channels = {ch: self._requested[ch] for ch in AT_RESUBSCRIBE_CHANNELS
                    if self._requested.get(ch)}
        frames = (self.dialect.unsubscribe_frames(channels)
                  + self.dialect.subscribe_frames(channels))
        if not frames:
            return
        self._resubscribing = True
        self._pending += len(frames)
        self.counters.resubscribes += 1
        self.actions.append(Send(tuple(frames), reason))

    def _note_late(self, route: Route, seq: int) -> None:
        self.actions.append(Marker(route[0], route[1], MarkerKind.NOTE, _dumps({
            "event": "late", "conn": self.conn_id, "sequence_num": seq,
            "expected_sequence_num": self._late_expected,
            "note": "frame arrived after a later one: duplicate or out of order",
        })))

    def _at_ack(self, raw: bytes) -> None:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.counters.malformed += 1
            return
        if isinstance(obj, dict):
            self._at_ack_obj(obj)

    def _at_ack_obj(self, obj: dict[str, Any]) -> None:
        self._apply_ack(parse_at_ack(obj, self.dialect.ack_aliases))

    # -- Exchange

    def _ex_router(self) -> Callable[[bytes], Route]:
        """The Exchange hot path: ``l2update`` (≈ 97 % of the feed), ``snapshot`` and in-order
        ``match`` frames in the venue's layout are routed here, everything else by ``_ex_full``.

        ``{"type":"l2update","product_id":"`` puts the id at a fixed offset: one prefix check,
        the closing byte, one ``find`` and one dict lookup. A ``match`` whose ``trade_id``
        (the first key after the type) is the next one of its product only advances the
        product's last trade id; a gap, a duplicate or a first trade goes the full way.
        """
        counters = self.counters
        full = self._ex_full
        l2_known = self._known.get("level2_batch", {})  # mutated in place, never replaced
        match_known = self._known.get("matches", {})
        last_trade = self._trades.last
        l2_heads = (b'{"type":"l2update","product_id":"', b'{"type":"snapshot","product_id":"')
        l2_head_len = len(l2_heads[0])
        match_head = b'{"type":"match","trade_id":'
        match_head_len = len(match_head)
        pkey, pkey_len = PRODUCT_KEY, PRODUCT_KEY_LEN

        def on_ex(raw: bytes) -> Route:
            counters.messages += 1
            if raw.startswith(l2_heads):
                if raw[-1] == 125:  # ends with } (cheaper than endswith)
                    entry = l2_known.get(raw[l2_head_len:raw.find(b'"', l2_head_len)])
                    if entry is not None:
                        return entry[0]
            elif raw.startswith(match_head) and raw[-1] == 125:
                k = raw.find(b",", match_head_len)
                p = raw.find(pkey, k) + pkey_len
                if p >= pkey_len:
                    entry = match_known.get(raw[p:raw.find(b'"', p)])
                    if entry is not None:
                        route = entry[0]
                        last = last_trade.get(route[0])
                        if last is not None:
                            try:
                                trade_id = int(raw[match_head_len:k])
                            except ValueError:
                                return full(raw)
                            if trade_id == last + 1 and trade_id <= INT_MAX:
                                last_trade[route[0]] = trade_id
                                return route
            return full(raw)

        return on_ex

    def _ex_full(self, raw: bytes) -> Route:
        """Every Exchange frame the fast paths decline (any type, any layout)."""
        if not raw.startswith(EX_HEAD) or not raw.endswith(b"}"):
            return self._ex_slow(raw)
        j = raw.find(b'"', EX_HEAD_LEN)
        kind = raw[EX_HEAD_LEN:j]
        known = self._ex_plain.get(kind)
        if known is not None:  # level2 and auctions: the bulk of the feed, nothing to check
            p = raw.find(PRODUCT_KEY, j)
            if p < 0:
                return self._ex_slow(raw)
            p += PRODUCT_KEY_LEN
            pid = raw[p:raw.find(b'"', p)]
            entry = known.get(pid)
            return entry[0] if entry is not None else self._reject_product(pid)
        spec = _EX_TYPES.get(kind)
        if spec is None:
            return self._unroutable(unknown=True)
        code, channel = spec
        if code >= _EX_SHARED:
            if code == _EX_SHARED:
                return self._shared_route(channel)
            return self._ex_slow(raw)
        p = raw.find(PRODUCT_KEY, j)
        if p < 0:
            return self._ex_slow(raw)
        p += PRODUCT_KEY_LEN
        pid = raw[p:raw.find(b'"', p)]
        return self._ex_product(code, channel, pid, int_after(raw, _EX_INT_KEY[code], j))

    def _ex_slow(self, raw: bytes) -> Route:
        parsed = parse_slow(raw, "type", "sequence")
        if parsed is None:
            return self._unroutable(malformed=True)
        spec = _EX_TYPES.get(parsed.channel.encode()) if parsed.channel is not None else None
        if spec is None:
            return self._unroutable(unknown=True)
        code, channel = spec
        obj = parsed.obj
        if code == _EX_SHARED:
            return self._shared_route(channel)
        if code == _EX_ACK:
            self._ex_ack(obj)
            return self._subs_route
        if code == _EX_ERROR:
            self._on_error(obj)
            return self._error_route
        pid = obj.get("product_id")
        if not isinstance(pid, str):
            return self._unroutable(unknown=True)
        field = _EX_INT_FIELD.get(code)
        value = obj.get(field) if field is not None else None
        if isinstance(value, str) and value.isdigit() and len(value) <= 19:
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not (
                INT_MIN <= value <= INT_MAX):
            value = None
        return self._ex_product(code, channel, pid.encode(), value)

    def _ex_product(self, code: int, channel: str, pid: bytes, value: int | None) -> Route:
        if code == _EX_TICKER:
            channel = self._ticker_channel(pid, value)
        known = self._known.get(channel)
        entry = known.get(pid) if known is not None else None
        if entry is None:
            return self._reject_product(pid)
        route = entry[0]
        if value is not None:
            if code in (_EX_MATCH, _EX_LAST_MATCH):
                result = self._trades.on_trade(route[0], value,
                                               baseline=code == _EX_LAST_MATCH)
                if isinstance(result, TradeGap):
                    self._trade_gap(result, "trade_id")
                elif result is False:
                    self.counters.late += 1
                    self.actions.append(Marker(route[0], "matches", MarkerKind.NOTE, _dumps({
                        "event": "late", "conn": self.conn_id, "trade_id": value,
                        "note": "trade arrived after a later one: duplicate or out of order",
                    })))
            elif code == _EX_HEARTBEAT:
                gap = self._trades.on_heartbeat(route[0], value)
                if gap is not None:
                    self._trade_gap(gap, "heartbeat last_trade_id")
        return route

    def _ticker_channel(self, pid: bytes, trade_id: int | None) -> str:
        """Exchange sends ``ticker`` and ``ticker_batch`` with the same type and schema.

        When a product has both, tell them apart by ``trade_id``: ``ticker`` is sent on every
        match, so each one carries a new, higher trade id; a batch message repeats the latest
        state, so its trade id is not above the highest one seen on this product. (Its
        ``sequence`` is no help: the product's sequence moves on book events too.)
        """
        in_ticker = pid in self._known.get("ticker", {})
        in_batch = pid in self._known.get("ticker_batch", {})
        if not (in_ticker and in_batch):
            return "ticker" if in_ticker else "ticker_batch"
        if trade_id is None:
            return "ticker"
        last = self._ticker_trade.get(pid)
        if last is not None and trade_id <= last:
            return "ticker_batch"
        self._ticker_trade[pid] = trade_id
        return "ticker"

    def _trade_gap(self, gap: TradeGap, detected_by: str,
                   note: str = "missing trades can be fetched from the REST trades endpoint"
                   ) -> None:
        missing = gap.last - gap.first + 1
        self.counters.gaps += 1
        self.counters.missing += missing
        self.actions.append(Marker(gap.product, "matches", MarkerKind.GAP, _dumps({
            "event": "gap", "conn": self.conn_id, "dialect": self.dialect.name,
            "scope": "product", "product": gap.product, "channel": "matches",
            "first_missing_trade_id": gap.first, "last_missing_trade_id": gap.last,
            "missing_trades": missing, "detected_by": detected_by, "note": note,
        })))

    def _ex_ack(self, obj: dict[str, Any]) -> None:
        self._apply_ack(parse_exchange_ack(obj, self.dialect.ack_aliases))

    # -- acks and errors (both dialects)

    def _apply_ack(self, state: dict[str, frozenset[str]]) -> None:
        """Record the server's cumulative subscription state; report what changed."""
        self.counters.acks += 1
        if self._pending:
            self._pending -= 1
        old = self.acknowledged
        dialect = self.dialect
        for channel in dict.fromkeys([*old, *state]):
            before = old.get(channel, frozenset())
            after = state.get(channel, frozenset())
            added, removed = after - before, before - after
            if channel in old and channel in state and not added and not removed:
                continue
            self.actions.append(Acknowledged(channel, tuple(sorted(added)),
                                             tuple(sorted(removed))))
            if channel not in dialect.channels or not is_valid_name(channel):
                continue
            payload = _dumps({"event": "subscribed", "conn": self.conn_id, "channel": channel,
                              "note": "acknowledged by the server; a snapshot follows where the"
                                      " channel has one"})
            if channel in dialect.shared_channels:
                if channel in state and channel not in old:
                    route = self._shared_route(channel)
                    self.actions.append(Marker(route[0], route[1], MarkerKind.SUBSCRIBE,
                                               payload))
                continue
            known = self._known[channel]
            for product in sorted(added):
                if product.encode() in known:
                    self.actions.append(Marker(product, channel, MarkerKind.SUBSCRIBE, payload))
                elif is_valid_product_id(product):  # acked, never asked for: not routable
                    self.counters.unexpected_product += 1
                else:
                    self.counters.invalid_product += 1
            if removed:
                gone = _dumps({"event": "unsubscribed", "conn": self.conn_id,
                               "channel": channel})
                self.actions.extend(Marker(p, channel, MarkerKind.NOTE, gone)
                                    for p in sorted(removed) if p.encode() in known)
        self.acknowledged = state
        if not self._pending:
            self._settle("not acknowledged by the server")

    def _missing(self) -> dict[str, frozenset[str]]:
        missing: dict[str, frozenset[str]] = {}
        acked = self.acknowledged
        for channel, products in self._requested.items():
            if not products:
                if channel not in acked:
                    missing[channel] = frozenset({channel})
                continue
            gone = frozenset(products) - acked.get(channel, frozenset())
            if gone:
                missing[channel] = gone
        return missing

    def _settle(self, reason: str) -> None:
        self._resubscribing = False
        missing = self._missing()
        for channel, products in missing.items():
            for product in sorted(products):
                if (channel, product) not in self._reported_missing:
                    self._reported_missing.add((channel, product))
                    self.counters.refused += 1
                    self.actions.append(Refused(channel, product, reason))
        self._retry_settled(missing)
        self.actions.append(Settled(dict(self.acknowledged), missing))

    def _on_error(self, obj: dict[str, Any]) -> None:
        error, refused = classify_error(obj, self.dialect.level2_channel)
        self.counters.errors += 1
        self.actions.append(error)
        if refused is not None:
            self.counters.refused += 1
            self.actions.append(refused)
            self._retry.refused(refused.channel, refused.product)
        elif self._at and self._pending and is_rate_limited(error):
            # the venue dropped one of our frames and will not ack it: it is answered
            self._pending -= 1
            if not self._pending:
                self._settle("dropped by the venue's message rate limit")
