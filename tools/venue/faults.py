"""Fault injection: the ``--faults`` spec, per-connection schedules and the broken frames.

Spec grammar (items separated by commas; see docs/SIMULATOR.md)::

    ITEM  := KIND [":" ARG] "@" [ "c" CONN "/" ] ( INDEX | "*" PERIOD )

``INDEX`` is the frame index on a connection (0 = first frame sent after the upgrade) at which
the fault fires once; ``*PERIOD`` fires at PERIOD, 2·PERIOD, ...; ``cN/`` limits the item to
connection N (connections are numbered from 0 in accept order), otherwise it applies to every
connection. Kinds and their ARG:

=================  ==============================================================  =========
kind               what the venue does at frame index i                            ARG
=================  ==============================================================  =========
seq_skip           AT: ``sequence_num`` jumps by N; Exchange: the next N frames     N (1)
                   carrying a ``sequence`` are not sent
close              close frame (code) then TCP close                               code 1000
abnormal_close     TCP close without a close frame (client sees 1006)              —
stall              silence for S seconds, connection kept open                     S (2.0)
malformed          ``bad_json`` | ``truncated`` | ``binary`` frame                  bad_json
oversize           a valid level2 snapshot frame of at least B bytes               B (11 MiB)
error_reply        an ``error`` frame with this message                            venue's
hostile_product    a ticker frame for ``dotdot`` (../x) | ``long`` | ``nonascii``   dotdot
ping_flood         pings as fast as the socket takes them for S seconds, without   S (5.0)
                   reading the client's pongs meanwhile (data keeps flowing)
slow_rest          REST request number INDEX (0 = the first, counted per venue,    S (5.0)
                   ``cN/`` not allowed) answered one body byte every S seconds
=================  ==============================================================  =========

``slow_rest`` is the one kind not counted in frames: its INDEX (and PERIOD) count REST
requests, so ``slow_rest:5@*1`` trickles every answer and ``slow_rest:5@0`` only the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from tools.venue.ledger import FAULT_KINDS
from tools.venue.wsframe import OP_BINARY, OP_TEXT

MALFORMED = ("bad_json", "truncated", "binary")
HOSTILE = {"dotdot": "../x", "long": "X" * 300 + "-USD", "nonascii": "BTC-ÜSD€"}
DEFAULT_OVERSIZE = 11 * 1024 * 1024
_ITEM = re.compile(r"^(?P<kind>[a-z_]+)(?::(?P<arg>[^@]*))?@(?:c(?P<conn>\d+)/)?"
                   r"(?P<every>\*)?(?P<at>\d+)$")


class FaultSpecError(ValueError):
    """A ``--faults`` item that does not parse; the message names the item."""


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    at: int
    every: int | None = None
    conn: int | None = None
    arg: str | None = None


def _check_arg(kind: str, arg: str | None, item: str) -> None:
    try:
        if kind == "seq_skip" and arg is not None and int(arg) < 1:
            raise ValueError
        if kind in ("stall", "ping_flood", "slow_rest") and arg is not None and \
                not 0 < float(arg) < 1e6:
            raise ValueError
        if kind == "oversize" and arg is not None and int(arg) < 1:
            raise ValueError
        if kind == "close" and arg is not None and not 1000 <= int(arg) <= 4999:
            raise ValueError
    except ValueError:
        raise FaultSpecError(f"bad argument {arg!r} for {kind} in {item!r}") from None
    if kind == "malformed" and arg is not None and arg not in MALFORMED:
        raise FaultSpecError(f"malformed takes one of {', '.join(MALFORMED)}, got {arg!r}")
    if kind == "hostile_product" and arg is not None and arg not in HOSTILE:
        raise FaultSpecError(f"hostile_product takes one of {', '.join(HOSTILE)}, got {arg!r}")
    if kind == "abnormal_close" and arg:
        raise FaultSpecError(f"abnormal_close takes no argument: {item!r}")


REST_KINDS = ("slow_rest",)
"""Faults scheduled by REST request number instead of by frame index."""


def frame_faults(specs: list[FaultSpec]) -> list[FaultSpec]:
    """The faults a WebSocket session schedules by frame index."""
    return [s for s in specs if s.kind not in REST_KINDS]


def rest_faults(specs: list[FaultSpec]) -> list[FaultSpec]:
    """The faults scheduled by REST request number."""
    return [s for s in specs if s.kind in REST_KINDS]


def parse_faults(spec: str | None) -> list[FaultSpec]:
    """Parse a ``--faults`` spec; empty or None means no faults."""
    out: list[FaultSpec] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        m = _ITEM.match(item)
        if m is None:
            raise FaultSpecError(f"cannot parse fault {item!r}: expected KIND[:ARG]@[cN/]INDEX "
                                 f"or KIND[:ARG]@[cN/]*PERIOD")
        kind = m["kind"]
        if kind not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault kind {kind!r} in {item!r}; "
                                 f"kinds: {', '.join(FAULT_KINDS)}")
        arg = m["arg"] or None
        _check_arg(kind, arg, item)
        if kind in REST_KINDS and m["conn"]:
            raise FaultSpecError(f"{kind} counts REST requests, not connections: {item!r}")
        at = int(m["at"])
        every = at if m["every"] else None
        if every == 0:
            raise FaultSpecError(f"period must be >= 1 in {item!r}")
        out.append(FaultSpec(kind, at, every, int(m["conn"]) if m["conn"] else None, arg))
    return out


class FaultSchedule:
    """The faults due on one connection, checked once per frame by a single comparison."""

    __slots__ = ("_pending", "next_at")

    def __init__(self, specs: list[FaultSpec], conn: int) -> None:
        self._pending: list[tuple[int, int, FaultSpec]] = sorted(
            (s.at, n, s) for n, s in enumerate(specs) if s.conn is None or s.conn == conn)
        self.next_at = self._pending[0][0] if self._pending else 1 << 62

    def due(self, i: int) -> list[FaultSpec]:
        """Faults firing at frame index `i` (call only when ``i >= next_at``)."""
        fired: list[FaultSpec] = []
        while self._pending and self._pending[0][0] <= i:
            _, n, spec = self._pending.pop(0)
            fired.append(spec)
            if spec.every:
                self._pending.append((i + spec.every, n, spec))
                self._pending.sort()
        self.next_at = self._pending[0][0] if self._pending else 1 << 62
        return fired


@dataclass
class FaultFrame:
    """A frame a fault puts on the wire; ``seq_used`` = it consumed an AT sequence_num."""

    opcode: int
    payload: bytes
    channel: str
    products: tuple[str, ...]
    seq: int | None


def fault_frame(spec: FaultSpec, dialect: str, seq: int, stamp: bytes,
                product: str) -> FaultFrame:
    """The frame sent by a `malformed`, `oversize`, `error_reply` or `hostile_product` fault.

    `seq` is the connection's next AT ``sequence_num``; `stamp` an RFC 3339 timestamp; `product`
    a product the connection holds (for oversize).
    """
    at = dialect == "advanced_trade"
    ts = stamp.decode()
    if spec.kind == "malformed":
        kind = spec.arg or "bad_json"
        if kind == "binary":
            return FaultFrame(OP_BINARY, bytes(range(256)) * 4, "_binary", (), None)
        if kind == "bad_json":
            bad = (b'{"channel":"ticker","timestamp":"%s","sequence_num":,"events":[{"type":'
                   % stamp if at else b'{"type":"ticker","product_id":"BTC-USD","price":}')
            return FaultFrame(OP_TEXT, bad, "_malformed", (), None)
        whole = _ticker(at, seq, ts, product)
        return FaultFrame(OP_TEXT, whole[: len(whole) // 2], "_malformed", (), None)
    if spec.kind == "error_reply":
        if at:
            body = orjson.dumps({"type": "error", "message": spec.arg or "failure to subscribe"})
        else:
            body = orjson.dumps({"type": "error", "message": "Failed to subscribe",
                                 "reason": spec.arg or f"{product} is delisted"})
        return FaultFrame(OP_TEXT, body, "error", (), None)
    if spec.kind == "hostile_product":
        pid = HOSTILE[spec.arg or "dotdot"]
        return FaultFrame(OP_TEXT, _ticker(at, seq, ts, pid), "ticker", (pid,),
                          seq if at else 7)
    if spec.kind == "oversize":
        size = int(spec.arg) if spec.arg else DEFAULT_OVERSIZE
        return _oversize(at, seq, ts, product, size)
    raise ValueError(f"{spec.kind} sends no frame")


def _ticker(at: bool, seq: int, ts: str, pid: str) -> bytes:
    if at:
        return orjson.dumps({"channel": "ticker", "timestamp": ts, "sequence_num": seq,
                             "events": [{"type": "update", "tickers": [{
                                 "type": "ticker", "product_id": pid, "price": "1.0",
                                 "volume_24_h": "1", "low_24_h": "1", "high_24_h": "1",
                                 "low_52_w": "1", "high_52_w": "1",
                                 "price_percent_chg_24_h": "0", "best_bid": "0.9",
                                 "best_ask": "1.1", "best_bid_quantity": "1",
                                 "best_ask_quantity": "1"}]}]})
    return orjson.dumps({"type": "ticker", "sequence": 7, "product_id": pid, "price": "1.0",
                         "open_24h": "1", "volume_24h": "1", "low_24h": "1", "high_24h": "1",
                         "volume_30d": "1", "best_bid": "0.9", "best_bid_size": "1",
                         "best_ask": "1.1", "best_ask_size": "1", "side": "buy", "time": ts,
                         "trade_id": 1, "last_size": "1"})


def _oversize(at: bool, seq: int, ts: str, pid: str, size: int) -> FaultFrame:
    """A well-formed level2 snapshot of at least `size` bytes (a huge book, as BTC-USD's)."""
    pid_json = orjson.dumps(pid)
    tsb = ts.encode()
    if at:
        level = (b'{"side":"bid","event_time":"' + tsb
                 + b'","price_level":"%d.01","new_quantity":"1.5"}')
        n = size // (len(level) - 1) + 1
        ups = b",".join(level % (100000 - k % 100000) for k in range(n))
        body = (b'{"channel":"l2_data","timestamp":"%s","sequence_num":%d,"events":[{"type":'
                b'"snapshot","product_id":%s,"updates":[%s]}]}' % (tsb, seq, pid_json, ups))
        return FaultFrame(OP_TEXT, body, "l2_data", (pid,), seq)
    n = size // 20 + 1
    bids = b",".join(b'["%d.01","1.5"]' % (100000 - k % 100000) for k in range(n))
    body = (b'{"type":"snapshot","product_id":%s,"asks":[],"bids":[%s],"time":"%s"}'
            % (pid_json, bids, tsb))
    return FaultFrame(OP_TEXT, body, "snapshot", (pid,), None)
