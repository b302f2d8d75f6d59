"""Benchmark: the storage engine's write backends against two naive writers, in one run.

What is measured (see docs/STORAGE_BENCH.md for how to read it):

* records/s and MB/s (payload bytes) through the real ``Engine`` — framing, CRC32C, commit
  policy (10 000 records) included — for each backend (mmap, uring, pwrite), for 140-byte and
  1 KiB records, batches of 1..10 000 records per ``extend`` call, 1 and 2 800 streams. The
  clock runs from the first ``extend`` to the last ``commit`` returning, after a warm-up round
  that creates every stream's segment (steady state: no file creation inside the clock).
* two baselines on the same records in the same run, single file, no CRC:
  ``os.write`` — each record framed (length + timestamp, the information the engine keeps)
  into a ``bytearray`` flushed with ``os.write`` every 10 000 records; and ``file.write`` —
  each framed record written with one ``file.write`` call (Python's buffered file).
  Every engine figure is printed as a ratio to both baselines measured alongside it.
* the ingest-shaped case (``--ingest``; part of every run): what the daemon actually asks of
  the engine. 2 800 streams (400 products x 7 channels); each commit holds 10 000 records of
  140-600 bytes spread Zipf-like (exponent 1.43) over the streams, which touches ~640 of them
  with ~15 records each (one ``write_trusted`` per touched stream, as the sink's storage thread
  does: committed on the way in where it can, see storage/through.py). A same-run floor is
  printed under it: the same payload bytes with one ``os.write`` per commit into one file, the
  page cache's share that no recorder avoids; "sys" is the kernel's share of each figure.
  Reported per backend: records/s and CPU us/record, CPU us per commit and per stream-commit,
  and, separately, the first commit that creates the 2 800 segments and the close that seals
  them (wall and CPU seconds: both are stalls of the storage thread); then the UTC day roll
  under the same load on the engine's clock: the slowest commit of the last 10 minutes, the
  first after midnight and the slowest after it.
  Each ingest run is made on both staging paths (storage/fastpath.py: pure Python and the
  compiled ``storage._stage``, when built), interleaved, and printed with their ratio; then an
  A/B in one engine that switches the path at every commit (the steadier ratio).
* syscalls per record, per backend, counted with ``strace -c -f`` around a child process that
  runs a fixed workload twice the size of another: (calls(2N) - calls(N)) / N, so interpreter
  start-up, imports and engine set-up cancel out and only the steady state is left.

Rates are per CPU-second of the benchmark process (user + system time of all its threads,
io_uring's kernel workers included): the targets are "on one core", and on a shared machine
wall time mostly measures the neighbours. Wall-clock rates are printed alongside. Each figure
is the best of ``--repeat`` runs, baselines and backends interleaved. Usage:

    python bench/storage.py            # full grid, a few minutes
    python bench/storage.py --quick    # smoke run (make bench): ~20 s
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import fastpath
from storage.backends.probe import uring_probe
from storage.engine import Engine, EngineConfig

COMMIT_RECORDS = 10_000
POOL = 4096  # distinct payloads per size, reused round-robin
_FRAME = struct.Struct("<Iq")  # the baselines' framing: length, timestamp


@dataclass(frozen=True)
class Case:
    size: int
    batch: int
    streams: int
    records: int


@dataclass
class Figure:
    """One timed run. Rates use CPU time (all threads of the process, user + system): on a
    shared machine wall time mostly measures the neighbours, CPU time measures the work."""

    cpu_seconds: float
    wall_seconds: float
    records: int
    payload_bytes: int

    @property
    def rps(self) -> float:
        return self.records / self.cpu_seconds

    @property
    def mbps(self) -> float:
        return self.payload_bytes / self.cpu_seconds / 1e6

    @property
    def wall_rps(self) -> float:
        return self.records / self.wall_seconds


class Stopwatch:
    """CPU time of this process (io_uring's kernel workers are threads of it) and wall time."""

    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def figure(self, records: int, payload_bytes: int) -> Figure:
        return Figure(time.process_time() - self.cpu, time.perf_counter() - self.wall,
                      records, payload_bytes)


# -- workload --------------------------------------------------------------------------------------


def payload_pool(size: int) -> list[bytes]:
    """Distinct payloads of ``size`` bytes (random: content does not change memcpy or CRC)."""
    blob = os.urandom(size * POOL)
    return [blob[i * size : (i + 1) * size] for i in range(POOL)]


Plan = list[tuple[int, list[int], list[bytes]]]


def make_plan(case: Case, pool: list[bytes], t0: int) -> Plan:
    """The extend calls: (stream index, timestamps, payloads), streams round-robin."""
    plan: Plan = []
    k = 0
    ts = t0
    calls = max(1, case.records // case.batch)
    for call in range(calls):
        payloads = [pool[(k + j) % POOL] for j in range(case.batch)]
        stamps = list(range(ts, ts + case.batch))
        plan.append((call % case.streams, stamps, payloads))
        k += case.batch
        ts += case.batch
    return plan


def stream_names(n: int) -> list[tuple[str, str]]:
    channels = ["level2", "market_trades", "ticker", "candles", "heartbeats", "status", "l2x"]
    return [(f"P{i // len(channels):04d}-USD", channels[i % len(channels)]) for i in range(n)]


# -- engine run ------------------------------------------------------------------------------------


class EngineBench:
    """One Engine per (backend, stream count), warmed up once and reused for every case.

    The warm-up appends one record to every stream and commits, so each stream's segment is
    created outside the clock (creating 2 800 segment files takes seconds on this disk — that
    is a day-roll cost, reported separately, not a steady-state one).
    """

    def __init__(self, backend: str, streams: int, pool: list[bytes], workdir: Path) -> None:
        self.backend = backend
        self.pool = pool
        self.root = Path(tempfile.mkdtemp(prefix=f"{backend}-", dir=workdir))
        cfg = EngineConfig(root=self.root, backend=backend, commit_records=COMMIT_RECORDS)
        self.engine = Engine(cfg)
        if self.engine.backend_name != backend:
            raise SystemExit(f"asked for {backend}, engine runs {self.engine.backend_name}")
        self.handles = [self.engine.stream(p, c) for p, c in stream_names(streams)]
        self.clock = time.time_ns()
        start = time.perf_counter()
        for h in self.handles:
            self.engine.append(h, self.clock, pool[0])
        self._commit()
        self.warmup_seconds = time.perf_counter() - start

    def _commit(self) -> None:
        result = self.engine.commit()
        if result.errors:
            raise SystemExit(f"{self.backend}: commit errors {result.errors}")

    def run(self, case: Case) -> Figure:
        plan = make_plan(case, self.pool, self.clock + 1)
        self.clock += case.records + 1
        handles = self.handles
        eng = self.engine
        extend, commit_due, commit = eng.extend, eng.commit_due, eng.commit
        n = sum(len(p) for _, _, p in plan)
        watch = Stopwatch()
        for s, stamps, payloads in plan:
            extend(handles[s], stamps, payloads)
            if commit_due():
                commit()
        result = commit()
        fig = watch.figure(n, n * case.size)
        if result.errors:
            raise SystemExit(f"{self.backend}: commit errors {result.errors}")
        return fig

    def close(self) -> None:
        self.engine.close()
        shutil.rmtree(self.root, ignore_errors=True)


# -- ingest-shaped case ----------------------------------------------------------------------------

INGEST_STREAMS = 2800
INGEST_ZIPF = 1.43  # 10 000 draws over 2 800 ranks touch ~640 distinct streams


@dataclass
class IngestFigure:
    backend: str
    create_wall: float  # first commit: one record into each of 2 800 new segments
    create_cpu: float
    commits: int
    records: int
    stream_commits: int  # sum over commits of the streams each one touched
    cpu_seconds: float
    wall_seconds: float
    close_wall: float  # close(): seal every open segment
    close_cpu: float
    sys_seconds: float = 0.0  # the kernel's share of cpu_seconds (page cache, faults)

    @property
    def rps(self) -> float:
        return self.records / self.cpu_seconds

    @property
    def us_per_record(self) -> float:
        return self.cpu_seconds / self.records * 1e6

    @property
    def us_per_commit(self) -> float:
        return self.cpu_seconds / self.commits * 1e6

    @property
    def us_per_stream_commit(self) -> float:
        return self.cpu_seconds / self.stream_commits * 1e6

    @property
    def sys_per_stream_commit(self) -> float:
        return self.sys_seconds / self.stream_commits * 1e6


IngestPlan = list[list[tuple[int, list[int], list[bytes]]]]


def ingest_plan(commits: int, seed: int, t0: int) -> IngestPlan:
    """Per commit: (stream, timestamps, payloads) for each touched stream, in arrival order of
    the stream's first record (as the sink hands them over). Busy ranks are shuffled over the
    streams so the busy ones are not all the same product."""
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / (i + 1) ** INGEST_ZIPF for i in range(INGEST_STREAMS)))
    rank_to_stream = list(range(INGEST_STREAMS))
    rng.shuffle(rank_to_stream)
    blob = os.urandom(1 << 20)
    plan: IngestPlan = []
    ts = t0
    for _ in range(commits):
        per: dict[int, tuple[list[int], list[bytes]]] = {}
        for rank in rng.choices(range(INGEST_STREAMS), cum_weights=weights, k=COMMIT_RECORDS):
            size = rng.randint(140, 600)
            off = rng.randrange(0, len(blob) - size)
            stamps, payloads = per.setdefault(rank_to_stream[rank], ([], []))
            stamps.append(ts)
            payloads.append(blob[off : off + size])
            ts += 1000
        plan.append([(s, st, pl) for s, (st, pl) in per.items()])
    return plan


