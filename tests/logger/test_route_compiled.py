"""The compiled router hot paths (``logger.protocol._route``) and the pure-Python closures agree.

Two feeds of one dialect, one built with the compiled hot path and one with the pure-Python
closure (``native.COMPILED`` flipped while building it), see the same frames and state changes
and must return equal routes (the compiled one the RouteTable's own tuple), queue the same
actions and end with the same counters, sequence state (``expected`` and ``needle``), trade-id
state and ticker state. Frames come from the simulator's frame builders (a day of messages of
each dialect, contiguous runs so the fast paths are taken) with adversarial edits: truncation,
odd whitespace, escaped strings, tampered sequence numbers and trade ids (gaps, duplicates,
quotes, signs, underscores, int64 edges), extra product ids, other closing bytes, and arbitrary
bytes. Separately: the pure path runs when the extension is absent or ``CBL_PURE=1`` is set,
and a failed build of the optional extension does not fail the install.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol_replay import SHARED

from logger.protocol import ADVANCED_TRADE, EXCHANGE, Dialect, FeedState, native
from logger.protocol.route_at import AdvancedTradeRouter
from logger.protocol.route_exchange import ExchangeRouter

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS_N = 4

compiled = pytest.mark.skipif(not native.use_compiled(), reason="logger.protocol._route not built "
                              "(or CBL_PURE set): nothing to compare")


@contextmanager
def _native(on: bool) -> Iterator[None]:
    saved = native.COMPILED
    native.COMPILED = on
    try:
        yield
    finally:
        native.COMPILED = saved


@cache
def _model_frames(dialect: str) -> tuple[list[str], list[bytes]]:
    from tools.venue.generator import MarketModel

    model = MarketModel(5, PRODUCTS_N, dialect)
    return list(model.products), [raw for _, _, raw in model.day_of_messages(1500)]


def _feed(dialect: Dialect, on: bool) -> FeedState:
    products, _ = _model_frames(dialect.name)
    channels = {ch: [] if ch in dialect.shared_channels and (
        ch == dialect.keepalive_channel or dialect is EXCHANGE) else products
        for ch in dialect.channels}
    with _native(on):
        fs = FeedState(dialect, "3", channels)
    fs.on_connect()
    fs.opening_frames()
    fs.drain()
    return fs


def _state(fs: FeedState) -> dict[str, object]:
    router = fs.router
    out: dict[str, object] = {"counters": fs.counters, "ack": dict(fs.acknowledged)}
    if isinstance(router, AdvancedTradeRouter):
        out |= {"expected": router.seq.expected, "needle": router.seq.needle,
                "gaps": router.seq.gaps, "late": router.seq.late}
    else:
        assert isinstance(router, ExchangeRouter)
        out |= {"last": dict(router.trades.last), "owed": dict(router.trades.owed),
                "ticker": dict(router._ticker_trade)}
    return out


def _is_table_route(fs: FeedState, route: tuple[str, str]) -> bool:
    """A product route is the RouteTable's own tuple (no copy per frame)."""
    entry = fs.table.known.get(route[1], {}).get(route[0].encode())
    return entry is None or entry.route is route


def _same(c: FeedState, p: FeedState, raw: bytes) -> None:
    try:
        got: object = c.on_message(raw)
    except Exception as exc:  # the same failure both ways (the shell unroutes such a frame)
        got = type(exc)
    try:
        want: object = p.on_message(raw)
    except Exception as exc:
        want = type(exc)
    assert got == want, bytes(raw[:200])
    if isinstance(got, tuple):
        assert _is_table_route(c, got)
    assert c.drain() == p.drain(), bytes(raw[:200])
    assert _state(c) == _state(p), bytes(raw[:200])


WS = [b" ", b"\t", b"\n", b"\r\n", b"  "]
INTS = [b"0", b"-1", b"1_0", b"+7", b" 12", b"12 ", b'"12"', b"007", b"9223372036854775807",
        b"9223372036854775808", b"-9223372036854775808", b"99999999999999999999999", b"1e3",
        b"\xd9\xa1", b"", b"12,", b"null"]


