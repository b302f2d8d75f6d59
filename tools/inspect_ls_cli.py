"""`inspect ls`: what is recorded where, and where a stream may be missing messages.

Quick by construction: an archive is described by its header frame and seek table (which keeps
per-frame marker counts); a live or sealed segment by its header plus, for the marker columns,
each batch's 40-byte header and kinds column read through the memory map — payloads are never
read. Two kinds of gap are shown: markers the recorder wrote into the data (GAP, DISCONNECT,
DROPPED, RESTART — RST: a restart after an unclean shutdown — ... per segment) and structural
ones (a day or a segment number missing from a stream). Trade-id jumps inside the messages are
what `inspect stats` counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any, TextIO

import orjson

from storage import (
    DATA_DIR_META,
    NO_MARKERS,
    ArchiveReader,
    CorruptSegment,
    MarkerCounts,
    SegmentRef,
    SegmentScan,
)
from storage.source import display, is_remote, remote_size
from tools.console_cli import EXIT_OK, EXIT_PROBLEMS, ToolError, format_time
from tools.select_cli import describe, find_segments, no_match, open_reader


@dataclass(frozen=True, slots=True)
class Row:
    ref: SegmentRef
    state: str
    records: int
    data_bytes: int
    disk_bytes: int
    first_ns: int
    last_ns: int
    error: str | None = None
    stream: str | None = None  # product/channel from the header
    markers: MarkerCounts | None = None  # None: unknown (marker_error says why, if damage)
    marker_error: str | None = None


def _row(ref: SegmentRef) -> Row:
    disk = remote_size(ref.path) if is_remote(ref.path) else ref.path.stat().st_size
    try:
        reader = open_reader(ref.path)
    except ToolError as exc:
        return Row(ref, "error", 0, 0, disk, 0, 0, str(exc))
    try:
        h = reader.header
        if isinstance(reader, ArchiveReader):
            markers, note = reader.marker_counts, None  # None: a version-1 archive
        else:
            markers, note = _segment_markers(ref)
        state = "archived" if ref.archived else ("sealed" if h.sealed else "live")
        return Row(ref, state, h.record_count, h.committed_len, disk, h.first_ts_ns,
                   h.last_ts_ns, stream=f"{h.product}/{h.channel}", markers=markers,
                   marker_error=note)
    finally:
        reader.close()


def _segment_markers(ref: SegmentRef) -> tuple[MarkerCounts | None, str | None]:
    """Markers of a .seg from batch headers and kinds columns (no payload read, no CRC)."""
    try:
        with SegmentScan(ref.path) as scan:
            return scan.marker_counts(), None
    except (CorruptSegment, OSError, ValueError) as exc:
        return None, f"markers unknown: {describe(ref.path, exc)} (run `cbl-inspect verify`)"


def _count(markers: MarkerCounts | None, field: str) -> str:
    return "?" if markers is None else str(getattr(markers, field))


def stream_gaps(refs: list[SegmentRef]) -> Iterator[str]:
    """Missing days between a stream's first and last day, and missing segment numbers."""
    days = sorted({r.day for r in refs})
    for a, b in pairwise(days):
        if (b - a).days > 1:
            first, last = a + dt.timedelta(days=1), b - dt.timedelta(days=1)
            span = first.isoformat() if first == last else f"{first}..{last}"
            yield f"no segment for {span}"
    for day, group in groupby(refs, key=lambda r: r.day):
        numbers = sorted({r.number for r in group})
        missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        if missing:
            yield f"{day}: segment number(s) {', '.join(f'{n:04d}' for n in missing)} missing"


META = DATA_DIR_META
"""Written by the recorder at the data root: venue, dialect, runs (storage/provenance.py)."""


