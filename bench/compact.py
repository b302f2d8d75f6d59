"""Benchmark: seekable zstd archives of a realistic day vs the `zstd` command-line tool.

Builds the segments a day of Coinbase market data produces (the project's seeded generator:
level2 updates, trades, tickers, candles, heartbeats at realistic proportions and sizes), one
segment per product × channel stream with engine-like batches (one per stream per 5 s), then:

* per zstd level: our archive writer (1 MiB frames + seek table, one core) — ratio, MB/s;
* the same bytes through the `zstd` CLI at the same level, single-threaded, in the same run:
  ratio from compressing each segment file, speed from `zstd -b` (in-process, no spawn cost);
  printed as ratio of ratios and ratio of speeds;
* with and without a per-channel dictionary trained on an earlier part of the day (as the
  compactor would train on previous days), at 1 MiB frames and at small 64 KiB frames.

Figures on a shared machine are noisy: compare the ratios printed in one run, not across runs.
Usage: python bench/compact.py [--messages N] [--products P] [--levels 1,3,5,9] [--repeat R]
(the `zstd` CLI comes from the `zstd` package: apt-get install zstd; without it the bench says
so and prints its own figures only)
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.archive import plan_frames, write_archive
from storage.compact import compact_segment
from storage.format import (
    HEADER_SIZE,
    SegmentHeader,
    encode_batch,
    encode_header,
    scan_batches,
)
from storage.layout import segment_path
from tools.venue.generator import MarketModel

DAY_NS = 1_795_132_800_000_000_000  # 2026-11-20T00:00:00Z
COMMIT_NS = 5_000_000_000


def build_segments(messages: int, products: int, rate: float, dialect: str,
                   seed: int) -> tuple[dict[tuple[str, str], bytes], dict[str, list[bytes]]]:
    """Segment images per stream, plus every 5th message per channel, held out of the
    segments, to train dictionaries on (same distribution, not the same bytes)."""
    model = MarketModel(seed, products, dialect)  # type: ignore[arg-type]
    per_stream: dict[tuple[str, str], list[tuple[int, bytes]]] = defaultdict(list)
    training: dict[str, list[bytes]] = defaultdict(list)
    step = int(1e9 / rate)
    for i, (product, channel, raw) in enumerate(model.day_of_messages(messages, rate=rate)):
        if i % 5 == 4:
            training[channel].append(raw)
        else:
            per_stream[(product, channel)].append((DAY_NS + i * step, raw))
    images = {key: segment_image(key, recs) for key, recs in per_stream.items()}
    return images, training


SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "coinbase"
CAPTURE = SHARED / "exchange_stream_2021-04-17.jsonl"


def capture_segments() -> dict[tuple[str, str], bytes] | None:
    """The real 2021 Exchange capture (level2 + ticker + matches, 10 products), as the daemon
    would store it: one segment per product × channel, batches per 5 s of receive time."""
    if not CAPTURE.exists():
        return None
    lines = CAPTURE.read_bytes().splitlines()
    stamps = (SHARED / "exchange_stream_2021-04-17.recv_ts.txt").read_text().split()
    channel_of = {b"snapshot": "level2", b"l2update": "level2", b"ticker": "ticker",
                  b"match": "matches", b"last_match": "matches"}
    per_stream: dict[tuple[str, str], list[tuple[int, bytes]]] = defaultdict(list)
    for raw, stamp in zip(lines, stamps, strict=True):
        msg = json.loads(raw)
        channel = channel_of.get(msg.get("type", "").encode(), "_conn0")
        product = msg.get("product_id", "_conn0") if channel != "_conn0" else "_conn0"
        per_stream[(product, channel)].append((int(float(stamp) * 1e9), raw))
    return {key: segment_image(key, recs) for key, recs in per_stream.items()}


def segment_image(key: tuple[str, str], recs: list[tuple[int, bytes]]) -> bytes:
    """Header + engine-like batches (one per 5 s or 10 000 records) of one stream."""
    batches: list[bytes] = []
    group: list[tuple[int, bytes]] = []
    pos = HEADER_SIZE  # a v2 batch's CRC binds its file offset
    for ts, raw in recs:
        if group and (ts - group[0][0] >= COMMIT_NS or len(group) >= 10_000):
            batches.append(encode_batch([t for t, _ in group], None, [r for _, r in group],
                                        offset=pos))
            pos += len(batches[-1])
            group = []
        group.append((ts, raw))
    if group:
        batches.append(encode_batch([t for t, _ in group], None, [r for _, r in group],
                                    offset=pos))
    body = b"".join(batches)
    day = dt.datetime.fromtimestamp(recs[0][0] / 1e9, dt.UTC).date()
    header = SegmentHeader(product=key[0], channel=key[1], day=day, number=0,
                           created_ns=recs[0][0], committed_len=HEADER_SIZE + len(body),
                           record_count=len(recs), first_ts_ns=min(t for t, _ in recs),
                           last_ts_ns=max(t for t, _ in recs), sealed=True)
    return encode_header(header) + body


def ours(images: dict[tuple[str, str], bytes], level: int, dicts: dict[str, bytes] | None = None,
         frame_target: int = 1 << 20, repeat: int = 1) -> tuple[int, int, float]:
    """Total bytes in, bytes out and seconds (best of `repeat`) of our writer over every
    segment, single-threaded, like one compaction worker."""
    batches = {k: list(scan_batches(v, HEADER_SIZE, len(v))) for k, v in images.items()}
    best = float("inf")
    total_in = total_out = 0
    for _ in range(repeat):
        total_in = total_out = 0
        t0 = time.perf_counter()
        for key, image in images.items():
            out = io.BytesIO()
            d = dicts.get(key[1]) if dicts else None
            write_archive(memoryview(image), batches[key], out, level, d, frame_target)
            total_in += len(image)
            total_out += out.tell()
        best = min(best, time.perf_counter() - t0)
    return total_in, total_out, best


_BENCH_LINE = re.compile(r"(\d+) -> +(\d+) \(x?([\d.]+)\), *([\d.]+) MB/s")


def cli(zstd: str, files: list[Path], joined: Path, level: int) -> tuple[int, int, float]:
    """CLI bytes in/out (each segment file compressed alone) and its MB/s from `zstd -b`."""
    total_in = total_out = 0
    for f in files:
        out = subprocess.run([zstd, f"-{level}", "-T1", "-q", "-c", str(f)], check=True,
                             capture_output=True).stdout
        total_in += f.stat().st_size
        total_out += len(out)
    bench = subprocess.run([zstd, f"-b{level}", "-e" + str(level), "-i2", "-T1", str(joined)],
                           check=True, capture_output=True, text=True)
    text = (bench.stdout + bench.stderr).replace("\r", "\n")
    speeds = [float(m.group(4)) for m in _BENCH_LINE.finditer(text)]
    if not speeds:
        raise RuntimeError(f"cannot parse `zstd -b` output: {text[-300:]!r}")
    return total_in, total_out, speeds[-1]


def compare(images: dict[tuple[str, str], bytes], levels: list[int], zstd: str | None,
            repeat: int) -> dict[int, tuple[float, float]]:
    """Print one line per level: our ratio and MB/s, then (with ``zstd``) the CLI's on the
    same bytes, written once to a temporary folder; our (ratio, MB/s) per level."""
    tmp = Path(tempfile.mkdtemp(prefix="cbl-bench-"))
    files: list[Path] = []
    joined = tmp / "all.seg"
    results: dict[int, tuple[float, float]] = {}
    try:
        if zstd is not None:
            for i, image in enumerate(images.values()):
                files.append(tmp / f"{i}.seg")
                files[-1].write_bytes(image)
            joined.write_bytes(b"".join(images.values()))
        for level in levels:
            n_in, n_out, secs = ours(images, level, repeat=repeat)
            ratio, speed = n_in / n_out, n_in / secs / 1e6
            results[level] = (ratio, speed)
            line = f"{level:>5} {ratio:>7.2f} {speed:>7.1f}"
            if zstd is not None:
                c_in, c_out, c_speed = cli(zstd, files, joined, level)
                c_ratio = c_in / c_out
                line += (f"   {c_ratio:>9.2f} {c_speed:>8.1f}   {ratio / c_ratio:>9.3f} "
                         f"{speed / c_speed:>9.3f}")
            print(line, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--products", type=int, default=100)
    ap.add_argument("--rate", type=float, default=2000.0, help="messages per virtual second")
    ap.add_argument("--dialect", default="advanced_trade", choices=["advanced_trade", "exchange"])
    ap.add_argument("--levels", default="1,3,5,9")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs, best kept (noise)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    t0 = time.perf_counter()
    images, training = build_segments(args.messages, args.products, args.rate, args.dialect,
                                      args.seed)
    total = sum(len(v) for v in images.values())
    sizes = sorted(len(v) for v in images.values())
    print(f"day: {args.messages} {args.dialect} messages, {args.products} products -> "
          f"{len(images)} segments, {total / 1e6:.1f} MB (largest {sizes[-1] / 1e6:.1f} MB, "
          f"median {sizes[len(sizes) // 2] / 1e3:.1f} kB); built in "
          f"{time.perf_counter() - t0:.1f} s")
    by_channel: dict[str, int] = defaultdict(int)
    for (_, ch), v in images.items():
        by_channel[ch] += len(v)
    print("bytes by channel: " + ", ".join(
        f"{ch} {n / total:.1%}" for ch, n in sorted(by_channel.items(), key=lambda x: -x[1])))
    frames = sum(len(plan_frames(list(scan_batches(v, HEADER_SIZE, len(v))))) for v in
                 images.values())
    print(f"frames at 1 MiB target: {frames}")

    zstd = shutil.which("zstd")
    if zstd is None:
        print("NOTE: the `zstd` command-line tool is not installed (apt-get install zstd); "
              "the CLI baseline is skipped, our own figures follow.")
    else:
        version = subprocess.run([zstd, "--version"], capture_output=True, text=True).stdout
        print(f"baseline: {version.strip()} (-T1, same bytes, same run)")

    print()
    print(f"{'level':>5} {'ratio':>7} {'MB/s':>7}   {'cli ratio':>9} {'cli MB/s':>8}   "
          f"{'ratio/cli':>9} {'speed/cli':>9}")
    results = compare(images, levels, zstd, args.repeat)

    print()
    real = capture_segments()
    if real is None:
        print(f"NOTE: {CAPTURE} not found; the real-capture comparison is skipped")
    else:
        real_total = sum(len(v) for v in real.values())
        print(f"real capture {CAPTURE.name}: {len(real)} segments, {real_total / 1e6:.2f} MB")
        compare(real, levels, zstd, args.repeat)

    print()
    dict_level = 3 if 3 in levels else levels[0]
    print("per-channel dictionaries, trained on every 5th message (held out of the segments).")
    print("'embedded' counts the copy every archive carries (archives are self-contained);")
    print("'shared' counts one copy per channel (what a shared dictionary store would cost)")
    print(f"{'frames':>8} {'dict':>6} {'no dict':>8} {'MB/s':>7} {'embedded':>9} {'shared':>8} "
          f"{'MB/s':>7} {'gain shared':>11}")
    per_channel: dict[str, int] = defaultdict(int)
    for _, ch in images:
        per_channel[ch] += 1
    for dict_size in (16 * 1024, 64 * 1024):
        dicts = {ch: zstandard.train_dictionary(dict_size, samples[:20_000], level=dict_level)
                 .as_bytes() for ch, samples in training.items() if len(samples) >= 100}
        embedded_cost = sum(len(dicts[ch]) + 8 for ch in dicts for _ in range(per_channel[ch]))
        shared_cost = sum(len(d) for d in dicts.values())
        for target in (1 << 20, 64 * 1024):
            n_in, n_out, secs = ours(images, dict_level, None, target, args.repeat)
            d_in, d_out, d_secs = ours(images, dict_level, dicts, target, args.repeat)
            shared_out = d_out - embedded_cost + shared_cost
            print(f"{target // 1024:>6}Ki {dict_size // 1024:>4}Ki {n_in / n_out:>8.2f} "
                  f"{n_in / secs / 1e6:>7.1f} {d_in / d_out:>9.2f} {d_in / shared_out:>8.2f} "
                  f"{d_in / d_secs / 1e6:>7.1f} {(n_out / shared_out - 1):>+11.1%}", flush=True)

    print()
    level = 3 if 3 in levels else levels[0]
    work = Path(tempfile.mkdtemp(prefix="cbl-bench-compact-"))
    try:
        paths = []
        for (product, channel), image in images.items():
            path = segment_path(work, product, channel, dt.date(2026, 11, 20), 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image)
            paths.append(path)
        t0 = time.perf_counter()
        n_in = n_out = 0
        largest = (0, 0.0)
        for path in paths:
            res = compact_segment(path, level, today=dt.date(2026, 11, 21))
            n_in += res.bytes_in
            n_out += res.bytes_out
            largest = max(largest, (res.bytes_in, res.seconds))
        secs = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"full compaction (write, fsync, verify every frame and batch against the source, "
          f"rename, unlink) at level {level}, one core: {n_in / n_out:.2f}x, "
          f"{n_in / secs / 1e6:.1f} MB/s over {len(paths)} files "
          f"({secs / len(paths) * 1000:.1f} ms per file; small files are bound by the fsyncs "
          "of file and folder)")
    print(f"  largest segment ({largest[0] / 1e6:.1f} MB) end to end: "
          f"{largest[0] / largest[1] / 1e6:.1f} MB/s")

    print()
    ok = [lv for lv, (r, s) in results.items() if r >= 10 and s >= 150]
    print("targets (>= 10x at >= 150 MB/s per core): "
          + (f"met at level(s) {ok}" if ok else "not met at any measured level"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
