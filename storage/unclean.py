"""What an engine leaves in its root so that the next one can mark what a crash or a failed
shutdown may have lost (docs/FORMAT.md, "Unclean shutdown").

Two small files per engine, next to its lock (``.lock`` → ``.live`` and ``.loss``;
``.lock.w0`` → ``.live.w0`` and ``.loss.w0``), both preallocated when the engine opens so
that writing them later needs no new disk block (a full disk is exactly when they matter):

- the **live journal** lists every stream the engine was handed in this run, one
  ``product<TAB>channel`` line each, written once per stream when its handle is created or
  when its writer first *declares* it (``Engine.declare``, from any thread: the logger does so
  the moment a stream's first frame is received, before it could be lost in memory, so a
  crash in a stream's first commit window is marked too). A clean close removes it after
  sealing everything, so finding one at open means the run that
  wrote it ended without closing its streams (crash, ``kill -9``, power loss): each of them gets
  a ``RESTART`` marker at the time of its last committed record.
- the **loss ledger** is written (and fsynced) only by a close that could not commit
  everything (full disk, EIO until the shutdown deadline): one line per stream with the DATA
  records lost and their first and last receive time, and each marker record that could not
  be written, verbatim. The next engine turns each loss line into a ``DROPPED`` marker at the
  time of the first lost record and writes the carried markers as they were.

Why files and not a marker written at close: at close the disk is full, and the lost records'
stream may not be writable at all; the next run is where space is known to be back.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import json
import logging
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from storage.format import HEADER_SIZE, CorruptSegment, ForeignFile, decode_header
from storage.layout import InvalidStreamName, SegmentRef, iter_segments, validate_name
from storage.recovery import recover_buffer
from storage.rootlock import LOCK_NAME

__all__ = [
    "Carried", "LiveJournal", "LossEntry",
    "ReservedFile",
    "StreamKey",
    "last_committed_ts",
    "live_name",
    "loss_name",
    "read_loss",
    "read_streams",
    "restart_payload",
    "unclean_files",
    "unsealed_segments",
]

log = logging.getLogger("storage.unclean")

StreamKey = tuple[str, str]

#: Bytes preallocated for each file: ~4 000 journal lines of 60 bytes, ~2 000 loss lines.
RESERVE_BYTES = 256 << 10


def live_name(lock_name: str) -> str:
    """``.lock`` → ``.live``, ``.lock.w0`` → ``.live.w0``."""
    return ".live" + lock_name[len(LOCK_NAME):]


def loss_name(lock_name: str) -> str:
    return ".loss" + lock_name[len(LOCK_NAME):]


def unclean_files(root: Path) -> tuple[list[Path], list[Path]]:
    """Every live journal and loss ledger directly in ``root`` (any engine's), sorted."""
    lives: list[Path] = []
    losses: list[Path] = []
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return [], []
    for name in names:
        for prefix, out in ((".live", lives), (".loss", losses)):
            if name == prefix or name.startswith(prefix + "."):
                path = root / name
                if not path.is_symlink() and path.is_file():
                    out.append(path)
    return lives, losses


class ReservedFile:
    """A preallocated file written as lines with ``pwrite`` (no new block needed until the
    reserve is used up); what was written ends at the first NUL byte."""

    def __init__(self, path: Path, reserve: int = RESERVE_BYTES) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o644)
        try:
            with contextlib.suppress(OSError):  # no reserve: lines are still tried
                os.posix_fallocate(fd, 0, reserve)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.end = 0

    def append(self, lines: bytes) -> None:
        """Write ``lines`` after what is there (OSError when the disk is full past the
        reserve; the caller logs it)."""
        os.pwrite(self.fd, lines, self.end)
        self.end += len(lines)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self, remove: bool) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if remove:
            self.path.unlink(missing_ok=True)


class LiveJournal:
    """The live journal: each stream once, from whichever thread first names it (the engine's
    owner, or the logger's receive path declaring a stream before its first commit). The lock
    is taken once per new stream, never per record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = ReservedFile(path)
        self._lock = threading.Lock()
        self._named: set[StreamKey] = set()

    def declare(self, product: str, channel: str) -> None:
        """Add the stream (names already validated) unless it is there. A write error is
        logged, not raised: the stream's unsealed segment still names it after a crash."""
        key = (product, channel)
        if key in self._named:
            return
        with self._lock:
            if key in self._named or self._file.fd < 0:
                return
            self._named.add(key)
            try:
                self._file.append(f"{product}\t{channel}\n".encode())
            except OSError as e:
                log.error("cannot add %s/%s to %s: %s", product, channel, self.path, e)

    def close(self, remove: bool) -> None:
        with self._lock:
            self._file.close(remove)


