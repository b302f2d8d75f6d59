"""Types of the compiled router hot paths (logger/protocol/_route.c)."""

from collections.abc import Callable
from typing import Any

PURE_FORCED: bool

class AtHotPath:
    """``on_message`` of an AdvancedTradeRouter: the route of ``raw``."""

    at: int

    def __init__(self, counters: Any, tracker: Any, wires: dict[bytes, Any], l2_wire: Any,
                 full: Callable[[bytes], tuple[str, str]],
                 after_seq: Callable[[bytes, int, Any], tuple[str, str]]) -> None: ...
    def __call__(self, raw: bytes, /) -> tuple[str, str]: ...

class ExHotPath:
    """``on_message`` of an ExchangeRouter: the route of ``raw``."""

    def __init__(self, counters: Any, l2_known: dict[bytes, Any], match_known: dict[bytes, Any],
                 last_trade: dict[str, int], full: Callable[[bytes], tuple[str, str]]) -> None: ...
    def __call__(self, raw: bytes, /) -> tuple[str, str]: ...
