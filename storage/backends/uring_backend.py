"""io_uring write path: every op of a commit, across all streams and files, in one submission.

Why: at a commit the engine has one batch per busy stream (hundreds to thousands of files).
``pwritev`` costs a syscall per file; here all writes go into the submission queue and one
``io_uring_submit_and_wait`` hands them to the kernel and waits for all of them — a handful of
syscalls per commit, none per record. Larger commits than the ring holds are split into
ring-sized submissions; runs of ops that continue each other in one file become one ``writev``.

What it costs: on filesystems without non-blocking buffered writes (ext4) the kernel hands every
write to io_uring's worker threads, which takes more CPU than ``pwritev`` does; the gain is the
syscall count, not CPU (measurements in docs/STORAGE_BENCH.md).

Guarantees, the same as the pwrite reference:

- Every op is written completely or ``OSError`` (with the kernel's errno, e.g. ENOSPC, EBADF)
  is raised; no partial success is claimed. Every completion is checked: a short write is
  resubmitted from its first unwritten byte, so a real error surfaces with its errno.
- Ops on the same file take effect in the order given, as with pwrite (the Backend protocol
  does not require it — the engine orders its two writes per commit itself — but it costs
  nothing and keeps the backends interchangeable): they are chained with ``IOSQE_IO_LINK``,
  which makes the kernel start each only after the previous one completed in full. Ops on
  different files run concurrently.
- Buffers are referenced until their completion has been reaped; ``write`` never returns or
  raises while the kernel may still read them.

``write(ops, datasync=True)`` appends a linked ``fdatasync`` to each file's chain in the same
submission (power-loss durability without a second round trip); ``sync(fds)`` submits the
``fdatasync`` operations alone.
"""

from __future__ import annotations

import errno
import importlib.util
import sys
import weakref
from collections.abc import Sequence
from types import ModuleType

from storage.backends.base import WriteOp
from storage.backends.pwrite_backend import drop_prefix, write_error


def load_liburing() -> tuple[ModuleType, ModuleType, ModuleType]:
    """liburing's ``queue``, ``file`` and ``common`` extension modules, without its ``__init__``.

    Why not ``import liburing``: liburing 2024.5.3 runs ``dynamic_import.importer()`` on import,
    whose cache reader always fails (an unpacking statement split over two lines raises a
    swallowed NameError), so every import deletes and rewrites
    ``liburing/__pycache__/__init__.importer-*.pyc`` and appends to the dist-info RECORD in
    site-packages. Concurrent imports race on that file (FileNotFoundError, about 1 in 160
    imports with 8 processes starting together on this machine), and a read-only
    site-packages makes every import fail. The extension modules needed here do not depend
    on that machinery: they are loaded under a package entry created from liburing's spec
    without executing it, which is then removed again so that a later plain
    ``import liburing`` elsewhere still gets the real package.
    """
    names = ("liburing.queue", "liburing.file", "liburing.common")
    if "liburing" in sys.modules:  # already imported the ordinary way: reuse it
        queue, file, common = (importlib.import_module(n) for n in names)
        return queue, file, common
    spec = importlib.util.find_spec("liburing")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("liburing is not installed (pip install liburing==2024.5.3)")
    package = importlib.util.module_from_spec(spec)
    sys.modules["liburing"] = package
    try:
        queue, file, common = (importlib.import_module(n) for n in names)
    finally:
        if sys.modules.get("liburing") is package:
            del sys.modules["liburing"]
    return queue, file, common


_Q, _F, _C = load_liburing()

#: Kernel ABI constants (include/uapi/linux/io_uring.h); the liburing Python module declares
#: them but does not export them.
IOSQE_IO_LINK = 1 << 2
IORING_FSYNC_DATASYNC = 1 << 0

#: Largest single write the kernel performs (MAX_RW_COUNT); longer requests complete short and
#: are continued, which also keeps ``nbytes`` inside the SQE's 32-bit field.
MAX_RW_COUNT = 0x7FFFF000

#: Most buffers per writev request. liburing 2024.5.3's ``iovec`` checks the count against the
#: *name* of the sysconf variable (``_SC_IOV_MAX`` = 60 in glibc) instead of its value (1024),
#: so it refuses more than 60; longer runs become several chained requests.
URING_IOV_MAX = 60

DEFAULT_ENTRIES = 4096

_EAGAIN_RETRIES = 1000


