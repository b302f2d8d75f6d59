"""Ingest benchmark: the daemon at full speed against the simulator, and a naive recorder.

Both recorders run in their own process against the simulator (``tools/simulate serve``, its
own process, ``--rate 0`` = as fast as the client drains, ledger on) with 400 products × the
dialect's default channels, sharded the same way (``logger.shard``: on Advanced Trade level2 on
ceil(400/30) = 14 connections, the other channels on one more). Printed:

- messages/s stored, verified against the simulator's ledger (every frame once, sha256);
- CPU time per message of the recorder process (user + sys from /proc);
- syscalls per message of the daemon's storage thread (``strace -c`` attached to the
  ``cbl-storage`` thread for a window of the run), when strace can attach;
- peak RSS (VmHWM) and startup time to "all acknowledged";
- the naive recorder (websockets + json.loads + one unbuffered file write per message, the
  seed's "before"), measured the same way in the same run, and the ratios.

    .venv/bin/python bench/ingest.py [--seconds 30] [--quick] [--dialect advanced_trade]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import socket
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

from ws_client import handshake_response  # noqa: E402  (bench/ is not a package)


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


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the daemon's worker processes, if any)."""
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


# ----------------------------------------------------------------------------- firehose venue
_SEQ = re.compile(rb'"sequence_num":\d+')


def _ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    import struct

    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def _read_client_frame(sock: socket.socket, buf: bytearray) -> bytes | None:
    import struct

    def need(k: int) -> bool:
        while len(buf) < k:
            chunk = sock.recv(65536)
            if not chunk:
                return False
            buf.extend(chunk)
        return True

    if not need(2):
        return None
    n, off = buf[1] & 0x7F, 2
    if n == 126:
        if not need(4):
            return None
        n, off = struct.unpack("!H", bytes(buf[2:4]))[0], 4
    elif n == 127:
        if not need(10):
            return None
        n, off = struct.unpack("!Q", bytes(buf[2:10]))[0], 10
    if not need(off + 4 + n):
        return None
    mask = bytes(buf[off:off + 4])
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[off + 4:off + 4 + n]))
    del buf[:off + 4 + n]
    return data


def _firehose(conn_pipe: Any, products: int, messages: int, ledger_dir: str,
              cpu: int | None) -> None:
    """A venue that costs (almost) nothing per frame: everything pre-generated, then sendall.

    Real Advanced Trade frames from the project's generator; each connection gets the frames of
    the products it subscribed to, renumbered with its own sequence_num, after the acks. The
    streaming starts on every connection at once, when no new connection has come for 2.5 s
    and every connection has finished subscribing (so any sharding, one process or several
    workers, is served the same way); later connections are refused.
    """
    import threading

    from logger.sim.generator import MarketModel

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    model = MarketModel(5, products, "advanced_trade")
    ids = list(model.products)
    frames = [(p, c, raw) for p, c, raw in model.day_of_messages(messages)
              if not p.startswith("_")]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conn_pipe.send(srv.getsockname()[1])
    rest = json.dumps({"products": [{"product_id": p, "status": "online"} for p in ids],
                       "num_products": len(ids)}).encode()
    served = 0
    threads: list[threading.Thread] = []
    go = threading.Event()
    ready = threading.Semaphore(0)  # one release per connection done subscribing

    def serve(sock: socket.socket, req: bytes, n: int) -> None:
        sock.sendall(handshake_response(req))
        buf = bytearray()
        subs: dict[str, list[str]] = {}
        # the daemon paces subscribe frames at 8/s over all sockets, keepalive ones last: a
        # connection has subscribed when it has been quiet for 6 s (or sent all 7 channels)
        sock.settimeout(6.0)
        parts: list[bytes] = []
        shas: list[str] = []
        seq = 0
        while len(subs) < 7:
            try:
                data = _read_client_frame(sock, buf)
            except TimeoutError:
                break
            if data is None:
                return
            msg = json.loads(data)
            subs[msg["channel"]] = msg.get("product_ids") or [msg["channel"]]
            ack = (b'{"channel":"subscriptions","timestamp":"2026-01-02T00:00:00Z",'
                   b'"sequence_num":%d,"events":[{"subscriptions":%s}]}'
                   % (seq, json.dumps(subs).encode()))
            seq += 1
            shas.append(hashlib.sha256(ack).hexdigest())
            sock.sendall(_ws_frame(ack))
        mine = {(p, c) for c, ps in subs.items() for p in ps}  # level2 apart (logger.shard)
        for p, c, raw in frames:
            if (p, c) in mine:
                raw = _SEQ.sub(b'"sequence_num":%d' % seq, raw, count=1)
                seq += 1
                parts.append(_ws_frame(raw))
                shas.append(hashlib.sha256(raw).hexdigest())
        sock.settimeout(None)
        blob = b"".join(parts)
        ready.release()
        go.wait()  # every connection streams at once: the recorder is the bottleneck
        sock.sendall(blob)
        sock.sendall(_ws_frame(b"\x03\xe8", 8))
        Path(ledger_dir, f"conn{n}.sha").write_text("\n".join(shas) + "\n")
        try:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass
        sock.close()

    srv.settimeout(2.5)
    while True:
        try:
            c, _ = srv.accept()
        except TimeoutError:
            if served:
                break
            continue
        c.settimeout(None)
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = c.recv(65536)
            if not chunk:
                break
            req += chunk
        if b"upgrade: websocket" not in req.lower():
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(rest) + rest)
            c.close()
            continue
        t = threading.Thread(target=serve, args=(c, req, served), daemon=True)
        t.start()
        threads.append(t)
        served += 1
    srv.close()  # later (re)connects are refused: the session is over
    for _ in threads:
        ready.acquire()
    go.set()
    for t in threads:
        t.join()
    conn_pipe.send("done")


