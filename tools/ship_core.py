"""What `cbl-ship` does with each archive, decided without any I/O.

Given what is known about a local archive (size, SHA-256, day) and about the object of the same
key (missing, or its size and checksum), the decision is one of: upload it, leave it (the remote
copy is the same bytes), or re-upload it (the remote copy differs: a half-written or foreign or
damaged object). Retention is decided the same way: a local archive older than the kept days
may be removed, but only by the caller that has just verified the remote copy byte for byte.
Keeping this pure makes the rules testable on their own and the I/O shell (ship_cli) thin.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

#: the object metadata key holding the archive's SHA-256 (hex), for servers that do not keep
#: or return the upload's own x-amz-checksum-sha256
META_SHA256 = "cbl-sha256"


class Action(enum.Enum):
    UPLOAD = "upload"        # no object under the key
    REPLACE = "replace"      # an object is there but is not these bytes
    PRESENT = "present"      # the same bytes are there already


@dataclass(frozen=True, slots=True)
class LocalArchive:
    """One local `.seg.zst`: its path relative to the data root (the object key's tail)."""

    rel: str
    size: int
    sha256_hex: str
    day: dt.date


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """What a HEAD said about the object: size and the SHA-256 the server (or our metadata)
    holds for it; `sha256_hex` None when neither is there."""

    size: int
    sha256_hex: str | None


def object_key(prefix: str, rel: str) -> str:
    """The object key of a local file: the same layout as on disk, under the prefix."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a relative archive path: {rel!r}")
    return f"{prefix}/{rel}" if prefix else rel


def decide(local: LocalArchive, remote: RemoteObject | None) -> Action:
    """Upload when missing; replace when size or checksum differ or the checksum is unknown
    (an object whose bytes cannot be vouched for is not a copy); else present."""
    if remote is None:
        return Action.UPLOAD
    if remote.size != local.size or remote.sha256_hex != local.sha256_hex:
        return Action.REPLACE
    return Action.PRESENT


def retention_due(day: dt.date, today: dt.date, keep_local_days: int | None) -> bool:
    """Whether a local archive of `day` is past the kept window: with N kept days, the
    archives of the N days before today (and today) stay; older ones may go once verified."""
    if keep_local_days is None:
        return False
    return (today - day).days > keep_local_days


def sha256_from_b64(value: str | None) -> str | None:
    """S3's base64 `ChecksumSHA256` as hex (None stays None; a composite multipart checksum
    `...-N` is not a whole-object digest and counts as unknown)."""
    import base64
    import binascii

    if not value or "-" in value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None
