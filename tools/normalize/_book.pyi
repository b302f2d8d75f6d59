from collections.abc import Iterable

from tools.normalize.book import BookTracker

def message(tracker: BookTracker, ts: int, is_snapshot: bool,
            levels: Iterable[tuple[bool, str, str]], /) -> None: ...
