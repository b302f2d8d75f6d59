"""Command line of the daemon (placeholder until the ingest layer lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("coinbase-logger: the ingest daemon is not built yet", file=sys.stderr)
    return 2
