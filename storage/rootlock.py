"""Exclusive ownership of a data root (or of one writer's share of it), by ``flock``.

Why a lock file and not a pid file: ``flock`` is released by the kernel when the holder dies,
even by ``kill -9``, so a crashed writer never leaves a stale claim behind, and a second writer
on the same files is refused at once instead of corrupting them.

One engine per root holds ``<root>/.lock``. A daemon that shards its streams over worker
processes holds ``.lock`` itself, for as long as any worker runs, and gives each worker engine
its own ``.lock.<name>``: workers never share a stream (one writer per stream, no shared
files), and a second daemon or a stray engine on the same root is still refused by ``.lock``.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

LOCK_NAME = ".lock"

_LOCK_NAME = re.compile(r"\.lock(\.[A-Za-z0-9_-]{1,32})?")


class RootInUse(RuntimeError):
    """Another process holds the lock."""


def check_lock_name(name: str) -> str:
    """``.lock`` or ``.lock.<word>``: a plain file directly in the root, never a path."""
    if not _LOCK_NAME.fullmatch(name):
        raise ValueError(f"lock name {name!r}: expected '.lock' or '.lock.<[A-Za-z0-9_-]+>'")
    return name


class RootLock:
    """Hold ``<root>/<name>`` exclusively until :meth:`release` (or process death)."""

    def __init__(self, root: Path, name: str = LOCK_NAME) -> None:
        self.path = Path(root) / check_lock_name(name)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlinked lock file is refused, never created or opened elsewhere
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RootInUse(f"data root {Path(root)} is in use by another engine"
                            f" ({self.path.name} is locked)") from None
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RootLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
