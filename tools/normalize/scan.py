"""Positional scanning of level2 frames: `book_l2` fields without a JSON parser.

Level2 frames are most of a capture and come in one fixed, compact shape per dialect. A run of
them is checked frame by frame against an anchored regular expression that admits exactly that
shape (RE2, inside Arrow: no Python object per frame); in a frame that passes, no string holds
a quote or backslash, so the n-th JSON string of the frame lies between its 2n-th and
(2n+1)-th quote, and its fields are found from the quote positions with numpy alone. A frame
that does not pass (another key order, whitespace, escapes, a snapshot of the Exchange
dialect, several events) is reported back, and the caller parses it with a JSON parser: the
scan is a shortcut for the common shape, never a second reading of JSON (tests/export
check that both give the same rows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tools.normalize.native import pure

_STR = r'"[^"\\\x00-\x1f]*"'
_INT = r"-?(?:0|[1-9][0-9]*)"
_AT_UPDATE = (r'\{"side":"(?:bid|offer)","event_time":' + _STR + r',"price_level":' + _STR
              + r',"new_quantity":' + _STR + r"\}")
#: AT l2_data with one event; `client_id` is present on the venue, absent in older captures
AT_L2 = (r'^\{"channel":"l2_data",(?:"client_id":' + _STR + r",)?" + r'"timestamp":' + _STR
         + r',"sequence_num":' + _INT + r',"events":\[\{"type":"(?:snapshot|update)",'
         + r'"product_id":' + _STR + r',"updates":\[(?:' + _AT_UPDATE + r"(?:," + _AT_UPDATE
         + r")*)?\]\}\]\}$")
_EX_CHANGE = r'\["(?:buy|sell)",' + _STR + r"," + _STR + r"\]"
#: Exchange l2update (snapshots are rare and go to the JSON parser)
EX_L2UPDATE = (r'^\{"type":"l2update","product_id":' + _STR + r',"changes":\[(?:' + _EX_CHANGE
               + r"(?:," + _EX_CHANGE + r')*)?\],"time":' + _STR + r"\}$")

QUOTE = 34
PAD = 64
_SIDES = pa.array(["offer", "bid"])
_TYPES = pa.array(["update", "snapshot"])


def frames(payloads: list[bytes]) -> tuple[pa.StringArray, np.ndarray, np.ndarray]:
    """`frames_of` for separate payloads."""
    lens = np.fromiter(map(len, payloads), np.int64, len(payloads))
    offsets = np.zeros(len(payloads) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return frames_of(b"".join(payloads), offsets)


def frames_of(blob: bytes, offsets: np.ndarray) -> tuple[pa.StringArray, np.ndarray, np.ndarray]:
    """Frames stored back to back in `blob` (frame i at offsets[i]:offsets[i + 1]) as one
    Arrow string array (UTF-8 checked), the bytes as numpy, and the offsets."""
    arr = pa.StringArray.from_buffers(len(offsets) - 1,
                                      pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(blob))
    arr.validate(full=True)  # ArrowInvalid on bytes that are not UTF-8
    # zero bytes after the last frame: `_gather` reads up to PAD bytes from a string's start
    return arr, np.frombuffer(blob + bytes(PAD), np.uint8), offsets


def fits(arr: pa.StringArray, pattern: str) -> np.ndarray:
    """Boolean mask: which frames have exactly the shape `pattern` admits."""
    mask: np.ndarray = pc.match_substring_regex(arr, pattern).to_numpy(zero_copy_only=False)
    return mask


def _gather(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray:
    """The byte ranges [starts, ends) of `buf` as one string array, made by numpy: short
    strings (the usual: prices, sizes, times) are cut from fixed-width windows at their
    starts, longer ones become Arrow string views on `buf` that Arrow's cast copies out."""
    lens = ends - starts
    width = int(lens.max()) if len(lens) else 0
    if width > PAD:
        return _views(buf, starts, lens.astype(np.int32))
    windows = np.lib.stride_tricks.as_strided(buf, (len(buf) - width + 1, width), (1, 1))
    data = windows[starts][np.arange(width)[None, :] < lens[:, None]]
    offsets = np.zeros(len(lens) + 1, np.int32)
    np.cumsum(lens, out=offsets[1:])
    return pa.StringArray.from_buffers(len(lens), pa.py_buffer(offsets), pa.py_buffer(data))


