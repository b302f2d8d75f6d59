"""Byte sources: where an archive's bytes come from — a local file or an S3 object.

An archive is read with positional reads only (trailer, seek table, then the frames a query
needs), so the same reader works over anything that can fetch a byte range. `CountingFile`
(storage.archive_format) is the local source; `S3Source` here is the same surface over HTTP
range requests (`GET` with `Range: bytes=a-b`), counting what it fetches so `inspect cat
--from --io-stats` shows a narrow window reads a small fraction of a large remote archive.

Remote objects are named by `s3://bucket/key` URLs. Because the tools carry file names as
`pathlib.Path` (which folds `//`), a remote name is also recognised in its folded form
`s3:/bucket/key`: `is_remote` and `parse_s3_url` accept both, and `display` turns either back
into the URL for messages. The client comes from boto3's standard chain: credentials, region
and endpoint from the environment (`AWS_ACCESS_KEY_ID`, `AWS_DEFAULT_REGION`,
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`) or ~/.aws; `configure_s3` overrides the endpoint
and region for a tool given `--endpoint-url`/`--region`. Every request has a connect and a read
timeout and a bounded number of retries, so no call can hang.

storage/ stays Coinbase-agnostic here too: this module knows objects, keys and byte ranges.
boto3 is imported lazily, so the recorder never pays for it.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.archive_format import ArchiveFormatError, CountingFile
from storage.layout import SegmentRef, parse_segment_path

S3_SCHEME = "s3://"
_FOLDED = "s3:/"
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 4
#: the most a sequential scan fetches ahead in one request (bounds the memory it holds)
READ_AHEAD_MAX = 8 << 20

__all__ = [
    "CountingFile",
    "RemoteError",
    "S3Location",
    "S3Source",
    "configure_s3",
    "describe_error",
    "display",
    "is_remote",
    "list_remote_segments",
    "open_remote",
    "parse_s3_url",
    "remote_size",
    "s3_client",
]


class RemoteError(OSError):
    """A remote object could not be listed or read (one line: what and why)."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and a key (or key prefix) without leading or trailing slashes."""

    bucket: str
    key: str

    def url(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key}" if self.key else f"{S3_SCHEME}{self.bucket}"

    def child(self, rel: str) -> S3Location:
        rel = rel.strip("/")
        return S3Location(self.bucket, f"{self.key}/{rel}" if self.key else rel)

    def as_path(self) -> Path:
        """The location as the tools carry file names (Path folds `s3://` to `s3:/`)."""
        return Path(self.url())


def is_remote(target: str | os.PathLike[str]) -> bool:
    text = os.fspath(target)
    return text.startswith(S3_SCHEME) or text.startswith(_FOLDED)


def parse_s3_url(target: str | os.PathLike[str]) -> S3Location:
    """`s3://bucket/prefix` (or its Path-folded form) → S3Location; ValueError if malformed."""
    text = os.fspath(target)
    if text.startswith(S3_SCHEME):
        rest = text[len(S3_SCHEME):]
    elif text.startswith(_FOLDED):
        rest = text[len(_FOLDED):]
    else:
        raise ValueError(f"not an s3:// URL: {text}")
    bucket, _, key = rest.partition("/")
    if not bucket or any(c in bucket for c in " \\?#"):
        raise ValueError(f"{text}: an s3:// URL needs a bucket name (s3://BUCKET/PREFIX)")
    key = key.strip("/")
    if "//" in key or any(part in (".", "..") for part in key.split("/") if key):
        raise ValueError(f"{text}: the key prefix must not hold '.', '..' or empty parts")
    return S3Location(bucket, key)


def display(path: str | os.PathLike[str]) -> str:
    """A file name for messages: a remote one as its s3:// URL."""
    return parse_s3_url(path).url() if is_remote(path) else os.fspath(path)


# --- the client -----------------------------------------------------------------------------

_lock = threading.Lock()
_settings: dict[str, str | None] = {"endpoint_url": None, "region_name": None}
_client: Any = None
_sizes: dict[tuple[str, str], int] = {}


def configure_s3(endpoint_url: str | None = None, region: str | None = None) -> None:
    """Override the endpoint or region of the standard chain (a tool's --endpoint-url)."""
    global _client
    with _lock:
        _settings["endpoint_url"] = endpoint_url
        _settings["region_name"] = region
        _client = None
        _sizes.clear()


def s3_client() -> Any:
    """One shared boto3 S3 client (thread-safe for requests), created on first use."""
    global _client
    with _lock:
        if _client is None:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                            max_pool_connections=32, s3={"addressing_style": "path"})
            kwargs = {k: v for k, v in _settings.items() if v}
            _client = boto3.session.Session().client("s3", config=config, **kwargs)
        return _client


