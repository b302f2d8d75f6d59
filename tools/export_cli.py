"""cbl-export: recorded Coinbase data → normalized Parquet (or tardis.dev-style CSV.gz) datasets.

The manual is `cbl-export --help` and docs/EXPORT.md (every column of every dataset).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tools.console_cli import (
    EXIT_OK,
    EXIT_USAGE,
    ArgumentParser,
    ToolError,
    iso_day,
    progress,
    run_tool,
)
from tools.normalize import datasets as D
from tools.normalize.export import (
    FORMATS,
    Job,
    JobResult,
    already_done,
    export_product,
    input_bytes,
    job_channels,
    plan,
)
from tools.normalize.rows import Options

_DESCRIPTION = """\
Turn a data root's raw frames (live .seg and archived .seg.zst alike) into
normalized datasets, one file per dataset, UTC day and product:

  OUT/dataset=trades/date=2026-11-24/product=BTC-USD/part-0.parquet

datasets: trades, book_l2 (one row per price-level change), book_snapshot (top
--depth levels of the rebuilt book, written as book_snapshot_<depth>), quotes
(best bid/ask from the book and from ticker), ticker, candles, status, markers.
Prices and sizes are exact decimals (decimal128(38,12)) unless --float. Each row
after a gap, disconnect or other marker says so in its `marker` column, and the
book-derived rows carry `valid` (false from a possible loss to the next snapshot).

Days already exported with the same options are skipped (a state file per product
and day under OUT/_export); --force exports them again. Today's UTC day, and a day
with a live (unsealed) segment, are always exported again: they may still grow.
"""

_EPILOG = """\
examples:
  cbl-export data -o export                              # everything, Parquet
  cbl-export data -o export -p BTC-USD --from 2026-11-20 --to 2026-11-24 -j 2
  cbl-export data -o tardis --format csv -d trades,book_l2,book_snapshot,quotes
  cbl-export data -o export -d book_snapshot --depth 10 --interval-ms 100

