"""Ingest layer: Coinbase WebSocket connections, sans-I/O protocol core, batching into storage."""
