"""Reliability suites: crash, concurrency, load, fuzz and security (issue 7)."""
