"""Staging a commit: each stream's pending records encoded into batches and placed in its
segments, collected as one :class:`CommitPlan` that the engine writes in order.

Two ways to stage a stream. The **fast path** (:meth:`Stager.stage_fast`) is the common case
in a few C-level calls: all pending records of one day, one batch, into the stream's open
segment of that day, which has room — ``format.encode_joined`` encodes the batch, then
``Segment.stage_joined`` places it and adds its writes to the plan; this pair is the one call
site of the per-stream fast path. The **general path** (:meth:`Stager.stage`) takes everything
else: records of several days, batches over ``max_batch_bytes``, a full segment (followed by
the next), a day not yet open.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from array import array
from collections.abc import Iterator
from typing import NamedTuple

from storage.backends import WriteOp
from storage.format import (
    BATCH_ALIGN,
    BATCH_HEADER_SIZE,
    HEADER_SIZE,
    batch_size,
    encode_parts,
)
from storage.lifecycle import Lifecycle
from storage.segment import Segment
from storage.stream import EPOCH, NS_PER_DAY, DayCache, Stream, day_of

__all__ = ["CommitPlan", "Stager"]


@dataclasses.dataclass(slots=True)
class CommitPlan:
    """What one commit step writes, built by the two staging paths and written as one
    (``writes``): every staged batch and header hint in one backend call, then the commit
    points, those of full segments being retired first (a crash in between leaves a prefix
    even if a backend reorders one call). Its three op lists are ``segment.PhaseOps``."""

    data_ops: list[WriteOp] = dataclasses.field(default_factory=list)
    head_ops: list[WriteOp] = dataclasses.field(default_factory=list)
    commit_ops: list[WriteOp] = dataclasses.field(default_factory=list)
    """The fast path's commit points (the general path's come from ``touched``)."""
    fast: list[Segment] = dataclasses.field(default_factory=list)
    """Segments staged by the fast path."""
    touched: list[Segment] = dataclasses.field(default_factory=list)
    """Segments staged by the general path."""
    retiring: list[Segment] = dataclasses.field(default_factory=list)
    """Full segments whose successors take the rest of their streams' records."""
    staged: list[Stream] = dataclasses.field(default_factory=list)
    nbytes: int = 0

    def segments(self) -> Iterator[Segment]:
        return itertools.chain(self.touched, self.fast)

    def writes(self) -> Iterator[list[WriteOp]]:
        """The backend calls in order (each built only once the previous one is written)."""
        head_ops = self.head_ops
        for seg in self.touched:
            head_ops += seg.header_ops()
        yield self.data_ops + head_ops if self.data_ops else head_ops
        if self.retiring:
            yield [seg.commit_op() for seg in self.retiring]
        rest = [seg.commit_op() for seg in self.touched if seg not in self.retiring]
        rest += self.commit_ops
        if rest:
            yield rest


class _DayGroup(NamedTuple):
    """One UTC day's share of a stream's pending records, as columns."""

    day: dt.date
    ts: array[int]
    kinds: bytes | None
    lens: array[int]
    blob: bytes
    bounds: tuple[int, int]


