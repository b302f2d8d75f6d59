"""The Exchange router: one frame in, its stream out; trade-id gaps become markers.

Exchange numbers trades per product (``trade_id``), and heartbeats announce the last one, so a
gap is a product's and is marked on that product's ``matches`` stream only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from logger.protocol.acks import parse_exchange_ack
from logger.protocol.actions import Marker, MarkerKind, marker_payload
from logger.protocol.names import ERROR_CHANNEL, SUBSCRIPTIONS_CHANNEL
from logger.protocol.native import ExHotPath, use_compiled
from logger.protocol.router import (
    EX_HEAD,
    EX_HEAD_LEN,
    INT_MAX,
    INT_MIN,
    PRODUCT_KEY,
    PRODUCT_KEY_LEN,
    int_after,
    parse_slow,
)
from logger.protocol.routes import Known, Route, RouteTable
from logger.protocol.sequence import TradeGap, TradeIdTracker

if TYPE_CHECKING:
    from logger.protocol.feed import FeedState

# Exchange message type codes.
(PLAIN, MATCH, LAST_MATCH, HEARTBEAT, TICKER, SHARED, ACK, ERROR) = range(8)


class ExType(NamedTuple):
    """What an Exchange ``type`` means for routing: its code and the stream channel."""

    code: int
    channel: str


EX_TYPES: Mapping[bytes, ExType] = {
    b"l2update": ExType(PLAIN, "level2_batch"),
    b"snapshot": ExType(PLAIN, "level2_batch"),
    b"match": ExType(MATCH, "matches"),
    b"last_match": ExType(LAST_MATCH, "matches"),
    b"ticker": ExType(TICKER, "ticker"),
    b"heartbeat": ExType(HEARTBEAT, "heartbeat"),
    b"auction": ExType(PLAIN, "auctionfeed"),
    b"status": ExType(SHARED, "status"),
    b"subscriptions": ExType(ACK, SUBSCRIPTIONS_CHANNEL),
    b"error": ExType(ERROR, ERROR_CHANNEL),
}
_INT_KEY: Mapping[int, bytes] = {
    MATCH: b'"trade_id":', LAST_MATCH: b'"trade_id":', HEARTBEAT: b'"last_trade_id":',
    TICKER: b'"trade_id":',
}
_INT_FIELD: Mapping[int, str] = {
    MATCH: "trade_id", LAST_MATCH: "trade_id", HEARTBEAT: "last_trade_id", TICKER: "trade_id",
}



class ExchangeRouter:
    """Routes Exchange frames of one connection (``Router``)."""

    multi_streams = False

    def __init__(self, feed: FeedState, table: RouteTable) -> None:
        self._feed = feed
        self._table = table
        self.trades = TradeIdTracker()
        self._ticker_trade: dict[bytes, int] = {}
        self._plain: dict[bytes, Known] = {
            kind: table.known[t.channel] for kind, t in EX_TYPES.items()
            if t.code == PLAIN and t.channel in table.known}
        """Types routed by product alone (no checks): type → that channel's routes."""
        self.on_message: Callable[[bytes], Route] = (
            self._compiled_hot_path() if use_compiled() else self._hot_path())

    def on_connect(self) -> None:
        self._ticker_trade.clear()  # the first ticker after subscribing repeats the last trade

    def disconnect_fields(self) -> dict[str, object]:
        return {}

    def after_disconnect(self) -> None:
        for gap in self.trades.flush_owed():  # heartbeat suspicions still in grace
            self._trade_gap(gap, "heartbeat last_trade_id, unmatched at disconnect",
                            "a heartbeat announced these trades and the socket closed before"
                            " their matches came: they may be lost; fetch them from the REST"
                            " trades endpoint")

    def _hot_path(self) -> Callable[[bytes], Route]:
        """The Exchange hot path: ``l2update`` (≈ 97 % of the feed), ``snapshot`` and in-order
        ``match`` frames in the venue's layout are routed here, everything else by ``full``.

        ``{"type":"l2update","product_id":"`` puts the id at a fixed offset: one prefix check,
        the closing byte, one ``find`` and one dict lookup. A ``match`` whose ``trade_id``
        (the first key after the type) is the next one of its product only advances the
        product's last trade id; a gap, a duplicate or a first trade goes the full way.
        ``entry[0]`` is ``entry.route`` (an index is cheaper here).
        """
        counters = self._feed.counters
        full = self.full
        l2_known = self._table.known.get("level2_batch", {})  # mutated in place
        match_known = self._table.known.get("matches", {})
        last_trade = self.trades.last
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

    def _compiled_hot_path(self) -> Callable[[bytes], Route]:
        """``_hot_path`` compiled (``native``): the same decisions and side effects on the same
        objects, several times cheaper per frame (bench/routing.py)."""
        table = self._table
        return ExHotPath(self._feed.counters, table.known.get("level2_batch", {}),
                         table.known.get("matches", {}), self.trades.last, self.full)

    def full(self, raw: bytes) -> Route:
        """Every Exchange frame the fast paths decline (any type, any layout)."""
        if not raw.startswith(EX_HEAD) or not raw.endswith(b"}"):
            return self._slow(raw)
        j = raw.find(b'"', EX_HEAD_LEN)
        kind = raw[EX_HEAD_LEN:j]
        known = self._plain.get(kind)
        if known is not None:  # level2 and auctions: the bulk of the feed, nothing to check
            p = raw.find(PRODUCT_KEY, j)
            if p < 0:
                return self._slow(raw)
            p += PRODUCT_KEY_LEN
            pid = raw[p:raw.find(b'"', p)]
            entry = known.get(pid)
            return entry.route if entry is not None else self._table.reject(pid)
        spec = EX_TYPES.get(kind)
        if spec is None:
            return self._table.unroutable(unknown=True)
        if spec.code >= SHARED:
            if spec.code == SHARED:
                return self._table.shared(spec.channel)
            return self._slow(raw)
        p = raw.find(PRODUCT_KEY, j)
        if p < 0:
            return self._slow(raw)
        p += PRODUCT_KEY_LEN
        pid = raw[p:raw.find(b'"', p)]
        return self._product(spec, pid, int_after(raw, _INT_KEY[spec.code], j))

    def _slow(self, raw: bytes) -> Route:
        parsed = parse_slow(raw, "type", "sequence")
        table = self._table
        if parsed is None:
            return table.unroutable(malformed=True)
        spec = EX_TYPES.get(parsed.channel.encode()) if parsed.channel is not None else None
        if spec is None:
            return table.unroutable(unknown=True)
        obj = parsed.obj
        if spec.code == SHARED:
            return table.shared(spec.channel)
        if spec.code == ACK:
            self._feed.apply_ack(parse_exchange_ack(obj, self._feed.dialect.ack_aliases))
            return table.subscriptions
        if spec.code == ERROR:
            self._feed.error_frame(obj)
            return table.error
        pid = obj.get("product_id")
        if not isinstance(pid, str):
            return table.unroutable(unknown=True)
        field = _INT_FIELD.get(spec.code)
        value = obj.get(field) if field is not None else None
        if isinstance(value, str) and value.isdigit() and len(value) <= 19:
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not (
                INT_MIN <= value <= INT_MAX):
            value = None
        return self._product(spec, pid.encode(), value)

    def _product(self, spec: ExType, pid: bytes, value: int | None) -> Route:
        code = spec.code
        channel = self._ticker_channel(pid, value) if code == TICKER else spec.channel
        known = self._table.known.get(channel)
        entry = known.get(pid) if known is not None else None
        if entry is None:
            return self._table.reject(pid)
        route = entry.route
        if value is None:
            return route
        if code in (MATCH, LAST_MATCH):
            result = self.trades.on_trade(route[0], value, baseline=code == LAST_MATCH)
            if isinstance(result, TradeGap):
                self._trade_gap(result, "trade_id")
            elif result is False:
                self._feed.counters.late += 1
                late = marker_payload({
                    "event": "late", "conn": self._feed.conn_id, "trade_id": value,
                    "note": "trade arrived after a later one: duplicate or out of order",
                })
                self._feed.actions.append(Marker(route[0], "matches", MarkerKind.NOTE, late))
        elif code == HEARTBEAT:
            gap = self.trades.on_heartbeat(route[0], value)
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
        in_ticker = pid in self._table.known.get("ticker", {})
        in_batch = pid in self._table.known.get("ticker_batch", {})
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
        feed = self._feed
        feed.counters.gaps += 1
        feed.counters.missing += missing
        feed.actions.append(Marker(gap.product, "matches", MarkerKind.GAP, marker_payload({
            "event": "gap", "conn": feed.conn_id, "dialect": feed.dialect.name,
            "scope": "product", "product": gap.product, "channel": "matches",
            "first_missing_trade_id": gap.first, "last_missing_trade_id": gap.last,
            "missing_trades": missing, "detected_by": detected_by, "note": note,
        })))
