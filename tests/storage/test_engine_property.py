"""Property: any sequence of appends, markers, commits, day changes, clean restarts and crashes
(process death after the last commit) reads back as exactly the committed records, per stream
and UTC day, in commit order; after a crash, each stream the dead engine had open gets one
RESTART marker at the time of its last committed record."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st
from segment_fixtures import DAY_NS, NOON_NS

from storage import Engine, EngineConfig, RecordKind, SegmentReader, iter_segments

DAY0 = dt.date(2026, 11, 24).toordinal()  # the UTC day of NOON_NS
STREAMS = [("BTC-USD", "level2"), ("ETH-EUR", "ticker"), ("_multi", "level2")]

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("extend"), st.integers(0, 2), st.integers(0, 1),
                  st.lists(st.integers(0, 700), min_size=1, max_size=40)),
        st.tuples(st.just("marker"), st.integers(0, 2), st.integers(0, 1), st.integers(1, 6)),
        st.tuples(st.just("commit"), st.integers(0, 1)),
        st.tuples(st.just("crash")),
        st.tuples(st.just("restart")),
    ),
    max_size=40,
)


def _crash(eng: Engine) -> None:
    """What kill -9 leaves: files as the page cache has them, nothing sealed or flushed."""
    for stream in eng._streams.values():
        for seg in stream.segments.values():
            seg.close()
    for seg in eng._to_seal.values():
        seg.close()
    eng._lock.release()


def _restart_markers(
    eng: Engine, was_open: set[tuple[str, str]],
    committed: dict[tuple[int, int], list[tuple[int, int, bytes]]],
) -> list[tuple[int, int, tuple[int, int, bytes]]]:
    """The RESTART markers a fresh engine holds pending after a crash, checked: one per
    stream the dead engine had open, at its last committed record's time."""
    assert {(s.product, s.channel) for s in eng._dirty} == was_open
    out = []
    for s, key in enumerate(STREAMS):
        if key not in was_open:
            continue
        stream = eng.stream(*key)
        assert stream.pending == 1 and stream.markers == [(0, RecordKind.RESTART)]
        times = [t for (k, _), recs in committed.items() if k == s for t, _, _ in recs]
        last = max(times, default=None)
        payload = stream.payloads[0]
        assert json.loads(payload)["from_ts_ns"] == last
        ts = stream.ts[0]
        assert last is None or ts == last
        out.append((s, (ts - NOON_NS) // DAY_NS, (ts, int(RecordKind.RESTART), payload)))
    return out


@settings(max_examples=100, deadline=None)
@given(OPS, st.sampled_from([32 << 20, 1500, 1]))
# a crash leaves an unsealed segment of a day the next run does not write to: that run must
# seal it, or its clean end reads as another crash (a second RESTART) at the start after it
@example([("extend", 0, 0, [0]), ("marker", 0, 1, 1), ("commit", 0), ("extend", 0, 0, [0]),
          ("crash",), ("restart",), ("commit", 0)], 32 << 20)
@example([("extend", 0, 0, [0]), ("marker", 0, 1, 1), ("commit", 0), ("extend", 0, 0, [0]),
          ("crash",), ("restart",), ("extend", 0, 0, [0]), ("restart",)], 32 << 20)
def test_any_history_reads_back_exactly_the_committed_records(
    ops: list[tuple[object, ...]], chunk: int,
) -> None:
    """``chunk``: the default commit step, or steps so small that most commits are written in
    several (down to one record per step)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = EngineConfig(root=root, backend="mmap", segment_max_bytes=16 << 10,
                           first_extent_bytes=8192, max_extent_bytes=8192,
                           max_batch_bytes=4096, seal_stale_on_open=False,
                           commit_chunk_bytes=chunk)
        eng = Engine(cfg)
        committed: dict[tuple[int, int], list[tuple[int, int, bytes]]] = defaultdict(list)
        pending: list[tuple[int, int, tuple[int, int, bytes]]] = []
        seq = 0
        for op in ops:
            if op[0] in ("extend", "marker"):
                s, day = op[1], op[2]
                handle = eng.stream(*STREAMS[s])
                if op[0] == "extend":
                    ts = [NOON_NS + day * DAY_NS + seq + i for i in range(len(op[3]))]
                    pl = [os.urandom(n) + b"#%d" % (seq + i) for i, n in enumerate(op[3])]
                    eng.extend(handle, ts, pl)
                    pending += [(s, day, (t, 0, p)) for t, p in zip(ts, pl, strict=True)]
                    seq += len(ts)
                else:
                    t, p = NOON_NS + day * DAY_NS + seq, b'{"marker": %d}' % seq
                    eng.append(handle, t, p, op[3])
                    pending.append((s, day, (t, op[3], p)))
                    seq += 1
            elif op[0] == "commit":
                res = eng.commit(now_ns=NOON_NS + op[1] * DAY_NS)
                assert not res.errors and res.records == len(pending)
                for s, day, rec in pending:
                    committed[(s, day)].append(rec)
                pending = []
            elif op[0] == "crash":
                was_open = set(eng._streams)
                _crash(eng)
                pending = []
                eng = Engine(cfg)
                pending = _restart_markers(eng, was_open, committed)
            else:
                eng.close()
                for s, day, rec in pending:
                    committed[(s, day)].append(rec)
                pending = []
                eng = Engine(cfg)
        _crash(eng)
        for s, (product, channel) in enumerate(STREAMS):
            got: dict[int, list[tuple[int, int, bytes]]] = defaultdict(list)
            for ref in iter_segments(root, product, channel):
                day = ref.day.toordinal() - DAY0
                with SegmentReader.open(ref.path) as r:
                    got[day] += [(x.ts_ns, x.kind, x.payload) for x in r.records()]
            for day in (0, 1):
                assert got.get(day, []) == committed.get((s, day), []), (product, day)
