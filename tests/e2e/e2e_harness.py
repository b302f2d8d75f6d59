"""End-to-end harness: the simulator and the daemon as real processes on 127.0.0.1.

The simulator (``tools/simulate serve``) writes a ledger: one line per frame it handed to a
socket, with the frame's sha256. The daemon (``python -m logger run``) records into a temp data
root. The checks compare the two: every frame in storage exactly once, byte for byte (sha256),
in the venue's order within each stream, and markers where faults were injected.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from storage.layout import iter_segments
from storage.reader import SegmentReader
from storage.records import RecordKind
from tools.venue.ledger import FrameEntry, Ledger

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Sim:
    proc: subprocess.Popen[bytes]
    ws_url: str
    rest_url: str
    ledger: Path

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)


def start_sim(tmp: Path, *, dialect: str, products: int, rate: float, duration: float,
              faults: str = "", extra: tuple[str, ...] = ()) -> Sim:
    ledger = tmp / "ledger.jsonl"
    cmd = [str(REPO / "tools" / "simulate"), "serve", "--dialect", dialect,
           "--products", str(products), "--rate", str(rate), "--seed", "7",
           "--duration", str(duration), "--ledger", str(ledger), *extra]
    if faults:
        cmd += ["--faults", faults]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        raise RuntimeError("simulator did not start")
    urls = json.loads(line)
    return Sim(proc, urls["ws_url"], urls["rest_url"], ledger)


@dataclass
class DaemonProc:
    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"{needle!r} not logged; log:\n" + "".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log(self) -> str:
        with self._cond:
            return "".join(self.lines)


def start_daemon(sim: Sim, root: Path, *, dialect: str, sets: tuple[str, ...] = ()) -> DaemonProc:
    cmd = [sys.executable, "-m", "logger", "run", "--ws-url", sim.ws_url,
           "--rest-url", sim.rest_url, "--data-dir", str(root), "--dialect", dialect,
           "--metrics-port", "0", "--set", "log.format=text"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=REPO,
                            env=env)
    d = DaemonProc(proc)
    threading.Thread(target=d._pump, daemon=True).start()
    return d


def stop_all(d: DaemonProc, sim: Sim) -> None:
    """Whatever is still running after a test body: the daemon killed, the simulator
    stopped with SIGTERM (it writes its ledger then), killed only if it hangs."""
    if d.proc.poll() is None:
        d.proc.kill()
    try:
        sim.stop()
    except subprocess.TimeoutExpired:
        sim.proc.kill()


@dataclass
class Stored:
    """What the daemon stored: per stream, (kind, payload) in order."""

    streams: dict[tuple[str, str], list[tuple[int, bytes]]]

    def data(self) -> list[tuple[tuple[str, str], bytes]]:
        return [(k, p) for k, recs in self.streams.items() for kind, p in recs
                if kind == RecordKind.DATA]

    def markers(self, kind: RecordKind) -> list[tuple[tuple[str, str], dict[str, object]]]:
        return [(k, json.loads(p)) for k, recs in self.streams.items() for kd, p in recs
                if kd == kind]


def read_stored(root: Path) -> Stored:
    out: dict[tuple[str, str], list[tuple[int, bytes]]] = defaultdict(list)
    for ref in iter_segments(root):
        r = SegmentReader.open(ref.path)
        try:
            out[(ref.product, ref.channel)].extend((rec.kind, bytes(rec.payload))
                                                   for rec in r.records())
        finally:
            r.close()
    return Stored(dict(out))


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def ledger_frames(path: Path) -> tuple[list[FrameEntry], list[dict[str, object]]]:
    led = Ledger.load(path)
    faults = [r for r in led.records() if "fault" in r]
    return led.frames(), faults


def check_exactly_once(frames: list[FrameEntry], stored: Stored) -> None:
    """Every frame the venue sent is stored exactly once, byte for byte."""
    sent = Counter(f.sha256 for f in frames)
    got = Counter(sha(p) for _, p in stored.data())
    missing = sent - got
    extra = got - sent
    assert not missing, f"{sum(missing.values())} sent frames not stored"
    assert not extra, f"{sum(extra.values())} stored records the venue never sent"


def check_prefix_per_connection(frames: list[FrameEntry], stored: Stored) -> dict[int, int]:
    """Per venue connection, what is stored is a prefix of what was sent (no hole, no dup).

    Used where the daemon itself ends a connection (shutdown, watchdog): frames in flight at
    that moment never reached it. Returns the stored prefix length per connection.
    """
    got = Counter(sha(p) for _, p in stored.data())
    by_conn: dict[int, list[FrameEntry]] = defaultdict(list)
    for f in frames:
        by_conn[f.conn].append(f)
    prefix: dict[int, int] = {}
    for conn, fs in sorted(by_conn.items()):
        fs.sort(key=lambda f: f.i)
        n = 0
        while n < len(fs) and got[fs[n].sha256] > 0:
            got[fs[n].sha256] -= 1
            n += 1
        rest = [f for f in fs[n:] if got[f.sha256] > 0]
        assert not rest, f"conn {conn}: {len(rest)} frames stored after a hole at i={n}"
        prefix[conn] = n
    leftover = +got
    assert not leftover, f"{sum(leftover.values())} stored records the venue never sent"
    return prefix


def check_order_per_stream(frames: list[FrameEntry], stored: Stored) -> int:
    """Within a stream, frames of one venue connection appear in the order they were sent."""
    where: dict[str, tuple[int, int] | None] = {}
    for f in frames:
        where[f.sha256] = None if f.sha256 in where else (f.conn, f.i)
    checked = 0
    for key, recs in stored.streams.items():
        last: dict[int, int] = {}
        for kind, p in recs:
            if kind != RecordKind.DATA:
                continue
            pos = where.get(sha(p))
            if pos is None:
                continue  # a byte-identical frame sent twice: position ambiguous
            conn, i = pos
            assert i > last.get(conn, -1), f"{key}: conn {conn} frame {i} out of order"
            last[conn] = i
            checked += 1
    return checked
