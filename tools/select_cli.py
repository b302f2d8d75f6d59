"""Turning what a user typed (a file, a data root, a product or channel folder) into segments.

Shared by `inspect` and `compact` so both accept the same arguments and report a missing or
foreign path the same way: one line naming the path.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

from storage import (
    ArchiveReader,
    SegmentReader,
    SegmentRef,
    iter_segments,
    open_any,
    parse_segment_path,
    validate_name,
)
from storage.source import (
    RemoteError,
    display,
    is_remote,
    list_remote_segments,
    parse_s3_url,
    remote_size,
)
from tools.console_cli import EXIT_USAGE, ToolError


def open_reader(path: Path) -> SegmentReader | ArchiveReader:
    """Open a segment or archive, or raise ToolError with one line naming the file."""
    try:
        return open_any(path)
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file", EXIT_USAGE) from None
    except IsADirectoryError:
        raise ToolError(f"{path}: is a directory, not a segment file", EXIT_USAGE) from None
    except (OSError, ValueError) as exc:
        raise ToolError(describe(path, exc)) from None


def describe(path: Path, exc: BaseException) -> str:
    """`path: what is wrong`, without repeating the path when the message already has it."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text if str(path) in text else f"{display(path)}: {text}"


def _under(root: Path, product: str | None, channel: str | None,
           skipped: list[Path] | None = None) -> list[SegmentRef]:
    try:
        return list(iter_segments(root, product=product, channel=channel, skipped=skipped))
    except ValueError as exc:  # an invalid --product/--channel name
        raise ToolError(str(exc), EXIT_USAGE) from None


def find_segments(
    target: str | os.PathLike[str], product: str | None = None, channel: str | None = None,
    skipped: list[Path] | None = None,
) -> list[SegmentRef]:
    """Segments (and archives) selected by a file, a data root, or a product/channel folder.

    A single file is accepted whatever its name (so a copied or renamed file can still be read);
    its stream is then whatever its header says. Symbolic links under a folder are not
    followed; they are appended to ``skipped``.
    """
    if is_remote(target):
        return _remote(target, product, channel)
    path = Path(target)
    if not path.exists():
        raise ToolError(f"{path}: no such file or directory", EXIT_USAGE)
    if path.is_file():
        try:
            return [parse_segment_path(path)]
        except ValueError:
            return [SegmentRef(path, "?", "?", dt.date.min, 0, path.name.endswith(".zst"))]
    found: list[Path] = []
    refs = _under(path, product, channel, found)
    if refs or found:
        if skipped is not None:
            skipped += found
        return refs
    # a product folder (<root>/<product>) or a channel folder (<root>/<product>/<channel>)?
    for parent, prod, chan in ((path.parent, path.name, channel),
                               (path.parent.parent, path.parent.name, path.name)):
        try:
            validate_name(prod, "name")
        except ValueError:
            continue
        if product in (None, prod) and channel in (None, chan):
            found = []
            refs = _under(parent, prod, chan, found)
            if refs:
                if skipped is not None:
                    skipped += found
                return refs
    return []


def _remote(
    target: str | os.PathLike[str], product: str | None, channel: str | None,
) -> list[SegmentRef]:
    """Archives under an s3:// root, product or channel prefix, or one archive object."""
    try:
        loc = parse_s3_url(target)
        if product is not None:
            validate_name(product, "product")
        if channel is not None:
            validate_name(channel, "channel")
    except ValueError as exc:
        raise ToolError(str(exc), EXIT_USAGE) from None
    refs = list_remote_segments(target, product, channel)
    if refs or not loc.key.endswith(".zst"):
        return refs
    try:  # one object named in full
        remote_size(loc.as_path())
    except FileNotFoundError:
        raise ToolError(f"{loc.url()}: no such object", EXIT_USAGE) from None
    except RemoteError as exc:
        raise ToolError(str(exc)) from None
    try:
        return [parse_segment_path(loc.as_path())._replace(path=loc.as_path())]
    except ValueError:
        return [SegmentRef(loc.as_path(), "?", "?", dt.date.min, 0, True)]
def is_multi_name(product: str) -> bool:
    """The product part of a multi-product stream: ``_multi`` (one recording process) or
    ``_multi-w<i>`` (worker i of a sharded recorder)."""
    return product == "_multi" or (product.startswith("_multi-w") and product[8:].isdigit())


def no_match(target: str | os.PathLike[str], product: str | None,
             channel: str | None) -> ToolError:
    """Nothing selected: say whether the path holds nothing or the filters match nothing."""
    if (product or channel) and find_segments(target):
        which = f"{product or '*'}/{channel or '*'}"
        return ToolError(f"{target}: no stream matches {which}", EXIT_USAGE)
    return ToolError(f"{target}: no segment files found", EXIT_USAGE)


def latest_per_segment(refs: Iterable[SegmentRef]) -> list[SegmentRef]:
    """One file per segment: while compaction runs both `X.seg` and `X.seg.zst` can exist for
    a moment; they hold the same records, so the segment is listed once (the `.seg`)."""
    seen: set[tuple[str, str, dt.date, int, Path]] = set()
    out: list[SegmentRef] = []
    for r in refs:
        key = (r.product, r.channel, r.day, r.number,
               r.path.parent if r.product != "?" else r.path)
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out