def describe_error(exc: BaseException) -> str:
    """A boto/botocore failure as a short reason (the S3 error code and message if any)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        code = err.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = err.get("Message") or ""
        return f"{code}: {message}".rstrip(": ") if code else str(exc)
    return str(exc) or type(exc).__name__


def _botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


# --- reading an object ----------------------------------------------------------------------


class S3Source(CountingFile):
    """Positional reads of one S3 object through ranged GETs, counted like a local file's.

    It is a `CountingFile` without a descriptor (fd -1), so every archive routine that takes a
    local source takes this one unchanged. A read that starts where the previous one ended
    (reading frames one after another) fetches ahead, doubling up to READ_AHEAD_MAX, so a
    sequential scan costs few requests; a jump (a seek to a time) fetches exactly what it
    asks for. `bytes_read` counts every byte fetched, read-ahead included.
    """

    def __init__(self, location: S3Location, size: int, client: Any) -> None:
        super().__init__(-1, size)
        self.location = location
        self._client = client
        self._buf = b""
        self._buf_at = 0
        self._expect = -1
        self._ahead = 0

    def pread(self, size: int, offset: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ArchiveFormatError(
                f"read of {size} bytes past the end of the {self.size}-byte object", offset)
        sequential, self._expect = offset == self._expect, offset + size
        start = offset - self._buf_at
        if start >= 0 and start + size <= len(self._buf):
            return self._buf[start:start + size]
        self._ahead = min(max(2 * self._ahead, size), READ_AHEAD_MAX) if sequential else 0
        fetch = min(size + self._ahead, self.size - offset)
        data = self._get(offset, fetch) if fetch else b""
        self._buf, self._buf_at = data, offset
        return data[:size]

    def _get(self, offset: int, size: int) -> bytes:
        try:
            reply = self._client.get_object(Bucket=self.location.bucket, Key=self.location.key,
                                            Range=f"bytes={offset}-{offset + size - 1}")
            data: bytes = reply["Body"].read()
        except _botocore_errors() as exc:
            raise RemoteError(f"{self.location.url()}: ranged read failed: "
                              f"{describe_error(exc)}") from None
        self.bytes_read += len(data)
        self.reads += 1
        if len(data) != size:
            raise ArchiveFormatError(
                f"range read returned {len(data)} bytes, asked for {size} (object changed?)",
                offset + len(data))
        return data


def remote_size(path: str | os.PathLike[str]) -> int:
    """The object's size: from the last listing if it named it, else one HEAD request."""
    loc = parse_s3_url(path)
    cached = _sizes.get((loc.bucket, loc.key))
    if cached is not None:
        return cached
    try:
        head = s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
    except _botocore_errors() as exc:
        text = describe_error(exc)
        if text.startswith(("404", "NoSuchKey", "NotFound")):
            raise FileNotFoundError(2, "no such object", loc.url()) from None
        raise RemoteError(f"{loc.url()}: {text}") from None
    size = int(head["ContentLength"])
    _sizes[(loc.bucket, loc.key)] = size
    return size


def open_remote(path: str | os.PathLike[str]) -> S3Source:
    """A byte source for the object behind an s3:// name."""
    loc = parse_s3_url(path)
    return S3Source(loc, remote_size(path), s3_client())


# --- listing --------------------------------------------------------------------------------


def iter_objects(loc: S3Location) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under a prefix (as a folder: `prefix/`), in key order."""
    prefix = f"{loc.key}/" if loc.key else ""
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(
            Bucket=loc.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                yield str(item["Key"]), int(item["Size"])
    except _botocore_errors() as exc:
        raise RemoteError(f"{loc.url()}: cannot list: {describe_error(exc)}") from None


def list_remote_segments(
    target: str | os.PathLike[str], product: str | None = None, channel: str | None = None,
    day: dt.date | None = None,
) -> list[SegmentRef]:
    """Archives under an s3:// root, product or channel prefix, or one archive object, as
    `SegmentRef`s whose path is the object's (folded) s3 name; sorted like `iter_segments`.

    Keys that do not follow the layout are skipped, as on disk. A single object key is
    accepted whatever its name. Only archives (`.seg.zst`) are listed: live segments are
    never shipped.
    """
    loc = parse_s3_url(target)
    refs: list[SegmentRef] = []
    for key, size in iter_objects(loc):
        try:
            ref = parse_segment_path(Path(key))
        except ValueError:
            continue
        if not ref.archived or (product and ref.product != product) or (
                channel and ref.channel != channel) or (day and ref.day != day):
            continue
        _sizes[(loc.bucket, key)] = size
        refs.append(ref._replace(path=S3Location(loc.bucket, key).as_path()))
    refs.sort(key=lambda r: (r.product, r.channel, r.day, r.number))
    return refs
