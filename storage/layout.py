"""Where segment files live under the data root, and the names allowed in those paths.

Product ids arrive from the network, so every name that becomes a path component is validated
here, once, against a strict whitelist: a hostile id can never make the engine write outside
the data root. The scheme is ``<root>/<product>/<channel>/<YYYY-MM-DD>.<NNNN>.seg`` (NNNN: the
segment number within the UTC day, four digits) and the archive is the same path + ``.zst``.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "ARCHIVE_SUFFIX",
    "MAX_NAME_LEN",
    "MAX_SEGMENT_NUMBER",
    "QUARANTINE_DIR",
    "SEGMENT_OPEN_FLAGS",
    "SEGMENT_SUFFIX",
    "InvalidStreamName",
    "SegmentRef",
    "SymlinkRefused",
    "iter_segments",
    "parse_segment_path",
    "refuse_symlinked_dirs",
    "segment_path",
    "validate_name",
]

MAX_NAME_LEN = 64
MAX_SEGMENT_NUMBER = 9999
SEGMENT_SUFFIX = ".seg"
ARCHIVE_SUFFIX = ".seg.zst"

#: Where `compact --salvage` moves a damaged original: ``<root>/.quarantine/<product>/<channel>/``
#: (a dot name, so it is never taken for a product).
QUARANTINE_DIR = ".quarantine"

#: Flags every open of a segment file adds: a symlink is never followed (ELOOP instead), so
#: nothing outside the data root is opened through one.
SEGMENT_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", re.ASCII)
_FILE_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})\.(\d{4})\.seg(\.zst)?", re.ASCII)


class InvalidStreamName(ValueError):
    """A product or channel name that cannot safely become a path component."""


class SymlinkRefused(OSError):
    """A segment file or stream directory is a symbolic link: never written through."""


def refuse_symlinked_dirs(path: Path) -> None:
    """Raise SymlinkRefused (errno ELOOP) if the channel or product directory holding segment
    ``path`` is a symbolic link, so a write can never land outside the data root through one
    (the file itself is opened with O_NOFOLLOW). Missing directories are fine (created later
    as real directories)."""
    for d in (path.parent, path.parent.parent):
        if os.path.islink(d):
            raise SymlinkRefused(errno.ELOOP, f"{d} is a symbolic link; not followed")


def validate_name(s: str, what: str) -> str:
    """Return ``s`` unchanged if it is a safe path component, else raise InvalidStreamName.

    Allowed: 1..64 characters of ``[A-Za-z0-9._-]`` starting with a letter or a digit, without
    ``..`` (so a directory can never look like a command-line option or a hidden file). A
    leading ``_`` is allowed: it is reserved for shared streams such as ``_multi``.
    """
    if not isinstance(s, str):
        raise InvalidStreamName(f"{what} must be a str, got {type(s).__name__}: {s!r}")
    if _NAME_RE.fullmatch(s) is None:
        raise InvalidStreamName(
            f"invalid {what} {s!r}: need 1..{MAX_NAME_LEN} characters of [A-Za-z0-9._-], "
            "starting with a letter, a digit or '_'"
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


def _dirs(parent: Path, name: str | None, skipped: list[Path] | None) -> list[Path]:
    if name is not None:
        validate_name(name, "name")
        found = [parent / name]
    elif not parent.is_dir():
        return []
    else:
        found = sorted(p for p in parent.iterdir() if _NAME_RE.fullmatch(p.name))
    out = []
    for d in found:
        if d.is_symlink():
            if skipped is not None:
                skipped.append(d)
        elif d.is_dir():
            out.append(d)
    return out


def iter_segments(
    root: Path,
    product: str | None = None,
    channel: str | None = None,
    day: dt.date | None = None,
    skipped: list[Path] | None = None,
) -> Iterator[SegmentRef]:
    """Segments and archives under ``root``, sorted by (product, channel, day, number, archived).

    Files that do not follow the scheme (temporaries, foreign files) are skipped silently:
    listing must work on a live data root. Symbolic links (stream directories or segment
    files) are never followed: they are appended to ``skipped`` so a tool can say so.
    """
    refs: list[SegmentRef] = []
    for pdir in _dirs(Path(root), product, skipped):
        for cdir in _dirs(pdir, channel, skipped):
            for f in cdir.iterdir():
                try:
                    ref = parse_segment_path(f)
                except ValueError:
                    continue
                if day is not None and ref.day != day:
                    continue
                if f.is_symlink():
                    if skipped is not None:
                        skipped.append(f)
                elif f.is_file():
                    refs.append(ref)
    refs.sort(key=lambda r: (r.product, r.channel, r.day, r.number, r.archived))
    yield from refs
