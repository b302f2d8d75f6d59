"""The compiled scan of AT l2_data frames (_scan.c) admits exactly the frames the pure path's
regular expression admits and cuts out the same fields, and `columnar.book_l2` gives the same
rows with it as without it (`CBL_PURE=1`).

Frames are the venue's compact shape, then mutated byte by byte (quotes, backslashes, control
and non-ASCII characters, digits, signs, truncation) so that many fail the shape somewhere.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.normalize import columnar, scan

_scan = pytest.importorskip("tools.normalize._scan", reason="compiled scan not built")

PRODUCT = "BTC-USD"
decimals = st.builds(lambda i, f: f"{i}.{f}" if f else str(i), st.integers(0, 10**9),
                     st.sampled_from(["", "0", "5", "25", "00000001", "123456789012"]))
times = st.sampled_from(["2026-01-02T00:00:00.001000000Z", "2026-01-02T23:59:59.999999Z",
                         "1970-01-01T00:00:00Z", "", "é"])
#: bytes a mutation writes: JSON punctuation, string breakers, digits, UTF-8 lead/tail bytes
noise = st.sampled_from([b'"', b"\\", b"\x00", b"\x1f", b"\x7f", b"0", b"-", b"9", b",", b"{",
                         b"}", b"[", b"]", b":", b" ", b"a", "é".encode(), b"bid", b"offer"])


@st.composite
def at_frame(draw: st.DrawFn) -> bytes:
    ups = [{"side": draw(st.sampled_from(["bid", "offer"])), "event_time": draw(times),
            "price_level": draw(decimals), "new_quantity": draw(decimals)}
           for _ in range(draw(st.integers(0, 4)))]
    head: dict[str, object] = {"channel": "l2_data"}
    if draw(st.booleans()):
        head["client_id"] = draw(st.sampled_from(["", "abc"]))
    msg = head | {"timestamp": draw(times),
                  "sequence_num": draw(st.integers(-(2**63), 2**64)),
                  "events": [{"type": draw(st.sampled_from(["snapshot", "update"])),
                              "product_id": draw(st.sampled_from([PRODUCT, "", "ETH-USD"])),
                              "updates": ups}]}
    raw = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()
    for _ in range(draw(st.integers(0, 2))):  # mutations: replace, insert, delete, cut
        at = draw(st.integers(0, len(raw)))
        how = draw(st.integers(0, 3))
        if how == 0:
            raw = raw[:at] + draw(noise) + raw[at + 1:]
        elif how == 1:
            raw = raw[:at] + draw(noise) + raw[at:]
        elif how == 2:
            raw = raw[:at] + raw[at + 1:]
        else:
            raw = raw[:at]
    return raw


def _utf8(frames: list[bytes]) -> list[bytes]:
    out = []
    for f in frames:
        try:
            f.decode()
        except UnicodeDecodeError:
            continue  # scan.frames_of refuses the run before either scan sees it
        out.append(f)
    return out or [b"{}"]


@settings(max_examples=400, deadline=None)
@given(st.lists(at_frame(), min_size=1, max_size=10))
def test_native_mask_and_fields_equal_the_pure_scan(frames: list[bytes]) -> None:
    arr, buf, offsets = scan.frames(_utf8(frames))
    want = scan.fits(arr, scan.AT_L2)
    got = scan.AtScan(_scan.at_l2, buf, offsets)
    assert got.mask.tolist() == want.tolist()
    for lo, hi, fit in columnar._stretches(want):
        if fit:
            pure = scan.at_l2(buf, offsets[lo:hi + 1])
            native = got.fields(lo, hi)
            assert native.keys() == pure.keys()
            for k in pure:
                assert native[k].to_pylist() == pure[k].to_pylist(), k


@settings(max_examples=200, deadline=None)
@given(st.lists(at_frame(), min_size=1, max_size=10), st.booleans())
def test_book_l2_rows_equal_with_and_without_native(frames: list[bytes], floats: bool) -> None:
    frames = _utf8(frames)
    ts = list(range(len(frames)))
    with_native = columnar.book_l2(frames, ts, PRODUCT, floats)
    saved, scan.native_at_l2 = scan.native_at_l2, None
    try:
        pure = columnar.book_l2(frames, ts, PRODUCT, floats)
    finally:
        scan.native_at_l2 = saved
    assert (with_native is None) == (pure is None)
    if with_native is not None and pure is not None:
        assert with_native.equals(pure)
        assert with_native.to_pylist() == pure.to_pylist()


def test_offsets_outside_the_buffer_are_refused() -> None:
    import numpy as np
    with pytest.raises(ValueError):
        _scan.at_l2(b"{}", np.array([0, 5], np.int64))
