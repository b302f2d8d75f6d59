"""The one place that decides whether the storage engine stages batches with compiled code.

``storage._stage`` (C against the CPython API, built by setup.py when a compiler is there) frames
a whole batch in one call, copying each payload once, straight into a segment's mapping. Where
it was not built (no compiler: the install still succeeds) or cannot load, or where
``CBL_PURE=1`` is set in the environment, the pure-Python functions below are used instead.
Both write the same bytes (tests/storage/test_compiled_stage.py proves it with hypothesis), so
files never depend on which path wrote them; only the CPU cost does.

Everything else imports the chosen functions from here and never ``storage._stage`` itself.
"""

from __future__ import annotations

import importlib
import os
from array import array
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import google_crc32c

from storage.format import (
    BATCH_ALIGN,
    BATCH_HEADER_SIZE,
    OFF_COMMITTED_LEN,
    OFF_STATS,
    encode_joined,
    pack_stats,
)

__all__ = [
    "COMPILED", "PATH", "PURE_ENV", "Committed", "available", "commit_lists", "crc32c",
    "frame_into", "frame_parts", "pure_commit_lists", "pure_frame_into", "select",
]

#: The environment variable that forces the pure-Python path (any value but "" and "0").
PURE_ENV = "CBL_PURE"

FrameInto = Callable[
    [object, int, int, "array[int]", "array[int]", "bytes | None", Sequence[bytes], int, int,
     int, int],
    object,
]


def _import() -> tuple[ModuleType | None, str]:
    """The compiled module if it was built and loads, and a word on it (for logs, bench)."""
    try:
        _stage = importlib.import_module("storage._stage")
    except ImportError as e:
        return None, f"storage._stage unavailable: {e}"
    crc = "SSE4.2 crc32" if _stage.hardware_crc() else "software crc"
    return _stage, f"compiled ({crc})"


