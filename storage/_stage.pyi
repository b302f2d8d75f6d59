"""Type stub of the optional compiled module storage/_stage.c (see storage/fastpath.py)."""

from array import array
from collections.abc import Sequence

def crc32c(data: bytes | bytearray | memoryview, crc: int = 0, /) -> int: ...
def hardware_crc() -> bool: ...
def frame(
    dest: object, at: int, offset: int, ts: array[int], lens: array[int], kinds: bytes | None,
    payloads: Sequence[bytes], first: int, last: int, payload_len: int, total: int, /,
) -> bytes | None: ...