class Stager:
    """Stages streams into a plan. ``cap``: the segment size a batch may not push a non-empty
    segment past; ``max_batch``: the largest batch."""

    def __init__(self, lifecycle: Lifecycle, days: DayCache, cap: int, max_batch: int,
                 direct: bool = False) -> None:
        self._lifecycle = lifecycle
        self._days = days
        self._cap = cap
        self._max_batch = max_batch
        # the engine's own mmap backend would copy each batch into the mapping anyway: the
        # fast path frames it there directly (one copy); a backend passed in (tests and
        # benchmarks that observe writes) sees every batch as ops
        self._direct = direct

    def stage_fast(self, stream: Stream, plan: CommitPlan) -> int:
        """All pending records of one day as one batch (below ``max_batch``) into the
        stream's open segment of that day, which has room. Returns the batch length, or -1
        when the general path (:meth:`stage`) must take the stream (nothing staged then).
        OSError (full disk) before anything is staged."""
        lo, hi = stream.lo, stream.hi
        d = lo // NS_PER_DAY
        if d != hi // NS_PER_DAY:
            return -1
        seg = stream.segments.get(self._days.get(d) or self._days.date(d))
        if seg is None:
            return -1
        lens = stream.lens
        n = len(lens)
        payload_len = stream.nbytes
        total = (BATCH_HEADER_SIZE + 13 * n + payload_len + BATCH_ALIGN - 1) & ~(BATCH_ALIGN - 1)
        end = seg.staged_end
        if total > self._max_batch or (end + total > self._cap and end != HEADER_SIZE):
            return -1
        kinds = stream.kinds_column() if stream.markers else None
        seg.stage_columns((total, n, lo, hi), (stream.ts, kinds, lens, stream.payloads,
                                               payload_len), plan, self._direct)
        plan.fast.append(seg)
        return total

    def stage(self, stream: Stream, now_ns: int, plan: CommitPlan) -> int:
        """Encode the stream's pending records into batches and place them in segments.
        All-or-nothing per stream: on error every segment touched here is discarded."""
        mine: list[Segment] = []
        nbytes = 0
        lifecycle = self._lifecycle
        try:
            for day, ts, kinds, lens, blob, bounds in self._split_days(stream):
                seg = lifecycle.segment_for(stream, day, now_ns)
                ranges = self._chunks(lens, len(blob))
                for lo, hi, a, b in ranges:
                    length = batch_size(hi - lo, b - a)
                    if not seg.empty and seg.staged_end + length > self._cap:
                        if seg not in mine:
                            mine.append(seg)
                        plan.retiring.append(seg)
                        seg = lifecycle.new_segment(stream, day, now_ns)
                    # the batch's CRC binds its file offset (format v2), known only now
                    off, version = seg.staged_end, seg.version
                    if len(ranges) == 1:
                        batch = encode_parts(ts, kinds, lens, [blob], bounds, off, version)
                    else:
                        part_kinds = None if kinds is None else kinds[lo:hi]
                        batch = encode_parts(ts[lo:hi], part_kinds, lens[lo:hi], [blob[a:b]],
                                             None, off, version)
                    if seg not in mine:
                        mine.append(seg)
                    plan.data_ops += seg.stage(batch)
                    nbytes += batch.length
        except BaseException:
            for seg in mine:
                seg.discard()
            raise
        plan.touched += mine
        return nbytes

    @staticmethod
    def _split_days(stream: Stream) -> list[_DayGroup]:
        """The pending columns grouped by UTC day (one group, without copying the columns, in
        the usual case where every record falls on the same day)."""
        ts, lens = stream.ts, stream.lens
        kinds = stream.kinds_column()
        first, last = stream.lo, stream.hi
        blob = b"".join(stream.payloads)
        if first // NS_PER_DAY == last // NS_PER_DAY:
            return [_DayGroup(day_of(first), ts, kinds, lens, blob, (first, last))]
        starts = list(itertools.accumulate(lens, initial=0))
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(ts):
            groups.setdefault(t // NS_PER_DAY, []).append(i)
        out: list[_DayGroup] = []
        for d in sorted(groups):
            idx = groups[d]
            day_ts = array("q", [ts[i] for i in idx])
            out.append(_DayGroup(
                EPOCH + dt.timedelta(days=d),
                day_ts,
                None if kinds is None else bytes(kinds[i] for i in idx),
                array("I", [lens[i] for i in idx]),
                b"".join([blob[starts[i] : starts[i + 1]] for i in idx]),
                (min(day_ts), max(day_ts)),
            ))
        return out

    def _chunks(self, lens: array[int], payload_len: int) -> list[tuple[int, int, int, int]]:
        """Split records into batches of at most ``max_batch`` bytes (a record larger than
        that gets a batch of its own): (first, end) record and (start, end) byte ranges."""
        n = len(lens)
        if batch_size(n, payload_len) <= self._max_batch:
            return [(0, n, 0, payload_len)]
        out: list[tuple[int, int, int, int]] = []
        lo = a = pos = 0
        size = 0
        for i, ln in enumerate(lens):
            rec = 13 + ln
            if i > lo and BATCH_HEADER_SIZE + BATCH_ALIGN + size + rec > self._max_batch:
                out.append((lo, i, a, pos))
                lo, a, size = i, pos, 0
            size += rec
            pos += ln
        out.append((lo, n, a, pos))
        return out
