"""Failure paths of the pwrite and io_uring backends, provoked for real.

- EBADF: a descriptor that is not open.
- Short writes: a write crossing ``RLIMIT_FSIZE`` is cut short by the kernel; the backend must
  continue it, which then fails with EFBIG — a backend that trusted a short result would
  claim success here. Run in a child so the limit does not touch the test process.
- ENOSPC: a 64 KiB tmpfs mounted in a private mount namespace (``unshare --mount``, root only);
  the first file fits, the second fills the disk mid-write.
- fdatasync on something that cannot be synced (a pipe) fails with EINVAL.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.backends import make_backend
from storage.backends.base import Backend, WriteOp
from storage.backends.probe import uring_probe

URING_OK, URING_REASON = uring_probe()
NAMES = ["pwrite", "uring"]


def _skip_without_uring(name: str) -> None:
    if name == "uring" and not URING_OK:
        pytest.skip(f"io_uring unavailable: {URING_REASON}")


@pytest.fixture(params=NAMES)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    _skip_without_uring(request.param)
    b = make_backend(request.param)
    yield b
    b.close()


def _closed_fd(tmp_path: Path) -> int:
    fd = os.open(tmp_path / "gone", os.O_RDWR | os.O_CREAT)
    os.close(fd)
    return fd


def test_bad_descriptor_raises_ebadf(backend: Backend, tmp_path: Path) -> None:
    fd = _closed_fd(tmp_path)
    with pytest.raises(OSError) as info:
        backend.write([WriteOp(fd, None, 0, b"x" * 10)])
    assert info.value.errno == errno.EBADF
    assert f"fd {fd}" in str(info.value)


def test_bad_descriptor_among_good_ones_still_raises(backend: Backend, tmp_path: Path) -> None:
    good = os.open(tmp_path / "ok", os.O_RDWR | os.O_CREAT)
    try:
        bad = _closed_fd(tmp_path)
        ops = [WriteOp(good, None, 0, b"a" * 100), WriteOp(bad, None, 0, b"b" * 100)]
        with pytest.raises(OSError) as info:
            backend.write(ops)
        assert info.value.errno == errno.EBADF
    finally:
        os.close(good)


def test_read_only_descriptor_raises_ebadf(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "ro"
    path.write_bytes(b"original")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            backend.write([WriteOp(fd, None, 0, b"clobber!")])
        assert info.value.errno == errno.EBADF
        assert str(path) in str(info.value)  # the message names the file, not just an fd
    finally:
        os.close(fd)
    assert path.read_bytes() == b"original"


def test_sync_of_a_pipe_raises_einval(backend: Backend) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            backend.sync([w])
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)


def test_sync_of_a_bad_descriptor_raises_ebadf(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        backend.sync([_closed_fd(tmp_path)])
    assert info.value.errno == errno.EBADF


# -- short writes at a file size limit ------------------------------------------------------------

_FSIZE_CHILD = r"""
import json, os, resource, signal, sys
from storage.backends import make_backend
from storage.backends.base import WriteOp

name, path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
b = make_backend(name)  # first: importing liburing rewrites a 14 KB cache file
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))
fd = os.open(path, os.O_RDWR | os.O_CREAT)
if mode == "straddle":
    # op 1 fits; op 2 (contiguous: one writev) crosses the limit: short, continued, EFBIG
    ops = [WriteOp(fd, None, 0, b"a" * 6000), WriteOp(fd, None, 6000, b"b" * 6000)]
elif mode == "single":
    # one op (one plain write) crosses the limit
    ops = [WriteOp(fd, None, 4000, b"a" * 2000 + b"b" * 8000)]
else:
    # op 1 crosses the limit; op 2 (same file, would fit) must not land after op 1 failed
    ops = [WriteOp(fd, None, 8000, b"c" * 4000), WriteOp(fd, None, 0, b"d" * 100)]
try:
    b.write(ops)
    out = {"raised": None}
except OSError as e:
    out = {"raised": e.errno, "message": str(e)}
out["size"] = os.fstat(fd).st_size
out["data"] = os.pread(fd, 20000, 0).decode("latin-1")
print(json.dumps(out))
"""


def _fsize_child(name: str, tmp_path: Path, mode: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, name, str(tmp_path / "f"), mode],
        capture_output=True, timeout=60, check=False, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("mode", ["straddle", "single"])
@pytest.mark.parametrize("name", NAMES)
def test_short_write_is_continued_and_the_real_error_raised(
    name: str, mode: str, tmp_path: Path
) -> None:
    _skip_without_uring(name)
    out = _fsize_child(name, tmp_path, mode)
    assert out["raised"] == errno.EFBIG
    # the retry started exactly where the kernel stopped
    assert "at offset 10000 " in str(out["message"])
    assert out["size"] == 10000
    if mode == "straddle":
        assert out["data"] == "a" * 6000 + "b" * 4000
    else:
        assert out["data"] == "\0" * 4000 + "a" * 2000 + "b" * 4000


@pytest.mark.parametrize("name", NAMES)
def test_no_op_lands_after_a_failed_op_on_the_same_file(name: str, tmp_path: Path) -> None:
    _skip_without_uring(name)
    out = _fsize_child(name, tmp_path, "order")
    assert out["raised"] == errno.EFBIG
    data = str(out["data"])
    assert data[:100] == "\0" * 100
    assert data[8000:] == "c" * 2000


# -- a full disk -----------------------------------------------------------------------------------

_ENOSPC_CHILD = r"""
import json, os, sys
from storage.backends import make_backend
from storage.backends.base import WriteOp

name, root = sys.argv[1], sys.argv[2]
b = make_backend(name)
first = os.open(os.path.join(root, "first"), os.O_RDWR | os.O_CREAT)
b.write([WriteOp(first, None, 0, b"1" * 32768)])
second = os.open(os.path.join(root, "second"), os.O_RDWR | os.O_CREAT)
out = {}
try:
    b.write([WriteOp(second, None, 0, b"2" * 65536)])
    out["raised"] = None
except OSError as e:
    out["raised"] = e.errno
    out["message"] = str(e)
out["first_intact"] = os.pread(first, 40000, 0) == b"1" * 32768
out["second_size"] = os.fstat(second).st_size
# space comes back: the backend keeps working
os.ftruncate(first, 0)
b.write([WriteOp(second, None, 0, b"3" * 4096)])
out["after"] = os.pread(second, 4096, 0) == b"3" * 4096
b.close()
print(json.dumps(out))
"""


def _can_mount_tmpfs() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs in a private mount namespace"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare/mount not installed"
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True, timeout=30, check=False,
    )
    if probe.returncode != 0:
        return f"cannot mount tmpfs in a mount namespace: {probe.stderr.decode()[-200:]}"
    return None


@pytest.mark.parametrize("name", NAMES)
def test_full_disk_raises_enospc_and_keeps_earlier_data(name: str, tmp_path: Path) -> None:
    _skip_without_uring(name)
    reason = _can_mount_tmpfs()
    if reason is not None:
        pytest.skip(reason)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = 'mount -t tmpfs -o size=64k tmpfs "$1" && exec "$2" -c "$3" "$4" "$1"'
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(mnt), sys.executable,
         _ENOSPC_CHILD, name],
        capture_output=True, timeout=60, check=False, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["raised"] == errno.ENOSPC
    assert "No space left on device" in out["message"]
    assert out["first_intact"]
    assert out["second_size"] < 65536  # the disk filled mid-write: a short write, then ENOSPC
    assert out["after"]
    assert not any(mnt.iterdir())  # the tmpfs lived only in the child's namespace
