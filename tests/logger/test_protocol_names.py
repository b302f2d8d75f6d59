"""The router's stream-name rule is the storage engine's rule (plus: products never start _)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logger.protocol.names import check_product_id, conn_stream, is_valid_name, is_valid_product_id
from storage.layout import validate_name

_ALPHABET = st.sampled_from([*"Aa0-._/\\ \n\x00é_", "..", "BTC-USD"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_ALPHABET, max_size=70).map("".join))
def test_name_rule_matches_storage_layout(name: str) -> None:
    try:
        validate_name(name, "product")
        storage_ok = True
    except ValueError:
        storage_ok = False
    assert is_valid_name(name) == storage_ok
    assert is_valid_product_id(name) == (storage_ok and not name.startswith("_"))


def test_product_and_connection_names() -> None:
    assert check_product_id("BTC-USD") == "BTC-USD"
    for bad in ("_multi", "", "a" * 65, "../x", ".x", "-", "-rf", "--help"):
        with pytest.raises(ValueError, match="invalid product id"):
            check_product_id(bad)
    assert conn_stream("12") == "_conn12"
    with pytest.raises(ValueError, match="invalid connection id"):
        conn_stream("x" * 60)
