"""Fuzz: damaged segments and archives, read by every reader, with a correctness oracle.

Real files first: a few streams written by the real engine with each backend (mmap, uring,
pwrite; all three write the same bytes), sealed, and each archived with small frames. Then, for
each case, one mutation of one file, chosen by the seed:

* ``flip``      one byte XOR a random non-zero mask (a bit rot / bad sector of one byte);
* ``scribble``  2..64 random bytes written over the file (a stray write);
* ``swap``      two batches (segments) or frames (archives) of equal length exchanged, or one
                copied over the start of another (a misplaced block: every byte "valid");
* ``truncate``  the file cut short (a half-copied file).

Each mutated file is read by ``open_any(...).records()``, ``verify_file``, the writer's
recovery scan (segments) and the CLI (``inspect cat --format jsonl``, in process; every
``--cli-every``-th case also as a real subprocess), each under a timeout. The oracle:

* no crash: only the documented errors (ForeignFile, CorruptSegment/CorruptArchive) may come
  out of an open, nothing out of reading;
* no hang: every call ends within ``--timeout`` seconds;
* no silent wrong record: every record returned equals the original record at its offset;
* no silent loss: when records are missing, the reader lists damage, ``verify`` reports a
  problem and the CLI exits 1;
* locality: after a single-byte flip, at least total - (largest batch) records are read from a
  segment, total - (largest frame) from an archive.

    python bench/fuzz.py --seed 1 --segments 10000 --archives 1000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage import Engine, EngineConfig, RecordKind  # noqa: E402
from storage.archive import ArchiveReader, open_any  # noqa: E402
from storage.archive_verify import verify_file  # noqa: E402
from storage.compact import compact_segment  # noqa: E402
from storage.format import CorruptSegment, ForeignFile  # noqa: E402
from storage.layout import iter_segments  # noqa: E402
from storage.recovery import recover_buffer  # noqa: E402

T = TypeVar("T")
DAY = dt.date(2026, 1, 2)
T0 = int(dt.datetime(2026, 1, 2, 1, tzinfo=dt.UTC).timestamp()) * 10**9
MUTATIONS = ("flip", "scribble", "swap", "truncate")


class Hang(Exception):
    """A call ran past the timeout."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Hang in this (main) thread if the block runs longer than ``seconds``."""
    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class Original:
    """One intact file: its bytes, its records by offset, its batch or frame ranges."""

    path: Path  # relative to the corpus root
    data: bytes
    records: dict[int, tuple[int, int, bytes]]
    blocks: list[tuple[int, int]]  # (offset, length) of batches (segment) or frames (archive)
    largest: int  # most records in one batch (segment) or frame (archive)
    backend: str


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    silent_loss: list[str] = field(default_factory=list)
    bound_misses: list[str] = field(default_factory=list)
    flip_records: int = 0
    flip_bound: int = 0
    flip_total: int = 0
    # per file type ("segment" / "archive"): [records read, bound, total] after single flips
    flips: dict[str, list[int]] = field(default_factory=dict)

    def failures(self) -> list[str]:
        return self.crashes + self.hangs + self.wrong + self.silent_loss + self.bound_misses


def write_corpus(where: Path, backends: list[str]) -> list[Original]:
    """Sealed segments from each backend, and an archive of each (small frames)."""
    out: list[Original] = []
    for backend in backends:
        root = where / backend
        cfg = EngineConfig(root=root, backend=backend, commit_records=60,
                           segment_max_bytes=1 << 22, seal_stale_on_open=False)
        rng = random.Random(7)
        with Engine(cfg) as eng:
            for k in range(3000):
                product = ("BTC-USD", "ETH-USD")[k % 2]
                payload = b'{"type":"l2update","n":%d,"x":"%s"}' % (k, b"y" * rng.randrange(90))
                eng.append(eng.stream(product, "level2"), T0 + k * 1_000_000, payload)
                if k % 450 == 449:
                    eng.append(eng.stream(product, "level2"), T0 + k * 1_000_000 + 1,
                               b'{"reason":"fuzz"}', RecordKind.GAP)
                if eng.commit_due():
                    eng.commit(now_ns=T0)
        for ref in list(iter_segments(root)):
            out.append(_original(where, ref.path, backend))
            arch_src = ref.path.with_name(f"{ref.day}.{ref.number + 5000:04d}.seg")
            shutil.copyfile(ref.path, arch_src)
            res = compact_segment(arch_src, today=DAY + dt.timedelta(days=1), frame_target=2048)
            out.append(_original(where, res.archive, backend))
    return out


