"""The mmap backend keeps a stream's written pages out of the daemon's RSS as it goes.

Written pages of a shared file mapping count as resident memory of the process until they are
unmapped, so without ``Segment.apply``'s madvise(MADV_DONTNEED) a daemon's RSS would grow with
the day's data. Measured here on the real mapping, from /proc/self/smaps.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from segment_fixtures import NOON_NS

from storage import Engine, EngineConfig, SegmentReader, iter_segments
from storage.segment import POPULATE_WINDOW, UNMAP_STEP


def _mapped_rss_kb(path: Path) -> int:
    """Rss of this process's mapping(s) of ``path``."""
    target = os.path.realpath(path)
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
                inside = len(head) >= 6 and head[5] == target
            elif inside and line.startswith("Rss:"):
                total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_written_pages_are_unmapped_every_step(config: EngineConfig) -> None:
    cfg = dataclasses.replace(config, backend="mmap", first_extent_bytes=64 << 10)
    payload = b"x" * 700
    n_commits, per_commit = 40, 100  # ~2.8 MB through one stream: ~11 steps
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        ts = NOON_NS
        peak = 0
        for _ in range(n_commits):
            eng.extend(s, list(range(ts, ts + per_commit)), [payload] * per_commit)
            ts += per_commit
            assert not eng.commit(NOON_NS).errors
            seg = next(iter(s.segments.values()))
            peak = max(peak, _mapped_rss_kb(seg.path))
        written = seg.end
    assert written > 10 * UNMAP_STEP
    # at most one step of written pages, the batch being written, the prefilled window
    # ahead (the kernel may map a whole page-cache folio at the first touch) and the header
    # page stay mapped; without the unmapping this would grow to ~written
    bound = UNMAP_STEP + per_commit * len(payload) + POPULATE_WINDOW + 2 * 4096
    assert peak * 1024 <= bound, (peak, bound)
    # unmapping never loses data: every record reads back
    ref = next(iter_segments(cfg.root))
    r = SegmentReader.open(ref.path)
    try:
        got = [rec.payload for rec in r.records()]
    finally:
        r.close()
    assert got == [payload] * (n_commits * per_commit)