@st.composite
def _edit(draw: st.DrawFn, raw: bytes) -> bytes:
    """One adversarial edit of a frame (or none)."""
    kind = draw(st.integers(0, 15))
    n = len(raw)
    if kind == 0 and n:  # truncated
        return raw[:draw(st.integers(0, n - 1))]
    if kind == 1:  # whitespace somewhere
        i = draw(st.integers(0, n))
        return raw[:i] + draw(st.sampled_from(WS)) + raw[i:]
    if kind == 2:  # an escaped or foreign product id
        sub = draw(st.sampled_from([b"\\u002d", b"\\\"", b"-X", b"", b"\\/"]))
        return raw.replace(b"-USD", sub + b"USD", 1) if draw(st.booleans()) else raw.replace(
            b'"product_id":"', b'"product_id":"_conn3' if draw(st.booleans()) else
            b'"product_id":"../', 1)
    if kind == 3:  # a second product id key
        return raw.replace(b'"product_id":"', b'"product_id":"ZZZ-USD","product_id":"', 1)
    if kind == 4:  # a sequence number or trade id replaced
        key = draw(st.sampled_from([b'"sequence_num":', b'"trade_id":', b'"last_trade_id":']))
        i = raw.find(key)
        if i >= 0:
            j = i + len(key)
            k = raw.find(b",", j)
            k = n if k < 0 else k
            return raw[:j] + draw(st.sampled_from(INTS)) + raw[k:]
        return raw
    if kind == 5 and n:  # other closing bytes
        return raw[:-1] + draw(st.sampled_from([b"]", b" ", b"}}", b"}\n", b"]}"]))
    if kind == 6:  # arbitrary bytes
        return draw(st.binary(max_size=80))
    if kind == 8:  # a NUL where the sequence key was
        return raw.replace(b'"sequence_num":', b"\x00", 1)
    if kind == 9:  # oversized (past the split limit)
        return raw.replace(b'"updates":[', b'"updates":[' + b'{"s":1},' * 2100, 1)
    return raw


def _run(dialect: Dialect, data: st.DataObject) -> None:
    c, p = _feed(dialect, True), _feed(dialect, False)
    assert type(c.on_message).__module__ != type(p.on_message).__module__  # one of each
    _, frames = _model_frames(dialect.name)
    for _ in range(data.draw(st.integers(1, 6), label="runs")):
        start = data.draw(st.integers(0, len(frames) - 1), label="start")
        for raw in frames[start:start + data.draw(st.integers(1, 40), label="length")]:
            op = data.draw(st.integers(0, 30), label="op")
            if op == 0:  # a reconnect: sequence restarts at 0, ticker state cleared
                for fs in (c, p):
                    fs.on_disconnect("connection lost")
                    fs.on_connect()
                    fs.drain()
            elif op == 1 and dialect is ADVANCED_TRADE:  # expectation at an int64 edge
                value = data.draw(st.sampled_from([(1 << 63) - 2, (1 << 63) - 1, 1 << 63]))
                for fs in (c, p):
                    assert isinstance(fs.router, AdvancedTradeRouter)
                    fs.router.seq.set_expected(value)
            edited = data.draw(_edit(raw), label="frame") if op > 20 else raw
            _same(c, p, edited)


@compiled
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_advanced_trade_compiled_and_pure_hot_paths_agree(data: st.DataObject) -> None:
    _run(ADVANCED_TRADE, data)


@compiled
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_exchange_compiled_and_pure_hot_paths_agree(data: st.DataObject) -> None:
    _run(EXCHANGE, data)


@compiled
def test_compiled_paths_keep_sequence_and_trade_state_exactly() -> None:
    """Hand-picked edges: the int64 sequence edge (the needle becomes b"\\x00", which a NUL
    byte then matches in both), a late and a duplicate frame, trade ids with signs and
    underscores, a last trade at INT_MAX."""
    c, p = _feed(ADVANCED_TRADE, True), _feed(ADVANCED_TRADE, False)
    head = b'{"channel":"l2_data","timestamp":"t","sequence_num":'
    tail = b',"events":[{"type":"update","product_id":"%s","updates":[]}]}'
    pid = _model_frames(ADVANCED_TRADE.name)[0][0].encode()
    for seq in (b"0", b"1", b"1", b"0", b"5", b"6", b"9223372036854775806",
                b"9223372036854775807"):
        _same(c, p, head + seq + tail % pid)
    for fs in (c, p):
        assert isinstance(fs.router, AdvancedTradeRouter)
        assert fs.router.seq.needle == b"\x00"
    nul = b'{"channel":"l2_data","\x00' + b"x" * 40 + b"]}"
    for raw in (nul, head + b"9223372036854775808" + tail % pid, nul):
        _same(c, p, raw)
    c, p = _feed(EXCHANGE, True), _feed(EXCHANGE, False)
    xp = _model_frames(EXCHANGE.name)[0][0].encode()
    match = b'{"type":"match","trade_id":%s,"maker_order_id":"m","product_id":"%s","p":1}'
    for tid in (b"5", b"6", b"+7", b"8_0", b"80", b" 81", b"81", b"9223372036854775806",
                b"9223372036854775807", b"9223372036854775808", b"x"):
        _same(c, p, match % (tid, xp))


