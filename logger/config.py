"""Daemon configuration: one TOML file, a default for every key, CLI overrides on top.

Every key is declared once in ``SCHEMA`` with its default and its check, so the example file,
the docs and the validation cannot drift apart; ``tests/logger/test_config.py`` checks that
``config.example.toml`` lists exactly these keys with exactly these defaults. A key the schema
does not know, or a value its check refuses, stops the daemon at startup with a ``ConfigError``
that names the key (``storage.commit_records: expected a positive integer, got -5``): a typo
in a config file must never silently fall back to a default.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from logger.protocol.dialects import DIALECTS, get_dialect
from logger.protocol.names import is_valid_product_id
from storage import BACKEND_NAMES, DEFAULT_BACKEND, CommitPolicy

#: storage owns the commit thresholds' defaults (``storage.CommitPolicy``); the schema shows them
_COMMIT = CommitPolicy()


class ConfigError(ValueError):
    """A config file or override is unusable; the message names the key and the value."""


Check = Callable[[str, object], object]


def _fail(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {value!r}")


def _int(minimum: int, maximum: int | None = None, what: str = "an integer") -> Check:
    def check(key: str, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, what, value)
        if value < minimum or (maximum is not None and value > maximum):
            raise _fail(key, what, value)
        return value
    return check


def _float(minimum: float, *, strict: bool, what: str, allow_zero_off: bool = False) -> Check:
    def check(key: str, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, what, value)
        number = float(value)
        if not math.isfinite(number):
            raise _fail(key, what, value)
        if allow_zero_off and number == 0:
            return 0.0
        if number < minimum or (strict and number == minimum):
            raise _fail(key, what, value)
        return number
    return check


def _choice(*options: str) -> Check:
    def check(key: str, value: object) -> object:
        if value not in options:
            raise _fail(key, "one of " + ", ".join(repr(o) for o in options), value)
        return value
    return check


def _url(*schemes: str) -> Check:
    def check(key: str, value: object) -> object:
        if not isinstance(value, str):
            raise _fail(key, "a URL string", value)
        if value and not any(value.startswith(s + "://") and len(value) > len(s) + 3
                             for s in schemes):
            raise _fail(key, "'' or a URL starting with " + " or ".join(
                f"{s}://" for s in schemes), value)
        return value
    return check


def _text(key: str, value: object) -> object:
    if not isinstance(value, str) or not value:
        raise _fail(key, "a non-empty string", value)
    return value


def _products(key: str, value: object) -> object:
    if value == "all":
        return "all"
    if not isinstance(value, list) or not value:
        raise _fail(key, '"all" or a non-empty list of product ids', value)
    for item in value:
        if not isinstance(item, str) or not is_valid_product_id(item):
            raise _fail(key, "product ids of [A-Za-z0-9._-] (1..64, not starting with . or _)",
                        item)
    return tuple(dict.fromkeys(value))


def _product_list(key: str, value: object) -> object:
    if value == []:
        return ()
    return _products(key, value)


def _channels(key: str, value: object) -> object:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, "a list of channel names ([] = the dialect's default set)", value)
    return tuple(dict.fromkeys(value))


def _cpus(key: str, value: object) -> object:
    """CPU numbers this machine lets the daemon use; strings of digits come from ``--set``."""
    if not isinstance(value, list):
        raise _fail(key, "a list of CPU numbers ([] = no pinning)", value)
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    out: list[int] = []
    for item in value:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or item < 0:
            raise _fail(key, "CPU numbers (integers >= 0)", item)
        if item not in allowed:
            raise _fail(key, "CPUs this process may run on (" + ", ".join(map(str, allowed))
                        + ")", item)
        out.append(item)
    return tuple(dict.fromkeys(out))


def _bool(key: str, value: object) -> object:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


SCHEMA: Mapping[str, tuple[object, Check, str]] = {
    # key: (default, check, one-line meaning for docs and config.example.toml)
    "venue.dialect": ("advanced_trade", _choice(*DIALECTS),
                      "Coinbase WebSocket dialect: advanced_trade or exchange"),
    "venue.ws_url": ("", _url("ws", "wss"),
                     "WebSocket URL; '' = the dialect's public market-data URL"),
    "venue.rest_url": ("", _url("http", "https"),
                       "REST products-list URL; '' = the dialect's public endpoint"),
    "venue.products": ("all", _products,
                       'products to record: "all" (discovered over REST) or a list of ids'),
    "venue.exclude_products": ([], _product_list, "product ids never recorded"),
    "venue.channels": ([], _channels,
                       "channels to subscribe; [] = every public channel of the dialect"),
    "venue.product_refresh_s": (3600.0, _float(0, strict=True, what="a positive number",
                                               allow_zero_off=True),
                                "seconds between product-list refreshes; 0 = never"),
    "venue.rest_timeout_s": (10.0, _float(0, strict=True, what="a positive number"),
                             "overall deadline of one REST product-list fetch (all pages)"),
    "storage.data_dir": ("data", _text, "root directory of the segment files"),
    "storage.allow_venue_change": (False, _bool, "record into a data root that holds another"
                                   " venue's data (its URLs differ); refused by default"),
    "storage.backend": (DEFAULT_BACKEND, _choice(*BACKEND_NAMES),
                        "write backend: " + ", ".join(BACKEND_NAMES)),
    "storage.commit_records": (_COMMIT.records, _int(1, what="a positive integer"),
                               "commit when this many records are pending"),
    "storage.commit_interval_s": (_COMMIT.interval_s,
                                  _float(0, strict=True, what="a positive number"),
                                  "commit at least this often (seconds)"),
    "storage.fsync_interval_s": (0.0, _float(0, strict=True, what="a positive number or 0",
                                             allow_zero_off=True),
                                 "fdatasync committed data this often; 0 = never (page cache)"),
    "storage.segment_max_bytes": (1 << 30, _int(1 << 20, 1 << 40,
                                                what="an integer from 1 MiB to 1 TiB"),
                                  "largest segment file before a new one is started"),
    "storage.shutdown_retry_s": (5.0, _float(0, strict=False, what="a number of seconds >= 0"),
                                 "at shutdown, retry failing commits this long before "
                                 "counting the rest as lost (exit 3)"),
    "storage.max_backlog_bytes": (256 << 20, _int(1 << 20, 1 << 40,
                                                  what="an integer from 1 MiB to 1 TiB"),
                                  "payload bytes kept pending while commits fail; beyond "
                                  "them records are dropped, counted and marked"),
    "connections.level2_products_per_connection": (
        30, _int(1, 10_000, what="an integer from 1 to 10000"),
        "products per connection (Advanced Trade allows at most 30 level2 products)"),
    "connections.opens_per_second": (8.0, _float(0, strict=True, what="a positive number"),
                                     "connection opens per second (venue limit 8/s per IP)"),
    "connections.messages_per_second": (8.0, _float(0, strict=True, what="a positive number"),
                                        "subscribe messages sent per second over all connections"),
    "connections.ack_timeout_s": (10.0, _float(0, strict=True, what="a positive number"),
                                  "seconds to wait for subscription acks before reporting"),
    "connections.subscribe_retries": (5, _int(0, 100, what="an integer from 0 to 100"),
                                      "times an unacknowledged subscription is sent again"
                                      " (backoff 2, 4, 8 ... 60 s); 0 = never"),
    "connections.watchdog_s": (30.0, _float(0, strict=True, what="a positive number"),
                               "reconnect a connection silent for this many seconds"),
    "connections.backoff_base_s": (0.5, _float(0, strict=True, what="a positive number"),
                                   "first reconnect delay (doubles per failed attempt)"),
    "connections.backoff_max_s": (30.0, _float(0, strict=True, what="a positive number"),
                                  "longest reconnect delay"),
    "connections.backoff_jitter": (0.5, _float(0, strict=False, what="a number from 0 to 1"),
                                   "random fraction added to or taken from each delay"),
    "connections.max_frame_bytes": (64 << 20, _int(4 << 20, 1 << 30,
                                                   what="an integer from 4 MiB to 1 GiB"),
                                    "largest WebSocket frame accepted (level2 snapshots > 4 MB)"),
    "connections.receive_buffer_bytes": (8 << 20, _int(1 << 16, 1 << 30,
                                                       what="an integer from 64 KiB to 1 GiB"),
                                         "socket receive buffer (SO_RCVBUF) per connection"),
    "connections.max_write_buffer_bytes": (
        4 << 20, _int(1 << 16, 1 << 30, what="an integer from 64 KiB to 1 GiB"),
        "outgoing backlog per connection (pongs); a venue that does not read past it is"
        " dropped and reconnected"),
    "connections.on_gap": ("resubscribe", _choice("resubscribe", "reconnect"),
                           "after a sequence gap: resubscribe for fresh snapshots, or reconnect"),
    "ingest.queue_max_batches": (64, _int(1, 1_000_000, what="a positive integer"),
                                 "bound of the queue between socket reader and storage writer"),
    "ingest.workers": (1, _int(1, 64, what="an integer from 1 to 64"),
                       "ingest processes; > 1 shards the products over worker processes"),
    "ingest.cpus": ([], _cpus, "pin each recording process to one CPU: process i (the single"
                    " process is 0, worker i is i) to cpus[i % len]; [] = no pinning"),
    "metrics.enabled": (True, _bool, "serve Prometheus /metrics"),
    "metrics.host": ("127.0.0.1", _text, "address /metrics binds to"),
    "metrics.port": (9464, _int(0, 65535, what="a port number from 0 to 65535"),
                     "port of /metrics (0 = any free port)"),
    "log.level": ("INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "log level"),
    "log.format": ("json", _choice("json", "text"), "log line format"),
    "log.status_interval_s": (60.0, _float(0, strict=True, what="a positive number"),
                              "seconds between one-line status log lines"),
}


def _check_for(key: str) -> Check:
    return SCHEMA[key][1]


@dataclass(frozen=True, slots=True)
class VenueConfig:
    """Where to connect and what to record."""

    dialect: str
    ws_url: str
    rest_url: str
    products: str | tuple[str, ...]
    exclude_products: tuple[str, ...]
    channels: tuple[str, ...]
    product_refresh_s: float
    rest_timeout_s: float


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Storage engine settings (mapped one to one onto ``storage.EngineConfig``)."""

    data_dir: str
    allow_venue_change: bool
    backend: str
    commit_records: int
    commit_interval_s: float
    fsync_interval_s: float
    segment_max_bytes: int
    shutdown_retry_s: float
    max_backlog_bytes: int

    @property
    def fsync_interval(self) -> float | None:
        """``fsync_interval_s`` as the engine takes it: None when off."""
        return self.fsync_interval_s or None


