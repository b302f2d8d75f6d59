"""The compiled `BookTracker.message` (_book.c) leaves exactly what the pure code leaves: the
same level dicts (keys, price/size strings), the same heaps element for element (so later
best-price reads and rebuilds agree), validity, crossing state and stats; it raises where the
pure code raises. Its float fast path gives float()'s value for every decimal string."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.normalize import book
from tools.normalize.book import BookTracker, Side

_book = pytest.importorskip("tools.normalize._book", reason="compiled book not built")

#: decimal strings on and off the fast path (exponents, spaces, underscores, signs, many
#: digits, values above 2**53, more than 22 fractional digits)
prices = st.one_of(
    st.sampled_from(["99", "99.0", "99.50", "100", "100.00", "100.5", "101", "102.25", "1.",
                     ".5", "1e2", " 100", "1_00", "+99", "-0", "0.1", "9007199254740993",
                     "9007199254740992.5", "0.0000000000000000000000001", "12345678901234567890",
                     "100.0000000000000000001"]),
    st.decimals(min_value=0, max_value=10**12, allow_nan=False, places=8).map(str))
sizes = st.sampled_from(["0", "0.00", "0.000", "00", "1", "2.5", "0.10", "7", "0e0", " 0",
                         "-0", "0_0", "1e-400"])
level = st.tuples(st.booleans(), prices, sizes)
message = st.tuples(st.integers(0, 9).map(lambda x: x == 0), st.lists(level, max_size=6),
                    st.integers(0, 12).map(lambda x: x == 0))


def _state(tr: BookTracker) -> tuple[object, ...]:
    b, a = tr.book.bids, tr.book.asks
    return (list(b.levels.items()), list(a.levels.items()), list(b._heap), list(a._heap),
            tr.valid, tr._valid_since, tr._cross_state, tr._in_snapshot, tr.stats)


def _pure(tr: BookTracker, ts: int, snap: bool, levels: object) -> None:
    saved, book.native_message = book.native_message, None
    try:
        tr.message(ts, snap, levels)  # type: ignore[arg-type]
    finally:
        book.native_message = saved


def _run(msgs: list[tuple[bool, list[tuple[bool, str, str]], bool]]) -> None:
    fast, pure = BookTracker(), BookTracker()
    for ts, (snap, levels, gap) in enumerate(msgs):
        if gap:
            assert fast.invalidate(ts) == pure.invalidate(ts)
        _book.message(fast, ts, snap, levels)
        _pure(pure, ts, snap, levels)
        assert _state(fast) == _state(pure)


@settings(max_examples=400, deadline=None)
@given(st.lists(message, max_size=40))
def test_native_message_equals_pure(msgs: list[tuple[bool, list[tuple[bool, str, str]],
                                                     bool]]) -> None:
    _run(msgs)


def test_heap_rebuilds_agree() -> None:
    """Long runs with many removed prices make both rebuild their heaps (Side._rebuild)."""
    rnd = random.Random(5)
    msgs = []
    for i in range(12_000):  # a drifting price: each new level is removed 3 messages later
        lv = [(i % 2 == 0, f"{1000 + i / 4:.2f}", "1"),
              ((i - 3) % 2 == 0, f"{1000 + (i - 3) / 4:.2f}", "0"),
              (rnd.random() < 0.5, f"{rnd.randrange(1, 300) / 4:.2f}", rnd.choice(["0", "2"]))]
        msgs.append((i % 5000 == 0, lv, i % 7000 == 6999))
    calls = 0
    rebuild = Side._rebuild

    def counted(self: Side) -> None:
        nonlocal calls
        calls += 1
        rebuild(self)

    Side._rebuild = counted  # type: ignore[method-assign]
    try:
        _run(msgs)
    finally:
        Side._rebuild = rebuild  # type: ignore[method-assign]
    assert calls >= 8  # both trackers rebuilt several times


@settings(max_examples=300, deadline=None)
@given(st.lists(level, min_size=1, max_size=3))
def test_errors_are_the_same(levels: list[tuple[bool, str, str]]) -> None:
    bad: list[object] = [*levels, (True, "x", "1")]
    raised: list[type[BaseException]] = []
    trs = BookTracker(), BookTracker()
    calls: tuple[Callable[[], None], ...] = (
        lambda: _book.message(trs[0], 1, False, bad),  # type: ignore[arg-type]
        lambda: _pure(trs[1], 1, False, bad))
    for call in calls:
        with pytest.raises(ValueError) as exc:
            call()
        raised.append(exc.type)
    assert raised[0] is raised[1]
    assert _state(trs[0]) == _state(trs[1])


@given(prices)
def test_fast_float_is_float(price: str) -> None:
    tr = BookTracker()
    try:
        want = float(price)
    except ValueError:
        return
    _book.message(tr, 0, True, [(True, price, "1")])
    keys = list(tr.book.bids.levels)
    assert [k.hex() for k in keys] == [want.hex()]


def test_a_new_best_price_survives_a_heap_rebuild() -> None:
    """Side.add puts the level in before rebuilding its heap: a rebuild triggered by adding
    the new best price keeps that price in the heap (it used to be left out of it)."""
    side = Side(True)
    for p in range(1, 1101):
        side.set(str(p), "1")
    for p in range(1, 1101):
        side.set(str(p), "0")
    side.set("2000", "1")  # heap 1101 entries > 2 * 1 + 1024: rebuilt
    assert side.best() == ("2000", "1")
    assert side.best_key() == 2000.0
