"""Where each recording of a stream may be missing messages, and which of those holes the
other recordings cover: the gap bookkeeping of `cbl-merge`, without I/O.

A recording of a stream is a sequence of data records and markers. Between two markers the
recorder saw everything (a *run*: from its first to its last data record). Any marker — a gap,
a disconnect, a reconnect, a new subscription, a drop, a note, a crash hole, a stop — ends a
run: after it the recorder vouches for nothing until its next data record. The interval from
the last data record before such markers to the first after them is the recording's *hole*.

A hole is *filled* when the other recordings' runs cover it entirely, widened by a clock
tolerance on both sides: independent boxes stamp receive times with their own clocks, and a
hole must not be declared covered because of a few milliseconds of skew. Otherwise it
*remains*, and the merged stream gets a GAP marker at the end of the hole. Overlapping
remaining holes of several recordings become one marker. Conservative by construction: a
spurious marker is possible (two unrelated holes within the tolerance), a missing one is not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from storage import RecordKind

_DATA = int(RecordKind.DATA)
_SUBSCRIBE = int(RecordKind.SUBSCRIBE)


@dataclass
class Hole:
    """Part of one recording where it may be missing messages.

    `last_ns`: its last data record before the markers (None: none, the recording starts
    with them); `next_ns`: its first data record after them (None: it ends with them);
    `marker_ns`: the time of the last of those markers; `kinds`: their kinds, in order.
    """

    input: int
    last_ns: int | None
    next_ns: int | None
    marker_ns: int
    kinds: list[int] = field(default_factory=list)

    def span(self, tolerance_ns: int) -> tuple[int, int]:
        """The interval that must be covered by others, widened by the clock tolerance."""
        lo = self.marker_ns if self.last_ns is None else self.last_ns
        hi = self.marker_ns if self.next_ns is None else self.next_ns
        return lo - tolerance_ns, hi + tolerance_ns


@dataclass
class Coverage:
    """One recording of one stream, reduced to its runs and holes."""

    input: int
    runs: list[tuple[int, int]] = field(default_factory=list)
    holes: list[Hole] = field(default_factory=list)
    data: int = 0
    markers: int = 0


#: how long before a SUBSCRIBE marker the first frames of that subscription may have been
#: stored (the venue's snapshot can arrive before the daemon has written the marker)
SETTLE_NS = 2_000_000_000


def scan(input_index: int, records: Iterable[tuple[int, int]],
         settle_ns: int = SETTLE_NS) -> Coverage:
    """Runs and holes from a recording's (ts_ns, kind) sequence, in file order.

    A SUBSCRIBE marker may be the only trace of a recorder restarted after a crash, and the
    first frames of the new subscription can precede it: the run then ends at the last data
    record more than `settle_ns` before the marker, so a crash hole is never taken for
    coverage.
    """
    cov = Coverage(input_index)
    window = _Window(settle_ns)
    run_start: int | None = None
    hole: Hole | None = None
    for ts, kind in records:
        if kind == _DATA:
            cov.data += 1
            if hole is not None:
                hole.next_ns, hole = ts, None
            if run_start is None:
                run_start = ts
            window.add(ts)
            continue
        cov.markers += 1
        if hole is None:
            end = window.last_before(ts - settle_ns) if kind == _SUBSCRIBE else window.last
            if run_start is not None and end is not None and end >= run_start:
                cov.runs.append((run_start, end))
            last = cov.runs[-1][1] if cov.runs else None
            hole = Hole(input_index, last, None, ts)
            cov.holes.append(hole)
            run_start = None
            window.clear()
        hole.marker_ns = max(hole.marker_ns, ts)
        hole.kinds.append(kind)
    if run_start is not None and window.last is not None:
        cov.runs.append((run_start, window.last))
    # a recording that starts with markers (its SUBSCRIBE) has lost nothing before them
    cov.holes = [h for h in cov.holes if h.last_ns is not None]
    return cov


class _Window:
    """The data times of the current run within `span_ns` of the latest, plus the latest one
    that left the window: enough to find the last data record before any recent time."""

    def __init__(self, span_ns: int) -> None:
        self._span = span_ns
        self._times: deque[int] = deque()
        self._older: int | None = None

    @property
    def last(self) -> int | None:
        return self._times[-1] if self._times else self._older

    def add(self, ts: int) -> None:
        times = self._times
        times.append(ts)
        while times[0] < ts - self._span:
            self._older = times.popleft()

    def last_before(self, limit: int) -> int | None:
        """The last data time below `limit` (None: none in this run)."""
        for t in reversed(self._times):
            if t < limit:
                return t
        return self._older if self._older is not None and self._older < limit else None

    def clear(self) -> None:
        self._times.clear()
        self._older = None


def _gaps_in(lo: int, hi: int, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [lo, hi] outside the union of `runs` (sorted by start)."""
    out: list[tuple[int, int]] = []
    pos = lo
    for start, end in runs:
        if pos >= hi:
            break
        if end < pos:
            continue
        if start > pos:
            out.append((pos, min(start, hi)))
        pos = max(pos, end)
    if pos < hi:
        out.append((pos, hi))
    return out


def _blind(h: Hole, others: list[tuple[int, int]], tolerance_ns: int) -> list[tuple[int, int]]:
    """Where a remaining hole is blind: the parts of its own span no other recording covers;
    if the others cover all of it and it remains only because another recording is blind
    within the tolerance of its edges, the edge it is nearest (a point gap there)."""
    lo, hi = h.span(0)
    inside = _gaps_in(lo, hi, others)
    if inside:
        return inside
    wide = _gaps_in(*h.span(tolerance_ns), others)
    return [(lo, lo) if b <= lo else (hi, hi) for _, b in wide[:1]]


@dataclass(frozen=True, slots=True)
class Remaining:
    """One GAP marker of the merged stream: where it goes and what it stands for."""

    marker_ns: int
    from_ns: int
    to_ns: int
    holes: tuple[Hole, ...]


def resolve(covers: list[Coverage], tolerance_ns: int) -> tuple[list[Hole], list[Remaining]]:
    """(filled holes, remaining gaps). A hole is filled when the other recordings' runs cover
    its span widened by the tolerance; otherwise the parts of its own span that no other
    recording covers are blind, and overlapping blind parts of all recordings become one
    merged gap, marked just after it starts (where the last recording went blind). Parts that
    only touch are separate gaps: a recording covered the instant between them (a data
    record), so a marker per part keeps each loss next to where it happened."""
    filled: list[Hole] = []
    parts: list[tuple[int, int, Hole]] = []
    for cov in covers:
        others = sorted(r for c in covers if c is not cov for r in c.runs)
        for h in cov.holes:
            lo, hi = h.span(tolerance_ns)
            if not _gaps_in(lo, hi, others):
                filled.append(h)
                continue
            parts += [(a, b, h) for a, b in _blind(h, others, tolerance_ns)]
    parts.sort(key=lambda p: (p[0], p[1]))
    gaps: list[Remaining] = []
    for a, b, h in parts:
        if gaps and a < gaps[-1].to_ns:  # touching parts are split by a covered instant
            g = gaps[-1]
            holes = g.holes if h in g.holes else (*g.holes, h)
            gaps[-1] = Remaining(g.marker_ns, g.from_ns, max(g.to_ns, b), holes)
        else:
            gaps.append(Remaining(a + 1, a, b, (h,)))
    return filled, gaps