@dataclass(frozen=True, slots=True)
class ConnectionsConfig:
    """Connection pool, pacing, liveness and frame limits."""

    level2_products_per_connection: int
    opens_per_second: float
    messages_per_second: float
    ack_timeout_s: float
    subscribe_retries: int
    watchdog_s: float
    backoff_base_s: float
    backoff_max_s: float
    backoff_jitter: float
    max_frame_bytes: int
    receive_buffer_bytes: int
    max_write_buffer_bytes: int
    on_gap: str


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Between the sockets and the storage writer."""

    queue_max_batches: int
    workers: int
    """1: one process (``logger.daemon.Daemon``); N > 1: a supervisor and N worker processes
    (``logger.supervisor``), each with its own connections, sink and storage engine."""
    cpus: tuple[int, ...]
    """CPUs the recording processes are pinned to, one each (``logger.daemon.pin_cpu``)."""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus endpoint."""

    enabled: bool
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Logging."""

    level: str
    format: str
    status_interval_s: float


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration; URLs resolved, channels filled in."""

    venue: VenueConfig
    storage: StorageConfig
    connections: ConnectionsConfig
    ingest: IngestConfig
    metrics: MetricsConfig
    log: LogConfig


_SECTIONS: Mapping[str, type[Any]] = {
    "venue": VenueConfig, "storage": StorageConfig, "connections": ConnectionsConfig,
    "ingest": IngestConfig, "metrics": MetricsConfig, "log": LogConfig,
}


