"""Provenance of a data root: venue, dialect, software, host, runs; unclean stops counted;
another venue refused unless allowed; a busy metrics port stops startup (exit 2)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import pytest

from logger.cli import main
from logger.config import load_config
from logger.daemon import Daemon, DataDirError, claim_data_dir
from logger.provenance import DATA_DIR_META, Venue, read_meta, release, software_version
from storage.rootlock import LOCK_NAME, RootInUse, RootLock

SIM_A = Venue("advanced_trade", "ws://127.0.0.1:1111", "http://127.0.0.1:1111/products")
SIM_B = Venue("advanced_trade", "ws://127.0.0.1:2222", "http://127.0.0.1:2222/products")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_root_records_venue_dialect_version_and_host(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, SIM_A)
    meta = json.loads((tmp_path / DATA_DIR_META).read_text())
    assert meta["dialect"] == "advanced_trade"
    assert meta["venue"] == {"ws_url": SIM_A.ws_url, "rest_url": SIM_A.rest_url}
    run = meta["runs"][-1]
    assert run["version"] == software_version() and run["version"].startswith("0.")
    assert run["host"] == socket.gethostname() and run["ws_url"] == SIM_A.ws_url
    assert meta["running"] == run


def test_another_venue_is_refused_unless_allowed(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, SIM_A)
    release(tmp_path)
    with pytest.raises(DataDirError, match=r"holds data of venue 'ws://127.0.0.1:1111'.*"
                       r"allow_venue_change"):
        claim_data_dir(tmp_path, SIM_B)
    assert read_meta(tmp_path)["venue"]["ws_url"] == SIM_A.ws_url  # refused: unchanged
    claim_data_dir(tmp_path, SIM_B, allow_venue_change=True)
    meta = read_meta(tmp_path)
    assert meta is not None
    assert meta["venue"]["ws_url"] == SIM_B.ws_url
    assert [r["ws_url"] for r in meta["runs"]] == [SIM_A.ws_url, SIM_B.ws_url]
    release(tmp_path)
    with pytest.raises(DataDirError, match="holds dialect"):  # never, even when allowed
        claim_data_dir(tmp_path, Venue("exchange", SIM_B.ws_url, SIM_B.rest_url),
                       allow_venue_change=True)


def test_a_run_without_clean_stop_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    assert claim_data_dir(tmp_path, SIM_A).unclean_stops == 0
    release(tmp_path)  # clean stop
    assert "stopped_ns" in read_meta(tmp_path)["runs"][-1]  # type: ignore[index]
    assert claim_data_dir(tmp_path, SIM_A).unclean_previous is None
    # no release: the process died (kill -9); the next start finds `running` left behind
    with caplog.at_level(logging.WARNING, logger="logger.daemon"):
        c = claim_data_dir(tmp_path, SIM_A)
    assert c.unclean_previous is not None and c.unclean_stops == 1
    warned = [r for r in caplog.records if "event=unclean_stop_detected" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert claim_data_dir(tmp_path, SIM_A).unclean_stops == 2


def test_a_running_recorder_is_not_taken_for_an_unclean_stop(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, SIM_A)
    lock = RootLock(tmp_path, LOCK_NAME)  # a live recorder holds the root
    try:
        with pytest.raises(RootInUse):
            claim_data_dir(tmp_path, SIM_A)
    finally:
        lock.release()
    assert read_meta(tmp_path)["unclean_stops"] == 0  # type: ignore[index]


def test_daemon_stopped_cleanly_leaves_no_running_entry(tmp_path: Path) -> None:
    port = _closed_port()
    root = tmp_path / "d"
    cfg = load_config(None, {
        "venue.rest_url": f"http://127.0.0.1:{port}/products",
        "venue.ws_url": f"ws://127.0.0.1:{port}", "storage.data_dir": str(root),
        "metrics.port": 0, "metrics.host": "127.0.0.1",
    })

    async def go() -> int:
        d = Daemon(cfg)
        asyncio.get_running_loop().call_later(1.0, d.request_stop, "test")
        return (await d.run()).exit_code

    assert asyncio.run(go()) == 0
    meta = read_meta(root)
    assert meta is not None and "running" not in meta and meta["unclean_stops"] == 0
    assert meta["runs"][-1]["ws_url"] == f"ws://127.0.0.1:{port}"


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_port_in_use_stops_startup_with_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], workers: int,
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = int(busy.getsockname()[1])
    closed = _closed_port()
    try:
        code = main(["run", "--data-dir", str(tmp_path / "d"), "--metrics-port", str(port),
                     "--rest-url", f"http://127.0.0.1:{closed}/products",
                     "--ws-url", f"ws://127.0.0.1:{closed}",
                     "--set", f"ingest.workers={workers}", "--set", "log.format=text"])
    finally:
        logging.getLogger().handlers.clear()
        busy.close()
    assert code == 2
    err = [line for line in capfd.readouterr().err.splitlines() if "ERROR" in line]
    assert len(err) == 1, err
    assert "event=metrics_unavailable" in err[0] and f"port={port}" in err[0]
    assert "Address already in use" in err[0] and "Errno" not in err[0]
    meta = read_meta(tmp_path / "d")  # nothing was recorded: not an unclean stop either
    assert meta is not None and "running" not in meta and meta["unclean_stops"] == 0
