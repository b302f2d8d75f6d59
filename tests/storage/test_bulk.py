"""storage.bulk: whole batches as columns give exactly the records `records()` gives, from a
live segment and from its archive, and stop at a damaged batch as `records()` does."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from segment_fixtures import NOON_NS

from storage import (
    Engine,
    EngineConfig,
    RecordKind,
    SegmentReader,
    bulk,
    iter_segments,
)
from storage.archive import open_any
from storage.compact import compact_segment


def _fill(root: Path) -> Path:
    cfg = EngineConfig(root=root, backend="mmap", seal_stale_on_open=False)
    with Engine(cfg) as eng:
        s = eng.stream("BTC-USD", "level2")
        for c in range(4):
            ts = [NOON_NS + (c * 10 + i) * 1000 for i in range(10)]
            eng.extend(s, ts, [os.urandom(c * 7 + i) for i in range(10)])  # one empty payload
            if c == 2:
                eng.append(s, NOON_NS + 29_500, b'{"why":"test"}', RecordKind.GAP)
            assert not eng.commit(now_ns=NOON_NS).errors
    [ref] = iter_segments(root)
    return ref.path


def _flat(batches: list[bulk.RecordBatch]) -> list[object]:
    return [r for b in batches for r in b.records()]


def test_batches_hold_the_records_of_a_segment_and_its_archive(root: Path) -> None:
    path = _fill(root)
    with SegmentReader.open(path) as r:
        want = list(r.records())
        got = list(bulk.batches(r))
    assert _flat(got) == want
    assert [b.all_data() for b in got] == [True, True, False, True]
    for b in got:
        assert b.payloads == b"".join(rec.payload for rec in b.records())
    compact_segment(path, today=dt.date(2026, 11, 26))
    [ref] = iter_segments(root)
    assert ref.archived
    with open_any(ref.path) as a:
        assert _flat(list(bulk.batches(a))) == want


def test_a_damaged_batch_costs_that_batch_only_and_is_noted(root: Path) -> None:
    path = _fill(root)
    with SegmentReader.open(path) as r:
        infos = list(r.batches())
        want = [rec for rec in r.records() if not
                infos[1].offset <= rec.offset < infos[1].offset + infos[1].length]
    second = infos[1]
    with open(path, "r+b") as f:
        f.seek(second.offset + 60)
        f.write(b"\xff\xff")
    with SegmentReader.open(path) as r:
        got = list(bulk.batches(r))
        assert [d.offset for d in r.damage] == [second.offset]
    assert len(got) == len(infos) - 1 and _flat(got) == want