class _Job:
    """One request: a write of ``bufs`` (contiguous ops gathered) at ``offset``, or an
    fdatasync when ``bufs`` is None.

    After a short write ``bufs``/``offset``/``size`` describe the part still to be written.
    ``iov`` keeps the iovec array handed to the kernel alive until the completion is reaped.
    """

    __slots__ = ("bufs", "done", "fd", "iov", "offset", "size")

    def __init__(
        self, fd: int, offset: int, bufs: list[bytes | memoryview] | None, size: int
    ) -> None:
        self.fd = fd
        self.offset = offset
        self.bufs = bufs
        self.size = size
        self.iov: object = None
        self.done = False


def _as_bytes_like(data: bytes | memoryview) -> bytes | memoryview:
    """``data`` as something whose ``len`` counts bytes (bytes pass through untouched)."""
    if type(data) is bytes:
        return data
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _settle(
    job: _Job, res: int, stalled: set[int], failure: OSError | None
) -> tuple[bool, OSError | None]:
    """Apply one completion's result to its job: done, continued after a short write (its
    file sits out the rest of the round), or failed (the first failure is kept; a chain the
    kernel cancelled after another job's failure is not one). Whether the job advanced, and
    the first failure so far."""
    if res < 0:
        stalled.add(job.fd)
        if res != -errno.ECANCELED and failure is None:
            what = "io_uring fdatasync" if job.bufs is None else "io_uring write"
            failure = write_error(-res, what, job.fd, job.offset)
        return False, failure
    bufs = job.bufs
    if bufs is None or res >= job.size:  # fdatasync done, or the whole write
        job.done = True
        return True, failure
    stalled.add(job.fd)
    if res > 0:
        job.bufs = list[bytes | memoryview](drop_prefix(bufs, res))  # short writes only
        job.size -= res
        job.offset += res
        return True, failure
    if failure is None:
        failure = write_error(errno.EIO, "io_uring write (0 bytes)", job.fd, job.offset)
    return False, failure


