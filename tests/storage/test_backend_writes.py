"""The pwrite and io_uring backends write exactly the bytes they are told, where told.

Real files, real ``pwritev``, a real io_uring (skipped only where the probe says the kernel
refuses it). A small ring (8 entries) makes a commit span several submissions so the batching
and the per-file chains across submission boundaries are exercised too.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.backends import make_backend
from storage.backends.base import Backend, WriteOp
from storage.backends.probe import uring_probe
from storage.backends.pwrite_backend import IOV_MAX, PwriteBackend

URING_OK, URING_REASON = uring_probe()
needs_uring = pytest.mark.skipif(not URING_OK, reason=f"io_uring unavailable: {URING_REASON}")


def _uring(entries: int = 4096) -> Backend:
    from storage.backends.uring_backend import UringBackend

    return UringBackend(entries)


FACTORIES: dict[str, Callable[[], Backend]] = {
    "pwrite": PwriteBackend,
    "uring": _uring,
    "uring-ring8": lambda: _uring(8),
}


@pytest.fixture(params=list(FACTORIES))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    name = request.param
    if name.startswith("uring") and not URING_OK:
        pytest.skip(f"io_uring unavailable: {URING_REASON}")
    b = FACTORIES[name]()
    yield b
    b.close()


class Files:
    """Real files opened read-write, closed at the end of the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fds: list[int] = []

    def open(self, name: str) -> int:
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o644)
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    f = Files(tmp_path)
    yield f
    f.close()


def test_writes_many_files_in_one_call(backend: Backend, files: Files, tmp_path: Path) -> None:
    expected: dict[str, bytearray] = {}
    ops: list[WriteOp] = []
    for i in range(40):
        name = f"s{i}.seg"
        fd = files.open(name)
        body = bytearray()
        # two contiguous ops, then one after a hole: one pwritev run and a separate op
        a = bytes([i]) * (100 + i)
        b = memoryview(b"batch-%d" % i)
        ops += [WriteOp(fd, None, 0, a), WriteOp(fd, None, len(a), b)]
        body += a + bytes(b)
        tail = b"T" * 7
        ops.append(WriteOp(fd, None, 4096, tail))
        body += bytes(4096 - len(body)) + tail
        expected[name] = body
    backend.write(ops)
    for name, body in expected.items():
        assert (tmp_path / name).read_bytes() == bytes(body)


def test_later_op_overwrites_earlier_op_on_the_same_bytes(backend: Backend, files: Files) -> None:
    # Same-file ops take effect in order (the segment's header rewrite relies on nothing
    # else, but a reordering backend would show here).
    fd = files.open("x")
    backend.write([WriteOp(fd, None, 0, b"AAAAAAAA"), WriteOp(fd, None, 2, b"bb")])
    assert os.pread(fd, 16, 0) == b"AAbbAAAA"


def test_empty_call_and_empty_op_write_nothing(backend: Backend, files: Files) -> None:
    fd = files.open("x")
    backend.write([])
    backend.write([WriteOp(fd, None, 10, b"")])
    assert os.fstat(fd).st_size == 0


def test_more_contiguous_ops_than_one_pwritev_takes(backend: Backend, files: Files) -> None:
    fd = files.open("x")
    n = IOV_MAX * 2 + 3
    ops = [WriteOp(fd, None, i * 3, b"%03d" % (i % 1000)) for i in range(n)]
    backend.write(ops)
    assert os.pread(fd, n * 3 + 1, 0) == b"".join(op.data for op in ops)


def test_writes_into_a_preallocated_file_leave_the_rest_zero(
    backend: Backend, files: Files
) -> None:
    fd = files.open("x")
    os.posix_fallocate(fd, 0, 1 << 16)
    backend.write([WriteOp(fd, None, 1000, b"x" * 5000)])
    data = os.pread(fd, 1 << 16, 0)
    assert data == bytes(1000) + b"x" * 5000 + bytes((1 << 16) - 6000)


def test_view_of_a_larger_buffer_writes_only_the_view(backend: Backend, files: Files) -> None:
    fd = files.open("x")
    buf = bytearray(b"0123456789")
    backend.write([WriteOp(fd, None, 0, memoryview(buf)[3:6])])
    assert os.pread(fd, 10, 0) == b"345"


def test_sync_and_datasync_write(backend: Backend, files: Files) -> None:
    fds = [files.open(f"f{i}") for i in range(5)]
    backend.write([WriteOp(fd, None, 0, b"durable") for fd in fds])
    backend.sync(fds)
    backend.sync([])
    if backend.name == "uring":
        from storage.backends.uring_backend import UringBackend

        assert isinstance(backend, UringBackend)
        backend.write([WriteOp(fd, None, 7, b"!") for fd in fds], datasync=True)
        assert all(os.pread(fd, 8, 0) == b"durable!" for fd in fds)


