"""The merge of one stream from several recordings, without I/O: dedup, order, markers.

Input: each recording's records of the stream in file order, and the remaining gaps computed
by `merge_holes`. Output: one sequence of records in receive-time order — each recording's own
order is kept (a k-way merge never reorders one input), the first copy of every message wins,
later copies are dropped, and a GAP marker stands where no recording has the data.

Duplicates are found within a window of receive time (`window_ns`, default 5 minutes): a copy
arriving more than that after the first one (clocks that far apart, or a venue resending old
data) is kept, not dropped — a duplicate, never a loss. Memory is bounded by the messages of
one stream within the window: one 16-byte identity, its counters and a time per message.
Identical messages (same identity) are counted per recording: the merge keeps as many as the
recording that has the most, so a message the venue really sent twice survives.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from storage import RecordKind
from tools.merge_holes import Remaining

_DATA = int(RecordKind.DATA)
_GAP = int(RecordKind.GAP)
_KIND_NAMES = {k.value: k.name.lower() for k in RecordKind}
DEFAULT_WINDOW_NS = 300 * 1_000_000_000

OutRecord = tuple[int, int, bytes]  # ts_ns, kind, payload


@dataclass
class StreamReport:
    """What the merge did to one stream (the per-stream lines of `cbl-merge`'s report)."""

    product: str
    channel: str
    read: list[int]
    kept: list[int]
    duplicates: list[int]
    gaps_filled: int = 0
    gaps_remaining: int = 0
    remaining: list[tuple[int, int]] = field(default_factory=list)

    def as_dict(self, roots: list[str]) -> dict[str, object]:
        return {
            "stream": f"{self.product}/{self.channel}",
            "inputs": [{"root": r, "messages": n, "kept": k, "duplicates": d}
                       for r, n, k, d in zip(roots, self.read, self.kept, self.duplicates,
                                             strict=True)],
            "messages_out": sum(self.kept), "duplicates_dropped": sum(self.duplicates),
            "gaps_filled": self.gaps_filled, "gaps_remaining": self.gaps_remaining,
            "remaining": [{"from_ns": a, "to_ns": b} for a, b in self.remaining],
        }


class Deduper:
    """First copy wins, within a window of receive time; counts per recording."""

    def __init__(self, inputs: int, window_ns: int) -> None:
        self._inputs = inputs
        self._window = window_ns
        # identity → [copies emitted, copies seen in input 0, input 1, ...]
        self._seen: dict[bytes, list[int]] = {}
        self._order: deque[tuple[int, bytes]] = deque()

    def admit(self, i: int, ts_ns: int, key: bytes) -> bool:
        """True if this copy is to be kept (more copies in input i than emitted so far)."""
        self._expire(ts_ns)
        counts = self._seen.get(key)
        if counts is None:
            counts = self._seen[key] = [0] * (self._inputs + 1)
            self._order.append((ts_ns, key))
        counts[i + 1] += 1
        if counts[i + 1] > counts[0]:
            counts[0] += 1
            return True
        return False

    def _expire(self, now_ns: int) -> None:
        order, seen, horizon = self._order, self._seen, now_ns - self._window
        while order and order[0][0] < horizon:
            seen.pop(order.popleft()[1], None)


def gap_payload(gap: Remaining, roots: list[str]) -> bytes:
    """The merged GAP marker's JSON: the span no recording covers and what each said there."""
    return orjson.dumps({
        "reason": "merge", "detail": "no merged recording has this span; messages may be "
        "missing", "from_ns": gap.from_ns, "to_ns": gap.to_ns,
        "inputs": [{"root": roots[h.input],
                    "markers": [_KIND_NAMES.get(k, f"kind{k}") for k in h.kinds]}
                   for h in gap.holes]})


def merge_stream(
    inputs: list[Iterable[tuple[int, int, bytes]]], gaps: list[Remaining],
    identity: Callable[[bytes], bytes], report: StreamReport, roots: list[str],
    window_ns: int = DEFAULT_WINDOW_NS,
) -> Iterator[OutRecord]:
    """Merged records of one stream: data of every input by receive time, deduplicated,
    with a GAP marker per remaining gap. The inputs' own markers are not copied: where one
    recording was blind and another saw, there is nothing to mark; where all were, the
    merged marker says so and names what each recording had written there."""
    dedup = Deduper(len(inputs), window_ns)
    markers = sorted((g.marker_ns, -1, _GAP, gap_payload(g, roots)) for g in gaps)

    def tagged(i: int, recs: Iterable[tuple[int, int, bytes]]) -> Iterator[
            tuple[int, int, int, bytes]]:
        for ts, kind, payload in recs:
            if kind == _DATA:
                yield ts, i, kind, payload

    streams = [tagged(i, recs) for i, recs in enumerate(inputs)]
    for ts, i, kind, payload in heapq.merge(iter(markers), *streams):
        if i < 0:
            yield ts, kind, payload
            continue
        report.read[i] += 1
        if dedup.admit(i, ts, identity(payload)):
            report.kept[i] += 1
            yield ts, kind, payload
        else:
            report.duplicates[i] += 1
