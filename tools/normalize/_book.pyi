from collections.abc import Iterable

from tools.normalize.book import Side

def apply(levels: Iterable[tuple[bool, str, str]], bids: Side, asks: Side, /) -> int: ...
