"""The positional scan of level2 frames (scan.py) gives the rows Arrow's JSON reader gives.

Frames are generated in the venue's compact shape (which the scan takes) and perturbed
(whitespace, key order, escapes, a second event) so that some go to the JSON reader: the
rows of a run must equal those of the JSON reader path frame for frame, and in order.
"""

from __future__ import annotations

import json

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.normalize import columnar, scan

PRODUCT = "BTC-USD"
decimals = st.builds(lambda i, f: f"{i}.{f}" if f else str(i), st.integers(0, 10**9),
                     st.sampled_from(["", "0", "5", "25", "00000001", "123456789012"]))
times = st.sampled_from(["2026-01-02T00:00:00.001000000Z", "2026-01-02T23:59:59.999999Z",
                         "1970-01-01T00:00:00Z"])


@st.composite
def at_frame(draw: st.DrawFn) -> bytes:
    ups = [{"side": draw(st.sampled_from(["bid", "offer"])), "event_time": draw(times),
            "price_level": draw(decimals), "new_quantity": draw(decimals)}
           for _ in range(draw(st.integers(0, 5)))]
    head: dict[str, object] = {"channel": "l2_data"}
    if draw(st.booleans()):
        head["client_id"] = draw(st.sampled_from(["", "abc", 'q"uote']))
    events = [{"type": draw(st.sampled_from(["snapshot", "update"])), "product_id": PRODUCT,
               "updates": ups}]
    if draw(st.integers(0, 9)) == 0:
        events.append({"type": "update", "product_id": PRODUCT, "updates": ups})
    msg = head | {"timestamp": draw(times), "sequence_num": draw(st.integers(0, 2**40)),
                  "events": events}
    sep = (",", ":") if draw(st.integers(0, 4)) else (", ", ": ")
    return json.dumps(msg, separators=sep).encode()


@st.composite
def ex_frame(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 6)) == 0:
        lv = st.lists(st.tuples(decimals, decimals).map(list), max_size=3)
        msg: dict[str, object] = {"type": "snapshot", "product_id": PRODUCT,
                                  "bids": draw(lv), "asks": draw(lv)}
    else:
        msg = {"type": "l2update", "product_id": PRODUCT, "changes": [
            [draw(st.sampled_from(["buy", "sell"])), draw(decimals), draw(decimals)]
            for _ in range(draw(st.integers(0, 4)))], "time": draw(times)}
    sep = (",", ":") if draw(st.integers(0, 4)) else (", ", ": ")
    return json.dumps(msg, separators=sep).encode()


def _json_path(payloads: list[bytes], floats: bool) -> pa.Table | None:
    ts = pa.array(range(len(payloads)), pa.int64())
    if payloads[0].startswith(b'{"channel"'):
        return columnar._at_l2(columnar._read(payloads, columnar._AT_L2), ts, PRODUCT, floats)
    return columnar._ex_l2(columnar._read(payloads, columnar._EX_L2), ts, PRODUCT, floats)


def _check(payloads: list[bytes], floats: bool) -> None:
    got = columnar.book_l2(payloads, list(range(len(payloads))), PRODUCT, floats)
    want = _json_path(payloads, floats)
    assert (got is None) == (want is None)
    if got is not None and want is not None:
        assert got.to_pylist() == want.to_pylist()


@settings(max_examples=150, deadline=None)
@given(st.lists(at_frame(), min_size=1, max_size=12), st.booleans())
def test_at_scan_equals_json_reader(payloads: list[bytes], floats: bool) -> None:
    _check(payloads, floats)


@settings(max_examples=150, deadline=None)
@given(st.lists(ex_frame(), min_size=1, max_size=12), st.booleans())
def test_exchange_scan_equals_json_reader(payloads: list[bytes], floats: bool) -> None:
    _check(payloads, floats)


def test_compact_frames_take_the_scan() -> None:
    """The venue's own shape passes the scan's check (else the scan would never be used)."""
    at = (b'{"channel":"l2_data","client_id":"","timestamp":"2026-01-02T00:00:00Z",'
          b'"sequence_num":7,"events":[{"type":"update","product_id":"BTC-USD","updates":'
          b'[{"side":"bid","event_time":"2026-01-02T00:00:00Z","price_level":"1.5",'
          b'"new_quantity":"0"}]}]}')
    ex = (b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","1.5","2"]],'
          b'"time":"2026-01-02T00:00:00.000001Z"}')
    for frame, pattern in ((at, scan.AT_L2), (ex, scan.EX_L2UPDATE)):
        arr, _, _ = scan.frames([frame, frame.replace(b":", b": ", 1)])
        assert scan.fits(arr, pattern).tolist() == [True, False]
