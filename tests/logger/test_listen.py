"""The compiled listener (logger/_listen.pyx) does what the Python one does, frame for frame.

``FastListener`` runs the common frame's path itself and hands every other frame to the
Python ``_Listener`` it wraps. Shown here: it is built where a compiler exists; for any
sequence of frames (Advanced Trade data in order and out of order, unknown products, junk,
binary frames, fragmented messages, continuations without a start) both leave the same
records, markers and counters in the sink, and a protocol-core error costs neither the frame
nor the socket on either; where the module is missing, built against another picows, or
``CBL_PURE=1`` is set, new connections get the Python listener, and the daemon records.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from picows.picows import WSMsgType, _make_test_ws_frame

from logger import listen
from logger.connection import Connection, _Listener
from logger.protocol import FeedState, get_dialect
from logger.ratelimit import SlidingWindowLimiter
from logger.sink import Batch, Sink

needs_compiled = pytest.mark.skipif(not listen.available(),
                                    reason=f"logger._listen not usable: {listen.WHY}")
PRODUCTS = ["BTC-USD", "ETH-USD"]


def test_compiled_listener_is_built_where_a_compiler_exists() -> None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}) here")
    assert listen.available(), listen.WHY


class _Keep:
    """Hand-over queue that keeps every batch (the sink's records, in order)."""

    depth = 0
    nbytes = 0

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def try_put(self, batch: Batch) -> bool:
        self.batches.append(batch)
        return True


def _connection() -> tuple[Connection, _Keep]:
    feed = FeedState(get_dialect("advanced_trade"), "0",
                     {"level2": PRODUCTS, "market_trades": PRODUCTS})
    sink = Sink(lambda: None)  # type: ignore[arg-type, return-value]
    keep = _Keep()
    sink.queue = keep  # type: ignore[assignment]
    conn = Connection("0", "ws://127.0.0.1:9/", feed, sink, SlidingWindowLimiter(8, 1.0))
    feed.on_connect()
    feed.opening_frames()
    return conn, keep


def _l2(seq: int, product: str) -> bytes:
    return orjson.dumps({"channel": "l2_data", "client_id": "", "timestamp": "t",
                         "sequence_num": seq, "events": [{"type": "update",
                                                          "product_id": product,
                                                          "updates": []}]})


_FRAME = st.one_of(
    st.tuples(st.just("l2"), st.integers(0, 1), st.sampled_from([0, 1, 1, 1, 3])),
    st.tuples(st.just("text"), st.binary(max_size=40)),
    st.tuples(st.just("binary"), st.binary(max_size=20)),
    st.tuples(st.just("start"), st.binary(max_size=20)),  # a TEXT frame without fin
    st.tuples(st.just("cont"), st.binary(max_size=20), st.booleans()),
)


def _frames(spec: list[tuple[Any, ...]]) -> list[Any]:
    out, seq = [], 0
    for item in spec:
        kind = item[0]
        if kind == "l2":
            seq += item[2]  # 0: a repeat, 3: a gap
            out.append(_make_test_ws_frame(WSMsgType.TEXT, _l2(seq, PRODUCTS[item[1]]), True,
                                           False))
        elif kind == "text":
            out.append(_make_test_ws_frame(WSMsgType.TEXT, item[1], True, False))
        elif kind == "binary":
            out.append(_make_test_ws_frame(WSMsgType.BINARY, item[1], True, False))
        elif kind == "start":
            out.append(_make_test_ws_frame(WSMsgType.TEXT, item[1], False, False))
        else:
            out.append(_make_test_ws_frame(WSMsgType.CONTINUATION, item[1], item[2], False))
    return out


def _run(spec: list[tuple[Any, ...]], compiled: bool) -> dict[str, Any]:
    conn, keep = _connection()
    slow = _Listener(conn)
    listener: Any = listen.FastListener(slow) if compiled else slow
    for frame in _frames(spec):
        listener.on_ws_frame(None, frame)
    conn.sink.flush()
    streams: dict[tuple[str, str], list[tuple[bytes, int | None]]] = {}
    for batch in keep.batches:
        for c in batch.chunks:
            kinds = dict(c.marks)
            streams.setdefault((c.product, c.channel), []).extend(
                (p if i not in kinds else orjson.loads(p).get("reason", p), kinds.get(i))
                for i, p in enumerate(c.payloads))
    stats = conn.stats
    return {"streams": streams, "messages": stats.messages, "raw": stats.raw_frames,
            "route_errors": stats.route_errors,
            "channels": {ch: (c.messages, c.bytes) for ch, c in stats.channels.items()}}


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(st.lists(_FRAME, max_size=40))
def test_both_listeners_leave_the_same_records(spec: list[tuple[Any, ...]]) -> None:
    assert _run(spec, compiled=True) == _run(spec, compiled=False)


@needs_compiled
def test_a_router_error_costs_neither_frame_nor_socket() -> None:
    for compiled in (False, True):
        conn, keep = _connection()
        slow = _Listener(conn)

        def broken(raw: bytes) -> tuple[str, str]:
            raise RuntimeError("protocol-core bug")

        slow._on_message = broken  # type: ignore[method-assign]
        listener: Any = listen.FastListener(slow) if compiled else slow
        listener.on_ws_frame(None, _make_test_ws_frame(WSMsgType.TEXT, b"{}", True, False))
        conn.sink.flush()
        chunks = [c for b in keep.batches for c in b.chunks]
        assert [(c.channel, c.payloads) for c in chunks] == [("_unrouted", [b"{}"])]
        assert conn.stats.route_errors == 1


_SMOKE = """
import sys
{pre}
from logger import listen
print(listen.COMPILED, listen.WHY)
"""


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_pure_env_and_a_missing_module_give_the_python_listener() -> None:
    r = _python(_SMOKE.format(pre=""), {"CBL_PURE": "1"})
    assert r.returncode == 0 and r.stdout.startswith("False"), r.stdout + r.stderr
    r = _python(_SMOKE.format(pre="sys.modules['logger._listen'] = None"), {"CBL_PURE": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("False logger._listen unavailable"), r.stdout


@needs_compiled
def test_built_for_another_picows_is_refused() -> None:
    pre = "import picows.version; picows.version.__version__ = '0.0.1'"
    r = _python(_SMOKE.format(pre=pre), {"CBL_PURE": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("False logger._listen built for picows"), r.stdout
    assert "0.0.1 installed" in r.stdout
