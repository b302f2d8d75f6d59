"""The no-silent-loss check: every frame the venue sent that is not stored must lie where a
marker in its stream says something may be missing.

The ledger (``tools.venue.ledger``) lists each frame a venue connection handed to its socket, in
order (``conn``, ``i``) with its sha256; storage holds, per stream, records in file order. A
frame that is not stored is placed in its stream between its connection's nearest stored
frames before and after it (by ``i``); when there is none before, the place starts at the last
frame of an earlier connection, and when there is none after, it ends at the first frame of a
later connection (the reconnect, or the next run) or at the stream's end (venue connection ids
grow with time, so a stream's frames from lower ids came before). The frame is **covered**
when a loss marker (GAP, DISCONNECT, DROPPED, RESTART, or a kind this code does not know) lies
in that place: a reader walking the stream meets the warning exactly where the frame is
missing. Frames the venue sent after the client stopped reading (a clean stop) count as
missing too: the stop's DISCONNECT marker covers them.

Used by the end-to-end crash and full-disk tests and by ``bench/chaos.py``.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from storage import RecordKind, SegmentReader, iter_segments
from tools.venue.ledger import FrameEntry, Ledger

__all__ = ["Coverage", "StoredStream", "check_coverage", "read_streams"]

#: Marker kinds that say records may be missing (SUBSCRIBE, RECONNECT and NOTE do not).
LOSS_KINDS = frozenset(range(1, 256)) - {
    RecordKind.RECONNECT, RecordKind.SUBSCRIBE, RecordKind.NOTE}


@dataclass
class StoredStream:
    """One stream's records in file order: kinds, receive times, payload hashes."""

    kinds: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)

    def loss_positions(self) -> list[int]:
        return [p for p, k in enumerate(self.kinds) if k in LOSS_KINDS]

    def backward_steps(self) -> int:
        """Records whose receive time is before the previous record's (a marker placed at
        the wrong time would show here; one connection feeds a stream at a time)."""
        return sum(1 for a, b in zip(self.ts, self.ts[1:], strict=False) if b < a)


def read_streams(root: Path) -> dict[tuple[str, str], StoredStream]:
    out: dict[tuple[str, str], StoredStream] = defaultdict(StoredStream)
    for ref in iter_segments(root):
        if ref.archived:
            continue
        s = out[(ref.product, ref.channel)]
        with SegmentReader.open(ref.path) as r:
            for rec in r.records():
                s.kinds.append(rec.kind)
                s.ts.append(rec.ts_ns)
                s.shas.append(hashlib.sha256(rec.payload).hexdigest()
                              if rec.kind == RecordKind.DATA else "")
    return dict(out)


@dataclass
class Coverage:
    sent: int = 0
    stored: int = 0
    missing: int = 0
    covered: int = 0
    uncovered: list[FrameEntry] = field(default_factory=list)
    markers: dict[str, int] = field(default_factory=dict)
    backward_steps: int = 0

    @property
    def covered_share(self) -> float:
        """Missing frames inside a marker-covered place (1.0 when nothing is missing)."""
        return 1.0 if not self.missing else self.covered / self.missing


def check_coverage(ledger: Path, root: Path) -> Coverage:
    led = Ledger.load(ledger)
    frames = led.frames()
    streams = read_streams(root)
    cov = Coverage(sent=len(frames))
    where: dict[str, list[tuple[tuple[str, str], int]]] = defaultdict(list)
    for key, s in streams.items():
        for pos, sha in enumerate(s.shas):
            if sha:
                where[sha].append((key, pos))
        for k in s.kinds:
            if k != RecordKind.DATA:
                name = RecordKind(k).name.lower() if k in _KNOWN else f"kind{k}"
                cov.markers[name] = cov.markers.get(name, 0) + 1
        cov.backward_steps += s.backward_steps()
    placed = _Placed()
    missing: list[FrameEntry] = []
    sent = Counter(f.sha256 for f in frames)
    ordered = sorted(frames, key=lambda f: (f.conn, f.i))
    # frames sent once and stored once first: they say which stream each connection's
    # frames of a channel go to; then byte-identical frames (e.g. the same subscriptions ack
    # on two connections) take a stored copy in their own connection's stream if there is one
    for f in ordered:
        copies = where.get(f.sha256, [])
        if sent[f.sha256] == 1 and len(copies) == 1:
            placed.add(f, *copies.pop())
            cov.stored += 1
    for f in ordered:
        if sent[f.sha256] == 1 and f.sha256 in where and not where[f.sha256]:
            continue  # placed above
        copies = where.get(f.sha256, [])
        if not copies:
            missing.append(f)
            continue
        own = placed.own_route(f)
        pick: int | None = 0 if own is None else next(
            (j for j, (key, _) in enumerate(copies) if key == own), None)
        if pick is None:  # the copies are other connections' frames: this one is missing
            missing.append(f)
            continue
        placed.add(f, *copies.pop(pick))
        cov.stored += 1
    placed.sort()
    losses = {key: s.loss_positions() for key, s in streams.items()}
    for f in missing:
        cov.missing += 1
        if any(_covered_in(placed, streams, losses, f, key) for key in placed.routes(f)):
            cov.covered += 1
        else:  # no marker where it belongs, or nothing of its kind stored: nowhere to check
            cov.uncovered.append(f)
    return cov