def _lines(path: Path) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            data = f.read(16 << 20)
    except OSError as e:
        log.error("cannot read %s: %s", path, e)
        return []
    return data.split(b"\x00", 1)[0].splitlines()


def _valid(product: str, channel: str) -> bool:
    try:
        validate_name(product, "product")
        validate_name(channel, "channel")
    except InvalidStreamName:
        return False
    return True


def read_streams(path: Path) -> set[StreamKey]:
    """The streams a live journal lists (lines that do not hold two valid names are skipped:
    a torn last line after a power loss)."""
    out: set[StreamKey] = set()
    for line in _lines(path):
        parts = line.decode("utf-8", "replace").split("\t")
        if len(parts) == 2 and _valid(parts[0], parts[1]):
            out.add((parts[0], parts[1]))
    return out


@dataclass(frozen=True, slots=True)
class LossEntry:
    """Records a close could not commit, for one stream."""

    product: str
    channel: str
    records: int
    first_ts_ns: int
    last_ts_ns: int
    errno: int | None

    def line(self) -> bytes:
        return json.dumps({"product": self.product, "channel": self.channel,
                           "records": self.records, "first_ts_ns": self.first_ts_ns,
                           "last_ts_ns": self.last_ts_ns, "errno": self.errno},
                          separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class Carried:
    """A marker record a close could not commit, carried over to the next run as it was."""

    product: str
    channel: str
    kind: int
    ts_ns: int
    payload: bytes

    def line(self) -> bytes:
        return json.dumps({"product": self.product, "channel": self.channel, "kind": self.kind,
                           "ts_ns": self.ts_ns,
                           "payload": self.payload.decode("utf-8", "replace")},
                          separators=(",", ":")).encode() + b"\n"


def read_loss(path: Path) -> list[LossEntry | Carried]:
    out: list[LossEntry | Carried] = []
    for line in _lines(path):
        try:
            d = json.loads(line)
            e: LossEntry | Carried
            if "kind" in d:
                e = Carried(str(d["product"]), str(d["channel"]), int(d["kind"]) & 0xFF,
                            int(d["ts_ns"]), str(d["payload"]).encode())
            else:
                e = LossEntry(str(d["product"]), str(d["channel"]), int(d["records"]),
                              int(d["first_ts_ns"]), int(d["last_ts_ns"]),
                              None if d.get("errno") is None else int(d["errno"]))
        except (ValueError, KeyError, TypeError):
            log.error("skipping an unreadable line of %s: %r", path, line[:200])
            continue
        if _valid(e.product, e.channel):
            out.append(e)
    return out


def unsealed_segments(root: Path) -> list[SegmentRef]:
    """Every unsealed segment under ``root`` (reads one header per segment): only a crash
    leaves one, since a clean close seals every segment it opened."""
    out: list[SegmentRef] = []
    for ref in iter_segments(root):
        if ref.archived:
            continue
        try:
            with open(ref.path, "rb") as f:
                sealed = decode_header(f.read(HEADER_SIZE)).sealed
        except (OSError, CorruptSegment, ForeignFile):
            continue
        if not sealed:
            out.append(ref)
    return out


def last_committed_ts(root: Path, product: str, channel: str) -> int | None:
    """The receive time of the stream's last committed record: from the newest segment that
    holds one (an unsealed one is recovered, CRCs checked, since its header statistics may
    be one commit ahead of its commit point); None when no segment holds a record."""
    refs = [r for r in iter_segments(root, product, channel) if not r.archived]
    for ref in sorted(refs, key=lambda r: (r.day, r.number), reverse=True):
        try:
            with open(ref.path, "rb") as f:
                header = decode_header(f.read(HEADER_SIZE))
                if header.sealed:
                    if header.record_count:
                        return header.last_ts_ns
                    continue
                size = os.fstat(f.fileno()).st_size
                with mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
                    rec = recover_buffer(mm)
        except (OSError, CorruptSegment, ForeignFile) as e:
            if getattr(e, "errno", None) != errno_mod.ENOENT:
                log.warning("cannot read %s for its last record: %s", ref.path, e)
            continue
        if rec.record_count:
            return rec.last_ts_ns
    return None


def restart_payload(last_ts_ns: int | None, restart_ns: int) -> bytes:
    """The RESTART marker's JSON: what may be missing, from when to when, and why."""
    return json.dumps({
        "reason": "unclean_shutdown",
        "cause": "the previous run ended without closing this stream (crash, kill -9 or "
                 "power loss): records received after from_ts_ns may be missing",
        "from_ts_ns": last_ts_ns, "to_ts_ns": restart_ns,
    }, separators=(",", ":"), sort_keys=True).encode()