class UringBackend:
    """Writes a commit's ops through one io_uring instance owned by the engine's thread."""

    name = "uring"

    def __init__(self, entries: int = DEFAULT_ENTRIES) -> None:
        """Set up a ring with ``entries`` submission slots (a power of two, 1..32768).

        A commit with more ops than that is submitted in several ring-sized rounds.
        """
        if not 1 <= entries <= 32768 or entries & (entries - 1):
            raise ValueError(f"io_uring entries must be a power of two in 1..32768, got {entries}")
        self.entries = entries
        self._ring = _Q.io_uring()
        self._cqe = _Q.io_uring_cqe()
        _Q.io_uring_queue_init(entries, self._ring, 0)
        self._open = True
        # Releases the ring if the backend is dropped without close(); runs at most once.
        self._release = weakref.finalize(self, _Q.io_uring_queue_exit, self._ring)

    def write(self, ops: Sequence[WriteOp], datasync: bool = False) -> None:
        """Write every op completely (``datasync``: then fdatasync each file, linked).

        Runs of ops that continue each other in the same file become one ``writev`` request
        (the engine hands a batch over as several consecutive pieces).
        """
        self._check_open()
        chains: dict[int, list[_Job]] = {}
        last: _Job | None = None
        for fd, _, offset, data in ops:
            buf = data if type(data) is bytes else _as_bytes_like(data)
            size = len(buf)
            if not size:
                continue
            if (
                last is not None
                and fd == last.fd
                and offset == last.offset + last.size
                and last.bufs is not None
                and len(last.bufs) < URING_IOV_MAX
            ):
                last.bufs.append(buf)
                last.size += size
                continue
            last = _Job(fd, offset, [buf], size)
            chain = chains.get(fd)
            if chain is None:
                chains[fd] = [last]
            else:
                chain.append(last)
        if datasync:
            for fd, chain in chains.items():
                chain.append(_Job(fd, 0, None, 0))
        if chains:
            self._run(chains)

    def sync(self, fds: Sequence[int]) -> None:
        """fdatasync every file in ``fds`` in one submission."""
        self._check_open()
        chains = {fd: [_Job(fd, 0, None, 0)] for fd in fds}
        if chains:
            self._run(chains)

    def close(self) -> None:
        """Release the ring (idempotent); later writes raise ``ValueError``."""
        self._open = False
        self._release()

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError("UringBackend is closed")

    def _run(self, chains: dict[int, list[_Job]]) -> None:
        """Submit rounds until every job is done or a job failed; raise the first failure.

        A round submits each file's unfinished jobs as one linked chain. A short write breaks
        its chain (the kernel cancels the rest with ECANCELED); the file then sits out the
        remainder of the round and its unfinished jobs, starting with the short one, form the
        next round's chain — so per-file order holds across resubmissions.
        """
        pending = list(chains.values())
        while pending:
            failure = self._round(pending)
            if failure is not None:
                raise failure
            pending = [rest for chain in pending if (rest := [j for j in chain if not j.done])]

    def _round(self, pending: list[list[_Job]]) -> OSError | None:
        """Run one round over ``pending`` chains; the first hard failure, if any."""
        entries = self.entries
        stalled: set[int] = set()
        failure: OSError | None = None
        progressed = False
        batch: list[_Job] = []
        # Flatten chains into ring-sized batches; a chain may straddle two batches, which
        # keeps its order because a batch is fully reaped before the next is submitted.
        for chain in pending:
            for job in chain:
                if job.done:
                    continue
                batch.append(job)
                if len(batch) == entries:
                    failure, moved = self._submit(batch, stalled, failure)
                    progressed |= moved
                    batch = []
                    if failure is not None:
                        return failure
        if batch:
            failure, moved = self._submit(batch, stalled, failure)
            progressed |= moved
        if failure is None and not progressed:
            job = pending[0][0]
            return write_error(errno.EIO, "io_uring made no progress", job.fd, job.offset)
        return failure

    def _submit(
        self, batch: list[_Job], stalled: set[int], failure: OSError | None
    ) -> tuple[OSError | None, bool]:
        """Submit ``batch`` (skipping stalled files), reap all of it, update the jobs.

        Returns the first failure seen so far and whether any job advanced.
        """
        live = [job for job in batch if job.fd not in stalled]
        if not live:
            return failure, False
        self._prepare(live)
        submitted = self._enter(len(live))
        progressed = False
        for _ in range(submitted):
            job, res = self._reap(live)
            moved, failure = _settle(job, res, stalled, failure)
            progressed |= moved
        if submitted != len(live):
            self._abandon()
            raise OSError(errno.EIO, f"io_uring accepted {submitted} of {len(live)} requests")
        return failure, progressed

    def _prepare(self, live: list[_Job]) -> None:
        """One SQE per job, consecutive jobs of one file linked (``IOSQE_IO_LINK``), each
        tagged with its place in ``live`` (+1) for the completion."""
        ring = self._ring
        last = len(live) - 1
        for i, job in enumerate(live):
            sqe = _Q.io_uring_get_sqe(ring)
            if not sqe:  # cannot happen: batches never exceed the ring and are always drained
                self._abandon()
                raise OSError(errno.EBUSY, "io_uring submission queue unexpectedly full")
            bufs = job.bufs
            if bufs is None:
                _F.io_uring_prep_fsync(sqe, job.fd, IORING_FSYNC_DATASYNC)
            elif len(bufs) == 1:
                buf = bufs[0]
                _F.io_uring_prep_write(sqe, job.fd, buf, min(job.size, MAX_RW_COUNT), job.offset)
            else:
                job.iov = iov = _C.iovec(bufs)
                _F.io_uring_prep_writev(sqe, job.fd, iov, len(bufs), job.offset)
            if i < last and live[i + 1].fd == job.fd:
                sqe.flags = IOSQE_IO_LINK
            sqe.user_data = i + 1

    def _reap(self, live: list[_Job]) -> tuple[_Job, int]:
        """Wait for the next completion: its job (buffers released) and result."""
        ring, cqe = self._ring, self._cqe
        rc = _Q.io_uring_wait_cqe(ring, cqe)
        while rc == -errno.EINTR:
            rc = _Q.io_uring_wait_cqe(ring, cqe)
        if rc < 0:  # the ring itself is broken: nothing sensible can follow
            self._abandon()
            raise OSError(-rc, f"io_uring wait failed: {errno.errorcode.get(-rc, rc)}")
        res = cqe.res
        job = live[cqe.user_data - 1]
        _Q.io_uring_cqe_seen(ring, cqe)
        job.iov = None
        return job, res

    def _enter(self, count: int) -> int:
        """Submit the prepared SQEs and wait for ``count`` completions; number submitted."""
        for _ in range(_EAGAIN_RETRIES):
            try:
                return int(_Q.io_uring_submit_and_wait(self._ring, count))
            except BlockingIOError:  # kernel short of memory for requests: try again
                continue
            except InterruptedError:
                continue
            except OSError:
                self._abandon()
                raise
        self._abandon()
        raise OSError(errno.EAGAIN, "io_uring submission kept failing with EAGAIN")

    def _abandon(self) -> None:
        """Tear the ring down after an unrecoverable ring error (waits for in-flight I/O)."""
        self.close()