def run_ingest(backend: str, commits: int, workdir: Path, seed: int = 7) -> IngestFigure:
    """One engine on a fresh root: first commit (creates 2 800 segments), ``commits`` timed
    ingest-shaped commits, close (seals 2 800 segments)."""
    root = Path(tempfile.mkdtemp(prefix=f"ingest-{backend}-", dir=workdir))
    try:
        eng = Engine(EngineConfig(root=root, backend=backend, commit_records=COMMIT_RECORDS))
        if eng.backend_name != backend:
            raise SystemExit(f"asked for {backend}, engine runs {eng.backend_name}")
        handles = [eng.stream(p, c) for p, c in stream_names(INGEST_STREAMS)]
        now = time.time_ns()
        plan = ingest_plan(commits, seed, now + 1)
        watch = Stopwatch()
        for h in handles:
            eng.append(h, now, b'{"type":"subscriptions"}')
        result = eng.commit(now)
        first = watch.figure(INGEST_STREAMS, 0)
        if result.errors:
            raise SystemExit(f"{backend}: first commit errors {result.errors[:3]}")
        write, commit = eng.write_trusted, eng.commit  # the sink's storage thread's calls
        n = sum(len(st) for c in plan for _, st, _ in c)
        touched = sum(len(c) for c in plan)
        watch = Stopwatch()
        sys0 = os.times().system
        for c in plan:
            for s, stamps, payloads in c:
                write(handles[s], stamps, payloads)
            result = commit(now)
            if result.errors:
                raise SystemExit(f"{backend}: commit errors {result.errors[:3]}")
        steady = watch.figure(n, 0)
        kernel = os.times().system - sys0
        watch = Stopwatch()
        eng.close()
        closing = watch.figure(INGEST_STREAMS, 0)
        return IngestFigure(backend, first.wall_seconds, first.cpu_seconds, commits, n, touched,
                            steady.cpu_seconds, steady.wall_seconds,
                            closing.wall_seconds, closing.cpu_seconds, kernel)
    finally:
        shutil.rmtree(root, ignore_errors=True)


