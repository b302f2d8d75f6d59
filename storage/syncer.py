"""Periodic fdatasync (``EngineConfig.fsync_interval_s``): which segments hold commits not yet
synced, and when the next sync is due. Without an interval nothing is tracked or synced (the
page cache carries the data, which survives kill -9 but not a power loss)."""

from __future__ import annotations

import logging
import time

from storage.backends import Backend
from storage.results import CommitError, CommitResult
from storage.segment import Segment

__all__ = ["Syncer"]

log = logging.getLogger("storage.engine")  # the engine's rooms log as the engine


class Syncer:
    """Tracks written segments and syncs them through the backend every ``interval`` s."""

    def __init__(self, backend: Backend, interval: float | None) -> None:
        self._backend = backend
        self.interval = interval
        self.tracking = interval is not None
        self._unsynced: dict[Segment, None] = {}
        self._last_sync = time.monotonic()

    def wrote(self, seg: Segment) -> None:
        """``seg`` has a commit not synced yet (call only when ``tracking``)."""
        self._unsynced[seg] = None

    def forget(self, seg: Segment) -> None:
        """``seg`` is sealed (sealing syncs it when tracking) or gone."""
        self._unsynced.pop(seg, None)

    def clear(self) -> None:
        self._unsynced.clear()

    def due(self, now_monotonic: float) -> bool:
        """Unsynced commits have waited the interval."""
        interval = self.interval
        return (interval is not None and bool(self._unsynced)
                and now_monotonic - self._last_sync >= interval)

    def maybe_sync(self, result: CommitResult) -> None:
        """Sync now if due; a failure is reported in ``result`` and retried at the next."""
        interval = self.interval
        if interval is None or not self._unsynced:
            return
        now = time.monotonic()
        if now - self._last_sync < interval:
            return
        segs = [s for s in self._unsynced if s.fd >= 0]
        try:
            self._backend.sync([s.fd for s in segs])
        except OSError as e:
            result.errors.append(CommitError("*", "*", e.errno, f"fsync failed: {e}"))
            log.error("fsync failed: %s", e)
            return
        self._unsynced.clear()
        self._last_sync = now