def provenance(target: str) -> tuple[Path, dict[str, Any]] | None:
    """The data root's metadata for a root, product or channel folder or a file in one."""
    path = Path(target).resolve()
    for root in (path, *list(path.parents)[:4]):
        meta = root / META
        if meta.is_file():
            try:
                data = orjson.loads(meta.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                return root, {"error": describe(meta, exc)}
            return (root, data) if isinstance(data, dict) else None
    return None


def provenance_lines(root: Path, meta: dict[str, Any]) -> Iterator[str]:
    """Who recorded this root: venue, dialect, runs with version and host, unclean stops."""
    if "error" in meta:
        yield f"root {root}: metadata unreadable: {meta['error']}"
        return
    venue: dict[str, Any] = meta["venue"] if isinstance(meta.get("venue"), dict) else {}
    yield (f"root {root}: venue {venue.get('ws_url', '?')} (products from "
           f"{venue.get('rest_url', '?')}), dialect {meta.get('dialect', '?')}")
    runs = [r for r in meta.get("runs", []) if isinstance(r, dict)]
    for r in runs[-3:]:
        started = format_time(int(r["started_ns"])) if "started_ns" in r else "?"
        if "stopped_ns" in r:
            end = f"stopped {format_time(int(r['stopped_ns']))}"
        elif meta.get("running") == r:
            end = "running (or ended without a clean stop)"
        else:
            end = "ended without a clean stop"
        yield (f"  run {started} version {r.get('version', '?')} host {r.get('host', '?')}"
               f" {r.get('ws_url', '')}: {end}")
    yield (f"  {len(runs)} run(s) kept, {meta.get('unclean_stops', 0)} ended without a clean "
           "stop")


def _say_links(links: list[Path]) -> None:
    for link in links:
        print(f"cbl-inspect: skipped: {link} is a symbolic link (never followed)",
              file=sys.stderr)


def cmd_ls(args: argparse.Namespace) -> int:
    links: list[Path] = []
    refs = find_segments(args.root, args.product, args.channel, links)
    _say_links(links)
    if not refs:
        raise no_match(args.root, args.product, args.channel)
    out = sys.stdout
    _print_provenance(args, out)
    totals = _Totals(errors=len(links))
    if not args.json:
        print(f"{'STREAM':<28} {'DAY':<10} {'SEG':>4} {'STATE':<8} {'RECORDS':>10} "
              f"{'GAP':>5} {'DISC':>5} {'DROP':>5} {'RST':>4} "
              f"{'DATA':>10} {'DISK':>10}  {'FIRST':<30} {'LAST':<30}", file=out)
    for (product, channel), group_iter in groupby(refs, key=lambda r: (r.product, r.channel)):
        group = list(group_iter)
        for ref in group:
            row = _row(ref)
            totals.add(ref, row)
            _print_row(args.json, out, ref, row)
        if product != "?":
            for gap in stream_gaps(group):
                if args.json:
                    out.write(orjson.dumps({"product": product, "channel": channel,
                                            "gap": gap}).decode() + "\n")
                else:
                    print(f"  gap: {product}/{channel} {gap}", file=out)
    if not args.json:
        unknown = (f"; '?' = not known for {totals.unknown_markers} file(s)"
                   if totals.unknown_markers else "")
        print(f"{len(refs)} files, {totals.records} records, {totals.data} data bytes, "
              f"{totals.disk} bytes on disk; {_marker_totals(totals.markers)}{unknown}",
              file=out)
        print(_possible_loss(totals.markers, args.root), file=out)
    return EXIT_PROBLEMS if totals.errors else EXIT_OK


@dataclass
class _Totals:
    """What the summary lines add up; read errors are said on stderr as they are met."""

    errors: int = 0
    records: int = 0
    data: int = 0
    disk: int = 0
    markers: MarkerCounts = NO_MARKERS
    unknown_markers: int = 0

    def add(self, ref: SegmentRef, row: Row) -> None:
        if row.error:
            self.errors += 1
            print(f"cbl-inspect: {describe(ref.path, ToolError(row.error))}", file=sys.stderr)
        elif row.marker_error:
            self.errors += 1
            print(f"cbl-inspect: {row.marker_error}", file=sys.stderr)
        if row.markers is None:
            self.unknown_markers += 1
        else:
            self.markers = self.markers.plus(row.markers)
        self.records += row.records
        self.data += row.data_bytes
        self.disk += row.disk_bytes


def _print_row(as_json: bool, out: TextIO, ref: SegmentRef, row: Row) -> None:
    product, channel = ref.product, ref.channel
    if as_json:
        out.write(orjson.dumps({
            "path": display(ref.path), "product": product, "channel": channel,
            "day": ref.day.isoformat() if ref.day != dt.date.min else None,
            "number": ref.number, "state": row.state, "records": row.records,
            "data_bytes": row.data_bytes, "disk_bytes": row.disk_bytes,
            "first": format_time(row.first_ns) if row.records else None,
            "last": format_time(row.last_ns) if row.records else None,
            "markers": None if row.markers is None else row.markers.as_dict(),
            "error": row.error or row.marker_error}).decode() + "\n")
        return
    first = format_time(row.first_ns) if row.records else "-"
    last = format_time(row.last_ns) if row.records else "-"
    day = ref.day.isoformat() if ref.day != dt.date.min else "?"
    stream = row.stream if product == "?" and row.stream else f"{product}/{channel}"
    m = row.markers
    print(f"{stream:<28} {day:<10} {ref.number:>4} {row.state:<8} {row.records:>10} "
          f"{_count(m, 'gap'):>5} {_count(m, 'disconnect'):>5} {_count(m, 'dropped'):>5} "
          f"{_count(m, 'restart'):>4} "
          f"{row.data_bytes:>10} {row.disk_bytes:>10}  {first:<30} {last:<30}", file=out)


def _print_provenance(args: argparse.Namespace, out: TextIO) -> None:
    found = provenance(args.root)
    if found is None:
        return
    if args.json:
        out.write(orjson.dumps({"root": str(found[0]), "provenance": found[1]}).decode() + "\n")
    else:
        for line in provenance_lines(*found):
            print(line, file=out)


def _marker_totals(tm: MarkerCounts) -> str:
    return (f"markers: {tm.gap} gap, {tm.disconnect} disconnect, {tm.reconnect} reconnect, "
            f"{tm.dropped} dropped, {tm.restart} restart, {tm.subscribe} subscribe, "
            f"{tm.note} note, {tm.stop} stop"
            f"{f', {tm.other} of unknown kinds' if tm.other else ''}")


def _possible_loss(tm: MarkerCounts, root: str) -> str:
    """The line that answers "may data be missing?": a clean STOP is not counted."""
    line = (f"possible loss: {tm.possible_loss} marker(s) (gap, disconnect, dropped, restart"
            f"{', unknown kinds' if tm.other else ''}; a clean stop is not one)")
    if tm.possible_loss:
        line += f"; list them: cbl-inspect cat {root} --markers-only --format table"
    return line
