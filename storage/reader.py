"""Read records back from a segment, live or sealed, from the start or from a timestamp.

The reader trusts nothing it has not checked: it reads only up to the commit point and verifies
every batch's CRC32C (bound to the batch's position in format v2) before yielding its records,
so a torn or uncommitted tail is never returned. Damage stays local: after a batch that does
not validate, reading resumes at the next valid batch, and the skipped range is recorded in
:attr:`SegmentReader.damage` (file@offset, bytes, estimated records) instead of ending the
file. A damaged header falls back to the path's names and the file's own batches. Hints are
used only when their checksum holds (v2): ``records(from_ns=...)`` starts at the header's time
index only then, and scans from the first batch otherwise. ``follow()`` polls the commit point.
"""

from __future__ import annotations

import bisect
import mmap
import os
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from types import TracebackType

from storage.damage import Damage, estimate_records
from storage.format import (
    HEADER_SIZE,
    OFF_COMMITTED_LEN,
    OFF_FLAGS,
    BatchInfo,
    CorruptSegment,
    ForeignFile,
    SegmentHeader,
    Skipped,
    batch_records,
    decode_header,
    hinted_commit_point,
    next_batch,
    read_batch,
    scan_spans,
)
from storage.layout import SEGMENT_OPEN_FLAGS, parse_segment_path
from storage.records import Record

__all__ = ["Damage", "Record", "SegmentReader", "decode_batches"]


def decode_batches(buf: bytes | memoryview, base_offset: int) -> Iterator[Record]:
    """Records of a buffer that holds whole batches only (e.g. a decompressed archive frame);
    ``base_offset`` is the file offset of ``buf[0]``. CorruptSegment on anything invalid."""
    data = buf if isinstance(buf, bytes) else bytes(buf)
    off, end = 0, len(data)
    while off < end:
        try:
            info, blob = read_batch(data, off, end, base_offset + off)
        except CorruptSegment as e:
            raise CorruptSegment(str(e).rsplit(" at offset", 1)[0], base_offset + off) from e
        yield from batch_records(blob, base_offset + off)
        off += info.length


def salvage_header(path: Path, buf: object, size: int,
                   error: Exception) -> tuple[SegmentHeader, Damage] | None:
    """A stand-in header for a segment whose own header is damaged: names from the path,
    version from the first valid batch after the header; None if no valid batch exists (then
    the file is not a segment at all, and ``error`` stands)."""
    try:
        ref = parse_segment_path(path)
    except ValueError:
        return None
    found = next_batch(buf, HEADER_SIZE, size) if size > HEADER_SIZE else None
    if found is None:
        return None
    version = 2 if bytes(found[1][:4]) == b"CBB2" else 1
    header = SegmentHeader(ref.product, ref.channel, ref.day, ref.number, 0, size, 0, 0, 0,
                           True, (), 0, version, False, False)
    reason = str(error).removeprefix(f"{path}: ").rsplit(" at offset", 1)[0]
    return header, Damage(path, 0, HEADER_SIZE, 0,
                          f"segment header damaged ({reason}); read with names from the path")


