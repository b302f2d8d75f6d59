"""Command-line tools: thin shells over `storage/` (compact, inspect) and `logger.sim`."""
