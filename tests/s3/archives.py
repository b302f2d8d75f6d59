"""Data roots holding real archives (segments written by the codec, compacted by storage)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from segfiles import DAY, make_batches, write_segment

from storage.compact import compact_segment

DAY_NS = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def make_archive(root: Path, product: str = "BTC-USD", channel: str = "level2",
                 day: dt.date = DAY, number: int = 0, n: int = 3_000,
                 per_batch: int = 500, markers_every: int = 0) -> Path:
    """One compacted archive under `root` (its records start one hour into `day`)."""
    start = DAY_NS + (day - DAY).days * 86_400_000_000_000 + 3_600_000_000_000
    batches = make_batches(n, per_batch, start_ns=start, markers_every=markers_every)
    src = write_segment(root, batches, product=product, channel=channel, day=day,
                        number=number)
    res = compact_segment(src, today=day + dt.timedelta(days=1))
    assert res.action == "compacted"
    return res.archive


def make_root(root: Path, days: int = 2, products: tuple[str, ...] = ("BTC-USD", "ETH-USD"),
              n: int = 3_000) -> list[Path]:
    """Archives of several products and days (what a few nights of compaction leave)."""
    out = []
    for d in range(days):
        for p in products:
            out.append(make_archive(root, product=p, day=DAY + dt.timedelta(days=d), n=n))
    return sorted(out)


def rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
