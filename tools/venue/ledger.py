"""The ledger: what the venue actually wrote, per connection and frame, plus every fault.

A test proves the daemon stored exactly what was sent by hashing the stored payloads of a
stream and comparing them with the ledger's ``sha256`` column, and proves it marked exactly the
injected gaps by comparing its GAP markers with the ledger's fault lines.

JSON lines, three kinds:

- frame: ``{"conn", "i", "channel", "products", "seq", "len", "sha256"}`` — one per frame
  handed to the socket (``i`` counts frames on that connection from 0, ``channel`` is the
  channel as on the wire, ``seq`` the AT ``sequence_num`` / Exchange ``sequence`` or null);
- fault: ``{"conn", "fault", "at_i", ...details}`` — an injected fault, at frame index ``at_i``;
- event: ``{"conn", "event", "at_i", ...details}`` — the venue enforcing a limit
  (``subscribe_timeout``, ``slow_consumer``, ``inbound_too_big``, ``connect_refused``,
  ``l2_cap_refused``) or the client closing (``client_close``).

Frames a slow consumer never received (they sat in the send buffer when the venue dropped it)
are still in the ledger; the ``slow_consumer`` event gives ``unsent_bytes`` so a test knows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import orjson

FAULT_KINDS = ("seq_skip", "close", "abnormal_close", "stall", "malformed", "oversize",
               "error_reply", "hostile_product", "ping_flood", "slow_rest")
_FLUSH_LINES = 8192


class FrameEntry(NamedTuple):
    conn: int
    i: int
    channel: str
    products: list[str]
    seq: int | None
    len: int
    sha256: str


class Ledger:
    """Append-only ledger; in memory, or streamed to a JSONL file when `path` is given."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lines: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._flushed = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")

    # -- writing (venue side) -----------------------------------------------------------------
    def frame(self, conn: int, i: int, channel: str, products: Iterable[str], seq: int | None,
              data: bytes) -> None:
        self._lines.append(
            b'{"conn":%d,"i":%d,"channel":%s,"products":%s,"seq":%s,"len":%d,"sha256":"%s"}\n'
            % (conn, i, orjson.dumps(channel), orjson.dumps(list(products)),
               b"null" if seq is None else b"%d" % seq, len(data),
               hashlib.sha256(data).hexdigest().encode()))
        if self._file is not None and len(self._lines) >= _FLUSH_LINES:
            self.flush()

    def frame_parts(self, conn: int, i: int, channel: str, products: Iterable[str],
                    seq: int | None, parts: tuple[bytes, ...], length: int) -> None:
        """`frame` for a payload given as the pieces it is written in (no concatenation)."""
        h = hashlib.sha256()
        for p in parts:
            h.update(p)
        self._lines.append(
            b'{"conn":%d,"i":%d,"channel":%s,"products":%s,"seq":%s,"len":%d,"sha256":"%s"}\n'
            % (conn, i, orjson.dumps(channel), orjson.dumps(list(products)),
               b"null" if seq is None else b"%d" % seq, length, h.hexdigest().encode()))
        if self._file is not None and len(self._lines) >= _FLUSH_LINES:
            self.flush()

    def fault(self, conn: int, kind: str, at_i: int, **details: Any) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        self._lines.append(orjson.dumps({"conn": conn, "fault": kind, "at_i": at_i, **details})
                           + b"\n")

    def event(self, conn: int, kind: str, at_i: int, **details: Any) -> None:
        self._lines.append(orjson.dumps({"conn": conn, "event": kind, "at_i": at_i, **details})
                           + b"\n")

    def flush(self) -> None:
        """Write pending lines to the file (no-op for an in-memory ledger)."""
        if self._file is None:
            return
        self._file.write(b"".join(self._lines))
        self._file.flush()
        self._flushed += len(self._lines)
        self._lines.clear()

    def close(self) -> None:
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    # -- reading (test side) ------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str) -> Ledger:
        """Read a ledger file written by a venue (``--ledger PATH``)."""
        led = cls()
        with open(path, "rb") as f:
            led._lines = [line for line in f if line.strip()]
        return led

    def _all_lines(self) -> list[bytes]:
        if self.path is None or self._file is None:
            return self._lines
        self.flush()
        with self.path.open("rb") as f:
            return [line for line in f if line.strip()]

    def records(self) -> Iterator[dict[str, Any]]:
        for line in self._all_lines():
            obj = orjson.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"ledger line is not an object: {line[:80]!r}")
            yield obj

    def frames(self, conn: int | None = None) -> list[FrameEntry]:
        return [FrameEntry(r["conn"], r["i"], r["channel"], r["products"], r["seq"], r["len"],
                           r["sha256"])
                for r in self.records()
                if "sha256" in r and (conn is None or r["conn"] == conn)]

    def faults(self, conn: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records()
                if "fault" in r and (conn is None or r["conn"] == conn)]

    def events(self, conn: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records()
                if "event" in r and (conn is None or r["conn"] == conn)]

    def conns(self) -> list[int]:
        return sorted({r["conn"] for r in self.records() if "sha256" in r})


def digest(data: bytes) -> str:
    """The ledger's per-frame digest of a payload (what a test computes on stored bytes)."""
    return hashlib.sha256(data).hexdigest()
