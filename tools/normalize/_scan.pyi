from typing import Any

def at_l2(buf: Any, offsets: Any, /) -> tuple[bytes, bytes, bytes, bytes, bytes,
                                               tuple[bytes, bytes], tuple[bytes, bytes],
                                               tuple[bytes, bytes], tuple[bytes, bytes],
                                               tuple[bytes, bytes], tuple[bytes, bytes]]: ...
