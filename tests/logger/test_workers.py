"""Worker processes (``ingest.workers`` > 1): the split, the names, the supervisor's metrics,
and a product refresh through real processes against the simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from runtime_support import read_streams

from logger.daemon import Share, report_fields, wait_for_old_workers
from logger.metrics import ConnStats, Metrics
from logger.pool import StartupReport
from logger.protocol import FeedCounters
from logger.protocol.names import MULTI, multi_stream
from logger.sink import SinkStats
from logger.supervisor import WorkersCollector, aggregate, partition
from logger.worker import decode, encode, weights_of
from storage.records import RecordKind
from storage.rootlock import RootLock

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- pure parts
def test_partition_balances_load_and_a_refresh_moves_nothing() -> None:
    products = {"BTC-USD": 1000.0, "ETH-USD": 600.0, "SOL-USD": 300.0}
    products |= {f"Z{i}-USD": 0.0 for i in range(9)}
    groups = partition(products, 2)
    assert sorted(p for g in groups for p in g) == sorted(products)  # each exactly once
    assert "BTC-USD" in groups[0] and "ETH-USD" in groups[1]  # the heaviest apart
    assert abs(len(groups[0]) - len(groups[1])) <= 3  # flat half of the load spreads the rest
    for g in groups:  # in the venue's order
        assert list(g) == [p for p in products if p in g]

    later = {p: v for p, v in products.items() if p != "ETH-USD"} | {"NEW-USD": 50.0}
    after = partition(later, 2, groups)
    for old, new in zip(groups, after, strict=True):
        assert set(old) - {"ETH-USD"} <= set(new)  # nobody moved
    holders = [i for i, g in enumerate(after) if "NEW-USD" in g]
    assert holders == [1]  # the worker that lost ETH-USD is the lighter one
    assert all("ETH-USD" not in g for g in after)


def test_partition_with_more_workers_than_products() -> None:
    groups = partition({"A-USD": 1.0, "B-USD": 0.0}, 3)
    assert [len(g) for g in groups] == [1, 1, 0]
    assert partition({}, 2) == [{}, {}]


def test_each_worker_has_its_own_names_and_share_of_the_limits() -> None:
    solo = Share()
    assert (solo.conn_id_prefix, solo.multi_name, solo.lock_name) == ("", MULTI, ".lock")
    assert solo.seals_stale and solo.rate(8.0) == 8.0
    shares = [Share(i, 3) for i in range(3)]
    assert len({s.conn_id_prefix for s in shares}) == 3
    assert [s.multi_name for s in shares] == ["_multi-w0", "_multi-w1", "_multi-w2"]
    assert [s.lock_name for s in shares] == [".lock.w0", ".lock.w1", ".lock.w2"]
    assert [s.seals_stale for s in shares] == [True, False, False]
    assert sum(s.rate(8.0) for s in shares) == pytest.approx(8.0)
    with pytest.raises(ValueError):
        Share(3, 3)
    assert multi_stream(None) == "_multi" and multi_stream(12) == "_multi-w12"
    with pytest.raises(ValueError):
        multi_stream(-1)


def _report(**values: float) -> StartupReport:
    """A report with every field of today's ``StartupReport`` (times 0 unless given)."""
    full: dict[str, Any] = {f.name: values.get(f.name, 0.0 if f.type in ("float", float)
                                               else 0) for f in fields(StartupReport)}
    return StartupReport(**full)


def test_startup_line_over_workers() -> None:
    a = _report(connections=3, products=40, seconds=1.0, settled=3, missing=0)
    b = _report(connections=4, products=41, seconds=2.0, settled=3, missing=2)
    # worker a's pool started at 10.5, b's at 10.2; the supervisor handed out products at 10
    r = aggregate([(a, 10.5), (b, 10.2)], 10.0)
    assert (r.connections, r.products, r.settled, r.missing) == (7, 81, 6, 2)
    assert r.seconds == pytest.approx(2.2)  # b answered last, 2.2 s after the hand-out
    line = report_fields(r)
    assert line.startswith("connections=7 products=81 seconds=2.20 settled=6 missing=2")
    assert all(f"{f.name}=" in line for f in fields(StartupReport))


