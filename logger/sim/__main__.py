"""``python -m logger.sim serve|replay ...`` (same as ``tools/simulate``)."""

from logger.sim.cli import main

raise SystemExit(main())
