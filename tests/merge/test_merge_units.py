"""cbl-merge's pure parts: identity rules, hole bookkeeping, dedup, the per-stream merge."""

from __future__ import annotations

from functools import partial

from hypothesis import given
from hypothesis import strategies as st

from storage.records import RecordKind
from tools.merge_core import Deduper, StreamReport, merge_stream
from tools.merge_holes import resolve, scan
from tools.merge_identity import identity

D, G, DISC, SUB = (int(RecordKind.DATA), int(RecordKind.GAP), int(RecordKind.DISCONNECT),
                   int(RecordKind.SUBSCRIBE))
AT = partial(identity, "advanced_trade")
EX = partial(identity, "exchange")


def at_l2(seq: int, stamp: str, qty: str = "1.5") -> bytes:
    return (b'{"channel":"l2_data","client_id":"","timestamp":"%s","sequence_num":%d,"events":'
            b'[{"type":"update","product_id":"BTC-USD","updates":[{"side":"bid","event_time":'
            b'"2026-11-20T10:00:00.1Z","price_level":"61000.01","new_quantity":"%s"}]}]}'
            % (stamp.encode(), seq, qty.encode()))


def at_ticker(seq: int, stamp: str) -> bytes:
    return (b'{"channel":"ticker","client_id":"","timestamp":"%s","sequence_num":%d,"events":'
            b'[{"type":"update","tickers":[{"product_id":"BTC-USD","price":"1"}]}]}'
            % (stamp.encode(), seq))


def test_advanced_trade_identity() -> None:
    # sequence_num is per connection: two copies of one message differ only there
    assert AT(at_ticker(5, "T1")) == AT(at_ticker(912, "T1"))
    # a ticker's content may repeat: its envelope time tells two tickers apart
    assert AT(at_ticker(5, "T1")) != AT(at_ticker(6, "T2"))
    # a book update is its events: the same change stamped twice is one message
    assert AT(at_l2(1, "T1")) == AT(at_l2(77, "T9"))
    assert AT(at_l2(1, "T1")) != AT(at_l2(1, "T1", qty="2.5"))
    trade = (b'{"channel":"market_trades","client_id":"","timestamp":"%s","sequence_num":%d,'
             b'"events":[{"type":"update","trades":[{"trade_id":"846149798","product_id":'
             b'"ETH-USD","price":"2668.35","size":"0.1","time":"2026-09-30T01:41:25Z",'
             b'"side":"SELL"}]}]}')
    assert AT(trade % (b"T1", 3)) == AT(trade % (b"T2", 4))
    assert AT(trade % (b"T1", 3)) != AT(trade.replace(b"846149798", b"846149799") % (b"T1", 3))
    # snapshots are per connection: the envelope time keeps them apart
    snap = at_l2(0, "T1").replace(b'"type":"update"', b'"type":"snapshot"')
    assert AT(snap) != AT(at_l2(0, "T2").replace(b'"type":"update"', b'"type":"snapshot"'))
    assert AT(b"\x00\xffbinary") == EX(b"\x00\xffbinary") != AT(b"\x00\xfebinary")


def test_exchange_identity_is_the_bytes() -> None:
    m = b'{"type":"match","trade_id":5,"sequence":50,"product_id":"BTC-USD","time":"T"}'
    assert EX(m) == EX(bytes(m)) and EX(m) != EX(m.replace(b"50", b"51"))


def test_scan_runs_and_holes() -> None:
    cov = scan(0, [(1, SUB), (2, D), (3, D), (4, G), (6, D), (7, DISC), (8, SUB), (9, D),
                   (10, DISC)])
    assert cov.runs == [(2, 3), (6, 6), (9, 9)]
    assert [(h.last_ns, h.next_ns, h.marker_ns, h.kinds) for h in cov.holes] == [
        (3, 6, 4, [G]), (6, 9, 8, [DISC, SUB]), (9, None, 10, [DISC])]
    assert cov.data == 4 and cov.markers == 5


