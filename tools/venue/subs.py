"""What a subscribe/unsubscribe request did to one connection: shared by both dialects."""

from __future__ import annotations

from dataclasses import dataclass, field

#: a connection's subscriptions: subscribe-channel → products held (a dict keeps ack order)
Subs = dict[str, dict[str, None]]


@dataclass
class SubscribeOutcome:
    """Frames and state changes a request causes, in the order the venue sends them."""

    errors: list[bytes] = field(default_factory=list)
    #: (channel, product) pairs newly held: each gets its snapshot frames
    added: list[tuple[str, str]] = field(default_factory=list)
    #: channels newly held that have no products (AT heartbeats/status, Exchange status)
    added_channels: list[str] = field(default_factory=list)
    ack: bool = False
    #: an AT level2 request refused for exceeding the per-connection cap
    l2_refused: int = 0


def subs_view(subs: Subs) -> dict[str, list[str]]:
    return {ch: list(ps) for ch, ps in subs.items()}
