"""Each stream's day segments from the first write of a day to sealed.

A stream's first write to a UTC day continues the latest unsealed segment of that day (after
recovering it) or starts the next number; a full segment is followed by the next one. Days
before today are sealed a few per commit within a time budget (sealing trims a file, which
blocks for milliseconds on some file systems), together with the unsealed segments of past
days an earlier run left; in the last minutes of a day the next day's segments of the active
streams are created in advance; at close, everything still open is sealed. Sealing and
pre-creation run in a small pool of I/O threads (the syscalls release the GIL).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage.format import FORMAT_VERSION
from storage.layout import iter_segments
from storage.opener import SegmentOpener
from storage.results import CommitError, CommitResult
from storage.segment import Segment
from storage.stream import NS_PER_DAY, DayCache, Stream, day_of
from storage.syncer import Syncer

__all__ = ["Lifecycle", "SealBudget"]

log = logging.getLogger("storage.engine")  # the engine's rooms log as the engine


class SealBudget:
    """How much sealing and pre-creation one commit may do: at most ``per_commit`` seals in
    about ``seconds``, in waves of ``threads`` files; ``precreate_s`` before midnight the next
    day's segments are created in advance (0: never)."""

    __slots__ = ("per_commit", "precreate_s", "seconds", "threads")

    def __init__(self, per_commit: int, seconds: float, threads: int,
                 precreate_s: float) -> None:
        self.per_commit = per_commit
        self.seconds = seconds
        self.threads = threads
        self.precreate_s = precreate_s


def _seal_each(segs: list[Segment], fsync: bool) -> dict[Segment, BaseException]:
    """Seal ``segs`` one after the other (in an I/O thread); the ones that failed, and why."""
    failed: dict[Segment, BaseException] = {}
    for seg in segs:
        try:
            seg.seal(fsync=fsync)
        except Exception as e:  # reported by the engine's thread, after the others
            failed[seg] = e
    return failed