def _original(where: Path, path: Path, backend: str) -> Original:
    with open_any(path) as r:
        recs = {x.offset: (x.ts_ns, x.kind, x.payload) for x in r.records()}
        if isinstance(r, ArchiveReader):
            blocks = [(f.compressed_offset, f.compressed_size) for f in r.data_frames]
            largest = max(f.record_count for f in r.data_frames)
        else:
            batches = list(r.batches())
            blocks = [(b.offset, b.length) for b in batches]
            largest = max(b.count for b in batches)
    return Original(path.relative_to(where), path.read_bytes(), recs, blocks, largest, backend)


def mutate(orig: Original, kind: str, rng: random.Random) -> bytes:
    data = bytearray(orig.data)
    n = len(data)
    if kind == "flip":
        data[rng.randrange(n)] ^= rng.randrange(1, 256)
    elif kind == "scribble":
        size = rng.randint(2, 64)
        at = rng.randrange(max(1, n - size))
        data[at:at + size] = rng.randbytes(size)
    elif kind == "truncate":
        del data[rng.randrange(n):]
    else:
        a, b = rng.sample(orig.blocks, 2) if len(orig.blocks) > 1 else (orig.blocks[0],) * 2
        same = [x for x in orig.blocks if x[1] == a[1] and x != a]
        if same:
            b = rng.choice(same)
            data[a[0]:a[0] + a[1]], data[b[0]:b[0] + b[1]] = (data[b[0]:b[0] + b[1]],
                                                              data[a[0]:a[0] + a[1]])
        else:
            size = min(a[1], b[1])
            data[b[0]:b[0] + size] = orig.data[a[0]:a[0] + size]
    return bytes(data)


def _timed(timeout: float, fn: Callable[[], T]) -> T:
    with deadline(timeout):
        return fn()


def _read(path: Path) -> tuple[list[tuple[int, int, int, bytes]] | None, int, str | None]:
    """(records, damage entries, open error) read by the library reader."""
    try:
        reader = open_any(path)
    except (ForeignFile, CorruptSegment) as exc:
        return None, 0, str(exc)
    with reader:
        recs = [(x.offset, x.ts_ns, x.kind, x.payload) for x in reader.records()]
        return recs, len(reader.damage), None


def _cli(path: Path, subprocess_too: bool, timeout: float) -> tuple[int, int]:
    """(exit status, records printed) of `inspect cat FILE --format jsonl` in process (and
    the same as a real command when asked: both must agree)."""
    from tools.inspect_cli import main

    out = io.BytesIO()
    saved = sys.stdout, sys.stderr
    sys.stdout = io.TextIOWrapper(out, write_through=True)
    sys.stderr = io.TextIOWrapper(io.BytesIO(), write_through=True)
    try:
        with deadline(timeout):
            code = main(["cat", str(path), "--format", "jsonl"])
        sys.stdout.flush()
        lines = out.getvalue().count(b"\n")
    finally:
        sys.stdout, sys.stderr = saved
    if subprocess_too:
        proc = subprocess.run([sys.executable, "-m", "tools.inspect_cli", "cat", str(path),
                               "--format", "jsonl"], capture_output=True, timeout=timeout * 4,
                              cwd=ROOT, check=False)
        sub = (proc.returncode, proc.stdout.count(b"\n"))
        if sub != (code, lines):
            raise AssertionError(f"subprocess CLI {sub} vs in-process {(code, lines)}")
        if b"Traceback" in proc.stderr:
            raise AssertionError(f"traceback from the CLI: {proc.stderr[-300:]!r}")
    return code, lines


def run_case(orig: Original, work: Path, kind: str, rng: random.Random, tally: Tally,
             cli_subprocess: bool, timeout: float) -> None:
    label = f"{orig.backend}:{orig.path.name}:{kind}"
    path = work / orig.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mutate(orig, kind, rng))
    tally.cases[("archive " if orig.path.name.endswith(".zst") else "segment ") + kind] += 1
    try:
        recs, damage, error = _timed(timeout, lambda: _read(path))
        report = _timed(timeout, lambda: verify_file(path))
        if not orig.path.name.endswith(".zst"):
            _check_recovery(path, orig, timeout, label, tally)
        code, printed = _cli(path, cli_subprocess, timeout)
    except Hang as exc:
        tally.hangs.append(f"{label}: {exc}")
        return
    except Exception as exc:  # the harness counts every unexpected exception as a crash
        tally.crashes.append(f"{label}: {type(exc).__name__}: {exc}")
        return
    got = recs or []
    for off, ts, k, payload in got:
        if orig.records.get(off) != (ts, k, payload):
            tally.wrong.append(f"{label}: record at {off} differs from the original")
            break
    lost = len(orig.records) - len(got)
    if lost and not (damage or error):
        tally.silent_loss.append(f"{label}: {lost} records missing, no damage listed")
    if lost and not report.problems:
        tally.silent_loss.append(f"{label}: {lost} records missing, verify says clean")
    if lost and code != 1:
        tally.silent_loss.append(f"{label}: {lost} records missing, cat exited {code}")
    if printed != len(got):
        tally.wrong.append(f"{label}: cat printed {printed} records, the reader read {len(got)}")
    if kind == "flip":
        bound = len(orig.records) - orig.largest
        tally.flip_records += len(got)
        tally.flip_bound += bound
        tally.flip_total += len(orig.records)
        per = tally.flips.setdefault("archive" if orig.path.name.endswith(".zst")
                                     else "segment", [0, 0, 0])
        per[0] += len(got)
        per[1] += bound
        per[2] += len(orig.records)
        if len(got) < bound:
            tally.bound_misses.append(f"{label}: {len(got)} records < bound {bound}"
                                      f" ({error or 'opened'})")


