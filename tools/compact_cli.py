"""cbl-compact: archive sealed segments of past UTC days as verified, seekable zstd.

The per-file procedure (and why it cannot lose data) is `storage.compact`; this module finds
the candidates, runs them on N worker threads (zstd releases the GIL while it compresses),
reports progress and sums up. Safe to run from cron or a systemd timer, and safe to interrupt.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from storage import (
    DATA_DIR_META,
    DEFAULT_LEVEL,
    QUARANTINE_DIR,
    SEGMENT_SUFFIX,
    CompactError,
    CompactResult,
    NotEligible,
    SegmentRef,
    compact_segment,
    parse_segment_path,
    read_segment_header,
)
from tools.console_cli import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    ArgumentParser,
    Progress,
    ToolError,
    format_bytes,
    iso_day,
    progress,
    run_parsed,
)
from tools.select_cli import describe, find_segments

_DESCRIPTION = """\
Archive the sealed segments of past UTC days as seekable zstd: X.seg becomes
X.seg.zst in the same folder, checked byte for byte against the source before the
source is removed. Archives read exactly like segments (cbl-inspect cat, --from,
verify); the seek table keeps each frame's time bounds and marker counts, so
readers jump to a time, and list gaps, without decompressing the day.

For each segment:
  1. skip it unless it is sealed and of a day before today (UTC): today's and
     unsealed segments are never touched (an unsealed past day is reported);
  2. check the source: every batch CRC up to the commit point, counts, hints and
     time index as in the header (a damaged source is left alone and reported as
     FAILED; with --salvage it is archived from its readable batches plus a GAP
     marker per lost range, and moved to <root>/.quarantine/<product>/<channel>/);
  3. write X.seg.zst.tmp from the segment's memory map, in independent ~1 MiB
     zstd frames plus a seek table, and fsync it;
  4. decompress it again and compare every frame with the source bytes, every
     batch CRC, every record count, marker count and time bound in the table;
  5. rename it to X.seg.zst (atomic), fsync the folder;
  6. only then delete X.seg.

A crash, kill -9, power cut or Ctrl-C at any moment leaves the source or a
verified archive (or both); running again is always safe and finishes the job.
Symbolic links (files or stream folders) are refused: compaction writes and
deletes, so it never goes through one.

TARGET is a data root, a product or channel folder inside one, or segment files
(default: ./data).
"""

_EPILOG = """\
output:
  one line per file on stderr ('[ 42.0%] compacted 2026-11-20.0000.seg 11.2x'; a
  progress bar on a terminal), then a summary: files, bytes in -> out, ratio,
  MB/s (wall clock, verification and fsyncs included), skipped, failed.

exit status:
  0    every candidate was compacted, or nothing was due
  1    at least one file failed (its source is kept; the reason is printed)
  2    usage error: bad option, missing path
  130  interrupted (files being compacted finish first; nothing is half-done)

examples:
  cbl-compact data                       # every past day, level 3, one worker
  cbl-compact -n data                    # what would be done; nothing written
  cbl-compact -j 2 -l 9 data             # smaller archives, two workers
  cbl-compact data/BTC-USD/level2/2026-11-20.0000.seg
  cbl-compact -q /var/lib/coinbase-logger          # from cron: errors and summary

scheduling:
  deploy/cbl-compact.service + deploy/cbl-compact.timer run it daily at 00:30 UTC
  (after the recorder sealed the previous day), at idle I/O priority.

see also:
  cbl-inspect --help; docs/TOOLS.md (manual, measurements), docs/ARCHIVE_FORMAT.md
