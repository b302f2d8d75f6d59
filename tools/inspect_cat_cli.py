"""`inspect cat` and `inspect tail`: records printed as raw bytes, JSON lines or a table.

Raw mode writes each message's original bytes untouched (stdout stays pure venue JSON for
`jq`), and markers go to stderr so a gap is never silently dropped from view — unless no data
records are selected (`--markers-only`, `--kind gap,...`): then the marker lines are the output
and go to stdout. Selecting kinds reads little: a segment's batches are picked by their kinds
column and an archive's frames by the seek table's marker counts, so only batches holding a
selected record are decoded. Output is written in large chunks; a closed pipe ends the command
quietly (see console_cli.run_tool).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import heapq
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import orjson

from storage import (
    POSSIBLE_LOSS,
    ArchiveReader,
    CorruptSegment,
    Record,
    RecordKind,
    SegmentHeader,
    SegmentReader,
    SegmentRef,
    SegmentScan,
    is_archive,
    iter_segments,
    validate_name,
)
from tools.console_cli import EXIT_OK, EXIT_USAGE, ToolError, format_time
from tools.damage_cli import DamageReport
from tools.select_cli import (
    describe,
    find_segments,
    is_multi_name,
    latest_per_segment,
    no_match,
    open_reader,
)

FORMATS = ("raw", "jsonl", "table")
_KIND_NAMES = {k.value: k.name.lower() for k in RecordKind}
# every kind but DATA, including kinds this code does not know yet: a reader must see them
MARKER_KINDS = frozenset(range(1, 256))
# what --markers-only shows by default: where messages may be missing (and kinds this code
# does not know, which might be); --all-markers adds reconnect, subscribe, note and stop
LOSS_KINDS = frozenset(POSSIBLE_LOSS) | frozenset(range(max(RecordKind) + 1, 256))


def kind_name(kind: int) -> str:
    return _KIND_NAMES.get(kind, f"kind{kind}")


def parse_kinds(text: str) -> frozenset[int]:
    """`gap,disconnect` → their kind numbers; ToolError (usage) naming the valid names."""
    by_name = {name: value for value, name in _KIND_NAMES.items()}
    by_name["markers"] = -1  # shorthand for every kind but data
    kinds: set[int] = set()
    for word in (w.strip().lower() for w in text.split(",")):
        if word not in by_name:
            raise ToolError(f"unknown record kind {word!r}: use {', '.join(by_name)} "
                            "(comma-separated)", EXIT_USAGE)
        kinds |= MARKER_KINDS if word == "markers" else {by_name[word]}
    return frozenset(kinds)


def _isatty(out: BinaryIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


class RecordPrinter:
    """Formats records of one stream at a time; buffers output and flushes per call to flush."""

    def __init__(self, fmt: str, out: BinaryIO, err: BinaryIO,
                 markers_to_stdout: bool = False) -> None:
        self.fmt = fmt
        self.out = out
        self.err = err
        # raw format: marker lines go to stderr, unless they are all that was asked for
        self.marker_out = out if markers_to_stdout else err
        # a table is cut to the terminal's width only on a terminal: piped, it is whole
        self.width = shutil.get_terminal_size().columns if _isatty(out) else 0
        self.count = 0

    def emit(self, product: str, channel: str, rec: Record) -> None:
        self.count += 1
        if self.fmt == "raw":
            if rec.kind == RecordKind.DATA:
                self.out.write(rec.payload + b"\n")
            else:
                self.marker_out.write(b"# %s %s %s/%s %s\n" % (
                    kind_name(rec.kind).upper().encode(), format_time(rec.ts_ns).encode(),
                    product.encode(), channel.encode(), rec.payload))
        elif self.fmt == "jsonl":
            self.out.write(self._jsonl(product, channel, rec))
        else:
            self.out.write(self._row(product, channel, rec))

    def _jsonl(self, product: str, channel: str, rec: Record) -> bytes:
        head = orjson.dumps({"ts": format_time(rec.ts_ns), "ts_ns": rec.ts_ns,
                             "kind": kind_name(rec.kind), "product": product,
                             "channel": channel, "offset": rec.offset})
        try:
            orjson.loads(rec.payload)
        except orjson.JSONDecodeError:
            tail = b',"raw_b64":"' + base64.b64encode(rec.payload) + b'"}\n'
        else:
            # the message's own bytes, spliced in: nothing re-encoded, numbers keep their text.
            # In valid JSON a CR/LF can only be whitespace between tokens, so making it a space
            # keeps the meaning and keeps one record per line.
            body = rec.payload.strip()
            if b"\n" in body or b"\r" in body:
                body = body.replace(b"\r", b" ").replace(b"\n", b" ")
            tail = b',"msg":' + body + b"}\n"
        return head[:-1] + tail

    def _row(self, product: str, channel: str, rec: Record) -> bytes:
        kind = kind_name(rec.kind)
        label = kind if rec.kind == RecordKind.DATA else f">>> {kind.upper()} <<<"
        text = rec.payload.decode("utf-8", "replace").replace("\n", " ")
        line = f"{format_time(rec.ts_ns)}  {label:<18} {product}/{channel}  {len(rec.payload):>7}  "
        room = max(self.width - len(line), 20)
        if self.width and len(text) > room:
            text = text[: room - 1] + "…"
        return (line + text + "\n").encode("utf-8")

    def flush(self) -> None:
        self.out.flush()
        self.err.flush()


def _day_range(from_ns: int | None, to_ns: int | None) -> tuple[dt.date, dt.date]:
    def day(ns: int) -> dt.date:
        return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).date()

    lo = day(from_ns) - dt.timedelta(days=1) if from_ns is not None else dt.date.min
    hi = day(to_ns) + dt.timedelta(days=1) if to_ns is not None else dt.date.max
    return lo, hi


@dataclass
class ReadTotals:
    """Totals of bytes fetched from files, for --io-stats (archives count exactly)."""

    archive_bytes: int = 0
    files: int = 0


def records_of(
    ref: SegmentRef, from_ns: int | None, to_ns: int | None, reads: ReadTotals,
    kinds: frozenset[int] | None = None, report: DamageReport | None = None,
) -> Iterator[tuple[str, str, Record]]:
    """Records of one file in a time window (and of the given kinds only, if any). With a
    ``report``, damage is reported there and a file that cannot be opened is skipped (said
    there) instead of ending the command."""
    try:
        reader = open_reader(ref.path)
    except ToolError as exc:
        if report is None:
            raise
        report.file_failed(str(exc))
        return
    if report is not None:
        report.watch(reader)
    reads.files += 1
    try:
        h = reader.header
        if _skippable(h, from_ns, to_ns):
            return
        product, channel = reader.header.product, reader.header.channel
        if kinds is None:
            records = reader.records(from_ns, to_ns)
        elif isinstance(reader, ArchiveReader):
            records = reader.records(from_ns, to_ns, kinds)
        else:
            records = _segment_records(reader, kinds, from_ns, to_ns)
        for rec in records:
            yield product, channel, rec
    finally:
        if isinstance(reader, ArchiveReader):
            reads.archive_bytes += reader.bytes_read
        reader.close()


def _skippable(h: SegmentHeader, from_ns: int | None, to_ns: int | None) -> bool:
    """Whether the header's time bounds rule the whole file out. Only checked hints count: a
    v2 segment's hints pass their checksum, an archive's header frame passes zstd's; version-1
    segment hints are not checked, so such a file is read instead."""
    if not (h.record_count and h.hints_ok):
        return False
    return ((from_ns is not None and h.last_ts_ns < from_ns)
            or (to_ns is not None and h.first_ts_ns > to_ns))


def _segment_records(reader: SegmentReader, kinds: frozenset[int], from_ns: int | None,
                     to_ns: int | None) -> Iterator[Record]:
    """Records of some kinds from a .seg, decoding only the batches that hold one (batch
    headers walked without reading payloads) when the commit point is checked (v2 hints);
    otherwise, and on damage from the last record given, by the resynchronising reader (which
    reports what it skips)."""
    done = -1
    if not reader.header.hints_ok or reader.damage:  # the commit point is not checked
        yield from (rec for rec in reader.records(from_ns, to_ns) if rec.kind in kinds)
        return
    try:
        with SegmentScan(reader.path) as scan:
            for rec in scan.records(kinds, from_ns, to_ns):
                done = rec.offset
                yield rec
        return
    except CorruptSegment:
        pass
    for rec in reader.records(from_ns, to_ns):
        if rec.offset > done and rec.kind in kinds:
            yield rec


def selected(args: argparse.Namespace, report: DamageReport | None = None) -> list[SegmentRef]:
    links: list[Path] = []
    refs = latest_per_segment(find_segments(args.target, args.product, args.channel, links))
    if report is not None:
        report.skipped_links(links)
    lo, hi = _day_range(getattr(args, "from_ns", None), getattr(args, "to_ns", None))
    return [r for r in refs if r.product == "?" or lo <= r.day <= hi]


def _multi_refs(args: argparse.Namespace) -> list[SegmentRef]:
    """With ``-p P``: the ``_multi*`` streams of the same root (and channel), whose frames
    may name P among other products; their records are filtered by :func:`_names`."""
    if not args.product or args.product.startswith("_"):
        return []
    root = Path(args.target)
    if not root.is_dir():
        return []
    refs = [r for r in find_segments(root, None, args.channel) if is_multi_name(r.product)]
    lo, hi = _day_range(args.from_ns, args.to_ns)
    return latest_per_segment(r for r in refs if lo <= r.day <= hi)


def _names(product: str) -> Callable[[Record], bool]:
    """A ``_multi`` record concerns ``product`` if it is a marker (those cover every product
    of the stream) or its bytes hold the product id as a JSON string."""
    needle = orjson.dumps(product)

    def keep(rec: Record) -> bool:
        return rec.kind != RecordKind.DATA or needle in rec.payload

    return keep


def check_window(args: argparse.Namespace) -> None:
    """``--to`` must come after ``--from`` (an empty window is a mistake, not "nothing")."""
    lo, hi = getattr(args, "from_ns", None), getattr(args, "to_ns", None)
    if lo is not None and hi is not None and hi <= lo:
        raise ToolError(f"--to ({format_time(hi)}) is not after --from ({format_time(lo)})",
                        EXIT_USAGE)


def cmd_cat(args: argparse.Namespace) -> int:
    check_window(args)
    report = DamageReport()
    refs = selected(args, report)
    multi = _multi_refs(args) if refs else []
    if not refs:
        raise no_match(args.target, args.product, args.channel)
    refs += [r for r in multi if r not in refs]
    if args.markers_only:
        kinds: frozenset[int] | None = MARKER_KINDS if args.all_markers else LOSS_KINDS
    elif args.all_markers:
        raise ToolError("--all-markers goes with --markers-only", EXIT_USAGE)
    else:
        kinds = args.kinds
    printer = RecordPrinter(args.format, sys.stdout.buffer, sys.stderr.buffer,
                            markers_to_stdout=kinds is not None and RecordKind.DATA not in kinds)
    reads = ReadTotals()
    streams: dict[tuple[str, str], list[SegmentRef]] = {}
    for r in refs:
        streams.setdefault((r.product, r.channel) if r.product != "?" else (str(r.path), ""),
                           []).append(r)

    def chain(group: list[SegmentRef]) -> Iterator[tuple[str, str, Record]]:
        for r in group:
            items = records_of(r, args.from_ns, args.to_ns, reads, kinds, report)
            if r in multi:
                keep = _names(args.product)
                yield from (item for item in items if keep(item[2]))
            else:
                yield from items

    try:
        if args.merge and len(streams) > 1:
            merged = heapq.merge(*(chain(g) for g in streams.values()),
                                 key=lambda item: item[2].ts_ns)
            for product, channel, rec in merged:
                printer.emit(product, channel, rec)
        else:
            for group in streams.values():
                for product, channel, rec in chain(group):
                    printer.emit(product, channel, rec)
        printer.flush()
    finally:
        if args.show_io:
            print(f"cbl-inspect: {printer.count} records from {reads.files} files; "
                  f"{reads.archive_bytes} bytes read from archives", file=sys.stderr)
    return report.finish(EXIT_OK)


def _stream_dir(args: argparse.Namespace) -> tuple[Path, str, str]:
    parts = args.target.split("/")
    if len(parts) != 2:
        raise ToolError(f"{args.target}: not a file and not PRODUCT/CHANNEL", EXIT_USAGE)
    try:
        product = validate_name(parts[0], "product")
        channel = validate_name(parts[1], "channel")
    except ValueError as exc:
        raise ToolError(str(exc), EXIT_USAGE) from None
    return Path(args.root), product, channel


def _channel_folder(folder: Path) -> tuple[Path, str, str]:
    """ROOT/PRODUCT/CHANNEL from a channel folder: one holding segment files, or two levels
    under a data root (its .coinbase-logger.json) when the stream has no file yet."""
    full = folder.resolve()
    root = full.parent.parent
    try:
        product = validate_name(full.parent.name, "product")
        channel = validate_name(full.name, "channel")
    except ValueError:
        product = channel = ""
    holds = any(p.name.endswith((".seg", ".seg.zst")) for p in full.iterdir() if p.is_file())
    if not product or not channel or not (holds or (root / ".coinbase-logger.json").is_file()):
        raise ToolError(f"{folder}: not a channel folder (ROOT/PRODUCT/CHANNEL); give a "
                        "segment file, a channel folder or PRODUCT/CHANNEL", EXIT_USAGE)
    return root, product, channel


def _latest(root: Path, product: str, channel: str) -> SegmentRef | None:
    refs = list(iter_segments(root, product, channel))
    return refs[-1] if refs else None


def cmd_tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise ToolError("-n must be >= 0", EXIT_USAGE)
    if args.poll <= 0:
        raise ToolError("--poll must be > 0", EXIT_USAGE)
    printer = RecordPrinter(args.format, sys.stdout.buffer, sys.stderr.buffer)
    report = DamageReport()
    target = Path(args.target)
    if target.is_file():
        after = _print_last(target, args.lines, printer, report)
        if args.follow and not is_archive(target):
            _follow_segment(target, after, args.poll, printer, lambda: False, report)
        return report.finish(EXIT_OK)
    if target.is_dir():  # a channel folder, as every other sub-command takes: ROOT/P/C
        root, product, channel = _channel_folder(target)
    else:
        root, product, channel = _stream_dir(args)
    ref = _latest(root, product, channel)
    while ref is None:
        if not args.follow:
            raise ToolError(f"no segments for {product}/{channel} under {root}", EXIT_USAGE)
        time.sleep(args.poll)  # a stream that has not started yet: wait for its first file
        ref = _latest(root, product, channel)
    after = _print_last(ref.path, args.lines, printer, report)
    if not args.follow:
        return report.finish(EXIT_OK)
    current = ref
    while True:
        if not is_archive(current.path):
            _follow_segment(current.path, after, args.poll, printer,
                            partial(_has_next, root, current), report)
        nxt = _next_after(root, current)
        while nxt is None:
            time.sleep(args.poll)
            nxt = _next_after(root, current)
        current, after = nxt, -1
        if is_archive(current.path):
            reader = open_reader(current.path)
            report.watch(reader)
            try:
                for rec in reader.records():
                    printer.emit(reader.header.product, reader.header.channel, rec)
                printer.flush()
            finally:
                reader.close()


def _has_next(root: Path, ref: SegmentRef) -> bool:
    return _next_after(root, ref) is not None


def _next_after(root: Path, ref: SegmentRef) -> SegmentRef | None:
    for r in iter_segments(root, ref.product, ref.channel):
        if (r.day, r.number) > (ref.day, ref.number):
            return r
    return None


def _print_last(path: Path, n: int, printer: RecordPrinter, report: DamageReport) -> int:
    """Print the last n records (walking batches from the end, so big files are quick);
    returns the offset of the last record printed or present (-1 if none)."""
    reader = open_reader(path)
    report.watch(reader)
    try:
        h = reader.header
        batches = list(reader.batches())
        picked: list[Record] = []
        for b in reversed(batches):
            if len(picked) >= n:
                break
            if isinstance(reader, ArchiveReader):
                recs = reader.records_in_batch(b)
            else:
                recs = [r for r in reader.records(b.first_ts_ns, b.last_ts_ns + 1)
                        if b.offset <= r.offset < b.offset + b.length]
            picked[:0] = recs
        for rec in picked[max(0, len(picked) - n):] if n else []:
            printer.emit(h.product, h.channel, rec)
        printer.flush()
        if not batches:
            return -1
        return batches[-1].offset + batches[-1].length - 1
    finally:
        reader.close()


_END = object()
ABANDON_AFTER_S = 10.0


def _follow_segment(path: Path, after: int, poll_s: float, printer: RecordPrinter,
                    newer_exists: Callable[[], bool], report: DamageReport) -> None:
    """Print records past offset `after` as the writer commits them, until the segment is
    sealed — or, if the recorder restarted into a newer segment and this one stays unsealed
    and silent for ABANDON_AFTER_S, until then (said on stderr).

    `SegmentReader.follow` sleeps between polls, so it runs in a helper thread and this loop
    stays free to notice the rotation.
    """
    reader = open_reader(path)
    assert isinstance(reader, SegmentReader)
    report.watch(reader)  # damage found while following is said at once (stderr)
    product, channel = reader.header.product, reader.header.channel
    items: queue.Queue[object] = queue.Queue(maxsize=65_536)

    def pump() -> None:
        try:
            for rec in reader.follow(poll_s):
                if rec.offset > after:
                    items.put(rec)
            items.put(_END)
        except BaseException as exc:  # handed to the main thread, which reports it
            items.put(exc)

    threading.Thread(target=pump, name="tail-follow", daemon=True).start()
    quiet_since = time.monotonic()
    while True:
        try:
            item = items.get(timeout=poll_s)
        except queue.Empty:
            printer.flush()
            if time.monotonic() - quiet_since > ABANDON_AFTER_S and newer_exists():
                printer.err.write(b"# %s is not sealed but a newer segment exists; moving on\n"
                                  % str(path).encode())
                return
            continue
        if item is _END:
            printer.flush()
            return
        if isinstance(item, BaseException):
            raise ToolError(describe(path, item))
        assert isinstance(item, Record)
        quiet_since = time.monotonic()
        printer.emit(product, channel, item)
        if items.empty():
            printer.flush()
