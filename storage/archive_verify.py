"""Integrity check of one segment or archive, listing every problem with its file offset.

Used by `tools/inspect verify` and kept in `storage/` beside the formats it checks. It only
reads: a damaged file is reported, never rewritten, so nothing is "repaired" into silent loss.
Archive frames are independent, so one bad frame does not hide problems in the others.

Findings come in two grades. A *problem* means bytes are damaged or disagree with their
header or seek table. A *warning* means the file is intact but something looks unusual: time
running backwards between batches is one (a host clock step does that to healthy data), so it is
reported without making the file bad; `inspect verify --strict` counts warnings as problems.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import mmap
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from storage.archive import ArchiveReader, is_archive
from storage.format import HEADER_SIZE, BatchInfo, CorruptSegment, SegmentHeader, scan_batches
from storage.markers import MarkerCounts, batch_kinds, markers_of
from storage.reader import SegmentReader


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding; `offset` is a byte offset in `path` (None when it concerns the whole file)."""

    path: Path
    offset: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}" if self.offset is None else f"{self.path}@{self.offset}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What verifying one file found: ``problems`` (damage, exit 1) and ``warnings`` (intact
    but unusual, e.g. time going backwards; exit 1 only with ``--strict``)."""

    path: Path
    problems: tuple[Problem, ...]
    records: int
    batches: int
    warnings: tuple[Problem, ...] = ()


def _ordering(
    path: Path, batches: Iterable[BatchInfo], where: dict[int, int]
) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings): a batch whose header bounds are inverted is damage; time running
    backwards from one batch to the next is a warning (a clock step does it to healthy data:
    records and CRCs are intact, the receive clock moved)."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    prev_last: int | None = None
    for b in batches:
        if b.first_ts_ns > b.last_ts_ns:
            problems.append(Problem(path, where.get(b.offset, b.offset),
                                    f"batch at segment offset {b.offset} ends before it starts"))
        if prev_last is not None and b.first_ts_ns < prev_last:
            warnings.append(Problem(
                path, where.get(b.offset, b.offset),
                f"warning: time goes back {(prev_last - b.first_ts_ns) / 1e6:.3f} ms at batch "
                f"(segment offset {b.offset}); records are intact (a clock step?)"))
        prev_last = b.last_ts_ns
    return problems, warnings


def _totals(
    path: Path, header: SegmentHeader, batches: list[BatchInfo], offset: int | None
) -> list[Problem]:
    out: list[Problem] = []
    records = sum(b.count for b in batches)
    if records != header.record_count:
        out.append(Problem(path, offset, f"header says {header.record_count} records, "
                                         f"batches hold {records}"))
    day_start = (header.day - dt.date(1970, 1, 1)).days * 86_400_000_000_000
    if header.record_count and not (
            day_start <= header.first_ts_ns <= header.last_ts_ns < day_start + 86_400 * 10**9):
        out.append(Problem(path, offset, f"records outside the segment's day {header.day} "
                                         "(UTC)"))
    if batches and header.record_count and (
            header.first_ts_ns, header.last_ts_ns) != (
            min(b.first_ts_ns for b in batches), max(b.last_ts_ns for b in batches)):
        out.append(Problem(path, offset, "header time bounds disagree with the batches"))
    return out


def verify_segment(path: Path) -> VerifyReport:
    """A `.seg` (live or sealed): header, every batch CRC up to the committed length, order."""
    try:
        reader = SegmentReader.open(path)
    except (CorruptSegment, OSError, ValueError) as exc:
        return VerifyReport(path, (_cannot_open(path, exc),), 0, 0)
    try:
        header = reader.header
        problems: list[Problem] = []
        size = os.path.getsize(path)
        end = header.committed_len
        if end > size:
            problems.append(Problem(path, None, f"header says {end} committed bytes, file has "
                                                f"{size}"))
            end = size
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            batches = list(scan_batches(mm, HEADER_SIZE, end))
        covered = batches[-1].offset + batches[-1].length if batches else HEADER_SIZE
        if covered != end:
            problems.append(Problem(path, covered, f"invalid batch (bad magic, length or CRC); "
                                                   f"{end - covered} committed bytes unreadable"))
        problems += _totals(path, header, batches, 0) if covered == end else []
        damaged, warnings = _ordering(path, batches, {})
        problems += damaged
        return VerifyReport(path, tuple(problems), sum(b.count for b in batches), len(batches),
                            tuple(warnings))
    finally:
        reader.close()


def verify_archive(path: Path) -> VerifyReport:
    """A `.seg.zst`: seek table, every frame's checksum and batches, record and marker counts,
    bounds, order."""
    try:
        reader = ArchiveReader.open(path)
    except (CorruptSegment, OSError, ValueError) as exc:
        return VerifyReport(path, (_cannot_open(path, exc),), 0, 0)
    problems: list[Problem] = []
    batches: list[BatchInfo] = []
    where: dict[int, int] = {}
    with reader:
        header = reader.header
        if not header.sealed:
            problems.append(Problem(path, 0, "archived header is not marked sealed"))
        if reader.table.uncompressed_size != header.committed_len:
            problems.append(Problem(path, None, f"archive holds {reader.table.uncompressed_size} "
                                                f"bytes, header says {header.committed_len}"))
        complete = True
        for entry in reader.data_frames:
            try:
                pairs = reader.frame_batches(entry, reader.frame_content(entry))
            except CorruptSegment as exc:
                problems.append(Problem(path, entry.compressed_offset, _strip(str(exc), path)))
                complete = False
                continue
            found = [info for info, _ in pairs]
            count = sum(b.count for b in found)
            if count != entry.record_count:
                problems.append(Problem(path, entry.compressed_offset,
                                        f"seek table says {entry.record_count} records, frame "
                                        f"holds {count}"))
            if found and (min(b.first_ts_ns for b in found), max(b.last_ts_ns for b in found)) != (
                    entry.min_ts_ns, entry.max_ts_ns):
                problems.append(Problem(path, entry.compressed_offset,
                                        "seek table time bounds disagree with the frame"))
            markers = markers_of(batch_kinds(blob) for _, blob in pairs)
            if entry.markers is not None and markers != entry.markers:
                problems.append(Problem(path, entry.compressed_offset,
                                        f"seek table marker counts {_counts(entry.markers)} "
                                        f"disagree with the frame's {_counts(markers)}"))
            for b in found:
                where[b.offset] = entry.compressed_offset
            batches += found
        if complete:
            problems += _totals(path, header, batches, None)
        damaged, warnings = _ordering(path, batches, where)
        problems += damaged
    return VerifyReport(path, tuple(problems), sum(b.count for b in batches), len(batches),
                        tuple(warnings))


def _counts(m: MarkerCounts) -> str:
    return ", ".join(f"{k} {v}" for k, v in m.as_dict().items() if v) or "none"


def _cannot_open(path: Path, exc: BaseException) -> Problem:
    """Why a file could not be opened, in words: the path once (the Problem prints it), the
    offset once, no ``[Errno N]``."""
    offset = getattr(exc, "offset", None)
    if isinstance(exc, OSError) and not isinstance(exc, CorruptSegment):
        text = f"cannot read it: {(exc.strerror or type(exc).__name__).lower()}"
    else:
        text = re.sub(r"( at offset \d+| \(at byte \d+\))$", "", _strip(str(exc), path))
    with contextlib.suppress(OSError):
        if os.path.getsize(path) == 0:
            text, offset = "empty file (0 bytes), not a segment or archive", None
    return Problem(path, offset, text)


def _strip(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def verify_file(path: str | os.PathLike[str]) -> VerifyReport:
    """Verify a segment or an archive, chosen by its name."""
    p = Path(path)
    return verify_archive(p) if is_archive(p) else verify_segment(p)
