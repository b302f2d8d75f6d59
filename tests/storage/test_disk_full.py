"""Full disk: a clear error, committed data intact, the engine keeps running and resumes when
space is back, nothing half-written read back. On a real small tmpfs (root, private mount
namespace) and, unprivileged, under RLIMIT_FSIZE (the kernel then refuses growth with EFBIG)."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from disk_full_scenario import run_scenario

SCENARIO = Path(__file__).with_name("disk_full_scenario.py")
REPO = Path(__file__).resolve().parents[2]


def _can_mount_tmpfs() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs in a private mount namespace"
    if shutil.which("unshare") is None:
        return "unshare(1) not installed"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"unshare --mount refused: {probe.stderr.decode().strip()}"
    return None


FILL_CALLS = ["extend", "write_trusted"]  # buffered, and the sink's write-through


@pytest.mark.skipif(_can_mount_tmpfs() is not None, reason=str(_can_mount_tmpfs()))
@pytest.mark.parametrize("how", FILL_CALLS)
def test_enospc_on_a_real_small_tmpfs(tmp_path: Path, how: str) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # only the repository: the test run's sys.path may hold tests/, where tests/storage would
    # shadow the storage package as a namespace package
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = ('mount -t tmpfs -o size=4m tmpfs "$1" && exec "$2" "$3" "$1" "$4"')
    out = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(mnt), sys.executable, str(SCENARIO),
         how],
        capture_output=True, env=env, timeout=120,
    )
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    assert result["committed_before_full"] > 0
    assert result["pending_at_full"] > 0
    assert "disk full" in result["errors"][0]


@pytest.mark.parametrize("how", FILL_CALLS)
def test_growth_refused_by_the_kernel_unprivileged(tmp_path: Path, how: str) -> None:
    """RLIMIT_FSIZE in a forked child: posix_fallocate past the limit fails (EFBIG) exactly
    where ENOSPC would; raising the limit is "space is back"."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limit = 1 << 20
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

            def free() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE,
                                   (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

            result = run_scenario(tmp_path, free, errno.EFBIG, how)
            os.write(w, json.dumps(result).encode())
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, report
    result = json.loads(report)
    assert result["committed_before_full"] > 0 and result["pending_at_full"] > 0
    assert "BTC-USD/level2" in result["errors"][0]
