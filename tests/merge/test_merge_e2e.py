"""Two daemons record the same simulator, each with its own faults; cbl-merge makes one root.

The simulator's ledger says what was sent on every connection. Each daemon loses different
frames (a venue-side gap, a reset connection, a kill -9 and restart); at one moment both are
killed together, so some frames are lost by both. The merged root must hold every message that
either recording has, each once (no duplicate beyond what the venue itself repeated), nothing
that was not sent, and a GAP marker wherever both were blind.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

from e2e_harness import DaemonProc, Sim, ledger_frames, start_daemon, start_sim  # noqa: E402

from storage.archive import open_any  # noqa: E402
from storage.layout import iter_segments  # noqa: E402
from storage.records import RecordKind  # noqa: E402
from tools.merge_cli import main as merge  # noqa: E402
from tools.merge_identity import identity  # noqa: E402

pytestmark = pytest.mark.slow

SETS = ("storage.commit_interval_s=1.0", "connections.backoff_base_s=0.1")
Streams = dict[tuple[str, str], list[tuple[int, int, bytes]]]


def read(root: Path) -> Streams:
    out: Streams = defaultdict(list)
    for ref in iter_segments(root):
        r = open_any(ref.path)
        try:
            out[(ref.product, ref.channel)] += [(x.ts_ns, x.kind, x.payload) for x in r.records()]
        finally:
            r.close()
    return dict(out)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _daemon(sim: Sim, root: Path, dialect: str) -> DaemonProc:
    d = start_daemon(sim, root, dialect=dialect, sets=SETS)
    d.wait_for("event=all_acknowledged", 30)
    return d


def _record_pair(tmp: Path, dialect: str, faults: str) -> tuple[Sim, Path, Path]:
    """A and B record one venue; A is killed and restarted; later both are killed together."""
    # two recorders from one IP: the venue's per-IP limits would refuse the second one here
    sim = start_sim(tmp, dialect=dialect, products=4, rate=300, duration=60, faults=faults,
                    extra=("--no-limits",))
    a_root, b_root = tmp / "a", tmp / "b"
    procs: list[DaemonProc] = []
    try:
        a = _daemon(sim, a_root, dialect)      # connections c0, c1
        b = _daemon(sim, b_root, dialect)      # connections c2, c3
        procs += [a, b]
        time.sleep(3)
        a.proc.send_signal(signal.SIGKILL)     # A's last second is lost; B has it
        a.proc.wait(10)
        time.sleep(0.5)
        a = _daemon(sim, a_root, dialect)
        procs.append(a)
        time.sleep(2.5)
        for d in (a, b):                       # both blind at once: lost by every input
            d.proc.send_signal(signal.SIGKILL)
        for d in (a, b):
            d.proc.wait(10)
        time.sleep(0.5)
        a = _daemon(sim, a_root, dialect)
        b = _daemon(sim, b_root, dialect)
        procs += [a, b]
        time.sleep(2)
        for d in (a, b):
            assert d.terminate() == 0, d.log()
    finally:
        for d in procs:
            if d.proc.poll() is None:
                d.proc.kill()
        sim.stop()
    return sim, a_root, b_root


def _data(streams: Streams) -> dict[tuple[str, str], list[bytes]]:
    out = {k: [p for _, kind, p in recs if kind == RecordKind.DATA] for k, recs in
           streams.items()}
    return {k: v for k, v in out.items() if v}


def _check_union(a: Streams, b: Streams, m: Streams, key: object) -> None:
    """Per stream: merged identities = A's ∪ B's, each as often as the input that has most."""
    da, db, dm = _data(a), _data(b), _data(m)
    assert set(dm) == set(da) | set(db)
    for stream, msgs in dm.items():
        got = Counter(key(p) for p in msgs)  # type: ignore[operator]
        want = Counter(key(p) for p in da.get(stream, []))  # type: ignore[operator]
        want |= Counter(key(p) for p in db.get(stream, []))  # type: ignore[operator]
        assert got == want, stream


def _merged_gaps(m: Streams) -> list[dict[str, object]]:
    return [orjson.loads(p) for recs in m.values() for _, kind, p in recs
            if kind == RecordKind.GAP]


def _check_lost_frames(frames: list, inputs: list[Streams], m: Streams,  # type: ignore[type-arg]
                       key: Callable[[bytes], bytes]) -> tuple[int, int]:
    """Every frame the ledger has but no recording stored is either recovered (its event is in
    the merged stream under another connection's copy) or marked. The venue sends a stream's
    events in the same order on every connection, so between the lost frame's surviving
    neighbours on its own connection the merged stream must hold at least as many messages as
    the venue sent there, or a GAP marker. Returns (recovered, marked)."""
    payload = {sha(p): p for s in inputs for msgs in _data(s).values() for p in msgs}
    where: dict[bytes, tuple[tuple[str, str], int]] = {}
    for stream, recs in m.items():
        for n, (_, kind, p) in enumerate(recs):
            if kind == RecordKind.DATA:
                where.setdefault(key(p), (stream, n))
    by_conn: dict[tuple[int, str, str], list] = defaultdict(list)  # type: ignore[type-arg]
    for f in frames:
        by_conn[(f.conn, f.channel, ",".join(f.products))].append(f)
    recovered = marked = 0
    for fs in by_conn.values():
        kept = [n for n, f in enumerate(fs) if f.sha256 in payload]
        for n, f in enumerate(fs):
            if f.sha256 in payload:
                continue
            before = [k for k in kept if k < n]
            if not before:
                continue  # nothing of this connection survived before it
            stream, pos = where[key(payload[fs[before[-1]].sha256])]
            after = [k for k in kept if k > n and where[key(payload[fs[k].sha256])][0] == stream
                     and where[key(payload[fs[k].sha256])][1] > pos]
            end = where[key(payload[fs[after[0]].sha256])][1] if after else len(m[stream])
            between = [kind for _, kind, _ in m[stream][pos + 1:end]]
            lo = m[stream][pos][0]
            hi = m[stream][end][0] if end < len(m[stream]) else 1 << 63
            if RecordKind.GAP in between or any(
                    g["from_ns"] <= hi and g["to_ns"] >= lo for g in _gaps_of(m[stream])):
                marked += 1  # a marker between its neighbours, or a marked span over them
            else:
                assert after and len(between) >= after[0] - before[-1] - 1, (stream, f)
                recovered += 1
    return recovered, marked


def _gaps_of(recs: list[tuple[int, int, bytes]]) -> list[dict[str, int]]:
    return [orjson.loads(p) for _, kind, p in recs if kind == RecordKind.GAP]


def _merge(tmp: Path, a: Path, b: Path) -> tuple[Streams, str]:
    out = tmp / "merged"
    assert merge([str(a), str(b), "--out", str(out), "--json"]) == 0
    return read(out), str(out)


def test_exchange_merged_is_the_ledger_minus_what_both_lost(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    faults = "seq_skip:20@c0/100,abnormal_close@c3/400"
    sim, a_root, b_root = _record_pair(tmp_path, "exchange", faults)
    frames, fired = ledger_frames(sim.ledger)
    assert {f["fault"] for f in fired} >= {"seq_skip", "abnormal_close"}
    m, _ = _merge(tmp_path, a_root, b_root)
    out, _ = capfd.readouterr()
    a, b = read(a_root), read(b_root)
    _check_union(a, b, m, lambda p: p)            # exchange identity: the bytes
    sent = {f.sha256 for f in frames}
    stored = {sha(p) for s in (a, b) for msgs in _data(s).values() for p in msgs}
    merged = {sha(p) for msgs in _data(m).values() for p in msgs}
    assert merged <= sent                          # nothing the venue did not send
    assert merged == stored                        # everything any recording has
    assert sent - stored, "the simultaneous kill lost nothing: the scenario did not happen"
    _, marked = _check_lost_frames(frames, [a, b], m, lambda p: p)
    assert marked > 0
    reports = [orjson.loads(line) for line in out.splitlines()]
    assert sum(r["gaps_filled"] for r in reports) > 0
    assert sum(r["duplicates_dropped"] for r in reports) > 0
    assert all(g["reason"] == "merge" for g in _merged_gaps(m))


def test_advanced_trade_merge_fills_each_others_holes(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    faults = "seq_skip:3@c0/100,abnormal_close@c3/400"
    sim, a_root, b_root = _record_pair(tmp_path, "advanced_trade", faults)
    frames, _ = ledger_frames(sim.ledger)
    m, _ = _merge(tmp_path, a_root, b_root)
    out, _ = capfd.readouterr()
    a, b = read(a_root), read(b_root)
    _check_union(a, b, m, lambda p: identity("advanced_trade", p))
    sent = {f.sha256 for f in frames}
    assert {sha(p) for msgs in _data(m).values() for p in msgs} <= sent
    # every frame no recording stored is recovered or lies where the merged stream is marked
    _, marked = _check_lost_frames(frames, [a, b], m, lambda p: identity("advanced_trade", p))
    assert marked > 0
    # book updates and trades seen by both are stored once, whatever their sequence_num
    l2 = [p for (_, ch), msgs in _data(m).items() if ch == "level2" for p in msgs]
    assert len(l2) == len({identity("advanced_trade", p) for p in l2})
    reports = [orjson.loads(line) for line in out.splitlines()]
    assert sum(r["gaps_filled"] for r in reports) > 0
    assert sum(r["duplicates_dropped"] for r in reports) > 0.3 * sum(
        r["messages_out"] for r in reports)
    gaps = _merged_gaps(m)
    assert gaps and all(len(g["inputs"]) >= 1 for g in gaps)  # type: ignore[arg-type]
    # where both were killed together, the merged gap names both recordings
    assert any({i["root"] for i in g["inputs"]} == {str(a_root), str(b_root)}  # type: ignore[union-attr]
               for g in gaps)