NS_PER_DAY = 86_400 * 1_000_000_000


def run_ingest_floor(commits: int, workdir: Path, seed: int = 7) -> IngestFigure:
    """The same-run baseline of the ingest case: the same payload bytes, one ``os.write`` of
    all of a commit's payloads into one file (no framing, no CRC, no per-stream work, no
    per-stream file): what putting those bytes into the page cache costs at the least."""
    path = Path(tempfile.mkdtemp(prefix="ingest-floor-", dir=workdir)) / "floor"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        plan = ingest_plan(commits, seed, time.time_ns())
        n = sum(len(st) for c in plan for _, st, _ in c)
        touched = sum(len(c) for c in plan)
        watch = Stopwatch()
        sys0 = os.times().system
        for c in plan:
            os.write(fd, b"".join([p for _, _, pl in c for p in pl]))
        steady = watch.figure(n, 0)
        return IngestFigure("floor", 0, 0, commits, n, touched, steady.cpu_seconds,
                            steady.wall_seconds, 0, 0, os.times().system - sys0)
    finally:
        os.close(fd)
        shutil.rmtree(path.parent, ignore_errors=True)


def run_midnight(backend: str, workdir: Path, before: int = 60, after: int = 20) -> str:
    """The UTC day roll under ingest-shaped load, on the engine's clock (``commit(now_ns)``):
    ``before`` commits spread over the last 10 minutes of a day, then ``after`` commits past
    midnight (whose records belong to the new day). Reports the slowest commit before
    midnight, the first one after it, and the slowest of the rest (wall seconds: stalls)."""
    root = Path(tempfile.mkdtemp(prefix=f"midnight-{backend}-", dir=workdir))
    try:
        eng = Engine(EngineConfig(root=root, backend=backend, commit_records=COMMIT_RECORDS))
        handles = [eng.stream(p, c) for p, c in stream_names(INGEST_STREAMS)]
        midnight = (time.time_ns() // NS_PER_DAY + 1) * NS_PER_DAY
        start = midnight - 900 * 10**9
        for h in handles:
            eng.append(h, start, b'{"type":"subscriptions"}')
        eng.commit(start)
        walls: list[float] = []
        step = 600 * 10**9 // before
        plans = ingest_plan(before, 11, 0) + ingest_plan(after, 12, 0)
        for k, c in enumerate(plans):
            now = midnight - 600 * 10**9 + k * step if k < before else midnight + (
                k - before + 1) * 10**9
            w = time.perf_counter()
            for s, stamps, payloads in c:
                eng.write_trusted(handles[s], [now - 10**6 + (t % 10**6) for t in stamps],
                                  payloads)
            result = eng.commit(now)
            walls.append(time.perf_counter() - w)
            if result.errors:
                raise SystemExit(f"{backend}: commit errors {result.errors[:3]}")
        eng.close()
        return (f"{backend:<9}{max(walls[:before]):>14.3f}{walls[before]:>14.3f}"
                f"{max(walls[before + 1:]):>14.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def midnight_grid(backends: list[str], workdir: Path) -> None:
    print("# UTC day roll, ingest-shaped (2 800 streams): wall seconds per commit; 60 commits "
          "in the last 10 min of the day, then 20 after midnight")
    print(f"{'backend':<9}{'max before':>14}{'first after':>14}{'max after':>14}")
    for b in backends:
        print(run_midnight(b, workdir), flush=True)


def ingest_paths() -> list[bool]:
    """The staging paths to compare (storage/fastpath.py): pure Python always, compiled where
    it was built."""
    return [False, True] if fastpath.available() else [False]


def ingest_grid(backends: list[str], commits: int, repeat: int, workdir: Path) -> None:
    """Every backend ``repeat`` times on each staging path (pure Python, compiled),
    interleaved; best steady state, the create/close stalls of the same runs (min and max),
    then pure / compiled per backend: the same-run ratio."""
    paths = ingest_paths()
    runs: dict[tuple[str, bool], list[IngestFigure]] = {
        (b, c): [] for b in backends for c in paths}
    floors: list[IngestFigure] = []
    try:
        for _ in range(repeat):
            floors.append(run_ingest_floor(commits, workdir))
            for b in backends:
                for compiled in paths:
                    fastpath.select(compiled)
                    fig = run_ingest(b, commits, workdir)
                    runs[(b, compiled)].append(fig)
                    print(f"# ingest {b} {_path_name(compiled)}: {fig.rps:,.0f} records/s, "
                          f"{fig.us_per_stream_commit:.1f} us per stream-commit, create "
                          f"{fig.create_wall:.2f} s, close {fig.close_wall:.2f} s",
                          file=sys.stderr)
    finally:
        fastpath.select()
    print(f"# ingest-shaped: {INGEST_STREAMS} streams, {commits} commits x {COMMIT_RECORDS} "
          f"records of 140-600 B, Zipf {INGEST_ZIPF}; best of {repeat} (CPU time of the process); "
          "create = first commit into 2 800 new segments, close = seal 2 800 (min-max, s); "
          f"staging: pure Python and {fastpath.PATH if fastpath.available() else 'no compiled'}")
    header = (f"{'backend':<18}{'records/s':>11}{'us/rec':>8}{'us/commit':>11}{'streams/c':>10}"
              f"{'us/str-c':>9}{'sys':>6}{'wall rec/s':>12}{'create wall':>13}{'create cpu':>12}"
              f"{'close wall':>12}{'close cpu':>11}")
    print(header)
    print("-" * len(header))
    best: dict[tuple[str, bool], IngestFigure] = {}
    for (b, compiled), figs in runs.items():
        f = best[(b, compiled)] = min(figs, key=lambda x: x.cpu_seconds)
        cw = [x.create_wall for x in figs]
        cc = [x.create_cpu for x in figs]
        lw = [x.close_wall for x in figs]
        lc = [x.close_cpu for x in figs]
        print(f"{b + ' ' + _path_name(compiled):<18}{f.rps:>11,.0f}{f.us_per_record:>8.2f}"
              f"{f.us_per_commit:>11,.0f}"
              f"{f.stream_commits / f.commits:>10.0f}{f.us_per_stream_commit:>9.1f}"
              f"{f.sys_per_stream_commit:>6.1f}{f.records / f.wall_seconds:>12,.0f}"
              f"{min(cw):>6.2f}-{max(cw):<6.2f}{min(cc):>5.2f}-{max(cc):<6.2f}"
              f"{min(lw):>5.2f}-{max(lw):<6.2f}{min(lc):>5.2f}-{max(lc):<5.2f}", flush=True)
    floor = min(floors, key=lambda x: x.cpu_seconds)
    print(f"{'floor os.write':<18}{floor.rps:>11,.0f}{floor.us_per_record:>8.2f}"
          f"{floor.us_per_commit:>11,.0f}{floor.stream_commits / floor.commits:>10.0f}"
          f"{floor.us_per_stream_commit:>9.1f}{floor.sys_per_stream_commit:>6.1f}"
          f"{floor.records / floor.wall_seconds:>12,.0f}")
    print("# floor: the same payload bytes, one os.write per commit into one file (the page "
          "cache's share of any recorder); engine minus floor, us per stream-commit: "
          + ", ".join(f"{b} {_path_name(c)} "
                      f"{best[(b, c)].us_per_stream_commit - floor.us_per_stream_commit:.1f}"
                      for b in backends for c in paths))
    if len(paths) == 2:
        print("# staging path, same run: us per stream-commit pure -> compiled (pure/compiled; "
              "per round, then best of each)")
        for b in backends:
            pure, comp = runs[(b, False)], runs[(b, True)]
            rounds = "  ".join(f"{p.us_per_stream_commit:.1f}->{c.us_per_stream_commit:.1f}"
                               for p, c in zip(pure, comp, strict=True))
            p, c = best[(b, False)], best[(b, True)]
            print(f"{b:<9}{rounds}   best {p.us_per_stream_commit:.1f} -> "
                  f"{c.us_per_stream_commit:.1f} us ({p.cpu_seconds / c.cpu_seconds:.2f}x)")
        for b in backends:
            ingest_ab(b, commits, 2, workdir)


def ingest_ab(backend: str, commits: int, rounds: int, workdir: Path) -> None:
    """The staging paths A/B in one engine: the ingest plan ``rounds`` times, the path switched
    at every commit (pure, compiled, pure, ...), CPU time summed per path. Load drift and
    segment growth hit both alike, so this ratio is steadier than that of separate runs."""
    root = Path(tempfile.mkdtemp(prefix=f"ab-{backend}-", dir=workdir))
    cpu = {False: 0.0, True: 0.0}
    touched = {False: 0, True: 0}
    try:
        eng = Engine(EngineConfig(root=root, backend=backend, commit_records=COMMIT_RECORDS))
        handles = [eng.stream(p, c) for p, c in stream_names(INGEST_STREAMS)]
        now = time.time_ns()
        for h in handles:
            eng.append(h, now, b'{"type":"subscriptions"}')
        eng.commit(now)
        plan = ingest_plan(commits, 7, now + 1)
        k = 0
        for _ in range(rounds):
            for c in plan:
                compiled = k % 2 == 1
                k += 1
                fastpath.select(compiled)
                t0 = time.process_time()
                for s, stamps, payloads in c:
                    eng.write_trusted(handles[s], stamps, payloads)
                if eng.commit(now).errors:
                    raise SystemExit(f"{backend}: commit errors")
                cpu[compiled] += time.process_time() - t0
                touched[compiled] += len(c)
        eng.close()
    finally:
        fastpath.select()
        shutil.rmtree(root, ignore_errors=True)
    pure, comp = (cpu[c] / touched[c] * 1e6 for c in (False, True))
    print(f"{backend:<9}pure {pure:.1f} -> compiled {comp:.1f} us per stream-commit "
          f"({pure / comp:.2f}x; A/B alternating per commit, {k} commits, one engine)",
          flush=True)


def _path_name(compiled: bool) -> str:
    return "compiled" if compiled else "pure"


# -- baselines -------------------------------------------------------------------------------------


def run_os_write(case: Case, pool: list[bytes], workdir: Path) -> Figure:
    """bytearray + os.write every 10 000 records, each record framed (length, timestamp)."""
    plan = make_plan(case, pool, time.time_ns())
    path = workdir / "baseline-os-write"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    pack = _FRAME.pack
    total = sum(len(p) for _, _, p in plan)
    try:
        watch = Stopwatch()
        buf = bytearray()
        n = 0
        for _, stamps, payloads in plan:
            for ts, p in zip(stamps, payloads, strict=True):
                buf += pack(len(p), ts)
                buf += p
                n += 1
                if n == COMMIT_RECORDS:
                    os.write(fd, buf)
                    buf.clear()
                    n = 0
        if buf:
            os.write(fd, buf)
        fig = watch.figure(total, total * case.size)
    finally:
        os.close(fd)
        path.unlink()
    return fig


def run_file_write(case: Case, pool: list[bytes], workdir: Path) -> Figure:
    """One ``file.write`` of the framed record per record (buffered binary file)."""
    plan = make_plan(case, pool, time.time_ns())
    path = workdir / "baseline-file-write"
    pack = _FRAME.pack
    total = sum(len(p) for _, _, p in plan)
    try:
        with open(path, "wb") as f:
            write = f.write
            watch = Stopwatch()
            for _, stamps, payloads in plan:
                for ts, p in zip(stamps, payloads, strict=True):
                    write(pack(len(p), ts) + p)
            f.flush()
            fig = watch.figure(total, total * case.size)
    finally:
        path.unlink(missing_ok=True)
    return fig


# -- syscalls --------------------------------------------------------------------------------------


def syscall_child(backend: str, records: int, size: int, batch: int, streams: int) -> None:
    """The fixed workload strace watches (run with --syscall-child)."""
    pool = payload_pool(size)
    with tempfile.TemporaryDirectory(prefix="strace-") as d:
        bench = EngineBench(backend, streams, pool, Path(d))
        try:
            bench.run(Case(size, batch, streams, records))
        finally:
            bench.close()


def count_syscalls(
    backend: str, records: int, size: int, batch: int, streams: int, workdir: Path
) -> dict[str, int]:
    """Calls per syscall of a child running the fixed workload, from ``strace -c -f``."""
    with tempfile.NamedTemporaryFile(prefix="strace-", suffix=".txt", dir=workdir) as out:
        subprocess.run(
            ["strace", "-c", "-f", "-o", out.name, sys.executable, __file__,
             "--syscall-child", backend, str(records), str(size), str(batch), str(streams)],
            check=True, stdout=subprocess.DEVNULL,
        )
        text = Path(out.name).read_text()
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"; the total line has no
        # usecs/call column and is recomputed from the rows instead
        if len(fields) in (5, 6) and fields[-1] != "total" and fields[3].isdigit():
            try:
                float(fields[0])
            except ValueError:
                continue
            calls[fields[-1]] = int(fields[3])
    if not calls:
        raise SystemExit(f"cannot parse strace -c output:\n{text}")
    return calls


def syscalls_per_record(
    backend: str, n: int, size: int, batch: int, streams: int, workdir: Path
) -> tuple[float, list[tuple[str, int]]]:
    """Steady-state syscalls per record and the syscalls that make up the difference."""
    a = count_syscalls(backend, n, size, batch, streams, workdir)
    b = count_syscalls(backend, 2 * n, size, batch, streams, workdir)
    diff = {name: b.get(name, 0) - a.get(name, 0) for name in a.keys() | b.keys()}
    top = sorted(((k, v) for k, v in diff.items() if v), key=lambda kv: -abs(kv[1]))[:4]
    return sum(diff.values()) / n, top


# -- main ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run (make bench)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per figure, best kept")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--backends", default="mmap,uring,pwrite")
    ap.add_argument("--no-strace", action="store_true", help="skip the syscall count")
    ap.add_argument("--ingest", action="store_true",
                    help="only the ingest-shaped case (2 800 streams, Zipf, create/close)")
    ap.add_argument("--ingest-commits", type=int, default=None,
                    help="timed commits per ingest run (default 30, quick 10)")
    ap.add_argument("--syscall-child", nargs=5, metavar="X", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.syscall_child:
        backend, *nums = args.syscall_child
        syscall_child(backend, *map(int, nums))
        return 0

    backends = [b for b in args.backends.split(",") if b]
    ok, why = uring_probe()
    if "uring" in backends and not ok:
        print(f"# io_uring unavailable ({why}): uring rows skipped")
        backends.remove("uring")
    if args.quick:
        sizes, batches, stream_counts = [140], [1, 1000], [1, 280]
        records = {140: 100_000}
        repeat = args.repeat or 2
    else:
        sizes, batches, stream_counts = [140, 1024], [1, 10, 100, 1000, 10_000], [1, 2800]
        records = {140: 200_000, 1024: 50_000}
        repeat = args.repeat or 3

    workdir = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir))
    ingest_commits = args.ingest_commits or (10 if args.quick else 30)
    if args.ingest:
        try:
            print(f"# bench/storage.py --ingest  python {sys.version.split()[0]}  "
                  f"cpus={os.cpu_count()}  load={_load()}  dir={workdir}")
            ingest_grid(backends, ingest_commits, args.repeat or 2, workdir)
            midnight_grid(backends, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return 0
    try:
        print(f"# bench/storage.py{' --quick' if args.quick else ''}  python "
              f"{sys.version.split()[0]}  cpus={os.cpu_count()}  load={_load()}  dir={workdir}")
        print(f"# best of {repeat}, runs interleaved (baselines and backends alternate), commit "
              f"every {COMMIT_RECORDS} records; io_uring probe: {why}")
        rows = run_grid(backends, sizes, batches, stream_counts, records, repeat, workdir)
        print_table(rows)
        ingest_grid(backends, ingest_commits, 1 if args.quick else 2, workdir)
        if not args.quick:
            midnight_grid(backends, workdir)
        if not args.no_strace:
            print_syscalls(backends, args.quick, workdir)
        print_targets(rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


Row = tuple[str, int, int, int, Figure, Figure, Figure]  # name, size, batch, streams, fig, osw, fw


def run_grid(
    backends: list[str], sizes: list[int], batches: list[int], stream_counts: list[int],
    records: dict[int, int], repeat: int, workdir: Path,
) -> list[Row]:
    """Every case; per repeat the two baselines and every backend run back to back, so a
    burst of load from other processes hits them alike."""
    rows: list[Row] = []
    for size in sizes:
        pool = payload_pool(size)
        for streams in stream_counts:
            benches = [EngineBench(b, streams, pool, workdir) for b in backends]
            try:
                for bench in benches:
                    print(f"# warm-up {bench.backend}: {streams} streams' segments created in "
                          f"{bench.warmup_seconds:.2f} s", file=sys.stderr)
                for batch in batches:
                    case = Case(size, batch, streams, max(records[size], batch))
                    runs: dict[str, list[Figure]] = {}
                    for _ in range(repeat):
                        runs.setdefault("os.write", []).append(run_os_write(case, pool, workdir))
                        runs.setdefault("file.write", []).append(
                            run_file_write(case, pool, workdir))
                        for bench in benches:
                            runs.setdefault(bench.backend, []).append(bench.run(case))
                    bests = {name: min(figs, key=lambda f: f.cpu_seconds / f.records)
                             for name, figs in runs.items()}
                    osw, fw = bests["os.write"], bests["file.write"]
                    for name, fig in bests.items():
                        rows.append((name, size, batch, streams, fig, osw, fw))
                        print(f"# {name} {size} B x {batch}, {streams} streams: "
                              f"{fig.rps:,.0f} records/s", file=sys.stderr)
            finally:
                for bench in benches:
                    bench.close()
    return rows


def print_table(rows: list[Row]) -> None:
    header = (f"{'writer':<11}{'size':>6}{'batch':>7}{'streams':>8}{'records/s':>13}"
              f"{'MB/s':>9}{'x os.write':>12}{'x file.write':>14}{'wall rec/s':>13}")
    print("# records/s and MB/s per CPU-second (one core); 'wall rec/s' for reference")
    print(header)
    print("-" * len(header))
    for name, size, batch, streams, fig, osw, fw in rows:
        print(f"{name:<11}{size:>6}{batch:>7}{streams:>8}{fig.rps:>13,.0f}{fig.mbps:>9.1f}"
              f"{fig.rps / osw.rps:>12.2f}{fig.rps / fw.rps:>14.2f}{fig.wall_rps:>13,.0f}")


def print_targets(rows: list[Row]) -> None:
    for name, size, batch, streams, fig, osw, _ in rows:
        if (name, size, batch, streams) == ("mmap", 140, 1000, 1):
            verdict = "met" if fig.rps >= 2e6 and fig.rps >= 1.5 * osw.rps else "NOT met"
            print(f"# target (mmap, 140 B, batches of 1000, one core): {fig.rps:,.0f} records/s "
                  f"(>= 2 000 000) and {fig.rps / osw.rps:.2f}x os.write (>= 1.5x): {verdict}")
    engine = [fig.rps / osw.rps for name, _, _, _, fig, osw, _ in rows
              if name not in ("os.write", "file.write")]
    if engine:
        print(f"# median engine / os.write ratio over all engine rows: "
              f"{statistics.median(engine):.2f}")


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def print_syscalls(backends: list[str], quick: bool, workdir: Path) -> None:
    if shutil.which("strace") is None:
        print("# strace not installed: syscall counts skipped")
        return
    n = 100_000 if quick else 300_000
    stream_counts = (1,) if quick else (1, 2800)
    print(f"# syscalls per record, steady state: strace -c -f, (calls(2N) - calls(N)) / N, "
          f"N = {n} records of 140 B in batches of 1000; 'extra calls' = calls(2N) - calls(N)")
    print(f"{'backend':<11}{'streams':>8}{'syscalls/record':>17}{'per commit':>12}  extra calls")
    for streams in stream_counts:
        for backend in backends:
            per, top = syscalls_per_record(backend, n, 140, 1000, streams, workdir)
            detail = ", ".join(f"{name} {count}" for name, count in top)
            print(f"{backend:<11}{streams:>8}{per:>17.5f}{per * COMMIT_RECORDS:>12.1f}  {detail}",
                  flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
