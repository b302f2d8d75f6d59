"""cbl-ship: copy archives to S3-compatible object storage, verified, and optionally free the
local disk of old ones (only once their remote copy is verified).

The decisions are `tools.ship_core` (pure), the requests and checks `tools.ship_s3`; this
module finds the archives, runs them on N threads (each request waits on the network, not the
GIL), reports progress and sums up. Safe to run from a timer and to interrupt at any point.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from storage import SegmentRef
from storage.source import S3Location, configure_s3, is_remote, parse_s3_url, s3_client
from tools.console_cli import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    ArgumentParser,
    ToolError,
    format_bytes,
    iso_day,
    progress,
    run_parsed,
)
from tools.select_cli import describe, find_segments
from tools.ship_core import Action, LocalArchive, decide, object_key, retention_due
from tools.ship_s3 import (
    ShipError,
    check_full,
    check_table,
    hash_file,
    head,
    remove_local,
    upload,
)

_DESCRIPTION = """\
Upload the archives (.seg.zst, written by cbl-compact) under ROOT to DEST, an
S3-compatible bucket and prefix (s3://BUCKET/PREFIX), with the same layout as on
disk: ROOT/BTC-USD/level2/2026-11-20.0000.seg.zst becomes
s3://BUCKET/PREFIX/BTC-USD/level2/2026-11-20.0000.seg.zst. Live and sealed
segments are never shipped: compact them first.

For each archive:
  1. hash it (SHA-256) and ask the server what it holds under the key (HEAD);
  2. the same size and SHA-256 there: nothing to upload (a re-run is cheap);
     missing or different: upload it with its SHA-256, which the server checks
     (a corrupted transfer is refused) and keeps;
  3. read the object's seek table and header back with range requests and
     compare them with the local archive's;
  4. with --keep-local-days N, an archive of a day more than N days before today
     (UTC) is then read back in full; only if its SHA-256 equals the local file's
     is the local file removed. An unverified local copy is never removed.

Credentials, region and endpoint come from the standard AWS chain: the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL) or ~/.aws/config and credentials;
--endpoint-url and --region override them. The bucket must exist.
"""

_EPILOG = """\
output:
  one line per archive on stderr ('[ 42.0%] uploaded BTC-USD/level2/...'; a
  progress bar on a terminal), then a summary: uploaded (bytes, MB/s), already
  there, local files removed, failed.

exit status:
  0    every archive is on the remote side (and verified), or nothing to do
  1    at least one archive failed (kept locally; the reason is printed)
  2    usage error: bad option, missing root, malformed s3:// URL
  130  interrupted (uploads in flight finish; a partial upload never counts)

examples:
  cbl-ship data s3://market-data/box1                 # upload what is missing
  cbl-ship -n data s3://market-data/box1              # what would be done
  cbl-ship -j 4 --keep-local-days 7 data s3://market-data/box1
  cbl-ship --endpoint-url http://127.0.0.1:8333 data s3://archive/cb

scheduling:
  deploy/cbl-ship.service runs after cbl-compact.service (same timer).

