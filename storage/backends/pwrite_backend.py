"""The reference write path: plain ``os.pwritev``, one call per run of contiguous ops.

Why it exists: it is the simplest thing that can be correct, so the mmap and io_uring backends
are measured against it (bench/storage.py) and must produce byte-identical files (tests). It is
also the fallback on any POSIX system where neither mmap slice writes nor io_uring suit.

Ops for the same file that follow each other (``offset`` = previous end) are gathered into one
``pwritev``; every call's result is checked and short writes are continued from where the
kernel stopped, so either every byte of every op is written or ``OSError`` is raised.
Ops are written in the order given (the Backend protocol does not require it — the engine
orders its two writes per commit itself — but the io_uring backend keeps the same per-file
order, so the two are interchangeable even for overlapping ops).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from storage.backends.base import WriteOp

#: The kernel's cap on iovecs per call; runs longer than this are split.
IOV_MAX: int = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class PwriteBackend:
    """Writes ops with ``os.pwritev``; synchronises with ``os.fdatasync``."""

    name = "pwrite"

    def __init__(self) -> None:
        self._closed = False

    def write(self, ops: Sequence[WriteOp]) -> None:
        """Write every op completely, in order; raise ``OSError`` (with errno) on failure."""
        self._check_open()
        count = len(ops)
        i = 0
        while i < count:
            op = ops[i]
            fd = op.fd
            start = op.offset
            end = start + len(op.data)
            bufs = [op.data]
            i += 1
            while i < count and len(bufs) < IOV_MAX:
                nxt = ops[i]
                if nxt.fd != fd or nxt.offset != end:
                    break
                bufs.append(nxt.data)
                end += len(nxt.data)
                i += 1
            if end > start:
                pwritev_all(fd, bufs, start, end - start)

    def sync(self, fds: Sequence[int]) -> None:
        """Make the written data of ``fds`` durable against power loss (``fdatasync``)."""
        self._check_open()
        for fd in fds:
            os.fdatasync(fd)

    def close(self) -> None:
        """Nothing to release; later calls raise so a use-after-close bug is loud."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("PwriteBackend is closed")


def pwritev_all(fd: int, bufs: Sequence[bytes | memoryview], offset: int, total: int) -> None:
    """``pwritev`` ``bufs`` at ``offset`` until all ``total`` bytes are written.

    A short write (the kernel may stop early, e.g. at a file size limit or when the disk fills
    up mid-call) is continued from the first unwritten byte; the retry then either succeeds or
    fails with the real errno, which is raised with the file's path in the message.
    """
    done = 0
    while True:
        try:
            n = os.pwritev(fd, bufs, offset + done)
        except OSError as exc:
            raise write_error(exc.errno or errno.EIO, "pwritev", fd, offset + done) from exc
        done += n
        if done >= total:
            return
        if n == 0:
            raise write_error(errno.EIO, "pwritev (wrote 0 bytes)", fd, offset + done)
        bufs = drop_prefix(bufs, n)


def drop_prefix(bufs: Sequence[bytes | memoryview], n: int) -> list[memoryview]:
    """``bufs`` without their first ``n`` bytes, as views (no copies). Short writes only."""
    k = 0
    while n >= len(bufs[k]):
        n -= len(bufs[k])
        k += 1
    rest = [memoryview(b) for b in bufs[k:]]
    if n:
        rest[0] = rest[0][n:]
    return rest


def write_error(err: int, what: str, fd: int, offset: int) -> OSError:
    """An ``OSError`` carrying ``err`` and saying which file and offset failed.

    The engine logs this message verbatim when a commit fails (e.g. ENOSPC), so it names the
    path (resolved through /proc where available) rather than a bare descriptor number.
    """
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = f"fd {fd}"
    return OSError(err, f"{os.strerror(err)} ({what} at offset {offset} of {target})")
