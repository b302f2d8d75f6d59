"""`python -m logger` is the daemon's command line."""

from logger.cli import main

raise SystemExit(main())
