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
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from storage.archive import ArchiveReader, is_archive
from storage.damage import Damage
from storage.format import OFF_INDEX_COUNT, OFF_STATS, BatchInfo, CorruptSegment, SegmentHeader
from storage.markers import MarkerCounts, batch_kinds, markers_of
from storage.reader import SegmentReader
from storage.recovery import index_due


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
    path: Path, header: SegmentHeader, batches: list[BatchInfo], offset: int | None,
    day_check: bool = True,
) -> list[Problem]:
    out: list[Problem] = []
    records = sum(b.count for b in batches)
    if records != header.record_count:
        out.append(Problem(path, offset, f"header says {header.record_count} records, "
                                         f"batches hold {records}"))
    day_start = (header.day - dt.date(1970, 1, 1)).days * 86_400_000_000_000
    if day_check and header.record_count and not (
            day_start <= header.first_ts_ns <= header.last_ts_ns < day_start + 86_400 * 10**9):
        out.append(Problem(path, offset, f"records outside the segment's day {header.day} "
                                         "(UTC)"))
    if batches and header.record_count and (
            header.first_ts_ns, header.last_ts_ns) != (
            min(b.first_ts_ns for b in batches), max(b.last_ts_ns for b in batches)):
        out.append(Problem(path, offset, "header time bounds disagree with the batches"))
    return out


def _damage_problems(damage: Iterable[Damage]) -> list[Problem]:
    return [Problem(d.path, d.offset, f"{d.reason}; {d.length} bytes skipped (~{d.records} "
                                      "records lost)" if d.length else d.reason)
            for d in damage]


def expected_index(batches: Iterable[BatchInfo], step: int) -> list[tuple[int, int]]:
    """The time index a writer keeps for these batches (the rule recovery also applies)."""
    index: list[tuple[int, int]] = []
    last: int | None = None
    for b in batches:
        if index_due(index, b.offset, step):
            index.append((b.offset, 0 if last is None else last))
        last = b.last_ts_ns if last is None else max(last, b.last_ts_ns)
    return index


def hint_problems(path: Path, header: SegmentHeader, batches: list[BatchInfo],
                  live: bool, day_check: bool = True) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) about the header's hints and time index checked against intact
    batches: checksums (v2), the record count, the time bounds, every index entry."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if header.version >= 2 and not header.hints_ok:
        (warnings if live else problems).append(Problem(
            path, OFF_STATS, "header hints (commit point, record count, time bounds) fail "
                             "their checksum" + (" (a commit in progress?)" if live else "")))
    if header.version >= 2 and not header.index_ok:
        problems.append(Problem(path, OFF_INDEX_COUNT, "time index fails its checksum"))
    if list(header.index) != expected_index(batches, header.index_step):
        problems.append(Problem(path, OFF_INDEX_COUNT,
                                "time index disagrees with the batches (a reader seeking by "
                                "time would miss records)"))
    if header.version < 2 or header.hints_ok:
        problems += _totals(path, header, batches, 0, day_check)
    return problems, warnings


def verify_segment(path: Path) -> VerifyReport:
    """A `.seg` (live or sealed): header, every batch (resynchronising past damage, each
    damaged range reported), hints and time index against the batches, order."""
    try:
        reader = SegmentReader.open(path)
    except (CorruptSegment, OSError, ValueError) as exc:
        return VerifyReport(path, (_cannot_open(path, exc),), 0, 0)
    with reader:
        batches = list(reader.batches())
        header = reader.header
        problems = _damage_problems(reader.damage)
        warnings: list[Problem] = []
        if not reader.damage:
            hint, warnings = hint_problems(path, header, batches, not header.sealed)
            problems += hint
    damaged, order = _ordering(path, batches, {})
    return VerifyReport(path, tuple(problems + damaged), sum(b.count for b in batches),
                        len(batches), tuple(warnings + order))


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
        for entry, content in reader.frames_content(reader.data_frames):
            pairs = reader.frame_batches(entry, content)
            found = [info for info, _ in pairs]
            if reader.table_rebuilt:
                batches += found
                continue
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
        problems = _damage_problems(reader.damage) + problems
        if not reader.damage:
            hint, _ = hint_problems(path, header, batches, False)
            problems += hint
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
