"""The one place that chooses the compiled per-frame listener or the Python one.

``logger/_listen.pyx`` (built by setup.py with Cython where a C compiler is available,
optional) is a Cython subclass of picows' ``WSListener`` that runs the common frame's path
(``_Listener.on_ws_frame``: stamp, bytes, route, actions, receive) without a Python frame per
message, and hands everything else to the Python listener it wraps. It is compiled against
picows' ``.pxd`` declarations, so it is used only with the picows version it was built
against (pinned in pyproject.toml); with another one, where it was not built, or with
``CBL_PURE=1`` (any value but "" and "0", as for the other compiled parts) the Python
listener runs alone.
"""

from __future__ import annotations

import os
from typing import Any

from picows.version import __version__ as PICOWS

try:
    from logger._listen import PICOWS_VERSION, FastListener
except ImportError as e:  # not built here
    FastListener = None  # type: ignore[assignment,misc]
    WHY = f"logger._listen unavailable: {e}"
else:
    WHY = ("" if PICOWS == PICOWS_VERSION else
           f"logger._listen built for picows {PICOWS_VERSION}, {PICOWS} installed")

#: Whether new connections get the compiled fast path.
COMPILED = FastListener is not None and not WHY and os.environ.get(
    "CBL_PURE", "") in ("", "0")


def wrap(listener: Any) -> Any:
    """The listener picows should call: the compiled fast path around ``listener`` (a
    ``logger.connection._Listener``) where it is used, else ``listener`` itself."""
    return FastListener(listener) if COMPILED else listener


def available() -> bool:
    """Whether the compiled listener is built and matches the installed picows."""
    return FastListener is not None and not WHY
