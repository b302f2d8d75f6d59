"""All backends write byte-identical segment files.

The same record sequence (several streams, markers, two UTC days, batches split by
``max_batch_bytes``, rotation by ``segment_max_bytes``) goes through the real ``Engine`` once per
backend, each into its own data root; after every commit and after ``close`` the trees must be
equal file for file, byte for byte — live (preallocated, unsealed) segments included. The
records are then read back through ``SegmentReader`` to show the files hold what was written.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.backends.probe import uring_probe
from storage.engine import Engine, EngineConfig
from storage.reader import SegmentReader
from storage.records import RecordKind

URING_OK, URING_REASON = uring_probe()
BACKENDS = ["mmap", "pwrite", "uring"] if URING_OK else ["mmap", "pwrite"]
NS = 1_000_000_000
DAY1 = int(dt.datetime(2026, 11, 23, 23, 59, 50, tzinfo=dt.UTC).timestamp()) * NS
NOW = DAY1 + 20 * NS  # "now" is the next UTC day: day-one segments get sealed on commit

# (stream index, ts offset ns, kind, payload) per record; None separates commits
Step = tuple[int, int, int, bytes] | None
STREAMS = [("BTC-USD", "level2"), ("ETH-EUR", "market_trades"), ("_conn0", "heartbeats")]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _run(root: Path, backend: str, steps: list[Step]) -> list[dict[str, bytes]]:
    """Feed ``steps`` through an Engine; the tree after every commit and after close."""
    cfg = EngineConfig(
        root=root, backend=backend, first_extent_bytes=8192, max_extent_bytes=32768,
        segment_max_bytes=48 << 10, max_batch_bytes=4096,
    )
    snaps: list[dict[str, bytes]] = []
    eng = Engine(cfg)
    assert eng.backend_name == backend
    handles = [eng.stream(p, c) for p, c in STREAMS]
    for step in steps:
        if step is None:
            result = eng.commit(now_ns=NOW)
            assert not result.errors, result.errors
            snaps.append(_snapshot(root))
            continue
        s, ts, kind, payload = step
        if kind == RecordKind.DATA and len(payload) % 3 == 0:
            eng.extend(handles[s], [DAY1 + ts], [payload])
        else:
            eng.append(handles[s], DAY1 + ts, payload, RecordKind(kind))
    result = eng.close()
    assert not result.errors, result.errors
    snaps.append(_snapshot(root))
    return snaps


def _fixed_steps() -> list[Step]:
    rnd = random.Random(20261124)
    steps: list[Step] = []
    ts = 0
    for commit in range(12):
        for _ in range(rnd.randrange(1, 400)):
            ts += rnd.randrange(0, 50_000_000)  # crosses midnight after ~10 s
            kind = RecordKind.DATA if rnd.random() > 0.02 else rnd.choice(list(RecordKind))
            size = rnd.choice([0, 1, 140, 140, 300, 1024, 5000])  # 5000 > max_batch_bytes
            payload = rnd.randbytes(size) if kind == RecordKind.DATA else b'{"n":%d}' % commit
            steps.append((rnd.randrange(len(STREAMS)), ts, int(kind), payload))
        steps.append(None)
    return steps


def test_every_backend_writes_the_same_bytes(tmp_path: Path) -> None:
    if not URING_OK:
        pytest.skip(f"io_uring unavailable ({URING_REASON}); mmap and pwrite still compared")
    steps = _fixed_steps()
    runs = {b: _run(tmp_path / b, b, steps) for b in BACKENDS}
    reference = runs["mmap"]
    final = reference[-1]
    # the scenario does what it claims: two days, rotation, sealed and compared files
    assert any("2026-11-23.0001.seg" in name for name in final)
    assert any("2026-11-24" in name for name in final)
    for name in BACKENDS[1:]:
        assert len(runs[name]) == len(reference)
        for i, (got, want) in enumerate(zip(runs[name], reference, strict=True)):
            assert got.keys() == want.keys(), f"{name}: different files after commit {i}"
            for rel in want:
                assert got[rel] == want[rel], f"{name}: {rel} differs after commit {i}"
    # and the files hold exactly the records fed in, per stream, in order
    records = [step for step in steps if step is not None]
    for s, (product, channel) in enumerate(STREAMS):
        want_recs = [(DAY1 + ts, kind, payload) for si, ts, kind, payload in records if si == s]
        got_recs: list[tuple[int, int, bytes]] = []
        for path in sorted((tmp_path / "uring" / product / channel).glob("*.seg")):
            with SegmentReader.open(path) as reader:
                got_recs += [(r.ts_ns, r.kind, bytes(r.payload)) for r in reader.records()]
        assert got_recs == want_recs


_record = st.tuples(
    st.integers(0, len(STREAMS) - 1),
    st.integers(0, 30 * NS),
    st.sampled_from([int(RecordKind.DATA)] * 5 + [int(k) for k in RecordKind]),
    st.binary(max_size=600),
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(_record, max_size=60), min_size=1, max_size=6))
def test_any_commit_sequence_is_identical_across_backends(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[tuple[int, int, int, bytes]]]
) -> None:
    steps: list[Step] = []
    for batch in batches:
        ordered: list[tuple[int, int, int, bytes]] = sorted(batch, key=lambda r: r[1])
        steps.extend(ordered)
        steps.append(None)
    base = tmp_path_factory.mktemp("identical")
    runs = {b: _run(base / b, b, steps) for b in BACKENDS}
    for name in BACKENDS[1:]:
        assert runs[name] == runs["mmap"], f"{name} wrote different bytes than mmap"
