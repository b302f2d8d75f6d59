"""Coinbase-aware reading of a data root: normalized datasets, the L2 book rebuild, integrity.

The one place in the project that turns the recorder's raw frames into rows (docs/EXPORT.md):
`parse` (both dialects' JSON → events), `book` (the L2 rebuild shared by export, `inspect
book` and `inspect integrity`), `rows` (events → dataset columns, markers, validity),
`source`/`replay` (records of a product in time order, warm-up from the last snapshot),
`export`/`tardis` (Parquet and tardis-style CSV files), `api` (the notebook entry point).
It reads through storage's public readers only, and storage knows nothing of it.
"""
