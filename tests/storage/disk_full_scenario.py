"""The full-disk scenario, run in a child process on a real, small filesystem.

``python disk_full_scenario.py DIR`` expects DIR to be a small filesystem (the test mounts a
tmpfs with ``size=`` in a private mount namespace) and frees space by deleting a ballast file;
``run_scenario`` is also called in a forked child under RLIMIT_FSIZE (the unprivileged path),
where "space comes back" by raising the limit. Any failed check raises, so the child exits
non-zero; on success it prints one JSON line describing what happened.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from storage import Engine, EngineConfig, RecordKind, SegmentReader, iter_segments

BASE_NS = 1_795_521_600_000_000_000  # 2026-11-24 12:00 UTC


def _read(root: Path, product: str | None = None) -> list[bytes]:
    out: list[bytes] = []
    for ref in iter_segments(root, product):
        with SegmentReader.open(ref.path) as r:
            out += [x.payload for x in r.records()]
    return out


def run_scenario(
    base: Path, free_space: Callable[[], None], expect_errno: int, how: str = "extend",
) -> dict[str, object]:
    """Fill, check, keep going while full, free space, check everything arrived. With
    ENOSPC the whole filesystem is full, so a new stream's segment cannot be created either;
    with EFBIG (a per-file limit) the new stream commits while the full one waits. ``how``:
    the engine call that fills (``extend``, or the sink's ``write_trusted``, which commits on
    the way in until the segment cannot grow)."""
    root = base / "data"
    cfg = EngineConfig(root=root, backend="mmap", first_extent_bytes=64 << 10,
                       max_extent_bytes=256 << 10, seal_stale_on_open=False)
    eng = Engine(cfg)
    s = eng.stream("BTC-USD", "level2")
    written: list[bytes] = []
    committed = 0
    errors: list[str] = []
    g = 0
    for _ in range(10_000):  # fill until the disk refuses
        batch = [b"%08d" % (g + i) + os.urandom(992) for i in range(100)]
        getattr(eng, how)(s, [BASE_NS + g + i for i in range(100)], batch)
        g += 100
        written += batch
        res = eng.commit(now_ns=BASE_NS)
        if res.errors:
            errors += [e.message for e in res.errors]
            assert res.errors[0].errno == expect_errno, res.errors
            assert res.errors[0].product == "BTC-USD"
            break
        committed = len(written)
    else:
        raise AssertionError("the disk never filled up")
    pending_at_full = eng.pending_records
    assert pending_at_full == len(written) - committed > 0
    # committed data intact and readable while the engine runs; nothing half-written visible
    assert _read(root) == written[:committed]
    # still full: the engine keeps going, keeps the records, reports again
    more = [b"more-%d" % i for i in range(50)]
    eng.extend(s, [BASE_NS + g + i for i in range(50)], more)
    written += more
    other = eng.stream("ETH-USD", "level2")  # a new segment cannot even be created
    eng.append(other, BASE_NS, b"other", RecordKind.DATA)
    filler = [os.urandom(2000) for _ in range(200)]
    eng.extend(other, [BASE_NS + 1 + i for i in range(200)], filler)
    res = eng.commit(now_ns=BASE_NS)
    assert res.errors and res.errors[0].product == "BTC-USD", res
    errors += [e.message for e in res.errors]
    other_waits = expect_errno == errno.ENOSPC
    assert res.records == (0 if other_waits else 201), res
    assert eng.pending_records == len(written) - committed + (201 if other_waits else 0)
    assert _read(root, "BTC-USD") == written[:committed]
    free_space()
    res = eng.commit(now_ns=BASE_NS)
    assert not res.errors, res.errors
    assert res.records == len(written) - committed + (201 if other_waits else 0)
    assert eng.pending_records == 0
    eng.close()
    assert _read(root, "BTC-USD") == written
    assert _read(root, "ETH-USD") == [b"other", *filler]
    return {"committed_before_full": committed, "pending_at_full": pending_at_full,
            "errors": errors[:2], "total": len(written) + 201}


def main() -> None:
    base = Path(sys.argv[1])
    ballast = base / "ballast"
    with open(ballast, "wb") as f:
        f.write(os.urandom(2 << 20))
    how = sys.argv[2] if len(sys.argv) > 2 else "extend"
    result = run_scenario(base, ballast.unlink, errno.ENOSPC, how)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