def _views(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> pa.StringArray:
    n = len(starts)
    views = np.zeros((n, 16), np.uint8)
    views.view(np.int32)[:, 0] = lens
    # 12 bytes from each start (`buf` ends with PAD zero bytes, see frames_of)
    head = np.lib.stride_tricks.as_strided(buf, (len(buf) - 11, 12), (1, 1))[starts]
    views[:, 4:] = np.where(_TWELVE[None, :] < lens[:, None], head, 0)  # inline or prefix
    long = lens > 12
    words = views.view(np.int32)
    words[long, 2] = 0  # data buffer 0 ...
    words[long, 3] = starts[long]  # ... at this offset
    arr = pa.Array.from_buffers(pa.string_view(), n, [None, pa.py_buffer(views),
                                                      pa.py_buffer(buf)])
    return arr.cast(pa.string())


_TWELVE = np.arange(12)


class _Strings:
    """The JSON strings of frames that passed `fits`: string m of frame r starts at its
    first quote `first[r] + 2m`."""

    def __init__(self, buf: np.ndarray, offsets: np.ndarray) -> None:
        self.buf = buf
        self.q = np.flatnonzero(buf[offsets[0]:offsets[-1]] == QUOTE) + offsets[0]
        self.first = np.searchsorted(self.q, offsets[:-1])
        self.count = (np.searchsorted(self.q, offsets[1:]) - self.first) // 2

    def at(self, pos: np.ndarray) -> pa.StringArray:
        """String number pos[i] (absolute: first[r] // 2 + m) of the frames."""
        return _gather(self.buf, self.q[2 * pos] + 1, self.q[2 * pos + 1])

    def char(self, pos: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.buf[self.q[2 * pos] + 1]
        return out


def at_l2(buf: np.ndarray, offsets: np.ndarray) -> dict[str, Any]:
    """Flat `book_l2` fields of AT l2_data frames that all passed `fits(arr, AT_L2)`, given the
    frames' offsets (n + 1) in `buf`:
    per frame `timestamp`, `sequence`, `type`, `product_id`; per level `rec` (its frame),
    `side`, `event_time`, `price`, `size`."""
    s = _Strings(buf, offsets)
    base = s.first // 2
    client = (s.char(base + 2) == ord("c")).astype(np.int64) * 2  # "client_id" before "timestamp"
    head = base + client  # strings: channel, l2_data, timestamp, TS, sequence_num, events, ...
    n_up = (s.count - client - 11) // 8
    rec = np.repeat(np.arange(len(n_up)), n_up)
    first_up = np.repeat(head + 11 - np.concatenate(([0], np.cumsum(n_up)[:-1])) * 8, n_up)
    up = first_up + np.arange(len(rec)) * 8  # string index of each level's "side" key
    seq_start = s.q[2 * (head + 4) + 1] + 2  # after `"sequence_num":`
    seq_end = s.q[2 * (head + 5)] - 1         # before `,"events"`
    return {
        "timestamp": s.at(head + 3), "sequence": _gather(buf, seq_start, seq_end),
        "type": _TYPES.take((s.char(head + 7) == ord("s")).astype(np.int8)),
        "product_id": s.at(head + 9), "rec": pa.array(rec),
        "side": _SIDES.take((s.char(up + 1) == ord("b")).astype(np.int8)),
        "event_time": s.at(up + 3), "price": s.at(up + 5),
        "size": s.at(up + 7)}


def ex_l2update(buf: np.ndarray, offsets: np.ndarray) -> dict[str, Any]:
    """Flat fields of Exchange l2update frames that all passed `fits(arr, EX_L2UPDATE)`
    (offsets as for at_l2):
    per frame `product_id`, `time`; per level `rec`, `side` (buy/sell), `price`, `size`."""
    s = _Strings(buf, offsets)
    base = s.first // 2  # strings: type, l2update, product_id, P, changes, (3 per level), time, T
    n = (s.count - 7) // 3
    rec = np.repeat(np.arange(len(n)), n)
    first = np.repeat(base + 5 - np.concatenate(([0], np.cumsum(n)[:-1])) * 3, n)
    lv = first + np.arange(len(rec)) * 3
    return {"product_id": s.at(base + 3), "time": s.at(base + s.count - 1),
            "rec": pa.array(rec), "side": s.at(lv), "price": s.at(lv + 1),
            "size": s.at(lv + 2)}


NativeAtL2 = Callable[[Any, Any], tuple[Any, ...]]


def _load() -> NativeAtL2 | None:
    if pure():
        return None
    try:
        from tools.normalize._scan import at_l2
    except ImportError:  # not built: the pure path
        return None
    return at_l2


#: the compiled twin of `fits` + `at_l2` (_scan.c), or None: pure path
native_at_l2: NativeAtL2 | None = _load()


class AtScan:
    """What `native_at_l2` found in a run of frames: which frames have the AT_L2 shape
    (`mask`) and, for those frames only, the fields `at_l2` gives; `fields(lo, hi)` cuts out
    the frames [lo, hi) of a stretch where every frame passed, as `at_l2` would give them."""

    def __init__(self, native: NativeAtL2, buf: np.ndarray, offsets: np.ndarray) -> None:
        (mask, snap, lev_start, rec, bid, ts, seq, product, et, price, size
         ) = native(buf, np.ascontiguousarray(offsets, np.int64))
        self.mask = np.frombuffer(mask, np.bool_)
        self._before = np.concatenate(([0], np.cumsum(self.mask)))  # fit frames before i
        self._lev = np.frombuffer(lev_start, np.int64)
        self._rec = np.frombuffer(rec, np.int64)
        nf, nl = len(snap), len(self._rec)
        self._frame = {"timestamp": _strings(ts, nf), "sequence": _strings(seq, nf),
                       "type": _TYPES.take(np.frombuffer(snap, np.int8)),
                       "product_id": _strings(product, nf)}
        self._level = {"side": _SIDES.take(np.frombuffer(bid, np.int8)),
                       "event_time": _strings(et, nl), "price": _strings(price, nl),
                       "size": _strings(size, nl)}

    def fields(self, lo: int, hi: int) -> dict[str, Any]:
        a, b = int(self._before[lo]), int(self._before[hi])
        assert b - a == hi - lo, "a stretch of frames that did not all pass"
        la, lb = int(self._lev[a]), int(self._lev[b])
        out = {k: v.slice(a, b - a) for k, v in self._frame.items()}
        out |= {k: v.slice(la, lb - la) for k, v in self._level.items()}
        out["rec"] = pa.array(self._rec[la:lb] - a)
        return out


def _strings(pair: tuple[bytes, bytes], n: int) -> pa.StringArray:
    offsets, data = pair
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