def test_holes_filled_only_when_covered_with_tolerance() -> None:
    a = scan(0, [(10, D), (20, G), (30, D), (100, D)])
    b = scan(1, [(0, D), (40, D), (200, D)])
    filled, remaining = resolve([a, b], tolerance_ns=5)
    assert len(filled) == 1 and remaining == []
    # b covers up to 28 only: with 5 ns of tolerance A's hole [10, 30] needs [5, 35]
    b2 = scan(1, [(0, D), (28, D), (29, G), (200, D)])
    filled, remaining = resolve([a, b2], tolerance_ns=5)
    assert not filled and len(remaining) == 2
    g = remaining[0]
    # one merged gap for the two overlapping holes: both blind from 28 to 30, marked at 28+
    assert (g.from_ns, g.to_ns, g.marker_ns) == (28, 30, 29) and len(g.holes) == 2
    # after A's last record (100) only B's hole is left: nobody recorded 100..200
    assert (remaining[1].from_ns, remaining[1].to_ns) == (100, 200)


def test_trailing_hole_remains_only_if_nobody_continues() -> None:
    a = scan(0, [(1, D), (5, D), (6, DISC)])
    b = scan(1, [(1, D), (50, D), (51, DISC)])
    filled, remaining = resolve([a, b], tolerance_ns=0)
    assert [h.input for h in filled] == [0]
    assert [(g.marker_ns, g.from_ns, g.to_ns) for g in remaining] == [(51, 50, 51)]


def test_deduper_keeps_the_largest_multiplicity_and_forgets_after_the_window() -> None:
    d = Deduper(2, window_ns=100)
    assert d.admit(0, 1, b"k") and not d.admit(1, 2, b"k")
    assert d.admit(1, 3, b"k")       # input 1 has a second copy: the venue sent it twice
    assert not d.admit(0, 4, b"k")   # input 0's second copy is that one
    assert d.admit(0, 500, b"k")     # beyond the window: kept (a duplicate, never a loss)


@given(st.lists(st.integers(0, 40), min_size=1, max_size=60, unique=True),
       st.sets(st.integers(0, 59)), st.sets(st.integers(0, 59)))
def test_merge_is_the_union_in_order(ids: list[int], miss_a: set[int],
                                     miss_b: set[int]) -> None:
    msgs = [(1000 + 10 * n, b'{"type":"x","sequence":%d}' % v) for n, v in enumerate(ids)]
    a = [(ts, D, p) for n, (ts, p) in enumerate(msgs) if n not in miss_a]
    b = [(ts + 3, D, p) for n, (ts, p) in enumerate(msgs) if n not in miss_b]  # skewed clock
    report = StreamReport("P", "c", [0, 0], [0, 0], [0, 0])
    out = list(merge_stream([a, b], [], EX, report, ["a", "b"]))
    want = [p for n, (_, p) in enumerate(msgs) if n not in miss_a & miss_b]
    assert [p for _, _, p in out] == want
    assert report.read == [len(a), len(b)] and sum(report.kept) == len(want)
    assert sum(report.duplicates) == len(a) + len(b) - len(want)


def test_a_restart_seen_only_as_subscribe_is_a_hole_from_before_the_crash() -> None:
    s = 1_000_000_000
    # data until 10 s, crash, restart: the snapshot (20 s) is stored before the SUBSCRIBE
    cov = scan(0, [(1 * s, SUB), (2 * s, D), (10 * s, D), (20 * s, D), (20 * s + 5, SUB),
                   (21 * s, D), (22 * s, D)], settle_ns=2 * s)
    assert cov.runs == [(2 * s, 10 * s), (21 * s, 22 * s)]
    assert [(h.last_ns, h.next_ns) for h in cov.holes] == [(10 * s, 21 * s)]
    # the first subscription's snapshot before its marker is no hole
    cov = scan(0, [(5, D), (6, SUB), (7, D), (9, D)], settle_ns=2 * s)
    assert cov.runs == [(7, 9)] and cov.holes == []
