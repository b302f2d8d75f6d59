"""Record → replay → record again with the real daemon: the second recording holds the same
data messages (per stream, in order; compared without `sequence_num`, which is per connection
by nature), and no gap, disconnect or reconnect: the replay answers like the venue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from simhelpers import venue

from logger.config import load_config
from logger.daemon import Daemon
from storage import RecordKind
from storage.layout import iter_segments
from storage.reader import SegmentReader
from tools.venue.replay import ReplayConfig, ReplayServer

Streams = dict[tuple[str, str], list[tuple[int, bytes]]]


def _read(root: Path) -> Streams:
    out: Streams = {}
    for ref in iter_segments(root):
        r = SegmentReader.open(ref.path)
        try:
            out.setdefault((ref.product, ref.channel), []).extend(
                (rec.kind, rec.payload) for rec in r.records())
        finally:
            r.close()
    return out


def _data(records: list[tuple[int, bytes]]) -> list[Any]:
    """DATA payloads without the per-connection envelope field."""
    out = []
    for kind, payload in records:
        if kind == RecordKind.DATA:
            obj = orjson.loads(payload)
            obj.pop("sequence_num", None)
            out.append(obj)
    return out


def _cfg(root: Path, ws_url: str, rest_url: str, dialect: str) -> Any:
    return load_config(None, {
        "venue.dialect": dialect, "venue.ws_url": ws_url, "venue.rest_url": rest_url,
        "storage.data_dir": str(root), "storage.commit_interval_s": 0.5,
        "storage.allow_venue_change": True, "metrics.enabled": False,
        "venue.product_refresh_s": 0,
    })


async def _record_until_quiet(d: Daemon, quiet_s: float, limit_s: float) -> int:
    """Run the daemon until every subscription is answered and no message came for
    `quiet_s`; returns the reconnects seen."""
    run = asyncio.create_task(d.run())
    end = time.monotonic() + limit_s
    last, since = -1, time.monotonic()
    while time.monotonic() < end:
        await asyncio.sleep(0.2)
        ing = d.ingest
        if ing is None or d.startup is None:
            continue
        n = sum(c.stats.messages for c in ing.pool.connections.values())
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            break
    assert d.ingest is not None
    reconnects = sum(c.stats.reconnects for c in d.ingest.pool.connections.values())
    d.request_stop("test")
    assert (await run).exit_code == 0
    return reconnects


@pytest.mark.parametrize("dialect", ["advanced_trade", "exchange"])
def test_record_replay_record_gives_the_same_data(tmp_path: Path, dialect: str) -> None:
    first, second = tmp_path / "first", tmp_path / "second"

    async def main() -> int:
        async with venue(products=4, rate_msgs_per_s=400.0, seed=5, dialect=dialect) as sim:
            d = Daemon(_cfg(first, sim.ws_url, sim.rest_url, dialect))
            run = asyncio.create_task(d.run())
            await asyncio.sleep(5.0)
            d.request_stop("test")
            assert (await run).exit_code == 0
        srv = ReplayServer(ReplayConfig(root=first, speed=None, dialect=dialect,
                                        at_end="hold", ledger=False))
        await srv.start()
        try:
            return await _record_until_quiet(Daemon(_cfg(second, srv.ws_url, srv.rest_url,
                                                          dialect)), 2.0, 60.0)
        finally:
            await srv.stop()

    reconnects = asyncio.run(main())
    a, b = _read(first), _read(second)
    keys = {k for k in a if not k[0].startswith("_conn") and _data(a[k])}
    assert len([k for k in keys if not k[0].startswith("_")]) >= 8
    assert keys == {k for k in b if not k[0].startswith("_conn") and _data(b[k])}
    total = 0
    for key in sorted(keys):
        want, got = _data(a[key]), _data(b[key])
        assert got == want, (key, len(want), len(got))
        total += len(want)
    assert total > 500
    assert reconnects == 0
    for key, records in b.items():
        kinds = {kind for kind, _ in records}
        assert not kinds & {RecordKind.GAP, RecordKind.DISCONNECT, RecordKind.RECONNECT,
                            RecordKind.DROPPED}, key
