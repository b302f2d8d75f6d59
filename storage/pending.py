"""The records buffered and not yet committed, over all streams of an engine.

Three ways in — ``extend`` (any caller: every payload's type checked), ``extend_trusted`` (the
sink's storage thread, whose payloads are bytes by construction: once per stream and batch, the
hot path) and ``append`` (one record of any kind: markers) — validate in their own way and then
share one core, :meth:`Pending._take`: the engine-closed check, the stream's time range, the
dirty-stream order and the counts. No I/O here; a commit reads ``dirty`` and calls
:meth:`Pending.committed` for the streams it made durable.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from storage.records import RecordKind
from storage.stream import Stream

__all__ = ["Pending"]

_BYTES_ONLY = frozenset({bytes})


class Pending:
    """Which streams hold pending records (in the order of their first one), and how many."""

    __slots__ = ("closed", "dirty", "records")

    def __init__(self) -> None:
        self.dirty: dict[Stream, None] = {}
        self.records = 0
        self.closed = False

    @property
    def nbytes(self) -> int:
        """Payload bytes pending (O(streams with pending records))."""
        return sum(s.nbytes for s in self.dirty)

    def extend(self, stream: Stream, ts_ns: Sequence[int], payloads: Sequence[bytes]) -> None:
        """Buffer DATA records. TypeError/ValueError on bad input, nothing buffered."""
        n = len(payloads)
        if len(ts_ns) != n:
            raise ValueError(f"{len(ts_ns)} timestamps for {n} payloads")
        if n == 0:
            return
        try:
            ts = array("q", ts_ns)
        except OverflowError as e:
            raise ValueError(f"timestamp outside i64: {e}") from e
        if not set(map(type, payloads)) <= _BYTES_ONLY:
            raise TypeError("payloads must be bytes")
        try:
            lens = array("I", map(len, payloads))
        except OverflowError as e:
            raise ValueError(f"payload larger than 4 GiB: {e}") from e
        # min/max: cheaper on the caller's list than on the array
        self._take(stream, ts, lens, payloads, min(ts_ns), max(ts_ns))

    def extend_trusted(self, stream: Stream, ts_ns: list[int], payloads: list[bytes]) -> int:
        """:meth:`extend` without the per-payload type check, returning the payload bytes
        buffered (the caller counts them, so they are summed once). Still ValueError, nothing
        buffered, for columns of different lengths or a timestamp outside i64."""
        n = len(payloads)
        if len(ts_ns) != n:
            raise ValueError(f"{len(ts_ns)} timestamps for {n} payloads")
        if n == 0:
            return 0
        try:
            ts = array("q", ts_ns)
            lens = array("I", map(len, payloads))
        except OverflowError as e:
            raise ValueError(f"timestamp or payload length out of range: {e}") from e
        return self._take(stream, ts, lens, payloads, min(ts_ns), max(ts_ns))

    def append(self, stream: Stream, ts_ns: int, payload: bytes, kind: RecordKind) -> None:
        """Buffer one record of any kind (markers carry small JSON payloads)."""
        k = RecordKind(kind)
        if type(payload) is not bytes:
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if type(ts_ns) is not int or not -(1 << 63) <= ts_ns < (1 << 63):
            raise ValueError(f"timestamp must be an i64 int: {ts_ns!r}")
        if len(payload) > 0xFFFF_FFFF:
            raise ValueError(f"payload of {len(payload)} bytes is larger than 4 GiB")
        pos = len(stream.lens)
        self._take(stream, array("q", (ts_ns,)), array("I", (len(payload),)), (payload,),
                   ts_ns, ts_ns)
        if k is not RecordKind.DATA:
            stream.markers.append((pos, int(k)))

    def _take(self, stream: Stream, ts: array[int], lens: array[int],
              payloads: Sequence[bytes], lo: int, hi: int) -> int:
        """The shared core: validated columns (``ts`` and ``lens`` new arrays the stream may
        keep) go after the stream's pending records; returns their payload bytes."""
        if self.closed:
            raise RuntimeError("engine is closed")
        nbytes = sum(lens)
        if stream.lens:
            if lo < stream.lo:
                stream.lo = lo
            if hi > stream.hi:
                stream.hi = hi
            stream.ts += ts
            stream.lens += lens
            stream.payloads += payloads
            stream.nbytes += nbytes
        else:  # the usual case: one call per stream and commit, the columns become the stream's
            self.dirty[stream] = None
            stream.lo, stream.hi = lo, hi
            stream.ts = ts
            stream.lens = lens
            stream.payloads = list(payloads)
            stream.nbytes = nbytes
        self.records += len(lens)
        return nbytes

    def committed(self, streams: list[Stream]) -> int:
        """``streams`` are durable: clear their pending records; how many there were."""
        records = 0
        for stream in streams:
            records += len(stream.lens)
            stream.clear_pending()
        dirty = self.dirty
        if len(streams) == len(dirty):
            dirty.clear()
        else:
            for stream in streams:
                del dirty[stream]
        self.records -= records
        return records
