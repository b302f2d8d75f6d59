"""Config: defaults for every key, errors that name the key, CLI overrides, the example file."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from logger.config import (
    SCHEMA,
    Config,
    ConfigError,
    config_values,
    load_config,
    parse_override,
)

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_cover_every_key() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.venue.dialect == "advanced_trade"
    assert cfg.venue.ws_url == "wss://advanced-trade-ws.coinbase.com"
    assert cfg.venue.channels[0] == "heartbeats" and "level2" in cfg.venue.channels
    assert cfg.storage.commit_records == 10_000 and cfg.storage.commit_interval_s == 5.0
    assert cfg.storage.fsync_interval is None
    assert cfg.connections.level2_products_per_connection == 30
    assert cfg.connections.opens_per_second == 8.0
    assert cfg.connections.max_frame_bytes > 4 << 20
    assert cfg.metrics.host == "127.0.0.1"


def test_example_file_lists_every_key_with_its_default() -> None:
    table = tomllib.loads((ROOT / "config.example.toml").read_text(encoding="utf-8"))
    flat = {f"{s}.{k}": v for s, keys in table.items() for k, v in keys.items()}
    assert set(flat) == set(SCHEMA)
    for key, value in flat.items():
        assert value == SCHEMA[key][0], key
    assert load_config(ROOT / "config.example.toml") == load_config(None)


def test_exchange_dialect_brings_its_urls_and_channels(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[venue]\ndialect = "exchange"\n'))
    assert cfg.venue.ws_url == "wss://ws-feed.exchange.coinbase.com"
    assert cfg.venue.rest_url == "https://api.exchange.coinbase.com/products"
    assert "level2_batch" in cfg.venue.channels
    assert cfg.storage.commit_records == 10_000


def test_file_values_and_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, """
[venue]
ws_url = "ws://127.0.0.1:9000/ws"
products = ["BTC-USD", "ETH-USD", "BTC-USD"]
channels = ["level2", "ticker"]
[storage]
commit_records = 500
fsync_interval_s = 2
""")
    cfg = load_config(path, {"storage.commit_records": 700, "metrics.port": 0})
    assert cfg.venue.ws_url == "ws://127.0.0.1:9000/ws"
    assert cfg.venue.products == ("BTC-USD", "ETH-USD")
    assert cfg.venue.channels == ("heartbeats", "level2", "ticker")
    assert cfg.storage.commit_records == 700
    assert cfg.storage.fsync_interval == 2.0
    assert cfg.metrics.port == 0


@pytest.mark.parametrize(("text", "message"), [
    ("[storage]\ncommit_records = -5\n",
     "storage.commit_records: expected a positive integer, got -5"),
    ("[storage]\ncommit_records = true\n", "storage.commit_records: expected a positive integer"),
    ("[storage]\ncommit_records = 1.5\n", "storage.commit_records"),
    ("[storage]\ncommit_interval_s = 0\n", "storage.commit_interval_s: expected a positive"),
    ("[storage]\ncommit_intervals = 5\n", "storage.commit_intervals: unknown key"),
    ("[storage]\nbackend = \"disk\"\n", "storage.backend: expected one of 'auto'"),
    ("[storage]\nsegment_max_bytes = 10\n", "storage.segment_max_bytes"),
    ("[stroage]\ndata_dir = \"x\"\n", "stroage: unknown key"),
    ("top = 1\n", "top: unknown key"),
    ("[venue]\ndialect = \"pro\"\n", "venue.dialect: expected one of"),
    ("[venue]\nws_url = \"http://x\"\n", "venue.ws_url: expected"),
    ("[venue]\nrest_url = \"ftp://x\"\n", "venue.rest_url: expected"),
    ("[venue]\nproducts = []\n", "venue.products"),
    ("[venue]\nproducts = [\"../etc\"]\n", "venue.products: expected product ids"),
    ("[venue]\nproducts = \"some\"\n", "venue.products"),
    ("[venue]\nchannels = [\"full\"]\n", "venue.channels: expected channels of advanced_trade"),
    ("[venue]\nproduct_refresh_s = -1\n", "venue.product_refresh_s"),
    ("[connections]\nlevel2_products_per_connection = 31\n",
     "connections.level2_products_per_connection: expected at most 30 for advanced_trade"),
    ("[connections]\nmax_frame_bytes = 1048576\n", "connections.max_frame_bytes"),
    ("[connections]\nbackoff_base_s = 5.0\nbackoff_max_s = 1.0\n", "connections.backoff_max_s"),
    ("[connections]\nbackoff_jitter = 1.5\n", "connections.backoff_jitter"),
    ("[connections]\non_gap = \"ignore\"\n", "connections.on_gap"),
    ("[metrics]\nport = 70000\n", "metrics.port"),
    ("[metrics]\nenabled = \"yes\"\n", "metrics.enabled: expected true or false"),
    ("[log]\nlevel = \"LOUD\"\n", "log.level"),
    ("[storage]\nfsync_interval_s = inf\n", "storage.fsync_interval_s"),
    ("[ingest]\nworkers = 0\n", "ingest.workers: expected an integer from 1 to 64, got 0"),
    ("[ingest]\nworkers = -1\n", "ingest.workers: expected an integer from 1 to 64, got -1"),
    ("[ingest]\nworkers = \"x\"\n", "ingest.workers: expected an integer from 1 to 64"),
    ("[ingest]\nworkers = 2.0\n", "ingest.workers: expected an integer"),
    ("[ingest]\nworkers = true\n", "ingest.workers: expected an integer"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


def test_exchange_allows_more_products_per_connection(tmp_path: Path) -> None:
    text = '[venue]\ndialect = "exchange"\n[connections]\nlevel2_products_per_connection = 50\n'
    assert load_config(write(tmp_path, text)).connections.level2_products_per_connection == 50


def test_unknown_or_bad_override_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"storage\.nope: unknown key"):
        load_config(None, {"storage.nope": 1})
    with pytest.raises(ConfigError, match=r"storage\.commit_records: expected a positive"):
        load_config(None, {"storage.commit_records": 0})


def test_missing_and_broken_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[storage\n"))


def test_parse_override_converts_cli_strings() -> None:
    assert parse_override("storage.commit_records", "5000") == 5000
    assert parse_override("storage.commit_interval_s", "2.5") == 2.5
    assert parse_override("metrics.enabled", "false") is False
    assert parse_override("storage.data_dir", "/tmp/data") == "/tmp/data"
    assert parse_override("venue.products", "all") == "all"
    assert parse_override("venue.products", "BTC-USD, ETH-USD") == ["BTC-USD", "ETH-USD"]
    assert parse_override("venue.channels", "level2,ticker") == ["level2", "ticker"]
    cfg = load_config(None, {"venue.products": parse_override("venue.products", "BTC-USD")})
    assert cfg.venue.products == ("BTC-USD",)
    with pytest.raises(ConfigError, match=r"storage\.commit_records: expected int"):
        parse_override("storage.commit_records", "lots")
    with pytest.raises(ConfigError, match=r"venue\.nope: unknown key"):
        parse_override("venue.nope", "1")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def test_ingest_doc_lists_every_key_with_its_default() -> None:
    text = (ROOT / "docs" / "INGEST.md").read_text(encoding="utf-8")
    for key, (default, _check, _meaning) in SCHEMA.items():
        assert f"| `{key}` | `{_toml(default)}` |" in text, key


def test_workers_key_from_the_command_line() -> None:
    assert load_config(None).ingest.workers == 1  # the single-process daemon by default
    cfg = load_config(None, {"ingest.workers": parse_override("ingest.workers", "2")})
    assert cfg.ingest.workers == 2
    for text in ("0", "-1"):
        with pytest.raises(ConfigError, match=r"ingest\.workers: expected an integer"):
            load_config(None, {"ingest.workers": parse_override("ingest.workers", text)})
    with pytest.raises(ConfigError, match=r"ingest\.workers"):
        parse_override("ingest.workers", "x")


def test_cpus_key_from_file_and_command_line(tmp_path: Path) -> None:
    import os

    allowed = sorted(os.sched_getaffinity(0))
    assert load_config(None).ingest.cpus == ()  # no pinning by default
    first = allowed[0]
    for text in (f"{first}", f"[{first}]", f"{first},{first}"):
        cfg = load_config(None, {"ingest.cpus": parse_override("ingest.cpus", text)})
        assert cfg.ingest.cpus == (first,), text
    assert load_config(write(tmp_path, f"[ingest]\ncpus = {allowed}\n")).ingest.cpus == \
        tuple(allowed)
    absent = max(allowed) + 1000
    for text, message in ((f"[ingest]\ncpus = [{absent}]\n", "ingest.cpus: expected CPUs this"),
                          ("[ingest]\ncpus = [-1]\n", "ingest.cpus: expected CPU numbers"),
                          ("[ingest]\ncpus = [true]\n", "ingest.cpus: expected CPU numbers"),
                          ("[ingest]\ncpus = [\"x\"]\n", "ingest.cpus: expected CPU numbers"),
                          ("[ingest]\ncpus = 0\n", "ingest.cpus: expected a list")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(write(tmp_path, text))


def test_config_values_round_trip_as_json() -> None:
    """How the supervisor hands its config to a worker: JSON, checked again on arrival."""
    import json

    for overrides in ({}, {"venue.dialect": "exchange", "venue.channels": ["matches"]},
                      {"venue.products": ["BTC-USD", "ETH-USD"], "ingest.workers": 3,
                       "ingest.cpus": [min(os.sched_getaffinity(0))],
                       "venue.exclude_products": ["USDT-USD"], "storage.fsync_interval_s": 2}):
        cfg = load_config(None, overrides)
        assert load_config(None, json.loads(json.dumps(config_values(cfg)))) == cfg
