"""Subscribe handling of both dialects, sans I/O: the level2 cap as a state-machine property,
and arbitrary client input answered with an error frame, never an exception."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.venue import dialect_at, dialect_exchange
from tools.venue.generator import default_products
from tools.venue.limits import TOO_MANY_L2, Limits

IDS = default_products(45)
KNOWN = set(IDS)

ops = st.lists(st.tuples(st.sampled_from(["subscribe", "unsubscribe"]),
                         st.lists(st.sampled_from([*IDS, "NOPE-USD"]), max_size=40)),
               max_size=25)


@settings(max_examples=100, deadline=None)
@given(ops=ops)
def test_at_level2_cap_counts_products_held_at_once(ops: list[tuple[str, list[str]]]) -> None:
    subs: dict[str, dict[str, None]] = {}
    held: list[str] = []
    lim = Limits()
    for kind, pids in ops:
        raw = orjson.dumps({"type": kind, "channel": "level2", "product_ids": pids})
        out = dialect_at.handle(subs, raw, KNOWN, lim)
        valid = [p for p in dict.fromkeys(pids) if p in KNOWN]
        if kind == "unsubscribe":
            held = [p for p in held if p not in valid]
            assert out.ack and not out.errors
        else:
            new = [p for p in valid if p not in held]
            if len(held) + len(new) > 30:
                assert out.errors == [orjson.dumps({"type": "error", "message": TOO_MANY_L2})]
                assert not out.ack and out.l2_refused == len(new)
            else:
                held += new
                assert out.ack and out.added == [("level2", p) for p in new]
        assert list(subs.get("level2", {})) == held
        assert len(held) <= 30


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "channel", "channels", "product_ids", "name", "x"]), inner,
        max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(msg=json_values | st.binary(max_size=40))
def test_any_client_message_gets_an_answer_not_an_exception(msg: Any) -> None:
    raw = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    for handle in (dialect_at.handle, dialect_exchange.handle):
        subs: dict[str, dict[str, None]] = {}
        out = handle(subs, raw, KNOWN, Limits())
        assert out.ack or out.errors  # always some reply
        for err in out.errors:
            assert orjson.loads(err)["type"] == "error"
        for ch, ps in subs.items():
            assert isinstance(ch, str) and all(p in KNOWN for p in ps)