def _check_recovery(path: Path, orig: Original, timeout: float, label: str,
                    tally: Tally) -> None:
    """The writer's recovery scan keeps only batches identical to the original's."""
    data = path.read_bytes()
    try:
        rec = _timed(timeout, lambda: recover_buffer(data))
    except (ForeignFile, CorruptSegment):
        return
    ends = {off + ln for off, ln in orig.blocks} | {4096}
    if rec.end not in ends:
        tally.wrong.append(f"{label}: recovery kept {rec.end} bytes, not a batch boundary")
    elif data[4096:rec.end] != orig.data[4096:rec.end]:
        tally.wrong.append(f"{label}: recovery kept bytes that differ from the original")


def run(seed: int, segments: int, archives: int, timeout: float = 10.0, cli_every: int = 50,
        backends: tuple[str, ...] = ("mmap", "uring", "pwrite"),
        progress: Callable[[str], None] | None = None) -> Tally:
    """Run ``segments`` + ``archives`` cases from ``seed``; returns the tally."""
    from storage.backends.probe import uring_available

    usable = [b for b in backends if b != "uring" or uring_available()]
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="cbl-fuzz-") as tmp:
        corpus = write_corpus(Path(tmp) / "corpus", usable)
        segs = [o for o in corpus if not o.path.name.endswith(".zst")]
        archs = [o for o in corpus if o.path.name.endswith(".zst")]
        work = Path(tmp) / "work"
        plan = [(segs, i) for i in range(segments)] + [(archs, i) for i in range(archives)]
        started = time.monotonic()
        for n, (pool, i) in enumerate(plan):
            rng = random.Random(f"{seed}:{n}")
            orig = rng.choice(pool)
            kind = MUTATIONS[i % len(MUTATIONS)]
            run_case(orig, work, kind, rng, tally, cli_every > 0 and n % cli_every == 0,
                     timeout)
            if progress is not None and n % 500 == 499:
                progress(f"{n + 1} cases, {len(tally.failures())} failures, "
                         f"{time.monotonic() - started:.0f} s")
    return tally


def summary(t: Tally) -> str:
    lines = [f"cases: {dict(sorted(t.cases.items()))}",
             f"crashes {len(t.crashes)}, hangs {len(t.hangs)}, silent wrong records "
             f"{len(t.wrong)}, silent losses {len(t.silent_loss)}, "
             f"single-flip bound misses {len(t.bound_misses)}"]
    if t.flip_total:
        lines.append(f"single-byte flips: {t.flip_records} records read of {t.flip_total} "
                     f"({t.flip_records / t.flip_total:.2%}); the one-batch/frame bound "
                     f"guarantees {t.flip_bound} ({t.flip_bound / t.flip_total:.2%})")
    for what, (got, bound, total) in sorted(t.flips.items()):
        lines.append(f"  {what}s: {got} of {total} ({got / total:.2%}), bound {bound} "
                     f"({bound / total:.2%})")
    lines += [f"  {x}" for x in t.failures()[:20]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--segments", type=int, default=10_000, help="segment cases")
    ap.add_argument("--archives", type=int, default=1_000, help="archive cases")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    ap.add_argument("--cli-every", type=int, default=50,
                    help="also run the CLI as a subprocess every N cases (0: never)")
    args = ap.parse_args()
    t0 = time.monotonic()
    tally = run(args.seed, args.segments, args.archives, args.timeout, args.cli_every,
                progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(summary(tally))
    print(f"seed {args.seed}: {sum(tally.cases.values())} cases in "
          f"{time.monotonic() - t0:.0f} s")
    return 1 if tally.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
