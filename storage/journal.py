"""The engine's side of an unclean shutdown: this run's live journal and loss ledger, and the
RESTART and DROPPED markers it writes for what earlier runs left (the files themselves and
their format: ``storage.unclean``; docs/FORMAT.md, "Unclean shutdown").

At open, what earlier runs left becomes markers in the streams they name (buffered through the
engine like any record); the files that listed them are removed once those markers are
committed. At a close that could not commit everything, the loss ledger lists what is lost.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from storage.records import RecordKind
from storage.stream import Stream
from storage.unclean import (
    Carried,
    LiveJournal,
    LossEntry,
    ReservedFile,
    last_committed_ts,
    live_name,
    loss_name,
    read_loss,
    read_streams,
    restart_payload,
    unclean_files,
    unsealed_segments,
)

__all__ = ["Markable", "RunJournal"]

log = logging.getLogger("storage.engine")  # the engine's rooms log as the engine

_KINDS = frozenset(k.value for k in RecordKind)


def _loss_time(e: LossEntry | Carried) -> int:
    return e.ts_ns if isinstance(e, Carried) else e.first_ts_ns


class Markable(Protocol):
    """What the journal needs of the engine to write its markers: stream handles (journaled
    as any other) and buffering one record."""

    def stream(self, product: str, channel: str) -> Stream: ...

    def append(self, stream: Stream, ts_ns: int, payload: bytes,
               kind: RecordKind = RecordKind.DATA) -> None: ...


class RunJournal:
    """One engine's live journal and loss ledger (named after its lock), and the earlier runs'
    journals and ledgers it consumes."""

    def __init__(self, root: Path, lock_name: str, mark_unclean: bool) -> None:
        self.root = root
        self._lock_name = lock_name
        self._mark_unclean = mark_unclean
        self._consumed: list[Path] = []  # earlier runs' journals/ledgers, removed once marked
        self._marking: list[Stream] = []  # streams holding those markers
        self._live: LiveJournal | None = None
        self._loss: ReservedFile | None = None
        self._loss_kept = False  # the loss ledger holds what this close could not write
        #: unsealed segments an earlier run left (found when marking): the engine seals the
        #: ones it does not continue, so a clean end of this run leaves none that would read
        #: as another crash at the next start
        self.unsealed: list[Path] = []

    def open(self, now_ns: int, engine: Markable) -> None:
        """Read what earlier runs left (when ``mark_unclean``), then start this run's own
        live journal and loss-ledger reserve; mark the streams they name."""
        restart: set[tuple[str, str]] = set()
        losses: list[LossEntry | Carried] = []
        own_loss = self.root / loss_name(self._lock_name)
        if self._mark_unclean:
            lives, loss_files = unclean_files(self.root)
            for path in lives:
                restart |= read_streams(path)
            leftovers = unsealed_segments(self.root)
            restart |= {(r.product, r.channel) for r in leftovers}
            self.unsealed = [r.path for r in leftovers]
            for path in loss_files:
                losses += read_loss(path)
            own_live = self.root / live_name(self._lock_name)
            self._consumed = [p for p in lives if p != own_live] + loss_files
            if own_loss in loss_files:  # kept under another name until its markers commit
                kept = own_loss.with_name(f"{own_loss.name}.prev-{now_ns}")
                os.replace(own_loss, kept)
                self._consumed[self._consumed.index(own_loss)] = kept
        self._live = LiveJournal(self.root / live_name(self._lock_name))
        self._loss = ReservedFile(own_loss)
        for product, channel in sorted(restart):
            s = engine.stream(product, channel)
            last = last_committed_ts(self.root, product, channel)
            engine.append(s, now_ns if last is None else last, restart_payload(last, now_ns),
                          RecordKind.RESTART)
            self._marking.append(s)
        for e in sorted(losses, key=_loss_time):
            s = engine.stream(e.product, e.channel)
            if isinstance(e, Carried):
                # a marker as it was (never DATA: only markers are carried)
                known = e.kind in _KINDS and e.kind != RecordKind.DATA
                engine.append(s, e.ts_ns, e.payload,
                              RecordKind(e.kind) if known else RecordKind.NOTE)
            else:
                engine.append(s, e.first_ts_ns, json.dumps({
                    "reason": "lost_at_shutdown", "records": e.records,
                    "first_ts_ns": e.first_ts_ns, "last_ts_ns": e.last_ts_ns, "errno": e.errno,
                }, separators=(",", ":"), sort_keys=True).encode(), RecordKind.DROPPED)
            self._marking.append(s)
        if restart or losses:
            lost = sum(e.records for e in losses if isinstance(e, LossEntry))
            log.warning("marking an unclean end of the previous run: %d stream(s) get a "
                        "RESTART marker, %d a DROPPED or carried marker (%d records lost at "
                        "its close)", len(restart), len(losses), lost)
        elif self._consumed:
            self._finish()

    def declare(self, product: str, channel: str) -> None:
        """One line per stream and run in the live journal (not per record or commit); names
        already validated. Any thread may call it (``LiveJournal`` locks once per stream)."""
        live = self._live
        if live is not None:
            live.declare(product, channel)

    def settle(self, dirty: dict[Stream, None]) -> None:
        """After a commit: once no stream holding an earlier run's marker is pending any
        more, those markers are durable and the files that listed them go."""
        if self._consumed and not any(s in dirty for s in self._marking):
            self._finish()

    def _finish(self) -> None:
        """The markers of earlier runs are committed: their journals and ledgers go."""
        for path in self._consumed:
            path.unlink(missing_ok=True)
        self._consumed = []
        self._marking = []

    def write_loss(self, dirty: Iterable[Stream], errno: int | None) -> int:
        """Record in the loss ledger, fsynced, what this close could not commit: per stream
        the DATA records (count, time range), and each marker verbatim. Returns the DATA
        records lost (markers describe losses counted already). ``errno``: the last error
        a commit met."""
        entries: list[LossEntry | Carried] = []
        lost = 0
        for s in dirty:
            if not s.lens:
                continue
            marks = dict(s.markers)
            data_ts = [t for i, t in enumerate(s.ts) if i not in marks] if marks else s.ts
            if data_ts:
                entries.append(LossEntry(s.product, s.channel, len(data_ts), min(data_ts),
                                         max(data_ts), errno))
                lost += len(data_ts)
            entries += [Carried(s.product, s.channel, k, s.ts[p], s.payloads[p])
                        for p, k in s.markers]
        assert self._loss is not None
        try:
            self._loss.append(b"".join(e.line() for e in entries))
            self._loss.sync()
        except OSError as exc:
            log.error("cannot write the loss ledger %s (%d records lost, unmarked): %s",
                      loss_name(self._lock_name), lost, exc)
        else:
            self._loss_kept = True
            self._finish()  # what earlier runs left is carried in the new ledger
        for x in entries:
            if isinstance(x, LossEntry):
                log.error("lost at close: %s/%s records=%d first_ts_ns=%d last_ts_ns=%d "
                          "errno=%s", x.product, x.channel, x.records, x.first_ts_ns,
                          x.last_ts_ns, x.errno)
        return lost

    def close(self, sealed_all: bool) -> None:
        """Every stream sealed: nothing for the next run to mark but what the ledger lists
        (the live journal goes; it stays when sealing failed)."""
        if self._live is not None:
            self._live.close(remove=sealed_all)
        if self._loss is not None:
            self._loss.close(remove=not self._loss_kept)