def test_control_messages() -> None:
    msg = {"op": "products", "products": [["BTC-USD", 1.5], ["ETH-USD", 0]]}
    line = encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == msg
    assert weights_of(decode(line)["products"]) == {"BTC-USD": 1.5, "ETH-USD": 0.0}
    for bad in ("x", [["A-USD"]], [["A-USD", "1"]], [[1, 1.0]], [["A-USD", True]]):
        with pytest.raises(ValueError):
            weights_of(bad)
    with pytest.raises(ValueError):
        decode(b"[1, 2]\n")


def test_supervisor_metrics_relabel_each_workers_series() -> None:
    workers = []
    for i in range(2):
        stats = ConnStats(f"w{i}-0", FeedCounters())
        stats.channel("level2").messages = 10 + i
        sink = SinkStats(committed_records=100 * (i + 1))
        m = Metrics(lambda s=stats: [s], sink, lambda: 0, lambda: 0)  # type: ignore[misc]
        workers.append((m, m.serve("127.0.0.1", 0)))
    try:
        registry = CollectorRegistry()
        endpoints = [(0, workers[0][1], True), (1, workers[1][1], True), (2, None, True)]
        registry.register(WorkersCollector(lambda: endpoints, 3))
        families = {f.name: f for f in text_string_to_metric_families(
            generate_latest(registry).decode())}
    finally:
        for m, _port in workers:
            m.stop()
    msgs = {(s.labels["worker"], s.labels["conn"]): s.value
            for s in families["cbl_messages"].samples}
    assert msgs == {("0", "w0-0"): 10.0, ("1", "w1-0"): 11.0}
    committed = {s.labels["worker"]: s.value for s in families["cbl_committed_records"].samples}
    assert committed == {"0": 100.0, "1": 200.0}
    up = {s.labels["worker"]: s.value for s in families["cbl_worker_up"].samples}
    assert up == {"0": 1.0, "1": 1.0, "2": 0.0}
    assert families["cbl_workers"].samples[0].value == 3.0


def test_a_new_daemon_waits_for_workers_of_an_earlier_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / ".lock.w0").touch()  # left by a run that ended: free
    (tmp_path / ".lock.wx.y").touch()  # not a lock name of ours: ignored
    held = RootLock(tmp_path, ".lock.w1")  # a worker of a killed supervisor, still sealing

    async def go() -> tuple[bool, bool, bool]:
        stop = asyncio.Event()
        timed_out = await wait_for_old_workers(tmp_path, stop, 0.3)
        asyncio.get_running_loop().call_later(0.2, stop.set)
        stopped = await wait_for_old_workers(tmp_path, stop, 30)
        asyncio.get_running_loop().call_later(0.2, held.release)
        free = await wait_for_old_workers(tmp_path, asyncio.Event(), 30)
        return timed_out, stopped, free

    with caplog.at_level(logging.WARNING, logger="logger.daemon"):
        assert asyncio.run(go()) == (False, False, True)
    text = caplog.text
    assert "event=waiting_for_old_workers lock=.lock.w1" in text
    assert "event=old_workers_still_running lock=.lock.w1" in text


# ---------------------------------------------------------------------------- processes
class _Listing:
    """A REST products endpoint whose list the test changes (the simulator's list, filtered)."""

    def __init__(self, full: list[dict[str, object]]) -> None:
        self.full = full
        self.hidden: set[str] = set()
        listing = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"products": [p for p in listing.full
                                                if p["product_id"] not in listing.hidden]})
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/products"


