"""``make demo`` / ``tools/demo``: the whole system on one machine in ~20 s, no internet needed.

Starts the test venue in its own process (``tools/simulate serve``, reading its one JSON line
for the URLs), runs the real daemon against it into ``./demo-data`` — never ``./data``, where
``make run`` records the real venue: simulated prices must not sit next to real ones — stops
both cleanly, then shows what was recorded (``tools/inspect ls`` when present, else a short
per-stream summary read with the storage reader).

It lives with the tools, not in ``logger``, because it is the one program that puts the venue
and the recorder together: the daemon never needs the venue, and ``logger`` never imports
``tools``. It is also the one door from ``tools`` into ``logger`` (tests/test_layout.py): the
venue itself imports nothing of the recorder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

from logger.config import load_config
from logger.daemon import Daemon, configure_logging
from storage import DataDirError, read_meta
from tools.console_cli import ArgumentParser, run_parsed

REPO = Path(__file__).resolve().parent.parent


def start_simulator(args: list[str], timeout: float = 30.0) -> tuple[subprocess.Popen[bytes],
                                                                    dict[str, str]]:
    """Start ``tools/simulate serve ARGS``; return the process and its announced URLs."""
    cmd = [str(REPO / "tools" / "simulate"), "serve", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"simulator did not announce its URLs within {timeout} s: {cmd}")
    return proc, json.loads(line)


def stop_simulator(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def summary(root: Path) -> str:
    """Records per stream, read back with the storage reader (fallback for inspect ls)."""
    from storage import SegmentReader, iter_segments

    counts: Counter[tuple[str, str]] = Counter()
    markers: Counter[tuple[str, str]] = Counter()
    for ref in iter_segments(root):
        if ref.archived:
            continue
        r = SegmentReader.open(ref.path)
        try:
            for rec in r.records():
                if rec.kind == 0:
                    counts[(ref.product, ref.channel)] += 1
                else:
                    markers[(ref.product, ref.channel)] += 1
        finally:
            r.close()
    lines = [f"{'product':<16} {'channel':<16} {'messages':>9} {'markers':>8}"]
    for key in sorted(set(counts) | set(markers)):
        lines.append(f"{key[0]:<16} {key[1]:<16} {counts[key]:>9} {markers[key]:>8}")
    lines.append(f"{len(lines) - 1} streams, {sum(counts.values())} messages, "
                 f"{sum(markers.values())} markers")
    return "\n".join(lines)


def _earlier_demo(root: Path) -> bool:
    """Whether ``root`` holds an earlier demo's data: a simulator on this machine, on another
    port (each run picks a free one). Only then may the demo record into it; a root of a
    real venue stays refused."""
    try:
        meta = read_meta(root)
    except DataDirError:
        return False
    venue = (meta or {}).get("venue")
    url = venue.get("ws_url") if isinstance(venue, dict) else None
    return isinstance(url, str) and urlsplit(url).hostname in ("127.0.0.1", "localhost")


def run_demo(*, seconds: float, data_dir: str, products: int, dialect: str, rate: float) -> int:
    configure_logging("INFO", "text")
    sim, urls = start_simulator(["--dialect", dialect, "--products", str(products),
                                 "--rate", str(rate), "--seed", "1"])
    print(f"demo: simulator at {urls['ws_url']} ({products} products, {dialect}); "
          f"recording into {data_dir} for {seconds:.0f} s", file=sys.stderr)
    cfg = load_config(None, {
        "venue.dialect": dialect, "venue.ws_url": urls["ws_url"],
        "venue.rest_url": urls["rest_url"], "storage.data_dir": data_dir,
        "metrics.port": 0, "log.format": "text", "log.status_interval_s": 5.0,
        "storage.allow_venue_change": _earlier_demo(Path(data_dir)),
    })

    async def go() -> int:
        daemon = Daemon(cfg)
        loop = asyncio.get_running_loop()
        loop.call_later(seconds, daemon.request_stop, "demo_timer")
        return (await daemon.run()).exit_code

    try:
        code = asyncio.run(go())
    finally:
        stop_simulator(sim)
    inspect = REPO / "tools" / "inspect"
    if inspect.exists() and os.access(inspect, os.X_OK):
        print(f"\n$ tools/inspect ls {data_dir}", flush=True)
        subprocess.run([str(inspect), "ls", data_dir], check=False)
    else:
        print(summary(Path(data_dir)))
    with contextlib.suppress(Exception):
        time.sleep(0)
    return code


def _parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="tools/demo",
                        description="Local test venue + daemon for a few seconds into "
                        "./demo-data (never ./data, where `make run` records the real venue), "
                        "then what was recorded.")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--data-dir", default="demo-data")
    ap.add_argument("--products", type=int, default=40)
    ap.add_argument("--dialect", choices=("advanced_trade", "exchange"),
                    default="advanced_trade")
    ap.add_argument("--rate", type=float, default=2000.0, help="venue events per second")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run_parsed("demo", _parser(), lambda a: run_demo(
        seconds=a.seconds, data_dir=a.data_dir, products=a.products, dialect=a.dialect,
        rate=a.rate), argv)


if __name__ == "__main__":
    sys.exit(main())
