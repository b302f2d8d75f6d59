"""Object storage: cbl-ship and remote reads against plain boto3, same files, same server, same run.

Starts SeaweedFS (`weed server -s3`, the dev extra) on 127.0.0.1, writes a data root of
archives, then measures:

- upload MB/s: `cbl-ship -j 4` (SHA-256, server-checked checksum, seek-table read-back) vs
  boto3 `upload_file` of the same files (4 files at a time, boto3's default transfer config);
- download MB/s: reading every record of every archive through range requests (storage.source)
  vs boto3 `download_file` of the same files followed by the same local read;
- time to first record of `cat --from T` (T in the last tenth of a large archive): remote,
  range requests for the trailer, table, header frame and one data frame, vs downloading the
  whole archive first and reading it locally.

Figures are ratios against the same-run baseline; run: .venv/bin/python bench/ship.py
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "s3"))

from seaweed import Weed, start_weed  # noqa: E402

from storage.archive import ArchiveReader  # noqa: E402
from storage.compact import compact_segment  # noqa: E402
from storage.format import HEADER_SIZE, SegmentHeader, encode_batch, encode_header  # noqa: E402
from storage.layout import segment_path  # noqa: E402
from storage.source import configure_s3, s3_client  # noqa: E402
from tools.ship_cli import main as ship  # noqa: E402

FILES = 6
RECORDS = 120_000
DAY_NS = 1_796_601_600 * 1_000_000_000
BUCKET = "cbl-bench"


def _payload(rng: random.Random, i: int) -> bytes:
    """A level2-like message with a random tail: compresses ~3x, like a busy book."""
    noise = rng.randbytes(40).hex().encode()
    return (b'{"channel":"l2_data","timestamp":"2026-12-07T10:00:00.%06dZ","sequence_num":%d,'
            b'"events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid",'
            b'"price_level":"%d.%02d","new_quantity":"%s"}]}]}'
            % (i % 1_000_000, i, 60000 + i % 997, i % 100, noise))


def make_archive(root: Path, product: str, seed: int) -> Path:
    rng = random.Random(seed)
    ts0 = DAY_NS + 3_600_000_000_000
    batches = []
    for start in range(0, RECORDS, 1000):
        idx = range(start, min(start + 1000, RECORDS))
        batches.append(encode_batch([ts0 + i * 1_000_000 for i in idx], bytes(len(idx)),
                                    [_payload(rng, i) for i in idx]))
    body = b"".join(batches)
    import datetime as dt

    day = dt.date(2026, 12, 7)
    header = SegmentHeader(product=product, channel="level2", day=day, number=0,
                           created_ns=DAY_NS, committed_len=HEADER_SIZE + len(body),
                           record_count=RECORDS, first_ts_ns=ts0,
                           last_ts_ns=ts0 + (RECORDS - 1) * 1_000_000, sealed=True)
    path = segment_path(root, product, "level2", day, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_header(header) + body)
    return compact_segment(path, today=day + dt.timedelta(days=1)).archive


@contextlib.contextmanager
def server() -> Iterator[Weed]:
    work = Path(tempfile.mkdtemp(prefix="cbl-bench-ship-"))
    weed = start_weed(work / "weed")
    try:
        os.environ.update(weed.env())
        configure_s3()
        s3_client().create_bucket(Bucket=BUCKET)
        yield weed
    finally:
        weed.stop()
        shutil.rmtree(work, ignore_errors=True)


def timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


def read_all(reader: ArchiveReader) -> int:
    with reader:
        return sum(1 for _ in reader.records())


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="cbl-bench-data-"))
    try:
        root = work / "data"
        archives = [make_archive(root, f"P{i}-USD", i) for i in range(FILES)]
        total = sum(a.stat().st_size for a in archives)
        print(f"{FILES} archives, {total / 1e6:.1f} MB ({RECORDS} records each)")
        with server():
            client = s3_client()
            keys = [a.relative_to(root).as_posix() for a in archives]
            for k, a in zip(keys, archives, strict=True):  # warm-up: the server grows volumes
                client.upload_file(str(a), BUCKET, f"warm/{k}")
            t_ship, t_plain = upload_round(root, archives, keys, client)
            print(f"upload    cbl-ship -j 4   {total / t_ship / 1e6:7.1f} MB/s   "
                  f"boto3 upload_file x4 {total / t_plain / 1e6:7.1f} MB/s   "
                  f"ratio {t_plain / t_ship:.2f}x  (best of {ROUNDS})")
            t_remote, t_down = download_round(keys, client, work)
            print(f"download  range reads     {total / t_remote / 1e6:7.1f} MB/s   "
                  f"download_file + read {total / t_down / 1e6:7.1f} MB/s   "
                  f"ratio {t_down / t_remote:.2f}x  (every record decoded in both; best of "
                  f"{ROUNDS})")
            first_record(archives[0], Path(f"s3://{BUCKET}/ours0/{keys[0]}"), client, keys[0],
                         work)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


ROUNDS = 3


def upload_round(root: Path, archives: list[Path], keys: list[str],
                 client: object) -> tuple[float, float]:
    """Best of ROUNDS, each into fresh prefixes, the two tools alternating."""
    ours, plain = [], []
    for n in range(ROUNDS):
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            ours.append(timed(lambda n=n: ship(  # type: ignore[misc]
                [str(root), f"s3://{BUCKET}/ours{n}", "-j", "4", "-q"])))

        def plain_up(n: int = n) -> None:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda ak: client.upload_file(  # type: ignore[attr-defined]
                    str(ak[0]), BUCKET, f"plain{n}/{ak[1]}"), zip(archives, keys, strict=True)))

        plain.append(timed(plain_up))
    return min(ours), min(plain)


def download_round(keys: list[str], client: object, work: Path) -> tuple[float, float]:
    ours, plain = [], []
    for n in range(ROUNDS):
        remote = [Path(f"s3://{BUCKET}/ours{n}/{k}") for k in keys]
        ours.append(timed(lambda remote=remote: [read_all(ArchiveReader.open(p))
                                                  for p in remote]))

        def plain_down(n: int = n) -> None:
            for k in keys:
                dest = work / f"dl{n}" / k
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(BUCKET, f"plain{n}/{k}", str(dest))  # type: ignore[attr-defined]
                read_all(ArchiveReader.open(dest))

        plain.append(timed(plain_down))
    return min(ours), min(plain)


def first_record(local: Path, remote: Path, client: object, key: str, work: Path) -> None:
    with ArchiveReader.open(local) as r:
        frames = r.data_frames
        target = frames[len(frames) * 9 // 10]
        from_ns = (target.min_ts_ns + target.max_ts_ns) // 2

    def ranged() -> int:
        with ArchiveReader.open(remote) as r:
            next(iter(r.records(from_ns=from_ns)))
            return r.bytes_read

    def whole() -> None:
        dest = work / "first" / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, f"plain0/{key}", str(dest))  # type: ignore[attr-defined]
        with ArchiveReader.open(dest) as r:
            next(iter(r.records(from_ns=from_ns)))

    runs = 5
    t_r = min(timed(ranged) for _ in range(runs))
    t_w = min(timed(whole) for _ in range(runs))
    fetched = ranged()
    size = local.stat().st_size
    print(f"first record of cat --from (best of {runs}): range reads {t_r * 1e3:.1f} ms "
          f"({fetched / 1e3:.0f} kB of {size / 1e6:.1f} MB fetched)   download whole first "
          f"{t_w * 1e3:.1f} ms   ratio {t_w / t_r:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