def _covered_in(placed: _Placed, streams: dict[tuple[str, str], StoredStream],
                losses: dict[tuple[str, str], list[int]], f: FrameEntry,
                key: tuple[str, str]) -> bool:
    """A loss marker lies in ``key`` between the frame's neighbours of its connection (or,
    without any, of the connections before and after it)."""
    is_, poss = placed.by_conn.get((f.conn, key), ([], []))
    j = bisect_left(is_, f.i)
    lo = poss[j - 1] if j else placed.last_before(key, f.conn)
    hi = poss[j] if j < len(is_) else placed.first_after(key, f.conn, lo,
                                                         len(streams[key].kinds))
    marks = losses[key]
    return bisect_right(marks, hi) > bisect_left(marks, lo + 1)


_KNOWN = frozenset(k.value for k in RecordKind)


class _Placed:
    """Stored ledger frames by (connection, stream) and by stream, for placing the missing.
    Venue connection ids grow with time, so a stream's frames from lower ids came before."""

    def __init__(self) -> None:
        self.by_conn: dict[tuple[int, tuple[str, str]], tuple[list[int], list[int]]] = {}
        self.by_stream: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        self._route: dict[tuple[int, str, tuple[str, ...]], tuple[str, str]] = {}
        self._route_any: dict[tuple[str, tuple[str, ...]], dict[tuple[str, str], None]] = {}
        self._memo: dict[tuple[object, ...], int] = {}

    def add(self, f: FrameEntry, key: tuple[str, str], pos: int) -> None:
        is_, poss = self.by_conn.setdefault((f.conn, key), ([], []))
        is_.append(f.i)
        poss.append(pos)
        self.by_stream[key].append((pos, f.conn))
        products = tuple(f.products)
        self._route[(f.conn, f.channel, products)] = key
        self._route_any.setdefault((f.channel, products), {})[key] = None

    def sort(self) -> None:
        """Each connection's frames in a stream by ``i`` (placed in two passes)."""
        for key, (is_, poss) in self.by_conn.items():
            pairs = sorted(zip(is_, poss, strict=True))
            self.by_conn[key] = ([i for i, _ in pairs], [p for _, p in pairs])

    def own_route(self, f: FrameEntry) -> tuple[str, str] | None:
        """The stream this connection's frames of that channel and products went to."""
        return self._route.get((f.conn, f.channel, tuple(f.products)))

    def routes(self, f: FrameEntry) -> list[tuple[str, str]]:
        """Where the frame belongs: its connection's stream for its channel and products;
        when none of that connection's such frames was stored, every stream that holds such
        frames of other connections only (a per-connection stream such as
        ``_conn<id>/subscriptions`` whose frames were all lost cannot be told apart from
        its siblings by the ledger, so each is a place where the frame may belong)."""
        own = self.own_route(f)
        if own is not None:
            return [own]
        keys = self._route_any.get((f.channel, tuple(f.products)), {})
        return [k for k in keys if (f.conn, k) not in self.by_conn]

    def last_before(self, key: tuple[str, str], conn: int) -> int:
        """The last position of a frame of an earlier connection in the stream, or -1."""
        memo = ("b", key, conn)
        if memo not in self._memo:
            self._memo[memo] = max((p for p, c in self.by_stream[key] if c < conn), default=-1)
        return self._memo[memo]

    def first_after(self, key: tuple[str, str], conn: int, lo: int, end: int) -> int:
        """The first position after ``lo`` of a frame of a later connection, or ``end``."""
        memo = ("a", key, conn, lo)
        if memo not in self._memo:
            self._memo[memo] = min((p for p, c in self.by_stream[key] if c > conn and p > lo),
                                   default=end)
        return self._memo[memo]
