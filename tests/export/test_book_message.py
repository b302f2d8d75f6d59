"""`BookTracker.message` (a whole message, per-level work inlined) and the per-level calls
`begin` / `level` / `end` leave the same book, validity, crossing state and stats; `Side.best`
(with its inlined heap peek) agrees with `best_key`."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tools.normalize.book import BookTracker

prices = st.sampled_from(["99", "99.0", "99.50", "100", "100.00", "100.5", "101", "102.25"])
sizes = st.sampled_from(["0", "0.00", "0.000", "1", "2.5", "0.10", "7"])
level = st.tuples(st.booleans(), prices, sizes)
message = st.tuples(st.integers(0, 9).map(lambda x: x == 0), st.lists(level, max_size=6),
                    st.integers(0, 12).map(lambda x: x == 0))


def _state(tr: BookTracker) -> tuple[object, ...]:
    b, a = tr.book.bids, tr.book.asks
    return (dict(b.levels), dict(a.levels), b.best_key(), a.best_key(), tr.valid,
            tr._cross_state, tr.stats)


@settings(max_examples=300, deadline=None)
@given(st.lists(message, max_size=40))
def test_message_equals_per_level_calls(msgs: list[tuple[bool, list[tuple[bool, str, str]],
                                                         bool]]) -> None:
    one, many = BookTracker(), BookTracker()
    for ts, (snap, levels, gap) in enumerate(msgs):
        if gap:  # a marker between messages makes both books invalid
            assert one.invalidate(ts) == many.invalidate(ts)
        one.message(ts, snap, levels)
        many.begin(ts, snap)
        for is_bid, price, size in levels:
            many.level(is_bid, price, size)
        many.end(ts)
        assert _state(one) == _state(many)
        for side in (one.book.bids, one.book.asks):
            k = side.best_key()
            assert side.best() == (None if k is None else side.levels[k])
