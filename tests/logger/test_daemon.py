"""Daemon and CLI: data-dir dialect guard, no-internet retry, config errors, clean stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from logger.cli import main
from logger.config import load_config
from logger.daemon import Daemon, DataDirError, claim_data_dir
from logger.provenance import Venue

AT = Venue("advanced_trade", "wss://advanced-trade-ws.coinbase.com", "https://api.coinbase.com/p")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there now: connection refused, like no internet
    return port


def test_data_dir_records_its_dialect_and_refuses_the_other(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, AT)
    claim_data_dir(tmp_path, AT)  # same dialect: fine
    with pytest.raises(DataDirError, match="holds dialect 'advanced_trade'"):
        claim_data_dir(tmp_path, Venue("exchange", AT.ws_url, AT.rest_url))
    (tmp_path / ".coinbase-logger.json").write_text("{broken")
    with pytest.raises(DataDirError, match="unreadable"):
        claim_data_dir(tmp_path, AT)


def test_no_internet_keeps_retrying_then_stops_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    port = _closed_port()
    cfg = load_config(None, {
        "venue.rest_url": f"http://127.0.0.1:{port}/products",
        "venue.ws_url": f"ws://127.0.0.1:{port}", "storage.data_dir": str(tmp_path / "d"),
        "metrics.enabled": False,
    })

    async def go() -> int:
        d = Daemon(cfg)
        asyncio.get_running_loop().call_later(2.5, d.request_stop, "test")
        return (await d.run()).exit_code

    with caplog.at_level(logging.WARNING, logger="logger.daemon"):
        assert asyncio.run(go()) == 0
    retries = [r.getMessage() for r in caplog.records if "products_unavailable" in r.getMessage()]
    assert len(retries) >= 2
    assert all("\n" not in m and "retry_in_s=" in m and "127.0.0.1" in m for m in retries)


def test_cli_config_error_names_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--set", "storage.commit_records=-5"]) == 2
    assert "storage.commit_records" in capsys.readouterr().err
    assert main(["run", "--set", "storage.no_such_key=1"]) == 2
    assert "storage.no_such_key" in capsys.readouterr().err


def test_cli_refuses_data_dir_of_other_dialect(tmp_path: Path) -> None:
    claim_data_dir(tmp_path, AT)
    port = _closed_port()
    code = main(["run", "--data-dir", str(tmp_path), "--dialect", "exchange",
                 "--rest-url", f"http://127.0.0.1:{port}/products", "--set",
                 "metrics.enabled=false"])
    logging.getLogger().handlers.clear()
    assert code == 2



def test_cli_demo_says_where_the_demo_went(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make demo" in err and "tools/demo" in err