def _python(code: str, **env: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT, env={**os.environ, **env}, timeout=60).stdout


ROUTE_ONE = """
from logger.protocol import ADVANCED_TRADE, FeedState, native
fs = FeedState(ADVANCED_TRADE, "0", {"level2": ["BTC-USD"]})
raw = (b'{"channel":"l2_data","timestamp":"t","sequence_num":0,"events":[{"type":"update",'
       b'"product_id":"BTC-USD","updates":[]}]}')
print(native.COMPILED, type(fs.on_message).__name__, fs.on_message(raw), fs.router.seq.needle)
"""


def test_pure_path_runs_when_the_extension_is_absent() -> None:
    out = _python("import sys; sys.modules['logger.protocol._route'] = None\n" + ROUTE_ONE)
    assert out.split() == ["False", "function", "('BTC-USD',", "'level2')",
                           "b'\"sequence_num\":1,'"]


def test_cbl_pure_forces_the_pure_path() -> None:
    out = _python(ROUTE_ONE, CBL_PURE="1")
    assert out.split()[:2] == ["False", "function"]
    built = importlib.util.find_spec("logger.protocol._route") is not None
    assert _python(ROUTE_ONE, CBL_PURE="0").split()[0] == str(built)


@compiled
def test_compiled_path_takes_bytes_only() -> None:
    """The shell passes ``bytes``; anything else is refused before any side effect."""
    c = _feed(ADVANCED_TRADE, True)
    with pytest.raises(TypeError):
        c.on_message(bytearray(b"{}"))  # type: ignore[arg-type]
    assert c.counters.messages == 0


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler")
def test_a_failed_build_of_the_optional_extension_does_not_fail(tmp_path: Path) -> None:
    """setup.py marks the extension optional: with a compiler that fails, build_ext warns and
    succeeds, and nothing is built (the install then runs the pure path)."""
    res = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "CC": "false", "LDSHARED": "false"}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'building extension "logger.protocol._route" failed' in res.stderr
    assert not list((tmp_path / "lib").rglob("_route*.so"))


@compiled
@pytest.mark.parametrize("name", ["exchange_stream_2021-04-17.jsonl", "exchange.jsonl",
                                  "advanced_trade.jsonl"])
def test_compiled_and_pure_agree_on_real_captures(name: str) -> None:
    """The shared Coinbase captures (optional files), frame by frame."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared Coinbase reference files are optional)")
    lines = [line for line in path.read_bytes().splitlines() if line]
    dialect = ADVANCED_TRADE if name.startswith("advanced") else EXCHANGE
    products = sorted({m.decode() for line in lines
                       for m in re.findall(rb'"product_id":"([A-Za-z0-9-]+)"', line)})
    channels = {ch: [] if ch in dialect.shared_channels and (
        ch == dialect.keepalive_channel or dialect is EXCHANGE) else products
        for ch in dialect.channels if dialect.level2_cap is None
        or ch != dialect.level2_channel or len(products) <= dialect.level2_cap}
    feeds = []
    for on in (True, False):
        with _native(on):
            fs = FeedState(dialect, "0", channels)
        fs.on_connect()
        fs.opening_frames()
        fs.drain()
        feeds.append(fs)
    for raw in lines:
        _same(*feeds, raw)


@compiled
def test_compiled_path_counts_through_plain_attributes_too() -> None:
    """Counters of a type without ``__slots__`` (no slot to write directly) are updated through
    ``setattr``, with the same effect."""
    class Counters:
        def __init__(self) -> None:
            self.messages = 0

    fs = _feed(ADVANCED_TRADE, False)
    router = fs.router
    assert isinstance(router, AdvancedTradeRouter)
    counters = Counters()
    hot = native.AtHotPath(counters, router.seq, router._wires, router._wires[b"l2_data"],
                           router.full, router._after_seq)
    pid = _model_frames(ADVANCED_TRADE.name)[0][0]
    raw = (b'{"channel":"l2_data","timestamp":"t","sequence_num":0,"events":[{"type":"update",'
           b'"product_id":"%s","updates":[]}]}' % pid.encode())
    assert hot(raw) == (pid, "level2")
    assert counters.messages == 1 and router.seq.needle == b'"sequence_num":1,'
