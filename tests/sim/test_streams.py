"""The venue's statement of the stream names (`tools.venue.streams`) and the recorder's
(`logger.protocol.names`) are written apart on purpose; here they must agree on the names
docs/INGEST.md documents, and on the names the recorder itself makes."""

from __future__ import annotations

import pytest

from logger.protocol import names as recorder
from tools.venue import streams as venue

#: docs/INGEST.md, Streams (and Worker processes): product, shared and multi-product names
DOCUMENTED = ["BTC-USD", "ETH-EUR", "_multi", "_multi-w0", "_multi-w1", "_multi-w12",
              "_conn0", "_conn1", "_conn12", "_connw0-1"]
#: near misses: neither rule may take these for a multi-product stream
NEAR_MISSES = ["_multi-w", "_multi-wx", "_multi-w1x", "_multix", "_multi-1", "multi", "_Multi",
               "_multi_w0", "BTC-_multi"]


@pytest.mark.parametrize("name", DOCUMENTED + NEAR_MISSES)
def test_both_rules_say_the_same_multi_stream(name: str) -> None:
    assert venue.is_multi_stream(name) == recorder.is_multi_stream(name)


@pytest.mark.parametrize("worker", [None, 0, 1, 7, 12, 123])
def test_the_venue_knows_every_multi_stream_the_recorder_writes(worker: int | None) -> None:
    assert venue.is_multi_stream(recorder.multi_stream(worker))
    assert venue.is_shared_stream(recorder.multi_stream(worker))


def test_the_venue_names_the_multi_stream_as_the_recorder_does() -> None:
    assert venue.MULTI == recorder.MULTI == recorder.multi_stream()


@pytest.mark.parametrize("conn_id", ["0", "1", "12", "w0-3"])
def test_both_rules_name_a_connections_stream_alike(conn_id: str) -> None:
    assert venue.conn_stream(conn_id) == recorder.conn_stream(conn_id)
    assert venue.is_conn_stream(recorder.conn_stream(conn_id))
    assert venue.is_shared_stream(recorder.conn_stream(conn_id))


@pytest.mark.parametrize("name", DOCUMENTED + NEAR_MISSES)
def test_shared_means_no_product_id_in_both_rules(name: str) -> None:
    """A shared stream's name is one no product id may take (the recorder refuses it)."""
    if recorder.is_valid_name(name):
        assert venue.is_shared_stream(name) == (not recorder.is_valid_product_id(name))
