"""Child process for the kill -9 test: appends a deterministic record sequence at full speed.

Run forked from the test (``run``), or as ``python crash_child.py ROOT HAVE0 HAVE1 HAVE2
[STOP]``. Record ``g`` is record
``g // 3`` of stream ``g % 3`` and has the payload :func:`payload` (g). Stream ``s`` already
holds its first ``HAVE<s>`` records (streams may differ by one commit after a kill: commit
points are per segment). The child appends the missing records in increasing ``g``, in chunks
whose sizes depend only on ``g``, committing after each chunk; before a commit it prints
``B <n>`` (records ``< n`` are being committed), after it returns ``C <n>``, so the parent knows
what was committed when it kills the child. With STOP it stops there, closes, prints ``DONE``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from storage import Engine, EngineConfig

STREAMS = [("BTC-USD", "level2"), ("ETH-USD", "market_trades"), ("_multi", "ticker")]
BASE_NS = 1_795_521_600_000_000_000  # 2026-11-24 12:00 UTC


def payload(g: int) -> bytes:
    return b"%d|" % g + bytes([g % 251]) * (g * 7919 % 120)


def chunk_size(g: int) -> int:
    return 1 + (g * 2654435761) % 600


def run(root: Path, have: list[int], stop: int | None, out: TextIO) -> None:
    """Append the missing records (forever, or up to ``stop``), reporting commits to ``out``."""
    cfg = EngineConfig(root=root, backend="mmap", segment_max_bytes=256 << 10,
                       first_extent_bytes=16 << 10, seal_stale_on_open=False)
    eng = Engine(cfg)
    handles = [eng.stream(p, c) for p, c in STREAMS]
    g = min(3 * h + s for s, h in enumerate(have))
    while stop is None or g < stop:
        n = chunk_size(g) if stop is None else min(chunk_size(g), stop - g)
        cols: list[tuple[list[int], list[bytes]]] = [([], []) for _ in STREAMS]
        for i in range(g, g + n):
            if i // 3 >= have[i % 3]:
                ts, pl = cols[i % 3]
                ts.append(BASE_NS + i)
                pl.append(payload(i))
        for h, (ts, pl) in zip(handles, cols, strict=True):
            eng.extend(h, ts, pl)
        g += n
        out.write(f"B {g}\n")
        out.flush()
        result = eng.commit(now_ns=BASE_NS)
        if result.errors:
            raise SystemExit(f"commit failed: {result.errors}")
        out.write(f"C {g}\n")
        out.flush()
    eng.close()
    out.write("DONE\n")
    out.flush()


def main() -> None:
    have = [int(a) for a in sys.argv[2:5]]
    run(Path(sys.argv[1]), have, int(sys.argv[5]) if len(sys.argv) > 5 else None, sys.stdout)


if __name__ == "__main__":
    main()
