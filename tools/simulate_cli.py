"""Console script ``cbl-simulate`` / ``tools/simulate``: the venue's command line.

The implementation lives in `tools.venue.cli`, next to the venue it starts, so
``python -m tools.venue`` is the same program.
"""

from __future__ import annotations

import sys

from tools.venue.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