"""


def _level(text: str) -> int:
    try:
        level = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= level <= 22:
        raise argparse.ArgumentTypeError("zstd levels are 1..22")
    return level


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="cbl-compact", description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", default=["data"], metavar="TARGET",
                   help="data root, folder or segment file (default: ./data)")
    p.add_argument("-l", "--level", type=_level, default=DEFAULT_LEVEL, metavar="N",
                   help=f"zstd level 1..22 (default {DEFAULT_LEVEL}: >10x at >150 MB/s per "
                        "core on Advanced Trade data; 9 gives ~14%% more ratio at a third of "
                        "the speed; see docs/TOOLS.md)")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="files compacted in parallel, on threads (default 1: leaves a core "
                        "to the recorder)")
    p.add_argument("--dictionary", type=Path, metavar="FILE",
                   help="zstd dictionary to compress with (e.g. from `zstd --train`); a copy "
                        "is embedded in every archive so it can always be read. Measured not "
                        "to pay on market data (see docs/TOOLS.md); off by default")
    p.add_argument("--salvage", action="store_true",
                   help="archive a damaged segment's readable batches with a GAP marker for "
                        "each lost range, and move the original to <root>/.quarantine/")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="list what would be compacted (on stdout); write nothing")
    p.add_argument("--today", type=iso_day, metavar="YYYY-MM-DD",
                   help="treat this UTC date as today (default: the real one); only earlier "
                        "days are compacted")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no per-file lines: only errors and the summary")
    return p


@dataclass
class Plan:
    todo: list[tuple[Path, int]] = field(default_factory=list)  # path, committed bytes
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_due: int = 0  # segments of today (or later): still being written, never touched


META = DATA_DIR_META


def _is_data_root(path: Path) -> bool:
    """A folder the recorder made (its metadata file), or one inside such a root."""
    full = path.resolve()
    return any((p / META).is_file() for p in (full, *list(full.parents)[:2]))


def _candidates(targets: list[str], links: list[Path]) -> Iterator[SegmentRef]:
    seen: set[Path] = set()
    for t in targets:
        refused = len(links)
        refs = find_segments(t, skipped=links)
        # symbolic links found here are failures to report (exit 1), not "nothing to compact"
        if not refs and len(links) == refused and Path(t).is_dir() and not _is_data_root(Path(t)):
            raise ToolError(f"{t}: not a data root (no {META} and no segment files under "
                            "it); nothing to compact", EXIT_USAGE)
        for ref in refs:
            if not ref.archived and ref.path not in seen:
                seen.add(ref.path)
                yield ref


def plan(targets: list[str], today: dt.date, salvage: bool = False) -> Plan:
    """Candidates worth a worker: past days, sealed. Everything else is a reasoned skip; a
    symbolic link or an unreadable header is a failure (with ``salvage``, a damaged header
    goes to a worker, which salvages the file)."""
    out = Plan()
    links: list[Path] = []
    for ref in _candidates(targets, links):
        if not ref.path.name.endswith(SEGMENT_SUFFIX):
            out.skipped.append(f"{ref.path}: not a {SEGMENT_SUFFIX} file")
            continue
        if ref.day >= today:
            out.not_due += 1  # today's (or a future day's) data is still being written
            continue
        try:
            header = read_segment_header(ref.path)
        except (OSError, ValueError) as exc:
            if salvage and isinstance(exc, ValueError):
                out.todo.append((ref.path, ref.path.stat().st_size))
            else:
                out.failed.append(describe(ref.path, exc))
            continue
        if not header.sealed:
            out.skipped.append(f"{ref.path}: not sealed (the recorder has not closed it)")
            continue
        out.todo.append((ref.path, header.committed_len))
    out.failed += [f"{link}: is a symbolic link; refused (never followed)" for link in links]
    return out


def _not_due(n: int, today: dt.date) -> str:
    if not n:
        return ""
    return (f"; {n} not due yet (of {today.isoformat()} UTC or later: still being written; "
            "a day is compacted once it is over and the recorder sealed it)")


def _stream_name(path: Path) -> str:
    """``product/channel/file`` of a segment, so a per-file line says which stream."""
    try:
        ref = parse_segment_path(path)
    except ValueError:
        return str(path)
    return f"{ref.product}/{ref.channel}/{path.name}"


def _summary(results: list[CompactResult], failed: int, skipped: int, wall: float,
             dry_run: bool) -> str:
    n_in = sum(r.bytes_in for r in results)
    n_out = sum(r.bytes_out for r in results)
    finished = sum(1 for r in results if r.action == "finished")
    if dry_run:
        return (f"dry run: {len(results)} file(s) would be compacted, "
                f"{format_bytes(n_in)}; {skipped} skipped, {failed} failed")
    ratio = f"{n_in / n_out:.2f}x" if n_out else "-"
    speed = f"{n_in / wall / 1e6:.1f} MB/s" if wall > 0 else "-"
    extra = f" ({finished} finished from an earlier run)" if finished else ""
    return (f"compacted {len(results)} file(s){extra}: {format_bytes(n_in)} -> "
            f"{format_bytes(n_out)}, ratio {ratio}, {speed} in {wall:.1f} s; "
            f"{skipped} skipped, {failed} failed")


def _salvaged(res: CompactResult) -> int:
    """Say a salvaged file (records were lost, so it counts as a failure: exit 1); 1 if so."""
    if res.action != "salvaged":
        return 0
    print(f"cbl-compact: SALVAGED {res.source}: damaged; archived its {res.records} readable "
          f"records and loss markers, original moved to {QUARANTINE_DIR}/ in the data root",
          file=sys.stderr)
    return 1


def _dictionary(path: Path | None) -> bytes | None:
    """The --dictionary file's bytes (None without one); a usage error if unreadable or empty."""
    if path is None:
        return None
    try:
        dictionary = path.read_bytes()
    except OSError as exc:
        raise ToolError(describe(path, exc), EXIT_USAGE) from None
    if not dictionary:
        raise ToolError(f"{path}: empty dictionary file", EXIT_USAGE)
    return dictionary


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise ToolError("-j must be at least 1", EXIT_USAGE)
    dictionary = _dictionary(args.dictionary)
    today = args.today or dt.datetime.now(dt.UTC).date()
    work = plan(args.targets, today, args.salvage)
    for line in work.skipped:
        if not args.quiet:
            print(f"cbl-compact: skipped {line}", file=sys.stderr)
    for line in work.failed:
        print(f"cbl-compact: FAILED {line}", file=sys.stderr)
    tally = _Tally(failures=len(work.failed), skipped=len(work.skipped),
                   dry_run=args.dry_run)
    started = time.perf_counter()
    total = sum(size for _, size in work.todo)
    with progress(total, "compacting", quiet=args.quiet or args.dry_run) as bar, \
            ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="compact") as pool:
        futures: dict[Future[CompactResult], tuple[Path, int]] = {
            pool.submit(compact_segment, path, args.level, dictionary, today=today,
                        dry_run=args.dry_run, salvage=args.salvage): (path, size)
            for path, size in work.todo
        }
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
                for fut in done:
                    tally.take(fut, *futures[fut], bar)
        except KeyboardInterrupt:
            # files already being compacted finish (each is safe to stop, but finishing is
            # quicker than redoing); the rest are not started
            for fut in futures:
                fut.cancel()
            raise
    if tally.salvaged:
        print(f"cbl-compact: {tally.salvaged} damaged file(s) salvaged (originals in "
              f"{QUARANTINE_DIR}/)", file=sys.stderr)
    print("cbl-compact: " + _summary(tally.results, tally.failures, tally.skipped,
                                     time.perf_counter() - started, args.dry_run)
          + _not_due(work.not_due, today), file=sys.stderr)
    return EXIT_PROBLEMS if tally.failures or tally.salvaged else EXIT_OK


@dataclass
class _Tally:
    """Each finished file's outcome, said as it comes and counted for the summary."""

    failures: int
    skipped: int
    dry_run: bool
    salvaged: int = 0  # damaged sources archived from their readable records (exit 1 too)
    results: list[CompactResult] = field(default_factory=list)

    def take(self, fut: Future[CompactResult], path: Path, size: int, bar: Progress) -> None:
        try:
            res = fut.result()
        except NotEligible as exc:
            self.skipped += 1
            print(f"cbl-compact: skipped {exc}", file=sys.stderr)
            bar.advance(f"skipped {_stream_name(path)}", size)
            return
        except (CompactError, OSError, ValueError) as exc:
            self.failures += 1
            print(f"cbl-compact: FAILED {describe(path, exc)}", file=sys.stderr)
            bar.advance(f"failed {_stream_name(path)}", size)
            return
        self.results.append(res)
        self.salvaged += _salvaged(res)
        if self.dry_run:
            print(f"would compact {path} ({format_bytes(res.bytes_in)}, "
                  f"{res.records} records)")
        else:
            bar.advance(f"{res.action} {_stream_name(path)} {res.ratio:.1f}x", size)


def main(argv: list[str] | None = None) -> int:
    return run_parsed("cbl-compact", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
