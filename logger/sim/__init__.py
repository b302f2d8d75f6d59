"""A local Coinbase venue: message generator, WebSocket/HTTP server, faults, ledger and replay.

The simulator stands in for Coinbase in tests, benchmarks and demos. It never imports the
daemon runtime (``logger.connection`` and friends); replay is its only use of ``storage``.
"""
