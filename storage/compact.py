"""Crash-safe compaction of one sealed segment of a past UTC day into a verified archive.

The procedure never has a moment where the data exists only in an unverified place:

1. refuse anything that is not a sealed segment of a day before today (UTC), or whose batches
   do not cover its committed length with valid CRCs (a damaged source is left for a human);
2. write `X.seg.zst.tmp` (held under an exclusive lock, so two compactors never share it)
   straight from the segment's memory map, then fsync it;
3. reopen the temporary file as an archive and check every frame: zstd checksum, content equal
   to the source bytes, every batch CRC valid, record counts, marker counts and time bounds as
   the seek table says;
4. rename it to `X.seg.zst` atomically and fsync the directory — only now is the archive real;
5. remove the source (not fsynced: a crash that undoes the removal is finished by the next run).

A crash or SIGKILL anywhere leaves the source (plus perhaps a stale `.tmp`, discarded on the next
run) or a verified archive (plus perhaps the source, which the next run verifies the archive
against and then removes). Running it again is always safe and finishes the job.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path

from storage.archive import DEFAULT_LEVEL, FRAME_TARGET_BYTES, ArchiveReader, write_archive
from storage.archive_verify import hint_problems
from storage.format import (
    HEADER_SIZE,
    BatchInfo,
    CorruptSegment,
    ForeignFile,
    Skipped,
    decode_header,
    scan_spans,
)
from storage.layout import (
    ARCHIVE_SUFFIX,
    QUARANTINE_DIR,
    SEGMENT_OPEN_FLAGS,
    SEGMENT_SUFFIX,
    SymlinkRefused,
    parse_segment_path,
    refuse_symlinked_dirs,
)
from storage.markers import batch_kinds, markers_of
from storage.salvage import salvage_image

TMP_SUFFIX = ".tmp"


class CompactError(Exception):
    """Compaction of one file failed; the source is untouched (the message says why)."""


class NotEligible(CompactError):
    """The file must not be compacted (today's, unsealed, not a segment); nothing was done."""


class Damaged(CompactError):
    """The source is damaged: never archived as it is, never deleted (``salvage`` archives
    what is readable and moves the original into the quarantine folder instead)."""


@dataclass(frozen=True, slots=True)
class CompactResult:
    """What happened to one segment: `action` is "compacted", "finished" (a previous run's
    verified archive existed; the source was removed now) or "dry-run"."""

    source: Path
    archive: Path
    action: str
    bytes_in: int
    bytes_out: int
    records: int
    frames: int
    seconds: float

    @property
    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0


def archive_path_for(source: Path) -> Path:
    """`X.seg` → `X.seg.zst`, in the same folder (the layout's archive name)."""
    return source.with_name(source.name[: -len(SEGMENT_SUFFIX)] + ARCHIVE_SUFFIX)


def _today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_source(source: Path) -> None:
    """Delete the source once its verified archive is durably in place (an overlapping run
    may have deleted it already: the same outcome). The deletion is not fsynced: if a crash
    undoes it, the next run finds source + verified archive and deletes the source again."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(source)


def _source_batches(buf: memoryview, source: Path) -> tuple[int, list[BatchInfo], int]:
    """Batches of a sealed segment covering exactly its committed bytes, every hint and the
    time index agreeing with them; CompactError (the source is left alone) on any damage."""
    try:
        header = decode_header(bytes(buf[:HEADER_SIZE]))
    except (CorruptSegment, ForeignFile) as exc:
        raise Damaged(f"{source}: {exc}; left untouched") from None
    if not header.sealed:
        raise NotEligible(f"{source}: segment is not sealed; skipped")
    end = header.committed_len
    if end > len(buf):
        raise Damaged(f"{source}: header says {end} committed bytes but the file has {len(buf)}")
    batches: list[BatchInfo] = []
    for span in scan_spans(buf, HEADER_SIZE, end, 0, header.version):
        if isinstance(span, Skipped):
            raise Damaged(f"{source}: invalid batch at offset {span.offset} ({span.length} "
                          f"bytes) before the committed end {end}; left untouched")
        batches.append(span[0])
    problems, _ = hint_problems(source, header, batches, False, day_check=False)
    if problems:
        raise Damaged(f"{problems[0]}; left untouched")
    return end, batches, sum(b.count for b in batches)


def verify_against_source(archive: Path, buf: memoryview, end: int, records: int) -> int:
    """Check an archive against its source bytes frame by frame; returns the record count."""
    try:
        reader = ArchiveReader.open(archive)
    except (CorruptSegment, OSError) as exc:
        raise CompactError(f"{archive}: not a valid archive: {exc}") from None
    with reader:
        table = reader.table
        if table.uncompressed_size != end:
            raise CompactError(
                f"{archive}: holds {table.uncompressed_size} bytes, the source {end}"
            )
        if reader.frame_content(table.frames[0]) != buf[:HEADER_SIZE].tobytes():
            raise CompactError(f"{archive}: header frame differs from the source")
        seen = 0
        for entry in reader.data_frames:
            content = reader.frame_content(entry)
            # tobytes + bytes compare is a memcmp; comparing to the memoryview is elementwise
            if content != buf[entry.uncompressed_offset:entry.uncompressed_end].tobytes():
                raise CompactError(
                    f"{archive}: frame at byte {entry.compressed_offset} differs from the source"
                )
            found = reader.frame_batches(entry, content)
            batches = [info for info, _ in found]
            count = sum(b.count for b in batches)
            lo = min((b.first_ts_ns for b in batches), default=0)
            hi = max((b.last_ts_ns for b in batches), default=0)
            markers = markers_of(batch_kinds(blob) for _, blob in found)
            if count != entry.record_count or (count and (lo, hi) != (
                    entry.min_ts_ns, entry.max_ts_ns)) or markers != entry.markers:
                raise CompactError(
                    f"{archive}: seek table entry at byte {entry.compressed_offset} disagrees "
                    "with the frame's batches"
                )
            seen += count
        if seen != records:
            raise CompactError(f"{archive}: holds {seen} records, the source {records}")
    return seen


def _lock_tmp(tmp: Path) -> int:
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | SEGMENT_OPEN_FLAGS, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise NotEligible(f"{tmp}: another compactor is working on it; skipped") from None
        raise
    os.ftruncate(fd, 0)
    return fd


def compact_segment(
    path: str | os.PathLike[str],
    level: int = DEFAULT_LEVEL,
    dictionary: bytes | None = None,
    *,
    today: dt.date | None = None,
    dry_run: bool = False,
    frame_target: int = FRAME_TARGET_BYTES,
    salvage: bool = False,
) -> CompactResult:
    """Archive one sealed segment of a past UTC day next to it, verified, then drop the source.

    Raises NotEligible (nothing done) for today's or unsealed segments and CompactError when
    something is wrong (Damaged for a damaged source); in both cases the source is still there.
    With ``salvage``, a damaged source is archived from its readable batches plus a GAP marker
    for each lost range, and moved to the quarantine folder (see :func:`salvage_segment`).
    """
    source = Path(path)
    if not source.name.endswith(SEGMENT_SUFFIX):
        raise NotEligible(f"{source}: not a {SEGMENT_SUFFIX} segment file; skipped")
    try:
        ref = parse_segment_path(source)
    except ValueError as exc:
        raise NotEligible(f"{exc}; skipped") from None
    if ref.day >= (today or _today_utc()):
        raise NotEligible(f"{source}: day {ref.day} is not over yet (UTC); skipped")
    archive = archive_path_for(source)
    tmp = archive.with_name(archive.name + TMP_SUFFIX)
    started = time.perf_counter()
    _refuse_links(source, archive, tmp)
    if salvage and not dry_run:
        with contextlib.suppress(FileNotFoundError):
            try:
                return _compact_source(source, archive, tmp, level, dictionary, dry_run,
                                       frame_target, started)
            except Damaged as exc:
                return salvage_segment(source, archive, tmp, level, dictionary, frame_target,
                                       started, str(exc))
    return _compact_source(source, archive, tmp, level, dictionary, dry_run, frame_target,
                           started)


def _refuse_links(*paths: Path) -> None:
    """CompactError if a file or the stream folders are symbolic links: compaction writes and
    deletes, so it never goes through one (the link is left for a human)."""
    try:
        refuse_symlinked_dirs(paths[0])
    except SymlinkRefused as exc:
        raise CompactError(f"{paths[0]}: {exc.strerror}; refused") from None
    for p in paths:
        if os.path.islink(p):
            raise CompactError(f"{p}: is a symbolic link; refused (never followed)")


def _compact_source(
    source: Path, archive: Path, tmp: Path, level: int, dictionary: bytes | None,
    dry_run: bool, frame_target: int, started: float,
) -> CompactResult:
    try:
        fd = os.open(source, os.O_RDONLY | SEGMENT_OPEN_FLAGS)
    except FileNotFoundError:
        if archive.exists():  # an overlapping run finished it a moment ago
            raise NotEligible(f"{source}: already compacted to {archive.name}") from None
        raise
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_SIZE:
            raise Damaged(f"{source}: {size} bytes is too short for a segment header")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                return _compact_mapped(
                    source, archive, tmp, buf, level, dictionary, dry_run, frame_target, started
                )
            finally:
                buf.release()
    finally:
        os.close(fd)


def _compact_mapped(
    source: Path, archive: Path, tmp: Path, buf: memoryview, level: int,
    dictionary: bytes | None, dry_run: bool, frame_target: int, started: float,
) -> CompactResult:
    end, batches, records = _source_batches(buf, source)
    if archive.exists():
        # a previous run renamed a verified archive but died before removing the source:
        # check the archive once more against the source, then finish the job
        verify_against_source(archive, buf, end, records)
        out_size = archive.stat().st_size
        if dry_run:
            return CompactResult(source, archive, "dry-run", end, out_size, records, 0, 0.0)
        _remove_source(source)
        return CompactResult(source, archive, "finished", end, out_size, records, 0,
                             time.perf_counter() - started)
    if dry_run:
        return CompactResult(source, archive, "dry-run", end, 0, records, 0, 0.0)
    frames = write_verified(buf, batches, end, records, archive, tmp, level, dictionary,
                            frame_target)
    out_size = archive.stat().st_size
    _remove_source(source)
    return CompactResult(source, archive, "compacted", end, out_size, records, frames,
                         time.perf_counter() - started)


def write_verified(
    buf: memoryview, batches: list[BatchInfo], end: int, records: int, archive: Path, tmp: Path,
    level: int, dictionary: bytes | None, frame_target: int,
) -> int:
    """Write the archive of segment image ``buf`` as ``tmp``, fsync, verify it against ``buf``,
    rename it to ``archive`` and fsync the folder; returns its frame count. On any failure only
    the temporary file is removed."""
    out_fd = _lock_tmp(tmp)
    try:
        with os.fdopen(os.dup(out_fd), "wb", buffering=1 << 20) as out:
            frames = write_archive(buf, batches, out, level, dictionary, frame_target)
            out.flush()
            os.fsync(out.fileno())
        verify_against_source(tmp, buf, end, records)
        os.replace(tmp, archive)
        _fsync_dir(archive.parent)
    except BaseException:
        # anything unfinished is only ever the temporary file: drop it, keep the source
        try:
            if tmp.exists() and not archive.exists():
                tmp.unlink()
        finally:
            os.close(out_fd)
        raise
    os.close(out_fd)
    return len(frames)


def salvage_segment(
    source: Path, archive: Path, tmp: Path, level: int, dictionary: bytes | None,
    frame_target: int, started: float, why: str,
) -> CompactResult:
    """Archive what a damaged segment still holds: every valid record (read by the
    resynchronising reader) re-encoded as a clean v2 segment image, with a GAP marker where
    each damaged range was (file, offset, bytes, estimated records lost); then move the
    original into ``<root>/.quarantine/<product>/<channel>/`` — never delete it."""
    if os.path.lexists(archive):
        raise CompactError(f"{why}; {archive.name} already exists: both left for a human")
    image, batches, records = salvage_image(source, why)
    view = memoryview(image)
    try:
        frames = write_verified(view, batches, len(image), records, archive, tmp, level,
                                dictionary, frame_target)
    finally:
        view.release()
    quarantine(source)
    return CompactResult(source, archive, "salvaged", len(image), archive.stat().st_size,
                         records, frames, time.perf_counter() - started)


def quarantine(source: Path) -> Path:
    """Move ``source`` (``<root>/<product>/<channel>/<file>``) to the same place under
    ``<root>/.quarantine`` (a rename inside the root: nothing is copied or deleted)."""
    root = source.parent.parent.parent
    target = root / QUARANTINE_DIR / source.parent.parent.name / source.parent.name / source.name
    for d in (root / QUARANTINE_DIR, target.parent.parent, target.parent):
        if os.path.islink(d):
            raise CompactError(f"{d} is a symbolic link; quarantine refused")
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while os.path.lexists(target):
        n += 1
        target = target.with_name(f"{source.name}.{n}")
    os.rename(source, target)
    _fsync_dir(target.parent)
    _fsync_dir(source.parent)
    return target
