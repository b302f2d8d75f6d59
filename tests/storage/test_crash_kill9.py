"""The real crash test: a child appending at full speed is killed with SIGKILL at random
moments, over and over on the same data root. After every kill, each stream holds exactly the
records committed before the kill (or also those of the commit in flight, if its commit point
was already stored), in order, with valid CRCs, and nothing else; the next child recovers and
carries on from there. Each restart after a kill writes one RESTART marker into every stream,
right after its last committed record, naming that record's time."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import traceback
from pathlib import Path

from crash_child import STREAMS, payload, run

from storage import RecordKind, SegmentReader, iter_segments
from storage.recovery import recover_buffer

KILLS = 22


#: Sealed segments already verified: path -> (size, mtime_ns, records). Sealed files are
#: immutable, so re-reading them after every kill would only make the test quadratic.
_Rec = tuple[int, int, bytes]  # kind, ts, payload
_Verified = dict[Path, tuple[int, int, list[_Rec]]]


def _stream_records(root: Path, product: str, channel: str, seen: _Verified) -> list[bytes]:
    """The stream's DATA payloads, after checking each RESTART marker follows the record
    whose time it names (or starts the stream when nothing was committed before it)."""
    out: list[_Rec] = []
    for ref in iter_segments(root, product, channel):
        st = ref.path.stat()
        cached = seen.get(ref.path)
        if cached is not None and cached[:2] == (st.st_size, st.st_mtime_ns):
            out += cached[2]
            continue
        image = ref.path.read_bytes()
        assert recover_buffer(image).corrupt_at is None, ref.path
        with SegmentReader.open(ref.path) as r:  # reads up to the commit point, CRC-checked
            got = [(x.kind, x.ts_ns, bytes(x.payload)) for x in r.records()]
            if r.header.sealed:
                seen[ref.path] = (st.st_size, st.st_mtime_ns, got)
        out += got
    data: list[bytes] = []
    last_ts: int | None = None
    for kind, ts, p in out:
        if kind == RecordKind.RESTART:
            marker = json.loads(p)
            assert marker["reason"] == "unclean_shutdown"
            assert marker["from_ts_ns"] == last_ts and ts == (last_ts or ts), (product, marker)
            assert marker["to_ts_ns"] >= ts
            restarts[(product, channel)] = restarts.get((product, channel), 0) + 1
        else:
            assert kind == RecordKind.DATA
            data.append(p)
            last_ts = ts
    return data


restarts: dict[tuple[str, str], int] = {}


def _committed_count(root: Path, seen: _Verified) -> list[int]:
    """Per stream: how many records are on disk, after checking they are the exact prefix."""
    counts = []
    for s, (product, channel) in enumerate(STREAMS):
        got = _stream_records(root, product, channel, seen)
        expected = [payload(g) for g in range(s, s + 3 * len(got), 3)]
        assert got == expected, f"{product}/{channel}: records differ from the committed prefix"
        counts.append(len(got))
    return counts


def _restarts(root: Path) -> list[int]:
    restarts.clear()
    _committed_count(root, {})
    return [restarts.get(s, 0) for s in STREAMS]


def _per_stream(n: int, s: int) -> int:
    """How many of records 0..n-1 belong to stream s."""
    return len(range(s, n, 3))


def _fork_child(root: Path, have: list[int], stop: int | None = None) -> tuple[int, int]:
    """Fork a child running crash_child.run (forked, so no interpreter start-up per kill);
    return (pid, read end of its report pipe)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            with os.fdopen(w, "w") as out:
                run(root, have, stop, out)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _run_and_kill(root: Path, have: list[int], rng: random.Random) -> tuple[int, int]:
    """Start a child, kill it at a random moment after its first commit; return (last
    reported committed n, last begun n)."""
    pid, r = _fork_child(root, have)
    first_commit = threading.Event()
    lines: list[str] = []

    def pump() -> None:
        with os.fdopen(r, "r") as f:
            for line in f:
                lines.append(line)
                if line.startswith("C "):
                    first_commit.set()

    reader = threading.Thread(target=pump)
    reader.start()
    ok = first_commit.wait(60)
    if ok:
        time.sleep(rng.uniform(0.0, 0.08))
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    reader.join()
    assert ok, "child never committed"
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    committed = begun = 0
    for line in lines:
        kind, n = line.split()
        if kind == "C":
            committed = int(n)
        else:
            begun = int(n)
    return committed, max(begun, committed)


def test_kill_9_at_random_moments_loses_nothing_committed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    rng = random.Random(20261124)
    have = [0, 0, 0]
    seen: _Verified = {}
    for _ in range(KILLS):
        committed, begun = _run_and_kill(root, have, rng)
        counts = _committed_count(root, seen)
        for s, n in enumerate(counts):
            allowed = {max(have[s], _per_stream(committed, s)), max(have[s], _per_stream(begun, s))}
            assert n in allowed, (
                f"stream {s}: {n} records on disk; committed {committed}, in flight {begun}"
            )
        have = counts
    final = max(3 * h + s for s, h in enumerate(have)) + 3000
    pid, r = _fork_child(root, have, final)
    with os.fdopen(r, "r") as f:
        report = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert report.endswith("DONE\n")
    assert _committed_count(root, {}) == [_per_stream(final, s) for s in range(3)]
    # every child after the first started after a kill -9 (the first on an empty root)
    assert _restarts(root) == [KILLS] * 3
    for ref in iter_segments(root):
        with SegmentReader.open(ref.path) as r:
            assert r.header.sealed
