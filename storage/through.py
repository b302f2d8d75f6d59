"""Write-through: a stream's records straight from the caller's lists to its segment, committed
at once, when nothing stands in the way; else buffered for the next commit as usual.

Why: the sink's storage thread hands the engine each stream's share of a batch (~15 records
at 400 products) and commits once per batch. Buffering that share (two arrays, the payload
list, the dirty set) and then staging it at the commit cost ~20 us of interpreter work per
stream and commit, several times the framing itself. Here one compiled call
(``fastpath.commit_lists``) reads the two lists, frames the batch into the mapping, writes the
header hints and the commit point: the same bytes the commit would write for that stream (the
usual fast path), only sooner. Nothing about durability changes: a commit point is still
stored after the batch and hints it covers, a ``kill -9`` still leaves a committed prefix, and
``fsync_interval`` still covers the segment (the syncer is told). Streams are independent
files, so committing one before the others loses no atomicity that existed.

The usual way takes the records whenever the stream has records pending (their order must
hold), its segment for that day is not open, the batch would cross a UTC day or fill the
segment, a time-index entry is due, or the engine's backend is not its own mmap one (writes
must then go through the backend); the records are then exactly as if ``extend_trusted`` had
been called.
"""

from __future__ import annotations

from storage.lifecycle import Lifecycle
from storage.pending import Pending
from storage.stream import NS_PER_DAY, DayCache, Stream
from storage.syncer import Syncer

__all__ = ["WriteThrough"]


class WriteThrough:
    """The engine's ``write_trusted``; counts what it committed for the next commit's result."""

    __slots__ = ("_cap", "_days", "_lifecycle", "_max_batch", "_pending", "_syncer", "bytes",
                 "records")

    def __init__(self, pending: Pending, lifecycle: Lifecycle, syncer: Syncer, days: DayCache,
                 cap: int, max_batch: int) -> None:
        self._pending = pending
        self._lifecycle = lifecycle
        self._syncer = syncer
        self._days = days
        self._cap = cap
        self._max_batch = max_batch
        self.records = 0  # committed here since the last commit (its result reports them)
        self.bytes = 0  # their batch bytes, as a commit's result counts them

    def write(self, stream: Stream, ts_ns: list[int], payloads: list[bytes]) -> int:
        """``Engine.extend_trusted``'s contract (payload bytes taken; ValueError, nothing
        taken, on bad columns), the records committed now where they can be."""
        if not stream.lens and ts_ns and not self._pending.closed:
            d = ts_ns[0] // NS_PER_DAY
            seg = stream.segments.get(self._days.get(d) or self._days.date(d))
            if seg is not None:
                start = seg.end
                nbytes = seg.write_through(ts_ns, payloads, d * NS_PER_DAY, self._cap,
                                           self._max_batch)
                if nbytes >= 0:
                    self.records += len(ts_ns)
                    self.bytes += seg.end - start  # as a commit counts: batch bytes
                    if self._syncer.tracking:
                        self._syncer.wrote(seg)
                    self._lifecycle.written((seg,))
                    return nbytes
        return self._pending.extend_trusted(stream, ts_ns, payloads)

    def settle(self) -> tuple[int, int]:
        """Records and payload bytes committed here since the last call (a commit's result
        reports them)."""
        done = self.records, self.bytes
        self.records = self.bytes = 0
        return done