class SegmentReader:
    """A read-only view of one ``.seg`` file. Not thread-safe; cheap to open.

    ``damage`` lists every range skipped so far (each once); ``on_damage``, when set, is called
    for each new one as it is found (``tail -f`` reports while following)."""

    def __init__(self, path: Path, fd: int, mm: mmap.mmap,
                 salvaged: tuple[SegmentHeader, Damage] | None = None) -> None:
        self.path = path
        self._fd = fd
        self._mm = mm
        self.damage: list[Damage] = []
        self.on_damage: Callable[[Damage], None] | None = None
        self._seen: set[tuple[int, str]] = set()
        self._valid = [0, 0]  # bytes, records of the valid batches seen (for estimates)
        self._salvaged = salvaged is not None
        if salvaged is not None:
            self._header = salvaged[0]
            self._note(salvaged[1])
        else:
            self._header = decode_header(mm[0:HEADER_SIZE])
            h = self._header
            if h.hints_ok and h.record_count and h.committed_len > HEADER_SIZE:
                # checked hints give the average record size before any batch is read
                self._valid = [h.committed_len - HEADER_SIZE, h.record_count]

    @classmethod
    def open(cls, path: Path | str) -> SegmentReader:
        """Open ``path`` (never through a symlink); ForeignFile or CorruptSegment if it holds no
        readable segment (a damaged header over valid batches is read, see ``damage``)."""
        p = Path(path)
        fd = os.open(p, os.O_RDONLY | SEGMENT_OPEN_FLAGS)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                decode_header(os.pread(fd, HEADER_SIZE, 0))
                raise CorruptSegment(f"{p}: file shorter than its header", size)
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
            try:
                try:
                    decode_header(mm[0:HEADER_SIZE])
                    salvaged = None
                except (CorruptSegment, ForeignFile) as e:
                    salvaged = salvage_header(p, mm, size, e)
                    if salvaged is None:
                        raise
                return cls(p, fd, mm, salvaged)
            except BaseException:
                mm.close()
                raise
        except ForeignFile as e:
            os.close(fd)
            raise ForeignFile(f"{p}: {e}") from None
        except BaseException:
            os.close(fd)
            raise

    @property
    def header(self) -> SegmentHeader:
        """The header as of the last :meth:`refresh` (open, or each read pass)."""
        return self._header

    def refresh(self) -> SegmentHeader:
        """Re-read the header (a live segment's commit point and statistics move)."""
        if not self._salvaged:
            self._header = decode_header(self._mm[0:HEADER_SIZE])
        return self._header

    def _note(self, d: Damage) -> None:
        key = (d.offset, d.reason)
        if key in self._seen:
            return
        self._seen.add(key)
        self.damage.append(d)
        if self.on_damage is not None:
            self.on_damage(d)

    def _remap(self) -> int:
        size = os.fstat(self._fd).st_size
        if size > len(self._mm):
            self._mm.close()
            self._mm = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        return size

    def _committed_end(self) -> tuple[int, bool]:
        """(where reading stops, whether that is the file's end rather than a checked commit
        point). A v2 commit point is trusted when its checksum holds; a live file is re-read
        once first (a writer stores the hints an instant before the commit point). A file
        whose hints stay broken is read to its end, past which nothing was committed (a
        sealed file is trimmed to its commit point; in a live one the unused tail is zeros).
        A commit point past the end of the file is damage (a truncated file)."""
        h = self._header
        if self._salvaged:
            return self._remap(), True
        if h.version >= 2 and not h.hints_ok and not self._sealed():
            time.sleep(0.002)  # a writer stores hints, then the commit point: let it finish
            h = self.refresh()
        end = int.from_bytes(self._mm[OFF_COMMITTED_LEN : OFF_COMMITTED_LEN + 8], "little")
        if h.version >= 2 and not h.hints_ok:
            return self._unchecked_end(end)
        if end < HEADER_SIZE:
            self._note(Damage(self.path, OFF_COMMITTED_LEN, 0, 0,
                              f"commit point {end} inside the header; reading the whole file"))
            return self._remap(), True
        size = len(self._mm) if end <= len(self._mm) else self._remap()
        if end > size:
            lost = end - size
            self._note(Damage(self.path, size, lost, estimate_records(lost, *self._valid),
                              f"file ({size} bytes) shorter than its commit point {end}"))
            end = size
        return end, False

    def _unchecked_end(self, stored: int) -> tuple[int, bool]:
        """Where committed data ends when the hints do not match the stored commit point (see
        :func:`hinted_commit_point`): a live file whose hints name a later batch end is a
        writer that died between its two stores (the stored point stands: nothing is damaged);
        otherwise the hints' own point if they name one (the commit point was damaged), else
        the stored point if it ends a batch of a live file, else the end of the file."""
        size = self._remap()
        sealed = self._sealed()
        match, ends = hinted_commit_point(self._mm, size, self._header.version)
        if not sealed and stored in ends and (match is None or match > stored):
            if match is None:
                self._note(Damage(self.path, OFF_COMMITTED_LEN, 0, 0,
                                  "header hints (record count, time bounds) fail their "
                                  "checksum"))
            return stored, False
        if match is not None:
            self._note(Damage(self.path, OFF_COMMITTED_LEN, 0, 0,
                              f"commit point {stored} fails its checksum; the hints' commit "
                              f"point {match} is used"))
            return match, False
        self._note(Damage(self.path, OFF_COMMITTED_LEN, 0, 0,
                          "header hints (commit point, counts) fail their checksum; reading "
                          "the whole file"))
        return size, True

    def _sealed(self) -> bool:
        return bool(int.from_bytes(self._mm[OFF_FLAGS : OFF_FLAGS + 4], "little") & 1)

    def _batches(self, start: int, end: int, to_eof: bool = False,
                 ) -> Iterator[tuple[BatchInfo, bytes]]:
        """Valid batches from ``start`` to ``end``, resynchronising past damage (noted). When
        ``end`` is the file's end (no trusted commit point), a run of zeros up to it is unused
        preallocated space, not damage."""
        for span in scan_spans(self._mm, start, end, 0, None if self._salvaged
                               else self._header.version):
            if isinstance(span, Skipped):
                self._skipped(span, end, to_eof)
                continue
            if not self._header.hints_ok or self._salvaged:  # else: estimates from hints
                self._valid[0] += span[0].length
                self._valid[1] += span[0].count
            yield span

    def _skipped(self, span: Skipped, end: int, to_eof: bool) -> None:
        stop = span.offset + span.length
        if to_eof and stop == end and not any(self._mm[span.offset:stop]):
            return
        self._note(Damage(self.path, span.offset, span.length,
                          estimate_records(span.length, *self._valid),
                          "invalid batch (bad magic, length or CRC)"))

    def batches(self) -> Iterator[BatchInfo]:
        """Every valid committed batch, each CRC-checked; damaged ranges are skipped and noted
        in :attr:`damage`."""
        self.refresh()
        end, to_eof = self._committed_end()
        for info, _ in self._batches(HEADER_SIZE, end, to_eof):
            yield info

    def batch_blobs(self) -> Iterator[tuple[BatchInfo, bytes]]:
        """Every valid committed batch with its bytes, each CRC-checked, for readers that
        decode a whole batch at once (storage.bulk); damaged ranges are skipped and noted in
        :attr:`damage`, as by :meth:`batches`."""
        self.refresh()
        end, to_eof = self._committed_end()
        yield from self._batches(HEADER_SIZE, end, to_eof)

    def _start_for(self, from_ns: int, end: int) -> int:
        """Where to begin for records at or after ``from_ns``: the last index entry whose
        preceding records are all older. Only a checksummed index (v2) is used; otherwise,
        and if the entries are not in order or the batch there does not validate, the whole
        file is read."""
        if not self._header.index_ok or self._salvaged:
            return HEADER_SIZE
        index = [e for e in self._header.index if HEADER_SIZE <= e[0] < end]
        keys = [ts for _, ts in index]
        i = bisect.bisect_left(keys, from_ns) - 1
        if i < 0 or any(a[0] >= b[0] or a[1] > b[1] for a, b in pairwise(index)):
            return HEADER_SIZE
        off = index[i][0]
        try:
            read_batch(self._mm, off, end, None, self._header.version)
        except CorruptSegment:
            return HEADER_SIZE
        return off

    def records(self, from_ns: int | None = None, to_ns: int | None = None) -> Iterator[Record]:
        """Committed records with ``from_ns <= ts_ns < to_ns`` (either bound optional), in
        file order, past any damaged range (see :attr:`damage`)."""
        self.refresh()
        end, to_eof = self._committed_end()
        start = HEADER_SIZE if from_ns is None else self._start_for(from_ns, end)
        for info, blob in self._batches(start, end, to_eof):
            if from_ns is not None and info.last_ts_ns < from_ns:
                continue
            if to_ns is not None and info.first_ts_ns >= to_ns:
                continue
            if (from_ns is None or info.first_ts_ns >= from_ns) and (
                to_ns is None or info.last_ts_ns < to_ns
            ):
                yield from batch_records(blob, info.offset)
                continue
            lo = -(1 << 63) if from_ns is None else from_ns
            hi = 1 << 63 if to_ns is None else to_ns
            for rec in batch_records(blob, info.offset):
                if lo <= rec.ts_ns < hi:
                    yield rec

    def follow(self, poll_s: float = 0.2) -> Iterator[Record]:
        """Every committed record from the start, then new ones as the writer commits them,
        polling every ``poll_s``; ends once the segment is sealed and fully read."""
        off = HEADER_SIZE
        while True:
            sealed = self._salvaged or self._sealed()
            self.refresh()
            end, to_eof = self._committed_end()
            for info, blob in self._batches(off, end, to_eof):
                yield from batch_records(blob, info.offset)
                off = info.offset + info.length
            if sealed:
                return
            if self.damage and self.damage[-1].offset + self.damage[-1].length == end:
                off = max(off, end)
            time.sleep(poll_s)

    def close(self) -> None:
        if self._fd >= 0:
            self._mm.close()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