def _flatten(table: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and f"{key}." in {k[: len(key) + 1] for k in SCHEMA}:
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _unknown(key: str) -> ConfigError:
    section = key.split(".", 1)[0]
    if section not in _SECTIONS:
        return ConfigError(f"{key}: unknown key (sections are {', '.join(_SECTIONS)})")
    known = ", ".join(k.split(".", 1)[1] for k in SCHEMA if k.startswith(section + "."))
    return ConfigError(f"{key}: unknown key (known keys of [{section}]: {known})")


def parse_override(key: str, text: str) -> object:
    """Turn a CLI string (``--set storage.commit_records=5000``) into the key's TOML value."""
    if key not in SCHEMA:
        raise _unknown(key)
    default = SCHEMA[key][0]
    if isinstance(default, str) and not (key == "venue.products" and text.startswith("[")):
        if key == "venue.products" and text != "all":
            return [p.strip() for p in text.split(",") if p.strip()]
        return text
    if isinstance(default, list) and not text.lstrip().startswith("["):
        return [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        raise _fail(key, type(default).__name__, text) from None


def load_config(path: str | Path | None = None,
                overrides: Mapping[str, object] | None = None) -> Config:
    """Read ``path`` (None: defaults only), apply dotted-key ``overrides``, validate all."""
    values: dict[str, object] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                table = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        values.update(_flatten(table))
    values.update(overrides or {})
    resolved: dict[str, object] = {}
    for key, value in values.items():
        if key not in SCHEMA:
            raise _unknown(key)
        resolved[key] = _check_for(key)(key, value)
    for key, (default, _check, _doc) in SCHEMA.items():
        if key not in resolved:
            resolved[key] = _check_for(key)(key, default)
    return _build(resolved)


def _build(values: dict[str, object]) -> Config:
    dialect = get_dialect(str(values["venue.dialect"]))
    if not values["venue.ws_url"]:
        values["venue.ws_url"] = dialect.default_ws_url
    if not values["venue.rest_url"]:
        values["venue.rest_url"] = dialect.default_rest_url
    channels = values["venue.channels"]
    assert isinstance(channels, tuple)
    for channel in channels:
        if channel not in dialect.channels:
            raise _fail("venue.channels",
                        f"channels of {dialect.name} ({', '.join(dialect.channels)})", channel)
    if not channels:
        values["venue.channels"] = dialect.channels
    elif dialect.keepalive_channel not in channels:
        values["venue.channels"] = (dialect.keepalive_channel, *channels)
    per_conn = values["connections.level2_products_per_connection"]
    assert isinstance(per_conn, int)
    if dialect.level2_cap is not None and per_conn > dialect.level2_cap:
        raise _fail("connections.level2_products_per_connection",
                    f"at most {dialect.level2_cap} for {dialect.name}", per_conn)
    base, top = values["connections.backoff_base_s"], values["connections.backoff_max_s"]
    assert isinstance(base, float) and isinstance(top, float)
    if top < base:
        raise _fail("connections.backoff_max_s", f"at least backoff_base_s ({base})", top)
    jitter = values["connections.backoff_jitter"]
    assert isinstance(jitter, float)
    if jitter > 1:
        raise _fail("connections.backoff_jitter", "a number from 0 to 1", jitter)
    sections: dict[str, object] = {}
    for section, cls in _SECTIONS.items():
        kwargs = {f.name: values[f"{section}.{f.name}"] for f in fields(cls)}
        sections[section] = cls(**kwargs)
    return Config(**sections)  # type: ignore[arg-type]


def config_values(cfg: Config) -> dict[str, object]:
    """``cfg`` as dotted keys with TOML/JSON-shaped values (tuples as lists), such that
    ``load_config(None, config_values(cfg)) == cfg``: how the supervisor hands its resolved
    config to worker processes (one JSON line), checked by the same schema on arrival."""
    out: dict[str, object] = {}
    for section in _SECTIONS:
        part = getattr(cfg, section)
        for f in fields(part):
            value = getattr(part, f.name)
            out[f"{section}.{f.name}"] = list(value) if isinstance(value, tuple) else value
    return out
