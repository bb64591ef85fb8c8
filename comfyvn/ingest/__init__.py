"""The asset ingest queue: staging, dedup, rate limits, crash-safe apply, remote pulls."""