def _load() -> tuple[ModuleType | None, str]:
    """The default path: the compiled module unless ``CBL_PURE`` is set or it is missing."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return None, f"pure ({PURE_ENV} set)"
    if _compiled is None:
        return None, f"pure ({_built})"
    return _compiled, _built


_compiled, _built = _import()  # the module, whatever the environment says
_default, _why = _load()
COMPILED = False
PATH = _why


def pure_frame_into(
    dest: object, at: int, offset: int, ts: array[int], lens: array[int], kinds: bytes | None,
    payloads: Sequence[bytes], first: int, last: int, payload_len: int, total: int,
) -> None:
    """The batch of :func:`format.encode_joined` written to ``dest[at:at + total]`` (two slice
    assignments: what the mmap backend would do with the two ops of the pure path)."""
    head, body = encode_joined(ts, bytes(len(lens)) if kinds is None else kinds, lens, payloads,
                               first, last, payload_len, total, offset)
    dest[at : at + 8] = head  # type: ignore[index]
    dest[at + 8 : at + total] = body  # type: ignore[index]


def _pure_parts(
    offset: int, ts: array[int], lens: array[int], kinds: bytes | None,
    payloads: Sequence[bytes], first: int, last: int, payload_len: int, total: int,
) -> tuple[bytes, ...]:
    return encode_joined(ts, bytes(len(lens)) if kinds is None else kinds, lens, payloads,
                         first, last, payload_len, total, offset)


def _compiled_parts(
    offset: int, ts: array[int], lens: array[int], kinds: bytes | None,
    payloads: Sequence[bytes], first: int, last: int, payload_len: int, total: int,
) -> tuple[bytes, ...]:
    assert _compiled is not None
    return (_compiled.frame(None, 0, offset, ts, lens, kinds, payloads, first, last,
                            payload_len, total),)


#: What :func:`commit_lists` leaves in the segment: (end, record count, first and last
#: receive time of the whole segment, the batch's payload bytes).
Committed = tuple[int, int, int, int, int]


def pure_commit_lists(
    mm: object, off: int, room: int, cap_end: int, max_total: int, day_lo: int, day_hi: int,
    count: int, first: int, last: int, ts: list[int], payloads: list[bytes],
) -> Committed | int | None:
    """The records of two lists (the sink's receive times and bytes payloads) as one v2 batch
    at ``off`` of a segment's mapping, committed there: the batch, the v2 header hints
    (``count``/``first``/``last``: the segment's before it), then the commit point. An int
    ``end`` when the segment must first be allocated (and populated) up to ``end`` past
    ``room``; None when the lists cannot be written through (a time outside ``[day_lo,
    day_hi)`` or not an i64, a payload not bytes, a batch over ``max_total`` or ending past
    ``cap_end``). Nothing is written in those two cases."""
    n = len(ts)
    if (n == 0 or len(payloads) != n or not set(map(type, payloads)) <= _BYTES
            or not set(map(type, ts)) <= _INTS):
        return None
    lo, hi = min(ts), max(ts)
    try:
        ts_col = array("q", ts)
    except OverflowError:
        return None
    if lo < day_lo or hi >= day_hi:
        return None
    lens = array("I", map(len, payloads))
    payload_len = sum(lens)
    total = (BATCH_HEADER_SIZE + 13 * n + payload_len + BATCH_ALIGN - 1) & ~(BATCH_ALIGN - 1)
    end = off + total
    if total > max_total or end > cap_end:
        return None
    if end > room:
        return end
    pure_frame_into(mm, off, off, ts_col, lens, None, payloads, lo, hi, payload_len, total)
    if count:
        lo, hi = min(lo, first), max(hi, last)
    count += n
    dest: Any = mm
    dest[OFF_STATS : OFF_STATS + 24] = pack_stats(count, lo, hi, end)
    dest[OFF_COMMITTED_LEN : OFF_COMMITTED_LEN + 8] = end.to_bytes(8, "little")
    return end, count, lo, hi, payload_len


_BYTES = frozenset({bytes})
_INTS = frozenset({int})


def _pure_crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    return int(google_crc32c.extend(crc, data))


#: Frame one v2 batch for file ``offset`` into ``dest[at:at + total]`` (a writable buffer: the
#: segment's mapping). The caller guarantees consistent columns, as for ``encode_joined``;
#: the compiled version checks sizes anyway (ValueError, nothing written).
frame_into: FrameInto = pure_frame_into

#: The same batch as byte strings to write at consecutive offsets (one for the compiled path,
#: head + body for the pure one), for backends that write through syscalls.
frame_parts: Callable[..., tuple[bytes, ...]] = _pure_parts

#: Write-through of the sink's lists into a segment (see :func:`pure_commit_lists`).
commit_lists: Callable[..., Committed | int | None] = pure_commit_lists

#: ``crc32c(data, crc=0)`` == ``google_crc32c.extend(crc, data)``.
crc32c: Callable[..., int] = _pure_crc32c


def available() -> bool:
    """Whether the compiled module was built and loads here (whatever ``CBL_PURE`` says)."""
    return _compiled is not None


def select(compiled: bool | None = None) -> str:
    """Switch the path used from now on: the compiled one (RuntimeError if it is not built),
    the pure one, or (None) the default (compiled when built, unless ``CBL_PURE`` is set).
    For the benchmark and the tests, which compare both in one process; callers look the
    functions up here at each call, so the switch takes effect at the next commit."""
    global COMPILED, PATH, commit_lists, crc32c, frame_into, frame_parts
    use = _default is not None if compiled is None else compiled
    if use and _compiled is None:
        raise RuntimeError(f"the compiled path is not available: {_why}")
    if use:
        assert _compiled is not None
        frame_into, frame_parts, crc32c = _compiled.frame, _compiled_parts, _compiled.crc32c
        commit_lists = _compiled.commit_lists
        PATH = _why if _default is not None else "compiled (selected)"
    else:
        frame_into, frame_parts, crc32c = pure_frame_into, _pure_parts, _pure_crc32c
        commit_lists = pure_commit_lists
        PATH = _why if _default is None else "pure (selected)"
    COMPILED = use
    return PATH


select()