class Lifecycle:
    """Opens, creates in advance and seals the segments of an engine's streams."""

    def __init__(self, opener: SegmentOpener, streams: dict[tuple[str, str], Stream],
                 days: DayCache, syncer: Syncer, budget: SealBudget,
                 seal_stale_on_open: bool) -> None:
        self.opener = opener
        self._streams = streams
        self._days = days
        self._syncer = syncer
        self._budget = budget
        self._fsync = opener.durable
        self.to_seal: dict[tuple[Stream, dt.date], Segment] = {}
        self._today: dt.date | None = None
        self._past: dict[Stream, None] = {}
        self._pool: ThreadPoolExecutor | None = None  # sealing and pre-creation, lazily
        self._precreated: dict[Segment, None] = {}  # next-day segments not written yet
        # unsealed-looking segments of past days left by an earlier run: checked and sealed a
        # few per commit (recovering one reads it whole), so a restart after a crash is fast
        self._stale: dict[Path, None] = {}
        if seal_stale_on_open:
            today = day_of(time.time_ns())
            self._stale = {r.path: None for r in iter_segments(opener.root)
                           if not r.archived and r.day < today}

    def adopt_stale(self, paths: list[Path]) -> None:
        """Segments an earlier run left unsealed, of any day: sealed a few per commit and at
        close unless this run continues one (opening its day takes it off the list)."""
        for path in paths:
            self._stale[path] = None

    # -- opening ---------------------------------------------------------------------------

    def segment_for(self, stream: Stream, day: dt.date, now_ns: int) -> Segment:
        seg = stream.segments.get(day)
        if seg is None:
            seg = self._open_day(stream, day, now_ns)
        return seg

    def _open_day(self, stream: Stream, day: dt.date, now_ns: int) -> Segment:
        """First write to (stream, day) in this process: continue the latest unsealed segment
        after recovering it, seal older unsealed ones, or start the next number."""
        queued = self.to_seal.pop((stream, day), None)
        if queued is not None:  # a late record for a day still waiting to be sealed
            stream.segments[day] = queued
            self._note_day(stream, day, now_ns)
            return queued
        refs = self.opener.day_files(stream, day)
        for ref in refs:
            self._stale.pop(ref.path, None)  # handled here
        next_number = max((r.number for r in refs), default=-1) + 1
        cont: Segment | None = None
        for ref in refs:
            if ref.archived:
                continue
            seg = self.opener.recover(ref.path)
            if seg is None:
                continue
            if ref.number == next_number - 1 and seg.version == FORMAT_VERSION:
                cont = seg  # (a version-1 segment is sealed; new data goes to a v2 one)
            else:
                seg.seal(fsync=self._fsync)
                log.info("sealed %s left unsealed by an earlier run", ref.path)
        stream.next_number[day] = next_number
        if cont is not None:
            stream.segments[day] = cont
            self._note_day(stream, day, now_ns)
            return cont
        return self.new_segment(stream, day, now_ns)

    def new_segment(self, stream: Stream, day: dt.date, now_ns: int) -> Segment:
        """The stream's next segment of ``day`` (its first, or after a full one)."""
        number = stream.next_number.get(day, 0)
        seg = self.opener.create(stream, day, number, now_ns)
        stream.next_number[day] = number + 1
        stream.segments[day] = seg
        self._note_day(stream, day, now_ns)
        return seg

    def _note_day(self, stream: Stream, day: dt.date, now_ns: int) -> None:
        if day < self._days.date(now_ns // NS_PER_DAY):
            self._past[stream] = None

    def written(self, segs: Iterable[Segment]) -> None:
        """``segs`` got a commit: a segment created in advance is an ordinary one now."""
        if self._precreated:
            for seg in segs:
                self._precreated.pop(seg, None)

    # -- at each commit --------------------------------------------------------------------

    def after_commit(self, now_ns: int, result: CommitResult) -> None:
        """Seal (some of) the past days' segments; near midnight, create tomorrow's."""
        self._queue_past_days(self._days.date(now_ns // NS_PER_DAY))
        self._seal_some(result)
        if self._budget.precreate_s > 0:
            self._precreate(now_ns)

    def _queue_past_days(self, today: dt.date) -> None:
        """Queue segments of days before ``today`` for sealing (all streams when the day
        changed, else those known to hold one); a stream with records pending keeps them."""
        if today != self._today:
            self._today = today
            candidates = list(self._streams.values())
        else:
            candidates = list(self._past)
        for stream in candidates:
            if stream.lens:
                self._past[stream] = None  # pending records may still need that segment
                continue
            for day in [d for d in stream.segments if d < today]:
                self.to_seal[(stream, day)] = stream.segments.pop(day)
            self._past.pop(stream, None)

    def _seal_some(self, result: CommitResult) -> None:
        """Seal at most ``per_commit`` queued and stale segments within the budget's time (at
        least one): sealing trims the file, which costs up to ~4 ms on a filesystem mounted
        with ``discard``, and 2 800 streams must not stall the first commit after midnight
        for seconds."""
        budget = self._budget
        deadline = time.perf_counter() + budget.seconds
        done = 0
        # waves of parallel seals (trimming a file blocks ~1-4 ms on some disks, mostly
        # waiting, not CPU); a budget of 0 seals one segment per commit
        wave = budget.threads if budget.seconds > 0 else 1
        while self.to_seal and done < budget.per_commit:
            if done and time.perf_counter() > deadline:
                return
            keys = list(itertools.islice(self.to_seal, min(wave, budget.per_commit - done)))
            segs = [self.to_seal.pop(key) for key in keys]
            for seg in segs:
                self._syncer.forget(seg)
            self._seal_all(segs, result)
            done += len(segs)
        while self._stale and done < budget.per_commit:
            if done and time.perf_counter() > deadline:
                return
            path = next(iter(self._stale))
            del self._stale[path]
            if self.opener.seal_if_stale(path):
                result.sealed.append(path)
            done += 1

    def _io_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._budget.threads, thread_name_prefix="cbl-io")
        return self._pool

    def _seal_all(self, segs: list[Segment], result: CommitResult) -> None:
        """Seal ``segs`` (in parallel when several: the syscalls release the GIL); every one
        is attempted, sealed paths go to ``result``, the first error is raised after all.
        A segment created in advance for a day and never written is removed instead."""
        if self._precreated:
            removed: set[Segment] = set()
            for seg in segs:
                if self._precreated.pop(seg, 0) is None and seg.empty:
                    seg.close()
                    seg.path.unlink(missing_ok=True)
                    removed.add(seg)
            segs = [seg for seg in segs if seg not in removed]
        if not segs:
            return
        threads = self._budget.threads
        if len(segs) == 1 or threads == 1:
            for seg in segs:
                seg.seal(fsync=self._fsync)
                result.sealed.append(seg.path)
            return
        k = min(threads, len(segs))
        # one job per thread, not per file: 2 800 futures cost more CPU than the seals
        jobs = [self._io_pool().submit(_seal_each, segs[i::k], self._fsync) for i in range(k)]
        failed: dict[Segment, BaseException] = {}
        for job in jobs:
            failed.update(job.result())
        result.sealed += [seg.path for seg in segs if seg not in failed]
        if failed:
            raise next(iter(failed.values()))

    def _precreate(self, now_ns: int) -> None:
        """In the last ``precreate_s`` seconds of a UTC day, create the next day's segment of
        streams that have one open today, in parallel waves within the seal budget's time per
        commit, so that the first commit after midnight finds them open."""
        budget = self._budget
        left_s = (NS_PER_DAY - now_ns % NS_PER_DAY) / 1e9
        if left_s > budget.precreate_s or left_s < 1.0:
            return
        today = self._days.date(now_ns // NS_PER_DAY)
        tomorrow = self._days.date(now_ns // NS_PER_DAY + 1)
        deadline = time.perf_counter() + budget.seconds
        todo = (s for s in self._streams.values()
                if today in s.segments and tomorrow not in s.segments)
        create = self.opener.create_first
        while time.perf_counter() <= deadline:
            wave = list(itertools.islice(todo, budget.threads))
            if not wave:
                return
            jobs = [self._io_pool().submit(create, s.product, s.channel, tomorrow, now_ns)
                    for s in wave]
            for stream, job in zip(wave, jobs, strict=True):
                try:
                    seg = job.result()
                except OSError as e:  # e.g. ENOSPC: the normal path retries after midnight
                    log.warning("could not pre-create %s/%s %s: %s", stream.product,
                                stream.channel, tomorrow, e)
                    return
                if seg is None:  # the day has files already: the normal path opens them
                    continue
                stream.segments[tomorrow] = seg
                stream.next_number[tomorrow] = 1
                self._precreated[seg] = None

    # -- stale segments of earlier runs ----------------------------------------------------

    @property
    def seals_pending(self) -> int:
        """Segments waiting to be checked or sealed by the next commits: those of past days,
        and those an earlier run left unsealed."""
        return len(self.to_seal) + len(self._stale)

    def seal_stale(self, now_ns: int) -> list[Path]:
        """Seal now every unsealed segment of days before ``now_ns``'s day left by an earlier
        run; corrupt ones are logged and left as they are."""
        today = day_of(now_ns)
        sealed: list[Path] = []
        open_paths = {seg.path for s in self._streams.values() for seg in s.segments.values()}
        open_paths |= {seg.path for seg in self.to_seal.values()}
        for ref in iter_segments(self.opener.root):
            if ref.archived or ref.day >= today or ref.path in open_paths:
                continue
            self._stale.pop(ref.path, None)
            if self.opener.seal_if_stale(ref.path):
                sealed.append(ref.path)
        return sealed

    # -- close -----------------------------------------------------------------------------

    def close(self, result: CommitResult) -> bool:
        """Seal every open and queued segment and the stale ones; stop the I/O threads.
        Whether every open segment got sealed (a failure is reported in ``result``)."""
        segs: list[Segment] = []
        for stream in self._streams.values():
            segs += stream.segments.values()
            stream.segments.clear()
        segs += self.to_seal.values()
        self.to_seal.clear()
        sealed_all = True
        try:
            self._seal_all(segs, result)
        except OSError as e:
            sealed_all = False
            log.error("sealing at close failed: %s", e)
            result.errors.append(CommitError("*", "*", e.errno, f"seal failed: {e}"))
        for path in list(self._stale):
            if self.opener.seal_if_stale(path):
                result.sealed.append(path)
        self._stale.clear()
        self._syncer.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return sealed_all
