"""Export: one product's days into hive-partitioned Parquet (or tardis-style CSV.gz) files.

Layout: `<out>/dataset=<name>/date=<YYYY-MM-DD>/product=<product>/part-0.parquet` (zstd, row
groups of `Options.row_group` rows), `status` under `dataset=status/date=…/part-0.parquet`.
Each file is written as `*.tmp` and renamed when its day is complete, so a reader never sees a
half file under its final name. A finished (product, day) leaves
`<out>/_export/<product>/<day>.json` with the options and row counts; a later run skips it
unless the options differ or `--force` is given. The current UTC day, and a day with a live
(unsealed) segment, are never marked finished: they may still grow.
"""

from __future__ import annotations

import datetime as dt
import gzip
import heapq
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from storage import Record, SegmentReader, iter_segments
from tools.normalize import datasets as D
from tools.normalize.replay import DEFAULT_LOOKBACK_DAYS, day_start, run_days, warm_up
from tools.normalize.rows import Options, ProductRows
from tools.normalize.source import MULTI, product_days, products, stream_days, stream_records
from tools.normalize.tardis import TARDIS_NAMES, header, to_tardis

FORMATS = ("parquet", "csv")
SHARED = "_shared"  # the job that exports status and the shared streams' markers


def dataset_dir_name(ds: str, depth: int) -> str:
    return f"book_snapshot_{depth}" if ds == "book_snapshot" else ds


def channels_for(datasets: frozenset[str]) -> list[str]:
    chans: list[str] = []
    for ds in sorted(datasets):
        for ch in D.PRODUCT_DATASETS.get(ds, ()):
            if ch not in chans:
                chans.append(ch)
    return chans


@dataclass(frozen=True)
class Job:
    root: Path
    out: Path
    product: str
    days: tuple[dt.date, ...]
    opts: Options
    fmt: str = "parquet"
    force: bool = False
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    today: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())


@dataclass
class JobResult:
    product: str
    days_done: list[str] = field(default_factory=list)
    days_skipped: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    unconverted: int = 0


class DayWriter:
    """Open files of one (product, day): one writer per dataset, renamed into place at close."""

    def __init__(self, job: Job, day: dt.date) -> None:
        self.job = job
        self.day = day
        self.writers: dict[str, Any] = {}
        self.paths: dict[str, Path] = {}
        self.rows: dict[str, int] = {}

    def _path(self, ds: str) -> Path:
        j = self.job
        d = j.out / f"dataset={dataset_dir_name(ds, j.opts.depth)}" / f"date={self.day}"
        if ds != "status":
            d = d / f"product={j.product}"
        return d / ("part-0.parquet" if j.fmt == "parquet" else "part-0.csv.gz")

    def write(self, ds: str, table: pa.Table) -> None:
        if self.job.fmt == "csv":
            if ds in TARDIS_NAMES:
                table = to_tardis(ds, table, self.job.product, self.job.opts.depth)
            if table.num_rows == 0 and ds in self.writers:
                return
        w = self.writers.get(ds)
        if w is None:
            path = self._path(ds)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            self.paths[ds] = path
            w = self.writers[ds] = self._open(ds, tmp, table)
        if self.job.fmt == "parquet":
            w.write_table(table, row_group_size=self.job.opts.row_group)
        else:
            quoting = "none" if ds in TARDIS_NAMES else "needed"
            pacsv.write_csv(_plain(table), w, pacsv.WriteOptions(include_header=False,
                                                                 quoting_style=quoting))
        self.rows[ds] = self.rows.get(ds, 0) + table.num_rows

    def _open(self, ds: str, tmp: Path, table: pa.Table) -> Any:
        if self.job.fmt == "parquet":
            return pq.ParquetWriter(tmp, table.schema, compression="zstd")
        f = gzip.open(tmp, "wb", compresslevel=6)  # noqa: SIM115 (closed in close/abort)
        names = header(ds, self.job.opts.depth) if ds in TARDIS_NAMES else table.column_names
        f.write((",".join(names) + "\n").encode())
        return f

    def close(self) -> None:
        for ds, w in self.writers.items():
            w.close()
            path = self.paths[ds]
            os.replace(path.with_name(path.name + ".tmp"), path)
        self.writers.clear()

    def abort(self) -> None:
        for ds, w in self.writers.items():
            w.close()
            path = self.paths[ds]
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        self.writers.clear()


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns as plain strings (the CSV writer takes no dictionaries)."""
    cols = [c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c
            for c in table.columns]
    return pa.Table.from_arrays(cols, names=table.column_names)


def _state_path(job: Job, day: dt.date) -> Path:
    return job.out / "_export" / job.product / f"{day}.json"


def _fingerprint(job: Job) -> dict[str, Any]:
    o = asdict(job.opts)
    o["datasets"] = sorted(job.opts.datasets)
    return {"options": o, "format": job.fmt}


def already_done(job: Job, day: dt.date) -> bool:
    if job.force:
        return False
    try:
        state = orjson.loads(_state_path(job, day).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return bool(state.get("complete")) and state.get("fingerprint") == _fingerprint(job)


def day_sealed(root: Path, owners: list[str], channels: list[str], day: dt.date) -> bool:
    """Every segment of the day is sealed or archived: nothing more can be appended to it."""
    for owner in owners:
        for ch in channels:
            try:
                refs = list(iter_segments(root, owner, ch, day))
            except (ValueError, OSError):
                continue
            for ref in refs:
                if ref.archived:
                    continue
                try:
                    with SegmentReader.open(ref.path) as reader:
                        if not reader.header.sealed:
                            return False
                except (OSError, ValueError):
                    return False
    return True


def _mark_done(job: Job, day: dt.date, writer: DayWriter, rows: ProductRows) -> None:
    path = _state_path(job, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    owners = conn_dirs(job.root) if job.product == SHARED else [job.product, MULTI]
    complete = day < job.today and day_sealed(job.root, owners, job_channels(job), day)
    state = {"complete": complete, "fingerprint": _fingerprint(job),
             "rows": writer.rows, "unconverted": rows.unconverted()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(state))
    os.replace(tmp, path)


def input_bytes(root: Path, product: str, channels: list[str], day: dt.date) -> int:
    total = 0
    owners = conn_dirs(root) if product == SHARED else [product, MULTI]
    for p in owners:
        for ch in channels:
            d = root / p / ch
            if d.is_dir():
                total += sum(f.stat().st_size for f in d.glob(f"{day}.*.seg*"))
    return total


def conn_dirs(root: Path) -> list[str]:
    """Per-connection shared streams (`_conn0`, `_connw1-0`, ...) that hold `status`."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.name.startswith("_conn") and (p / "status").is_dir())


