"""Storage engine: crash-safe, preallocated segment files for streams of timestamped records.

The engine knows streams (two validated names, e.g. product × channel) and records (receive
time, kind, raw bytes). It never imports the ingest layer and knows nothing of Coinbase.
"""
