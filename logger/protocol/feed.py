"""Per-connection protocol state: subscriptions, acks, retries and connection events.

``FeedState`` is sans-I/O. The shell (``logger/connection.py``) calls ``on_connect``, sends
``opening_frames()``, passes every received frame to ``on_message`` (which returns the
(product, channel) stream to store the frame in, raw and unchanged), calls ``on_disconnect``
when the socket dies, and drains ``actions`` (markers to write, frames to send, reconnects,
ack/refusal reports) after each call. Nothing here raises on wire input: whatever cannot be
routed goes to ``(_conn<id>, _unrouted)`` and is counted.

The rooms: ``routes.py`` names the connection's streams (``RouteTable``); one router per
dialect (``route_at.py``, ``route_exchange.py``, behind ``routes.Router``) reads frames and
picks a stream (``router_for``; a feed takes another through its ``router`` argument, the
seam tests use); this module is the subscription state machine (``Phase``: what was asked,
what the venue acknowledged, retries of what it did not, with the ``RetryPolicy`` fixed when
the feed is built) and the link state (``Link``), and the one place that turns connection
events into markers.

Routing of product data uses the subscribe-channel name (``l2_data`` → ``level2``) and only
products this connection asked for; any other product id goes to ``_unrouted``, so a hostile or
confused server cannot create streams at will.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from logger.protocol.acks import classify_error, is_rate_limited
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
    marker_payload,
)
from logger.protocol.dialects import (
    ADVANCED_TRADE,
    Dialect,
    ProductsByChannel,
    split_opening_frames,
)
from logger.protocol.names import (
    MULTI,
    check_product_id,
    is_valid_name,
    is_valid_product_id,
)
from logger.protocol.retry import Pair, RetryPolicy, RetryState, by_channel
from logger.protocol.route_at import AdvancedTradeRouter
from logger.protocol.route_exchange import ExchangeRouter
from logger.protocol.routes import Route, Router, RouteTable

__all__ = ["AT_RESUBSCRIBE_CHANNELS", "FeedCounters", "FeedState", "GapPolicy", "Link", "Phase",
           "Route", "RouterFactory", "normalise_plan", "router_for"]

GapPolicy = Literal["resubscribe", "reconnect"]

AT_RESUBSCRIBE_CHANNELS = ("level2", "market_trades")
"""Advanced Trade channels re-subscribed after a sequence gap: level2 for a fresh book
snapshot, market_trades because its snapshot repeats recent trades that may have been lost.
The other channels send full state in every message; the next one supersedes a lost one."""


class Link(enum.Enum):
    """Whether a socket is open: between ``on_connect`` and ``on_disconnect`` (``OPEN``)
    requests are in flight and ``poll`` times them; otherwise nothing is (``CLOSED``)."""

    CLOSED = "closed"
    OPEN = "open"


class Phase(enum.Enum):
    """Where this connection's subscribe requests stand: the subscription state machine.

    ``SETTLED``: nothing in flight (every frame answered: acked, refused, dropped by the
    venue's rate limit, or timed out; also a fresh socket before its opening frames);
    ``WAITING``: subscribe/unsubscribe frames sent and not all answered (the ack timeout
    runs); ``RESUBSCRIBING``: fresh snapshots asked for after a gap and not answered yet, so a
    second gap reconnects instead of asking again. A settle ends both."""

    SETTLED = "settled"
    WAITING = "waiting"
    RESUBSCRIBING = "resubscribing"


RouterFactory = Callable[["FeedState", RouteTable], Router]
"""Builds the router of one connection from its ``FeedState`` and ``RouteTable``."""


def router_for(dialect: Dialect) -> RouterFactory:
    """The dialect's router (``route_at``, ``route_exchange``): the routing entry of a feed."""
    return AdvancedTradeRouter if dialect.name == ADVANCED_TRADE.name else ExchangeRouter


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



def normalise_plan(dialect: Dialect, products_by_channel: ProductsByChannel,
                   ) -> dict[str, tuple[str, ...]]:
    """What one connection asks for: channels and product ids validated (a ValueError names
    the first bad one, or a level2 list over the venue's cap), the keepalive channel added if
    it is missing (with every product where the dialect's keepalive takes products)."""
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
        router: RouterFactory | None = None,
    ) -> None:
        """``retry``: the shell's subscribe-retry and ack-timeout settings (the default
        ``RetryPolicy()`` otherwise). ``router``: the routing entry, the dialect's router
        (``router_for``) unless given (a test wraps the real one to make it fail)."""
        self.dialect = dialect
        self.conn_id = conn_id
        self.gap_policy: GapPolicy = gap_policy
        self.actions: list[Action] = []
        self.counters = FeedCounters()
        self.acknowledged: dict[str, frozenset[str]] = {}
        self.link = Link.CLOSED
        self._at = dialect.name == ADVANCED_TRADE.name
        self.table = RouteTable(conn_id, multi_name, self.counters,
                                (ch for ch in dialect.channels
                                 if ch not in dialect.shared_channels))
        self._requested: dict[str, tuple[str, ...]] = {}
        self._reported_missing: set[tuple[str, str]] = set()
        self._pending = 0
        self.phase = Phase.SETTLED
        self._waiting_since: float | None = None  # poll's time when frames went pending
        self._retry = RetryState(retry)
        self.router: Router = (router or router_for(dialect))(self, self.table)
        self._set_requested(normalise_plan(self.dialect, products_by_channel))

    @property
    def on_message(self) -> Callable[[bytes], Route]:
        """``on_message(raw)``: the (product, channel) stream for ``raw``; side effects go to
        ``actions``. The router's per-frame function (one replaceable callable per dialect, a
        closure: the hot path reads locals instead of attributes and globals); the shell
        fetches it once per socket."""
        return self.router.on_message

    def recover(self, reason: str) -> None:
        """Ask for fresh snapshots after a gap: resubscribe, or reconnect if that is already
        under way (or the policy says so)."""
        if self.gap_policy == "reconnect" or self.phase is Phase.RESUBSCRIBING:
            self.counters.reconnects_requested += 1
            self.actions.append(Reconnect(reason))
            return
        channels = {ch: self._requested[ch] for ch in AT_RESUBSCRIBE_CHANNELS
                    if self._requested.get(ch)}
        frames = (self.dialect.unsubscribe_frames(channels)
                  + self.dialect.subscribe_frames(channels))
        if not frames:
            return
        self._sent(frames)
        self.phase = Phase.RESUBSCRIBING
        self.counters.resubscribes += 1
        self.actions.append(Send(tuple(frames), reason))

    # ------------------------------------------------------------------ subscriptions

    def _set_requested(self, requested: dict[str, tuple[str, ...]]) -> None:
        self._requested = requested
        for channel, products in requested.items():
            if channel in self.dialect.shared_channels:
                continue
            for product in products:
                self.table.add(channel, product)

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
        self._sent(frames)
        return frames

    def _sent(self, frames: list[bytes]) -> None:
        """``frames`` go out now: each owes an answer (an ack, or an error that answers it)."""
        self._pending += len(frames)
        if frames and self.phase is Phase.SETTLED:
            self.phase = Phase.WAITING

    def update_subscriptions(self, products_by_channel: ProductsByChannel) -> list[bytes]:
        """Frames moving this connection to a new product set (periodic product refresh).

        Unsubscribes come first so the level2 cap has room for the additions. Products that
        are dropped stay routable: frames already in flight still reach their stream.
        """
        new = normalise_plan(self.dialect, products_by_channel)
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
        self._sent(frames)
        return frames

    def ack_timeout(self) -> None:
        """The shell's ack timer expired: settle with what the server acknowledged so far."""
        if self._pending:
            self._pending = 0
            self._settle("not acknowledged within the ack timeout")

    # -- subscribe retries (``logger.protocol.retry`` says why)

    @property
    def retry_policy(self) -> RetryPolicy:
        """Fixed at construction (``retry``): the shell's settings."""
        return self._retry.policy

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
        if self.link is Link.CLOSED:
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
        self._sent(frames)
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
            payload = marker_payload({
                "event": "subscribe_given_up", "conn": self.conn_id, "channel": channel,
                "retries": attempts,
                "note": "the venue never acknowledged this subscription on this connection:"
                        " nothing of it is recorded until a reconnect or product refresh"
                        " subscribes it again",
            })
            if not self._requested.get(channel):  # a channel without products
                route = self.table.shared(channel)
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
        self.link = Link.OPEN
        if self.counters.connects > 1:
            self.mark_all(MarkerKind.RECONNECT, marker_payload({
                "event": "reconnect", "conn": self.conn_id, "dialect": self.dialect.name,
                "connection": self.counters.connects,
                "note": "resubscribing; fresh snapshots follow the SUBSCRIBE markers",
            }))
        self.router.on_connect()
        self.acknowledged = {}
        self._pending = 0
        self._waiting_since = None
        self._retry.reset()  # the opening frames subscribe everything again
        self.phase = Phase.SETTLED
        self._reported_missing = set()

    def on_disconnect(self, reason: str, *, clean: bool = False) -> None:
        """The socket is gone: every stream of this connection may miss what follows — or,
        when ``clean`` (the recorder closed it on purpose: shutdown), nothing was missed and
        the streams get a STOP marker instead of a DISCONNECT (not a possible loss)."""
        self.counters.disconnects += 1
        self.link = Link.CLOSED  # the socket is gone either way (poll() stops)
        payload: dict[str, object] = {
            "event": "stop" if clean else "disconnect", "conn": self.conn_id,
            "dialect": self.dialect.name, "reason": reason,
        }
        payload.update(self.router.disconnect_fields())
        self.mark_all(MarkerKind.STOP if clean else MarkerKind.DISCONNECT, marker_payload(payload))
        self._retry.reset()  # the next connection subscribes everything again
        self.router.after_disconnect()

    def streams(self) -> Iterator[Route]:
        """Every stream this connection feeds now, for markers that concern all of them.

        That is the shared streams of its channels, and each product stream it asked for or
        the server acknowledged (products unsubscribed earlier are no longer included), plus
        ``_multi`` of each Advanced Trade product channel.
        """
        dialect = self.dialect
        for channel in self._requested:
            if channel in dialect.shared_channels:
                yield self.table.shared(channel)
        yield self.table.subscriptions
        acked = self.acknowledged
        for channel, known in self.table.known.items():
            products = set(self._requested.get(channel, ())) | acked.get(channel, frozenset())
            if not products:
                continue
            for product in sorted(products):
                entry = known.get(product.encode())
                if entry is not None:
                    yield entry.route
            if self.router.multi_streams:
                yield self.table.multi(channel)

    def mark_all(self, kind: MarkerKind, payload: bytes) -> None:
        """Queue a ``kind`` marker on every stream of this connection (``streams``)."""
        self.actions.extend(Marker(p, c, kind, payload) for p, c in self.streams())

    # ------------------------------------------------------------------ acks and errors

    def apply_ack(self, state: dict[str, frozenset[str]]) -> None:
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
            payload = marker_payload({
                "event": "subscribed", "conn": self.conn_id, "channel": channel,
                "note": "acknowledged by the server; a snapshot follows where the channel has"
                        " one"})
            if channel in dialect.shared_channels:
                if channel in state and channel not in old:
                    route = self.table.shared(channel)
                    self.actions.append(Marker(route[0], route[1], MarkerKind.SUBSCRIBE,
                                               payload))
                continue
            known = self.table.known[channel]
            for product in sorted(added):
                if product.encode() in known:
                    self.actions.append(Marker(product, channel, MarkerKind.SUBSCRIBE, payload))
                elif is_valid_product_id(product):  # acked, never asked for: not routable
                    self.counters.unexpected_product += 1
                else:
                    self.counters.invalid_product += 1
            if removed:
                gone = marker_payload({"event": "unsubscribed", "conn": self.conn_id,
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
        self.phase = Phase.SETTLED
        missing = self._missing()
        for channel, products in missing.items():
            for product in sorted(products):
                if (channel, product) not in self._reported_missing:
                    self._reported_missing.add((channel, product))
                    self.counters.refused += 1
                    self.actions.append(Refused(channel, product, reason))
        self._retry_settled(missing)
        self.actions.append(Settled(dict(self.acknowledged), missing))

    def error_frame(self, obj: dict[str, Any]) -> None:
        """An error frame from the venue: report it; a refusal or a dropped frame answers a
        pending request."""
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
