"""The daemon as a real process against a hostile venue (or an absent REST endpoint) on
127.0.0.1.

A products endpoint that trickles one byte at a time must neither hang discovery past a
SIGTERM nor stop later refreshes; a fixed product list records without REST at all, and a
list the venue does not know ends the daemon with exit 2 naming the ids; a ping flood costs a
reconnect, not memory.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
import time
from pathlib import Path

import pytest
from e2e_harness import read_stored, start_daemon, start_sim, stop_all

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "logger"))
from trickle import TrickleServer

from storage.records import RecordKind

SIGTERM_BOUND_S = 10.0
"""docs/RUNTIME.md: SIGTERM ends the daemon within this whatever the venue does."""


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _sigterm_seconds(d: object) -> tuple[int, float]:
    t0 = time.monotonic()
    code = d.terminate(SIGTERM_BOUND_S + 5)  # type: ignore[attr-defined]
    return code, time.monotonic() - t0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_ends_discovery_stuck_on_a_trickling_endpoint(data_root: Path,
                                                               tmp_path: Path,
                                                               workers: int) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=3, rate=50, duration=60)
    with TrickleServer(interval_s=5.0) as rest:
        d = start_daemon(dataclasses.replace(sim, rest_url=rest.url), data_root,
                         dialect="advanced_trade",
                         sets=("venue.rest_timeout_s=600", f"ingest.workers={workers}"))
        try:
            deadline = time.monotonic() + 20
            while rest.requests == 0:
                assert time.monotonic() < deadline, d.log()
                time.sleep(0.1)
            time.sleep(2.0)  # the fetch is now in the middle of a trickled body
            assert "event=starting" not in d.log()
            code, took = _sigterm_seconds(d)
        finally:
            stop_all(d, sim)
    assert code == 0, d.log()
    assert took < SIGTERM_BOUND_S, took
    print(f"SIGTERM to exit during a trickled discovery, workers={workers}: {took:.2f} s")
    assert "Traceback" not in d.log()


def test_a_trickling_fetch_is_abandoned_at_its_deadline_and_retried(
        data_root: Path, tmp_path: Path) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=3, rate=50, duration=60)
    with TrickleServer(interval_s=0.5) as rest:
        d = start_daemon(dataclasses.replace(sim, rest_url=rest.url), data_root,
                         dialect="advanced_trade", sets=("venue.rest_timeout_s=1",))
        try:
            line = d.wait_for("event=products_unavailable", 15)
            assert "no complete product list within 1 s" in line
            deadline = time.monotonic() + 15
            while d.log().count("event=products_unavailable") < 2:
                assert time.monotonic() < deadline, d.log()
                time.sleep(0.1)
            code, took = _sigterm_seconds(d)
        finally:
            stop_all(d, sim)
    assert code == 0 and took < SIGTERM_BOUND_S
    assert rest.requests >= 2


def test_fixed_products_record_without_rest_and_refreshes_survive_a_stuck_endpoint(
        data_root: Path, tmp_path: Path) -> None:
    """``--products BTC-USD``: subscribed at once though REST trickles; every refresh is
    abandoned at its deadline, logged, and the next one still runs."""
    sim = start_sim(tmp_path, dialect="advanced_trade", products=3, rate=50, duration=60)
    with TrickleServer(interval_s=0.5) as rest:
        d = start_daemon(dataclasses.replace(sim, rest_url=rest.url), data_root,
                         dialect="advanced_trade",
                         sets=("venue.products=BTC-USD", "venue.rest_timeout_s=1",
                               "venue.product_refresh_s=1"))
        try:
            d.wait_for("event=all_acknowledged", 20)
            d.wait_for("event=products_unverified", 15)
            deadline = time.monotonic() + 20
            while d.log().count("event=refresh_failed") < 2:
                assert time.monotonic() < deadline, d.log()
                time.sleep(0.1)
            code, took = _sigterm_seconds(d)
        finally:
            stop_all(d, sim)
    assert code == 0 and took < SIGTERM_BOUND_S, d.log()
    stored = read_stored(data_root)
    assert any(k[0] == "BTC-USD" for k, _ in stored.data())
    products = {k[0] for k, _ in stored.data() if not k[0].startswith("_")}
    assert products == {"BTC-USD"}, products
    assert "no complete product list within 1 s" in d.log()


def test_fixed_products_with_rest_down_subscribe_at_once(data_root: Path,
                                                         tmp_path: Path) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=3, rate=50, duration=60)
    dead = f"http://127.0.0.1:{_closed_port()}/products"
    d = start_daemon(dataclasses.replace(sim, rest_url=dead), data_root,
                     dialect="advanced_trade", sets=("venue.products=BTC-USD,ETH-USD",))
    try:
        d.wait_for("event=all_acknowledged", 20)
        assert "event=products_unverified" in d.log()
        time.sleep(1.0)
        code, _ = _sigterm_seconds(d)
    finally:
        stop_all(d, sim)
    assert code == 0
    stored = read_stored(data_root)
    assert {"BTC-USD", "ETH-USD"} <= {k[0] for k, _ in stored.data()}
    assert stored.markers(RecordKind.SUBSCRIBE)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_fixed_list_the_venue_does_not_know_exits_2_naming_it(
        data_root: Path, tmp_path: Path, workers: int) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=3, rate=50, duration=60)
    d = start_daemon(sim, data_root, dialect="advanced_trade",
                     sets=("venue.products=NOPE-USD,TYPO-USD", f"ingest.workers={workers}"))
    try:
        code = d.proc.wait(20)
    finally:
        stop_all(d, sim)
    assert code == 2, d.log()
    line = next(ln for ln in d.log().splitlines() if "event=products_unknown" in ln)
    assert "NOPE-USD,TYPO-USD" in line
    assert "Traceback" not in d.log()


def test_a_partly_unknown_fixed_list_records_the_known_products(data_root: Path,
                                                                tmp_path: Path) -> None:
    sim = start_sim(tmp_path, dialect="advanced_trade", products=3, rate=50, duration=60)
    d = start_daemon(sim, data_root, dialect="advanced_trade",
                     sets=("venue.products=BTC-USD,NOPE-USD",))
    try:
        line = d.wait_for("event=products_not_listed", 20)
        assert "NOPE-USD" in line
        d.wait_for("event=products_refreshed", 10)
        code, _ = _sigterm_seconds(d)
    finally:
        stop_all(d, sim)
    assert code == 0
    assert "BTC-USD" in {k[0] for k, _ in read_stored(data_root).data()}


def _vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def test_daemon_survives_a_ping_flood_with_bounded_memory(data_root: Path,
                                                          tmp_path: Path) -> None:
    """The simulator floods connection 0 with pings and stops reading its pongs: the daemon
    drops that connection at its write limit (4 MiB), marks it, reconnects; its peak RSS stays
    within the documented bound of that limit (the issue measured 5 GB after 25 s)."""
    sim = start_sim(tmp_path, dialect="advanced_trade", products=3, rate=200, duration=60,
                    faults="ping_flood:20@c0/30")
    d = start_daemon(sim, data_root, dialect="advanced_trade")
    try:
        d.wait_for("event=all_acknowledged", 20)
        base = _vm(d.proc.pid, "VmRSS")
        line = d.wait_for("ping flood", 30)
        assert "outgoing buffer over 4194304 bytes" in line, line
        time.sleep(2.0)  # reconnected meanwhile (backoff 0.5 s): checked in the stored markers
        peak = _vm(d.proc.pid, "VmHWM")
        code, took = _sigterm_seconds(d)
    finally:
        stop_all(d, sim)
    assert code == 0 and took < SIGTERM_BOUND_S, d.log()
    print(f"ping flood: RSS after startup {base >> 20} MiB, peak {peak >> 20} MiB")
    assert peak - base < 64 << 20, (base, peak)
    stored = read_stored(data_root)
    reasons = [str(m["reason"]) for _, m in stored.markers(RecordKind.DISCONNECT)]
    assert any("ping flood" in r for r in reasons), reasons
    assert stored.markers(RecordKind.RECONNECT)
