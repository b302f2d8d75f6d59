"""Who recorded a data root: venue, dialect, software, host — and whether the last run ended.

Why: a data root must say where its bytes came from. A simulated BTC-USD price next to a real
one, or two venues' ``ticker`` streams in one tree, cannot be told apart from the records
themselves, so the root's ``.coinbase-logger.json`` names the venue (its URLs) and the dialect,
and keeps the last few runs (software version, host, start time). A recorder for another venue
or dialect is refused (exit 2) unless asked explicitly (``storage.allow_venue_change``, only
for the venue: dialects never mix, their streams have different shapes under the same names).

The same file tells a crash from a clean stop: ``running`` is written when a recorder starts
and removed when it stops cleanly, so a start that finds it still there knows the previous run
ended without closing (kill -9, power cut, OOM) and counts it in ``unclean_stops`` — the
``cbl_unclean_stops_total`` metric that the alert rules page on.

Written atomically (tmp + rename) and only inside the data root.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_DIR_META = ".coinbase-logger.json"
"""Marker file at the data root: venue, dialect, recent runs, unclean stops."""

RUNS_KEPT = 20
"""Runs remembered in the file (the oldest are dropped; the count of unclean stops is kept)."""


class DataDirError(RuntimeError):
    """The data root belongs to another venue or dialect (or its metadata is unreadable)."""


@dataclass(frozen=True, slots=True)
class Venue:
    """What a recorder is about to record: the venue's URLs and the dialect."""

    dialect: str
    ws_url: str
    rest_url: str


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a root: whether the previous run ended uncleanly, and the
    total of unclean stops this root has seen (for the metric)."""

    unclean_previous: dict[str, Any] | None
    unclean_stops: int


@functools.cache
def software_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    try:
        version = importlib.metadata.version("coinbase-logger")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    repo = Path(__file__).resolve().parent.parent
    if (repo / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=12"],
                capture_output=True, text=True, timeout=5, check=False)
            if out.returncode == 0 and out.stdout.strip():
                version += "+g" + out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return version


def read_meta(root: Path) -> dict[str, Any] | None:
    """The root's metadata, None when there is none; DataDirError when it is unreadable."""
    meta = root / DATA_DIR_META
    try:
        text = meta.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataDirError(f"{meta}: unreadable ({e.strerror}); fix or remove it") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise DataDirError(f"{meta}: unreadable (not valid JSON); fix or remove it") from None
    if not isinstance(data, dict):
        raise DataDirError(f"{meta}: unreadable (not a JSON object); fix or remove it")
    return data


def _write(root: Path, data: dict[str, Any]) -> None:
    meta = root / DATA_DIR_META
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(meta)


def _check(root: Path, data: dict[str, Any], venue: Venue, allow_venue_change: bool) -> None:
    held = data.get("dialect")
    if held != venue.dialect:
        raise DataDirError(
            f"data dir {root} holds dialect {held!r}, refusing to record {venue.dialect!r} into"
            " it (use another --data-dir)")
    known = data.get("venue")
    if not isinstance(known, dict) or allow_venue_change:
        return
    if known.get("ws_url") != venue.ws_url:
        raise DataDirError(
            f"data dir {root} holds data of venue {known.get('ws_url')!r}, refusing to record"
            f" {venue.ws_url!r} into it (use another --data-dir, or set"
            " storage.allow_venue_change = true to mix them knowingly)")


def claim(root: Path, venue: Venue, *, allow_venue_change: bool = False) -> Claim:
    """Check ``root`` may record ``venue`` and write this run into its metadata.

    Call with the root's lock free (a running recorder holds it): then a ``running`` entry left
    in the file can only be a run that ended without a clean stop.
    """
    root.mkdir(parents=True, exist_ok=True)
    data = read_meta(root)
    if data is None:
        data = {"dialect": venue.dialect, "created_ns": time.time_ns()}
    _check(root, data, venue, allow_venue_change)
    previous = data.get("running")
    unclean = previous if isinstance(previous, dict) else None
    stops = int(data.get("unclean_stops", 0)) + (1 if unclean is not None else 0)
    run = {"version": software_version(), "host": socket.gethostname(), "pid": os.getpid(),
           "started_ns": time.time_ns(), "ws_url": venue.ws_url, "rest_url": venue.rest_url}
    runs = [r for r in data.get("runs", []) if isinstance(r, dict)][-(RUNS_KEPT - 1):]
    data.update({"venue": {"ws_url": venue.ws_url, "rest_url": venue.rest_url},
                 "running": run, "runs": [*runs, run], "unclean_stops": stops})
    _write(root, data)
    return Claim(unclean, stops)


def release(root: Path) -> None:
    """Record a clean stop: the ``running`` entry goes, the run gets its ``stopped_ns``."""
    data = read_meta(root)
    if data is None or not isinstance(data.get("running"), dict):
        return
    run = data.pop("running")
    for r in data.get("runs", []):
        if isinstance(r, dict) and r.get("started_ns") == run.get("started_ns"):
            r["stopped_ns"] = time.time_ns()
    _write(root, data)


__all__ = ["DATA_DIR_META", "Claim", "DataDirError", "Venue", "claim", "read_meta", "release",
           "software_version"]
