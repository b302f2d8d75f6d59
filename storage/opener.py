"""Segment files on disk for the engine: list a stream's files of a day, reopen an unsealed
segment after a restart, create the next one. Holds no engine state (only the root and the
extent and index settings), so the I/O threads can create segments through it too."""

from __future__ import annotations

import datetime as dt
import errno as errno_mod
import logging
import os
from pathlib import Path

from storage.format import HEADER_SIZE, INDEX_CAPACITY, CorruptSegment, ForeignFile
from storage.layout import SegmentRef, parse_segment_path, segment_path
from storage.segment import ExtentPolicy, Segment, read_segment_header
from storage.stream import Stream

__all__ = ["SegmentOpener"]

log = logging.getLogger("storage.engine")  # the engine's rooms log as the engine


class SegmentOpener:
    """Finds, recovers and creates the segment files of a root's streams."""

    def __init__(self, root: Path, segment_max_bytes: int, first_extent: int,
                 max_extent: int, populate: bool, durable: bool) -> None:
        self.root = root
        self.cap = max(segment_max_bytes, HEADER_SIZE * 2)
        self.policy = ExtentPolicy(first_extent, max_extent, self.cap, populate=populate)
        self.index_step = max(64 << 10, self.cap // (INDEX_CAPACITY - 40))
        self.durable = durable  # fsync new files and their directory, and seals

    def day_files(self, stream: Stream, day: dt.date) -> list[SegmentRef]:
        """The stream's segments and archives of ``day``, by number, from one listing of its
        directory (the same as ``iter_segments(root, product, channel, day)``, without a
        stat per directory level: this runs for each of 2 800 streams at start and at every
        UTC day roll); temporaries of an interrupted creation are removed on the way."""
        chan_dir = self.root / stream.product / stream.channel
        prefix = day.isoformat() + "."
        try:
            names = [name for name in os.listdir(chan_dir) if name.startswith(prefix)]
        except FileNotFoundError:
            return []
        refs: list[SegmentRef] = []
        for name in names:
            path = chan_dir / name
            if name.endswith(".seg.tmp"):
                path.unlink(missing_ok=True)  # a creation interrupted by a crash: never committed
                continue
            try:
                ref = parse_segment_path(path)
            except ValueError:
                continue
            if path.is_file() or path.is_symlink():  # a symlink keeps its number taken
                refs.append(ref)
        refs.sort(key=lambda r: (r.number, r.archived))
        return refs

    def recover(self, path: Path) -> Segment | None:
        """Reopen an unsealed segment (None if sealed, foreign or corrupt: left as is)."""
        try:
            ref = parse_segment_path(path)
            header = read_segment_header(path)
            if header.sealed:
                return None
            named = (header.product, header.channel, header.day, header.number)
            if named != (ref.product, ref.channel, ref.day, ref.number):
                raise ForeignFile(f"its header names {named}, not its path")
            seg, rec = Segment.reopen(path, self.policy)
        except (CorruptSegment, ForeignFile) as e:
            log.error("cannot continue %s (%s); leaving it as it is", path, e)
            return None
        except OSError as e:
            if e.errno != errno_mod.ELOOP:
                raise
            log.error("%s is a symbolic link (or under one): skipped, never written through",
                      path)
            return None
        if rec.corrupt_at is not None:
            log.error(
                "corrupt data in %s at offset %d (committed length %d): keeping its %d valid "
                "records readable, leaving it unsealed and starting a new segment",
                path, rec.corrupt_at, rec.header.committed_len, rec.record_count,
            )
            seg.close()
            return None
        if rec.tail_ignored:
            log.warning("recovered %s: ignored an uncommitted tail after offset %d",
                        path, rec.end)
        return seg

    def create(self, stream: Stream, day: dt.date, number: int, now_ns: int) -> Segment:
        """Segment ``number`` of the stream's ``day`` (OSError, e.g. ENOSPC: nothing left)."""
        path = segment_path(self.root, stream.product, stream.channel, day, number)
        return Segment.create(path, stream.product, stream.channel, day, number, now_ns,
                              self.policy, self.index_step, durable=self.durable)

    def create_first(self, product: str, channel: str, day: dt.date,
                     now_ns: int) -> Segment | None:
        """Segment 0 of a day that has no file yet, else None (``Segment.create_fresh``);
        touches no engine state: runs in the I/O threads."""
        return Segment.create_fresh(self.root, product, channel, day, now_ns, self.policy,
                                    self.index_step, self.durable)

    def seal_if_stale(self, path: Path) -> bool:
        """Recover and seal ``path`` if it is an unsealed segment (not a corrupt one)."""
        try:
            seg = self.recover(path)
        except FileNotFoundError:
            return False  # archived and removed meanwhile (tools/compact takes sealed ones)
        except OSError as e:
            log.error("cannot check %s left by an earlier run: %s", path, e)
            return False
        if seg is None:
            return False
        seg.seal(fsync=self.durable)
        log.info("sealed %s left unsealed by an earlier run", path)
        return True
