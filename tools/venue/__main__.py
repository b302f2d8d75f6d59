"""``python -m tools.venue serve|replay ...`` (same as ``tools/simulate``)."""

from tools.venue.cli import main

raise SystemExit(main())
