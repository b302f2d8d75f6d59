"""Console script ``cbl-simulate`` / ``tools/simulate``: the simulator's command line.

The implementation lives in `logger.sim.cli` so ``python -m logger.sim`` works without
``tools`` (the daemon package never imports ``tools``).
"""

from __future__ import annotations

import sys

from logger.sim.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