@pytest.fixture
def sim() -> Iterator[dict[str, str]]:
    proc = subprocess.Popen(
        [str(REPO / "tools" / "simulate"), "serve", "--products", "12", "--rate", "150",
         "--seed", "3"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else b""
    try:
        assert line, "simulator did not start"
        yield json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_log(lines: list[str], pattern: str, proc: subprocess.Popen[bytes],
              timeout: float = 30) -> re.Match[str]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in list(lines):
            m = re.search(pattern, line)
            if m:
                return m
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged:\n" + "".join(lines))


def _start_daemon(root: Path, ws_url: str, rest_url: str, *sets: str,
                  ) -> tuple[subprocess.Popen[bytes], list[str]]:
    cmd = [sys.executable, "-m", "logger", "run", "--ws-url", ws_url, "--rest-url", rest_url,
           "--data-dir", str(root), "--metrics-port", "0"]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode("utf-8", "replace"))

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def test_more_workers_than_products_and_json_logs(tmp_path: Path, sim: dict[str, str]) -> None:
    """A worker without products idles (and could take new listings); JSON lines say which
    worker wrote them; SIGTERM to every process at once (systemd's KillMode=control-group,
    a terminal's Ctrl-C) is a clean stop, exit 0."""
    with urllib.request.urlopen(sim["rest_url"], timeout=10) as r:
        ids = [str(p["product_id"]) for p in json.loads(r.read())["products"]][:2]
    root = tmp_path / "data"
    proc, lines = _start_daemon(root, sim["ws_url"], sim["rest_url"], "ingest.workers=3",
                                "log.format=json", f"venue.products={','.join(ids)}")
    try:
        m = _wait_log(lines, r'\{"ts":[^\n]*"logger":"logger.supervisor","event":'
                      r'"all_acknowledged"[^\n]*\}', proc)
        acked = json.loads(m.group(0))  # the fields are JSON keys, numbers are numbers
        assert acked["products"] == 2 and acked["missing"] == 0 and acked["workers"] == 3, acked
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for line in lines]
    stopped = sorted(r["worker"] for r in records if r.get("event") == "stopped"
                     and r["logger"] != "logger.supervisor")
    assert stopped == [0, 1, 2]
    # the supervisor's own lines carry `worker` only as the subject of a worker_* event
    assert all("worker" not in r or r["event"].startswith("worker_")
               for r in records if r["logger"] == "logger.supervisor")
    streams = read_streams(root)
    assert {p for p, _ch in streams if not p.startswith("_")} == set(ids)
    assert not any(p.startswith(("_connw2-", "_multi-w2")) for p, _ch in streams)


def test_refresh_and_one_metrics_endpoint_with_two_workers(
    tmp_path: Path, sim: dict[str, str],
) -> None:
    with urllib.request.urlopen(sim["rest_url"], timeout=10) as r:
        full = json.loads(r.read())["products"]
    ids = [str(p["product_id"]) for p in full]
    listed, delisted = ids[-1], ids[0]
    listing = _Listing(full)
    listing.hidden = {listed}
    root = tmp_path / "data"
    proc, lines = _start_daemon(root, sim["ws_url"], listing.url, "log.format=text",
                                "ingest.workers=2", "venue.product_refresh_s=1",
                                "venue.channels=level2,ticker")
    try:
        port = int(_wait_log(lines, r"supervisor event=metrics_listening .*port=(\d+)",
                             proc).group(1))
        _wait_log(lines, r"supervisor event=all_acknowledged .*products=11 .*missing=0", proc)

        # one scrape of the supervisor covers both workers, each series labelled
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        workers = {s.labels["worker"] for s in families["cbl_messages"].samples}
        assert workers == {"0", "1"}
        assert all(s.labels["conn"].startswith(f"w{s.labels['worker']}-")
                   for s in families["cbl_messages"].samples)
        assert {s.labels["worker"]: s.value for s in families["cbl_worker_up"].samples} == {
            "0": 1.0, "1": 1.0}

        listing.hidden = {delisted}  # one new listing, one delisting
        _wait_log(lines, r"event=products_refreshed added=1 ", proc)
        _wait_log(lines, r"event=products_refreshed added=\d+ removed=1 ", proc)
        time.sleep(1.5)  # the acks of the new subscription and of the unsubscribe
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
        listing.server.shutdown()
    log = "".join(lines)
    assert len(re.findall(r"event=products_refreshed added=1 ", log)) == 1, log
    streams = read_streams(root)

    def writers(product: str, kind: RecordKind, event: str) -> set[str]:
        return {json.loads(p)["conn"].split("-")[0]
                for (prod, _ch), recs in streams.items() if prod == product
                for k, _ts, p in recs if k == kind and json.loads(p).get("event") == event}

    assert len(writers(listed, RecordKind.SUBSCRIBE, "subscribed")) == 1  # one worker took it
    assert {ch for (prod, ch), recs in streams.items() if prod == listed
            and any(k == RecordKind.DATA for k, _t, _p in recs)} == {"level2", "ticker"}
    assert writers(delisted, RecordKind.NOTE, "unsubscribed")  # dropped by its holder
    assert writers(delisted, RecordKind.DISCONNECT, "disconnect") == set()  # not held at stop
    assert writers(delisted, RecordKind.STOP, "stop") == set()
