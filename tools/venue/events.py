"""The pre-encoded event tuple passed from the generator to the venue, and the trade record.

An `Event` is ``(sub, wire, products, head, tail, seq)``:

- ``sub``: the subscribe-channel name that receives it (``level2``, ``matches``, ...);
- ``wire``: the channel as it appears on the wire (AT ``channel`` field, Exchange ``type``);
- ``products``: product ids named in the frame, distinct, in order (for the ledger);
- ``head``/``tail``: the encoded frame. Advanced Trade numbers frames per *connection*, so the
  venue sends ``head + b"%d" % sequence_num + tail``; Exchange frames are complete in ``head``
  (``tail`` is empty) because their ``sequence`` is per product and shared by all subscribers;
- ``seq``: the Exchange per-product ``sequence`` carried by the frame, else ``None``.

Plain tuples, not objects: the venue moves hundreds of thousands of these a second.
"""

from __future__ import annotations

from typing import NamedTuple

Event = tuple[str, str, tuple[str, ...], bytes, bytes, "int | None"]


class Trade(NamedTuple):
    """One trade as the generator decided it; both dialects encode it their own way."""

    ticks: int
    size: bytes
    taker_buy: bool
    trade_id: int
    maker_order_id: bytes
    taker_order_id: bytes
