"""Object-storage tests (one SeaweedFS server for this package)."""
