"""The streams one connection may write, and the small interface of a dialect's router.

``RouteTable`` is the one place that names a connection's streams: its shared streams
(``_conn<id>/<channel>``), ``_multi`` per channel, ``_unrouted``, and one stream per product it
asked for. It also counts what it refuses. A router (``route_at.py``, ``route_exchange.py``)
reads frames of one dialect and picks a route from this table; the subscription state machine
(``feed.py``) adds products to it as it subscribes them. Routes are cached tuples, so the hot
path returns an existing object and allocates nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from logger.protocol.names import (
    ERROR_CHANNEL,
    SUBSCRIPTIONS_CHANNEL,
    UNROUTED,
    conn_stream,
    is_valid_product_id,
)
from logger.protocol.router import product_needle

if TYPE_CHECKING:
    from logger.protocol.feed import FeedCounters

Route = tuple[str, str]


class Entry(NamedTuple):
    """A routable product on one channel: its stream and its exact ``product_id`` needle."""

    route: Route
    needle: bytes


Known = dict[bytes, Entry]
"""product id bytes → its entry, for one channel (mutated in place as products are added)."""


class Wire(NamedTuple):
    """An Advanced Trade wire channel (``l2_data``): the stream channel it feeds, whether it is
    a connection-wide (shared) channel, and the products routable on it."""

    channel: str
    shared: bool
    known: Known


class RouteTable:
    """Every stream of one connection (see module docstring)."""

    __slots__ = ("_multi", "_multi_name", "_shared", "conn", "counters", "error", "known",
                 "subscriptions", "unrouted")

    def __init__(self, conn_id: str, multi_name: str, counters: FeedCounters,
                 product_channels: Iterable[str]) -> None:
        self.conn = conn_stream(conn_id)
        self.counters = counters
        self.unrouted: Route = (self.conn, UNROUTED)
        self.error: Route = (self.conn, ERROR_CHANNEL)
        self.subscriptions: Route = (self.conn, SUBSCRIPTIONS_CHANNEL)
        self.known: dict[str, Known] = {channel: {} for channel in product_channels}
        self._shared: dict[str, Route] = {}
        self._multi: dict[str, Route] = {}
        self._multi_name = multi_name  # ``_multi``, or ``_multi-w<i>`` in worker i

    def add(self, channel: str, product: str) -> None:
        """Make ``product`` routable on ``channel`` (it stays so after an unsubscribe: frames
        already in flight still reach their stream)."""
        known = self.known[channel]
        key = product.encode()
        if key not in known:
            known[key] = Entry((product, channel), product_needle(key))

    def shared(self, channel: str) -> Route:
        route = self._shared.get(channel)
        if route is None:
            route = self._shared[channel] = (self.conn, channel)
        return route

    def multi(self, channel: str) -> Route:
        route = self._multi.get(channel)
        if route is None:
            route = self._multi[channel] = (self._multi_name, channel)
        return route

    def unroutable(self, *, malformed: bool = False, unknown: bool = False) -> Route:
        counters = self.counters
        counters.unrouted += 1
        if malformed:
            counters.malformed += 1
        if unknown:
            counters.unknown += 1
        return self.unrouted

    def reject(self, pid: bytes) -> Route:
        """A product this connection did not ask for (or no valid id at all): ``_unrouted``."""
        if is_valid_product_id(pid.decode("utf-8", "replace")):
            self.counters.unexpected_product += 1
        else:
            self.counters.invalid_product += 1
        return self.unroutable()

    def products(self, channel: str, products: Sequence[str]) -> Route:
        """The stream of a parsed frame naming ``products`` on ``channel``."""
        if not products:
            return self.shared(channel)
        if len(products) > 1:
            return self.multi(channel)
        pid = products[0].encode()
        known = self.known.get(channel)
        entry = known.get(pid) if known is not None else None
        return entry.route if entry is not None else self.reject(pid)


class Router(Protocol):
    """One dialect's reader of frames: ``on_message(raw)`` is the route of ``raw`` (a closure
    over the router's state, so the hot path reads locals); the rest follows the connection's
    life. Side effects (markers, acks, errors) go through the ``FeedState`` it was built with."""

    on_message: Callable[[bytes], Route]
    multi_streams: bool
    """True where frames naming several products go to ``_multi`` (Advanced Trade)."""

    def on_connect(self) -> None:
        """A new socket: sequence and trade tracking restart."""

    def disconnect_fields(self) -> dict[str, object]:
        """Dialect fields of the DISCONNECT/STOP marker (Advanced Trade: last sequence)."""

    def after_disconnect(self) -> None:
        """After the DISCONNECT markers: report what the socket's end leaves owed."""
