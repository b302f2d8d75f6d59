"""Ingest benchmark: the daemon against the naive recorder, measured the same way from outside.

Every recorder is served the same pre-encoded Advanced Trade frames (400 products by default,
``bench/firehose.py``: encoded once, every run replays them) by a venue process pinned to
CPU 0 that answers pings; the recorder runs pinned to CPU 1 (the daemon with
``ingest.workers = N``: its processes may use both CPUs). The same outside clock for all:
from the venue's first data frame (its ``time.monotonic()``, the same clock system-wide) to
the moment the benchmark sees the last byte stored — the naive recorder's files reach the
size of everything sent; the daemon's ``/metrics`` shows every message received and its
committed-records counter has stopped growing. CPU is the recorder's process tree (user +
sys from /proc) over the same window. Loss is checked by content: the sha256 of every stored
payload (the daemon's segments, the naive recorder's lines) against the venue's per-connection
ledger of what it sent.

Printed:

1) capacity (the venue sends as fast as the recorder drains), ``--rounds`` interleaved rounds
   of naive, daemon (1 process) on the pure-Python path (``CBL_PURE=1``), daemon (1 process) on
   the compiled path (the default where the optional extensions are built; skipped where they
   are not), daemon (``--workers``, compiled where built): msg/s, µs CPU per message, how busy
   the recorder was (on this shared machine a pinned recorder does not always get its whole
   core: compare µs per message, the figure neighbours disturb least), peak RSS (VmHWM) and
   sampled peaks split into anon / mapped (file, shmem = mmap'd segments on tmpfs), loss,
   pings answered, CPU per thread, and the ratios to the same round's naive run;
2) fixed rate (``--rate`` msg/s for ``--rate-seconds``, each connection pacing its share):
   % of a core, µs CPU per message and the steady RSS at the end, for naive and the daemon
   (pure and compiled).

The capacity runs set the daemon's ``storage.commit_interval_s`` to 0.1 s (``--commit-interval``)
so that the end of the run is the work and not the 5 s commit timer; the fixed-rate runs use
the defaults. ``connections.messages_per_second`` is raised to 100 (this venue has no inbound
limit), which only shortens the subscribing phase before the clock starts.

    .venv/bin/python bench/ingest.py            # ~7 min: 3 rounds of 600 000 frames + 2 × 30 s
    .venv/bin/python bench/ingest.py --quick    # ~1 min smoke run
      [--messages N] [--rounds N] [--workers N] [--rate MSG_S] [--rate-seconds S]
      [--simulator]  # also the older run against tools/simulate (each recorder on its own clock)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))



@dataclass
class Run:
    name: str
    messages: int
    seconds: float
    cpu_s: float
    rss_mb: float
    verified: str
    startup_s: float | None = None
    startup_data_s: float | None = None
    syscalls: int | None = None
    syscall_window_msgs: int | None = None
    threads: dict[str, float] | None = None
    rss_split: str = ""


_TREE: dict[int, list[int]] = {}


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the daemon's worker processes, if any); cached in
    ``_TREE`` while a run is observed, so a poll costs no walk of /proc."""
    if pid in _TREE:
        return _TREE[pid]
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU of the process and every descendant still running."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name over the process tree (the loop thread is "python")."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for p in _tree(pid):
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                name = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _status_kb(pid: int, *keys: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in keys:
            out[k] = int(v.split()[0])
    return out


def _hwm_mb(pid: int) -> float:
    """Peak RSS, summed over the process tree (each process's VmHWM)."""
    return sum(_status_kb(p, "VmHWM").get("VmHWM", 0) for p in _tree(pid)) / 1024


def _rss_split(pid: int) -> str:
    """Anonymous vs file/shmem-backed resident memory, summed over the tree: mmap'd segment
    pages count in RSS (on tmpfs as shared memory) although they are the page cache of the
    data files, which the kernel can reclaim once written back."""
    keys = ("RssAnon", "RssFile", "RssShmem")
    sums = dict.fromkeys(keys, 0)
    for p in _tree(pid):
        for k, v in _status_kb(p, *keys).items():
            sums[k] += v
    return ", ".join(f"{k[3:].lower()} {v / 1024:.0f} MB" for k, v in sums.items())


def _thread_id(pid: int, name: str) -> int | None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == name:
                return int(task.name)
        except OSError:
            continue
    return None


def start_sim(tmp: Path, dialect: str, products: int, seconds: float, tag: str,
              extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
    ledger = tmp / f"ledger-{tag}.jsonl"
    proc = subprocess.Popen(
        [str(REPO / "tools" / "simulate"), "serve", "--dialect", dialect, "--products",
         str(products), "--rate", "0", "--seed", "3", "--duration", str(seconds),
         "--ledger", str(ledger), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("simulator did not start")
    return proc, json.loads(line), ledger


def ledger_shas(path: Path) -> Counter[str]:
    c: Counter[str] = Counter()
    with path.open("rb") as f:
        for line in f:
            i = line.find(b'"sha256":"')
            if i >= 0:
                c[line[i + 10:i + 74].decode()] += 1
    return c


def stored_shas(root: Path) -> tuple[Counter[str], int, int]:
    from storage.layout import iter_segments
    from storage.reader import SegmentReader

    c: Counter[str] = Counter()
    first, last = 1 << 62, 0
    for ref in iter_segments(root):
        r = SegmentReader.open(ref.path)
        try:
            for rec in r.records():
                if rec.kind == 0:
                    c[hashlib.sha256(rec.payload).hexdigest()] += 1
                    if ref.channel != "subscriptions":  # the span of the market data
                        first = min(first, rec.ts_ns)
                        last = max(last, rec.ts_ns)
        finally:
            r.close()
    return c, first, last


def verify(sent: Counter[str], got: Counter[str]) -> str:
    missing, extra = sent - got, got - sent
    if not missing and not extra:
        return f"zero loss ({sum(sent.values())} frames = ledger)"
    return f"MISMATCH: {sum(missing.values())} missing, {sum(extra.values())} extra"


def run_daemon(tmp: Path, dialect: str, products: int, seconds: float, strace: bool) -> Run:
    sim, urls, ledger = start_sim(tmp, dialect, products, seconds + 6, "daemon")
    root = tmp / "daemon-data"
    log_path = tmp / "daemon.log"
    cmd = [sys.executable, "-m", "logger", "run", "--ws-url", urls["ws_url"], "--rest-url",
           urls["rest_url"], "--data-dir", str(root), "--dialect", dialect,
           "--metrics-port", "0", "--set", "log.format=text"]
    with log_path.open("wb") as logf:
        d = subprocess.Popen(cmd, stderr=logf, stdout=subprocess.DEVNULL, cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        port = _wait_log(log_path, r"event=metrics_listening .*port=([0-9]+)", 60)
        if port is not None:
            _metrics_port[d.pid] = int(port)
        startup = _wait_log(log_path, r"event=all_acknowledged .*\bseconds=([0-9.]+)", 60)
        startup_data = _wait_log(log_path, r"event=all_acknowledged .*\bdata_seconds=([0-9.]+)", 1)
        syscalls = window_msgs = None
        if strace and shutil.which("strace"):
            time.sleep(seconds / 2)  # steady state: streams created, extents grown
            syscalls, window_msgs = _strace_storage(d.pid, log_path, min(10.0, seconds / 3))
        sim.wait(seconds + 60)  # the venue ends the session; the daemon keeps what it got
        time.sleep(1.0)
        cpu, threads, rss, split = _measure_and_stop(d, log_path)
    got, first, last = stored_shas(root)
    n = sum(got.values())
    return Run("daemon", n, (last - first) / 1e9, cpu, rss, verify(ledger_shas(ledger), got),
               startup, startup_data, syscalls, window_msgs, threads, split)


def _measure_and_stop(d: subprocess.Popen[bytes], log_path: Path
                      ) -> tuple[float, dict[str, float], float, str]:
    """CPU (total and per thread) and memory of a finished run, read before SIGTERM so the
    shutdown's flush is not counted; a non-zero exit ends the benchmark."""
    cpu, threads, rss, split = (_cpu_s(d.pid), _thread_cpu(d.pid), _hwm_mb(d.pid),
                                _rss_split(d.pid))
    d.send_signal(signal.SIGTERM)
    code = d.wait(120)
    if code != 0:
        raise SystemExit(f"daemon exited {code}; see {log_path}")
    return cpu, threads, rss, split


def _wait_log(path: Path, pattern: str, timeout: float) -> float | None:
    end = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < end:
        m = rx.search(path.read_text(errors="replace"))
        if m:
            return float(m.group(1))
        time.sleep(0.1)
    return None


def _strace_storage(pid: int, log_path: Path, window: float) -> tuple[int | None, int | None]:
    """Count the storage thread's syscalls over a window, and the records committed in it."""
    tid = _thread_id(pid, "cbl-storage")
    if tid is None:
        return None, None
    before = _committed(pid)
    out = Path(tempfile.mktemp(suffix=".strace"))
    st = subprocess.Popen(["strace", "-c", "-o", str(out), "-p", str(tid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(window)
    st.send_signal(signal.SIGINT)
    st.wait(30)
    after = _committed(pid)
    text = out.read_text() if out.exists() else ""
    total = None
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[-1] == "total":
            total = int(parts[3]) if len(parts) >= 5 else int(parts[2])
    if total is None or before is None or after is None:
        return total, None
    return total, after - before


def _committed(pid: int) -> int | None:
    """Records committed so far, from the daemon's /metrics (port from its log)."""
    import urllib.request

    port = _metrics_port.get(pid)
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^cbl_committed_records_total ([0-9.e+]+)", body, re.M)
    return int(float(m.group(1))) if m else None


_metrics_port: dict[int, int] = {}


# ----------------------------------------------------------------------------- naive recorder
NAIVE = r'''
import asyncio, json, os, sys, time
from websockets.asyncio.client import connect
sys.path.insert(0, sys.argv[4])
from logger.protocol import get_dialect
from logger.shard import plan_connections
url, rest, out = sys.argv[1], sys.argv[2], sys.argv[3]
dialect = get_dialect(sys.argv[5])
import urllib.request
from logger.products import parse_products
products = [p.product_id for p in parse_products(urllib.request.urlopen(rest).read(), dialect.name)]
plan = plan_connections(products, dialect.channels, dialect, 30)
import resource
files = {}
count = 0
first = last = cpu_first = 0.0
async def one(shard):
    global count, first, last, cpu_first
    async with connect(url, max_size=64 << 20, compression=None) as ws:
        for f in dialect.subscribe_frames(shard):
            await ws.send(f.decode())
        try:
            async for msg in ws:
                obj = json.loads(msg)
                key = (obj.get("product_id") or (obj.get("events") or [{}])[0].get("product_id")
                       or "_shared", obj.get("channel") or obj.get("type") or "_")
                f = files.get(key)
                if f is None:
                    f = files[key] = open(os.path.join(out, "%s.%s.jsonl" % key), "ab",
                                          buffering=0)
                f.write(msg.encode() + b"\n")
                count += 1
                if obj.get("channel") != "subscriptions":
                    last = time.monotonic()
                    if not first:
                        first = last
                        ru0 = resource.getrusage(resource.RUSAGE_SELF)
                        cpu_first = ru0.ru_utime + ru0.ru_stime
        except Exception:
            pass
async def main():
    t0 = time.monotonic()
    await asyncio.gather(*(one(s) for s in plan), return_exceptions=True)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"messages": count, "seconds": time.monotonic() - t0,
                      "active_s": last - first, "cpu_s": ru.ru_utime + ru.ru_stime,
                      "cpu_streaming_s": ru.ru_utime + ru.ru_stime - cpu_first,
                      "rss_mb": ru.ru_maxrss / 1024}))
asyncio.run(main())
'''


def run_naive(tmp: Path, dialect: str, products: int, seconds: float) -> Run:
    # the naive recorder sends its subscribe frames at once: the venue's inbound message limit
    # (8/s per IP) would refuse most of them, so it is off for this run only
    sim, urls, ledger = start_sim(tmp, dialect, products, seconds + 3, "naive",
                                  ("--messages-per-second", "0"))
    out = tmp / "naive-data"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", NAIVE, urls["ws_url"], urls["rest_url"],
                          str(out), str(REPO), dialect], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=REPO)
    sim.wait(seconds + 60)
    return _naive_run(p, 60, sum(ledger_shas(ledger).values()), "cpu_s")


def _naive_run(p: subprocess.Popen[bytes], timeout: float, sent: int, cpu_key: str) -> Run:
    """The naive recorder's own report (its last stdout line), checked against what was sent."""
    stdout, _ = p.communicate(timeout=timeout)
    res = json.loads(stdout.decode().strip().splitlines()[-1])
    note = ("all frames written" if res["messages"] == sent
            else f"{res['messages']} of {sent} frames written")
    return Run("naive", res["messages"], res["active_s"], res[cpu_key], res["rss_mb"], note)


def report(title: str, naive: Run, *daemons: Run) -> None:
    print(title)
    for r in (naive, *daemons):
        rate = r.messages / r.seconds if r.seconds > 0 else 0.0
        line = (f"  {r.name:<20} {rate:>10,.0f} msg/s  {r.messages:>9,} msgs  "
                f"{r.cpu_s / max(1, r.messages) * 1e6:7.2f} µs CPU/msg  RSS {r.rss_mb:6.1f} MB  "
                f"[{r.verified}]")
        if r.startup_s is not None:
            line += f"  startup {r.startup_s:.2f} s"
            if r.startup_data_s is not None:
                line += f" (market data {r.startup_data_s:.2f} s)"
        print(line)
    nr = naive.messages / naive.seconds if naive.seconds else 0.0
    n_cpu = naive.cpu_s / max(1, naive.messages)
    for daemon in daemons:
        print(f"  {daemon.name}:")
        if daemon.threads:
            per = ", ".join(f"{k} {v / max(1, daemon.messages) * 1e6:.2f}"
                            for k, v in sorted(daemon.threads.items(), key=lambda kv: -kv[1])
                            if v > 0.05)
            print(f"    CPU µs/msg by thread: {per}")
        if daemon.rss_split:
            print(f"    resident memory at the end: {daemon.rss_split}")
        if daemon.syscalls is not None and daemon.syscall_window_msgs:
            print(f"    storage thread: {daemon.syscalls} syscalls for "
                  f"{daemon.syscall_window_msgs} records committed in the strace window = "
                  f"{daemon.syscalls / daemon.syscall_window_msgs:.4f} syscalls/message")
        elif daemon.syscalls is not None:
            print(f"    storage thread: {daemon.syscalls} syscalls in the strace window")
        dr = daemon.messages / daemon.seconds if daemon.seconds else 0.0
        if nr:
            d_cpu = daemon.cpu_s / max(1, daemon.messages)
            print(f"    ratio to naive: {dr / nr:.2f}× msg/s, {n_cpu / d_cpu:.2f}× less CPU per"
                  " message")


# ----------------------------------------------------------------------------- honest runs
VENUE_CPU, RECORDER_CPU = 0, 1


@dataclass
class Result:
    """One recorder run against the firehose venue, everything observed from outside."""
    name: str
    messages: int
    seconds: float  # venue's first data frame → last byte stored/committed (outside clock)
    cpu_s: float  # recorder tree, user + sys, over the same window
    hwm_mb: float  # VmHWM summed over the tree
    peak: dict[str, float]  # sampled peaks: anon, file, shmem, total (MB)
    end: dict[str, float]  # resident memory at the end of the run (steady)
    loss: str
    pings: int
    stream_s: float  # venue's first → last data frame sent
    threads: dict[str, float] | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def us(self) -> float:
        return self.cpu_s / max(1, self.messages) * 1e6


class Memory:
    """Resident memory of a process tree split by backing, sampled from /proc: ``anon``
    (heap, buffers), ``file`` (mapped files: the interpreter's libraries, and segment pages on
    a disk filesystem), ``shmem`` (mapped segment pages on tmpfs). Peaks per kind."""

    KEYS = ("RssAnon", "RssFile", "RssShmem")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = {"anon": 0.0, "file": 0.0, "shmem": 0.0, "total": 0.0}
        self.last = dict(self.peak)
        self.hwm = 0.0

    def sample(self) -> None:
        """Read while the recorder runs (the naive one exits when the venue closes)."""
        self.hwm = max(self.hwm, _hwm_mb(self.pid))
        sums = dict.fromkeys(self.KEYS, 0)
        for p in _tree(self.pid):
            for k, v in _status_kb(p, *self.KEYS).items():
                sums[k] += v
        now = {k[3:].lower(): v / 1024 for k, v in sums.items()}
        now["total"] = sum(now.values())
        if not now["total"]:
            return  # the recorder has exited: keep its last figures
        self.last = now
        for k, v in now.items():
            self.peak[k] = max(self.peak[k], v)


def _metrics(port: int) -> tuple[int, int]:
    """(messages received, records committed) summed over every series (and worker)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    recv = sum(float(m) for m in re.findall(r"^cbl_messages_total(?:\{[^}]*\})? (\S+)", body, re.M))
    comm = sum(float(m) for m in re.findall(r"^cbl_committed_records_total(?:\{[^}]*\})? (\S+)",
                                            body, re.M))
    return int(recv), int(comm)


def _dir_bytes(out: Path) -> int:
    total = 0
    for f in os.scandir(out):
        with contextlib.suppress(OSError):
            total += f.stat().st_size
    return total


@dataclass
class Session:
    proc: Any
    pipe: Any
    urls: dict[str, str]
    ledger: Path

    def expected(self) -> tuple[Counter[str], int]:
        """(sha256 of every payload sent, bytes a line-per-message writer stores)."""
        c: Counter[str] = Counter()
        size = 0
        for f in self.ledger.glob("conn*.sha"):
            lines = f.read_text().splitlines()
            size += int(lines[0])
            c.update(line for line in lines[1:] if line)
        return c, size

    def recv(self, timeout: float) -> Any:
        if not self.pipe.poll(timeout):
            raise SystemExit("the venue did not answer in time")
        return self.pipe.recv()


def start_venue(tmp: Path, frames: Path, tag: str, rate: float = 0.0,
                seconds: float = 0.0) -> Session:
    import multiprocessing as mp

    import firehose

    ledger = tmp / f"ledger-{tag}"
    ledger.mkdir()
    parent, child = mp.Pipe()
    proc = mp.Process(target=firehose.run, args=(child, str(frames), str(ledger), VENUE_CPU,
                                                 rate, seconds), daemon=True)
    proc.start()
    port = parent.recv()
    urls = {"ws_url": f"ws://127.0.0.1:{port}", "rest_url": f"http://127.0.0.1:{port}/products"}
    return Session(proc, parent, urls, ledger)


def _pin_recorder() -> None:
    os.sched_setaffinity(0, {RECORDER_CPU})


def _both_cpus() -> None:
    """Workers: every process of the daemon may run on either CPU (the bench itself is
    pinned to the venue's, which a child would inherit)."""
    os.sched_setaffinity(0, {VENUE_CPU, RECORDER_CPU})


def launch_naive(tmp: Path, s: Session, tag: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp / f"{tag}-out"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", NAIVE, s.urls["ws_url"], s.urls["rest_url"],
                          str(out), str(REPO), "advanced_trade"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=REPO, preexec_fn=_pin_recorder)
    return p, out


COMPILED_MODULES = ("logger.protocol._route", "storage._stage")
"""The optional extensions (setup.py); ``CBL_PURE=1`` turns every one of them off."""


def compiled_built() -> bool:
    """Whether this tree has any compiled part, ignoring ``CBL_PURE``: without one the
    "compiled" daemon would be the pure one again."""
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in COMPILED_MODULES)


def launch_daemon(tmp: Path, s: Session, tag: str, workers: int, settings: list[str],
                  pure: bool = False) -> tuple[subprocess.Popen[bytes], Path, int]:
    root = tmp / f"{tag}-data"
    log_path = tmp / f"{tag}.log"
    cmd = [sys.executable, "-m", "logger", "run", "--ws-url", s.urls["ws_url"], "--rest-url",
           s.urls["rest_url"], "--data-dir", str(root), "--metrics-port", "0",
           "--set", "log.format=text", "--set", "venue.product_refresh_s=0",
           "--set", "connections.opens_per_second=100",
           "--set", "connections.messages_per_second=100",
           "--set", f"ingest.workers={workers}"]
    for kv in settings:
        cmd += ["--set", kv]
    with log_path.open("wb") as logf:
        env = {k: v for k, v in os.environ.items() if k != "CBL_PURE"}
        env["PYTHONPATH"] = str(REPO)
        if pure:
            env["CBL_PURE"] = "1"  # every compiled part off: the pure-Python daemon
        d = subprocess.Popen(cmd, stderr=logf, stdout=subprocess.DEVNULL, cwd=REPO, env=env,
                             preexec_fn=_pin_recorder if workers == 1 else _both_cpus)
    port = _wait_log(log_path, r"event=metrics_listening .*port=([0-9]+)", 60)
    if port is None:
        d.kill()
        raise SystemExit(f"daemon did not serve /metrics; see {log_path}")
    return d, root, int(port)


def observe(pid: int, done: Any, fine: Any, stable_s: float, mem: Memory, poll: float
            ) -> tuple[float, float, dict[str, float]]:
    """Poll from outside until ``done()`` says the last byte is stored: returns the time it
    was first seen (monotonic), and the recorder's CPU and per-thread CPU then.

    ``done()`` returns (finished, value); the end is the first poll that saw the final value,
    once it has held for ``stable_s`` (0 for the naive recorder, whose end is exact: its
    files reach the expected size). Polls every ``poll`` s, every 10 ms once ``fine()``;
    memory is sampled at every poll, the last one at the end (the steady figure)."""
    last_val, since, cpu, threads = None, 0.0, 0.0, {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        finished, val = done()
        now = time.monotonic()
        if val != last_val:
            last_val, since = val, now
            cpu, threads = _cpu_s(pid), _thread_cpu(pid)
        mem.sample()
        if finished and now - since >= stable_s:
            return since, cpu, threads
        time.sleep(0.01 if fine() else poll)
    raise SystemExit("the recorder did not store everything within 10 minutes")


def naive_files_shas(out: Path) -> Counter[str]:
    c: Counter[str] = Counter()
    for f in out.iterdir():
        for line in f.read_bytes().split(b"\n")[:-1]:
            c[hashlib.sha256(line).hexdigest()] += 1
    return c


def run_recorder(tmp: Path, frames: Path, kind: str, tag: str, *, rate: float = 0.0,
                 seconds: float = 0.0, workers: int = 1, settings: list[str] | None = None,
                 pure: bool = False) -> Result:
    """One run: venue up, recorder subscribes, go, observe the end from outside, verify."""
    s = start_venue(tmp, frames, tag, rate, seconds)
    if kind == "naive":
        p, out = launch_naive(tmp, s, tag)
    else:
        p, out, port = launch_daemon(tmp, s, tag, workers, settings or [], pure)
    try:
        msg = s.recv(300)
        assert msg[0] == "ready", msg
        sent, size = s.expected()
        total = sum(sent.values())
        _TREE[p.pid] = _tree(p.pid)  # the workers exist by now: no /proc walk per poll
        mem = Memory(p.pid)
        cpu0, threads0 = _cpu_s(p.pid), _thread_cpu(p.pid)
        s.pipe.send("go")
        _, t0 = s.recv(60)
        poll = 1.0 if rate else 0.2
        # fine polling (10 ms) only once the venue has sent everything: a poll costs the
        # observer's CPU, which is the venue's (a 10 ms scan of the naive recorder's ~2 000
        # files would slow the venue), and a /metrics scrape costs the daemon's
        fine = (lambda: False) if rate else s.pipe.poll
        if kind == "naive":
            def stored() -> tuple[bool, int]:
                n = _dir_bytes(out)
                return n >= size, n

            res = observe(p.pid, stored, fine, 0.0, mem, poll)
        else:
            state = {"recv": 0}

            def done() -> tuple[bool, int]:
                state["recv"], comm = _metrics(port)
                return state["recv"] >= total, comm

            res = observe(p.pid, done, fine, 0.6 if not rate else 6.0, mem, poll)
        t_end, cpu, threads = res
        _, t_last, pings = s.recv(60)
    finally:
        _TREE.pop(p.pid, None)
        if kind == "naive":
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        else:
            p.send_signal(signal.SIGTERM)
            if p.wait(120) != 0:
                raise SystemExit(f"daemon exited {p.returncode}; see {tmp / (tag + '.log')}")
        s.proc.join(30)
    got = naive_files_shas(out) if kind == "naive" else stored_shas(out)[0]
    name = kind if kind == "naive" else (
        f"daemon ×{workers} workers" if workers > 1 else
        f"daemon {'pure' if pure else 'compiled'}")
    return Result(name, total, t_end - t0, cpu - cpu0, mem.hwm, mem.peak, mem.last,
                  verify(sent, got), pings, t_last - t0,
                  {k: v - threads0.get(k, 0.0) for k, v in threads.items()})


def _mem(d: dict[str, float]) -> str:
    return (f"anon {d['anon']:.0f} + mapped {d['file'] + d['shmem']:.0f} "
            f"(file {d['file']:.0f}, shmem {d['shmem']:.0f}) MB")


def print_capacity(rnd: int, runs: list[Result]) -> None:
    naive = runs[0]
    print(f"  round {rnd}:")
    for r in runs:
        print(f"    {r.name:<20} {r.rate:>9,.0f} msg/s  {r.us:6.2f} µs CPU/msg  "
              f"{r.messages:,} msgs in {r.seconds:.2f} s (venue sent in {r.stream_s:.2f} s; "
              f"recorder busy {r.cpu_s / r.seconds * 100:.0f} % of a core)  "
              f"[{r.loss}; {r.pings} pings answered]")
        print(f"      peak RSS {r.hwm_mb:.0f} MB (VmHWM); sampled peak {_mem(r.peak)}")
        if r.threads and r.name != "naive":
            per = ", ".join(f"{k} {v / max(1, r.messages) * 1e6:.2f}"
                            for k, v in sorted(r.threads.items(), key=lambda kv: -kv[1])
                            if v > 0.02)
            print(f"      CPU µs/msg by thread: {per}")
        if r is not naive and naive.rate:
            print(f"      ratio to naive: {r.rate / naive.rate:.2f}× msg/s, "
                  f"{naive.us / r.us:.2f}× less CPU per message (= msg per CPU-second: "
                  f"{1e6 / r.us:,.0f} vs {1e6 / naive.us:,.0f})")
    pure = next((r for r in runs if r.name == "daemon pure"), None)
    comp = next((r for r in runs if r.name == "daemon compiled"), None)
    if pure is not None and comp is not None and pure.rate and comp.us:
        print(f"    compiled vs pure: {comp.rate / pure.rate:.2f}× msg/s, "
              f"{pure.us / comp.us:.2f}× less CPU per message")


def print_fixed(rate: float, runs: list[Result]) -> None:
    for r in runs:
        print(f"    {r.name:<20} {r.cpu_s / r.stream_s * 100:5.1f} % of a core  "
              f"{r.us:6.2f} µs CPU/msg  {r.messages:,} msgs over {r.stream_s:.1f} s  "
              f"[{r.loss}; {r.pings} pings answered]")
        print(f"      RSS at the end (steady) {_mem(r.end)}; peak {r.hwm_mb:.0f} MB (VmHWM)")
        if r.threads and r.name != "naive":
            per = ", ".join(f"{k} {v / r.stream_s * 100:.1f} %"
                            for k, v in sorted(r.threads.items(), key=lambda kv: -kv[1])
                            if v > 0.02)
            print(f"      CPU by thread: {per}")


def honest(a: argparse.Namespace, tmp: Path) -> None:
    import firehose

    frames = tmp / "frames.marshal"
    t = time.monotonic()
    firehose.write_frames(frames, a.products, a.messages)
    print(f"frames: {a.messages:,} generator frames (advanced_trade, {a.products} products) "
          f"encoded once in {time.monotonic() - t:.0f} s; every run is served the same bytes")
    print(f"venue pinned to CPU {VENUE_CPU}; naive and daemon (1 process) pinned to CPU "
          f"{RECORDER_CPU}; with workers every process of the daemon may run on both CPUs "
          "(one shared with the venue); data on "
          f"{'tmpfs' if str(tmp).startswith('/dev/shm') else 'disk'}")
    cap = [f"storage.commit_interval_s={a.commit_interval}"]
    built = compiled_built()
    print("compiled hot paths: " + ("built; daemon pure = CBL_PURE=1, daemon compiled = the "
                                    "default" if built else "not built: daemon pure only"))
    if a.messages and a.rounds:
        print(f"1) capacity: {a.rounds} interleaved rounds; clock = venue's first data frame → "
              "last byte stored, seen from outside (naive: its files reach the sent size; "
              "daemon: /metrics received = sent and committed records stop growing); daemon "
              f"with storage.commit_interval_s={a.commit_interval} so the tail is the work, "
              "not the 5 s timer")
        for rnd in range(1, a.rounds + 1):
            runs = [run_recorder(tmp, frames, "naive", f"naive-{rnd}"),
                    run_recorder(tmp, frames, "daemon", f"d1p-{rnd}", settings=cap, pure=True)]
            if built:
                runs.append(run_recorder(tmp, frames, "daemon", f"d1-{rnd}", settings=cap))
            if a.workers > 1:
                runs.append(run_recorder(tmp, frames, "daemon", f"dw-{rnd}",
                                         workers=a.workers, settings=cap))
            print_capacity(rnd, runs)
            sys.stdout.flush()
    if a.rate:
        n = int(a.rate * a.rate_seconds)
        firehose.write_frames(frames, a.products, n)
        print(f"2) fixed rate: {a.rate:,.0f} msg/s for {a.rate_seconds:.0f} s ({n:,} frames, "
              f"{a.products} products), default storage settings; % of a core = recorder CPU"
              " / venue's streaming time")
        runs = [run_recorder(tmp, frames, "naive", "naive-rate", rate=a.rate,
                             seconds=a.rate_seconds),
                run_recorder(tmp, frames, "daemon", "d1p-rate", rate=a.rate,
                             seconds=a.rate_seconds, pure=True)]
        if built:
            runs.append(run_recorder(tmp, frames, "daemon", "d1-rate", rate=a.rate,
                                     seconds=a.rate_seconds))
        print_fixed(a.rate, runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=400)
    ap.add_argument("--messages", type=int, default=600_000,
                    help="frames per capacity run (0 = skip the capacity runs)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved capacity rounds")
    ap.add_argument("--workers", type=int, default=2,
                    help="ingest.workers for the third recorder of each round (1 = skip it)")
    ap.add_argument("--commit-interval", type=float, default=0.1,
                    help="the daemon's storage.commit_interval_s in the capacity runs")
    ap.add_argument("--rate", type=float, default=20_000.0,
                    help="msg/s of the fixed-rate runs (0 = skip them)")
    ap.add_argument("--rate-seconds", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 100 products, 60 000 frames, 1 round, 5 000 msg/s for 5 s")
    ap.add_argument("--simulator", action="store_true",
                    help="also the older run against tools/simulate (--seconds, --dialect)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--dialect", default="advanced_trade",
                    choices=("advanced_trade", "exchange"))
    ap.add_argument("--no-strace", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.products, a.messages, a.rounds, a.rate, a.rate_seconds, a.seconds = (
            100, 60_000, 1, 5_000.0, 5.0, 5.0)
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs: the venue on one, the recorder on the other")
    os.sched_setaffinity(0, {VENUE_CPU})  # this observer stays off the recorder's CPU
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    tmp = Path(tempfile.mkdtemp(prefix="cbl-bench-", dir=base))
    try:
        honest(a, tmp)
        if a.simulator:
            naive = run_naive(tmp, a.dialect, a.products, a.seconds)
            daemon = run_daemon(tmp, a.dialect, a.products, a.seconds, not a.no_strace)
            report(f"3) simulator: {a.products} products × {a.dialect} default channels, "
                   f"{a.seconds:.0f} s, tools/simulate --rate 0 in its own process (both "
                   "recorders on their own clock: the span of what they stored)", naive, daemon)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
