"""Stream names the protocol core hands to storage, and the rule that keeps them safe.

The rule is the one `storage.layout.validate_name` enforces (only ``[A-Za-z0-9._-]``, 1..64
characters, starting with a letter, a digit or ``_``, no ``..``: a directory named ``-x`` would
look like a command-line option). It is repeated here rather than imported so the router
can check product ids from the wire without a dependency on the storage package, and one more
rule is added: a *product* id may not start with ``_``, because names starting with ``_`` are the
shared streams (``_conn<id>``, ``_multi``); a hostile server must not be able to write into them.
"""

from __future__ import annotations

import re

MULTI = "_multi"
"""Product part of the stream for frames that name several products (one stream per channel)."""


def multi_stream(worker: int | None = None) -> str:
    """Product part of the multi-product stream of one ingest process.

    A single-process daemon writes ``_multi``; worker ``i`` of a sharded daemon writes
    ``_multi-w<i>``, so two worker processes never append to the same stream (one writer per
    file). The name still starts with ``_``, which no product id may, so the wire cannot reach it.
    """
    if worker is None:
        return MULTI
    if isinstance(worker, bool) or not isinstance(worker, int) or worker < 0:
        raise ValueError(f"worker index must be a non-negative integer, got {worker!r}")
    return f"{MULTI}-w{worker}"

def is_multi_stream(name: str) -> bool:
    """True for the product part of a multi-product stream of any ingest process (``_multi``
    or a worker's ``_multi-w<i>``): readers that want "every frame of a channel" need all."""
    return name == MULTI or (name.startswith(MULTI + "-w") and name[len(MULTI) + 2:].isdigit())


UNROUTED = "_unrouted"
"""Channel part of the per-connection stream for malformed or unroutable messages."""

ERROR_CHANNEL = "error"
"""Channel part of the per-connection stream holding the server's ``error`` replies."""

SUBSCRIPTIONS_CHANNEL = "subscriptions"
"""Channel part of the per-connection stream holding the server's ``subscriptions`` acks."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def is_valid_name(name: str) -> bool:
    """True if ``name`` is a legal storage stream name component."""
    return (
        _NAME.fullmatch(name) is not None and not name.startswith(".") and ".." not in name
    )


def is_valid_product_id(product_id: str) -> bool:
    """True if ``product_id`` may name a product stream (a legal name not starting with ``_``)."""
    return is_valid_name(product_id) and not product_id.startswith("_")


def check_product_id(product_id: str) -> str:
    """Return ``product_id`` or raise ``ValueError`` naming it when it cannot be a stream name."""
    if not is_valid_product_id(product_id):
        raise ValueError(
            f"invalid product id {product_id!r}: expected 1..64 of [A-Za-z0-9._-], "
            "not starting with '.' or '_', without '..'"
        )
    return product_id


def conn_stream(conn_id: str) -> str:
    """Product part of the per-connection shared stream (``_conn<id>``), validated."""
    name = f"_conn{conn_id}"
    if not is_valid_name(name):
        raise ValueError(f"invalid connection id {conn_id!r}: {name!r} is not a stream name")
    return name
