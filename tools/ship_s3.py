"""The I/O of `cbl-ship`: hashing local archives, S3 requests, read-back checks, safe removal.

Integrity end to end, in three steps:
1. the upload carries the archive's SHA-256 as `x-amz-checksum-sha256`; a server that supports
   it (AWS S3, SeaweedFS, MinIO, ...) refuses the PUT with BadDigest if the bytes it received
   differ, and keeps the checksum, which HEAD returns (`ChecksumMode=ENABLED`). The same digest
   is stored as object metadata for servers that do not keep checksums;
2. after the upload the archive's trailer, seek table and header frame are read back from the
   object with range requests and must equal the local ones;
3. before a local archive is removed (retention), the whole object is read back and its
   SHA-256 must equal the local file's: nothing is deleted on the word of metadata alone.

A PUT is atomic on S3: an interrupted upload leaves no object (or the previous one), so a
re-run decides again from HEAD and uploads only what is missing or differs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from storage import ArchiveReader
from storage.source import CountingFile, S3Location, S3Source, describe_error
from tools.ship_core import META_SHA256, RemoteObject, sha256_from_b64

CHUNK = 1 << 20
#: the largest single PUT S3 accepts; a segment (1 GiB by default) compresses far below it
MAX_PUT_BYTES = 5 * (1 << 30)


class ShipError(Exception):
    """One archive could not be shipped or checked; the message says which step and why."""


def _botocore_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def open_regular(path: Path) -> int:
    """A read-only descriptor on a regular file, refusing symlinks (never followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ShipError(f"{path}: not a regular file")
    return fd


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a local file, read in 1 MiB chunks (bounded memory)."""
    fd = open_regular(path)
    digest = hashlib.sha256()
    size = 0
    try:
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def head(client: Any, loc: S3Location) -> RemoteObject | None:
    """Size and SHA-256 of the object, or None when there is none."""
    try:
        reply = client.head_object(Bucket=loc.bucket, Key=loc.key, ChecksumMode="ENABLED")
    except _botocore_errors() as exc:
        text = describe_error(exc)
        if text.startswith(("404", "NoSuchKey", "NotFound")):
            return None
        raise ShipError(f"{loc.url()}: HEAD failed: {text}") from None
    sha = sha256_from_b64(reply.get("ChecksumSHA256"))
    if sha is None:
        meta = reply.get("Metadata") or {}
        sha = meta.get(META_SHA256)
    return RemoteObject(int(reply["ContentLength"]), sha)


def upload(client: Any, loc: S3Location, path: Path, size: int, sha256_hex: str) -> None:
    """One PUT of the file with its SHA-256 for the server to check."""
    if size > MAX_PUT_BYTES:
        raise ShipError(f"{path}: {size} bytes is over the {MAX_PUT_BYTES}-byte single-PUT "
                        "limit (lower storage.segment_max_bytes)")
    checksum = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as body:
            client.put_object(Bucket=loc.bucket, Key=loc.key, Body=body, ContentLength=size,
                              ChecksumSHA256=checksum, Metadata={META_SHA256: sha256_hex},
                              ContentType="application/zstd")
    except _botocore_errors() as exc:
        raise ShipError(f"{path} -> {loc.url()}: upload failed: {describe_error(exc)}") from None
    finally:
        os.close(fd)


def check_table(client: Any, loc: S3Location, path: Path, size: int) -> int:
    """Read the object's trailer, seek table and header frame back with range requests and
    compare them with the local archive's; returns the bytes fetched."""
    fd = open_regular(path)
    try:
        local = ArchiveReader.from_source(path, CountingFile(fd, os.fstat(fd).st_size))
        src = S3Source(loc, size, client)
        try:
            remote = ArchiveReader.from_source(loc.as_path(), src)
        except (OSError, ValueError) as exc:
            raise ShipError(f"{loc.url()}: read-back failed: {exc}") from None
        if (remote.table.frames, remote.table.table_offset, remote.table.file_size) != (
                local.table.frames, local.table.table_offset, local.table.file_size):
            raise ShipError(f"{loc.url()}: the seek table read back differs from {path}'s")
        if remote.header != local.header:
            raise ShipError(f"{loc.url()}: the header read back differs from {path}'s")
        return src.bytes_read
    finally:
        os.close(fd)


def check_full(client: Any, loc: S3Location, sha256_hex: str) -> int:
    """Stream the whole object and compare its SHA-256; returns the bytes read."""
    digest = hashlib.sha256()
    size = 0
    try:
        body = client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
        for chunk in body.iter_chunks(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    except _botocore_errors() as exc:
        raise ShipError(f"{loc.url()}: read-back failed: {describe_error(exc)}") from None
    if digest.hexdigest() != sha256_hex:
        raise ShipError(f"{loc.url()}: the object's bytes differ from the local archive "
                        "(SHA-256 mismatch)")
    return size


def remove_local(root: Path, path: Path) -> None:
    """Unlink an archive inside the data root (a regular file, never through a symlink),
    then fsync its folder so the removal is durable."""
    real_root = root.resolve()
    parent = path.parent.resolve()
    if real_root != parent and real_root not in parent.parents:
        raise ShipError(f"{path}: outside the data root {root}; not removed")
    target = parent / path.name
    if not stat.S_ISREG(os.lstat(target).st_mode):
        raise ShipError(f"{path}: not a regular file; not removed")
    os.unlink(target)
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
