"""The test and demo venue: a local Coinbase (generator, WebSocket/HTTP server, faults, ledger,
replay, and the no-silent-loss coverage check over what the recorder stored).

It stands in for Coinbase in tests, benchmarks, the demo and backtests, so it sits with the
tools, outside the ingest layer: it imports nothing from ``logger`` (not even the recorder's
stream-naming rule, which it states again in `tools.venue.streams`, so the yardstick does not
share the rule it measures), and reads recordings through storage's public API only (replay and
the coverage check). ``tools/simulate`` (``cbl-simulate``, ``python -m tools.venue``) is its
command line.
"""
