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

import google_crc32c

from storage.format import encode_joined

__all__ = [
    "COMPILED", "PATH", "PURE_ENV", "available", "crc32c", "frame_into", "frame_parts",
    "pure_frame_into", "select",
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


def _pure_crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    return int(google_crc32c.extend(crc, data))


#: Frame one v2 batch for file ``offset`` into ``dest[at:at + total]`` (a writable buffer: the
#: segment's mapping). The caller guarantees consistent columns, as for ``encode_joined``;
#: the compiled version checks sizes anyway (ValueError, nothing written).
frame_into: FrameInto = pure_frame_into

#: The same batch as byte strings to write at consecutive offsets (one for the compiled path,
#: head + body for the pure one), for backends that write through syscalls.
frame_parts: Callable[..., tuple[bytes, ...]] = _pure_parts

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
    global COMPILED, PATH, crc32c, frame_into, frame_parts
    use = _default is not None if compiled is None else compiled
    if use and _compiled is None:
        raise RuntimeError(f"the compiled path is not available: {_why}")
    if use:
        assert _compiled is not None
        frame_into, frame_parts, crc32c = _compiled.frame, _compiled_parts, _compiled.crc32c
        PATH = _why if _default is not None else "compiled (selected)"
    else:
        frame_into, frame_parts, crc32c = pure_frame_into, _pure_parts, _pure_crc32c
        PATH = _why if _default is None else "pure (selected)"
    COMPILED = use
    return PATH


select()