see also:
  docs/OBJECT_STORAGE.md; cbl-inspect ls/cat/verify/stats s3://BUCKET/PREFIX
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="cbl-ship", description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", metavar="ROOT", help="the data root holding the archives")
    p.add_argument("dest", metavar="DEST", help="s3://BUCKET/PREFIX")
    p.add_argument("-p", "--product", metavar="P", help="only this product")
    p.add_argument("-c", "--channel", metavar="C", help="only this channel")
    p.add_argument("--day", type=iso_day, metavar="YYYY-MM-DD", help="only this UTC day")
    p.add_argument("-j", "--jobs", type=int, default=4, metavar="N",
                   help="archives shipped in parallel (default 4)")
    p.add_argument("--keep-local-days", type=int, metavar="N",
                   help="remove local archives of days more than N days before today (UTC) "
                        "once their remote copy is verified in full (default: keep all)")
    p.add_argument("--today", type=iso_day, metavar="YYYY-MM-DD",
                   help="treat this UTC date as today for --keep-local-days")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="say what would be uploaded and removed (on stdout); change nothing")
    p.add_argument("--endpoint-url", metavar="URL",
                   help="S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--region", metavar="R", help="region (default: the AWS chain's)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no per-file lines: only errors and the summary")
    return p


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one archive."""

    rel: str
    action: Action
    size: int
    removed: bool = False
    uploaded: int = 0


@dataclass(frozen=True, slots=True)
class Job:
    """Everything a worker needs: where, what and what is allowed."""

    root: Path
    dest: S3Location
    client: Any
    today: dt.date
    keep_local_days: int | None
    dry_run: bool


def ship_one(job: Job, ref: SegmentRef) -> Outcome:
    """Hash, decide, upload, read back, maybe remove: one archive, start to end."""
    rel = f"{ref.product}/{ref.channel}/{ref.path.name}"
    size, sha = hash_file(ref.path)
    local = LocalArchive(rel, size, sha, ref.day)
    loc = S3Location(job.dest.bucket, object_key(job.dest.key, rel))
    action = decide(local, head(job.client, loc))
    due = retention_due(ref.day, job.today, job.keep_local_days)
    if job.dry_run:
        return Outcome(rel, action, size, removed=due)
    uploaded = 0
    if action is not Action.PRESENT:
        upload(job.client, loc, ref.path, size, sha)
        uploaded = size
    check_table(job.client, loc, ref.path, size)
    if due:
        check_full(job.client, loc, sha)
        remove_local(job.root, ref.path)
    return Outcome(rel, action, size, removed=due, uploaded=uploaded)


def _archives(args: argparse.Namespace, links: list[Path]) -> list[SegmentRef]:
    """The archives to ship; symbolic links found on the way (never followed, never shipped
    or removed) are appended to ``links``."""
    root = Path(args.root)
    if is_remote(args.root) or not root.is_dir():
        raise ToolError(f"{args.root}: not a local data root (a folder)", EXIT_USAGE)
    refs = [r for r in find_segments(root, args.product, args.channel, skipped=links)
            if r.archived and r.product != "?" and (args.day is None or r.day == args.day)]
    return refs


def _line(o: Outcome, dry_run: bool) -> str:
    verb = {Action.UPLOAD: "upload", Action.REPLACE: "replace (remote differs)",
            Action.PRESENT: "already there"}[o.action]
    if dry_run:
        tail = "; would remove the local copy after verifying" if o.removed else ""
        return f"would {verb}: {o.rel} ({format_bytes(o.size)}){tail}" if (
            o.action is not Action.PRESENT) else f"{verb}: {o.rel}{tail}"
    done = {Action.UPLOAD: "uploaded", Action.REPLACE: "replaced",
            Action.PRESENT: "present"}[o.action]
    return f"{done} {o.rel}" + ("; remote verified, local removed" if o.removed else "")


def _summary(outcomes: list[Outcome], failed: int, wall: float, dry_run: bool) -> str:
    sent = [o for o in outcomes if o.action is not Action.PRESENT]
    nbytes = sum(o.size for o in sent)
    present = len(outcomes) - len(sent)
    removed = sum(o.removed for o in outcomes)
    if dry_run:
        return (f"dry run: {len(sent)} archive(s) would be uploaded ({format_bytes(nbytes)}), "
                f"{present} already there, {removed} local would be removed once verified; "
                f"{failed} failed")
    speed = f"{nbytes / wall / 1e6:.1f} MB/s" if wall > 0 and nbytes else "-"
    return (f"uploaded {len(sent)} archive(s), {format_bytes(nbytes)} at {speed} in "
            f"{wall:.1f} s; {present} already there; {removed} local removed after "
            f"verification; {failed} failed")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise ToolError("-j must be at least 1", EXIT_USAGE)
    if args.keep_local_days is not None and args.keep_local_days < 0:
        raise ToolError("--keep-local-days must be 0 or more", EXIT_USAGE)
    try:
        dest = parse_s3_url(args.dest)
    except ValueError as exc:
        raise ToolError(str(exc), EXIT_USAGE) from None
    links: list[Path] = []
    refs = _archives(args, links)
    for link in links:  # a failure to report (exit 1), not something to pass over
        print(f"cbl-ship: FAILED {link}: is a symbolic link; refused (never followed)",
              file=sys.stderr)
    configure_s3(args.endpoint_url, args.region)
    job = Job(Path(args.root), dest, s3_client(), args.today or dt.datetime.now(dt.UTC).date(),
              args.keep_local_days, args.dry_run)
    signal.signal(signal.SIGTERM, _interrupt)
    return _execute(job, refs, args, failed=len(links))


def _execute(job: Job, refs: list[SegmentRef], args: argparse.Namespace, failed: int = 0) -> int:
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    total = sum(r.path.stat().st_size for r in refs)
    with progress(total, "shipping", quiet=args.quiet or args.dry_run) as bar, \
            ThreadPoolExecutor(max_workers=args.jobs, thread_name_prefix="ship") as pool:
        futures: dict[Future[Outcome], SegmentRef] = {
            pool.submit(ship_one, job, ref): ref for ref in refs}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
                for fut in done:
                    ref = futures[fut]
                    try:
                        o = fut.result()
                    except (ShipError, OSError, ValueError) as exc:
                        failed += 1
                        print(f"cbl-ship: FAILED {describe(ref.path, exc)}", file=sys.stderr)
                        bar.advance(f"failed {ref.path.name}", _size(ref))
                        continue
                    outcomes.append(o)
                    if args.dry_run:
                        print(_line(o, True))
                    else:
                        bar.advance(_line(o, False), o.size)
        except KeyboardInterrupt:
            for fut in futures:  # in-flight uploads finish (bounded by timeouts); no new ones
                fut.cancel()
            raise
    print("cbl-ship: " + _summary(outcomes, failed, time.perf_counter() - started,
                                  args.dry_run), file=sys.stderr)
    return EXIT_PROBLEMS if failed else EXIT_OK


def _size(ref: SegmentRef) -> int:
    try:
        return ref.path.stat().st_size
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    return run_parsed("cbl-ship", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
