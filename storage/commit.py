"""Making pending records durable: stage every dirty stream into a plan, write the plan in
two backend calls (batches and hints, then commit points), then apply or discard it as one.

Records of a stream whose segment cannot be grown (ENOSPC) stay pending and are retried at
the next commit; nothing half-written is ever behind a commit point. A commit of more pending
bytes than ``commit_chunk_bytes`` (the catch-up after a full disk) runs in steps, each a
committed prefix, so its memory stays near the pending bytes.
"""

from __future__ import annotations

import errno as errno_mod
import logging

from storage.backends import Backend
from storage.lifecycle import Lifecycle
from storage.pending import Pending
from storage.results import CommitError, CommitResult
from storage.segment import Segment
from storage.staging import CommitPlan, Stager
from storage.stream import Held, Stream, give_back, hold_back
from storage.syncer import Syncer

__all__ = ["Committer"]

log = logging.getLogger("storage.engine")  # the engine's rooms log as the engine


class Committer:
    """Runs the commits of one engine and remembers what keeps failing."""

    def __init__(self, pending: Pending, stager: Stager, lifecycle: Lifecycle,
                 syncer: Syncer, backend: Backend, chunk_bytes: int, fast_ok: bool) -> None:
        self._pending = pending
        self._stager = stager
        self._lifecycle = lifecycle
        self._syncer = syncer
        self._backend = backend
        self._chunk_bytes = chunk_bytes
        self.fast_ok = fast_ok
        """Whether the per-stream fast path may run (it writes columns in host order:
        little-endian hosts only)."""
        self.last_errno: int | None = None  # the last commit error's (for the loss ledger)
        self._failing: set[tuple[str, str]] = set()
        self._retired: list[Segment] = []  # full segments committed, sealed after the commit

    def commit(self, now: int, result: CommitResult) -> None:
        """Commit every dirty stream (in steps when big), then seal the full segments."""
        dirty = list(self._pending.dirty)
        if self._pending_big(dirty):
            self._commit_in_steps(dirty, now, result)
        else:
            self._commit_streams(dirty, now, result)
        for seg in self._retired:
            self._syncer.forget(seg)
            seg.seal(fsync=self._syncer.tracking)
            result.sealed.append(seg.path)
        self._retired = []

    def _pending_big(self, dirty: list[Stream]) -> bool:
        """More pending payload bytes than one step may encode (the usual commit: a sum over
        the streams of one batch, no per-record work)."""
        limit = self._chunk_bytes
        total = 0
        for stream in dirty:
            total += stream.nbytes
            if total > limit:
                return True
        return False

    def _commit_in_steps(self, dirty: list[Stream], now: int, result: CommitResult) -> None:
        """Commit ``dirty`` in steps of about ``commit_chunk_bytes`` of payload, each step
        written and its encoded copies dropped before the next: the catch-up commit after a
        full disk then needs the pending records plus one step, not three times them. A
        stream with more than a step pending commits a prefix per step (each step is a
        committed prefix, as after a crash between two commits)."""
        limit = self._chunk_bytes
        queue = list(dirty)
        failed: set[Stream] = set()
        while queue:
            group: list[Stream] = []
            held: list[tuple[Stream, Held]] = []
            size = 0
            while queue and (not group or size + queue[0].nbytes <= limit):
                stream = queue.pop(0)
                if stream.nbytes > limit - size:
                    rest = hold_back(stream, limit - size)
                    if rest is not None:
                        held.append((stream, rest))
                group.append(stream)
                size += stream.nbytes
            self._commit_streams(group, now, result)
            for stream, rest in held:
                if stream.lens:  # this step failed for the stream: all of it stays pending
                    give_back(stream, rest)
                    failed.add(stream)
                else:
                    give_back(stream, rest)
                    self._pending.dirty[stream] = None
                    if stream not in failed:
                        queue.insert(0, stream)

    def _commit_streams(self, dirty: list[Stream], now: int, result: CommitResult) -> None:
        """One step of a commit: stage every stream into a plan, write it, apply or discard
        it as one, then account for the streams it committed."""
        plan = self.plan(dirty, now, result)
        if plan.touched or plan.fast:
            self._write(plan, result)
        if plan.staged:
            self._account(plan, result)
        self._retired += plan.retiring

    def plan(self, dirty: list[Stream], now: int, result: CommitResult) -> CommitPlan:
        """Stage each stream: the fast path where it applies, else the general one; a stream
        that fails (full disk) is reported and stays pending, the others go on."""
        plan = CommitPlan()
        stage_fast = self._stager.stage_fast if self.fast_ok else None
        stage = self._stager.stage
        for stream in dirty:
            try:
                size = -1 if stage_fast is None else stage_fast(stream, plan)
                if size < 0:
                    size = stage(stream, now, plan)
            except (OSError, ValueError) as e:
                self._report(result, stream, e)
                continue
            plan.staged.append(stream)
            plan.nbytes += size
        return plan

    def _write(self, plan: CommitPlan, result: CommitResult) -> None:
        """The plan's backend calls, in order; on failure nothing of it counts as committed
        (its segments are discarded, its records stay pending)."""
        try:
            for ops in plan.writes():
                self._backend.write(ops)
        except OSError as e:
            for seg in plan.segments():
                seg.discard()
            plan.staged = []
            log.error("commit write failed, %d records stay pending: %s",
                      self._pending.records, e)
            self.last_errno = e.errno
            result.errors.append(CommitError("*", "*", e.errno, f"commit write failed: {e}"))
            return
        for seg in plan.segments():
            seg.apply()
        if self._syncer.tracking:
            for seg in plan.segments():
                self._syncer.wrote(seg)
        self._lifecycle.written(plan.segments())

    def _account(self, plan: CommitPlan, result: CommitResult) -> None:
        """The plan's streams are committed: clear their pending records and counts."""
        failing = self._failing
        if failing:
            for stream in plan.staged:
                key = (stream.product, stream.channel)
                if key in failing:
                    failing.discard(key)
                    log.info("stream %s/%s writes again", stream.product, stream.channel)
        result.records += self._pending.committed(plan.staged)
        result.bytes += plan.nbytes

    def _report(self, result: CommitResult, stream: Stream, e: OSError | ValueError) -> None:
        code = e.errno if isinstance(e, OSError) else None
        what = "disk full" if code == errno_mod.ENOSPC else "error"
        msg = (f"{what} on {stream.product}/{stream.channel}: {e}; "
               f"{stream.pending} records stay pending")
        result.errors.append(CommitError(stream.product, stream.channel, code, msg))
        self.last_errno = code
        key = (stream.product, stream.channel)
        if key not in self._failing:
            self._failing.add(key)
            log.error("%s", msg)
