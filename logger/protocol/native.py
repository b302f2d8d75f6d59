"""The one place that chooses the compiled router hot paths or the pure-Python ones.

``logger/protocol/_route.c`` (built by setup.py where a C compiler is available, optional)
holds the per-frame scan of both dialects' hot paths: the same decisions over the same bytes,
with the same side effects, as the closures ``_hot_path`` of route_at.py and route_exchange.py,
several times cheaper per frame (bench/routing.py). The closures stay the reference and the
fallback: they run where the extension is absent (not built) and everywhere when ``CBL_PURE=1``
is set (any value but "" and "0", as for storage's compiled staging; read by the extension at
import, since this sans-I/O core imports no ``os``). A router asks ``use_compiled()`` when it
is built; a test may set ``COMPILED`` to build one of each.
"""

from __future__ import annotations

try:
    from logger.protocol._route import PURE_FORCED, AtHotPath, ExHotPath
except ImportError:  # not built here: the pure-Python hot paths
    COMPILED = False
    AtHotPath = ExHotPath = None  # type: ignore[assignment,misc]
else:
    COMPILED = not PURE_FORCED

__all__ = ["COMPILED", "AtHotPath", "ExHotPath", "use_compiled"]


def use_compiled() -> bool:
    """Whether a router built now takes the compiled hot path."""
    return COMPILED
