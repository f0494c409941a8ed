"""Benchmarks that print measured numbers (speed targets live here, never in timed tests)."""