def start_firehose(tmp: Path, products: int, messages: int, tag: str, cpu: int | None = None
                   ) -> tuple[Any, Any, dict[str, str], Path]:
    import multiprocessing as mp

    ledger = tmp / f"firehose-ledger-{tag}"
    ledger.mkdir()
    parent, child = mp.Pipe()
    proc = mp.Process(target=_firehose, args=(child, products, messages, str(ledger), cpu),
                      daemon=True)
    proc.start()
    port = parent.recv()
    urls = {"ws_url": f"ws://127.0.0.1:{port}", "rest_url": f"http://127.0.0.1:{port}/products"}
    return proc, parent, urls, ledger


def firehose_shas(ledger: Path) -> Counter[str]:
    c: Counter[str] = Counter()
    for f in ledger.glob("conn*.sha"):
        c.update(line for line in f.read_text().splitlines() if line)
    return c


def run_daemon_firehose(tmp: Path, products: int, messages: int, *, workers: int = 1,
                        pin: bool = False) -> Run:
    """The daemon against the firehose; ``pin``: the daemon on CPU 1, the venue on CPU 0
    (the "one core" figure); ``workers``: ``ingest.workers``."""
    tag = f"daemon-w{workers}{'-pinned' if pin else ''}"
    proc, pipe, urls, ledger = start_firehose(tmp, products, messages, tag, 0 if pin else None)
    root = tmp / f"{tag}-data"
    log_path = tmp / f"{tag}.log"
    cmd = [sys.executable, "-m", "logger", "run", "--ws-url", urls["ws_url"], "--rest-url",
           urls["rest_url"], "--data-dir", str(root), "--metrics-port", "0",
           "--set", "log.format=text", "--set", "venue.product_refresh_s=0",
           "--set", f"ingest.workers={workers}"]
    with log_path.open("wb") as logf:
        d = subprocess.Popen(cmd, stderr=logf, stdout=subprocess.DEVNULL, cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)),
                             preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if pin else None)
        startup = _wait_log(log_path, r"event=all_acknowledged .*\bseconds=([0-9.]+)", 120)
        startup_data = _wait_log(log_path, r"event=all_acknowledged .*\bdata_seconds=([0-9.]+)", 1)
        # the venue streams only once every connection has subscribed and gone quiet: what
        # the daemon spent until now (imports, discovery, subscribing) is not per message
        cpu0, threads0 = _cpu_s(d.pid), _thread_cpu(d.pid)
        pipe.recv()  # every connection's frames are written
        proc.join(30)
        time.sleep(2.0)
        cpu, threads, rss, split = _measure_and_stop(d, log_path)
        cpu -= cpu0
        threads = {k: v - threads0.get(k, 0.0) for k, v in threads.items()}
    got, first, last = stored_shas(root)
    name = "daemon" + (f" ×{workers} workers" if workers > 1 else "") + (
        " (1 core)" if pin else "")
    return Run(name, sum(got.values()), (last - first) / 1e9, cpu, rss,
               verify(firehose_shas(ledger), got), startup, startup_data, threads=threads,
               rss_split=split)


def run_naive_firehose(tmp: Path, products: int, messages: int) -> Run:
    proc, pipe, urls, ledger = start_firehose(tmp, products, messages, "naive")
    out = tmp / "naive-firehose-out"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-c", NAIVE, urls["ws_url"], urls["rest_url"],
                          str(out), str(REPO), "advanced_trade"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=REPO)
    pipe.recv()
    proc.join(30)
    return _naive_run(p, 120, sum(firehose_shas(ledger).values()), "cpu_streaming_s")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--products", type=int, default=400)
    ap.add_argument("--dialect", default="advanced_trade",
                    choices=("advanced_trade", "exchange"))
    ap.add_argument("--firehose-messages", type=int, default=1_000_000,
                    help="frames pre-generated for the capacity runs (0 = skip them)")
    ap.add_argument("--workers", type=int, default=2,
                    help="ingest.workers for the extra capacity run (1 = skip it)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 s, 100 products")
    ap.add_argument("--no-strace", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.seconds, a.products, a.firehose_messages = 5.0, 100, 40_000
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    tmp = Path(tempfile.mkdtemp(prefix="cbl-bench-", dir=base))
    try:
        naive = run_naive(tmp, a.dialect, a.products, a.seconds)
        daemon = run_daemon(tmp, a.dialect, a.products, a.seconds, not a.no_strace)
        report(f"1) simulator: {a.products} products × {a.dialect} default channels, "
               f"{a.seconds:.0f} s, tools/simulate --rate 0 (as fast as drained) in its own "
               f"process, data on {'tmpfs' if base else 'disk'}, {os.cpu_count()} CPUs shared",
               naive, daemon)
        if a.firehose_messages:
            n = a.firehose_messages
            fn = run_naive_firehose(tmp, a.products, n)
            runs = [run_daemon_firehose(tmp, a.products, n)]
            if len(os.sched_getaffinity(0)) >= 2:
                runs.append(run_daemon_firehose(tmp, a.products, n, pin=True))
            if a.workers > 1:
                runs.append(run_daemon_firehose(tmp, a.products, n, workers=a.workers))
            report(f"2) capacity: {n:,} generator frames (advanced_trade, {a.products} "
                   "products) pre-encoded by a venue process that only sendall()s, so the "
                   "recorder is the bottleneck; (1 core) = daemon pinned to CPU 1, venue to "
                   "CPU 0", fn, *runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
