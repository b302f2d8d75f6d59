"""The storage thread's per-channel counters come from the engine's byte counts
(``Engine.extend_trusted``), markers included, and match what was handed over."""

from __future__ import annotations

import time
from pathlib import Path

from runtime_support import read_streams

from logger.sink import Sink
from storage import Engine, EngineConfig, RecordKind

FALLBACK = ("_conn0", "_unrouted")


def test_channel_counters_match_the_records_and_bytes_written(tmp_path: Path) -> None:
    sink = Sink(lambda: Engine(EngineConfig(root=tmp_path, backend="mmap")), commit_records=9,
                commit_interval_s=60)
    sink.start()
    t = time.time_ns()
    for i in range(60):
        key = (f"P{i % 4}-USD", ("level2", "ticker", "market_trades")[i % 3])
        sink.add(key, t + i, b"x" * (i * 7 % 300), FALLBACK)
        if i % 13 == 5:  # markers in the middle of a chunk
            sink.mark(key, RecordKind.GAP, t + i, b'{"event":"gap","i":%d}' % i)
    sink.close()
    want_records: dict[str, int] = {}
    want_bytes: dict[str, int] = {}
    for (_, channel), records in read_streams(tmp_path).items():
        want_records[channel] = want_records.get(channel, 0) + len(records)
        want_bytes[channel] = want_bytes.get(channel, 0) + sum(len(p) for _, _, p in records)
    assert sum(want_records.values()) == 60 + 5
    assert sink.stats.channel_records == want_records
    assert sink.stats.channel_bytes == want_bytes
