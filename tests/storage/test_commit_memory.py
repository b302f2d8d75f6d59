"""The catch-up commit after a full disk stays within its memory bound: on a real small tmpfs
(root, private mount namespace) the engine keeps ~40 MiB pending while the disk is full, space
comes back, and the one commit that writes it all allocates at most about two commit steps
(``commit_chunk_bytes``) on top of the pending records, measured with tracemalloc in the child
process. Without steps it encoded every stream at once: two to three times the backlog."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, os, sys, tracemalloc
from pathlib import Path
from storage import Engine, EngineConfig

NOON = 1_795_521_600_000_000_000
mnt = Path(sys.argv[1]); chunk = int(sys.argv[2])
ballast = mnt / "ballast"
eng = Engine(EngineConfig(root=mnt / "data", backend="mmap", seal_stale_on_open=False,
                          commit_chunk_bytes=chunk, first_extent_bytes=64 << 10))
streams = [eng.stream(f"P{i}-USD", "level2") for i in range(8)]
eng.extend(streams[0], [NOON], [b"first"])
assert not eng.commit(now_ns=NOON).errors
st = os.statvfs(mnt)
with open(ballast, "wb") as f:  # the disk is full from here on
    f.write(bytes(max(0, st.f_bavail * st.f_frsize - (64 << 10))))
g = 0
for step in range(40):  # 40 MiB of 1 KiB records, one stream holding half of them
    for k, s in enumerate(streams):
        n = 512 if k == 0 else 73
        eng.extend(s, [NOON + g + i for i in range(n)],
                   [b"%09d" % (g + i) + os.urandom(1015) for i in range(n)])
        g += n
    res = eng.commit(now_ns=NOON)
    assert res.errors, "the disk was not full"
pending = eng.pending_bytes
ballast.unlink()
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
res = eng.commit(now_ns=NOON)
peak = tracemalloc.get_traced_memory()[1] - base
tracemalloc.stop()
assert not res.errors and eng.pending_records == 0, res.errors
eng.close()
print(json.dumps({"pending": pending, "peak": peak, "records": res.records}))
"""


def _tmpfs_refused() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs in a private mount namespace"
    if shutil.which("unshare") is None:
        return "unshare(1) not installed"
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        return "unshare --mount refused"
    return None


def _run(tmp_path: Path, chunk: int) -> dict[str, int]:
    mnt = tmp_path / f"mnt{chunk}"
    mnt.mkdir()
    script = 'mount -t tmpfs -o size=96m tmpfs "$1" && exec "$2" -c "$3" "$1" "$4"'
    out = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", str(mnt),
                          sys.executable, _CHILD, str(chunk)],
                         capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                         timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    result: dict[str, int] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


@pytest.mark.skipif(_tmpfs_refused() is not None, reason=str(_tmpfs_refused()))
def test_catch_up_commit_after_a_full_disk_allocates_at_most_two_steps(tmp_path: Path) -> None:
    chunk = 4 << 20
    r = _run(tmp_path, chunk)
    assert r["pending"] > 38 << 20 and r["records"] == 40 * (512 + 7 * 73)
    # the encoded copy of one step plus its joined payloads, and small change
    assert r["peak"] <= 2 * chunk + (2 << 20), r
    # the same backlog in one step (the engine's old behaviour) costs several times that
    one = _run(tmp_path, 1 << 40)
    assert one["peak"] > 2 * r["peak"] and one["peak"] > r["pending"], (one, r)