exit status: 0 done, 1 an input or output error, 2 usage error, 130 interrupted.
see also: docs/EXPORT.md (columns, DuckDB and Polars examples)
"""


def _datasets(text: str) -> frozenset[str]:
    names = {w.strip() for w in text.split(",") if w.strip()}
    bad = names - set(D.ALL_DATASETS)
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown dataset {', '.join(sorted(bad)) or '(none)'}: use "
            f"{', '.join(D.ALL_DATASETS)} (comma-separated)")
    return frozenset(names)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"need a positive integer, got {text!r}")
    return n


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="cbl-export", description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", metavar="ROOT", help="data root written by the recorder")
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="output directory (must not be inside ROOT)")
    p.add_argument("-p", "--product", action="append", metavar="P",
                   help="only this product (repeatable); status is then not exported")
    p.add_argument("-d", "--datasets", type=_datasets, default=frozenset(D.ALL_DATASETS),
                   metavar="D[,D...]", help=f"datasets to build (default: all: "
                                            f"{','.join(D.ALL_DATASETS)})")
    p.add_argument("-c", "--channel", action="append", metavar="C",
                   help="only datasets built from this recorded channel (repeatable), e.g. "
                        "-c level2 -c market_trades")
    p.add_argument("--from", dest="first", type=iso_day, metavar="DAY",
                   help="first UTC day (inclusive)")
    p.add_argument("--to", dest="last", type=iso_day, metavar="DAY",
                   help="last UTC day (inclusive)")
    p.add_argument("--format", choices=FORMATS, default="parquet",
                   help="parquet (default) or csv: CSV.gz, tardis.dev's columns for trades, "
                        "book_l2, book_snapshot, quotes")
    p.add_argument("--float", dest="floats", action="store_true",
                   help="prices and sizes as float64 (faster, rounds some values) instead of "
                        "exact decimals")
    p.add_argument("--depth", type=_positive, default=D.DEFAULT_DEPTH, metavar="N",
                   help="levels per side in book_snapshot (default 25)")
    p.add_argument("--interval-ms", type=_positive, default=1000, metavar="MS",
                   help="book_snapshot every MS milliseconds of receive time (default 1000)")
    p.add_argument("--no-interval", action="store_true",
                   help="no interval samples (use with --on-change)")
    p.add_argument("--on-change", action="store_true",
                   help="book_snapshot also after every message that changes the top N")
    p.add_argument("--row-group", type=_positive, default=256_000, metavar="ROWS",
                   help="rows per Parquet row group (default 256000)")
    p.add_argument("--lookback-days", type=int, default=3, metavar="N",
                   help="days to look back for the book snapshot the first day starts from "
                        "(default 3)")
    p.add_argument("--force", action="store_true", help="export days already exported")
    p.add_argument("-j", "--jobs", type=_positive, default=1, metavar="N",
                   help="products exported in parallel (processes; default 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    return p


def _check_paths(root: Path, out: Path) -> None:
    if not root.is_dir():
        raise ToolError(f"{root}: no such data root", EXIT_USAGE)
    r, o = root.resolve(), out.resolve()
    if o == r or r in o.parents:
        raise ToolError(f"{out}: output must not be inside the data root {root}", EXIT_USAGE)
    if o.exists() and not o.is_dir():
        raise ToolError(f"{out}: exists and is not a directory", EXIT_USAGE)


def _selected(args: argparse.Namespace) -> frozenset[str]:
    chosen: frozenset[str] = args.datasets
    if args.channel:
        chans = set(args.channel)
        chosen = frozenset(d for d in chosen
                           if chans & set(D.PRODUCT_DATASETS.get(d, ("status",)))
                           or (d == "markers"))
    if not chosen - {"markers"}:
        raise ToolError("no dataset is built from the selected channels", EXIT_USAGE)
    return chosen


def _run(jobs: list[Job], n: int, quiet: bool) -> list[JobResult]:
    total = sum(input_bytes(j.root, j.product, job_channels(j), d)
                for j in jobs for d in j.days if not already_done(j, d))
    results: list[JobResult] = []
    with progress(total, "export", quiet) as bar:
        if n == 1:
            for j in jobs:
                results.append(export_product(j, bar.advance))
            return results
        with ProcessPoolExecutor(max_workers=n) as pool:
            futures = {pool.submit(export_product, j): j for j in jobs}
            for fut in as_completed(futures):
                res = fut.result()
                results.append(res)
                bar.advance(f"{res.product}: {len(res.days_done)} days", res.bytes_read)
    return results


def cmd_export(args: argparse.Namespace) -> int:
    root, out = Path(args.root), Path(args.out)
    _check_paths(root, out)
    chosen = _selected(args)
    opts = Options(datasets=chosen, depth=args.depth,
                   interval_ns=None if args.no_interval else args.interval_ms * 1_000_000,
                   on_change=args.on_change, floats=args.floats, row_group=args.row_group)
    if args.no_interval and not args.on_change and "book_snapshot" in chosen:
        raise ToolError("--no-interval needs --on-change for book_snapshot", EXIT_USAGE)
    jobs = plan(root, out, opts, args.format, args.product, args.first, args.last,
                args.force, args.lookback_days)
    if not jobs:
        raise ToolError(f"{root}: nothing recorded for the selected products, channels and "
                        "days", EXIT_USAGE)
    out.mkdir(parents=True, exist_ok=True)
    results = _run(jobs, args.jobs, args.quiet)
    if not args.quiet:
        _summary(results, out)

    return EXIT_OK


def _summary(results: list[JobResult], out: Path) -> None:
    done = sum(len(r.days_done) for r in results)
    skipped = sum(len(r.days_skipped) for r in results)
    rows: dict[str, int] = {}
    for r in results:
        for ds, n in r.rows.items():
            rows[ds] = rows.get(ds, 0) + n
    per = ", ".join(f"{ds} {n}" for ds, n in sorted(rows.items())) or "no rows"
    print(f"cbl-export: {done} product-days exported, {skipped} already done; rows: {per}; "
          f"into {out}", file=sys.stderr)
    bad = sum(r.unconverted for r in results)
    if bad:
        print(f"cbl-export: {bad} values could not be converted and are null (see "
              "docs/EXPORT.md)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args_in = sys.argv[1:] if argv is None else argv

    def body() -> int:
        return cmd_export(parser.parse_args(args_in))

    return run_tool("cbl-export", body)


if __name__ == "__main__":
    sys.exit(main())
