"""Who recorded a data root, and whether the last run ended: the root's ``.coinbase-logger.json``.

Why storage owns it: the root is storage's (its lock, its layout, its loss ledger), and every
reader of a root needs this file's name and rules, not only the recorder. What it says is opaque
here: a writer claims a root with a ``dialect`` (a name for the shape of its records; one per
root, never mixed, since two dialects put different records under the same stream names), a
``venue`` (a JSON object of strings saying where the records come from; its ``identity`` key
must match the root's unless the writer allows a change) and fields of its own for the run
entry. The recorder (``logger.provenance``) fills these with the Coinbase dialect and URLs.

The file keeps the last ``RUNS_KEPT`` runs (host, pid, start and stop times, plus the writer's
fields). It also tells a crash from a clean stop: ``running`` is written by ``claim_root`` and
removed by ``release_root``, so a claim that finds it still there knows the previous run ended
without closing (kill -9, power cut, OOM) and counts it in ``unclean_stops``.

Written atomically (tmp + rename) and only inside the data root.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.rootlock import LOCK_NAME, RootLock

DATA_DIR_META = ".coinbase-logger.json"
"""The root's metadata file: dialect, venue, recent runs, unclean stops."""

RUNS_KEPT = 20
"""Runs remembered in the file (the oldest are dropped; the count of unclean stops is kept)."""


class DataDirError(RuntimeError):
    """The root's metadata is unreadable, or the root belongs to another dialect or venue."""


class DialectMismatch(DataDirError):
    """The root holds records of another dialect (never allowed)."""


class VenueMismatch(DataDirError):
    """The root holds records of another venue (allowed only when the writer says so)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a root: whether the previous run ended uncleanly, and the
    total of unclean stops this root has seen (for the metric)."""

    unclean_previous: dict[str, Any] | None
    unclean_stops: int


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


def _check(root: Path, data: dict[str, Any], dialect: str, venue: Mapping[str, str],
           identity: str, allow_venue_change: bool) -> None:
    held = data.get("dialect")
    if held != dialect:
        raise DialectMismatch(
            f"data dir {root} holds dialect {held!r}, refusing to record {dialect!r} into it")
    known = data.get("venue")
    if not isinstance(known, dict) or allow_venue_change:
        return
    if known.get(identity) != venue.get(identity):
        raise VenueMismatch(
            f"data dir {root} holds data of venue {known.get(identity)!r}, refusing to record"
            f" {venue.get(identity)!r} into it")


def claim_root(root: Path, dialect: str, venue: Mapping[str, str], *, identity: str,
               run: Mapping[str, object], allow_venue_change: bool = False) -> Claim:
    """Check ``root`` may take records of ``dialect`` from ``venue`` and write this run
    (``run``'s fields plus host, pid and start time) into its metadata.

    Refused with ``RootInUse`` while a writer holds the root's lock: then a ``running`` entry
    left in the file can only be a run that ended without a clean stop."""
    root.mkdir(parents=True, exist_ok=True)
    RootLock(root, LOCK_NAME).release()  # a running writer holds it: refuse early
    data = read_meta(root)
    if data is None:
        data = {"dialect": dialect, "created_ns": time.time_ns()}
    _check(root, data, dialect, venue, identity, allow_venue_change)
    previous = data.get("running")
    unclean = previous if isinstance(previous, dict) else None
    stops = int(data.get("unclean_stops", 0)) + (1 if unclean is not None else 0)
    entry = {**run, "host": socket.gethostname(), "pid": os.getpid(),
             "started_ns": time.time_ns()}
    runs = [r for r in data.get("runs", []) if isinstance(r, dict)][-(RUNS_KEPT - 1):]
    data.update({"venue": dict(venue), "running": entry, "runs": [*runs, entry],
                 "unclean_stops": stops})
    _write(root, data)
    return Claim(unclean, stops)


def release_root(root: Path) -> None:
    """Record a clean stop: the ``running`` entry goes, the run gets its ``stopped_ns``."""
    data = read_meta(root)
    if data is None or not isinstance(data.get("running"), dict):
        return
    run = data.pop("running")
    for r in data.get("runs", []):
        if isinstance(r, dict) and r.get("started_ns") == run.get("started_ns"):
            r["stopped_ns"] = time.time_ns()
    _write(root, data)


__all__ = ["DATA_DIR_META", "RUNS_KEPT", "Claim", "DataDirError", "DialectMismatch",
           "VenueMismatch", "claim_root", "read_meta", "release_root"]
