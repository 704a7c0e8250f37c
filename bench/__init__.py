"""Benchmarks print figures; see each script."""
