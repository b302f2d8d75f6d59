"""Where segment files live under the data root, and the names allowed in those paths.

Product ids arrive from the network, so every name that becomes a path component is validated
here, once, against a strict whitelist: a hostile id can never make the engine write outside
the data root. The scheme is ``<root>/<product>/<channel>/<YYYY-MM-DD>.<NNNN>.seg`` (NNNN: the
segment number within the UTC day, four digits) and the archive is the same path + ``.zst``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "ARCHIVE_SUFFIX",
    "MAX_NAME_LEN",
    "MAX_SEGMENT_NUMBER",
    "SEGMENT_SUFFIX",
    "InvalidStreamName",
    "SegmentRef",
    "iter_segments",
    "parse_segment_path",
    "segment_path",
    "validate_name",
]

MAX_NAME_LEN = 64
MAX_SEGMENT_NUMBER = 9999
SEGMENT_SUFFIX = ".seg"
ARCHIVE_SUFFIX = ".seg.zst"

_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_FILE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\.(\d{4})\.seg(\.zst)?", re.ASCII)


class InvalidStreamName(ValueError):
    """A product or channel name that cannot safely become a path component."""


def validate_name(s: str, what: str) -> str:
    """Return ``s`` unchanged if it is a safe path component, else raise InvalidStreamName.

    Allowed: 1..64 characters of ``[A-Za-z0-9._-]``, not starting with ``.``, without ``..``.
    A leading ``_`` is allowed (reserved for shared streams such as ``_multi``).
    """
    if not isinstance(s, str):
        raise InvalidStreamName(f"{what} must be a str, got {type(s).__name__}: {s!r}")
    if _NAME_RE.fullmatch(s) is None:
        raise InvalidStreamName(
            f"invalid {what} {s!r}: need 1..{MAX_NAME_LEN} characters of [A-Za-z0-9._-]"
        )
    if s.startswith(".") or ".." in s:
        raise InvalidStreamName(f"invalid {what} {s!r}: must not start with '.' or contain '..'")
    return s


class SegmentRef(NamedTuple):
    """One segment (or its archive) found under a data root."""

    path: Path
    product: str
    channel: str
    day: dt.date
    number: int
    archived: bool


def segment_path(root: Path, product: str, channel: str, day: dt.date, number: int) -> Path:
    """The path of segment ``number`` of ``day`` for a stream; names are validated here."""
    validate_name(product, "product")
    validate_name(channel, "channel")
    if not 0 <= number <= MAX_SEGMENT_NUMBER:
        raise ValueError(f"segment number {number} outside 0..{MAX_SEGMENT_NUMBER}")
    return Path(root) / product / channel / f"{day.isoformat()}.{number:04d}{SEGMENT_SUFFIX}"


def parse_segment_path(path: Path) -> SegmentRef:
    """Decode a segment or archive path; ValueError if it does not follow the scheme."""
    path = Path(path)
    m = _FILE_RE.fullmatch(path.name)
    if m is None:
        raise ValueError(f"not a segment file name: {path}")
    product, channel = path.parent.parent.name, path.parent.name
    validate_name(product, "product")
    validate_name(channel, "channel")
    try:
        day = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError as e:
        raise ValueError(f"not a segment file name (bad date): {path}") from e
    return SegmentRef(path, product, channel, day, int(m.group(4)), m.group(5) is not None)


def _dirs(parent: Path, name: str | None) -> list[Path]:
    if name is not None:
        validate_name(name, "name")
        d = parent / name
        return [d] if d.is_dir() else []
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and _NAME_RE.fullmatch(p.name))


def iter_segments(
    root: Path,
    product: str | None = None,
    channel: str | None = None,
    day: dt.date | None = None,
) -> Iterator[SegmentRef]:
    """Segments and archives under ``root``, sorted by (product, channel, day, number, archived).

    Files that do not follow the scheme (temporaries, foreign files) are skipped silently:
    listing must work on a live data root.
    """
    refs: list[SegmentRef] = []
    for pdir in _dirs(Path(root), product):
        for cdir in _dirs(pdir, channel):
            for f in cdir.iterdir():
                try:
                    ref = parse_segment_path(f)
                except ValueError:
                    continue
                if (day is None or ref.day == day) and f.is_file():
                    refs.append(ref)
    refs.sort(key=lambda r: (r.product, r.channel, r.day, r.number, r.archived))
    yield from refs