def test_closed_backend_refuses_work(files: Files) -> None:
    names = ["pwrite", "uring"] if URING_OK else ["pwrite"]
    fd = files.open("x")
    for name in names:
        b = make_backend(name)
        b.close()
        b.close()  # idempotent
        with pytest.raises(ValueError, match="closed"):
            b.write([WriteOp(fd, None, 0, b"x")])
        with pytest.raises(ValueError, match="closed"):
            b.sync([fd])
    assert os.fstat(fd).st_size == 0


def test_make_backend_builds_ours() -> None:
    p = make_backend("pwrite")
    assert isinstance(p, PwriteBackend)
    p.close()
    if URING_OK:
        u = make_backend("uring")
        assert u.name == "uring"
        u.close()


@needs_uring
def test_auto_picks_uring_where_the_probe_passes() -> None:
    b = make_backend("auto")
    try:
        assert b.name == "uring"
    finally:
        b.close()


@needs_uring
def test_uring_rejects_bad_ring_sizes() -> None:
    from storage.backends.uring_backend import UringBackend

    for entries in (0, 3, 65536):
        with pytest.raises(ValueError, match="power of two"):
            UringBackend(entries)


# -- property: any set of non-overlapping ops over several files lands exactly -------------------

_segments = st.lists(
    st.tuples(st.integers(0, 300), st.binary(min_size=0, max_size=200)), min_size=0, max_size=12
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layout=st.lists(_segments, min_size=1, max_size=6), rnd=st.randoms())
def test_any_non_overlapping_ops_round_trip(
    backend: Backend, tmp_path: Path, layout: list[list[tuple[int, bytes]]], rnd: random.Random
) -> None:
    root = tmp_path / f"case{os.urandom(4).hex()}"
    root.mkdir()
    fds: list[int] = []
    try:
        ops: list[WriteOp] = []
        expected: list[bytearray] = []
        for i, segs in enumerate(layout):
            fd = os.open(root / f"f{i}", os.O_RDWR | os.O_CREAT, 0o644)
            fds.append(fd)
            body = bytearray()
            for gap, data in segs:
                offset = len(body) + gap
                body += bytes(gap) + data
                ops.append(WriteOp(fd, None, offset, data))
            expected.append(body)
        # interleave the files' ops (each file's own order kept), as a commit over many streams
        turns = [op.fd for op in ops]
        rnd.shuffle(turns)
        per_fd: dict[int, list[WriteOp]] = {}
        for op in ops:
            per_fd.setdefault(op.fd, []).append(op)
        backend.write([per_fd[fd].pop(0) for fd in turns])
        for fd, body in zip(fds, expected, strict=True):
            size = os.fstat(fd).st_size
            got = os.pread(fd, size, 0)
            # a trailing gap with an empty op writes nothing: compare up to the last real byte
            assert got == bytes(body[:size])
            assert not any(body[size:])
    finally:
        for fd in fds:
            os.close(fd)
        shutil.rmtree(root)


# -- syscalls: per commit, not per op --------------------------------------------------------------

_COUNT_CHILD = r"""
import os, sys, tempfile
from storage.backends import make_backend
from storage.backends.base import WriteOp
b = make_backend(sys.argv[1])
d = tempfile.mkdtemp()
fds = [os.open(os.path.join(d, str(i)), os.O_RDWR | os.O_CREAT) for i in range(100)]
# 100 files x 10 contiguous ops = 1000 ops
ops = [WriteOp(fd, None, k * 64, b"r" * 64) for fd in fds for k in range(10)]
b.write(ops)
b.close()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("name", ["pwrite", "uring"])
def test_one_commit_costs_per_file_or_per_ring_syscalls(name: str, tmp_path: Path) -> None:
    if name == "uring" and not URING_OK:
        pytest.skip(f"io_uring unavailable: {URING_REASON}")
    out = tmp_path / "trace"
    subprocess.run(
        ["strace", "-f", "-o", str(out), "-e", "trace=pwrite64,pwritev,pwritev2,write,"
         "io_uring_enter", sys.executable, "-c", _COUNT_CHILD, name],
        check=True, capture_output=True, timeout=60,
    )
    lines = out.read_text().splitlines()
    # os.pwritev is pwritev2(..., flags=0) where the kernel has it
    pwritevs = sum(" pwritev(" in line or " pwritev2(" in line for line in lines)
    enters = sum(" io_uring_enter(" in line for line in lines)
    if name == "pwrite":
        assert pwritevs == 100  # one per file: contiguous ops gathered
    else:
        assert pwritevs == 0
        assert 1 <= enters <= 3  # the probe child is not involved; one submit_and_wait


@needs_uring
def test_loading_liburing_bypasses_its_racy_import_machinery() -> None:
    # liburing's __init__ rewrites a cache file in site-packages on every import (a race
    # between processes, and a failure on a read-only install); the backend must not run it.
    child = (
        "import sys\n"
        "from storage.backends.uring_backend import UringBackend\n"
        "UringBackend(8).close()\n"
        "print('dynamic_import' in sys.modules, 'liburing' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