def status_day(rows: ProductRows, root: Path, day: dt.date) -> None:
    """Status frames of every connection on `day`, by time (the `status` dataset)."""
    def items(conn: str) -> Iterator[tuple[int, Record]]:
        for rec, damage in stream_records(root, conn, "status", day):
            if rec is not None:
                yield rec.ts_ns, rec
            else:
                rows.marker(0, "status", "damaged", orjson.dumps({"error": damage}).decode(), -1)

    for _, rec in heapq.merge(*(items(c) for c in conn_dirs(root)), key=lambda x: x[0]):
        rows.feed("status", rec)


def job_channels(job: Job) -> list[str]:
    return ["status"] if job.product == SHARED else channels_for(job.opts.datasets)


def export_product(job: Job, progress: Callable[[str, int], None] | None = None) -> JobResult:
    """Export every selected day of one product, carrying the book from day to day."""
    result = JobResult(job.product)
    chans = job_channels(job)
    todo = [d for d in job.days if not already_done(job, d)]
    result.days_skipped = [str(d) for d in job.days if d not in todo]
    if not todo:
        return result
    rows = ProductRows(job.product, job.opts)
    book = [c for c in chans if c in D.BOOK_CHANNELS]
    if book and ({"book_snapshot", "quotes"} & job.opts.datasets):
        warm_up(rows, job.root, book, day_start(todo[0]), job.lookback_days)
    prev: dt.date | None = None
    for day in todo:
        if prev is not None and day != prev + dt.timedelta(days=1):
            rows.restart_sampling()  # no samples for the days in between (not exported now)
            if book:
                rows.tracker.invalidate(day_start(day))  # rebuild from a snapshot
                warm_up(rows, job.root, book, day_start(day), job.lookback_days)
        prev = day
        writer = DayWriter(job, day)
        rows.out = writer.write
        try:
            if job.product == SHARED:
                status_day(rows, job.root, day)
            else:
                run_days(rows, job.root, chans, [day])
            rows.flush()
        except BaseException:
            writer.abort()
            raise
        writer.close()
        _mark_done(job, day, writer, rows)
        for ds, n in writer.rows.items():
            result.rows[ds] = result.rows.get(ds, 0) + n
        size = input_bytes(job.root, job.product, chans, day)
        result.bytes_read += size
        result.days_done.append(str(day))
        if progress is not None:
            progress(f"{job.product} {day}", size)
    result.unconverted = rows.unconverted()
    return result


def plan(root: Path, out: Path, opts: Options, fmt: str, products_sel: list[str] | None,
         first: dt.date | None, last: dt.date | None, force: bool,
         lookback_days: int = DEFAULT_LOOKBACK_DAYS) -> list[Job]:
    """One job per product (its days in order), plus one for status when selected."""
    chans = channels_for(opts.datasets)
    jobs: list[Job] = []
    if not chans:  # only shared datasets asked for
        products_sel = [] if products_sel is None else products_sel
    product_opts = replace(opts, datasets=opts.datasets - {"status"})
    for p in products(root) if products_sel is None else products_sel:
        days = tuple(d for d in product_days(root, p, chans)
                     if (first is None or d >= first) and (last is None or d <= last))
        if days:
            jobs.append(Job(root, out, p, days, product_opts, fmt, force, lookback_days))
    if "status" in opts.datasets and not products_sel:
        days = tuple(sorted({d for c in conn_dirs(root) for d in stream_days(root, c, "status")
                             if (first is None or d >= first) and (last is None or d <= last)}))
        if days:
            status_opts = replace(opts, datasets=frozenset({"status"}))
            jobs.append(Job(root, out, SHARED, days, status_opts, fmt, force, lookback_days))
    return jobs
