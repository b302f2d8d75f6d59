"""The one switch for the compiled speed-ups (`_scan`, `_book`, built by setup.py if a compiler
is there): `CBL_PURE=1` makes every module use its pure-Python twin, so the two can be compared
on the same data (tests/export check they give identical output)."""

from __future__ import annotations

import os


def pure() -> bool:
    """True when the pure-Python paths are forced (`CBL_PURE` set to anything but 0)."""
    return os.environ.get("CBL_PURE", "") not in ("", "0")
