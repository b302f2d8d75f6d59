"""Who recorded a data root, as the recorder says it: venue URLs, dialect, software version.

Why: a data root must say where its bytes came from. A simulated BTC-USD price next to a real
one, or two venues' ``ticker`` streams in one tree, cannot be told apart from the records
themselves, so the root's ``.coinbase-logger.json`` names the venue (its URLs) and the dialect,
and keeps the last few runs (software version, host, start time). A recorder for another venue
or dialect is refused (exit 2) unless asked explicitly (``storage.allow_venue_change``, only
for the venue: dialects never mix, their streams have different shapes under the same names).

The file and its rules (the claim, the clean-stop release, unclean stops counted for the
``cbl_unclean_stops_total`` metric) are storage's (``storage.provenance``), which sees the venue
as an opaque object; this module says what the recorder puts in it (``Venue``: the URLs, the
WebSocket URL as its identity) and adds the operator's hints to a refusal.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from dataclasses import dataclass
from pathlib import Path

from storage import (
    DATA_DIR_META,
    Claim,
    DataDirError,
    DialectMismatch,
    VenueMismatch,
    claim_root,
    read_meta,
    release_root,
)


@dataclass(frozen=True, slots=True)
class Venue:
    """What a recorder is about to record: the venue's URLs and the dialect."""

    dialect: str
    ws_url: str
    rest_url: str


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


def claim(root: Path, venue: Venue, *, allow_venue_change: bool = False) -> Claim:
    """Check ``root`` may record ``venue`` and write this run into its metadata
    (``storage.claim_root``: refused while a recorder holds the root)."""
    try:
        return claim_root(
            root, venue.dialect, {"ws_url": venue.ws_url, "rest_url": venue.rest_url},
            identity="ws_url", allow_venue_change=allow_venue_change,
            run={"version": software_version(), "ws_url": venue.ws_url,
                 "rest_url": venue.rest_url})
    except DialectMismatch as e:
        raise DialectMismatch(f"{e} (use another --data-dir)") from None
    except VenueMismatch as e:
        raise VenueMismatch(f"{e} (use another --data-dir, or set"
                            " storage.allow_venue_change = true to mix them knowingly)") from None


def release(root: Path) -> None:
    """Record a clean stop (``storage.release_root``)."""
    release_root(root)


__all__ = ["DATA_DIR_META", "Claim", "DataDirError", "Venue", "claim", "read_meta", "release",
           "software_version"]
