"""The venue's own statement of the recorder's stream names (docs/INGEST.md, Streams).

The venue is the yardstick the recorder is measured against: the generator says which stream
each frame it sends must land in, the coverage check holds the recording to that, and replay
picks the recorded streams a subscription asks for. Were these rules imported from the
recorder (`logger.protocol.names`), a wrong rule there would be agreed with here and no test
would notice. So the rule is written down a second time, from the documentation, and
`tests/sim/test_streams.py` checks that the two statements agree on the documented names.

The rule, as documented:

- a frame about one product goes to that product's stream, ``(BTC-USD, level2)``;
- a frame naming several products goes to ``_multi`` (one stream per channel); a recorder run
  with worker processes writes ``_multi-w<i>`` for worker ``i``, so "every multi-product frame
  of a channel" is ``_multi`` and every ``_multi-w<i>``;
- everything about no single product (heartbeats, status, acks, errors, a product-less frame)
  goes to the connection's own ``_conn<id>``;
- names starting with ``_`` are these shared streams: no product id starts with ``_``.
"""

from __future__ import annotations

import re

__all__ = ["MULTI", "conn_stream", "is_conn_stream", "is_multi_stream", "is_shared_stream"]

MULTI = "_multi"
"""Product part of the stream holding frames that name several products."""

_CONN = "_conn"
#: ``_multi`` or a worker's ``_multi-w<i>`` (decimal worker index)
_MULTI_NAME = re.compile(r"_multi(?:-w[0-9]+)?")


def conn_stream(conn_id: int | str) -> str:
    """Product part of connection ``conn_id``'s shared stream: ``_conn0``, ``_conn1``, ..."""
    return f"{_CONN}{conn_id}"


def is_conn_stream(name: str) -> bool:
    """True for a connection's shared stream (``_conn<id>``, whatever the id's spelling)."""
    return name.startswith(_CONN)


def is_multi_stream(name: str) -> bool:
    """True for the multi-product stream of any recorder process: ``_multi``, ``_multi-w<i>``."""
    return _MULTI_NAME.fullmatch(name) is not None


def is_shared_stream(name: str) -> bool:
    """True for a stream about no single product (a product id never starts with ``_``)."""
    return name.startswith("_")
